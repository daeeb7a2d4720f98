//! What a test needs from the machine (root, a second user, a tmpfs, ACLs, a program) and what
//! happens when it is missing. No test passes silently for want of a prerequisite:
//!
//! * running as root (CI does), a missing prerequisite fails the test, naming it;
//! * not root, the test fails too, saying how to run it, unless `BATON_TESTS_ALLOW_SKIP=1` is
//!   set: then it prints one line starting with `SKIPPED:` (count them with
//!   `grep -c '^SKIPPED:'` in the test log) and the caller returns.
//!
//! ```ignore
//! let Some(user) = OtherUser::create() else { return }; // None only when skipping is allowed
//! ```

/// The variable that lets a non-root developer skip, visibly, what needs root.
pub const ALLOW_SKIP_ENV: &str = "BATON_TESTS_ALLOW_SKIP";

/// True when running as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `what` is missing: panics (as root always; otherwise unless skipping is allowed), or prints
/// `SKIPPED: <what>` and returns, so that the caller returns.
#[track_caller]
pub fn missing(what: &str) {
    if is_root() {
        panic!("prerequisite missing while running as root (as CI does): {what}");
    }
    if std::env::var_os(ALLOW_SKIP_ENV).is_some_and(|v| v == "1") {
        println!("SKIPPED: {what}");
        return;
    }
    panic!(
        "cannot run without root: {what}; run the tests as root, or set {ALLOW_SKIP_ENV}=1 to \
         skip such tests visibly (each prints a line starting with SKIPPED:)"
    );
}

/// Root, or [`missing`]; returns whether the test can go on.
#[track_caller]
pub fn root(why: &str) -> bool {
    if is_root() {
        return true;
    }
    missing(&format!("needs root: {why}"));
    false
}
