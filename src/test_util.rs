//! What the unit tests share: a scratch directory and a path in it, and the root check of
//! tests that need root.

use std::path::PathBuf;

/// A fresh temporary directory (removed when the returned guard drops) and `name` in it (not
/// created: a test makes it as it needs).
pub(crate) fn temp_path(name: impl AsRef<std::path::Path>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join(name);
    (dir, path)
}

/// True when this process is root, which `what` needs; see [`skip`] otherwise.
pub(crate) fn root_for(what: &str) -> bool {
    nix::unistd::geteuid().is_root() || skip(&format!("{what} needs root"))
}

/// A test that cannot run here (`why`) fails (CI runs as root on a file system with ACLs),
/// unless `BATON_TESTS_ALLOW_SKIP=1` lets it print a `SKIPPED:` line: then `false`, and the
/// caller returns, as the integration tests' prerequisites do.
pub(crate) fn skip(why: &str) -> bool {
    if std::env::var_os("BATON_TESTS_ALLOW_SKIP").is_some_and(|v| v == "1") {
        println!("SKIPPED: {why}");
        return false;
    }
    panic!(
        "cannot run here: {why}; run the tests as root on a file system with ACLs, or set \
         BATON_TESTS_ALLOW_SKIP=1 to skip such tests visibly"
    );
}
