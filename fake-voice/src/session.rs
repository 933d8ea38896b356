//! One voice session as the fake gateway sees it: the messages it sent (for buffered resume),
//! the transport key, what the listener heard, and the task that drives DAVE membership.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use davey::MediaType;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::FakeError;
use crate::analysis::{Analyzer, OPUS_SILENCE, Payload, Report};
use crate::dave::{ExternalSenderRole, Member, PROTOCOL_VERSION, Roster, split_commit_welcome};
use crate::rtp::TransportCipher;

/// Who commits membership changes: the client under test, or the simulated listener (so the
/// client has to apply a commit it did not make).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committer {
    Client,
    Listener,
}

/// Cheap numbers tests wait on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets: u64,
    pub silence_packets: u64,
    /// DAVE transitions executed (opcode 22 sent).
    pub transitions: u64,
    pub resumes: u64,
    /// Whether the client currently says it is speaking.
    pub speaking: bool,
    /// Whether the connection is attached (between identify/resume and close).
    pub connected: bool,
}

pub(crate) enum Outgoing {
    Message(Message),
    Close(u16),
}

pub(crate) enum DaveEvent {
    ClientKeyPackage(Vec<u8>),
    ClientCommitWelcome(Vec<u8>),
    ClientReady(u16),
    ClientInvalid(u16),
    AddMember(u64, oneshot::Sender<Result<(), FakeError>>),
    RemoveMember(u64, oneshot::Sender<Result<(), FakeError>>),
    PrepareEpoch(oneshot::Sender<Result<(), FakeError>>),
    BadCommit(oneshot::Sender<Result<(), FakeError>>),
}

#[derive(Default)]
struct Wire {
    seq: u16,
    log: VecDeque<(u16, Message)>,
    conn: Option<mpsc::UnboundedSender<Outgoing>>,
}

#[derive(Default)]
struct Transport {
    cipher: Option<Arc<TransportCipher>>,
    client_udp: Option<SocketAddr>,
    mode: Option<String>,
}

