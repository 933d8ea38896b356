//! The plugin sandbox, proven with fixture plugins built from `plugins/fixtures/`: filters
//! that loop forever, allocate without bound or trap cost one call each and the players
//! keep playing; a resolver is refused every host, address, program and kv namespace it was
//! not granted. Meanwhile another player's audio is checked to be untouched.

mod support;

use fake_voice::FakeVoiceConfig;
use serde_json::{Value, json};
use support::media::tone;
use support::{Harness, assert_heard, counter, enqueued_track_id};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_filters_cost_one_call_and_every_player_keeps_playing() {
    let h = Harness::with_plugins(FakeVoiceConfig::default(), &["misbehaving"], |_| {}).await;
    let mut events = h.events().await;
    let t = tone("tone-440.mp3");
    // Each filter behaves for half a second, then misbehaves mid-track.
    let cases = [("spin", "timeout"), ("hog", "memory"), ("trap", "trap")];
    let mut players = Vec::new();
    for (filter, _) in cases {
        let (guild, session) = h.new_player().await;
        let chain = json!([{ "name": filter, "config": { "afterFrames": 25 } }]);
        let set = h.call(reqwest::Method::PUT, &format!("/players/{guild}/filters"), Some(chain)).await;
        assert_eq!(set.status, 200, "{set:?}");
        players.push((guild, session));
    }
    let (bystander, bystander_session) = h.new_player().await;
    players.push((bystander, bystander_session));
    let mut tracks = Vec::new();
    for (guild, _) in &players {
        let reply = h.enqueue(*guild, &h.media.url(t.file)).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        tracks.push(enqueued_track_id(&reply.body));
    }
    // The trapping player has a second track queued, to show the bypass outlives the track.
    let (trapping, _) = &players[2];
    let second = h.enqueue(*trapping, &h.media.url(t.file)).await;
    assert_eq!(second.status, 200, "{second:?}");
    let second = enqueued_track_id(&second.body);

    for ((guild, _), (filter, kind)) in players.iter().zip(cases) {
        let id = guild.to_string();
        let failed = events.wait("FilterFailed", |e| e["type"] == "FilterFailed" && e["data"]["player_id"] == id).await;
        assert_eq!((failed["data"]["filter"].as_str(), failed["data"]["kind"].as_str()), (Some(filter), Some(kind)));
    }
    for ((guild, session), track) in players.iter().zip(&tracks) {
        let ended = events.track_ended(*guild, track).await;
        assert!(ended["data"].get("error").is_none(), "{ended}");
        if *guild != *trapping {
            session.wait(support::LIMIT, |c| c.silence_packets >= 5).await.expect("silence tail");
            // The whole tone, with no gap where the filter was stopped.
            assert_heard(&session.report(), t.freq_hz, t.seconds);
        }
    }
    let ended = events.track_ended(*trapping, &second).await;
    assert!(ended["data"].get("error").is_none(), "{ended}");
    let failures = events.seen.iter().filter(|e| e["type"] == "FilterFailed").count();
    assert_eq!(failures, 3, "one failure per misbehaving player: {:?}", events.seen);
    let m = h.metrics().await;
    for (filter, kind) in cases {
        let labels = [&format!("filter=\"{filter}\"") as &str, &format!("reason=\"{kind}\"")];
        assert_eq!(counter(&m, "mesastream_filters_bypassed_total", &labels), 1, "{filter}");
    }
}

/// Installs a second copy of the prober under another id, answering `probe-b:` queries.
fn install_second_prober(dir: &std::path::Path) {
    let b = dir.join("prober-b");
    std::fs::create_dir_all(&b).expect("prober-b dir");
    std::fs::copy(dir.join("prober/prober.wasm"), b.join("prober.wasm")).expect("copy component");
    let manifest = std::fs::read_to_string(dir.join("prober/plugin.toml")).expect("prober manifest");
    let manifest = manifest.replace("id = \"prober\"", "id = \"prober-b\"").replace("\"probe:**\"", "\"probe-b:**\"");
    std::fs::write(b.join("plugin.toml"), manifest).expect("prober-b manifest");
}

