//! Voice for players: dialling Discord's voice gateway on the media runtime, and switching a
//! player to a new session only once it works.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Player, PlayerError, Registry};
use crate::model::{Id, PlayerSnapshot, VoiceBridgePayload};
use crate::voice::{VoiceConnection, VoiceEvent, VoiceParams};

impl Registry {
    /// Connects voice on the media runtime.
    pub async fn connect_voice(
        &self,
        payload: &VoiceBridgePayload,
        events: mpsc::UnboundedSender<VoiceEvent>,
    ) -> Result<VoiceConnection, PlayerError> {
        let params = VoiceParams {
            server_id: payload.guild_id.to_string(),
            user_id: payload.user_id.0,
            channel_id: payload.channel_id.0,
            session_id: payload.session_id.clone(),
            token: payload.token.clone(),
            gateway_url: payload.gateway_url.clone(),
        };
        let options = self.ctx.voice.clone();
        let connecting = self.ctx.media.spawn(VoiceConnection::connect(params, options, events));
        connecting.await.map_err(|e| PlayerError::Internal(e.to_string()))?.map_err(PlayerError::from)
    }

    /// Connects `player` to a voice session and switches to it at a frame boundary (the old
    /// one, if any, closes after); on failure nothing changes.
    pub async fn connect(&self, player: &Arc<Player>, payload: VoiceBridgePayload) -> Result<(), PlayerError> {
        let voice = self.connect_voice(&payload, player.voice_events.clone()).await?;
        player.lock().await.replace_voice(payload, voice);
        Ok(())
    }

    /// `PUT /players/{id}/connection`: connects the new session first (DAVE ready), then
    /// switches the player to it at a frame boundary; on failure nothing changes.
    pub async fn update_connection(&self, id: Id, payload: VoiceBridgePayload) -> Result<PlayerSnapshot, PlayerError> {
        let player = self.get(id)?;
        self.connect(&player, payload).await?;
        Ok(player.lock().await.commit())
    }

    /// Reconnects with the stored credentials when the voice session is gone (what `/play`
    /// does, so a stale session surfaces as the 503 the bot retries on).
    pub async fn ensure_voice(&self, player: &Arc<Player>) -> Result<(), PlayerError> {
        let payload = {
            let guard = player.lock().await;
            if guard.voice_connected() {
                return Ok(());
            }
            guard.connection().clone()
        };
        self.connect(player, payload).await
    }
}
