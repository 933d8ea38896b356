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

    // A plugin whose component imports a capability its manifest does not ask for loads,
    // and the capability stays denied even when the operator grants it.
    let bad = dir.path().join("sneaky");
    std::fs::create_dir_all(&bad).expect("sneaky dir");
    std::fs::copy(dir.path().join("direct/direct.wasm"), bad.join("direct.wasm")).expect("copy component");
    let manifest = std::fs::read_to_string(dir.path().join("direct/plugin.toml")).expect("manifest");
    let manifest = manifest.replace("id = \"direct\"", "id = \"sneaky\"").replace("[\"http\", \"log\"]", "[\"log\"]");
    std::fs::write(bad.join("plugin.toml"), manifest).expect("sneaky manifest");
    let grants = dir.path().join("sneaky-grants.toml");
    std::fs::write(&grants, "[plugins.sneaky]\nhttp = { hosts = [\"*\"] }\n").expect("grants");
    let env = [("PLUGINS_DIR", dir.path()), ("PLUGINS_CONFIG", grants.as_path())];
    let listed = mesastream(&["plugins", "list", "--json"], &env);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let json: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json listing");
    let sneaky = json.as_array().unwrap().iter().find(|p| p["id"] == "sneaky").expect("sneaky loads");
    assert_eq!(sneaky["granted"], serde_json::json!(["log"]), "{sneaky}");

    let checked = mesastream(&["plugins", "check", bad.to_str().unwrap()], &env);
    let out = text(&checked.stdout);
    assert!(checked.status.success(), "{out}");
    assert!(out.contains("granted:    log ("), "{out}");
    assert!(out.contains("not asked:  http (imported but not in the manifest's capabilities"), "{out}");

    // A component that is not one fails, named, and the listing says so in its exit code.
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).expect("broken dir");
    let manifest = std::fs::read_to_string(dir.path().join("direct/plugin.toml")).expect("manifest");
    std::fs::write(broken.join("plugin.toml"), manifest.replace("id = \"direct\"", "id = \"broken\""))
        .expect("manifest");
    std::fs::write(broken.join("direct.wasm"), b"not a component").expect("component");
    let listed = mesastream(&["plugins", "list"], &env);
    assert_eq!(listed.status.code(), Some(1));
    let err = text(&listed.stderr);
    assert!(err.contains("not loaded: ") && err.contains("broken") && err.contains("not a valid component"), "{err}");
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
