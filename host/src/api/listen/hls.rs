//! HLS playlists and fMP4 segments, built on request from Opus packets already made: a
//! player's recording (live, a sliding window over its rewind buffer) or a cached track (on
//! demand, the whole track). Segments are 2 s; a live segment `n` holds ticks
//! `n·100 .. (n+1)·100` of the clock, so its number and its decode time never change while it
//! is in the window, whoever asks.

use std::fmt::Write as _;
use std::io::{Read, Seek};

use super::fmp4::{self, Mp4Error, TICK_SAMPLES};
use super::hub::LIVE_DELAY_TICKS;
use crate::audio::recording::Recording;
use crate::cache::ogg_opus::{Index, OggOpusError, OggOpusReader};

/// Ticks per segment (2 s).
pub const SEGMENT_TICKS: u64 = 100;
const SEGMENT_MS: u64 = SEGMENT_TICKS * 20;

#[derive(Debug, thiserror::Error)]
pub enum HlsError {
    #[error("segment {0} is not in the window")]
    Gone(u64),
    #[error(transparent)]
    Mp4(#[from] Mp4Error),
    #[error("cached track: {0}")]
    Cache(#[from] OggOpusError),
}

/// The live window at tick `now`: the numbers of its first and last complete segments.
fn live_window(recording: &Recording, now: u64) -> Option<(u64, u64)> {
    let complete = now.saturating_sub(LIVE_DELAY_TICKS) / SEGMENT_TICKS;
    let first = recording.oldest(now).div_ceil(SEGMENT_TICKS);
    (complete > first).then(|| (first, complete - 1))
}

fn header(out: &mut String, target_secs: u64, first: u64, init: &str) {
    out.push_str("#EXTM3U\n#EXT-X-VERSION:7\n");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target_secs}");
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{first}");
    out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
    let _ = writeln!(out, "#EXT-X-MAP:URI=\"{init}\"");
}

/// A live media playlist; `suffix` (a token query, or empty) follows every URI.
pub fn live_playlist(recording: &Recording, now: u64, suffix: &str) -> String {
    let mut out = String::with_capacity(4096);
    let Some((first, last)) = live_window(recording, now) else {
        header(&mut out, SEGMENT_MS / 1000, 0, &format!("init.mp4{suffix}"));
        return out;
    };
    header(&mut out, SEGMENT_MS / 1000, first, &format!("init.mp4{suffix}"));
    for n in first..=last {
        let _ = writeln!(out, "#EXTINF:{:.3},\n{n}.m4s{suffix}", SEGMENT_MS as f64 / 1000.0);
    }
    out
}

/// Live segment `n`, while it is in the window.
pub fn live_segment(recording: &Recording, now: u64, n: u64) -> Result<Vec<u8>, HlsError> {
    let (first, last) = live_window(recording, now).ok_or(HlsError::Gone(n))?;
    if !(first..=last).contains(&n) {
        return Err(HlsError::Gone(n));
    }
    let from = n * SEGMENT_TICKS;
    let mut packets = Vec::with_capacity(SEGMENT_TICKS as usize);
    super::stream::packets(recording, from, from + SEGMENT_TICKS, &mut packets);
    Ok(fmp4::media_segment(n as u32, from * u64::from(TICK_SAMPLES), &packets)?)
}

/// The playlist of a whole cached track; `prefix` goes before and `suffix` after every URI.
pub fn track_playlist(index: &Index, prefix: &str, suffix: &str) -> String {
    let segments = index.packets.div_ceil(SEGMENT_TICKS);
    let mut out = String::with_capacity(64 + segments as usize * 48);
    header(&mut out, SEGMENT_MS / 1000, 0, &format!("{prefix}init.mp4{suffix}"));
    out.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n");
    let mut left_ms = index.duration_ms();
    for n in 0..segments {
        let ms = left_ms.min(SEGMENT_MS);
        left_ms -= ms;
        let _ = writeln!(out, "#EXTINF:{:.3},\n{prefix}{n}.m4s{suffix}", ms as f64 / 1000.0);
    }
    out.push_str("#EXT-X-ENDLIST\n");
    out
}

/// Segment `n` of a cached track: its packets `n·100 .. (n+1)·100`.
pub fn track_segment<R: Read + Seek>(
    index: &Index,
    reader: &mut OggOpusReader<R>,
    n: u64,
) -> Result<Vec<u8>, HlsError> {
    if n >= index.packets.div_ceil(SEGMENT_TICKS) {
        return Err(HlsError::Gone(n));
    }
    reader.seek_ms(n * SEGMENT_MS)?;
    let mut packets = Vec::with_capacity(SEGMENT_TICKS as usize);
    while packets.len() < SEGMENT_TICKS as usize {
        match reader.next_packet()? {
            Some(p) => packets.push(p),
            None => break,
        }
    }
    Ok(fmp4::media_segment(n as u32 + 1, n * SEGMENT_TICKS * u64::from(TICK_SAMPLES), &packets)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_window_spans_the_rewind_buffer_and_stops_short_of_live() {
        let r = Recording::new(3000, 0, crate::audio::recording::RewindBudget::new(usize::MAX));
        let now = 10_000;
        let playlist = live_playlist(&r, now, "?token=t");
        // Oldest kept: tick 7000 (segment 70); live edge 9960: segments up to 98 complete.
        assert!(playlist.contains("#EXT-X-MEDIA-SEQUENCE:70\n"), "{playlist}");
        assert!(playlist.contains("\n70.m4s?token=t\n") && playlist.contains("\n98.m4s?token=t\n"));
        assert!(!playlist.contains("\n99.m4s"));
        assert!(playlist.contains("#EXT-X-MAP:URI=\"init.mp4?token=t\""));
        assert!(matches!(live_segment(&r, now, 99), Err(HlsError::Gone(99))));
        assert!(matches!(live_segment(&r, now, 69), Err(HlsError::Gone(69))));
        assert!(live_segment(&r, now, 98).is_ok());
    }

    #[test]
    fn a_track_playlist_covers_its_duration_and_ends() {
        let index = Index { packets: 251, samples: 251 * 960, pre_skip: 0 };
        let playlist = track_playlist(&index, "", "");
        assert_eq!(playlist.matches("#EXTINF").count(), 3);
        assert!(playlist.contains("#EXTINF:1.020,\n2.m4s"), "{playlist}");
        assert!(playlist.ends_with("#EXT-X-ENDLIST\n"));
    }
}
