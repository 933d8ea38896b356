//! Live sources with real source clients: ffmpeg streams a tone to a mount the way it streams
//! to Icecast (`icecast://source:KEY@host:port/mount`), players that queue `live:{mount}`
//! hear it through the fake voice server, and ffmpeg listening over HTTP hears it too. Keys,
//! unknown mounts, stalled sources and reconnects behave as a source client expects.

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use fake_voice::FakeVoiceConfig;
use fake_voice::analysis::analyse_windows;
use serde_json::{Value, json};
use support::{Harness, LIMIT, Serving, TOKEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn harness(tweak: impl FnOnce(&mut mesastream::config::Config)) -> Harness {
    Harness::start_with(FakeVoiceConfig::default(), |c| {
        c.live.ingest_port = Some(0);
        tweak(c);
    })
    .await
}

fn ingest_addr(h: &Harness) -> SocketAddr {
    match &h.serving {
        Serving::InProcess(server) => server.ingest_addr.expect("INGEST_PORT is set"),
        Serving::Installed(..) => panic!("in-process server expected"),
    }
}

/// Makes a mount; its key.
async fn mount(h: &Harness, body: Value) -> String {
    let reply = h.post("/live/mounts", body).await;
    assert_eq!(reply.status, 201, "{reply:?}");
    reply.body["key"].as_str().expect("the key is shown once").to_string()
}

/// ffmpeg as a source client: `tone` (an ffmpeg lavfi audio graph) encoded with `codec`,
/// sent in real time to `url` for `seconds`.
fn source(tone: &str, codec: &[&str], url: &str, seconds: u32) -> tokio::process::Child {
    tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-f", "lavfi", "-i", tone])
        .args(["-t", &seconds.to_string()])
        .args(codec)
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg runs (scripts/setup.sh installs it)")
}

const MP3: [&str; 8] = ["-c:a", "libmp3lame", "-b:a", "128k", "-content_type", "audio/mpeg", "-f", "mp3"];
const OGG_OPUS: [&str; 8] = ["-c:a", "libopus", "-b:a", "96k", "-content_type", "audio/ogg", "-f", "ogg"];

fn sine(hz: u32) -> String {
    format!("sine=frequency={hz}:sample_rate=48000")
}

/// ffmpeg reads `seconds` of `url` as 48 kHz stereo floats.
async fn listen(url: &str, seconds: f64) -> Vec<f32> {
    let output = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
        .args(["-headers", &format!("Authorization: Bearer {TOKEN}\r\n")])
        .args(["-i", url, "-t", &seconds.to_string(), "-f", "f32le", "-ac", "2", "-ar", "48000", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output).await.expect("ffmpeg listens").expect("ffmpeg");
    assert!(output.status.success(), "ffmpeg listening failed: {}", String::from_utf8_lossy(&output.stderr));
    output.stdout.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// The dominant frequency of each audible 100 ms window.
fn tones(pcm: &[f32]) -> Vec<f64> {
    analyse_windows(pcm).0.iter().filter(|w| w.level_db > -40.0).map(|w| w.freq_hz).collect()
}

fn near(hz: f64, want: f64) -> bool {
    (hz - want).abs() <= 4.0
}

/// A new player with `live:{mount}` queued; its guild and voice session.
async fn follower(h: &Harness, name: &str) -> (u64, std::sync::Arc<fake_voice::Session>) {
    let (guild, session) = h.new_player().await;
    let reply = h.enqueue(guild, &format!("live:{name}")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let queued = &reply.body["current_track"];
    assert_eq!(queued["source"], "live", "{reply:?}");
    assert_eq!(queued["metadata"]["duration_ms"], 0, "a live track has no duration");
    (guild, session)
}

/// Waits until the voice listener has heard `n` packets of audio (the mount records silence
/// until its source's first frames are decoded).
async fn hear(session: &fake_voice::Session, n: u64) {
    session.wait(LIMIT, |c| c.packets - c.silence_packets >= n).await.expect("live audio reaches voice");
}

fn audio_packets(session: &fake_voice::Session) -> u64 {
    let c = session.counters();
    c.packets - c.silence_packets
}

/// The tones the voice listener heard in its last `windows` audible windows.
fn heard_lately(session: &fake_voice::Session, windows: usize) -> Vec<f64> {
    let report = session.report();
    let audible: Vec<f64> = report.windows.iter().filter(|w| w.level_db > -40.0).map(|w| w.freq_hz).collect();
    audible[audible.len().saturating_sub(windows)..].to_vec()
}

#[tokio::test]
async fn an_mp3_source_is_heard_in_voice_and_over_http_with_rewind_and_titles() {
    let h = harness(|_| {}).await;
    let key = mount(&h, json!({ "name": "studio" })).await;
    let mut events = h.events().await;
    let url = format!("icecast://source:{key}@{}/studio", ingest_addr(&h));
    // Four seconds of 440 Hz, then 660 Hz: a rewound listener hears the first tone first.
    let tone = format!("{}[a];{}[b];[a][b]concat=n=2:v=0:a=1", sine(440) + ":duration=4", sine(660));
    let _source = source(&tone, &MP3, &url, 30);
    let connected = events.wait("the source connected", |e| e["type"] == "LiveSourceConnected").await;
    assert_eq!(connected["data"]["mount"], "studio");
    assert_eq!(connected["data"]["content_type"], "audio/mpeg");

    let (_guild, session) = follower(&h, "studio").await;
    hear(&session, 50).await;
    let first = heard_lately(&session, 5);
    assert!(!first.is_empty() && first.iter().all(|f| near(*f, 440.0)), "voice heard {first:?}");

    // Past the change: live listeners hear 660 Hz; five seconds back starts in the 440 Hz part.
    hear(&session, 300).await;
    let live = format!("{}/live/studio/listen", h.base_url());
    let rewind = format!("{live}?rewind=5");
    let (now, rewound) = tokio::join!(listen(&live, 2.0), listen(&rewind, 5.0));
    let now = tones(&now);
    assert!(now.len() >= 10 && now.iter().all(|f| near(*f, 660.0)), "live listener heard {now:?}");
    let rewound = tones(&rewound);
    assert!(rewound.first().is_some_and(|f| near(*f, 440.0)), "the rewound listener starts in the past: {rewound:?}");
    assert!(rewound.iter().any(|f| near(*f, 660.0)), "and reaches the change: {rewound:?}");
    let voice = heard_lately(&session, 5);
    assert!(voice.iter().all(|f| near(*f, 660.0)), "voice follows the change: {voice:?}");

    // Icecast's metadata call, with the source's login, retitles the mount.
    let song = format!("{}/admin/metadata?mount=/studio&mode=updinfo&song=Night%20Shift", h.base_url());
    let reply = h.http.get(&song).basic_auth("source", Some(&key)).send().await.expect("metadata call");
    assert_eq!(reply.status(), 200);
    let titled = events.wait("the new title", |e| e["type"] == "LiveTitle").await;
    assert_eq!(titled["data"], json!({ "mount": "studio", "title": "Night Shift" }));
    let shown = h.get("/live/mounts/studio").await;
    assert_eq!((shown.body["live"].clone(), shown.body["title"].clone()), (json!(true), json!("Night Shift")));
    assert!(shown.body.get("key").is_none() && shown.body.get("key_digest").is_none(), "{shown:?}");
    let metrics = h.metrics().await;
    assert_eq!(support::counter(&metrics, "mesastream_live_sources", &[]), 1, "{metrics}");
    assert!(support::counter(&metrics, "mesastream_live_bytes_in_total", &[]) > 100_000, "{metrics}");
}

#[tokio::test]
async fn an_ogg_opus_source_on_the_api_port_passes_through_and_is_decoded_once_for_every_player() {
    let h = harness(|_| {}).await;
    let key = mount(&h, json!({ "name": "opus-room", "formats": ["ogg"] })).await;
    let mut events = h.events().await;
    let url = format!("icecast://source:{key}@{}/live/opus-room", h.addr);
    let _source = source(&sine(550), &OGG_OPUS, &url, 30);
    events.wait("the source connected", |e| e["type"] == "LiveSourceConnected").await;
    let (_a, one) = follower(&h, "opus-room").await;
    let (_b, two) = follower(&h, "opus-room").await;
    hear(&one, 100).await;
    hear(&two, 100).await;
    for session in [&one, &two] {
        let heard = heard_lately(session, 10);
        assert!(heard.len() >= 5 && heard.iter().all(|f| near(*f, 550.0)), "heard {heard:?}");
    }
    // An Opus source's packets go to both players as they came: nothing decoded or encoded.
    let metrics = h.metrics().await;
    assert_eq!(support::counter(&metrics, "mesastream_opus_encodes_total", &[]), 0, "{metrics}");
    assert_eq!(support::counter(&metrics, "mesastream_opus_decodes_total", &[]), 0, "{metrics}");
    let report = one.report();
    assert_eq!((report.undecryptable, report.plaintext), (0, 0), "{report:?}");
}

#[tokio::test]
async fn an_mp3_mount_is_encoded_once_however_many_players_follow_it() {
    let h = harness(|_| {}).await;
    let key = mount(&h, json!({ "name": "radio" })).await;
    let mut events = h.events().await;
    let _source = source(&sine(440), &MP3, &format!("icecast://source:{key}@{}/radio", ingest_addr(&h)), 30);
    events.wait("the source connected", |e| e["type"] == "LiveSourceConnected").await;
    let players = [follower(&h, "radio").await, follower(&h, "radio").await, follower(&h, "radio").await];
    for (_, session) in &players {
        hear(session, 60).await;
    }
    let encodes = |m: &str| support::counter(m, "mesastream_opus_encodes_total", &[]);
    let (before, heard_before) = (encodes(&h.metrics().await), audio_packets(&players[0].1));
    hear(&players[0].1, heard_before + 150).await;
    let (after, heard_after) = (encodes(&h.metrics().await), audio_packets(&players[0].1));
    let per_player = heard_after - heard_before;
    let encoded = after - before;
    // One encode a frame for the mount; three followers would be three a frame.
    assert!(encoded < per_player * 3 / 2, "{encoded} frames encoded while each player got {per_player}");
    for (_, session) in &players {
        let heard = heard_lately(session, 10);
        assert!(heard.iter().all(|f| near(*f, 440.0)), "heard {heard:?}");
    }
}

#[tokio::test]
async fn wrong_keys_and_unknown_mounts_are_refused_and_repeated_failures_are_limited() {
    let h = harness(|c| c.live.failures_per_minute = 4).await;
    let key = mount(&h, json!({ "name": "studio" })).await;
    let ingest = ingest_addr(&h);
    // ffmpeg with a wrong key: refused, and the mount never goes live.
    let mut wrong = source(&sine(440), &MP3, &format!("icecast://source:not-the-key@{ingest}/studio"), 5);
    let status = tokio::time::timeout(LIMIT, wrong.wait()).await.expect("ffmpeg gives up").expect("ffmpeg");
    assert!(!status.success(), "a wrong key must not stream");
    let mut stderr = String::new();
    if let Some(mut e) = wrong.stderr.take() {
        let _ = e.read_to_string(&mut stderr).await;
    }
    assert!(stderr.contains("401"), "ffmpeg was told 401: {stderr}");
    assert_eq!(h.get("/live/mounts/studio").await.body["live"], false);
    let put = |path: &str, password: &str| {
        let request = h.http.put(format!("http://{ingest}{path}")).basic_auth("source", Some(password));
        async move { request.body("x").send().await.expect("ingest answers") }
    };
    // A mount that does not exist answers as a wrong key does: nothing tells which exist.
    let unknown = put("/elsewhere", &key).await;
    assert_eq!(unknown.status(), 401);
    assert!(unknown.headers()["www-authenticate"].to_str().unwrap_or("").starts_with("Basic"));
    let unknown: Value = unknown.json().await.expect("the contract's error body");
    assert_eq!(unknown["code"], "unauthorized", "{unknown}");
    let refused = put("/studio", "still-wrong").await;
    assert_eq!(refused.status(), 401);
    assert!(refused.headers()["www-authenticate"].to_str().unwrap_or("").starts_with("Basic"));
    let refused: Value = refused.json().await.expect("the contract's error body");
    let same = |v: &Value| v["message"].as_str().unwrap_or_default().replace("elsewhere", "studio");
    assert_eq!(same(&unknown), same(&refused), "{unknown} / {refused}");
    // A rotated key: the new one logs in, the old one no longer does.
    let mut events = h.events().await;
    let rotated = h.post("/live/mounts/studio/key", Value::Null).await;
    let new_key = rotated.body["key"].as_str().expect("a new key").to_string();
    assert_ne!(new_key, key);
    let mut streaming = source(&sine(440), &MP3, &format!("icecast://source:{new_key}@{ingest}/studio"), 30);
    events.wait("the new key logs in", |e| e["type"] == "LiveSourceConnected").await;
    let _ = streaming.kill().await;
    assert_eq!(put("/studio", &key).await.status(), 401, "the old key is refused");
    // A fifth failure is past the minute's four: from then on even the right key waits.
    assert_eq!(put("/studio", "wrong-again").await.status(), 401);
    let limited = put("/studio", &new_key).await;
    assert_eq!(limited.status(), 429);
    let metrics = h.metrics().await;
    assert!(support::counter(&metrics, "mesastream_ingest_refused_total", &["reason=\"auth\""]) >= 4, "{metrics}");
}

#[tokio::test]
async fn metadata_updates_do_not_tell_which_mounts_exist() {
    let h = harness(|_| {}).await;
    mount(&h, json!({ "name": "studio" })).await;
    // Icecast's metadata update answers the same for a missing mount as for a wrong key.
    let metadata = |mount: &str| {
        let url = format!("http://{}/admin/metadata?mode=updinfo&mount=/{mount}&song=x", h.addr);
        let request = h.http.get(url).basic_auth("source", Some("wrong"));
        async move {
            let reply = request.send().await.expect("metadata answers");
            (reply.status().as_u16(), reply.json::<Value>().await.expect("error body")["code"].clone())
        }
    };
    assert_eq!(metadata("studio").await, (401, json!("unauthorized")));
    assert_eq!(metadata("no-such-mount").await, (401, json!("unauthorized")));
}

#[tokio::test]
async fn a_source_that_stalls_is_dropped() {
    let h = harness(|c| c.live.idle_secs = 1).await;
    let key = mount(&h, json!({ "name": "studio" })).await;
    let mut events = h.events().await;
    let mut socket = tokio::net::TcpStream::connect(ingest_addr(&h)).await.expect("connect");
    let login = base64_login(&key);
    let head = format!("SOURCE /studio HTTP/1.0\r\nAuthorization: Basic {login}\r\nContent-Type: audio/mpeg\r\n\r\n");
    socket.write_all(head.as_bytes()).await.expect("send the head");
    let gone = events.wait("the stalled source dropped", |e| e["type"] == "LiveSourceDisconnected").await;
    assert_eq!(gone["data"], json!({ "mount": "studio", "reason": "stalled" }));
    // The server closed the connection: what is left to read is its answer, then the end.
    let mut rest = Vec::new();
    tokio::time::timeout(LIMIT, socket.read_to_end(&mut rest)).await.expect("closed").expect("read");
    assert!(String::from_utf8_lossy(&rest).starts_with("HTTP/1.0 200 OK"), "{rest:?}");
    let metrics = h.metrics().await;
    assert_eq!(support::counter(&metrics, "mesastream_live_source_drops_total", &["reason=\"stalled\""]), 1);
    assert_eq!(h.get("/live/mounts/studio").await.body["live"], false);
}

#[tokio::test]
async fn a_source_is_cut_off_at_the_mounts_longest_duration_and_formats_are_checked() {
    let h = harness(|_| {}).await;
    let key = mount(&h, json!({ "name": "short", "max_duration_secs": 2, "formats": ["mp3"] })).await;
    let mut events = h.events().await;
    let url = format!("icecast://source:{key}@{}/short", ingest_addr(&h));
    let _source = source(&sine(440), &MP3, &url, 30);
    let gone = events.wait("the source was cut off", |e| e["type"] == "LiveSourceDisconnected").await;
    assert_eq!(gone["data"]["reason"], "max_duration");
    let on = &events.seen.iter().find(|e| e["type"] == "LiveSourceConnected").expect("it was on").clone();
    assert_eq!(on["data"]["mount"], "short");
    // Ogg on a mount that takes MP3 only: 415, nothing played.
    let mut ogg = source(&sine(440), &OGG_OPUS, &url, 5);
    let status = tokio::time::timeout(LIMIT, ogg.wait()).await.expect("ffmpeg gives up").expect("ffmpeg");
    assert!(!status.success());
    let metrics = h.metrics().await;
    assert_eq!(support::counter(&metrics, "mesastream_ingest_refused_total", &["reason=\"format\""]), 1, "{metrics}");
    assert_eq!(support::counter(&metrics, "mesastream_live_source_drops_total", &["reason=\"max_duration\""]), 1);
}

#[tokio::test]
async fn a_source_slower_than_the_header_timeout_is_answered_408() {
    let h = harness(|c| c.live.header_timeout_secs = 1).await;
    let mut socket = tokio::net::TcpStream::connect(ingest_addr(&h)).await.expect("connect");
    socket.write_all(b"PUT /studio HTTP/1.1\r\nAuthorization: Ba").await.expect("half a head");
    let mut answer = Vec::new();
    tokio::time::timeout(LIMIT, socket.read_to_end(&mut answer)).await.expect("closed").expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"bad_request\""), "the contract's error body: {answer}");
    let metrics = h.metrics().await;
    assert_eq!(support::counter(&metrics, "mesastream_ingest_refused_total", &["reason=\"header_timeout\""]), 1);
}

fn base64_login(key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("source:{key}"))
}

#[tokio::test]
async fn a_source_that_reconnects_within_the_grace_period_continues_the_track_which_ends_after_it() {
    let h = harness(|c| c.live.grace_secs = 4).await;
    let key = mount(&h, json!({ "name": "studio" })).await;
    let mut events = h.events().await;
    let url = format!("icecast://source:{key}@{}/studio", ingest_addr(&h));
    let mut first = source(&sine(440), &MP3, &url, 4);
    events.wait("the first source", |e| e["type"] == "LiveSourceConnected").await;
    let (guild, session) = follower(&h, "studio").await;
    hear(&session, 50).await;
    let _ = tokio::time::timeout(LIMIT, first.wait()).await.expect("the first source finishes");
    events.wait("the first source left", |e| e["type"] == "LiveSourceDisconnected").await;
    // Back within the grace period (as Ogg Opus, at another pitch): the same track goes on.
    let mut second = source(&sine(660), &OGG_OPUS, &url, 30);
    events
        .wait("the source came back", |e| {
            e["type"] == "LiveSourceConnected" && e["data"]["content_type"] == "audio/ogg"
        })
        .await;
    let heard = audio_packets(&session);
    hear(&session, heard + 150).await;
    let lately = heard_lately(&session, 10);
    assert!(lately.len() >= 5 && lately.iter().all(|f| near(*f, 660.0)), "heard {lately:?}");
    assert!(!events.seen.iter().any(|e| e["type"] == "TrackEnded"), "the track did not end: {:#?}", events.seen);
    // Gone for good: the track ends once the grace period is over, saying why.
    let _ = second.kill().await;
    let ended = events.wait("the live track ended", |e| e["type"] == "TrackEnded").await;
    assert_eq!(ended["data"]["guild_id"], guild.to_string());
    let why = ended["data"]["error"].as_str().unwrap_or("");
    assert!(why.contains("live:studio") && why.contains("away"), "{ended}");
}
