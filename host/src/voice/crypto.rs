//! Transport encryption for the two `rtpsize` AEAD modes Discord accepts: the RTP header is
//! the additional data, and a 32-bit counter (sent after the tag) is the nonce.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::XChaCha20Poly1305;

pub const AES256_GCM: &str = "aead_aes256_gcm_rtpsize";
pub const XCHACHA20: &str = "aead_xchacha20_poly1305_rtpsize";

/// Picks the mode: the operator's preference if offered, else AES-GCM, else XChaCha20.
pub fn choose_mode<'a>(offered: &'a [String], preferred: Option<&str>) -> Option<&'a str> {
    let has = |m: &str| offered.iter().find(|o| o.as_str() == m).map(String::as_str);
    preferred.and_then(has).or_else(|| has(AES256_GCM)).or_else(|| has(XCHACHA20))
}

pub enum TransportCipher {
    Aes(Box<Aes256Gcm>),
    XChaCha(Box<XChaCha20Poly1305>),
}

impl TransportCipher {
    pub fn new(mode: &str, key: &[u8; 32]) -> Option<Self> {
        match mode {
            AES256_GCM => Some(Self::Aes(Box::new(Aes256Gcm::new(key.into())))),
            XCHACHA20 => Some(Self::XChaCha(Box::new(XChaCha20Poly1305::new(key.into())))),
            _ => None,
        }
    }

    /// Appends `header ‖ ciphertext ‖ tag ‖ counter` to `out` (which must be empty),
    /// encrypting in place: with `out`'s capacity reused, sealing allocates nothing.
    pub fn seal(&self, header: &[u8; 12], payload: &[u8], counter: u32, out: &mut Vec<u8>) -> bool {
        out.extend_from_slice(header);
        out.extend_from_slice(payload);
        let (_, body) = out.split_at_mut(header.len());
        let counter_bytes = counter.to_be_bytes();
        let tag = match self {
            Self::Aes(cipher) => {
                let mut nonce = [0u8; 12];
                nonce[..4].copy_from_slice(&counter_bytes);
                cipher.encrypt_in_place_detached((&nonce).into(), header, body)
            }
            Self::XChaCha(cipher) => {
                let mut nonce = [0u8; 24];
                nonce[..4].copy_from_slice(&counter_bytes);
                cipher.encrypt_in_place_detached((&nonce).into(), header, body)
            }
        };
        let Ok(tag) = tag else { return false };
        out.extend_from_slice(&tag);
        out.extend_from_slice(&counter_bytes);
        true
    }
}

/// The fixed RTP header Discord expects: version 2, payload type 120, no CSRC or extension.
pub fn rtp_header(sequence: u16, timestamp: u32, ssrc: u32) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0] = 0x80;
    h[1] = 0x78;
    h[2..4].copy_from_slice(&sequence.to_be_bytes());
    h[4..8].copy_from_slice(&timestamp.to_be_bytes());
    h[8..12].copy_from_slice(&ssrc.to_be_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_aes_then_xchacha_unless_told_otherwise() {
        let both = vec![XCHACHA20.to_string(), AES256_GCM.to_string()];
        assert_eq!(choose_mode(&both, None), Some(AES256_GCM));
        assert_eq!(choose_mode(&both, Some(XCHACHA20)), Some(XCHACHA20));
        assert_eq!(choose_mode(&[XCHACHA20.to_string()], Some(AES256_GCM)), Some(XCHACHA20));
        assert_eq!(choose_mode(&["xsalsa20_poly1305".to_string()], None), None);
    }

    #[test]
    fn sealed_packets_carry_header_tag_and_counter() {
        let cipher = TransportCipher::new(XCHACHA20, &[7u8; 32]).unwrap();
        let header = rtp_header(5, 960, 42);
        let mut out = Vec::new();
        assert!(cipher.seal(&header, b"opus", 9, &mut out));
        assert_eq!(&out[..12], &header);
        assert_eq!(out.len(), 12 + 4 + 16 + 4);
        assert_eq!(&out[out.len() - 4..], &9u32.to_be_bytes());
        assert_ne!(&out[12..16], b"opus");
    }
}
