//! One player's store writer: the newest state a guard handed over, written in order.

use std::sync::Arc;

use tokio::sync::watch;

use crate::cluster::Cluster;
use crate::model::{Id, PlayerSnapshot};
use crate::player::PersistView;
use crate::store::StateStore;

/// Stores each player's newest state in order; only what changed is written. In a cluster
/// (`fence`) nothing is written unless this node holds the player with fresh leases: a node
/// back from a pause must not write over what the player's new holder saves.
pub async fn write_state(
    store: StateStore,
    guild: Id,
    mut views: watch::Receiver<Option<PersistView>>,
    fence: Option<(Arc<Cluster>, Id)>,
) {
    let mut saved_ids: Option<Vec<String>> = None;
    let mut saved_position: Option<u64> = None;
    let mut saved_snapshot: Option<PlayerSnapshot> = None;
    // The revision whose queue and snapshot are both stored: a view that only moved its
    // position is neither copied nor compared again.
    let mut saved_revision: Option<u64> = None;
    while views.changed().await.is_ok() {
        if let Some((cluster, player)) = &fence
            && !cluster.may_write(*player)
        {
            continue;
        }
        let (position_ms, whole) = {
            let view = views.borrow_and_update();
            let Some(view) = view.as_ref() else { continue };
            let whole = (saved_revision != Some(view.revision))
                .then(|| (view.revision, view.queue.clone(), view.snapshot.clone()));
            (view.position_ms, whole)
        };
        // What failed to save is not marked saved, so the next change tries it again.
        let mut stored = true;
        if let Some((_, queue, _)) = &whole {
            let same = saved_ids.as_ref().is_some_and(|ids| {
                ids.len() == queue.len() && ids.iter().zip(queue).all(|(id, track)| *id == track.id)
            });
            if !same {
                if store.save_queue(guild, queue).await.is_ok() {
                    saved_ids = Some(queue.iter().map(|t| t.id.clone()).collect());
                } else {
                    stored = false;
                }
            }
        }
        let moved = saved_position.is_none_or(|p| p.abs_diff(position_ms) >= 250 || position_ms == 0);
        if moved && saved_position != Some(position_ms) && store.save_position(guild, position_ms).await.is_ok() {
            saved_position = Some(position_ms);
        }
        if let Some((revision, _, snapshot)) = whole {
            let mut comparable = snapshot.clone();
            comparable.position_ms = 0;
            if saved_snapshot.as_ref() != Some(&comparable) {
                if store.save_player_state(&snapshot).await.is_ok() {
                    saved_snapshot = Some(comparable);
                } else {
                    stored = false;
                }
            }
            if stored {
                saved_revision = Some(revision);
            }
        }
    }
}
