//! Listening over HTTP with real clients: ffmpeg reads a player's Ogg and MP3 streams, its live
//! HLS and a track's on-demand HLS, and the decoded audio must be the player's tone; a rewound
//! listener hears the past first; ICY titles follow the tracks; listen tokens open exactly
//! what they name.

mod support;

use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fake_voice::FakeVoiceConfig;
use fake_voice::analysis::{Window, analyse_windows};
use futures_util::StreamExt;
use mesastream::api::listen::tokens::{Format, Grant, Signer, Subject};
use mesastream::model::Id;
use serde_json::{Value, json};
use support::{Harness, LIMIT, Playing, TOKEN, start_track};

const SECRET: &str = "a-listen-secret-of-at-least-32-characters";
const OLD_SECRET: &str = "the-previous-listen-secret-32-characters";

async fn harness() -> Harness {
    Harness::start_with(FakeVoiceConfig::default(), |c| {
        c.listen.secret = Some(SECRET.into());
        c.listen.previous_secret = Some(OLD_SECRET.into());
    })
    .await
}

/// ffmpeg reads `url` (with `input_args` before it) and decodes `seconds` of it to 48 kHz
/// stereo floats.
async fn ffmpeg_pcm(url: &str, input_args: &[&str], seconds: f64) -> Vec<f32> {
    let mut command = tokio::process::Command::new("ffmpeg");
    command
        .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
        .args(input_args)
        .args(["-i", url, "-t", &seconds.to_string(), "-f", "f32le", "-ac", "2", "-ar", "48000", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(90), command.output())
        .await
        .unwrap_or_else(|_| panic!("ffmpeg did not finish reading {url}"))
        .expect("ffmpeg runs (scripts/setup.sh installs it)");
    assert!(output.status.success(), "ffmpeg failed on {url}: {}", String::from_utf8_lossy(&output.stderr));
    output.stdout.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// The windows of the audible part, and how long it is.
fn heard(pcm: &[f32]) -> (Vec<Window>, u64) {
    analyse_windows(pcm)
}

fn near(window: &Window, hz: f64) -> bool {
    (window.freq_hz - hz).abs() <= 3.0
}

/// Every window of the audible part is `hz` (the edges, cut mid-window, may blur) and there
/// is at least `min_ms` of it.
fn assert_tone(pcm: &[f32], hz: f64, min_ms: u64, what: &str) {
    let (windows, audible_ms) = heard(pcm);
    assert!(audible_ms >= min_ms, "{what}: heard {audible_ms} ms, wanted at least {min_ms}");
    let inner = &windows[1..windows.len().saturating_sub(1).max(1)];
    let off: Vec<f64> = inner.iter().filter(|w| !near(w, hz)).map(|w| w.freq_hz).collect();
    assert!(off.is_empty(), "{what}: windows off {hz} Hz: {off:?}");
}

async fn token(h: &Harness, body: Value) -> Value {
    let reply = h.post("/listen-tokens", body).await;
    assert_eq!(reply.status, 201, "{reply:?}");
    reply.body
}

async fn started(h: &Harness, file: &str) -> Playing {
    let playing = start_track(h, file).await;
    playing.heard(50).await;
    playing
}

#[tokio::test]
async fn ogg_and_mp3_streams_carry_what_the_player_sends() {
    let h = harness().await;
    let playing = started(&h, "tone-450-20s.opus").await;
    let mut events = h.events().await;
    let ogg = token(&h, json!({ "player_id": playing.guild.to_string(), "format": "ogg" })).await;
    let mp3 = token(&h, json!({ "player_id": playing.guild.to_string(), "format": "mp3" })).await;
    let ogg_url = h.url(ogg["url"].as_str().unwrap());
    let mp3_url = h.url(mp3["url"].as_str().unwrap());
    let (ogg_pcm, mp3_pcm) = tokio::join!(ffmpeg_pcm(&ogg_url, &[], 4.0), ffmpeg_pcm(&mp3_url, &[], 4.0));
    assert_tone(&ogg_pcm, 450.0, 2500, "ogg");
    assert_tone(&mp3_pcm, 450.0, 2500, "mp3");
    let joined = events.wait("a listener joined", |e| e["type"] == "ListenerJoined").await;
    assert_eq!(joined["data"]["player_id"], playing.guild.to_string());
    events.wait("a listener left", |e| e["type"] == "ListenerLeft" && e["data"]["dropped"] == false).await;
    let metrics = h.metrics().await;
    assert!(support::counter(&metrics, "mesastream_listener_bytes_total", &["format=\"ogg\""]) > 30_000, "{metrics}");
    assert!(support::counter(&metrics, "mesastream_listener_bytes_total", &["format=\"mp3\""]) > 30_000, "{metrics}");
}

#[tokio::test]
async fn a_rewound_listener_hears_the_past_first_then_follows() {
    let h = harness().await;
    let mut playing = started(&h, "tone-600-long.opus").await;
    let second = h.enqueue(playing.guild, &h.media.url("tone-450-20s.opus")).await;
    assert_eq!(second.status, 200, "{second:?}");
    let second_id = second.body["queue"][0]["id"].as_str().map(str::to_string).unwrap_or_default();
    playing
        .events
        .wait("the second track started", |e| e["type"] == "TrackStarted" && e["data"]["track"]["id"] == second_id)
        .await;
    // Five seconds into the second track, ten seconds back is five seconds into the first.
    let start = playing.session.counters().packets;
    playing.session.wait(LIMIT, |c| c.packets >= start + 250).await.expect("the second track plays on");
    let grant = token(&h, json!({ "player_id": playing.guild.to_string() })).await;
    let url = format!("{}&rewind=10", h.url(grant["url"].as_str().unwrap()));
    let pcm = ffmpeg_pcm(&url, &[], 7.0).await;
    let (windows, _) = heard(&pcm);
    let first_new = windows.iter().position(|w| near(w, 450.0)).expect("the live track is reached");
    assert!(windows[..first_new].iter().any(|w| near(w, 600.0)), "the past came first: {windows:?}");
    let past_ms = windows[..first_new].iter().filter(|w| near(w, 600.0)).count() as u64 * 100;
    // About 5 s of the first track was left ten seconds back (the decoder and the window grid blur a little).
    assert!((3_500..=6_000).contains(&past_ms), "heard {past_ms} ms of the past: {windows:?}");
    assert!(windows[first_new..].iter().filter(|w| near(w, 450.0)).count() >= 10, "then followed: {windows:?}");
}

/// Reads an MP3 stream with ICY metadata and returns the titles announced, until `enough`.
async fn icy_titles(url: &str, enough: impl Fn(&[String]) -> bool) -> Vec<String> {
    let response = reqwest::Client::new().get(url).header("Icy-MetaData", "1").send().await.expect("listen");
    assert_eq!(response.status(), 200);
    let metaint: usize = response.headers()["icy-metaint"].to_str().unwrap().parse().unwrap();
    let mut stream = response.bytes_stream();
    let (mut buffer, mut titles) = (Vec::new(), Vec::new());
    let mut until_block = metaint;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while !enough(&titles) {
        let chunk = tokio::time::timeout_at(deadline, stream.next()).await.expect("titles in time").unwrap().unwrap();
        buffer.extend_from_slice(&chunk);
        loop {
            if buffer.len() <= until_block {
                until_block -= buffer.len();
                buffer.clear();
                break;
            }
            let block = buffer[until_block] as usize * 16;
            if buffer.len() < until_block + 1 + block {
                break;
            }
            let text = String::from_utf8_lossy(&buffer[until_block + 1..until_block + 1 + block]).to_string();
            if let Some(title) = text.strip_prefix("StreamTitle='").and_then(|t| t.split("';").next()) {
                titles.push(title.to_string());
            }
            buffer.drain(..until_block + 1 + block);
            until_block = metaint;
        }
    }
    titles
}

#[tokio::test]
async fn icy_titles_change_with_the_track() {
    let h = harness().await;
    let mut playing = started(&h, "tone-600-long.opus").await;
    assert_eq!(h.enqueue(playing.guild, &h.media.url("tone-523-long.mp3")).await.status, 200);
    let grant = token(&h, json!({ "player_id": playing.guild.to_string(), "format": "mp3" })).await;
    let titles = icy_titles(&h.url(grant["url"].as_str().unwrap()), |t| t.iter().any(|t| t.contains("523"))).await;
    assert!(titles[0].contains("tone-600-long.opus"), "{titles:?}");
    assert!(titles.last().unwrap().contains("tone-523-long.mp3"), "{titles:?}");
    playing.events.track_ended(playing.guild, &playing.track_id).await;
}

#[tokio::test]
async fn live_hls_of_a_player_plays_in_ffmpeg() {
    let h = harness().await;
    let playing = started(&h, "tone-450-20s.opus").await;
    // Enough for three complete 2 s segments of the track behind the live edge.
    playing.session.wait(LIMIT, |c| c.packets >= 450).await.expect("the track plays on");
    let grant = token(&h, json!({ "player_id": playing.guild.to_string(), "format": "hls" })).await;
    let url = h.url(grant["url"].as_str().unwrap());
    let playlist = h.http.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(playlist.contains("#EXT-X-MAP:URI=\"init.mp4?token="), "{playlist}");
    let pcm = ffmpeg_pcm(&url, &["-live_start_index", "-3"], 5.0).await;
    assert_tone(&pcm, 450.0, 4000, "live hls");
    let metrics = h.metrics().await;
    assert!(
        support::counter(&metrics, "mesastream_hls_requests_total", &["kind=\"segment\"", "source=\"player\""]) >= 3
    );
}

#[tokio::test]
async fn on_demand_hls_of_a_track_is_cached_then_segmented() {
    let h = harness().await;
    let query = h.media.url("tone-660.flac");
    let grant = token(&h, json!({ "track": query, "format": "hls" })).await;
    let url = h.url(grant["url"].as_str().unwrap());
    let playlist = h.http.get(&url).send().await.unwrap();
    assert_eq!(playlist.status(), 200);
    let playlist = playlist.text().await.unwrap();
    assert!(playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
    let segment_uri = playlist.lines().find(|l| l.ends_with(".m4s") || l.contains(".m4s?")).unwrap().to_string();
    assert!(segment_uri.starts_with("/tracks/"), "segments are reached by the track's id: {segment_uri}");
    let pcm = ffmpeg_pcm(&url, &[], 30.0).await;
    assert_tone(&pcm, 660.0, 1900, "on-demand hls");
    let (_, audible) = heard(&pcm);
    assert!(audible <= 2100, "the whole track and no more: {audible} ms");
    // The id form works with a token for the id.
    let id = segment_uri.trim_start_matches("/tracks/").split('/').next().unwrap().to_string();
    let by_id = token(&h, json!({ "track_id": id, "format": "hls" })).await;
    let pcm = ffmpeg_pcm(&h.url(by_id["url"].as_str().unwrap()), &[], 30.0).await;
    assert_tone(&pcm, 660.0, 1900, "on-demand hls by id");
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

async fn status(h: &Harness, path: &str) -> (u16, Value) {
    let response = h.http.get(h.url(path)).send().await.unwrap();
    let status = response.status().as_u16();
    let is_json = response.headers().get("content-type").is_some_and(|v| v.to_str().unwrap().contains("json"));
    (status, if is_json { response.json().await.unwrap() } else { Value::Null })
}

#[tokio::test]
async fn listen_tokens_open_exactly_what_they_name() {
    let h = harness().await;
    let (guild, _session) = h.new_player().await;
    let (other, _other_session) = h.new_player().await;
    let playlist = |g: u64, t: &str| format!("/players/{g}/hls/index.m3u8?token={t}");
    let signer = Signer::new(SECRET.as_bytes(), None);
    let grant = |id: u64, format: Format, expires: u64| Grant { subject: Subject::Player(Id(id)), format, expires };

    let valid = token(&h, json!({ "player_id": guild.to_string(), "format": "hls", "expires_in": 60 })).await;
    let valid = valid["token"].as_str().unwrap().to_string();
    assert_eq!(status(&h, &playlist(guild, &valid)).await.0, 200);

    let (code, body) = status(&h, &format!("/players/{guild}/hls/index.m3u8")).await;
    assert_eq!((code, body["code"].as_str()), (401, Some("unauthorized")), "{body}");
    let expired = signer.sign(&grant(guild, Format::Hls, unix_now() - 1));
    let (code, body) = status(&h, &playlist(guild, &expired)).await;
    assert_eq!((code, body["code"].as_str()), (403, Some("forbidden")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("expired"), "{body}");
    let mut tampered = valid.clone().into_bytes();
    let at = tampered.len() - 3;
    tampered[at] = if tampered[at] == b'x' { b'y' } else { b'x' };
    assert_eq!(status(&h, &playlist(guild, &String::from_utf8(tampered).unwrap())).await.0, 403);
    assert_eq!(status(&h, &playlist(other, &valid)).await.0, 403, "another player");
    assert_eq!(status(&h, &format!("/players/{guild}/listen?format=mp3&token={valid}")).await.0, 403, "another format");
    let foreign =
        Signer::new(b"some-other-node-secret-of-32-chars!!", None).sign(&grant(guild, Format::Hls, unix_now() + 60));
    assert_eq!(status(&h, &playlist(guild, &foreign)).await.0, 403, "another key");

    // A key rotated out still opens what it signed.
    let rotated = Signer::new(OLD_SECRET.as_bytes(), None).sign(&grant(guild, Format::Any, unix_now() + 60));
    assert_eq!(status(&h, &playlist(guild, &rotated)).await.0, 200);

    // A batch caps its tokens' lives, and unlocks items while it lives.
    let batch = token(
        &h,
        json!({
            "items": [{ "player_id": guild.to_string(), "format": "hls" }, { "player_id": other.to_string(), "format": "ogg" }],
            "expires_in": 3600,
            "batch_expires_in": 120,
        }),
    )
    .await;
    let batch_expires = batch["batch_expires_at"].as_u64().unwrap();
    assert!(
        batch["items"].as_array().unwrap().iter().all(|i| i["expires_at"].as_u64() == Some(batch_expires)),
        "{batch}"
    );
    let first = batch["items"][0]["token"].as_str().unwrap();
    assert_eq!(status(&h, &playlist(guild, first)).await.0, 200);
    let unlocked = h.post("/listen-tokens/unlock", json!({ "batch": batch["batch"], "item": 1 })).await;
    assert_eq!(unlocked.status, 201, "{unlocked:?}");
    assert!(unlocked.body["expires_at"].as_u64().unwrap() <= batch_expires);
    let ogg = unlocked.body["token"].as_str().unwrap();
    assert_eq!(status(&h, &playlist(other, ogg)).await.0, 403, "the unlocked token is for the item's format");
    let over = h.post("/listen-tokens/unlock", json!({ "batch": batch["batch"], "item": 2 })).await;
    assert_eq!(over.status, 400, "{over:?}");
    let past = mesastream::api::listen::tokens::Batch {
        items: vec![(Subject::Player(Id(guild)), Format::Hls)],
        expires: unix_now() - 1,
        ttl: 60,
    };
    let gone = h.post("/listen-tokens/unlock", json!({ "batch": signer.sign_batch(&past), "item": 0 })).await;
    assert_eq!((gone.status, gone.body["code"].as_str()), (410, Some("gone")), "{gone:?}");

    // Issuing needs the bearer token, and names exactly one thing.
    let bare =
        reqwest::Client::new().post(h.url("/listen-tokens")).json(&json!({ "player_id": "1" })).send().await.unwrap();
    assert_eq!(bare.status(), 401);
    let both = h.post("/listen-tokens", json!({ "player_id": "1", "track_id": "00" })).await;
    assert_eq!(both.status, 400, "{both:?}");
    let long = h.post("/listen-tokens", json!({ "player_id": "1", "expires_in": 10_000_000 })).await;
    assert_eq!(long.status, 400, "{long:?}");

    // A name is a name: one that spells a batch's separators cannot smuggle in another item.
    for mount in ["x/any,p:999", "x,p:999/any", "a b", "", "m:x"] {
        let single = h.post("/listen-tokens", json!({ "mount": mount })).await;
        assert_eq!((single.status, single.body["code"].as_str()), (400, Some("bad_request")), "{mount:?}: {single:?}");
        let batch = h.post("/listen-tokens", json!({ "items": [{ "mount": mount }] })).await;
        assert_eq!(batch.status, 400, "{mount:?}: {batch:?}");
    }
    assert_eq!(h.post("/listen-tokens", json!({ "mount": "studio-1_b" })).await.status, 201);
}

#[tokio::test]
async fn open_listening_needs_no_token_and_the_bearer_always_works() {
    let open = Harness::start_with(FakeVoiceConfig::default(), |c| c.listen.public = true).await;
    let (guild, _session) = open.new_player().await;
    assert_eq!(status(&open, &format!("/players/{guild}/hls/index.m3u8")).await.0, 200);
    // The unchecked token of an open node is carried into the playlist as one query value:
    // it cannot add a key, a segment or any other line.
    let injected = "t\n#EXT-X-KEY:METHOD=AES-128,URI=\"http://evil.example/k\"\nhttp://evil.example/0.m4s?a=\"b";
    let playlist = open
        .http
        .get(open.url(&format!("/players/{guild}/hls/index.m3u8")))
        .query(&[("token", injected)])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(playlist.starts_with("#EXTM3U"), "{playlist}");
    let injected_lines = playlist.lines().filter(|l| l.starts_with("#EXT-X-KEY") || l.starts_with("http"));
    assert_eq!(injected_lines.count(), 0, "{playlist}");
    assert_eq!(playlist.matches('"').count(), 2, "only the map's own quotes: {playlist}");
    assert!(playlist.contains("?token=t%0A%23EXT-X-KEY"), "the token is still carried, encoded: {playlist}");
    let closed = harness().await;
    let (guild, _session) = closed.new_player().await;
    let with_bearer = closed
        .http
        .get(closed.url(&format!("/players/{guild}/hls/index.m3u8")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(with_bearer.status(), 200);
    let missing = status(&closed, "/players/123/hls/index.m3u8?token=x").await;
    assert_eq!(missing.0, 403, "a token is checked before the player is looked up");
}

#[tokio::test]
async fn the_operator_page_and_hls_js_play_a_player_in_chromium() {
    let h = harness().await;
    let playing = started(&h, "tone-450-20s.opus").await;
    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("operator-page.png");
    let _ = std::fs::remove_file(&screenshot);
    let clients = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let hls = token(&h, json!({ "player_id": playing.guild.to_string(), "format": "hls" })).await;
    let output = tokio::process::Command::new("node")
        .arg(clients.join("operator_page.cjs"))
        .env("BASE_URL", h.base_url())
        .env("AUTH_TOKEN", TOKEN)
        .env("PLAYER_ID", playing.guild.to_string())
        .env("SCREENSHOT", &screenshot)
        .env("HLS_URL", h.url(hls["url"].as_str().unwrap()))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), output)
        .await
        .expect("the browser finishes")
        .expect("node runs (scripts/setup.sh installs it and puppeteer-core)");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the page script failed:\n{stdout}\n{stderr}");
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("one JSON line");
    assert_eq!(seen["problems"], json!([]), "the page loads and plays without errors: {seen}");
    assert!(seen["nowPlaying"].as_str().unwrap().contains("tone-450-20s.opus"), "{seen}");
    assert_eq!(seen["status"], "playing", "{seen}");
    assert!(seen["currentTime"].as_f64().unwrap() > 2.0, "{seen}");
    assert_eq!(seen["hlsSupported"], true, "{seen}");
    assert!(seen["hlsTime"].as_f64().unwrap() > 2.0, "hls.js played the live HLS: {seen}");
    let png = std::fs::read(&screenshot).expect("a screenshot was written");
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
    eprintln!("operator page screenshot: {}", screenshot.display());
}

#[tokio::test]
async fn a_stream_ends_when_its_player_is_destroyed() {
    let h = harness().await;
    let playing = started(&h, "tone-450-20s.opus").await;
    let response =
        h.http.get(h.url(&format!("/players/{}/listen", playing.guild))).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    assert!(body.next().await.is_some_and(|chunk| chunk.is_ok()), "audio flows");
    let destroyed = h.call(reqwest::Method::DELETE, &format!("/players/{}", playing.guild), None).await;
    assert_eq!(destroyed.status, 204);
    let ended = tokio::time::timeout(LIMIT, async {
        while let Some(chunk) = body.next().await {
            chunk.expect("the stream ends cleanly");
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream ended after its player went away");
}

#[tokio::test]
async fn on_demand_hls_of_an_endless_stream_is_refused_at_once() {
    let h = harness().await;
    let reply = h
        .http
        .get(h.url("/tracks/hls/index.m3u8"))
        .query(&[("query", h.media.url("live.mp3"))])
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 404);
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["code"], "source_unavailable", "{body}");
    assert!(body["message"].as_str().unwrap().contains("cannot be cached"), "{body}");
}

/// Signs in to the operator page at `base` with `token`; the session cookie it sets.
async fn sign_in(client: &reqwest::Client, base: &str, token: &str) -> String {
    let reply = client.post(format!("{base}/ui/session")).form(&[("token", token)]).send().await.expect("sign in");
    assert_eq!(reply.status(), 303, "{reply:?}");
    let set = reply.headers()["set-cookie"].to_str().expect("cookie").to_string();
    set.split(';').next().expect("name=value").to_string()
}

async fn with_cookie(client: &reqwest::Client, url: &str, cookie: &str) -> u16 {
    client.get(url).header("cookie", cookie).send().await.expect("request").status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_sessions_end_at_sign_out_and_when_the_token_changes() {
    use support::process::spawn_server;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let data = tempfile::tempdir().expect("data dir");
    let env = |token: &str| vec![("DATA_DIR", data.path().display().to_string()), ("AUTH_TOKEN", token.to_string())];
    let node = spawn_server(&env(TOKEN)).await;
    let players = format!("{}/players", node.base);

    // Signing out ends the session on the server: a copy of the cookie kept elsewhere is dead.
    let cookie = sign_in(&client, &node.base, TOKEN).await;
    assert_eq!(with_cookie(&client, &players, &cookie).await, 200);
    let out = client.delete(format!("{}/ui/session", node.base)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(out.status(), 204);
    assert_eq!(with_cookie(&client, &players, &cookie).await, 401, "a signed-out session still worked");
    let forged = format!("mesastream_ui={}", "A".repeat(43));
    assert_eq!(with_cookie(&client, &players, &forged).await, 401);

    // A session outlives a restart with the same token, and no restart with another.
    let kept = sign_in(&client, &node.base, TOKEN).await;
    drop(node);
    let node = spawn_server(&env(TOKEN)).await;
    assert_eq!(with_cookie(&client, &format!("{}/players", node.base), &kept).await, 200);
    drop(node);
    let node = spawn_server(&env("a-new-token-for-this-node")).await;
    assert_eq!(with_cookie(&client, &format!("{}/players", node.base), &kept).await, 401, "the old token's session");
    let ws = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws", node.port)).await;
    assert!(ws.is_ok(), "anonymous /ws is still open by default");
}

/// Opens an MP3 stream and waits for its first bytes: its encoder is running by then.
async fn open_mp3(h: &Harness, url: &str) -> reqwest::Response {
    let mut stream = h.http.get(url).send().await.expect("listen");
    assert_eq!(stream.status(), 200, "{url}");
    let first = tokio::time::timeout(LIMIT, stream.chunk()).await.expect("audio in time").expect("read");
    assert!(first.is_some_and(|c| !c.is_empty()), "{url} sent nothing");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewound_mp3_listeners_share_one_encoder_per_second_of_rewind() {
    let h = harness().await;
    let playing = started(&h, "tone-450-20s.opus").await;
    // Past five seconds of audio, a rewind of 2 or 3 s is never cut short by what is kept.
    playing.session.wait(LIMIT, |c| c.packets >= 250).await.expect("five seconds played");
    let grant = token(&h, json!({ "player_id": playing.guild.to_string(), "format": "mp3" })).await;
    let url = |rewind: u64| format!("{}&rewind={rewind}", h.url(grant["url"].as_str().unwrap()));
    let encoders = || async { support::counter(&h.metrics().await, "mesastream_mp3_encoders", &[]) };
    let mut listeners = Vec::new();
    for _ in 0..4 {
        listeners.push(open_mp3(&h, &url(2)).await);
    }
    assert_eq!(encoders().await, 1, "four listeners two seconds back share one encoder");
    listeners.push(open_mp3(&h, &url(3)).await);
    listeners.push(open_mp3(&h, &url(0)).await);
    assert_eq!(encoders().await, 3, "one more for three seconds back, one for live");
    // What a shared rewound feed carries is the player's audio.
    let pcm = ffmpeg_pcm(&url(2), &[], 3.0).await;
    assert_tone(&pcm, 450.0, 2000, "rewound mp3");
    drop(listeners);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_listen_token_and_one_address_bring_a_bounded_number_of_listeners() {
    let h = Harness::start_with(FakeVoiceConfig::default(), |c| {
        c.listen.secret = Some(SECRET.into());
        c.listen.max_listeners_per_token = 2;
        c.listen.max_listeners_per_address = 3;
    })
    .await;
    let playing = started(&h, "tone-450-20s.opus").await;
    let mut urls = Vec::new();
    for format in ["ogg", "mp3"] {
        let grant = token(&h, json!({ "player_id": playing.guild.to_string(), "format": format })).await;
        urls.push(h.url(grant["url"].as_str().unwrap()));
    }
    let (first, second) = (urls[0].clone(), urls[1].clone());
    let held = [open_stream(&h, &first).await, open_stream(&h, &first).await];
    let refused = h.http.get(&first).send().await.expect("answered");
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.expect("the contract's error body");
    assert_eq!(body["code"], "limit_exceeded", "{body}");
    assert!(body["message"].as_str().unwrap_or_default().contains("MAX_LISTENERS_PER_TOKEN"), "{body}");
    // Another token from the same address: one more, then the address is full.
    let third = open_stream(&h, &second).await;
    let refused = h.http.get(&second).send().await.expect("answered");
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.expect("the contract's error body");
    assert!(body["message"].as_str().unwrap_or_default().contains("MAX_LISTENERS_PER_ADDRESS"), "{body}");
    // A listener that leaves gives its places back.
    drop(held);
    drop(third);
    let deadline = tokio::time::Instant::now() + LIMIT;
    while h.http.get(&first).send().await.map(|r| r.status().as_u16()).ok() != Some(200) {
        assert!(tokio::time::Instant::now() < deadline, "the places never came back");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn open_stream(h: &Harness, url: &str) -> reqwest::Response {
    let stream = h.http.get(url).send().await.expect("listen");
    assert_eq!(stream.status(), 200, "{url}");
    stream
}
