//! `mesastream plugins list|check`, run as the operator would: the real binary against a
//! plugins directory built from `plugins/`.

mod support;

use std::path::Path;
use std::process::{Command, Output};

fn mesastream(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let data = tempfile::tempdir().expect("data dir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_mesastream"));
    command.args(args).env_remove("AUTH_TOKEN").env_remove("PLUGINS_CONFIG").env("DATA_DIR", data.path());
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run mesastream")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn plugins_list_shows_what_loads_and_fails_on_what_does_not() {
    let dir = support::plugins::install(&["direct", "ytdlp"]);
    let listed = mesastream(&["plugins", "list"], &[("PLUGINS_DIR", dir.path())]);
    let out = text(&listed.stdout);
    assert!(listed.status.success(), "{out}{}", text(&listed.stderr));
    let direct = out.lines().find(|l| l.starts_with("direct ")).unwrap_or_else(|| panic!("{out}"));
    assert_eq!(direct.split_whitespace().collect::<Vec<_>>(), ["direct", "0.1.0", "resolver", "log,http", "log,http"]);
    assert!(out.lines().any(|l| l.starts_with("ytdlp ")), "{out}");

    // A plugin whose component imports a capability its manifest does not ask for.
    let bad = dir.path().join("sneaky");
    std::fs::create_dir_all(&bad).expect("sneaky dir");
    std::fs::copy(dir.path().join("direct/direct.wasm"), bad.join("direct.wasm")).expect("copy component");
    let manifest = std::fs::read_to_string(dir.path().join("direct/plugin.toml")).expect("manifest");
    let manifest = manifest.replace("id = \"direct\"", "id = \"sneaky\"").replace("[\"http\", \"log\"]", "[\"log\"]");
    std::fs::write(bad.join("plugin.toml"), manifest).expect("sneaky manifest");
    let listed = mesastream(&["plugins", "list", "--json"], &[("PLUGINS_DIR", dir.path())]);
    assert_eq!(listed.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json listing");
    let ids: Vec<&str> = json.as_array().unwrap().iter().filter_map(|p| p["id"].as_str()).collect();
    assert_eq!(ids, ["direct", "ytdlp"]);
    let err = text(&listed.stderr);
    assert!(
        err.contains("sneaky imports mesastream:plugin/http but its manifest does not ask for the http capability"),
        "{err}"
    );

    let checked = mesastream(&["plugins", "check", bad.to_str().unwrap()], &[]);
    assert_eq!(checked.status.code(), Some(1));
    assert!(
        text(&checked.stdout).starts_with("error: sneaky imports mesastream:plugin/http"),
        "{}",
        text(&checked.stdout)
    );
}

#[test]
fn plugins_check_reports_imports_against_grants() {
    let dir = support::plugins::install(&["ytdlp"]);
    let component = dir.path().join("ytdlp/ytdlp.wasm");
    let grants = dir.path().join("plugins.toml");
    let checked =
        mesastream(&["plugins", "check", component.to_str().unwrap(), "--grants", grants.to_str().unwrap()], &[]);
    let out = text(&checked.stdout);
    assert!(checked.status.success(), "{out}{}", text(&checked.stderr));
    assert!(out.contains("manifest:   ytdlp 0.1.0 (resolver), WIT 0.1.0"), "{out}");
    assert!(out.contains("imports:    mesastream:plugin/process@0.1.0"), "{out}");
    assert!(out.contains("granted:    log,process"), "{out}");
    assert!(out.ends_with("ok: ytdlp 0.1.0 would load\n"), "{out}");

    // Without grants it still loads, and says what its calls will be denied.
    let bare = mesastream(&["plugins", "check", component.to_str().unwrap()], &[]);
    let out = text(&bare.stdout);
    assert!(bare.status.success(), "{out}");
    assert!(out.contains("not granted: process (calls to these are denied)"), "{out}");
}
