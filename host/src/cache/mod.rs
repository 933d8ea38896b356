//! The on-disk audio cache. Entries are standard Ogg Opus files (any player can play them);
//! what is known about an entry (frame count, duration) is read from the file itself.

pub mod ogg_opus;
pub mod store;
