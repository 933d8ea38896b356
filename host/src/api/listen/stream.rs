//! `GET /players/{id}/listen`: what a player sends to voice, as an endless HTTP stream, the way
//! Icecast serves a mount. Ogg Opus carries the player's own packets; MP3 is encoded once per
//! player for all its live listeners (a rewound MP3 listener has its own encoder). Ticks with
//! nothing sent are silence, so a paused or idle player keeps its listeners.
//!
//! A listener starts a one-second burst behind live (so players fill their buffer at once),
//! or `?rewind=N` seconds back, and then follows the clock at that distance. It reads the
//! player's recording at its own cursor: listeners share the recorded bytes.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::watch;

use super::hub::{LIVE_DELAY_TICKS, Membership};
use super::ogg_pages::OggStream;
use crate::audio::mp3::Mp3Encoder;
use crate::audio::recording::Recording;
use crate::telemetry::metrics::ListenLabels;
use crate::voice::OPUS_SILENCE;

/// Sent at once to a new listener.
pub const BURST_TICKS: u64 = 50;
/// The most audio one step sends (a rewound listener catching up, or one that was slow).
const MAX_STEP_TICKS: u64 = 250;
/// Bytes of audio between ICY metadata blocks.
pub const ICY_METAINT: usize = 16_000;

static SILENCE: [u8; 3] = OPUS_SILENCE;

/// The packets of ticks `from..to` of `recording`, silence where nothing was sent.
pub(super) fn packets(recording: &Recording, from: u64, to: u64, out: &mut Vec<Bytes>) {
    out.clear();
    let mut next = from;
    for chunk in recording.chunks(from, to) {
        for (tick, packet) in chunk.packets() {
            if tick < next || tick >= to {
                continue;
            }
            out.extend(std::iter::repeat_n(Bytes::from_static(&SILENCE), (tick - next) as usize));
            out.push(packet);
            next = tick + 1;
        }
    }
    out.extend(std::iter::repeat_n(Bytes::from_static(&SILENCE), to.saturating_sub(next) as usize));
}

pub enum Encoding {
    Ogg(OggStream),
    /// MP3 from the encoder shared by the player's MP3 listeners at the same rewind.
    Mp3(Arc<Mp3Feed>, Option<Icy>),
}

/// A player's MP3 stream, encoded once for every MP3 listener at one rewind (live, or a
/// whole number of seconds behind) by one task that follows the clock that far behind; it
/// keeps what listeners may still read (a burst plus the allowed lag). However many
/// listeners a link brings, a player costs one encoder per rewind in use.
pub struct Mp3Feed {
    chunks: parking_lot::Mutex<std::collections::VecDeque<Mp3Chunk>>,
    keep_ticks: u64,
}

struct Mp3Chunk {
    /// The tick after the last one whose audio it holds.
    to: u64,
    bytes: Bytes,
}

impl Mp3Feed {
    /// Starts the encoder task at `from`; it ends once no listener holds the feed.
    pub fn start(
        recording: Arc<Recording>,
        mut pulse: watch::Receiver<u64>,
        encoder: Mp3Encoder,
        from: u64,
        delay_ticks: u64,
        keep_ticks: u64,
        metrics: Arc<crate::telemetry::Metrics>,
    ) -> Arc<Self> {
        let feed = Arc::new(Self { chunks: parking_lot::Mutex::default(), keep_ticks });
        let weak = Arc::downgrade(&feed);
        metrics.mp3_encoders.inc();
        tokio::spawn(async move {
            let (mut encoder, mut cursor, mut scratch, mut out) = (encoder, from, Vec::new(), Vec::new());
            while pulse.changed().await.is_ok() {
                let Some(feed) = weak.upgrade() else { break };
                let target = pulse.borrow_and_update().saturating_sub(LIVE_DELAY_TICKS + delay_ticks);
                if target <= cursor {
                    continue;
                }
                let to = target.min(cursor + MAX_STEP_TICKS);
                packets(&recording, cursor, to, &mut scratch);
                out.clear();
                for packet in &scratch {
                    out.extend_from_slice(encoder.push(packet));
                }
                cursor = to;
                let mut chunks = feed.chunks.lock();
                chunks.push_back(Mp3Chunk { to, bytes: Bytes::copy_from_slice(&out) });
                while chunks.front().is_some_and(|c| c.to + feed.keep_ticks < to) {
                    chunks.pop_front();
                }
            }
            metrics.mp3_encoders.dec();
        });
        feed
    }

    /// Chunks holding audio after `cursor`, and the tick the last one ends at.
    fn after(&self, cursor: u64, out: &mut Vec<Bytes>) -> Option<u64> {
        out.clear();
        let chunks = self.chunks.lock();
        let mut end = None;
        for chunk in chunks.iter().filter(|c| c.to > cursor) {
            out.push(chunk.bytes.clone());
            end = Some(chunk.to);
        }
        end
    }
}

/// ICY metadata: a block every [`ICY_METAINT`] bytes of audio carrying the stream title.
pub struct Icy {
    until_block: usize,
    sent_title: Option<Arc<str>>,
}

impl Icy {
    pub fn new() -> Self {
        Self { until_block: ICY_METAINT, sent_title: None }
    }

    /// Copies `audio` into `out` with metadata blocks where they fall; the title is sent when
    /// it changed since the last block, an empty block otherwise.
    fn interleave(&mut self, mut audio: &[u8], title: Option<&Arc<str>>, out: &mut BytesMut) {
        while !audio.is_empty() {
            let n = audio.len().min(self.until_block);
            out.put_slice(&audio[..n]);
            audio = &audio[n..];
            self.until_block -= n;
            if self.until_block == 0 {
                self.until_block = ICY_METAINT;
                if title != self.sent_title.as_ref() {
                    self.sent_title = title.cloned();
                    put_icy_title(title.map_or("", |t| t), out);
                } else {
                    out.put_u8(0);
                }
            }
        }
    }
}

