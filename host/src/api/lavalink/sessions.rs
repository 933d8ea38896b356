//! Lavalink sessions: one per client WebSocket, named by a 16-character id. A session whose
//! client turned resuming on outlives its socket for `timeout` seconds, queueing what it
//! would have sent (except position updates) until the client comes back with its id.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use parking_lot::Mutex;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::LavalinkState;
use super::error::{LavalinkError, LavalinkResult};
use super::extract::JsonBody;
use super::player::{FrameSink, LavalinkPlayer, new_player};
use crate::model::Id;

/// Lavalink's default: a resumable session waits a minute for its client.
const DEFAULT_TIMEOUT_S: u64 = 60;
/// The longest a session may wait for its client, whatever it asks: an hour. Longer would
/// keep a departed client's players, and the events held for it, for as long as it liked.
pub const MAX_TIMEOUT_S: u64 = 3600;
/// Events held for an away client at most; beyond it the oldest are dropped (a client
/// that comes back reads the players' state afresh anyway).
const MAX_QUEUED: usize = 1000;
/// Lavalink's default `playerUpdateInterval`.
const UPDATE_EVERY: Duration = Duration::from_secs(5);
const ID_LEN: usize = 16;
const ID_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A frame for the client, as JSON text.
pub type Frame = String;

struct Link {
    resuming: bool,
    timeout_s: u64,
    /// The socket's outbox while a client is connected.
    socket: Option<mpsc::UnboundedSender<Frame>>,
    /// Counts sockets, so a detach timer knows whether a newer one took over.
    generation: u64,
    /// Frames kept for a resuming client while none is connected.
    queued: VecDeque<Frame>,
    /// The session is over (its players are closed).
    ended: bool,
}

pub struct Session {
    pub id: String,
    pub user_id: u64,
    link: Mutex<Link>,
    /// Its players, by guild.
    players: Mutex<HashMap<Id, Arc<LavalinkPlayer>>>,
}

impl FrameSink for Session {
    fn send(&self, frame: Frame, droppable: bool) {
        Session::send(self, frame, droppable);
    }
}

impl Session {
    /// Sends a frame to the client, or keeps it for a resuming client that is away.
    /// `droppable` frames (position updates) are not kept: fresh ones follow a resume.
    pub fn send(&self, frame: Frame, droppable: bool) {
        let mut link = self.link.lock();
        match &link.socket {
            Some(socket) => {
                let _ = socket.send(frame);
            }
            None if link.resuming && !droppable => {
                if link.queued.len() >= MAX_QUEUED {
                    link.queued.pop_front();
                    tracing::warn!(session = %self.id, "too many events held for an away client; the oldest dropped");
                }
                link.queued.push_back(frame);
            }
            None => {}
        }
    }

    pub fn players(&self) -> Vec<Arc<LavalinkPlayer>> {
        let mut all: Vec<_> = self.players.lock().values().cloned().collect();
        all.sort_by_key(|p| p.guild_id);
        all
    }

    pub fn player(&self, guild: Id) -> Option<Arc<LavalinkPlayer>> {
        self.players.lock().get(&guild).cloned()
    }

    pub fn remove_player(&self, guild: Id) -> Option<Arc<LavalinkPlayer>> {
        self.players.lock().remove(&guild)
    }

    /// The guild's player, made now when there is none.
    pub fn player_or_create(self: &Arc<Self>, guild: Id, state: &LavalinkState) -> LavalinkResult<Arc<LavalinkPlayer>> {
        let mut players = self.players.lock();
        if let Some(p) = players.get(&guild) {
            return Ok(p.clone());
        }
        let sink: std::sync::Weak<dyn FrameSink> = Arc::downgrade(self) as _;
        let player = Arc::new(new_player(state, sink, self.user_id, guild)?);
        players.insert(guild, player.clone());
        Ok(player)
    }

    /// The session ended: its players stop and let go of their voice connections.
    pub async fn close_players(&self) {
        let players: Vec<_> = self.players.lock().drain().map(|(_, p)| p).collect();
        for player in players {
            player.close().await;
        }
    }

