//! Several nodes as one service: three node processes, one real `redis-server` and the fake
//! voice server, all started here. A node's players are held through leases of 1.5 s.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_voice::{FakeVoiceConfig, FakeVoiceServer, Session};
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use support::media::MediaServer;
use support::process::{Process, spawn_server};
use support::redis::RedisServer;
use support::{LIMIT, Reply, call_at, events_at, new_call_on, until};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const NAMES: [&str; 3] = ["a", "b", "c"];
const LEASE_MS: u64 = 1500;

struct Nodes {
    fake: FakeVoiceServer,
    media: MediaServer,
    redis: RedisServer,
    _plugins: tempfile::TempDir,
    /// Node processes by position in [`NAMES`]; None once killed.
    nodes: Vec<Option<Process>>,
    bases: Vec<String>,
    http: reqwest::Client,
}

impl Nodes {
    /// Three nodes on one Redis, each seeing all three.
    async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// The same, with `extra` in each node's environment.
    async fn start_with(extra: &[(&str, String)]) -> Self {
        let fake = FakeVoiceServer::start(FakeVoiceConfig::default()).await.expect("fake voice server");
        let media = MediaServer::start().await;
        let redis = RedisServer::start().await;
        let plugins = support::plugins::install(&["lavalink-filters"]);
        let mut nodes = Vec::new();
        for name in NAMES {
            let env = [
                ("REDIS_URI", redis.uri()),
                ("NODE_ID", name.to_string()),
                ("NODE_LEASE_MS", LEASE_MS.to_string()),
                ("MEDIA_ALLOW_HOSTS", media.allow_hosts()),
                ("PLUGINS_DIR", plugins.path().display().to_string()),
            ];
            let env: Vec<(&str, String)> = env.into_iter().chain(extra.iter().cloned()).collect();
            nodes.push(Some(spawn_server(&env).await));
        }
        let bases = nodes.iter().flatten().map(|p| p.base.clone()).collect();
        let all = Self { fake, media, redis, _plugins: plugins, nodes, bases, http: reqwest::Client::new() };
        for node in 0..NAMES.len() {
            all.players_on_each(node, |n| n.len() == NAMES.len()).await;
        }
        all
    }

    async fn call(&self, node: usize, method: Method, path: &str, body: Option<Value>) -> Reply {
        call_at(&self.http, &format!("{}{path}", self.bases[node]), method, body).await
    }

    /// Waits until `GET /nodes` on `node` satisfies `check` (each node's record is rewritten
    /// every third of a lease), and answers the list.
    async fn players_on_each(&self, node: usize, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        until(LIMIT, "the node list", || async {
            let reply = self.call(node, Method::GET, "/nodes", None).await;
            let list = reply.body.as_array().cloned().unwrap_or_default();
            (reply.status == 200 && check(&list)).then_some(list)
        })
        .await
    }

    /// A player on b (created through a) playing the 20 s tone, once `packets` were heard:
    /// its guild, the bot's payload, the enqueue's answer and b's voice session.
    async fn playing_on_b(&self, packets: u64) -> (u64, Value, Reply, Arc<Session>) {
        let (guild, payload) = new_call_on(&self.fake);
        let created = self.call(0, Method::POST, "/players?node=b", Some(payload.clone())).await;
        assert_eq!((created.status, &created.body["voice_connected"]), (201, &json!(true)), "{created:?}");
        let url = self.media.url("tone-450-20s.opus");
        let queued = self.call(0, Method::POST, &format!("/players/{guild}/queue"), Some(json!({ "url": url }))).await;
        assert_eq!(queued.status, 200, "{queued:?}");
        let session = self.fake.session(&guild.to_string()).expect("b's voice session");
        session.wait(LIMIT, |c| c.packets >= packets).await.expect("b plays");
        (guild, payload, queued, session)
    }

    /// The guild's voice session that identified after `first` (the fake keeps the newest per
    /// session id; the old one still counts what reaches it).
    fn next_session(&self, guild: u64, first: &Session) -> Option<Arc<Session>> {
        self.fake.session(&guild.to_string()).filter(|s| s.ssrc != first.ssrc)
    }

    fn pid(&self, node: usize) -> String {
        self.nodes[node].as_ref().expect("node runs").pid()
    }

