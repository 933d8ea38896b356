//! Every bound of a node, at its edge: players, queue length, playlist size, event-stream
//! clients, resolves in flight per guild and per node, requests per minute from one
//! address. One more than allowed gets the contract's error body (429 `limit_exceeded`, or
//! 413 for a playlist too long) and changes nothing; a freed slot is usable again.

mod support;

use fake_voice::FakeVoiceConfig;
use serde_json::{Value, json};
use support::{Harness, LIMIT, Reply, TOKEN, counter};

fn assert_limit(reply: &Reply, status: u16, code: &str, names: &str) {
    assert_eq!((reply.status, reply.body["code"].as_str()), (status, Some(code)), "{reply:?}");
    let message = reply.body["message"].as_str().unwrap_or_default();
    assert!(message.contains(names), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_queues_and_playlists_stop_at_their_limits() {
    let h = Harness::start_with(FakeVoiceConfig::default(), |c| {
        c.limits.players = 2;
        c.limits.queue_tracks = 3;
        c.limits.playlist_tracks = 2;
    })
    .await;
    let (guild, first) = h.new_call();
    assert_eq!(h.post("/players", first.clone()).await.status, 201);
    let (_, second) = h.new_call();
    assert_eq!(h.post("/players", second).await.status, 201);
    let (_, third) = h.new_call();
    assert_limit(&h.post("/players", third).await, 429, "limit_exceeded", "MAX_PLAYERS");
    assert_eq!(h.get("/players").await.body.as_array().map(Vec::len), Some(2));
    // Replacing a guild's player does not add one.
    assert_eq!(h.post("/players", first).await.status, 201);

    // One track plays; three wait; a fourth is refused and the queue stays as it was.
    let url = h.media.url("tone-523-long.mp3");
    for _ in 0..4 {
        assert_eq!(h.enqueue(guild, &url).await.status, 200);
    }
    assert_limit(&h.enqueue(guild, &url).await, 429, "limit_exceeded", "MAX_QUEUE_TRACKS");
    let queue = h.get(&format!("/players/{guild}/queue")).await;
    assert_eq!(queue.body.as_array().map(Vec::len), Some(3));

    // Three waiting tracks make too long a playlist; two are fine.
    let save = format!("/players/{guild}/playlists/trip");
    assert_limit(&h.post_bare(&save).await, 413, "payload_too_large", "MAX_PLAYLIST_TRACKS");
    assert_eq!(h.call(reqwest::Method::DELETE, &format!("/players/{guild}/queue"), None).await.status, 200);
    for _ in 0..2 {
        assert_eq!(h.enqueue(guild, &url).await.status, 200);
    }
    let saved = h.post_bare(&save).await;
    assert_eq!((saved.status, saved.body["tracks"].as_array().map(Vec::len)), (200, Some(2)), "{saved:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_clients_stop_at_their_limit() {
    let h = Harness::start_with(FakeVoiceConfig::default(), |c| c.limits.event_clients = 2).await;
    let url = format!("ws://{}/ws", h.addr);
    let first = tokio_tungstenite::connect_async(&url).await.expect("first client");
    let _second = tokio_tungstenite::connect_async(&url).await.expect("second client");
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap_or_default()).expect("json");
            assert_eq!(body["code"], "limit_exceeded", "{body}");
        }
        other => panic!("a third client was let in: {:?}", other.map(|(_, r)| r.status())),
    }
    // A client that leaves gives its place back.
    drop(first);
    let deadline = tokio::time::Instant::now() + LIMIT;
    while tokio_tungstenite::connect_async(&url).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the freed place never came back");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_event_clients_never_lock_out_the_bot() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    // WS_AUTH is off (the default): anonymous clients are let in, up to the limit.
    let h = Harness::start_with(FakeVoiceConfig::default(), |c| c.limits.event_clients = 2).await;
    let url = format!("ws://{}/ws", h.addr);
    let (mut oldest, _) = tokio_tungstenite::connect_async(&url).await.expect("first anonymous client");
    let (_newer, _) = tokio_tungstenite::connect_async(&url).await.expect("second anonymous client");
    let refused = tokio_tungstenite::connect_async(&url).await.map(|(_, r)| r.status());
    assert!(
        matches!(&refused, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 429),
        "{refused:?}"
    );

    // The bot, with its token, gets in: the oldest anonymous client is closed for it.
    let mut request = url.as_str().into_client_request().expect("request");
    request.headers_mut().insert("authorization", format!("Bearer {TOKEN}").parse().expect("header"));
    let (_bot, _) = tokio_tungstenite::connect_async(request).await.expect("the bot's client is let in");
    let closed = loop {
        match tokio::time::timeout(LIMIT, oldest.next()).await.expect("the oldest anonymous client is closed") {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(closed.map(|f| u16::from(f.code)), Some(1013), "try again later");
    // And again with the token in the query, as bm-lib's authenticated mode sends it.
    let with_query = format!("{url}?token={TOKEN}");
    let (_bot_again, _) = tokio_tungstenite::connect_async(&with_query).await.expect("query token let in");
    // Two authenticated clients fill the node: no anonymous client takes their place.
    let refused = tokio_tungstenite::connect_async(&url).await.map(|(_, r)| r.status());
    assert!(
        matches!(&refused, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 429),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolves_in_flight_stop_at_their_limits_per_guild_and_per_node() {
    let grants = "[plugins.prober]\nprocess = [\"cat\"]\n";
    let h = Harness::with_plugins(FakeVoiceConfig::default(), &["prober"], |c| {
        c.limits.resolves_per_guild = 1;
        c.limits.resolves_per_node = 2;
        support::plugins::grant(c.plugins_dir.as_deref().expect("plugins dir"), grants)
    })
    .await;
    let (a, _sa) = h.new_player().await;
    let (b, _sb) = h.new_player().await;
    let (c, _sc) = h.new_player().await;
    let fifos = tempfile::tempdir().expect("dir");
    // A resolve that waits on a fifo until the test writes to it.
    let hold = |guild: u64, name: &str| {
        let fifo = fifos.path().join(name);
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo").success());
        let body = json!({"url": format!("probe:run:cat|{}", fifo.display())});
        let request = h.http.post(h.url(&format!("/players/{guild}/queue"))).bearer_auth(support::TOKEN).json(&body);
        (fifo, tokio::spawn(async move { request.send().await.expect("held resolve").status().as_u16() }))
    };
    let cat_runs =
        || async { counter(&h.metrics().await, "mesastream_plugin_process_runs_total", &["program=\"cat\""]) };
    let wait_runs = |n: u64| async move {
        let deadline = tokio::time::Instant::now() + LIMIT;
        while cat_runs().await < n {
            assert!(tokio::time::Instant::now() < deadline, "the held resolve never started");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };

    let (fifo_a, held_a) = hold(a, "a");
    wait_runs(1).await;
    assert_limit(&h.enqueue(a, "probe:kv-get:x").await, 429, "limit_exceeded", "RESOLVES_PER_GUILD");
    let (fifo_b, held_b) = hold(b, "b");
    wait_runs(2).await;
    assert_limit(&h.enqueue(c, "probe:kv-get:x").await, 429, "limit_exceeded", "RESOLVES_PER_NODE");

    for fifo in [fifo_a, fifo_b] {
        std::fs::write(fifo, "done\n").expect("release");
    }
    assert_eq!((held_a.await.expect("a"), held_b.await.expect("b")), (404, 404), "the prober answers with its outcome");
    // The slots came back.
    let reply = h.enqueue(c, "probe:kv-get:x").await;
    assert_eq!(reply.status, 404, "{reply:?}");
    assert!(reply.body["message"].as_str().unwrap_or_default().contains("kv refused"), "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_from_one_address_stop_at_the_rate_limit() {
    let h = Harness::start_with(FakeVoiceConfig::default(), |c| c.limits.requests_per_minute = Some(5)).await;
    for _ in 0..5 {
        assert_eq!(h.get("/health").await.status, 200);
    }
    let response = h.http.get(h.url("/health")).bearer_auth(support::TOKEN).send().await.expect("sixth request");
    assert_eq!(response.status(), 429);
    let wait: u64 = response.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=60).contains(&wait), "retry-after {wait}");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["code"], "limit_exceeded");
    assert!(body["message"].as_str().unwrap_or_default().contains("RATE_LIMIT_PER_MINUTE"), "{body}");
}

/// Reads `socket` until the server closes it; what it said before closing.
async fn until_closed(socket: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut said = Vec::new();
    let read = tokio::time::timeout(LIMIT, socket.read_to_end(&mut said)).await;
    assert!(read.is_ok(), "the server kept a silent connection open: {:?}", String::from_utf8_lossy(&said));
    String::from_utf8_lossy(&said).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_send_no_request_in_time_are_closed() {
    use tokio::io::AsyncWriteExt;
    let h = Harness::start_with(FakeVoiceConfig::default(), |c| {
        c.limits.header_timeout_secs = 1;
        c.live.header_timeout_secs = 1;
    })
    .await;
    // Nothing at all; half a request head; a head that looks like a source's upload.
    let mut silent = tokio::net::TcpStream::connect(h.addr).await.expect("connect");
    let mut partial = tokio::net::TcpStream::connect(h.addr).await.expect("connect");
    partial.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow").await.expect("write");
    let mut source = tokio::net::TcpStream::connect(h.addr).await.expect("connect");
    source.write_all(b"SOURCE /live/studio HTTP/1.0\r\nAuthor").await.expect("write");
    until_closed(&mut silent).await;
    until_closed(&mut partial).await;
    assert!(until_closed(&mut source).await.starts_with("HTTP/1.1 408"), "a source's late head is told so");
    // A kept-alive connection that asks nothing more is closed the same way.
    let mut idle = tokio::net::TcpStream::connect(h.addr).await.expect("connect");
    let request = format!("GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n");
    idle.write_all(request.as_bytes()).await.expect("write");
    let answered = until_closed(&mut idle).await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    assert_eq!(h.get("/health").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_more_connections_than_its_share() {
    const SHARE: usize = 8;
    let h = Harness::start_with(FakeVoiceConfig::default(), |c| c.limits.connections_per_address = SHARE).await;
    // This test's own client may hold a connection or two already: open until refused.
    let mut held = Vec::new();
    let refusal = loop {
        assert!(held.len() <= SHARE, "{} connections were let in", held.len());
        let mut socket = tokio::net::TcpStream::connect(h.addr).await.expect("the port accepts");
        // A refused connection is answered at once and closed; a held one says nothing.
        let mut first = [0u8; 1];
        match tokio::time::timeout(std::time::Duration::from_millis(200), socket.peek(&mut first)).await {
            Ok(_) => break until_closed(&mut socket).await,
            Err(_) => held.push(socket),
        }
    };
    assert!(held.len() >= SHARE - 2, "only {} connections were let in", held.len());
    assert!(refusal.starts_with("HTTP/1.1 429"), "{refusal}");
    let body: Value = serde_json::from_str(refusal.split("\r\n\r\n").nth(1).unwrap_or_default()).expect("json body");
    assert_eq!(body["code"], "limit_exceeded", "{body}");
    assert!(body["message"].as_str().unwrap_or_default().contains("MAX_CONNECTIONS_PER_ADDRESS"), "{body}");
    // Closing them gives the places back.
    drop(held);
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let reply = reqwest::Client::new().get(h.url("/health")).bearer_auth(TOKEN).send().await;
        let reply = reply.map(|r| r.status().as_u16());
        if matches!(reply, Ok(200)) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the places never came back: {reply:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
