//! Bad URLs, broken media and malformed requests: each gets a clear answer or a track that ends
//! with its error recorded, and the player goes on with the next track.

mod support;

use fake_voice::FakeVoiceConfig;
use serde_json::json;
use support::{Harness, LIMIT, TOKEN, assert_heard, enqueued_track_id, media::tone};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplayable_urls_are_refused_at_enqueue_and_the_player_plays_on() {
    let h = Harness::start(FakeVoiceConfig::default()).await;
    let mut events = h.events().await;
    let (guild, session) = h.new_player().await;
    let cases = [
        ("ftp://example.com/a.mp3".to_string(), "invalid URL"),
        ("not a url".to_string(), "invalid URL"),
        ("http://127.0.0.1:1/refused.mp3".to_string(), "127.0.0.1 is a loopback address, not a public one"),
        (h.media.url("missing.mp3"), "HTTP 404"),
        (h.media.url("page.html"), "not audio"),
    ];
    for (url, expected) in cases {
        let reply = h.enqueue(guild, &url).await;
        assert_eq!(reply.status, 404, "{url}: {reply:?}");
        assert_eq!(reply.body["code"], "source_unavailable", "{url}: {reply:?}");
        let message = reply.body["message"].as_str().unwrap_or_default();
        assert!(message.starts_with("source unavailable: ") && message.contains(expected), "{url}: {message}");
    }
    let snapshot = h.get(&format!("/players/{guild}")).await;
    assert_eq!(snapshot.body["queue"], json!([]), "nothing was queued");
    assert_eq!(snapshot.body["status"], "idle");

    let t = tone("tone-440.mp3");
    let reply = h.enqueue(guild, &h.media.url(t.file)).await;
    events.track_ended(guild, &enqueued_track_id(&reply.body)).await;
    session.wait(LIMIT, |c| c.silence_packets >= 5).await.expect("silence tail");
    assert_heard(&session.report(), t.freq_hz, t.seconds);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_media_ends_its_track_with_an_error_and_the_next_track_plays() {
    let h = Harness::start(FakeVoiceConfig::default()).await;
    let mut events = h.events().await;
    let (guild, session) = h.new_player().await;
    // Queue everything first (a stopped player does not start on enqueue), then play.
    assert_eq!(h.post(&format!("/players/{guild}/stop"), serde_json::Value::Null).await.status, 200);
    let noise = h.enqueue(guild, &h.media.url("noise.bin")).await;
    assert_eq!(noise.status, 200, "{noise:?}");
    let noise_id = enqueued_track_id(&noise.body);
    let truncated = h.enqueue(guild, &h.media.truncated_url("tone-523-long.mp3")).await;
    let truncated_id = enqueued_track_id(&truncated.body);
    let t = tone("tone-440.mp3");
    let good = h.enqueue(guild, &h.media.url(t.file)).await;
    let good_id = enqueued_track_id(&good.body);
    assert_eq!(good.body["queue"].as_array().map(Vec::len), Some(3), "{good:?}");
    assert_eq!(h.post(&format!("/players/{guild}/play"), serde_json::Value::Null).await.status, 200);

    let ended = events.track_ended(guild, &noise_id).await;
    let error = ended["data"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("unrecognised media format") || error.contains("no audio"), "{ended}");
    let ended = events.track_ended(guild, &truncated_id).await;
    let error = ended["data"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("connection closed after"), "{ended}");
    let ended = events.track_ended(guild, &good_id).await;
    assert!(ended["data"].get("error").is_none(), "{ended}");
    events.wait("PlayerDestroyed", |v| v["type"] == "PlayerDestroyed" && v["data"]["was_stopped"] == false).await;
    session.wait(LIMIT, |c| c.silence_packets >= 5).await.expect("silence tail");
    // The truncated half played, then the good track: its tone is the last thing heard.
    let report = session.report();
    assert_eq!(report.undecryptable + report.plaintext + report.lost_packets, 0, "{report:?}");
    let last = report.windows.last().expect("audio heard");
    assert!((last.freq_hz - t.freq_hz).abs() < 2.0, "{last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_the_contract_error_body() {
    let h = Harness::start(FakeVoiceConfig::default()).await;
    let client = reqwest::Client::new();

    let no_auth = client.get(h.url("/players")).send().await.expect("request");
    assert_eq!(no_auth.status(), 401);
    assert_eq!(no_auth.headers()["www-authenticate"], "Bearer");
    let body: serde_json::Value = no_auth.json().await.expect("json");
    assert_eq!(body["code"], "unauthorized");

    let wrong = client.get(h.url("/players")).bearer_auth("nope").send().await.expect("request");
    assert_eq!(wrong.status(), 403);

    let bad_json = client
        .post(h.url("/players"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_eq!(bad_json.status(), 400);
    let body: serde_json::Value = bad_json.json().await.expect("json");
    assert_eq!(body["code"], "bad_request");
    assert!(body["message"].as_str().unwrap_or_default().starts_with("bad request: "), "{body}");

    let missing_field = h.post("/players", json!({"guild_id": "1"})).await;
    assert_eq!(missing_field.status, 400);
    assert!(missing_field.body["message"].as_str().unwrap_or_default().contains("missing field"), "{missing_field:?}");

    // A gateway that is not a WebSocket URL is the caller's mistake, not an outage.
    for gateway in ["·×óío»ËN", "http://127.0.0.1/", "wss://host/?a b"] {
        let (_, mut payload) = h.new_call();
        payload["gateway_url"] = json!(gateway);
        let refused = h.post("/players", payload).await;
        assert_eq!(
            (refused.status, refused.body["message"].clone()),
            (400, json!("bad request: gateway_url must be a ws:// or wss:// URL")),
            "{gateway}"
        );
    }

    let not_numeric = h.get("/players/abc").await;
    assert_eq!((not_numeric.status, not_numeric.body["code"].clone()), (404, json!("not_found")));
    let unknown = h.get("/players/42").await;
    assert_eq!(unknown.body["message"], "not found: player 42 not found");
    let unknown_enqueue = h.enqueue(42, &h.media.url("tone-440.mp3")).await;
    assert_eq!((unknown_enqueue.status, unknown_enqueue.body["code"].clone()), (404, json!("not_found")));
    assert_eq!(h.call(reqwest::Method::DELETE, "/players/42", None).await.status, 404);
    assert_eq!(h.get("/nowhere").await.status, 404);

    // Last: the server closes the connection after refusing a body it did not read.
    let huge = h.post("/players/1/queue", json!({"url": "x".repeat(3 * 1024 * 1024)})).await;
    assert_eq!(huge.status, 413, "{huge:?}");
}

/// Resident and peak resident memory of this process (the server runs in it), in bytes.
fn resident() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib << 10)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_rate_bombs_enqueued_through_the_api_fail_naming_the_rate_and_cost_no_memory() {
    use support::hostile::{rate_bomb_flac, rate_bomb_ogg, rate_bomb_wav};
    const ALLOWANCE: u64 = 100 << 20;
    let h = Harness::start(FakeVoiceConfig::default()).await;
    let mut events = h.events().await;
    let (guild, session) = h.new_player().await;
    let bombs = [
        ("bomb-1hz.wav", rate_bomb_wav(1)),
        ("bomb-4294967291hz.wav", rate_bomb_wav(4_294_967_291)),
        ("bomb-1hz.flac", rate_bomb_flac(1)),
        ("bomb-1048575hz.flac", rate_bomb_flac(1_048_575)),
        ("bomb-1hz.ogg", rate_bomb_ogg(1)),
        ("bomb-4294967291hz.ogg", rate_bomb_ogg(4_294_967_291)),
    ];
    // Queue everything first (a player whose queue runs out leaves), then play.
    assert_eq!(h.post(&format!("/players/{guild}/stop"), serde_json::Value::Null).await.status, 200);
    let (before, _) = resident();
    let mut queued = Vec::new();
    for (name, bytes) in bombs {
        support::media::publish_fixture(name, &bytes);
        let reply = h.enqueue(guild, &h.media.url(name)).await;
        assert_eq!(reply.status, 200, "{name}: {reply:?}");
        queued.push((name, enqueued_track_id(&reply.body)));
    }
    let t = tone("tone-440.mp3");
    let good = h.enqueue(guild, &h.media.url(t.file)).await;
    assert_eq!(h.post(&format!("/players/{guild}/play"), serde_json::Value::Null).await.status, 200);
    for (name, track) in queued {
        let ended = events.track_ended(guild, &track).await;
        let reason = ended["data"]["error"].as_str().unwrap_or_default();
        assert!(reason.contains("sample rate"), "{name}: {ended}");
        assert_eq!(h.get("/health").await.status, 200, "{name}");
        let (now, peak) = resident();
        assert!(now < before + ALLOWANCE, "{name}: resident {} MiB, was {} MiB", now >> 20, before >> 20);
        assert!(peak < before + ALLOWANCE, "{name}: peaked at {} MiB, was {} MiB", peak >> 20, before >> 20);
    }
    // The player is unharmed: the real track queued after the bombs plays.
    let ended = events.track_ended(guild, &enqueued_track_id(&good.body)).await;
    assert!(ended["data"].get("error").is_none(), "{ended}");
    session.wait(LIMIT, |c| c.silence_packets >= 5).await.expect("silence tail");
    assert_heard(&session.report(), t.freq_hz, t.seconds);
}
