//! Discord voice gateway close codes: what they mean and whether a resume can help.

/// Human-readable meaning of a voice close code.
pub fn describe(code: u16) -> &'static str {
    match code {
        4001 => "unknown opcode",
        4002 => "failed to decode payload",
        4003 => "not authenticated",
        4004 => "authentication failed",
        4005 => "already authenticated",
        4006 => "session no longer valid (stale voice token)",
        4009 => "session timeout",
        4011 => "server not found",
        4012 => "unknown protocol",
        4014 => "disconnected (kicked, moved or channel deleted)",
        4015 => "voice server crashed",
        4016 => "unknown encryption mode",
        4017 => "E2EE/DAVE protocol required",
        4020 => "bad request",
        4021 => "rate limited",
        4022 => "call terminated",
        1000 => "normal closure",
        1001 => "going away",
        1006 => "connection lost",
        _ => "unexpected close",
    }
}

/// Whether the session can be resumed (opcode 7) after this close. Codes that end the session
/// for good need new credentials from the bot.
pub fn can_resume(code: Option<u16>) -> bool {
    match code {
        None => true,
        Some(c) => !matches!(c, 4001..=4006 | 4011 | 4012 | 4014 | 4016 | 4017 | 4020..=4022),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_codes_are_not_resumed() {
        for code in [4004, 4006, 4014, 4017, 4021, 4022] {
            assert!(!can_resume(Some(code)), "{code}");
        }
        for code in [4015, 4009, 1006, 1001] {
            assert!(can_resume(Some(code)), "{code}");
        }
        assert!(can_resume(None));
        assert!(describe(4006).contains("session no longer valid"));
        assert!(describe(4006).contains("stale voice token"));
    }
}