/// What the prober reported for `probe` (its answer comes back as the error message).
async fn probe(h: &Harness, guild: u64, probe: &str) -> String {
    let reply = h.enqueue(guild, probe).await;
    assert_eq!(reply.status, 404, "{reply:?}");
    reply.body["message"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolver_gets_only_what_it_was_granted() {
    let grants = "[plugins.prober]\nhttp = { hosts = [\"localhost\"] }\nprocess = [\"true\"]\nkv = true\n\
                  [plugins.prober-b]\nhttp = { hosts = [\"127.0.0.1\"], private = true }\nkv = true\n\
                  [plugins.direct]\nhttp = { hosts = [\"127.0.0.1\"], private = true }\n";
    let h = Harness::with_plugins(FakeVoiceConfig::default(), &["prober", "direct"], |c| {
        let dir = c.plugins_dir.as_deref().expect("plugins dir");
        install_second_prober(dir);
        support::plugins::grant(dir, grants);
    })
    .await;
    let listed = h.get("/plugins").await;
    let ids: Vec<&str> = listed.body.as_array().unwrap().iter().filter_map(|p| p["id"].as_str()).collect();
    assert_eq!(ids, ["direct", "prober", "prober-b"], "{listed:?}");

    // Someone is listening the whole time.
    let t = tone("tone-523-long.mp3");
    let mut playing = support::start_track(&h, t.file).await;
    let (guild, _session) = h.new_player().await;
    let port = h.media.addr.port();

    // http: a host outside the grant; a granted name that leads to a private address.
    let m = probe(&h, guild, &format!("probe:http:http://127.0.0.1:{port}/tone-440.mp3")).await;
    assert!(m.contains("http refused: Error::Denied(\"host 127.0.0.1 is not granted\")"), "{m}");
    let m = probe(&h, guild, &format!("probe:http:http://localhost:{port}/tone-440.mp3")).await;
    assert!(m.contains("localhost resolves to a loopback address, not a public one"), "{m}");
    // The same request from the plugin granted that address goes through.
    let m = probe(&h, guild, &format!("probe-b:http:http://127.0.0.1:{port}/tone-440.mp3")).await;
    assert!(m.contains("http answered 200"), "{m}");
    assert_eq!(h.media.requests("/tone-440.mp3"), 1, "only the granted request reached the server");

    // process: only the granted program runs, and only for the plugin granted it.
    let m = probe(&h, guild, "probe:run:sh").await;
    assert!(m.contains("run refused: Error::Denied") && m.contains(r#"\"sh\" is not granted"#), "{m}");
    let m = probe(&h, guild, "probe-b:run:true").await;
    assert!(m.contains("run refused: Error::Denied") && m.contains(r#"\"true\" is not granted"#), "{m}");
    let m = probe(&h, guild, "probe:run:true").await;
    assert!(m.contains("run exited Some(0)"), "{m}");
    let runs = h.metrics().await;
    assert_eq!(counter(&runs, "mesastream_plugin_process_runs_total", &["program=\"sh\""]), 0);
    assert_eq!(counter(&runs, "mesastream_plugin_process_runs_total", &["plugin=\"prober\"", "program=\"true\""]), 1);

    // kv: each plugin sees only its own keys, even under the same name.
    assert!(probe(&h, guild, "probe:kv-set:secret=mine").await.contains("kv stored secret"));
    assert!(probe(&h, guild, "probe-b:kv-get:secret").await.contains("kv has no secret"));
    assert!(probe(&h, guild, "probe-b:kv-set:secret=theirs").await.contains("kv stored secret"));
    assert!(probe(&h, guild, "probe:kv-get:secret").await.contains("kv value mine"));
    assert!(probe(&h, guild, "probe-b:kv-get:secret").await.contains("kv value theirs"));

    let report = playing.finish().await;
    assert_heard(&report, t.freq_hz, t.seconds);
}

/// Waits until `metric` (with `labels`) reaches `at_least` on the server's `/metrics`.
async fn metric_reaches(h: &Harness, metric: &str, labels: &[&str], at_least: u64) {
    let deadline = tokio::time::Instant::now() + support::LIMIT;
    while counter(&h.metrics().await, metric, labels) < at_least {
        assert!(tokio::time::Instant::now() < deadline, "{metric} {labels:?} never reached {at_least}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_program_runs_confined_and_dangerous_options_are_refused() {
    let grants = "[plugins.prober]\nprocess = [\"yt-dlp\", \"env\", \"sh\", \"cat\"]\n\
                  limits = { process-concurrency = 1 }\n\
                  [plugins.prober.programs.sh]\ncpu-seconds = 7\nmemory-mb = 300\n";
    let h = Harness::with_plugins(FakeVoiceConfig::default(), &["prober"], |c| {
        support::plugins::grant(c.plugins_dir.as_deref().expect("plugins dir"), grants)
    })
    .await;
    let (guild, _session) = h.new_player().await;
    let elsewhere = tempfile::tempdir().expect("dir");
    let touched = elsewhere.path().join("touched");

    // yt-dlp's options that run commands, write elsewhere or read other configuration.
    for (args, why) in [
        (format!("--exec|touch {}|https://example.com/a", touched.display()), "option --exec is refused"),
        (format!("--exe|touch {}|https://example.com/a", touched.display()), "option --exe is refused"),
        (format!("-o|{}/%(id)s|https://example.com/a", elsewhere.path().display()), "is outside the run's directory"),
        (format!("-xo{}/x|https://example.com/a", elsewhere.path().display()), "is outside the run's directory"),
        ("--config-locations|/etc/passwd".into(), "option --config-locations is refused"),
        ("--batch-file|/etc/passwd".into(), "option --batch-file is refused"),
        ("--plugin-dirs|/tmp".into(), "option --plugin-dirs is refused"),
        // `-i` takes no value: what follows it in a cluster is read as options too.
        (format!("-iP{}|-o|x|https://example.com/a", elsewhere.path().display()), "option -P is refused"),
        ("-ia/etc/hostname".into(), "option -a is refused"),
        ("-iU".into(), "option -U is refused"),
        // A value that reads `--` does not end the options for yt-dlp.
        (format!("--format|--|--exec|touch {}|https://example.com/a", touched.display()), "option --exec is refused"),
    ] {
        let m = probe(&h, guild, &format!("probe:run:yt-dlp|{args}")).await;
        assert!(m.contains("run refused: Error::Denied") && m.contains(why), "{args}: {m}");
    }
    assert!(!touched.exists(), "a refused run ran");
    let metrics = h.metrics().await;
    let yt_dlp = ["plugin=\"prober\"", "program=\"yt-dlp\""];
    assert_eq!(counter(&metrics, "mesastream_plugin_process_refusals_total", &yt_dlp), 11);
    assert_eq!(counter(&metrics, "mesastream_plugin_process_runs_total", &yt_dlp), 0);
    let m = probe(&h, guild, "probe:run:yt-dlp|--ignore-config|--version").await;
    assert!(m.contains("run exited Some(0)"), "{m}");

    // A clean environment: PATH, a private HOME, and the guard proxy; nothing of the server's.
    let m = probe(&h, guild, "probe:run:env").await;
    let printed = m.split_once("run exited Some(0): ").map(|(_, p)| p.trim_end_matches('"')).expect(&m);
    let mut names: Vec<&str> = printed.split(';').filter_map(|line| line.split_once('=').map(|(k, _)| k)).collect();
    names.sort();
    assert_eq!(
        names,
        ["ALL_PROXY", "HOME", "HTTPS_PROXY", "HTTP_PROXY", "PATH", "all_proxy", "http_proxy", "https_proxy"],
        "{m}"
    );

    // It runs in its own directory, removed afterwards, under the grant's rlimits.
    let m = probe(&h, guild, "probe:run:sh|-c|pwd; ulimit -t; ulimit -v").await;
    let printed = m.split_once("run exited Some(0): ").map(|(_, p)| p.trim_end_matches('"')).expect(&m);
    let lines: Vec<&str> = printed.split(';').collect();
    assert!(lines[0].contains("mesastream-prober-"), "{m}");
    assert!(!std::path::Path::new(lines[0]).exists(), "the run's directory was removed: {m}");
    assert_eq!(&lines[1..], ["7", &(300 * 1024).to_string()], "{m}");

    // One run at a time for this plugin: a second is refused while the first waits on a fifo.
    let fifo = elsewhere.path().join("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo").success());
    let first = {
        let url = h.url(&format!("/players/{guild}/queue"));
        let body = json!({"url": format!("probe:run:cat|{}", fifo.display())});
        let request = h.http.post(url).bearer_auth(support::TOKEN).json(&body).send();
        tokio::spawn(async move { request.await.expect("first run").json::<Value>().await.expect("json") })
    };
    metric_reaches(&h, "mesastream_plugin_process_runs_total", &["program=\"cat\""], 1).await;
    let m = probe(&h, guild, "probe:run:env").await;
    assert!(m.contains("already runs 1 programs at once (process-concurrency)"), "{m}");
    std::fs::write(&fifo, "released\n").expect("write fifo");
    let first = first.await.expect("first run joins");
    assert!(first["message"].as_str().unwrap_or_default().contains("run exited Some(0): released"), "{first}");
    let m = probe(&h, guild, "probe:run:env").await;
    assert!(m.contains("run exited Some(0)"), "the slot came back: {m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_compiled_plugin_is_compiled_again_not_loaded() {
    let plugins = support::plugins::install(&["prober"]);
    let bytes = std::fs::read(plugins.path().join("prober/prober.wasm")).expect("component");
    let cache = tempfile::tempdir().expect("cache dir");
    let engine = mesastream::plugins::engine::build(16).expect("engine");
    mesastream::plugins::engine::load_component(&engine, &bytes, Some(cache.path())).expect("compiles");
    let compiled = std::fs::read_dir(cache.path())
        .expect("cache listing")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .expect("a compiled file");
    let original = std::fs::read(&compiled).expect("compiled bytes");

    // Flip bytes in the middle (where the code is), as a damaged disk or a hostile write would.
    let mut tampered = original.clone();
    let middle = tampered.len() / 2;
    for b in &mut tampered[middle..middle + 64] {
        *b ^= 0xa5;
    }
    std::fs::write(&compiled, &tampered).expect("tamper");
    mesastream::plugins::engine::load_component(&engine, &bytes, Some(cache.path())).expect("loads");
    let after = std::fs::read(&compiled).expect("compiled bytes");
    assert!(after != tampered, "the tampered file was kept (and so loaded)");
    assert_eq!(after.len(), original.len(), "compiled again from the component");
}

/// Level of the windows away from the ends (where fades and the encoder's start live).
fn inner_levels(report: &fake_voice::Report) -> Vec<f64> {
    let n = report.windows.len();
    report.windows.iter().skip(2).take(n.saturating_sub(4)).map(|w| w.level_db).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_plugin_replaced_mid_track_keeps_the_audio_continuous() {
    let h =
        Harness::with_plugins(FakeVoiceConfig::default(), &["lavalink-filters"], |c| c.plugins_reload_ms = 50).await;
    let dir = h.plugins.as_ref().expect("plugins dir").path().join("lavalink-filters");
    let mut events = h.events().await;
    let t = tone("tone-523-long.mp3");
    let (guild, session) = h.new_player().await;
    // Both channels at half level: audible proof the filter runs before and after the swap.
    let half = json!([{ "name": "channelMix", "config": { "leftToLeft": 0.5, "leftToRight": 0.0, "rightToLeft": 0.0, "rightToRight": 0.5 } }]);
    let set = h.call(reqwest::Method::PUT, &format!("/players/{guild}/filters"), Some(half)).await;
    assert_eq!(set.status, 200, "{set:?}");
    // The same tone unfiltered on another player, for the reference level.
    let mut reference = support::start_track(&h, t.file).await;
    let reply = h.enqueue(guild, &h.media.url(t.file)).await;
    let track = enqueued_track_id(&reply.body);
    session.wait(support::LIMIT, |c| c.packets >= 100).await.expect("two seconds played");

    // A new version of the plugin lands in the directory while the track plays.
    let manifest = std::fs::read_to_string(dir.join("plugin.toml")).expect("manifest");
    std::fs::write(dir.join("plugin.toml"), manifest.replace("\nversion = \"0.1.0\"", "\nversion = \"0.1.1\""))
        .expect("new version");
    let loaded =
        events.wait("PluginLoaded 0.1.1", |e| e["type"] == "PluginLoaded" && e["data"]["version"] == "0.1.1").await;
    assert_eq!(loaded["data"]["id"], "lavalink-filters");
    let heard_at_swap = session.report().packets;
    let ended = events.track_ended(guild, &track).await;
    assert!(ended["data"].get("error").is_none(), "{ended}");
    session.wait(support::LIMIT, |c| c.silence_packets >= 5).await.expect("silence tail");

    let report = session.report();
    assert!(heard_at_swap < 280, "the swap landed mid-track (after {heard_at_swap} of 300 frames)");
    assert_heard(&report, t.freq_hz, t.seconds);
    let reference = inner_levels(&reference.finish().await);
    let unfiltered = reference.iter().sum::<f64>() / reference.len() as f64;
    // Half amplitude is 6 dB down, in every window on both sides of the swap.
    let levels = inner_levels(&report);
    assert!(levels.iter().all(|l| (unfiltered - 6.02 - l).abs() < 0.5), "{unfiltered} dB unfiltered; {levels:?}");
    assert!(!events.seen.iter().any(|e| e["type"] == "FilterFailed"), "{:?}", events.seen);
    let plugins: Value = h.get("/plugins").await.body;
    assert_eq!(plugins[0]["version"], "0.1.1");
}

/// The checked-in table of yt-dlp's options (how the argument policy reads a command line)
/// is the installed yt-dlp's own: an upgrade that adds, renames or changes an option fails
/// here. `MESASTREAM_WRITE_OPTION_TABLES=1` rewrites the table from the installed yt-dlp.
#[test]
fn yt_dlp_option_table_matches_the_installed_yt_dlp() {
    use mesastream::plugins::capabilities::option_table::{OptionTable, YT_DLP_TABLE};
    let run = |arg: &str| {
        let out = std::process::Command::new("yt-dlp").arg(arg).env("COLUMNS", "10000").output().expect("run yt-dlp");
        assert!(out.status.success(), "yt-dlp {arg}: {out:?}");
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let installed = OptionTable::from_help(&run("--help"));
    let version = run("--version");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/plugins/capabilities/yt-dlp.options");
    if std::env::var_os("MESASTREAM_WRITE_OPTION_TABLES").is_some() {
        let header = format!(
            "# yt-dlp {}: its options, one per line (names, then one = per value word).\n\
             # Generated from COLUMNS=10000 yt-dlp --help by the sandbox test\n\
             # yt_dlp_option_table_matches_the_installed_yt_dlp; MESASTREAM_WRITE_OPTION_TABLES=1 rewrites it.\n",
            version.trim()
        );
        std::fs::write(&path, header + &installed.to_text()).expect("write the table");
        return;
    }
    let checked_in = OptionTable::parse(YT_DLP_TABLE);
    assert!(installed.to_text().lines().count() > 200, "yt-dlp's help was not read: {}", installed.to_text());
    let (have, want) = (checked_in.to_text(), installed.to_text());
    let missing: Vec<&str> = want.lines().filter(|l| !have.lines().any(|h| h == *l)).collect();
    let stale: Vec<&str> = have.lines().filter(|l| !want.lines().any(|w| w == *l)).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "yt-dlp {} reads options differently from the checked-in table (rewrite it with \
         MESASTREAM_WRITE_OPTION_TABLES=1 and review the refusals): new or changed {missing:?}, gone {stale:?}",
        version.trim()
    );
}