    /// A new player for a new call, created through `through` and pinned on `on`.
    async fn player(&self, through: usize, on: &str) -> u64 {
        let (guild, payload) = new_call_on(&self.fake);
        let created = self.call(through, Method::POST, &format!("/players?node={on}"), Some(payload)).await;
        assert_eq!((created.status, &created.body["voice_connected"]), (201, &json!(true)), "{created:?}");
        guild
    }
}

/// Whether event `e` is a `kind` for `guild`'s player.
fn is(e: &Value, kind: &str, guild: u64) -> bool {
    e["type"] == kind && e["data"]["guild_id"].as_str() == Some(guild.to_string().as_str())
}

fn players_of(list: &[Value], node: &str) -> u64 {
    list.iter().find(|n| n["id"] == node).and_then(|n| n["players"].as_u64()).unwrap_or(u64::MAX)
}

fn signal(pid: &str, which: &str) {
    let sent = std::process::Command::new("kill").args([which, pid]).status().expect("kill runs");
    assert!(sent.success(), "kill {which} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_sent_to_any_node_acts_on_the_player_wherever_it_plays() {
    let nodes = Nodes::start().await;
    let mut events_on_c = events_at(&nodes.bases[2]).await;
    // Created through a, played by b.
    let guild = nodes.player(0, "b").await;
    nodes.players_on_each(0, |list| players_of(list, "b") == 1 && players_of(list, "a") == 0).await;

    // Enqueued through c; heard; b's events reach c's stream.
    let url = nodes.media.url("tone-450-20s.opus");
    let queued = nodes.call(2, Method::POST, &format!("/players/{guild}/queue"), Some(json!({ "url": url }))).await;
    assert_eq!(queued.status, 200, "{queued:?}");
    let session = nodes.fake.session(&guild.to_string()).expect("b's voice session");
    session.wait(LIMIT, |c| c.packets >= 50).await.expect("the track plays");
    let started = events_on_c.wait("TrackStarted from b", |e| is(e, "TrackStarted", guild)).await;
    assert_eq!(started["data"]["track"]["id"], queued.body["current_track"]["id"], "{started}");

    // A control through a, seen through c; every node lists the player.
    let volume = nodes.call(0, Method::POST, &format!("/players/{guild}/volume"), Some(json!({"volume": 0.5}))).await;
    assert_eq!(volume.status, 200, "{volume:?}");
    let seen = nodes.call(2, Method::GET, &format!("/players/{guild}"), None).await;
    assert_eq!((seen.status, &seen.body["volume"]), (200, &json!(0.5)), "{seen:?}");
    for (node, name) in NAMES.iter().enumerate() {
        let listed = nodes.call(node, Method::GET, "/players", None).await;
        let ids: Vec<&Value> = listed.body.as_array().into_iter().flatten().map(|p| &p["player_id"]).collect();
        assert_eq!(ids, [&json!(guild.to_string())], "node {name}: {listed:?}");
    }

    // Moved to c through a (relayed to b, which hands it over); controls follow it.
    let refused = nodes.call(0, Method::POST, &format!("/players/{guild}/migrate"), Some(json!({"node": "z"}))).await;
    assert_eq!(refused.status, 400, "{refused:?}");
    let moved = nodes.call(0, Method::POST, &format!("/players/{guild}/migrate"), Some(json!({"node": "c"}))).await;
    assert_eq!((moved.status, &moved.body["node"]), (200, &json!("c")), "{moved:?}");
    events_on_c.wait("PlayerAdopted by c", |e| is(e, "PlayerAdopted", guild) && e["data"]["from"] == "b").await;
    nodes.players_on_each(0, |list| players_of(list, "c") == 1 && players_of(list, "b") == 0).await;
    let volume = nodes.call(1, Method::POST, &format!("/players/{guild}/volume"), Some(json!({"volume": 0.25}))).await;
    assert_eq!(volume.status, 200, "{volume:?}");
    let seen = nodes.call(0, Method::GET, &format!("/players/{guild}"), None).await;
    assert_eq!(seen.body["volume"], json!(0.25), "{seen:?}");

    // Destroyed through b: gone from c and from the cluster.
    let gone = nodes.call(1, Method::DELETE, &format!("/players/{guild}"), None).await;
    assert_eq!(gone.status, 204, "{gone:?}");
    events_on_c.wait("PlayerDestroyed", |e| is(e, "PlayerDestroyed", guild)).await;
    nodes.players_on_each(2, |list| players_of(list, "c") == 0).await;
    let missing = nodes.call(0, Method::GET, &format!("/players/{guild}"), None).await;
    assert_eq!(missing.status, 404, "{missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_player_is_adopted_and_heard_from_where_it_stopped() {
    let mut nodes = Nodes::start().await;
    let guild = nodes.player(0, "b").await;
    let chain = json!([{ "name": "lowPass", "config": { "smoothing": 2.0 } }]);
    let set = nodes.call(0, Method::PUT, &format!("/players/{guild}/filters"), Some(chain.clone())).await;
    assert_eq!(set.status, 200, "{set:?}");
    for file in ["tone-450-20s.opus", "tone-523-long.mp3"] {
        let url = nodes.media.url(file);
        let queued = nodes.call(0, Method::POST, &format!("/players/{guild}/queue"), Some(json!({ "url": url }))).await;
        assert_eq!(queued.status, 200, "{queued:?}");
    }
    let first = nodes.fake.session(&guild.to_string()).expect("b's voice session");
    first.wait(LIMIT, |c| c.packets >= 150).await.expect("three seconds played");
    let mut events_on_a = events_at(&nodes.bases[0]).await;
    let before = nodes.call(0, Method::GET, &format!("/players/{guild}"), None).await.body;

    nodes.nodes[1] = None; // SIGKILL
    let killed = Instant::now();
    let adopted =
        events_on_a.wait_within(Duration::from_secs(5), "PlayerAdopted", |e| is(e, "PlayerAdopted", guild)).await;
    assert_eq!(adopted["data"]["from"], "b", "{adopted}");
    assert!(["a", "c"].contains(&adopted["data"]["node"].as_str().unwrap_or_default()), "{adopted}");

    // Heard again, on a new voice session, within 5 s of the kill.
    let left = Duration::from_secs(5).saturating_sub(killed.elapsed());
    let second = until(left, "a second voice session", || async { nodes.next_session(guild, &first) }).await;
    let left = Duration::from_secs(5).saturating_sub(killed.elapsed());
    second.wait(left, |c| c.packets - c.silence_packets >= 1).await.expect("audio within 5 s of the kill");
    eprintln!("heard again {} ms after the kill", killed.elapsed().as_millis());

    // The same track, from where it stopped (positions are saved every 500 ms), with the
    // rest of the queue, the volume and the filters.
    let resumed = events_on_a.wait("TrackStarted after the adoption", |e| is(e, "TrackStarted", guild)).await;
    assert_eq!(resumed["data"]["track"]["id"], before["current_track"]["id"], "{resumed}");
    let (at_kill, resumed_at) =
        (before["position_ms"].as_i64().unwrap_or(-1), resumed["data"]["position_ms"].as_i64().unwrap_or(-1));
    assert!((resumed_at - at_kill).abs() <= 1000, "stopped at {at_kill} ms, resumed at {resumed_at} ms");
    let now = nodes.call(2, Method::GET, &format!("/players/{guild}"), None).await.body;
    assert_eq!((&now["queue"], &now["filters"]), (&before["queue"], &chain), "{now}");
    second.wait(LIMIT, |c| c.packets - c.silence_packets >= 100).await.expect("two seconds more");
    let off = second.report().windows_off_frequency(450.0, 2.0);
    assert!(off.is_empty(), "windows off 450 Hz after the adoption: {off:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_whose_players_were_adopted_sends_nothing_when_it_wakes() {
    let nodes = Nodes::start().await;
    let (guild, _, _, first) = nodes.playing_on_b(100).await;
    let mut events_on_a = events_at(&nodes.bases[0]).await;

    signal(&nodes.pid(1), "-STOP");
    events_on_a.wait("PlayerAdopted", |e| is(e, "PlayerAdopted", guild)).await;
    let second = until(LIMIT, "a second voice session", || async { nodes.next_session(guild, &first) }).await;
    second.wait(LIMIT, |c| c.packets >= 25).await.expect("the adopter plays");
    let frozen = first.counters().packets;

    signal(&nodes.pid(1), "-CONT");
    // b learns from its renewal that it lost the player, and lets it go.
    nodes.players_on_each(0, |list| players_of(list, "b") == 0).await;
    let adopter = second.counters().packets;
    second.wait(LIMIT, |c| c.packets >= adopter + 50).await.expect("the adopter plays on");
    assert_eq!(first.counters().packets, frozen, "b sent after it woke: two senders for one guild");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_nodes_play_on_report_degraded_and_adopt_nothing_until_it_returns() {
    let mut nodes = Nodes::start().await;
    let (guild, _, _, first) = nodes.playing_on_b(50).await;

    nodes.redis.stop();
    for node in 0..NAMES.len() {
        until(LIMIT, "a degraded node", || async {
            (nodes.call(node, Method::GET, "/ready", None).await.status == 503).then_some(())
        })
        .await;
    }
    // Two leases without Redis: b plays on, and nobody took its player.
    let heard = first.counters().packets;
    first.wait(LIMIT, |c| c.packets >= heard + 150).await.expect("b plays on without Redis");

    nodes.redis.start_again().await;
    for node in 0..NAMES.len() {
        until(LIMIT, "a ready node", || async {
            (nodes.call(node, Method::GET, "/ready", None).await.status == 200).then_some(())
        })
        .await;
    }
    // The lease b renews on its first round back (its key expired meanwhile) is still b's
    // two leases later, when the others look for players to adopt: one sender throughout.
    nodes.players_on_each(0, |list| list.len() == NAMES.len() && players_of(list, "b") == 1).await;
    let heard = first.counters().packets;
    first.wait(LIMIT, |c| c.packets >= heard + 150).await.expect("b plays on with Redis back");
    assert_eq!(nodes.next_session(guild, &first).map(|s| s.ssrc), None, "the player was adopted");
    let report = first.report();
    assert_eq!(report.lost_packets, 0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_nodes_player_moves_with_no_frame_lost_or_repeated() {
    let nodes = Nodes::start().await;
    let url = nodes.media.url("tone-450-20s.opus");
    // The same track on a player that stays where it is: what a whole play sends.
    let (moving, staying) = (nodes.player(0, "b").await, nodes.player(0, "c").await);
    for guild in [moving, staying] {
        let queued = nodes.call(0, Method::POST, &format!("/players/{guild}/queue"), Some(json!({ "url": url }))).await;
        assert_eq!(queued.status, 200, "{queued:?}");
    }
    let first = nodes.fake.session(&moving.to_string()).expect("b's voice session");
    let reference = nodes.fake.session(&staying.to_string()).expect("c's voice session");
    first.wait(LIMIT, |c| c.packets >= 150).await.expect("three seconds played");

    // Drained through a: the player moves to the least loaded other node, a.
    let drained = nodes.call(0, Method::POST, "/nodes/b/drain", None).await;
    assert_eq!(drained.status, 200, "{drained:?}");
    assert_eq!(drained.body["moved"][0]["node"], "a", "{drained:?}");
    assert_eq!(drained.body["failed"], json!([]), "{drained:?}");
    let second = until(LIMIT, "the new node's voice session", || async { nodes.next_session(moving, &first) }).await;

    // Both tracks to their end: the moved one's frames, before and after the switch, are the
    // unmoved one's, give or take one.
    for session in [&second, &reference] {
        session.wait(LIMIT, |c| c.packets > c.silence_packets && c.silence_packets >= 5).await.expect("to the end");
    }
    let audio = |r: &fake_voice::Report| r.packets - r.silence_packets;
    let (before, after, whole) = (audio(&first.report()), audio(&second.report()), audio(&reference.report()));
    eprintln!("frames: {before} before the switch, {after} after; {whole} unmoved");
    assert!(before >= 150 && after >= 100, "before {before}, after {after}");
    assert!((before + after).abs_diff(whole) <= 1, "moved: {before} + {after} frames; unmoved: {whole}");
    let off = second.report().windows_off_frequency(450.0, 2.0);
    assert!(off.is_empty(), "windows off 450 Hz after the move: {off:?}");

    // b takes no new player while it drains (the two above ended with their tracks).
    let list = nodes.players_on_each(0, |list| players_of(list, "b") == 0).await;
    assert!(list.iter().any(|n| n["id"] == "b" && n["draining"] == true), "{list:?}");
    let (_, payload) = new_call_on(&nodes.fake);
    let created = nodes.call(1, Method::POST, "/players", Some(payload)).await;
    assert_eq!(created.status, 201, "{created:?}");
    let total = |list: &[Value]| list.iter().map(|n| n["players"].as_u64().unwrap_or(0)).sum::<u64>();
    let list = nodes.players_on_each(0, |list| total(list) == 1).await;
    assert_eq!(players_of(&list, "b"), 0, "a new player went to the draining node: {list:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lavalink_sessions_are_kept_per_node() {
    let password = "cluster-lavalink";
    let nodes = Nodes::start_with(&[("LAVALINK_PASSWORD", password.to_string())]).await;
    let mut request = format!("{}/v4/websocket", nodes.bases[0].replacen("http://", "ws://", 1))
        .into_client_request()
        .expect("request");
    request.headers_mut().insert("Authorization", password.parse().expect("header"));
    request.headers_mut().insert("User-Id", support::BOT_USER.to_string().parse().expect("header"));
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.expect("a Lavalink session on a");
    let ready =
        tokio::time::timeout(LIMIT, socket.next()).await.expect("ready in time").expect("ready").expect("frame");
    let ready: Value = serde_json::from_str(ready.to_text().expect("text")).expect("json");
    let id = ready["sessionId"].as_str().expect("session id").to_string();

    // a keeps it in its own record; b's (and a shared one, which every node would restore
    // and overwrite) never hold it.
    let mut redis = nodes.redis.connection().await;
    let record = |node: &str| format!("mesastream:lavalink:sessions{node}");
    until(LIMIT, "a's record holding its session", || {
        let (key, id, mut redis) = (record(":a"), id.clone(), redis.clone());
        async move {
            let saved: Option<String> = redis::cmd("GET").arg(key).query_async(&mut redis).await.ok().flatten();
            saved.filter(|s| s.contains(&id))
        }
    })
    .await;
    for other in [":b", ""] {
        let saved: Option<String> = redis::cmd("GET").arg(record(other)).query_async(&mut redis).await.expect("redis");
        assert!(!saved.unwrap_or_default().contains(&id), "{:?} holds a's session", record(other));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_no_node_can_adopt_is_given_up_and_its_queue_kept_for_the_bot() {
    let mut nodes = Nodes::start().await;
    let (guild, mut payload, queued, _) = nodes.playing_on_b(50).await;

    // Discord no longer takes the voice credentials b saved: every adoption fails.
    nodes.fake.reject_token(payload["token"].as_str().unwrap_or_default());
    nodes.nodes[1] = None; // SIGKILL
    let mut redis = nodes.redis.connection().await;
    until(Duration::from_secs(60), "the cluster giving the player up", || {
        let mut redis = redis.clone();
        async move {
            let looked_after: Option<bool> =
                redis::cmd("SISMEMBER").arg("mesastream:cluster:players").arg(guild).query_async(&mut redis).await.ok();
            (looked_after == Some(false)).then_some(())
        }
    })
    .await;
    let metrics = nodes.call(0, Method::GET, "/metrics", None).await.body.as_str().unwrap_or_default().to_string();
    assert_eq!(support::counter(&metrics, "mesastream_cluster_adoptions_total", &[]), 0, "{metrics}");

    // The saved queue is left for the bot, whose next POST /players (fresh credentials) plays it.
    let queue: String =
        redis::cmd("GET").arg(format!("mesastream:guild:{guild}:queue")).query_async(&mut redis).await.expect("queue");
    assert!(queue.contains("tone-450-20s.opus"), "{queue}");
    payload["token"] = json!(format!("fresh-token-{guild}"));
    let again = nodes.call(2, Method::POST, "/players", Some(payload)).await;
    assert_eq!(
        (again.status, &again.body["current_track"]["id"]),
        (201, &queued.body["current_track"]["id"]),
        "{again:?}"
    );
}
