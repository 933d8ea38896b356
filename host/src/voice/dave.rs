//! The client side of DAVE for one voice connection. It turns gateway opcodes 21–31 into
//! calls on a `davey` session and says what to send back. The key used for outgoing frames
//! changes only when a transition executes (opcode 22), so listeners that apply the commit a
//! little later never lose frames; while the group is re-created the previous key stays in use.

use std::collections::HashSet;
use std::num::NonZeroU16;
use std::sync::Arc;

use davey::{DaveSession, ProposalsOperationType};
use parking_lot::Mutex;
use serde_json::{Value, json};

/// Something the gateway task must send after a DAVE step.
#[derive(Debug, PartialEq)]
pub enum DaveReply {
    /// A JSON opcode.
    Json(u8, Value),
    /// A binary opcode: `[op][payload]`.
    Binary(u8, Vec<u8>),
}

pub struct DaveState {
    pub session: Arc<Mutex<DaveSession>>,
    protocol_version: u16,
    user_id: u64,
    channel_id: u64,
    /// Users the gateway told us are in the call (opcodes 11 and 13), plus ourselves.
    recognized: HashSet<u64>,
}

#[derive(Debug, thiserror::Error)]
#[error("DAVE: {0}")]
pub struct DaveError(String);

fn err(e: impl std::fmt::Display) -> DaveError {
    DaveError(e.to_string())
}

fn nonzero(v: u16) -> Result<NonZeroU16, DaveError> {
    NonZeroU16::new(v).ok_or_else(|| DaveError("protocol version 0".into()))
}

impl DaveState {
    /// Starts a session for `protocol_version` and returns the first key package to send.
    pub fn start(protocol_version: u16, user_id: u64, channel_id: u64) -> Result<(Self, DaveReply), DaveError> {
        let mut session = DaveSession::new(nonzero(protocol_version)?, user_id, channel_id, None).map_err(err)?;
        let key_package = session.create_key_package().map_err(err)?;
        let state = Self {
            session: Arc::new(Mutex::new(session)),
            protocol_version,
            user_id,
            channel_id,
            recognized: HashSet::from([user_id]),
        };
        Ok((state, DaveReply::Binary(26, key_package)))
    }

    pub fn can_encrypt(&self) -> bool {
        self.session.lock().can_encrypt()
    }

    pub fn clients_connected(&mut self, d: &Value) {
        let ids = d.get("user_ids").and_then(Value::as_array).into_iter().flatten();
        self.recognized.extend(ids.filter_map(|v| v.as_str().and_then(|s| s.parse::<u64>().ok())));
    }

    pub fn client_disconnected(&mut self, d: &Value) {
        if let Some(id) = d.get("user_id").and_then(Value::as_str).and_then(|s| s.parse::<u64>().ok()) {
            self.recognized.remove(&id);
        }
    }

    /// Handles a JSON DAVE opcode (21, 22, 24).
    pub fn on_json(&mut self, op: u8, d: &Value) -> Vec<DaveReply> {
        let tid = d.get("transition_id").and_then(Value::as_u64).unwrap_or(0) as u16;
        match op {
            21 => {
                let version = d.get("protocol_version").and_then(Value::as_u64).unwrap_or(0) as u16;
                match self.session.lock().prepare_transition(tid, version) {
                    Ok(()) if tid != 0 => vec![ready(tid)],
                    Ok(()) => vec![],
                    Err(e) => {
                        tracing::warn!(error = %e, "DAVE prepare transition failed");
                        vec![]
                    }
                }
            }
            22 => {
                if let Err(e) = self.session.lock().execute_transition(tid) {
                    tracing::warn!(error = %e, "DAVE execute transition failed");
                }
                vec![]
            }
            24 => {
                let epoch = d.get("epoch").and_then(Value::as_u64).unwrap_or(0);
                let version =
                    d.get("protocol_version").and_then(Value::as_u64).unwrap_or(self.protocol_version as u64) as u16;
                if epoch == 1 {
                    // A new group: start over with a fresh key package, keeping the current keys
                    // until the new group's transition executes.
                    self.reinit(version).into_iter().collect()
                } else {
                    vec![]
                }
            }
            _ => vec![],
        }
    }

