//! The node's one timer that saves where every playing player is.

use std::sync::Weak;

use crate::model::PlayerStatus;
use crate::player::Registry;

/// How often a playing player's position is saved (a restart resumes within this).
const POSITION_SAVE_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Saves the position of every playing player on the node at one instant each
/// [`POSITION_SAVE_EVERY`]: one timer for the node, not one per player, so the runtime wakes
/// for this twice a second instead of twice a second per player (and their store writes
/// share commits).
pub async fn save_positions(registry: Weak<Registry>) {
    let mut every = tokio::time::interval(POSITION_SAVE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        every.tick().await;
        let Some(registry) = registry.upgrade() else { return };
        for player in registry.all() {
            if !player.output.has_track() {
                continue;
            }
            // A player in the middle of a command is saved next time (a command that moves
            // it saves it itself).
            let Some(guard) = player.try_lock() else { continue };
            if guard.status() == PlayerStatus::Playing {
                guard.persist_position();
            }
        }
    }
}
