//! Beyond Lavalink: a node killed with SIGKILL comes back with its Lavalink sessions. The
//! client reconnects with its `Session-Id`, is told it resumed, and its player plays on from
//! where it was, in the same call.

mod support;

use std::time::Instant;

use fake_voice::{FakeVoiceConfig, FakeVoiceServer};
use futures_util::StreamExt;
use serde_json::{Value, json};
use support::media::MediaServer;
use support::process::spawn_server;
use support::{BOT_USER, LIMIT};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const PASSWORD: &str = "youshallnotpass";

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A session on the node at `port`, resuming `resume` when given: the socket, the ready
/// frame and the `Session-Resumed` header.
async fn session(port: u16, resume: Option<&str>) -> (Socket, Value, bool) {
    let mut request = format!("ws://127.0.0.1:{port}/v4/websocket").into_client_request().expect("request");
    let headers = request.headers_mut();
    headers.insert("Authorization", PASSWORD.parse().expect("header"));
    headers.insert("User-Id", BOT_USER.to_string().parse().expect("header"));
    if let Some(id) = resume {
        headers.insert("Session-Id", id.parse().expect("header"));
    }
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.expect("session");
    let resumed = response.headers().get("Session-Resumed").is_some_and(|v| v == "true");
    let ready =
        tokio::time::timeout(LIMIT, socket.next()).await.expect("ready in time").expect("ready").expect("frame");
    let ready = serde_json::from_str(ready.to_text().expect("text")).expect("json");
    (socket, ready, resumed)
}

async fn call(base: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut request = reqwest::Client::new().request(method, format!("{base}{path}")).header("Authorization", PASSWORD);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let body: Value = response.json().await.expect("json");
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_the_client_resumes_its_session_and_its_player_plays_on() {
    let fake = FakeVoiceServer::start(FakeVoiceConfig { tls: true, keep_pcm: false, ..Default::default() })
        .await
        .expect("fake voice server");
    let mut ca = tempfile::NamedTempFile::new().expect("ca file");
    std::io::Write::write_all(&mut ca, fake.ca_pem().expect("tls").as_bytes()).expect("write ca");
    let media = MediaServer::start().await;
    let data = tempfile::tempdir().expect("data dir");
    let env = vec![
        ("LAVALINK_PASSWORD", PASSWORD.to_string()),
        ("DATA_DIR", data.path().display().to_string()),
        ("SSL_CERT_FILE", ca.path().display().to_string()),
        ("MEDIA_ALLOW_HOSTS", media.allow_hosts()),
        ("PLUGINS_DIR", "none".to_string()),
    ];
    let guild = 600_000_000_000_000_001u64;
    fake.register_call(&guild.to_string(), guild + 1);

    let first = spawn_server(&env).await;
    let (_socket, ready, _) = session(first.port, None).await;
    let id = ready["sessionId"].as_str().expect("session id").to_string();
    let player = format!("/v4/sessions/{id}/players/{guild}");
    let voice =
        json!({"token": "t", "endpoint": fake.endpoint(), "sessionId": "s", "channelId": (guild + 1).to_string()});
    call(&first.base, reqwest::Method::PATCH, &player, Some(json!({"voice": voice}))).await;
    let identifier = media.url("tone-523-long.mp3");
    call(&first.base, reqwest::Method::PATCH, &player, Some(json!({"track": {"identifier": identifier}}))).await;
    let before = fake.session(&guild.to_string()).expect("the first run's call");
    before.wait(LIMIT, |c| c.packets >= 100).await.expect("2 s heard");
    let position =
        call(&first.base, reqwest::Method::GET, &player, None).await["state"]["position"].as_u64().expect("position");
    let killed = Instant::now();
    drop(first);

    let second = spawn_server(&env).await;
    let (mut socket, ready, resumed) = session(second.port, Some(&id)).await;
    assert!(resumed, "Session-Resumed: true after the restart");
    assert_eq!((ready["resumed"].clone(), ready["sessionId"].clone()), (json!(true), json!(id)));
    // The node says where the player is once it is back in its call.
    loop {
        let frame = tokio::time::timeout(LIMIT, socket.next()).await.expect("a frame in time").expect("open");
        let frame: Value = serde_json::from_str(frame.expect("frame").to_text().unwrap_or("{}")).unwrap_or_default();
        if frame["op"] == "playerUpdate" && frame["state"]["connected"] == true {
            break;
        }
    }
    let restored = call(&second.base, reqwest::Method::GET, &player, None).await;
    assert_eq!(restored["track"]["info"]["uri"], identifier.as_str(), "{restored}");
    let now = restored["state"]["position"].as_u64().expect("position");
    let since = killed.elapsed().as_millis() as u64;
    assert!(
        now + 1_000 >= position && now <= position + since + 1_000,
        "before the kill at {position} ms; {since} ms later at {now} ms"
    );
    let after = fake.session(&guild.to_string()).expect("the second run's call");
    assert_ne!(after.ssrc, before.ssrc, "a new voice connection");
    after.wait(LIMIT, |c| c.packets >= 50).await.expect("the track plays on");
    let off = after.report().windows_off_frequency(523.0, 2.0);
    assert!(off.is_empty(), "the same track: {off:?}");
}
