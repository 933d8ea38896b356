//! A fake Discord voice server for tests and benchmarks.
//!
//! It speaks voice gateway v8 over WebSocket (plain or TLS), answers UDP IP discovery,
//! decrypts `aead_aes256_gcm_rtpsize` / `aead_xchacha20_poly1305_rtpsize`, plays the DAVE
//! external sender with openmls, and keeps a simulated listener in the MLS group (davey) that
//! end-to-end decrypts and decodes what the client sends. The [`Report`] says what arrived:
//! frequency and level per window, losses, timestamp continuity, packet timing, and anything
//! that could not be decrypted or arrived in plaintext.

pub mod analysis;
mod arrival;
pub mod dave;
pub mod rtp;
mod server;
mod session;
mod tls;

pub use analysis::{Gap, Percentiles, Report, Window};
pub use server::{FakeVoiceConfig, FakeVoiceServer};
pub use session::{Committer, Counters, Session};

/// Errors of the fake server.
#[derive(Debug, thiserror::Error)]
pub enum FakeError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("tls: {0}")]
    Tls(String),
    #[error("dave: {0}")]
    Dave(String),
    #[error("timed out: {0}")]
    Timeout(String),
}
