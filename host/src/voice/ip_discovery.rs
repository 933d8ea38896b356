//! IP discovery: asking the voice server, over the UDP socket that will carry RTP, which
//! address and port it sees us at.

use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::timeout;

use super::VoiceError;

/// An IP discovery response: the address and port the voice server saw us at.
fn parse_discovery(response: &[u8]) -> Option<(String, u16)> {
    if response.len() < 74 || response[0..2] != [0, 2] {
        return None;
    }
    let ip_bytes = &response[8..72];
    let end = ip_bytes.iter().position(|b| *b == 0).unwrap_or(ip_bytes.len());
    let ip = String::from_utf8_lossy(&ip_bytes[..end]).to_string();
    Some((ip, u16::from_be_bytes([response[72], response[73]])))
}

/// IP discovery on the socket that will carry RTP.
pub(super) async fn discover(udp: &UdpSocket, ssrc: u32, limit: Duration) -> Result<(String, u16), VoiceError> {
    let mut request = [0u8; 74];
    request[0..2].copy_from_slice(&1u16.to_be_bytes());
    request[2..4].copy_from_slice(&70u16.to_be_bytes());
    request[4..8].copy_from_slice(&ssrc.to_be_bytes());
    let mut response = [0u8; 128];
    for _ in 0..3 {
        udp.send(&request).await.map_err(VoiceError::Udp)?;
        if let Ok(Ok(n)) = timeout(limit / 3, udp.recv(&mut response)).await
            && let Some(found) = parse_discovery(&response[..n])
        {
            return Ok(found);
        }
    }
    Err(VoiceError::Timeout("IP discovery"))
}

/// The discovery answer comes from the network: well-formed ones read back exactly.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn discovery_answers_read_back(ip in "[0-9a-f:.]{1,63}", port in any::<u16>(), noise in any::<[u8; 4]>()) {
            let mut answer = vec![0u8; 74];
            answer[0..2].copy_from_slice(&[0, 2]);
            answer[4..8].copy_from_slice(&noise);
            answer[8..8 + ip.len()].copy_from_slice(ip.as_bytes());
            answer[72..74].copy_from_slice(&port.to_be_bytes());
            prop_assert_eq!(parse_discovery(&answer), Some((ip, port)));
        }
    }
}
