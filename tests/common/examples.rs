//! The example programs (`examples/*.rs`) as real binaries for the stories: built once per test
//! process with the same cargo and profile as the test itself.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// The path of `examples/<name>.rs` built, building it first (once per test process).
pub fn example(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let baton = super::baton_exe();
    let profile_dir = baton.parent().expect("the binary's directory").to_owned();
    let path = profile_dir.join("examples").join(name);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|n| n == name) {
        let target_dir = profile_dir.parent().expect("the target directory");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            // examples/axum.rs uses axum's `ConnectInfo` and baton's metrics.
            .args([
                "build",
                "--quiet",
                "--features",
                "axum,metrics",
                "--example",
                name,
                "--target-dir",
            ])
            .arg(target_dir);
        if profile_dir.file_name().and_then(|n| n.to_str()) == Some("release") {
            cmd.arg("--release");
        }
        let out = super::reaper::output(&mut cmd).expect("run cargo build --example");
        assert!(
            out.status.success(),
            "cargo build --example {name}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        built.push(name.to_owned());
    }
    assert!(path.exists(), "{} missing after the build", path.display());
    path
}