/// A session created by an Identify.
pub struct Session {
    pub guild_id: String,
    pub user_id: u64,
    pub channel_id: u64,
    pub session_id: String,
    pub token: String,
    pub ssrc: u32,
    pub(crate) secret_key: [u8; 32],
    pub(crate) dave_enabled: bool,
    /// Whether this session's audio is decrypted and decoded (see `verify_one_in`).
    verified: bool,
    /// Waiters are woken every this many packets (see `wake_every_packets`).
    wake_every: u64,
    wire: Mutex<Wire>,
    transport: Mutex<Transport>,
    analyzer: Mutex<Analyzer>,
    pub(crate) roster: Mutex<Option<Roster>>,
    ops: Mutex<Vec<u8>>,
    counters: watch::Sender<Counters>,
    pub(crate) dave_tx: Mutex<Option<mpsc::UnboundedSender<DaveEvent>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        guild_id: String,
        user_id: u64,
        channel_id: u64,
        session_id: String,
        token: String,
        ssrc: u32,
        dave_enabled: bool,
        keep_pcm: bool,
        verified: bool,
        wake_every: u64,
    ) -> Self {
        Self {
            guild_id,
            user_id,
            channel_id,
            session_id,
            token,
            ssrc,
            secret_key: rand::random(),
            dave_enabled,
            verified,
            wake_every,
            wire: Mutex::default(),
            transport: Mutex::default(),
            analyzer: Mutex::new(Analyzer::new(keep_pcm)),
            roster: Mutex::new(None),
            ops: Mutex::default(),
            counters: watch::channel(Counters::default()).0,
            dave_tx: Mutex::new(None),
        }
    }

    fn bump(&self, f: impl FnOnce(&mut Counters)) {
        self.counters.send_modify(f);
    }

    pub(crate) fn record_op(&self, op: u8) {
        lock(&self.ops).push(op);
        if op == 7 {
            self.bump(|c| c.resumes += 1);
        }
    }

    pub(crate) fn set_speaking(&self, speaking: bool) {
        self.bump(|c| c.speaking = speaking);
    }

    /// Attaches a connection; returns the messages to replay (those after `seq_ack`).
    pub(crate) fn attach(&self, conn: mpsc::UnboundedSender<Outgoing>, seq_ack: Option<i64>) {
        let mut wire = lock(&self.wire);
        if let Some(ack) = seq_ack {
            for (seq, message) in wire.log.iter() {
                if i64::from(*seq) > ack {
                    let _ = conn.send(Outgoing::Message(message.clone()));
                }
            }
        }
        wire.conn = Some(conn);
        drop(wire);
        self.bump(|c| c.connected = true);
    }

    pub(crate) fn detach(&self, conn: &mpsc::UnboundedSender<Outgoing>) {
        let mut wire = lock(&self.wire);
        if wire.conn.as_ref().is_some_and(|c| c.same_channel(conn)) {
            wire.conn = None;
            drop(wire);
            self.bump(|c| c.connected = false);
        }
    }

    fn push(&self, build: impl FnOnce(u16) -> Message) {
        let mut wire = lock(&self.wire);
        wire.seq = wire.seq.wrapping_add(1);
        let message = build(wire.seq);
        let seq = wire.seq;
        wire.log.push_back((seq, message.clone()));
        if wire.log.len() > 1024 {
            wire.log.pop_front();
        }
        if let Some(conn) = &wire.conn {
            let _ = conn.send(Outgoing::Message(message));
        }
    }

    /// Sends a JSON opcode carrying a sequence number.
    pub(crate) fn send_json(&self, op: u8, d: Value) {
        self.push(|seq| Message::text(json!({"op": op, "d": d, "seq": seq}).to_string()));
    }

    /// Sends a binary DAVE opcode: `[seq u16][op][payload]`.
    pub(crate) fn send_binary(&self, op: u8, payload: &[u8]) {
        self.push(|seq| {
            let mut frame = Vec::with_capacity(payload.len() + 3);
            frame.extend_from_slice(&seq.to_be_bytes());
            frame.push(op);
            frame.extend_from_slice(payload);
            Message::binary(frame)
        });
    }

    pub(crate) fn set_transport(&self, mode: &str, client_udp: Option<SocketAddr>) -> bool {
        let Some(cipher) = TransportCipher::new(mode, &self.secret_key) else { return false };
        let mut t = lock(&self.transport);
        t.cipher = Some(Arc::new(cipher));
        t.mode = Some(mode.to_string());
        if client_udp.is_some() {
            t.client_udp = client_udp;
        }
        true
    }

    pub(crate) fn set_client_udp(&self, addr: SocketAddr) {
        lock(&self.transport).client_udp = Some(addr);
    }

    /// Handles one RTP packet from this session's SSRC.
    pub(crate) fn on_rtp(&self, arrival: Instant, packet: &[u8]) {
        let cipher = lock(&self.transport).cipher.clone();
        let Some(cipher) = cipher else { return };
        let Some((header, _counter, payload)) = cipher.open(packet) else {
            lock(&self.analyzer).transport_failure();
            return;
        };
        // Unverified (load mode): timed and counted; its audio is neither decrypted nor decoded.
        let payload =
            if self.verified || payload == OPUS_SILENCE { self.open_e2ee(payload) } else { Payload::Unverified };
        let silence = matches!(&payload, Payload::Opus(p) if p.as_slice() == OPUS_SILENCE);
        let packets = {
            let mut analyzer = lock(&self.analyzer);
            analyzer.on_packet(arrival, header.sequence, header.timestamp, payload);
            analyzer.packets()
        };
        self.counters.send_if_modified(|c| {
            c.packets = packets;
            if silence {
                c.silence_packets += 1;
            }
            silence || packets.is_multiple_of(self.wake_every)
        });
    }

    fn open_e2ee(&self, payload: Vec<u8>) -> Payload {
        if !self.dave_enabled || payload == OPUS_SILENCE {
            return Payload::Opus(payload);
        }
        if !payload.ends_with(&[0xfa, 0xfa]) {
            return Payload::Plaintext;
        }
        let mut roster = lock(&self.roster);
        let Some(listener) = roster.as_mut().and_then(|r| r.listener().ok()) else {
            return Payload::Undecryptable;
        };
        match listener.session.decrypt(self.user_id, MediaType::AUDIO, &payload) {
            Ok(opus) => Payload::Opus(opus),
            Err(_) => Payload::Undecryptable,
        }
    }

    // ---- what tests use ----

    /// What the listener measured so far.
    pub fn report(&self) -> Report {
        lock(&self.analyzer).report()
    }

    /// Decoded audio so far (interleaved stereo, 48 kHz).
    pub fn pcm(&self) -> Vec<f32> {
        lock(&self.analyzer).pcm().to_vec()
    }

    /// The Opus payloads heard so far, after decryption, in arrival order.
    pub fn payloads(&self) -> Vec<Vec<u8>> {
        lock(&self.analyzer).payloads().to_vec()
    }

    pub fn counters(&self) -> Counters {
        *self.counters.borrow()
    }

    /// Opcodes received from the client, in order.
    pub fn received_ops(&self) -> Vec<u8> {
        lock(&self.ops).clone()
    }

    /// The transport mode the client selected.
    pub fn mode(&self) -> Option<String> {
        lock(&self.transport).mode.clone()
    }

    /// Waits until `done` holds for the counters, or `limit` passes.
    pub async fn wait(&self, limit: Duration, done: impl Fn(&Counters) -> bool) -> Result<Counters, FakeError> {
        let mut rx = self.counters.subscribe();
        let result = tokio::time::timeout(limit, rx.wait_for(|c| done(c))).await;
        match result {
            Ok(Ok(c)) => Ok(*c),
            _ => Err(FakeError::Timeout(format!("waiting on counters, last {:?}", self.counters()))),
        }
    }

    /// Closes the client's WebSocket with `code`.
    pub fn close(&self, code: u16) {
        if let Some(conn) = &lock(&self.wire).conn {
            let _ = conn.send(Outgoing::Close(code));
        }
    }

    async fn dave_call(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), FakeError>>) -> DaveEvent,
    ) -> Result<(), FakeError> {
        let (tx, rx) = oneshot::channel();
        let sender = lock(&self.dave_tx).clone().ok_or_else(|| FakeError::Dave("DAVE is off".into()))?;
        sender.send(make(tx)).map_err(|_| FakeError::Dave("DAVE driver gone".into()))?;
        rx.await.map_err(|_| FakeError::Dave("DAVE driver dropped the request".into()))?
    }

    /// A member joins the call; returns once the new epoch is executed.
    pub async fn add_member(&self, user_id: u64) -> Result<(), FakeError> {
        self.dave_call(|tx| DaveEvent::AddMember(user_id, tx)).await
    }

    /// A member leaves the call; returns once the new epoch is executed.
    pub async fn remove_member(&self, user_id: u64) -> Result<(), FakeError> {
        self.dave_call(|tx| DaveEvent::RemoveMember(user_id, tx)).await
    }

    /// Sends opcode 24 (epoch 1: the group is re-created); returns once the new group is in use.
    pub async fn prepare_epoch(&self) -> Result<(), FakeError> {
        self.dave_call(DaveEvent::PrepareEpoch).await
    }

    /// Announces a commit that cannot be processed; returns once the client recovered (sent
    /// opcode 31 and a new key package) and the re-created group is in use.
    pub async fn send_bad_commit(&self) -> Result<(), FakeError> {
        self.dave_call(DaveEvent::BadCommit).await
    }

    pub(crate) fn dave_event(&self, event: DaveEvent) {
        if let Some(tx) = lock(&self.dave_tx).as_ref() {
            let _ = tx.send(event);
        }
    }

    fn transition_executed(&self) {
        self.bump(|c| c.transitions += 1);
    }
}

