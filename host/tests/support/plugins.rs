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

/// Writes an executable `yt-dlp` at `wrapper`: the real yt-dlp (from PATH) with the tests'
/// yt-dlp plugins (`tests/clients/ytdlp-plugins`, which answer YouTube from the media
/// server) and `env` in its environment.
pub fn write_ytdlp_wrapper(wrapper: &Path, env: &[(&str, &str)]) {
    use std::os::unix::fs::PermissionsExt;
    let plugins = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/ytdlp-plugins"));
    let exports: String = env.iter().map(|(k, v)| format!("export {k}='{v}'\n")).collect();
    let script = format!(
        "#!/bin/sh\n{exports}export PYTHONDONTWRITEBYTECODE=1\nexec yt-dlp --plugin-dirs '{}' \"$@\"\n",
        plugins.display()
    );
    std::fs::write(wrapper, script).expect("write the yt-dlp wrapper");
    std::fs::set_permissions(wrapper, std::fs::Permissions::from_mode(0o755)).expect("make it executable");
}
