//! The DJ stage with real source clients: three ffmpeg DJs at three pitches take five-second
//! turns in the order they arrived, heard by a player following the stage; a kicked DJ stays
//! out for the cooldown; a server killed mid-slot keeps the queue and the slot's end.

mod support;

use std::process::Stdio;
use std::time::Duration;

use fake_voice::FakeVoiceConfig;
use serde_json::{Value, json};
use support::process::spawn_server;
use support::{Harness, LIMIT, TOKEN};

const MP3: [&str; 8] = ["-c:a", "libmp3lame", "-b:a", "128k", "-content_type", "audio/mpeg", "-f", "mp3"];

/// ffmpeg as a DJ: a `hz` tone, in real time, to `stage` at `base` (an `http://host:port`).
fn dj(name: &str, key: &str, hz: u32, base: &str, stage: &str) -> tokio::process::Child {
    let host = base.trim_start_matches("http://");
    tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-f", "lavfi"])
        .args(["-i", &format!("sine=frequency={hz}:sample_rate=48000"), "-t", "60"])
        .args(MP3)
        .arg(format!("icecast://{name}:{key}@{host}/live/{stage}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg runs (scripts/setup.sh installs it)")
}

async fn add_dj(h: &Harness, stage: &str, name: &str) -> String {
    let reply = h.post(&format!("/stages/{stage}/djs"), json!({ "name": name })).await;
    assert_eq!(reply.status, 201, "{reply:?}");
    reply.body["key"].as_str().expect("the DJ's key").to_string()
}

fn is(event: &Value, kind: &str, dj: &str) -> bool {
    event["type"] == kind && event["data"]["dj"] == dj
}

/// Runs of consecutive windows at one pitch (within 4 Hz), as (pitch, windows).
fn runs(freqs: &[f64], pitches: &[f64]) -> Vec<(f64, usize)> {
    let mut runs: Vec<(f64, usize)> = Vec::new();
    for f in freqs {
        let Some(p) = pitches.iter().find(|p| (*p - f).abs() <= 4.0) else { continue };
        match runs.last_mut() {
            Some((last, n)) if last == p => *n += 1,
            _ => runs.push((*p, 1)),
        }
    }
    runs
}

#[tokio::test]
async fn three_djs_take_five_second_turns_in_the_order_they_arrived() {
    let h = Harness::start(FakeVoiceConfig::default()).await;
    let created = h.post("/stages", json!({ "name": "party", "slot_secs": 5, "warning_secs": 2 })).await;
    assert_eq!(created.status, 201, "{created:?}");
    let keys = [add_dj(&h, "party", "ana").await, add_dj(&h, "party", "ben").await, add_dj(&h, "party", "cy").await];
    let mut events = h.events().await;
    // A player follows the stage before anyone is on air: it hears every turn whole.
    let (guild, session) = h.new_player().await;
    assert_eq!(h.enqueue(guild, "live:party").await.status, 200);
    let base = h.base_url();
    let _ana = dj("ana", &keys[0], 440, &base, "party");
    events.wait("ana on air", |e| is(e, "OnAir", "ana")).await;
    let _ben = dj("source", &keys[1], 550, &base, "party");
    let queued = events.wait("ben waits", |e| is(e, "StageQueued", "ben")).await;
    assert_eq!(queued["data"]["place"], 1);
    let _cy = dj("cy", &keys[2], 660, &base, "party");
    let queued = events.wait("cy waits", |e| is(e, "StageQueued", "cy")).await;
    assert_eq!(queued["data"]["place"], 2);
    let view = h.get("/stages/party").await.body;
    assert_eq!(view["on_air"]["dj"], "ana", "{view}");
    let waiting: Vec<&str> = view["queue"].as_array().into_iter().flatten().filter_map(|q| q["dj"].as_str()).collect();
    assert_eq!(waiting, ["ben", "cy"]);
    let metrics = h.metrics().await;
    assert_eq!(support::counter(&metrics, "mesastream_stage_waiting", &["stage=\"party\""]), 2, "{metrics}");

    let warned = events.wait("ana is warned", |e| is(e, "SlotWarning", "ana")).await;
    assert!(warned["data"]["remaining_secs"].as_u64().is_some_and(|s| s <= 2), "{warned}");
    let off = events.wait("ana's turn ends", |e| is(e, "OffAir", "ana")).await;
    assert_eq!(off["data"]["reason"], "slot_over");
    events.wait("ben on air", |e| is(e, "OnAir", "ben")).await;
    events.wait("cy on air", |e| is(e, "OnAir", "cy")).await;
    events.wait("cy's turn ends", |e| is(e, "OffAir", "cy")).await;
    // What the follower heard lags the stage by half a second: wait for the silence after.
    let heard = session.counters().packets;
    session.wait(LIMIT, |c| c.packets >= heard + 75).await.expect("the follower plays on");
    let report = session.report();
    let freqs: Vec<f64> = report.windows.iter().map(|w| w.freq_hz).collect();
    let turns = runs(&freqs, &[440.0, 550.0, 660.0]);
    let pitches: Vec<f64> = turns.iter().map(|(p, _)| *p).collect();
    assert_eq!(pitches, [440.0, 550.0, 660.0], "turns heard: {turns:?}");
    // The first audible sample is ana's start and the last is cy's end; a handover is where
    // the next pitch's first 100 ms window starts, which the window across the 100 ms
    // crossfade puts up to two windows after the cut.
    let starts = |hz: f64| {
        let at = freqs.iter().position(|f| (f - hz).abs() <= 4.0).unwrap_or(0);
        report.windows[at].start_ms as i64
    };
    let (ben, cy, end) = (starts(550.0), starts(660.0), report.audible_ms as i64);
    for (who, ms) in [("ana", ben), ("ben", cy - ben), ("cy", end - cy)] {
        assert!((4800..=5200).contains(&ms), "{who}'s turn lasted {ms} ms: {turns:?}");
    }
    let (ana, last) = (0, freqs.iter().rposition(|f| (f - 660.0).abs() <= 4.0).unwrap_or(0));
    // Handed over without a gap: every window from the first turn to the last is heard.
    let quiet: Vec<usize> = (ana..=last).filter(|i| report.windows[*i].level_db < -30.0).collect();
    assert!(quiet.is_empty(), "silent windows during the turns: {quiet:?}");
}

#[tokio::test]
async fn a_kicked_dj_is_kept_out_for_the_cooldown_while_the_block_is_on() {
    let h = Harness::start(FakeVoiceConfig::default()).await;
    let body = json!({ "name": "party", "slot_secs": 600, "block": true, "cooldown_secs": 300 });
    assert_eq!(h.post("/stages", body).await.status, 201);
    let key = add_dj(&h, "party", "ana").await;
    let mut events = h.events().await;
    let base = h.base_url();
    let mut first = dj("ana", &key, 440, &base, "party");
    let on_air = events.wait("ana on air", |e| is(e, "OnAir", "ana")).await;
    let kicked = h.post("/stages/party/kick", Value::Null).await;
    assert_eq!(kicked.status, 200, "{kicked:?}");
    assert_eq!(events.wait("ana off", |e| is(e, "OffAir", "ana")).await["data"]["reason"], "kicked");
    let blocked = events.wait("ana blocked", |e| is(e, "DjBlocked", "ana")).await;
    assert!(blocked["data"]["until_ms"].as_u64().is_some(), "{blocked}");
    let _ = tokio::time::timeout(LIMIT, first.wait()).await.expect("ana's connection is closed");
    // Back at once: refused with the reason, and nothing goes on air.
    let login = reqwest::Client::new()
        .put(format!("{base}/live/party"))
        .basic_auth("ana", Some(&key))
        .body("x")
        .send()
        .await
        .expect("the stage answers");
    assert_eq!(login.status(), 403);
    let refusal: Value = login.json().await.expect("the error body");
    assert!(refusal["message"].as_str().is_some_and(|m| m.contains("blocked")), "{refusal}");
    let view = h.get("/stages/party").await.body;
    assert_eq!((view["on_air"].clone(), view["blocked"][0]["dj"].clone()), (Value::Null, json!("ana")), "{view}");
    // The toggle off lifts the block.
    assert_eq!(h.post("/stages/party/block", json!({ "enabled": false })).await.status, 200);
    let _again = dj("ana", &key, 440, &base, "party");
    events
        .wait("ana back on air", |e| is(e, "OnAir", "ana") && e["data"]["deadline_ms"] != on_air["data"]["deadline_ms"])
        .await;
    let view = h.get("/stages/party").await.body;
    assert_eq!(view["on_air"]["dj"], "ana", "{view}");
    // The timer, reset to a second: the current turn ends a second from now.
    let timed = h.post("/stages/party/timer", json!({ "slot_secs": 1, "reset": true })).await;
    let remaining = timed.body["on_air"]["remaining_ms"].as_u64().expect("on air");
    assert!(remaining <= 1000, "{timed:?}");
    let ended =
        events.wait("the reset slot ends", |e| is(e, "OffAir", "ana") && e["data"]["reason"] == "slot_over").await;
    assert_eq!(ended["data"]["stage"], "party");
}

async fn stage_view(base: &str) -> Value {
    let reply = reqwest::Client::new().get(format!("{base}/stages/party")).bearer_auth(TOKEN).send().await;
    reply.expect("the stage answers").json().await.expect("json")
}

/// Polls the stage until `done` holds (the server has no push channel this test reads).
async fn stage_until(base: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let view = stage_view(base).await;
        if done(&view) {
            return view;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn waiting(view: &Value) -> Vec<String> {
    view["queue"].as_array().into_iter().flatten().filter_map(|q| q["dj"].as_str().map(str::to_string)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_keeps_the_queue_order_and_the_slot_deadline() {
    let data = tempfile::tempdir().expect("data dir");
    let env = vec![("DATA_DIR", data.path().display().to_string()), ("PLUGINS_DIR", "none".to_string())];
    let first = spawn_server(&env).await;
    let http = reqwest::Client::new();
    let post = |path: String, body: Value| {
        let request = http.post(format!("{}{path}", first.base)).bearer_auth(TOKEN).json(&body);
        async move { request.send().await.expect("request").json::<Value>().await.expect("json") }
    };
    post("/stages".into(), json!({ "name": "party", "slot_secs": 120 })).await;
    let mut keys = Vec::new();
    for name in ["ana", "ben", "cy"] {
        keys.push(
            post("/stages/party/djs".into(), json!({ "name": name })).await["key"].as_str().unwrap_or("").to_string(),
        );
    }
    let mut djs = vec![dj("ana", &keys[0], 440, &first.base, "party")];
    stage_until(&first.base, "ana on air", |v| v["on_air"]["dj"] == "ana").await;
    djs.push(dj("ben", &keys[1], 550, &first.base, "party"));
    stage_until(&first.base, "ben waits", |v| waiting(v) == ["ben"]).await;
    djs.push(dj("cy", &keys[2], 660, &first.base, "party"));
    let before = stage_until(&first.base, "cy waits", |v| waiting(v) == ["ben", "cy"]).await;
    let deadline = before["on_air"]["deadline_ms"].as_u64().expect("a deadline");
    drop(first);
    drop(djs);

    let second = spawn_server(&env).await;
    let restored = stage_view(&second.base).await;
    assert_eq!(restored["on_air"]["deadline_ms"], deadline, "{restored}");
    assert_eq!((restored["on_air"]["dj"].clone(), waiting(&restored)), (json!("ana"), vec!["ben".into(), "cy".into()]));
    // The DJs come back in another order; the stage keeps theirs.
    let _djs = [
        dj("cy", &keys[2], 660, &second.base, "party"),
        dj("ben", &keys[1], 550, &second.base, "party"),
        dj("ana", &keys[0], 440, &second.base, "party"),
    ];
    let back = stage_until(&second.base, "every DJ back", |v| {
        v["on_air"]["connected"] == true
            && v["queue"].as_array().is_some_and(|q| q.iter().all(|d| d["connected"] == true))
    })
    .await;
    assert_eq!(back["on_air"]["dj"], "ana", "{back}");
    assert_eq!(back["on_air"]["deadline_ms"], deadline, "{back}");
    assert_eq!(waiting(&back), ["ben", "cy"]);
}

#[tokio::test]
async fn an_empty_stage_plays_its_fallback_until_a_dj_is_on_air() {
    let h = Harness::start(FakeVoiceConfig::default()).await;
    let fallback = h.media.url("tone-600-long.opus");
    let created = h.post("/stages", json!({ "name": "party", "slot_secs": 60, "fallback": [fallback] })).await;
    assert_eq!(created.status, 201, "{created:?}");
    let key = add_dj(&h, "party", "ana").await;
    let mut events = h.events().await;
    let (guild, session) = h.new_player().await;
    assert_eq!(h.enqueue(guild, "live:party").await.status, 200);
    session.wait(LIMIT, |c| c.packets - c.silence_packets >= 100).await.expect("the fallback is heard");
    let heard: Vec<f64> = session.report().windows.iter().filter(|w| w.level_db > -40.0).map(|w| w.freq_hz).collect();
    assert!(heard.len() >= 10 && heard.iter().all(|f| (f - 600.0).abs() <= 4.0), "fallback heard as {heard:?}");
    let _ana = dj("ana", &key, 440, &h.base_url(), "party");
    events.wait("ana on air", |e| is(e, "OnAir", "ana")).await;
    let at = session.counters().packets;
    session.wait(LIMIT, |c| c.packets >= at + 150).await.expect("ana is heard");
    let report = session.report();
    let lately: Vec<f64> = report.windows.iter().rev().take(10).map(|w| w.freq_hz).collect();
    assert!(lately.iter().all(|f| (f - 440.0).abs() <= 4.0), "the DJ replaced the fallback: {lately:?}");
}
