//! The per-connection packet path the clock drives: DAVE frame encryption, the RTP header on
//! the scheduler's timestamp grid, transport encryption, and a non-blocking UDP send from the
//! same socket that did IP discovery.

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use davey::{Codec, DaveSession, MediaType};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::SendGate;
use super::crypto::{TransportCipher, rtp_header};

/// The Opus frame that means "nothing to play"; DAVE leaves it unencrypted by design.
pub const OPUS_SILENCE: [u8; 3] = [0xf8, 0xff, 0xfe];

/// What happened to a frame handed to [`PacketSender::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    Sent,
    /// The E2EE state is being updated right now; try again later in this tick.
    Busy,
    /// No key to encrypt with yet (DAVE group not formed), or the node's send gate is shut;
    /// the frame was not consumed.
    NotReady,
    /// The connection is gone or the socket refused the packet.
    Failed,
}

struct SendState {
    sequence: u16,
    nonce: u32,
    packet: Vec<u8>,
    e2ee: Vec<u8>,
}

/// Requests the gateway task acts on.
#[derive(Debug)]
pub(crate) enum GatewayCommand {
    Speaking(bool),
    Close,
}

pub struct PacketSender {
    socket: UdpSocket,
    ssrc: u32,
    timestamp_base: u32,
    cipher: TransportCipher,
    dave: Option<Arc<Mutex<DaveSession>>>,
    gate: Option<Arc<SendGate>>,
    state: Mutex<SendState>,
    alive: AtomicBool,
    speaking: AtomicBool,
    /// The last heartbeat's round trip on the voice gateway, in µs (`u64::MAX`: none yet).
    heartbeat_rtt_us: AtomicU64,
    commands: mpsc::UnboundedSender<GatewayCommand>,
}

impl PacketSender {
    pub(crate) fn new(
        socket: UdpSocket,
        ssrc: u32,
        cipher: TransportCipher,
        dave: Option<Arc<Mutex<DaveSession>>>,
        commands: mpsc::UnboundedSender<GatewayCommand>,
        gate: Option<Arc<SendGate>>,
    ) -> Self {
        Self {
            socket,
            ssrc,
            timestamp_base: rand::random(),
            cipher,
            dave,
            gate,
            state: Mutex::new(SendState {
                sequence: rand::random(),
                nonce: 0,
                packet: Vec::with_capacity(1500),
                e2ee: Vec::with_capacity(1500),
            }),
            alive: AtomicBool::new(true),
            speaking: AtomicBool::new(false),
            heartbeat_rtt_us: AtomicU64::new(u64::MAX),
            commands,
        }
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// The voice gateway's last heartbeat round trip, once one was acknowledged.
    pub fn heartbeat_rtt(&self) -> Option<Duration> {
        let us = self.heartbeat_rtt_us.load(Ordering::Relaxed);
        (us != u64::MAX).then(|| Duration::from_micros(us))
    }

    pub(crate) fn set_heartbeat_rtt(&self, rtt: Duration) {
        self.heartbeat_rtt_us.store(rtt.as_micros().min(u128::from(u64::MAX - 1)) as u64, Ordering::Relaxed);
    }

    pub(crate) fn mark_dead(&self) {
        self.alive.store(false, Ordering::Release);
    }

    /// Whether audio can go out now. `None` when the E2EE state is locked by a gateway step.
    pub fn ready(&self) -> Option<bool> {
        if !self.is_alive() {
            return Some(false);
        }
        match &self.dave {
            None => Some(true),
            Some(dave) => dave.try_lock().map(|s| s.can_encrypt()),
        }
    }

    /// Tells the gateway whether we are speaking (opcode 5), once per change.
    pub fn set_speaking(&self, speaking: bool) {
        if self.speaking.swap(speaking, Ordering::AcqRel) != speaking {
            let _ = self.commands.send(GatewayCommand::Speaking(speaking));
        }
    }

    /// Encrypts and sends one Opus frame stamped for scheduler tick `tick`. It never waits: an
    /// E2EE state locked by a gateway step returns [`SendOutcome::Busy`].
    pub fn send(&self, tick: u64, opus: &[u8]) -> SendOutcome {
        if !self.is_alive() {
            return SendOutcome::Failed;
        }
        if self.gate.as_ref().is_some_and(|gate| !gate.is_open()) {
            return SendOutcome::NotReady;
        }
        let mut state = self.state.lock();
        let SendState { sequence, nonce, packet, e2ee } = &mut *state;
        let payload: &[u8] = match &self.dave {
            None => opus,
            Some(dave) => {
                let Some(mut session) = dave.try_lock() else { return SendOutcome::Busy };
                if !session.can_encrypt() {
                    if opus != OPUS_SILENCE {
                        return SendOutcome::NotReady;
                    }
                    e2ee.clear();
                    e2ee.extend_from_slice(opus);
                } else if session.encrypt_into(MediaType::AUDIO, Codec::OPUS, opus, e2ee).is_err() {
                    return SendOutcome::NotReady;
                }
                e2ee
            }
        };
        let timestamp = self.timestamp_base.wrapping_add((tick as u32).wrapping_mul(960));
        let header = rtp_header(*sequence, timestamp, self.ssrc);
        packet.clear();
        if !self.cipher.seal(&header, payload, *nonce, packet) {
            return SendOutcome::Failed;
        }
        *nonce = nonce.wrapping_add(1);
        *sequence = sequence.wrapping_add(1);
        match self.socket.send(packet) {
            Ok(_) => SendOutcome::Sent,
            Err(_) => SendOutcome::Failed,
        }
    }

    pub(crate) fn close(&self) {
        self.mark_dead();
        let _ = self.commands.send(GatewayCommand::Close);
    }
}