/// Completion of a test's request to change the call.
type Done = oneshot::Sender<Result<(), FakeError>>;

/// A membership change waiting for a commit.
enum Change {
    Establish,
    Add(u64),
    Remove(u64),
}

struct Pending {
    transition_id: u16,
    client_ready: bool,
    members_ready: bool,
    done: Vec<oneshot::Sender<Result<(), FakeError>>>,
}

/// Drives DAVE for one session: establishes the group, applies membership changes, and sends
/// execute (opcode 22) only once the client and every simulated member are ready.
pub(crate) struct DaveDriver {
    session: Arc<Session>,
    external: ExternalSenderRole,
    committer: Committer,
    member_delay: Duration,
    established: bool,
    client_key_package: Option<Vec<u8>>,
    awaiting_commit: Option<(Change, Vec<Done>)>,
    pending: Option<Pending>,
    waiting_recovery: Vec<oneshot::Sender<Result<(), FakeError>>>,
    backlog: VecDeque<DaveEvent>,
    next_transition: u16,
}

impl DaveDriver {
    pub(crate) fn start(
        session: Arc<Session>,
        listener_id: u64,
        committer: Committer,
        member_delay: Duration,
    ) -> Result<(), FakeError> {
        let external = ExternalSenderRole::new(session.channel_id)?;
        let package = external.package()?;
        let listener = Member::new(listener_id, session.channel_id, &package)?;
        *lock(&session.roster) = Some(Roster { listener_id, members: BTreeMap::from([(listener_id, listener)]) });
        let (tx, rx) = mpsc::unbounded_channel();
        *lock(&session.dave_tx) = Some(tx);
        session.send_json(11, json!({"user_ids": [listener_id.to_string()]}));
        session.send_binary(25, &package);
        let driver = Self {
            session,
            external,
            committer,
            member_delay,
            established: false,
            client_key_package: None,
            awaiting_commit: None,
            pending: None,
            waiting_recovery: Vec::new(),
            backlog: VecDeque::new(),
            next_transition: 0,
        };
        tokio::spawn(driver.run(rx));
        Ok(())
    }