    /// Sends every player's position while it has a track, every [`UPDATE_EVERY`], for as
    /// long as the session lives; says when a track is stuck and lets go of one nobody plays.
    fn report_positions(self: &Arc<Self>) {
        let session = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(UPDATE_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                every.tick().await;
                let Some(session) = session.upgrade() else { return };
                if session.link.lock().ended {
                    return;
                }
                for player in session.players() {
                    if let Some(frame) = player.update_frame(false).await {
                        session.send(frame, true);
                    }
                    if let Some(frame) = player.watch_progress().await {
                        session.send(frame, false);
                    }
                }
            }
        });
    }

    /// Adds a restored player.
    pub fn insert_player(&self, player: Arc<LavalinkPlayer>) {
        self.players.lock().insert(player.guild_id, player);
    }

    /// Whether the session may wait for its client after the socket closes, and how long.
    pub fn resuming(&self) -> (bool, u64) {
        let link = self.link.lock();
        (link.resuming, link.timeout_s)
    }
}

#[derive(Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Arc<Session>>>,
}

/// A socket's hold on its session.
pub struct Attached {
    pub session: Arc<Session>,
    pub resumed: bool,
    pub outbox: mpsc::UnboundedReceiver<Frame>,
    generation: u64,
}

impl Sessions {
    /// Attaches a new socket: to the session `resume` names when it is waiting for its
    /// client (its queued frames go out first), else to a new session.
    pub fn attach(&self, user_id: u64, resume: Option<&str>) -> Attached {
        let (tx, outbox) = mpsc::unbounded_channel();
        let mut by_id = self.by_id.lock();
        let waiting = resume.and_then(|id| by_id.get(id)).filter(|s| {
            let link = s.link.lock();
            link.socket.is_none() && link.resuming && s.user_id == user_id
        });
        if let Some(session) = waiting.cloned() {
            let mut link = session.link.lock();
            for frame in link.queued.drain(..) {
                let _ = tx.send(frame);
            }
            link.socket = Some(tx);
            link.generation += 1;
            let generation = link.generation;
            drop(link);
            return Attached { session, resumed: true, outbox, generation };
        }
        let id = loop {
            let id = new_id();
            if !by_id.contains_key(&id) {
                break id;
            }
        };
        let link = Link {
            resuming: false,
            timeout_s: DEFAULT_TIMEOUT_S,
            socket: Some(tx),
            generation: 0,
            queued: VecDeque::new(),
            ended: false,
        };
        let session = Arc::new(Session { id: id.clone(), user_id, link: Mutex::new(link), players: Mutex::default() });
        session.report_positions();
        by_id.insert(id, session.clone());
        Attached { session, resumed: false, outbox, generation: 0 }
    }

    /// The socket closed. A resuming session waits `timeout` seconds for its client; any
    /// other is gone now. Returns the session when it ended.
    pub fn detach(self: &Arc<Self>, attached: &Attached) -> Option<Arc<Session>> {
        let session = &attached.session;
        let mut link = session.link.lock();
        if link.generation != attached.generation {
            // A newer socket took the session over.
            return None;
        }
        link.socket = None;
        if !link.resuming {
            drop(link);
            return self.remove(&session.id, attached.generation);
        }
        let (timeout, generation) = (Duration::from_secs(link.timeout_s), link.generation);
        drop(link);
        self.expire_unless_resumed(&session.id, generation, timeout);
        None
    }

    /// Ends the session `id` after `timeout` unless a client took it over by then.
    fn expire_unless_resumed(self: &Arc<Self>, id: &str, generation: u64, timeout: Duration) {
        let (sessions, id) = (self.clone(), id.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            if let Some(ended) = sessions.remove_if_waiting(&id, generation) {
                tracing::info!(session = %ended.id, "lavalink session was not resumed in time; it ended");
                ended.close_players().await;
            }
        });
    }

    /// A session saved by an earlier run of the node, waiting for its client as a resuming
    /// session does (for its timeout); its players are restored by the caller.
    pub fn restore(self: &Arc<Self>, id: &str, user_id: u64, timeout_s: u64) -> Arc<Session> {
        let timeout_s = timeout_s.min(MAX_TIMEOUT_S);
        let link =
            Link { resuming: true, timeout_s, socket: None, generation: 0, queued: VecDeque::new(), ended: false };
        let session =
            Arc::new(Session { id: id.to_string(), user_id, link: Mutex::new(link), players: Mutex::default() });
        session.report_positions();
        self.by_id.lock().insert(id.to_string(), session.clone());
        self.expire_unless_resumed(id, 0, Duration::from_secs(timeout_s));
        session
    }

    fn remove(&self, id: &str, generation: u64) -> Option<Arc<Session>> {
        self.remove_when(id, |link| link.generation == generation)
    }

    fn remove_if_waiting(&self, id: &str, generation: u64) -> Option<Arc<Session>> {
        self.remove_when(id, |link| link.generation == generation && link.socket.is_none())
    }

    fn remove_when(&self, id: &str, end: impl Fn(&Link) -> bool) -> Option<Arc<Session>> {
        let mut by_id = self.by_id.lock();
        let session = by_id.get(id).filter(|s| end(&s.link.lock()))?.clone();
        by_id.remove(id);
        session.link.lock().ended = true;
        Some(session)
    }

    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.by_id.lock().get(id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Session>> {
        self.by_id.lock().values().cloned().collect()
    }
}

