//! What the unit tests share: a scratch directory and a path in it.

use std::path::PathBuf;

/// A fresh temporary directory (removed when the returned guard drops) and `name` in it (not
/// created: a test makes it as it needs).
pub(crate) fn temp_path(name: impl AsRef<std::path::Path>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join(name);
    (dir, path)
}
