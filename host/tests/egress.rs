//! Strangers' URLs cannot make the server reach what it should not: loopback, private and
//! link-local addresses in every spelling, names that resolve to them, redirects to them, and
//! names re-pointed between two lookups are refused, whether the host fetches the URL itself
//! or a resolver plugin (direct, yt-dlp through the guard proxy) does. A tripwire listener on
//! loopback counts connections: it must see none. Hosts the operator lists still play.

mod support;

use fake_voice::FakeVoiceConfig;
use support::dns::DnsServer;
use support::{Harness, LIMIT, Tripwire, assert_heard, enqueued_track_id, media::tone};

/// The answer to enqueueing `url` must be the contract's 404 naming why.
async fn refused(h: &Harness, guild: u64, url: &str, why: &str) {
    let reply = h.enqueue(guild, url).await;
    assert_eq!((reply.status, reply.body["code"].as_str()), (404, Some("source_unavailable")), "{url}: {reply:?}");
    let message = reply.body["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("source unavailable: ") && message.contains(why), "{url}: {message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hosts_own_fetch_reaches_only_public_or_listed_hosts() {
    let trip = Tripwire::start().await;
    let p = trip.port();
    let dns = DnsServer::start().await;
    dns.point("loopback.test", &["127.0.0.1"]);
    // First a public address (the check), then loopback for whoever asks again.
    dns.point("rebind.test", &["93.184.216.34", "127.0.0.1"]);
    dns.point("media.test", &["127.0.0.1"]);
    let h = Harness::start_with(FakeVoiceConfig::default(), |c| {
        c.media_dns_server = Some(dns.addr);
        c.media_allow_hosts.add("media.test", None);
    })
    .await;
    let (guild, session) = h.new_player().await;

    for (url, why) in [
        (format!("http://127.0.0.1:{p}/a.mp3"), "127.0.0.1 is a loopback address, not a public one"),
        (format!("http://127.1:{p}/a.mp3"), "127.0.0.1 is a loopback address"),
        (format!("http://2130706433:{p}/a.mp3"), "127.0.0.1 is a loopback address"),
        (format!("http://0x7f.0.0.1:{p}/a.mp3"), "127.0.0.1 is a loopback address"),
        (format!("http://[::1]:{p}/a.mp3"), "::1 is a loopback address"),
        (format!("http://[::ffff:127.0.0.1]:{p}/a.mp3"), "is a loopback address"),
        (format!("http://[64:ff9b::127.0.0.1]:{p}/a.mp3"), "is a loopback address"),
        (format!("http://[2002:7f00:1::]:{p}/a.mp3"), "is a loopback address"),
        ("http://169.254.169.254/latest/meta-data/".into(), "169.254.169.254 is a link-local address"),
        ("http://10.0.0.1/a.mp3".into(), "10.0.0.1 is a private network address"),
        ("http://100.64.0.1/a.mp3".into(), "carrier-grade NAT"),
        ("http://0.0.0.0:6379/".into(), "unspecified"),
        (format!("http://loopback.test:{p}/a.mp3"), "loopback.test resolves to a loopback address"),
    ] {
        refused(&h, guild, &url, why).await;
    }

    // A listed host redirecting to loopback: the second hop is checked like the first.
    h.media.redirect("/hop.mp3", &format!("http://127.0.0.1:{p}/a.mp3"));
    refused(&h, guild, &h.media.url("hop.mp3"), "127.0.0.1 is a loopback address").await;
    h.media.redirect("/hop-by-name.mp3", &format!("http://loopback.test:{p}/a.mp3"));
    refused(&h, guild, &h.media.url("hop-by-name.mp3"), "loopback.test resolves to a loopback address").await;

    // A name that is public when checked and loopback afterwards: there is no afterwards,
    // the connection goes to the address that was checked.
    let reply = h.enqueue(guild, &format!("http://rebind.test:{p}/a.mp3")).await;
    assert_eq!(reply.body["code"], "source_unavailable", "{reply:?}");
    assert!(dns.asked("rebind.test") >= 1, "the name was looked up");

    assert_eq!(trip.connections(), 0, "nothing reached the loopback listener");

    // What the operator listed plays, by name as by address.
    let mut events = h.events().await;
    let t = tone("tone-440.mp3");
    let port = h.media.addr.port();
    let reply = h.enqueue(guild, &format!("http://media.test:{port}/{}", t.file)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let ended = events.track_ended(guild, &enqueued_track_id(&reply.body)).await;
    assert!(ended["data"].get("error").is_none(), "{ended}");
    session.wait(LIMIT, |c| c.silence_packets >= 5).await.expect("silence tail");
    assert_heard(&session.report(), t.freq_hz, t.seconds);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolvers_locator_is_checked_again_when_it_is_fetched() {
    // The direct plugin checks a link and returns it as the locator; the host fetches it
    // later. Between the two, the listed server starts redirecting to loopback.
    let trip = Tripwire::start().await;
    let h = Harness::with_plugins(FakeVoiceConfig::default(), &["direct"], |_| {}).await;
    let mut events = h.events().await;
    let (guild, _session) = h.new_player().await;

    refused(&h, guild, &format!("http://127.0.0.1:{}/a.mp3", trip.port()), "is a loopback address").await;

    // Something long plays first, so the checked track waits in the queue.
    let long = h.enqueue(guild, &h.media.url("tone-523-long.mp3")).await;
    assert_eq!(long.status, 200, "{long:?}");
    let checked = h.enqueue(guild, &h.media.url("tone-440.mp3")).await;
    assert_eq!(checked.status, 200, "the link answered audio when the plugin checked it: {checked:?}");
    let track = enqueued_track_id(&checked.body);
    h.media.redirect("/tone-440.mp3", &format!("http://127.0.0.1:{}/a.mp3", trip.port()));
    assert_eq!(h.post_bare(&format!("/players/{guild}/skip")).await.status, 200);

    let ended = events.track_ended(guild, &track).await;
    let error = ended["data"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("127.0.0.1 is a loopback address"), "{ended}");
    assert_eq!(trip.connections(), 0, "nothing reached the loopback listener");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ytdlp_fetches_through_the_guard_proxy() {
    let trip = Tripwire::start().await;
    let p = trip.port();
    let dns = DnsServer::start().await;
    dns.point("loopback.test", &["127.0.0.1"]);
    let grants =
        "[plugins.ytdlp]\nprocess = [\"yt-dlp\"]\npatterns = [\"http://127.0.0.1:*/**\", \"http://*.test:*/**\"]\n";
    let h = Harness::with_plugins(FakeVoiceConfig::default(), &["ytdlp"], |c| {
        c.media_dns_server = Some(dns.addr);
        support::plugins::grant(c.plugins_dir.as_deref().expect("plugins dir"), grants)
    })
    .await;
    let (guild, session) = h.new_player().await;

    // yt-dlp is asked for loopback directly, by a name, and through a listed host's redirect.
    h.media.redirect("/hop.mp3", &format!("http://127.0.0.1:{p}/a.mp3"));
    for url in
        [format!("http://127.0.0.1:{p}/a.mp3"), format!("http://loopback.test:{p}/a.mp3"), h.media.url("hop.mp3")]
    {
        let reply = h.enqueue(guild, &url).await;
        assert_eq!(reply.status, 404, "{url}: {reply:?}");
        assert_eq!(reply.body["code"], "source_unavailable", "{url}: {reply:?}");
    }
    assert_eq!(trip.connections(), 0, "yt-dlp reached the loopback listener");

    // The listed media server still plays through yt-dlp.
    let mut events = h.events().await;
    let t = tone("tone-550.m4a");
    let reply = h.enqueue(guild, &h.media.url(t.file)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let ended = events.track_ended(guild, &enqueued_track_id(&reply.body)).await;
    assert!(ended["data"].get("error").is_none(), "{ended}");
    session.wait(LIMIT, |c| c.silence_packets >= 5).await.expect("silence tail");
    assert_heard(&session.report(), t.freq_hz, t.seconds);
}