fn new_id() -> String {
    let mut rng = rand::thread_rng();
    (0..ID_LEN).map(|_| ID_CHARS[rng.gen_range(0..ID_CHARS.len())] as char).collect()
}

#[derive(Deserialize)]
pub struct SessionUpdate {
    resuming: Option<bool>,
    timeout: Option<u64>,
}

#[derive(Serialize)]
pub struct SessionInfo {
    resuming: bool,
    timeout: u64,
}

/// `PATCH /v4/sessions/{session}`: turns resuming on or off and sets its timeout (seconds).
pub async fn update(
    State(state): State<LavalinkState>,
    Path(id): Path<String>,
    JsonBody(update): JsonBody<SessionUpdate>,
) -> LavalinkResult<Json<SessionInfo>> {
    let session = state.node.sessions.get(&id).ok_or_else(|| LavalinkError::not_found("Session not found"))?;
    let mut link = session.link.lock();
    if let Some(resuming) = update.resuming {
        link.resuming = resuming;
    }
    if let Some(timeout) = update.timeout {
        link.timeout_s = timeout.min(MAX_TIMEOUT_S);
    }
    Ok(Json(SessionInfo { resuming: link.resuming, timeout: link.timeout_s }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_resuming_session_keeps_its_frames_for_the_client_that_comes_back() {
        let sessions = Arc::new(Sessions::default());
        let first = sessions.attach(7, None);
        assert_eq!(first.session.id.len(), ID_LEN);
        assert!(first.session.id.bytes().all(|b| ID_CHARS.contains(&b)));
        first.session.link.lock().resuming = true;
        assert!(sessions.detach(&first).is_none(), "it waits for its client");
        first.session.send("event".into(), false);
        first.session.send("playerUpdate".into(), true);
        assert!(!sessions.attach(8, Some(&first.session.id)).resumed, "another user cannot take it");
        let mut again = sessions.attach(7, Some(&first.session.id));
        assert!(again.resumed);
        assert_eq!(again.outbox.recv().await.as_deref(), Some("event"));
        assert!(again.outbox.try_recv().is_err(), "position updates are not kept");
    }

    #[tokio::test]
    async fn an_away_client_is_held_a_bounded_number_of_events_the_newest() {
        let sessions = Arc::new(Sessions::default());
        let first = sessions.attach(7, None);
        first.session.link.lock().resuming = true;
        assert!(sessions.detach(&first).is_none());
        for n in 0..MAX_QUEUED + 5 {
            first.session.send(format!("event {n}"), false);
        }
        let mut again = sessions.attach(7, Some(&first.session.id));
        assert_eq!(again.outbox.recv().await.as_deref(), Some("event 5"));
        let mut rest = 1;
        while again.outbox.try_recv().is_ok() {
            rest += 1;
        }
        assert_eq!(rest, MAX_QUEUED);
    }

    #[tokio::test]
    async fn a_session_without_resuming_ends_with_its_socket() {
        let sessions = Arc::new(Sessions::default());
        let attached = sessions.attach(7, None);
        let id = attached.session.id.clone();
        assert!(sessions.detach(&attached).is_some());
        assert!(sessions.get(&id).is_none());
        assert!(!sessions.attach(7, Some(&id)).resumed, "an ended session is not resumed");
    }
}
