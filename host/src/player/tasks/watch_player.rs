//! One player's signal task: track ends and openings from the clock and the pipeline, and
//! what its voice connections report.

use std::sync::Weak;

use tokio::sync::mpsc;

use crate::audio::TrackInfo;
use crate::player::{Advance, OutputSignal, Player, PlayerKind, PlayerNews, Registry};
use crate::voice::VoiceEvent;

/// Applies what the clock and the voice transport report to one player, for its lifetime.
pub async fn watch_player(
    registry: Weak<Registry>,
    player: Weak<Player>,
    mut signals: mpsc::UnboundedReceiver<OutputSignal>,
    mut opened: mpsc::UnboundedReceiver<(u64, TrackInfo)>,
    mut voice: mpsc::UnboundedReceiver<VoiceEvent>,
) {
    loop {
        tokio::select! {
            Some(signal) = signals.recv() => {
                let Some(p) = player.upgrade() else { return };
                let OutputSignal::TrackFinished { token, result } = signal;
                let outcome = p.lock().await.track_finished(token, result);
                if outcome == Some(Advance::Drained)
                    && p.kind == PlayerKind::Mesastream
                    && let Some(r) = registry.upgrade()
                {
                    r.retire(&p).await;
                }
            }
            Some((token, info)) = opened.recv() => {
                let Some(p) = player.upgrade() else { return };
                // The opened track's metadata (its duration, learned now) is kept too.
                p.lock().await.track_opened(token, info);
            }
            Some(event) = voice.recv() => {
                let Some(p) = player.upgrade() else { return };
                match event {
                    VoiceEvent::Disconnected { code, reason } => {
                        // A player no longer registered here (let go to another node, or
                        // destroyed) has nothing to report: its guild may be playing elsewhere.
                        if p.kind == PlayerKind::Mesastream && !registry.upgrade().is_some_and(|r| r.is_registered(&p)) {
                            continue;
                        }
                        tracing::warn!(player = %p.id, %reason, "voice disconnected");
                        p.lock().await.mark_changed();
                        p.tell(PlayerNews::VoiceClosed { code, reason });
                    }
                    VoiceEvent::Resumed => tracing::info!(player = %p.id, "voice session resumed"),
                }
            }
            else => return,
        }
    }
}
