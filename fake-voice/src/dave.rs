//! The voice gateway's side of DAVE: the MLS external sender that proposes members, and the
//! simulated members of the call (the listener that decrypts what the client sends, plus any
//! members a test adds).

use std::collections::BTreeMap;
use std::num::NonZeroU16;

use davey::{DaveSession, ProposalsOperationType};
use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;

use crate::FakeError;

pub const PROTOCOL_VERSION: u16 = 1;

fn version() -> NonZeroU16 {
    NonZeroU16::new(PROTOCOL_VERSION).unwrap_or(NonZeroU16::MIN)
}

fn mls<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> FakeError {
    move |e| FakeError::Dave(format!("{what}: {e}"))
}

/// The gateway's MLS identity for one call.
pub struct ExternalSenderRole {
    provider: OpenMlsRustCrypto,
    group_id: GroupId,
    signer: SignatureKeyPair,
    external_sender: ExternalSender,
}

impl ExternalSenderRole {
    pub fn new(channel_id: u64) -> Result<Self, FakeError> {
        let ciphersuite = Ciphersuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256;
        let signer = SignatureKeyPair::new(ciphersuite.signature_algorithm()).map_err(mls("signer"))?;
        let external_sender =
            ExternalSender::new(signer.public().into(), BasicCredential::new(vec![0x00, 0x01, 0x01, 0x00]).into());
        Ok(Self {
            provider: OpenMlsRustCrypto::default(),
            group_id: GroupId::from_slice(&channel_id.to_be_bytes()),
            signer,
            external_sender,
        })
    }

    /// The payload of opcode 25.
    pub fn package(&self) -> Result<Vec<u8>, FakeError> {
        self.external_sender.tls_serialize_detached().map_err(mls("serialize external sender"))
    }

    fn wrap(messages: Vec<MlsMessageOut>) -> Result<Vec<u8>, FakeError> {
        let mut joined = Vec::new();
        for message in messages {
            joined.extend(message.tls_serialize_detached().map_err(mls("serialize proposal"))?);
        }
        VLBytes::new(joined).tls_serialize_detached().map_err(mls("serialize proposals"))
    }

    /// The proposals part of opcode 27 adding the owners of `key_packages` at `epoch`.
    pub fn propose_add(&self, epoch: u64, key_packages: &[Vec<u8>]) -> Result<Vec<u8>, FakeError> {
        let mut messages = Vec::new();
        for kp in key_packages {
            let key_package = KeyPackageIn::tls_deserialize_exact_bytes(kp)
                .map_err(mls("key package"))?
                .validate(self.provider.crypto(), ProtocolVersion::Mls10)
                .map_err(mls("key package validation"))?;
            messages.push(
                ExternalProposal::new_add::<OpenMlsRustCrypto>(
                    key_package,
                    self.group_id.clone(),
                    GroupEpoch::from(epoch),
                    &self.signer,
                    SenderExtensionIndex::new(0),
                )
                .map_err(mls("add proposal"))?,
            );
        }
        Self::wrap(messages)
    }

    /// The proposals part of opcode 27 removing the member at `leaf`.
    pub fn propose_remove(&self, epoch: u64, leaf: LeafNodeIndex) -> Result<Vec<u8>, FakeError> {
        let message = ExternalProposal::new_remove::<OpenMlsRustCrypto>(
            leaf,
            self.group_id.clone(),
            GroupEpoch::from(epoch),
            &self.signer,
            SenderExtensionIndex::new(0),
        )
        .map_err(mls("remove proposal"))?;
        Self::wrap(vec![message])
    }
}

/// One simulated member of the call.
pub struct Member {
    pub user_id: u64,
    pub session: DaveSession,
}

impl Member {
    pub fn new(user_id: u64, channel_id: u64, external_sender: &[u8]) -> Result<Self, FakeError> {
        let mut session = DaveSession::new(version(), user_id, channel_id, None).map_err(mls("session"))?;
        session.set_external_sender(external_sender).map_err(mls("set external sender"))?;
        Ok(Self { user_id, session })
    }

    pub fn reinit(&mut self, channel_id: u64) -> Result<(), FakeError> {
        self.session.reinit(version(), self.user_id, channel_id, None).map_err(mls("reinit"))
    }

    pub fn key_package(&mut self) -> Result<Vec<u8>, FakeError> {
        self.session.create_key_package().map_err(mls("key package"))
    }

    pub fn commit_to(&mut self, proposals: &[u8]) -> Result<Option<davey::CommitWelcome>, FakeError> {
        self.session
            .process_proposals(ProposalsOperationType::APPEND, proposals, None)
            .map_err(mls("process proposals"))
    }

    pub fn queue(&mut self, proposals: &[u8]) -> Result<(), FakeError> {
        self.commit_to(proposals).map(|_| ())
    }

    pub fn apply_commit(&mut self, commit: &[u8], transition_id: u16) -> Result<(), FakeError> {
        self.session.process_commit(commit).map_err(mls("process commit"))?;
        self.session.prepare_transition(transition_id, PROTOCOL_VERSION).map_err(mls("prepare"))
    }

    pub fn apply_welcome(&mut self, welcome: &[u8], transition_id: u16) -> Result<(), FakeError> {
        self.session.process_welcome(welcome, None).map_err(mls("process welcome"))?;
        self.session.prepare_transition(transition_id, PROTOCOL_VERSION).map_err(mls("prepare"))
    }

    pub fn execute(&mut self, transition_id: u16) -> Result<(), FakeError> {
        self.session.execute_transition(transition_id).map(|_| ()).map_err(mls("execute"))
    }

    pub fn epoch(&self) -> u64 {
        self.session.epoch().map(|e| e.as_u64()).unwrap_or(0)
    }

    /// The leaf index of `user_id` in this member's view of the group.
    pub fn leaf_of(&self, user_id: u64) -> Option<LeafNodeIndex> {
        let group = self.session.group()?;
        group.members().find(|m| m.credential.serialized_content() == user_id.to_be_bytes()).map(|m| m.index)
    }
}

/// Splits an opcode 28 payload into the commit and the optional welcome that follows it.
pub fn split_commit_welcome(payload: &[u8]) -> Result<(Vec<u8>, Option<Vec<u8>>), FakeError> {
    let (_, rest) = MlsMessageIn::tls_deserialize_bytes(payload).map_err(mls("commit"))?;
    let commit_len = payload.len() - rest.len();
    let welcome = (!rest.is_empty()).then(|| rest.to_vec());
    Ok((payload[..commit_len].to_vec(), welcome))
}

/// The simulated members of one call, keyed by user id. The listener is always present.
pub struct Roster {
    pub listener_id: u64,
    pub members: BTreeMap<u64, Member>,
}

impl Roster {
    pub fn listener(&mut self) -> Result<&mut Member, FakeError> {
        let id = self.listener_id;
        self.members.get_mut(&id).ok_or_else(|| FakeError::Dave("listener missing".into()))
    }
}