impl Default for Icy {
    fn default() -> Self {
        Self::new()
    }
}

/// `StreamTitle='…';` padded to a multiple of 16 bytes after a length byte (at most 4080).
fn put_icy_title(title: &str, out: &mut BytesMut) {
    // 1000 characters are at most 4000 bytes: the block stays under its 4080-byte cap.
    let clean: String = title.chars().filter(|c| *c != '\'' && !c.is_control()).take(1000).collect();
    let text = format!("StreamTitle='{clean}';");
    let blocks = text.len().div_ceil(16);
    out.put_u8(blocks as u8);
    out.put_slice(text.as_bytes());
    out.put_bytes(0, blocks * 16 - text.len());
}

pub struct Listener {
    recording: Arc<Recording>,
    pulse: watch::Receiver<u64>,
    membership: Membership,
    encoding: Encoding,
    cursor: u64,
    metrics: Arc<crate::telemetry::Metrics>,
    scratch: Vec<Bytes>,
    out: BytesMut,
    label: ListenLabels,
}

impl Listener {
    pub fn new(
        recording: Arc<Recording>,
        pulse: watch::Receiver<u64>,
        membership: Membership,
        encoding: Encoding,
        cursor: u64,
        metrics: Arc<crate::telemetry::Metrics>,
    ) -> Self {
        let format = if matches!(encoding, Encoding::Ogg(_)) { "ogg" } else { "mp3" };
        Self {
            recording,
            pulse,
            membership,
            encoding,
            cursor,
            metrics,
            scratch: Vec::new(),
            out: BytesMut::new(),
            label: ListenLabels { format },
        }
    }

    /// The next bytes to send: waits for the pulse until there is audio due; `None` once the
    /// listener was dropped for falling behind (the connection is then cut).
    pub async fn next(&mut self) -> Option<Bytes> {
        loop {
            if self.membership.slot.dropped.load(Ordering::Acquire) {
                return None;
            }
            let now = *self.pulse.borrow_and_update();
            let target = now.saturating_sub(LIVE_DELAY_TICKS + self.membership.slot.delay_ticks);
            // What it would play next may be gone (it fell out of the rewind buffer).
            self.cursor = self.cursor.max(self.recording.oldest(now));
            if self.recording.is_closed() && self.cursor >= self.recording.end() {
                // The player is gone and everything it sent has gone out.
                return None;
            }
            if target > self.cursor {
                let bytes = self.step(target);
                self.membership.slot.cursor.store(self.cursor, Ordering::Relaxed);
                if !bytes.is_empty() {
                    self.metrics.listener_bytes.get_or_create(&self.label).inc_by(bytes.len() as u64);
                    return Some(bytes);
                }
            }
            if self.pulse.changed().await.is_err() {
                return None;
            }
        }
    }

    /// Encodes from the cursor towards `target` and moves the cursor past what it sent.
    fn step(&mut self, target: u64) -> Bytes {
        let from = self.cursor;
        let to = target.min(from + MAX_STEP_TICKS);
        match &mut self.encoding {
            Encoding::Ogg(ogg) => {
                packets(&self.recording, from, to, &mut self.scratch);
                ogg.push(&self.scratch);
                self.cursor = to;
                return ogg.take();
            }
            Encoding::Mp3(feed, icy) => {
                let Some(end) = feed.after(from, &mut self.scratch) else { return Bytes::new() };
                let title = icy.as_ref().and_then(|_| self.recording.title_at(end - 1));
                for chunk in &self.scratch {
                    put_audio(chunk, icy.as_mut(), title.as_ref(), &mut self.out);
                }
                self.cursor = end;
            }
        }
        self.out.split().freeze()
    }
}

fn put_audio(audio: &[u8], icy: Option<&mut Icy>, title: Option<&Arc<str>>, out: &mut BytesMut) {
    match icy {
        Some(icy) => icy.interleave(audio, title, out),
        None => out.put_slice(audio),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_silence_and_the_range_is_exact() {
        let r = Recording::new(1000, 0, crate::audio::recording::RewindBudget::new(usize::MAX));
        r.record(12, b"x");
        r.record(14, b"y");
        r.flush();
        let mut out = Vec::new();
        packets(&r, 10, 16, &mut out);
        let got: Vec<&[u8]> = out.iter().map(|b| &b[..]).collect();
        assert_eq!(got, vec![&SILENCE[..], &SILENCE, b"x", &SILENCE, b"y", &SILENCE]);
    }

    #[test]
    fn icy_blocks_fall_every_metaint_bytes_and_carry_title_changes() {
        let mut icy = Icy::new();
        let mut out = BytesMut::new();
        let audio = vec![7u8; ICY_METAINT * 2 + 10];
        let title: Arc<str> = "A - B".into();
        icy.interleave(&audio, Some(&title), &mut out);
        let block = out[ICY_METAINT] as usize * 16;
        assert_eq!(&out[ICY_METAINT + 1..ICY_METAINT + 1 + 20], &b"StreamTitle='A - B';"[..]);
        let second = ICY_METAINT + 1 + block + ICY_METAINT;
        assert_eq!(out[second], 0, "an unchanged title sends an empty block");
        assert_eq!(out.len(), audio.len() + 1 + block + 1);
    }
}
