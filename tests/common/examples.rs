//! The example programs (`examples/*.rs`) and the test programs (`tests/programs/*.rs`, package
//! `baton-test-programs`) as real binaries for the stories: each built once per test process
//! with the same cargo, target directory and profile as the test itself.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The path of `examples/<name>.rs` built, building it first (once per test process).
pub fn example(name: &str) -> PathBuf {
    // examples/axum.rs uses axum's `ConnectInfo` and baton's metrics.
    build(
        &["--features", "axum,metrics", "--example", name],
        |profile_dir| profile_dir.join("examples").join(name),
    )
}

/// The path of the test program `tests/programs/<name>.rs` built (`cargo build -p
/// baton-test-programs --bin <name>`), building it first (once per test process).
pub fn program(name: &str) -> PathBuf {
    build(
        &["-p", "baton-test-programs", "--bin", name],
        |profile_dir| profile_dir.join(name),
    )
}

fn build(args: &[&str], path: impl Fn(&Path) -> PathBuf) -> PathBuf {
    static BUILT: Mutex<Vec<Vec<String>>> = Mutex::new(Vec::new());
    let baton = super::baton_exe();
    let profile_dir = baton.parent().expect("the binary's directory").to_owned();
    let path = path(&profile_dir);
    let key: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.contains(&key) {
        let target_dir = profile_dir.parent().expect("the target directory");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--quiet"])
            .args(args)
            .arg("--target-dir")
            .arg(target_dir);
        // The test's own profile: `debug` is the default one's directory; any other directory
        // is named after its profile (`release`, the mutation runs' `mutants`).
        match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => {}
            Some(profile) => {
                cmd.args(["--profile", profile]);
            }
        }
        let out = super::reaper::output(&mut cmd).expect("run cargo build");
        assert!(
            out.status.success(),
            "cargo build {}: {}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        built.push(key);
    }
    assert!(path.exists(), "{} missing after the build", path.display());
    path
}