    fn busy(&self) -> bool {
        self.awaiting_commit.is_some() || self.pending.is_some() || !self.established
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<DaveEvent>) {
        while let Some(event) = rx.recv().await {
            let member_change = matches!(
                event,
                DaveEvent::AddMember(..)
                    | DaveEvent::RemoveMember(..)
                    | DaveEvent::PrepareEpoch(_)
                    | DaveEvent::BadCommit(_)
            );
            if member_change && self.busy() {
                self.backlog.push_back(event);
                continue;
            }
            if let Err(e) = self.handle(event).await {
                tracing::warn!(error = %e, "fake voice: DAVE step failed");
            }
            while !self.busy() {
                let Some(next) = self.backlog.pop_front() else { break };
                if let Err(e) = self.handle(next).await {
                    tracing::warn!(error = %e, "fake voice: DAVE step failed");
                }
            }
        }
    }

    fn roster(&self) -> MutexGuard<'_, Option<Roster>> {
        lock(&self.session.roster)
    }

    fn with_roster<R>(&self, f: impl FnOnce(&mut Roster) -> Result<R, FakeError>) -> Result<R, FakeError> {
        let mut guard = self.roster();
        let roster = guard.as_mut().ok_or_else(|| FakeError::Dave("no roster".into()))?;
        f(roster)
    }

    fn next_tid(&mut self) -> u16 {
        self.next_transition = self.next_transition.wrapping_add(1).max(1);
        self.next_transition
    }

    fn epoch(&self) -> Result<u64, FakeError> {
        self.with_roster(|r| Ok(r.listener()?.epoch()))
    }

    async fn handle(&mut self, event: DaveEvent) -> Result<(), FakeError> {
        match event {
            DaveEvent::ClientKeyPackage(kp) => {
                self.client_key_package = Some(kp);
                if !self.established && self.awaiting_commit.is_none() && self.pending.is_none() {
                    let done = std::mem::take(&mut self.waiting_recovery);
                    self.establish(done).await?;
                }
            }
            DaveEvent::ClientCommitWelcome(payload) => self.on_client_commit(&payload).await?,
            DaveEvent::ClientReady(tid) => {
                if let Some(p) = self.pending.as_mut().filter(|p| p.transition_id == tid) {
                    p.client_ready = true;
                }
                self.maybe_execute();
            }
            DaveEvent::ClientInvalid(_tid) => {
                // The client discards its group and sends a fresh key package; start over.
                self.pending = None;
                self.awaiting_commit = None;
                self.established = false;
                let channel = self.session.channel_id;
                self.with_roster(|r| {
                    let id = r.listener_id;
                    r.members.retain(|k, _| *k == id);
                    r.listener()?.reinit(channel)
                })?;
            }
            DaveEvent::AddMember(user_id, done) => self.add_member(user_id, done).await?,
            DaveEvent::RemoveMember(user_id, done) => self.remove_member(user_id, done).await?,
            DaveEvent::PrepareEpoch(done) => {
                self.established = false;
                self.client_key_package = None;
                self.waiting_recovery.push(done);
                let channel = self.session.channel_id;
                self.with_roster(|r| {
                    let id = r.listener_id;
                    r.members.retain(|k, _| *k == id);
                    r.listener()?.reinit(channel)
                })?;
                self.session.send_json(24, json!({"epoch": 1, "protocol_version": PROTOCOL_VERSION}));
            }
            DaveEvent::BadCommit(done) => {
                self.established = false;
                self.client_key_package = None;
                self.waiting_recovery.push(done);
                let tid = self.next_tid();
                let mut payload = tid.to_be_bytes().to_vec();
                payload.extend_from_slice(b"not an MLS commit");
                self.session.send_binary(29, &payload);
            }
        }
        Ok(())
    }

    async fn establish(&mut self, done: Vec<oneshot::Sender<Result<(), FakeError>>>) -> Result<(), FakeError> {
        match self.committer {
            Committer::Client => {
                let kp = self.with_roster(|r| r.listener()?.key_package())?;
                let proposals = self.external.propose_add(0, &[kp])?;
                self.awaiting_commit = Some((Change::Establish, done));
                self.send_proposals(&proposals);
            }
            Committer::Listener => {
                let client_kp =
                    self.client_key_package.clone().ok_or_else(|| FakeError::Dave("no key package".into()))?;
                let proposals = self.external.propose_add(0, &[client_kp])?;
                let tid = self.next_tid();
                let welcome = self.with_roster(|r| {
                    let cw = r.listener()?.commit_to(&proposals)?.ok_or_else(|| FakeError::Dave("no commit".into()))?;
                    let welcome = cw.welcome.ok_or_else(|| FakeError::Dave("no welcome".into()))?;
                    r.listener()?.apply_commit(&cw.commit, tid)?;
                    Ok(welcome)
                })?;
                let mut payload = tid.to_be_bytes().to_vec();
                payload.extend_from_slice(&welcome);
                self.session.send_binary(30, &payload);
                self.pending = Some(Pending { transition_id: tid, client_ready: false, members_ready: true, done });
            }
        }
        Ok(())
    }

    fn send_proposals(&self, proposals: &[u8]) {
        let mut payload = vec![0u8]; // append
        payload.extend_from_slice(proposals);
        self.session.send_binary(27, &payload);
    }

    async fn add_member(
        &mut self,
        user_id: u64,
        done: oneshot::Sender<Result<(), FakeError>>,
    ) -> Result<(), FakeError> {
        let package = self.external.package()?;
        let mut member = Member::new(user_id, self.session.channel_id, &package)?;
        let kp = member.key_package()?;
        let proposals = self.external.propose_add(self.epoch()?, &[kp])?;
        self.with_roster(|r| {
            r.members.insert(user_id, member);
            Ok(())
        })?;
        self.session.send_json(11, json!({"user_ids": [user_id.to_string()]}));
        self.membership_change(Change::Add(user_id), proposals, done).await
    }

    async fn remove_member(
        &mut self,
        user_id: u64,
        done: oneshot::Sender<Result<(), FakeError>>,
    ) -> Result<(), FakeError> {
        let leaf = self.with_roster(|r| {
            r.listener()?.leaf_of(user_id).ok_or_else(|| FakeError::Dave(format!("{user_id} is not a member")))
        })?;
        let proposals = self.external.propose_remove(self.epoch()?, leaf)?;
        self.session.send_json(13, json!({"user_id": user_id.to_string()}));
        self.membership_change(Change::Remove(user_id), proposals, done).await
    }

    async fn membership_change(
        &mut self,
        change: Change,
        proposals: Vec<u8>,
        done: oneshot::Sender<Result<(), FakeError>>,
    ) -> Result<(), FakeError> {
        self.send_proposals(&proposals);
        // The member joining or leaving takes no part in the commit.
        let subject = match change {
            Change::Add(id) | Change::Remove(id) => Some(id),
            Change::Establish => None,
        };
        let listener_commits = self.committer == Committer::Listener;
        // Every other member queues the proposals so it can apply whichever commit wins.
        self.with_roster(|r| {
            let listener_id = r.listener_id;
            for (id, m) in r.members.iter_mut() {
                if Some(*id) != subject && !(listener_commits && *id == listener_id) {
                    m.queue(&proposals)?;
                }
            }
            Ok(())
        })?;
        match self.committer {
            Committer::Client => {
                self.awaiting_commit = Some((change, vec![done]));
            }
            Committer::Listener => {
                // The listener's commit wins and is announced to the client, whose own commit
                // is ignored.
                let cw = self.with_roster(|r| {
                    r.listener()?.commit_to(&proposals)?.ok_or_else(|| FakeError::Dave("no commit".into()))
                })?;
                let tid = self.next_tid();
                let mut payload = tid.to_be_bytes().to_vec();
                payload.extend_from_slice(&cw.commit);
                self.session.send_binary(29, &payload);
                self.pending =
                    Some(Pending { transition_id: tid, client_ready: false, members_ready: false, done: vec![done] });
                tokio::time::sleep(self.member_delay).await;
                self.members_apply(&change, &cw.commit, cw.welcome.as_deref(), tid)?;
            }
        }
        Ok(())
    }

    /// Simulated members apply a commit (and the joiner its welcome).
    fn members_apply(
        &mut self,
        change: &Change,
        commit: &[u8],
        welcome: Option<&[u8]>,
        tid: u16,
    ) -> Result<(), FakeError> {
        self.with_roster(|r| {
            if let Change::Remove(id) = change {
                r.members.remove(id);
            }
            let listener_id = r.listener_id;
            for (id, m) in r.members.iter_mut() {
                let joining = matches!(change, Change::Add(j) if j == id)
                    || (matches!(change, Change::Establish) && *id == listener_id);
                if joining {
                    let welcome = welcome.ok_or_else(|| FakeError::Dave("commit without welcome".into()))?;
                    m.apply_welcome(welcome, tid)?;
                } else {
                    m.apply_commit(commit, tid)?;
                }
            }
            Ok(())
        })?;
        if let Some(p) = self.pending.as_mut() {
            p.members_ready = true;
        }
        self.maybe_execute();
        Ok(())
    }

    async fn on_client_commit(&mut self, payload: &[u8]) -> Result<(), FakeError> {
        let Some((change, done)) = self.awaiting_commit.take() else {
            return Ok(()); // a losing commit
        };
        let (commit, welcome) = split_commit_welcome(payload)?;
        let tid = self.next_tid();
        let mut announce = tid.to_be_bytes().to_vec();
        announce.extend_from_slice(&commit);
        self.session.send_binary(29, &announce);
        self.pending = Some(Pending { transition_id: tid, client_ready: false, members_ready: false, done });
        tokio::time::sleep(self.member_delay).await;
        self.members_apply(&change, &commit, welcome.as_deref(), tid)
    }

    fn maybe_execute(&mut self) {
        let ready = self.pending.as_ref().is_some_and(|p| p.client_ready && p.members_ready);
        if !ready {
            return;
        }
        let Some(pending) = self.pending.take() else { return };
        self.session.send_json(22, json!({"transition_id": pending.transition_id}));
        let result = self.with_roster(|r| {
            for m in r.members.values_mut() {
                m.execute(pending.transition_id)?;
            }
            Ok(())
        });
        self.established = true;
        self.session.transition_executed();
        for done in pending.done {
            let _ = done.send(result.as_ref().map(|_| ()).map_err(|e| FakeError::Dave(e.to_string())));
        }
    }
}
