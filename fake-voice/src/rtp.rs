//! Receiving side of Discord's voice transport: RTP header parsing and the two `rtpsize` AEAD
//! modes. Written independently of the host's sender so that the two check each other.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::XChaCha20Poly1305;

pub const MODE_AES256_GCM: &str = "aead_aes256_gcm_rtpsize";
pub const MODE_XCHACHA20: &str = "aead_xchacha20_poly1305_rtpsize";

/// The fields of an RTP header the analysis needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

/// Reads the SSRC of an RTP packet, if the packet is long enough to be one.
pub fn peek_ssrc(packet: &[u8]) -> Option<u32> {
    (packet.len() >= 12 && packet[0] >> 6 == 2)
        .then(|| u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]))
}

/// Length of the part the `rtpsize` modes leave in the clear: the fixed header, CSRCs and, when
/// present, the 4-byte extension preamble (the extension body is encrypted).
fn clear_prefix_len(packet: &[u8]) -> Option<usize> {
    let csrc_count = (packet[0] & 0x0f) as usize;
    let mut len = 12 + 4 * csrc_count;
    if packet[0] & 0x10 != 0 {
        len += 4;
    }
    (packet.len() >= len).then_some(len)
}

/// A transport cipher for one session.
pub enum TransportCipher {
    Aes(Box<Aes256Gcm>),
    XChaCha(Box<XChaCha20Poly1305>),
}

impl TransportCipher {
    pub fn new(mode: &str, key: &[u8; 32]) -> Option<Self> {
        match mode {
            MODE_AES256_GCM => Some(Self::Aes(Box::new(Aes256Gcm::new(key.into())))),
            MODE_XCHACHA20 => Some(Self::XChaCha(Box::new(XChaCha20Poly1305::new(key.into())))),
            _ => None,
        }
    }

    /// Decrypts one packet; returns its header, the nonce counter and the payload (with any
    /// header extension body stripped).
    pub fn open(&self, packet: &[u8]) -> Option<(RtpHeader, u32, Vec<u8>)> {
        let clear = clear_prefix_len(packet)?;
        if packet.len() < clear + 16 + 4 {
            return None;
        }
        let (aad, rest) = packet.split_at(clear);
        let (sealed, nonce_bytes) = rest.split_at(rest.len() - 4);
        let counter = u32::from_be_bytes([nonce_bytes[0], nonce_bytes[1], nonce_bytes[2], nonce_bytes[3]]);
        let payload = Payload { msg: sealed, aad };
        let mut plain = match self {
            Self::Aes(cipher) => {
                let mut nonce = [0u8; 12];
                nonce[..4].copy_from_slice(nonce_bytes);
                cipher.decrypt((&nonce).into(), payload).ok()?
            }
            Self::XChaCha(cipher) => {
                let mut nonce = [0u8; 24];
                nonce[..4].copy_from_slice(nonce_bytes);
                cipher.decrypt((&nonce).into(), payload).ok()?
            }
        };
        if packet[0] & 0x10 != 0 {
            // The extension length (in 32-bit words) sits in the clear preamble.
            let words = u16::from_be_bytes([packet[clear - 2], packet[clear - 1]]) as usize;
            let skip = (words * 4).min(plain.len());
            plain.drain(..skip);
        }
        let header = RtpHeader {
            payload_type: packet[1] & 0x7f,
            sequence: u16::from_be_bytes([packet[2], packet[3]]),
            timestamp: u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]),
            ssrc: u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
        };
        Some((header, counter, plain))
    }
}

/// Builds the 74-byte IP discovery response for `ssrc`, announcing `ip:port`.
pub fn discovery_response(ssrc: u32, ip: &str, port: u16) -> [u8; 74] {
    let mut out = [0u8; 74];
    out[0..2].copy_from_slice(&2u16.to_be_bytes());
    out[2..4].copy_from_slice(&70u16.to_be_bytes());
    out[4..8].copy_from_slice(&ssrc.to_be_bytes());
    let ip = ip.as_bytes();
    let n = ip.len().min(63);
    out[8..8 + n].copy_from_slice(&ip[..n]);
    out[72..74].copy_from_slice(&port.to_be_bytes());
    out
}

/// Whether `packet` is an IP discovery request (type 1, length 70).
pub fn is_discovery_request(packet: &[u8]) -> bool {
    packet.len() == 74 && packet[0..2] == [0, 1] && packet[2..4] == [0, 70]
}
