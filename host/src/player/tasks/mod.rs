//! What runs for players beside their operations: saving positions, writing each player's
//! state to the store, and applying what the clock and the voice transport report.

pub mod positions;
pub mod store_writer;
pub mod watch_player;