    /// Handles a binary DAVE opcode (25, 27, 29, 30); `body` excludes the sequence and opcode.
    pub fn on_binary(&mut self, op: u8, body: &[u8]) -> Vec<DaveReply> {
        match op {
            25 => {
                if let Err(e) = self.session.lock().set_external_sender(body) {
                    tracing::warn!(error = %e, "DAVE external sender rejected");
                }
                vec![]
            }
            27 => self.on_proposals(body),
            29 | 30 => {
                let Some((tid_bytes, payload)) = body.split_at_checked(2) else { return vec![] };
                let tid = u16::from_be_bytes([tid_bytes[0], tid_bytes[1]]);
                let recognized: Vec<u64> = self.recognized.iter().copied().collect();
                let mut session = self.session.lock();
                let outcome = if op == 29 {
                    session.process_commit(payload).map_err(err)
                } else {
                    session.process_welcome(payload, Some(&recognized)).map(|_| true).map_err(err)
                };
                match outcome {
                    Ok(true) => match session.prepare_transition(tid, self.protocol_version) {
                        Ok(()) if tid != 0 => vec![ready(tid)],
                        Ok(()) => vec![],
                        Err(e) => {
                            tracing::warn!(error = %e, "DAVE prepare transition failed");
                            vec![]
                        }
                    },
                    Ok(false) => vec![],
                    Err(e) => {
                        drop(session);
                        tracing::warn!(error = %e, transition_id = tid, "DAVE commit/welcome invalid, re-creating the group");
                        let mut replies = vec![DaveReply::Json(31, json!({"transition_id": tid}))];
                        replies.extend(self.reinit(self.protocol_version));
                        replies
                    }
                }
            }
            _ => vec![],
        }
    }

    fn on_proposals(&mut self, body: &[u8]) -> Vec<DaveReply> {
        let Some((&kind, proposals)) = body.split_first() else { return vec![] };
        let kind = if kind == 1 { ProposalsOperationType::REVOKE } else { ProposalsOperationType::APPEND };
        let recognized: Vec<u64> = self.recognized.iter().copied().collect();
        match self.session.lock().process_proposals(kind, proposals, Some(&recognized)) {
            Ok(Some(cw)) => {
                let mut payload = cw.commit;
                payload.extend(cw.welcome.unwrap_or_default());
                vec![DaveReply::Binary(28, payload)]
            }
            Ok(None) => vec![],
            Err(e) => {
                tracing::warn!(error = %e, "DAVE proposals rejected");
                vec![]
            }
        }
    }

    fn reinit(&mut self, version: u16) -> Option<DaveReply> {
        let mut session = self.session.lock();
        let result = nonzero(version)
            .and_then(|v| session.reinit(v, self.user_id, self.channel_id, None).map_err(err))
            .and_then(|_| session.create_key_package().map_err(err));
        match result {
            Ok(kp) => {
                self.protocol_version = version;
                Some(DaveReply::Binary(26, kp))
            }
            Err(e) => {
                tracing::warn!(error = %e, "DAVE re-initialisation failed");
                None
            }
        }
    }
}

fn ready(transition_id: u16) -> DaveReply {
    DaveReply::Json(23, json!({"transition_id": transition_id}))
}

/// DAVE's binary frames (external sender, proposals, commits, welcomes) and its JSON
/// opcodes come from the voice gateway: whatever they hold, the session answers or ignores
/// them and never panics. `PROPTEST_CASES` sets the number of cases.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn arbitrary_dave_frames_never_panic(
            frames in prop::collection::vec(
                (prop::sample::select(vec![21u8, 22, 24, 25, 26, 27, 28, 29, 30, 31, 0, 255]), prop::collection::vec(any::<u8>(), 0..300)),
                1..8,
            ),
            epoch in any::<u64>(),
            transition in any::<u16>(),
        ) {
            let (mut state, _key_package) = DaveState::start(1, 42, 7).expect("a DAVE session starts");
            for (op, body) in frames {
                let _ = state.on_binary(op, &body);
                let _ = state.on_json(op, &serde_json::json!({"epoch": epoch, "transition_id": transition, "protocol_version": body.first().copied().unwrap_or(1)}));
            }
            let _ = state.can_encrypt();
        }
    }
}
