//! Real plugins for tests: built from `plugins/` by the project's own script and installed
//! into a fresh directory per test.

use std::path::Path;
use std::process::Command;

/// Builds the plugins (a no-op when nothing changed) and installs `names` (folders under
/// `plugins/` or `plugins/fixtures/`) with the repository's default grants.
pub fn install(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("plugins dir");
    install_into(dir.path(), names);
    dir
}

pub fn install_into(dir: &Path, names: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("..").join("plugins");
    let status = Command::new("bash")
        .arg(root.join("scripts/build-plugins.sh"))
        .arg(dir)
        .args(names)
        .env("PLUGINS_TARGET_DIR", target)
        .status()
        .expect("run scripts/build-plugins.sh");
    assert!(status.success(), "building the plugins failed");
}

/// Replaces the operator grants of the installed plugins.
pub fn grant(dir: &Path, toml: &str) {
    std::fs::write(dir.join("plugins.toml"), toml).expect("write grants");
}
