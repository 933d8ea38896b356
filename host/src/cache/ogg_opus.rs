//! Ogg Opus files as the cache writes and reads them: 48 kHz stereo, the `OpusHead` and
//! `OpusTags` headers, a page every [`PACKETS_PER_PAGE`] packets so a seek by granule
//! position lands within a page of its target, and an end-of-stream flag on the last page.
//! A file without that flag (a fill that stopped) or with a bad page checksum does not
//! verify.

use std::io::{Read, Seek, Write};

use ogg::{PacketReader, PacketWriteEndInfo, PacketWriter, PageParsingOptions};

use crate::audio::opus_packets::frame_samples;

/// 200 ms of 20 ms packets per page.
pub const PACKETS_PER_PAGE: usize = 10;
const SERIAL: u32 = 0x6d65_7361; // "mesa"
const SAMPLES_PER_MS: u64 = 48;

#[derive(Debug, thiserror::Error)]
pub enum OggOpusError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("ogg: {0}")]
    Ogg(String),
    #[error("not an Ogg Opus file: {0}")]
    NotOpus(String),
    #[error("incomplete: {0}")]
    Incomplete(String),
}

fn ogg_error(e: ogg::OggReadError) -> OggOpusError {
    match e {
        ogg::OggReadError::ReadError(io) => OggOpusError::Io(io),
        other => OggOpusError::Ogg(other.to_string()),
    }
}

/// What a complete file holds, read from the file itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Index {
    pub packets: u64,
    /// Samples per channel at 48 kHz, after the pre-skip.
    pub samples: u64,
    pub pre_skip: u16,
}

impl Index {
    pub fn duration_ms(&self) -> u64 {
        self.samples / SAMPLES_PER_MS
    }
}

/// The `OpusHead` packet for 48 kHz stereo with `pre_skip` samples of encoder delay.
pub fn opus_head(pre_skip: u16) -> Vec<u8> {
    let mut head = b"OpusHead".to_vec();
    head.push(1); // version
    head.push(2); // channels
    head.extend_from_slice(&pre_skip.to_le_bytes());
    head.extend_from_slice(&48_000u32.to_le_bytes());
    head.extend_from_slice(&0i16.to_le_bytes()); // output gain
    head.push(0); // channel mapping family: mono or stereo
    head
}

pub fn opus_tags() -> Vec<u8> {
    let vendor = concat!("mesastream ", env!("CARGO_PKG_VERSION"));
    let mut tags = b"OpusTags".to_vec();
    tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
    tags.extend_from_slice(vendor.as_bytes());
    tags.extend_from_slice(&0u32.to_le_bytes()); // no comments
    tags
}

/// Writes packets as they come; one is held back so the last can end the stream.
pub struct OggOpusWriter<W: Write> {
    writer: PacketWriter<'static, W>,
    held: Option<Vec<u8>>,
    granule: u64,
    packets: u64,
    pre_skip: u16,
}

impl<W: Write> OggOpusWriter<W> {
    pub fn new(out: W, pre_skip: u16) -> Result<Self, OggOpusError> {
        let mut writer = PacketWriter::new(out);
        writer.write_packet(opus_head(pre_skip), SERIAL, PacketWriteEndInfo::EndPage, 0)?;
        writer.write_packet(opus_tags(), SERIAL, PacketWriteEndInfo::EndPage, 0)?;
        Ok(Self { writer, held: None, granule: 0, packets: 0, pre_skip })
    }

    /// Appends one Opus packet (any duration Opus allows).
    pub fn push(&mut self, packet: &[u8]) -> Result<(), OggOpusError> {
        if frame_samples(packet).is_none() {
            return Err(OggOpusError::NotOpus(format!("packet {} is not Opus", self.packets)));
        }
        if let Some(previous) = self.held.replace(packet.to_vec()) {
            self.write(previous, false)?;
        }
        Ok(())
    }

    /// Packets written out so far (the last one pushed is held back).
    pub fn written(&self) -> u64 {
        self.packets
    }

    /// Hands what was written so far to the file, so a reader of the growing file sees every
    /// complete page.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.writer.inner_mut().flush()
    }

    /// Ends the stream and returns what it holds.
    pub fn finish(mut self) -> Result<(W, Index), OggOpusError> {
        let last = self.held.take().ok_or_else(|| OggOpusError::Incomplete("no audio packets".into()))?;
        self.write(last, true)?;
        let samples = self.granule.saturating_sub(u64::from(self.pre_skip));
        let index = Index { packets: self.packets, samples, pre_skip: self.pre_skip };
        Ok((self.writer.into_inner(), index))
    }

    fn write(&mut self, packet: Vec<u8>, last: bool) -> Result<(), OggOpusError> {
        self.granule += frame_samples(&packet).unwrap_or(0) as u64;
        self.packets += 1;
        let end = if last {
            PacketWriteEndInfo::EndStream
        } else if self.packets.is_multiple_of(PACKETS_PER_PAGE as u64) {
            PacketWriteEndInfo::EndPage
        } else {
            PacketWriteEndInfo::NormalPacket
        };
        self.writer.write_packet(packet, SERIAL, end, self.granule)?;
        Ok(())
    }
}

/// Reads the Opus packets of a file the cache wrote, from the start or from a position.
pub struct OggOpusReader<R: Read + Seek> {
    reader: PacketReader<R>,
    pre_skip: u16,
    /// Packets of the page a seek landed in, from the target on.
    pending: std::collections::VecDeque<Vec<u8>>,
}

impl<R: Read + Seek> OggOpusReader<R> {
    /// A reader for playback. Pages' checksums are not computed again: [`verify`] checked
    /// every page of the file once when it was indexed (a byte-wise CRC was a third of the
    /// media workers' time in passthrough), and every packet is still checked to be Opus
    /// before it is passed on.
    pub fn open(input: R) -> Result<Self, OggOpusError> {
        Self::with_checksums(input, false)
    }

    fn with_checksums(input: R, checksums: bool) -> Result<Self, OggOpusError> {
        let mut options = PageParsingOptions::default();
        options.verify_checksum = checksums;
        let mut reader = PacketReader::new_with_page_parse_opts(input, options);
        let head = reader.read_packet_expected().map_err(ogg_error)?;
        if head.data.len() < 19 || &head.data[..8] != b"OpusHead" || head.data[9] != 2 {
            return Err(OggOpusError::NotOpus("missing or unexpected OpusHead".into()));
        }
        let pre_skip = u16::from_le_bytes([head.data[10], head.data[11]]);
        let tags = reader.read_packet_expected().map_err(ogg_error)?;
        if !tags.data.starts_with(b"OpusTags") {
            return Err(OggOpusError::NotOpus("missing OpusTags".into()));
        }
        Ok(Self { reader, pre_skip, pending: Default::default() })
    }

    /// The next packet; none at the end of the stream.
    pub fn next_packet(&mut self) -> Result<Option<Vec<u8>>, OggOpusError> {
        if let Some(p) = self.pending.pop_front() {
            return Ok(Some(p));
        }
        Ok(self.reader.read_packet().map_err(ogg_error)?.map(|p| p.data))
    }

    /// Positions the reader so the next packet is the one playing at `ms` (within one
    /// packet), by the pages' granule positions rather than by reading up to it.
    pub fn seek_ms(&mut self, ms: u64) -> Result<(), OggOpusError> {
        self.pending.clear();
        let target = ms * SAMPLES_PER_MS + u64::from(self.pre_skip);
        // The first page ending after the target holds it (the header pages end at 0).
        if !self.reader.seek_absgp(Some(SERIAL), target + 1).map_err(ogg_error)? {
            // Past the end: nothing left to play.
            while self.reader.read_packet().map_err(ogg_error)?.is_some() {}
            return Ok(());
        }
        // The seek may land a page early (the headers end at 0): read on to the first page
        // ending after the target. Its packets end at its granule position.
        loop {
            let mut page = Vec::new();
            let mut end_granule = 0;
            while let Some(p) = self.reader.read_packet().map_err(ogg_error)? {
                let last = p.last_in_page();
                end_granule = p.absgp_page();
                page.push(p.data);
                if last {
                    break;
                }
            }
            if page.is_empty() {
                return Ok(());
            }
            if end_granule <= target {
                continue;
            }
            let total: u64 = page.iter().map(|p| frame_samples(p).unwrap_or(0) as u64).sum();
            let mut start = end_granule.saturating_sub(total);
            for packet in page {
                let samples = frame_samples(&packet).unwrap_or(0) as u64;
                if start + samples <= target {
                    start += samples;
                    continue;
                }
                self.pending.push_back(packet);
            }
            return Ok(());
        }
    }
}

/// Reads a whole file, checking every page, and returns its index. A file that does not
/// end its stream, or whose pages do not check out, is an error. Each page's granule
/// position must equal the samples read so far: the reader resynchronises past a page whose
/// header is damaged, and this is what notices the page that went missing.
pub fn verify(input: impl Read + Seek) -> Result<Index, OggOpusError> {
    let mut reader = OggOpusReader::with_checksums(input, true)?;
    let (mut packets, mut samples, mut granule, mut ended) = (0u64, 0u64, 0u64, false);
    while let Some(p) = reader.reader.read_packet().map_err(ogg_error)? {
        let Some(n) = frame_samples(&p.data) else {
            return Err(OggOpusError::NotOpus(format!("packet {packets} is not Opus")));
        };
        packets += 1;
        samples += n as u64;
        granule = p.absgp_page();
        if p.last_in_page() && granule != samples {
            return Err(OggOpusError::Incomplete(format!(
                "a page is missing or damaged before packet {packets} (granule {granule}, {samples} samples read)"
            )));
        }
        ended = p.last_in_stream();
    }
    if !ended {
        return Err(OggOpusError::Incomplete(format!("the stream stops after {packets} packets without ending")));
    }
    let pre_skip = reader.pre_skip;
    Ok(Index { packets, samples: granule.saturating_sub(u64::from(pre_skip)), pre_skip })
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::audio::decode::{SourceDecoder, Unit};
    use crate::audio::encode::{OpusEncoder, tone_frame};

    /// `n` 20 ms packets of a tone whose frequency rises with the packet number, so packets differ.
    fn packets(n: usize) -> Vec<Vec<u8>> {
        let mut encoder = OpusEncoder::new(96).unwrap();
        (0..n).map(|f| encoder.encode(&tone_frame(200.0 + 10.0 * f as f32, 0.4, 0)).unwrap()).collect()
    }

    fn file_of(packets: &[Vec<u8>], pre_skip: u16) -> (Vec<u8>, Index) {
        let mut writer = OggOpusWriter::new(Vec::new(), pre_skip).unwrap();
        for p in packets {
            writer.push(p).unwrap();
        }
        writer.finish().unwrap()
    }

    #[test]
    fn writes_a_file_any_ogg_reader_plays_and_indexes_it_from_the_file() {
        let written = packets(120);
        let (bytes, index) = file_of(&written, 312);
        assert_eq!(index, Index { packets: 120, samples: 120 * 960 - 312, pre_skip: 312 });
        assert_eq!(verify(Cursor::new(&bytes)).unwrap(), index);
        assert_eq!(index.duration_ms(), 2393);
        // The media decoder (symphonia's Ogg demuxer) sees the same packets.
        let mut media = SourceDecoder::open(Box::new(Cursor::new(bytes)), Some("audio/ogg")).unwrap();
        let mut read = Vec::new();
        while let Some(unit) = media.next_unit().unwrap() {
            let Unit::Opus(p) = unit else { panic!("decoded as PCM") };
            read.push(p);
        }
        assert!(read == written, "{} packets read back", read.len());
    }

    #[test]
    fn seeks_by_granule_to_the_packet_playing_at_the_target() {
        let written = packets(150);
        let (bytes, _) = file_of(&written, 0);
        let mut reader = OggOpusReader::open(Cursor::new(bytes)).unwrap();
        for (ms, packet) in [(1234u64, 61usize), (0, 0), (20, 1), (2_999, 149), (1_000, 50), (455, 22)] {
            reader.seek_ms(ms).unwrap();
            let got = reader.next_packet().unwrap();
            let at = written.iter().position(|w| Some(w) == got.as_ref());
            assert_eq!(at, Some(packet), "seek to {ms} ms");
        }
        reader.seek_ms(5_000).unwrap();
        assert_eq!(reader.next_packet().unwrap(), None, "past the end");
    }

    #[test]
    fn cut_or_damaged_files_do_not_verify() {
        let (bytes, _) = file_of(&packets(60), 0);
        let cut = &bytes[..bytes.len() / 2];
        assert!(verify(Cursor::new(cut)).is_err(), "a file cut in half must not verify");
        let mut damaged = bytes.clone();
        let middle = damaged.len() / 2;
        damaged[middle] ^= 0x55;
        assert!(verify(Cursor::new(&damaged)).is_err(), "a flipped byte must fail the page checksum");
        assert!(verify(Cursor::new(b"not ogg at all".to_vec())).is_err());
        assert!(verify(Cursor::new(&bytes)).is_ok());
    }
}

/// Cache files are untrusted bytes on disk: whatever they hold, reading them never panics,
/// and a damaged or cut file is refused rather than played. `PROPTEST_CASES` sets how many
/// cases run (256 by default).
#[cfg(test)]
mod properties {
    use std::io::Cursor;

    use proptest::prelude::*;

    use super::*;

    /// A cache file of Opus-shaped packets (a 20 ms CELT TOC byte, then any bytes).
    fn cache_file(payloads: &[Vec<u8>]) -> Vec<u8> {
        let mut writer = OggOpusWriter::new(Vec::new(), 312).expect("writer");
        for payload in payloads {
            let mut packet = vec![0xF8];
            packet.extend_from_slice(payload);
            writer.push(&packet).expect("push");
        }
        writer.finish().expect("finish").0
    }

    fn payloads() -> impl Strategy<Value = Vec<Vec<u8>>> {
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..120), 1..40)
    }

    /// Reads everything a reader yields, then seeks; errors are fine, panics are not.
    fn read_all(bytes: Vec<u8>, seek_ms: u64) {
        let _ = verify(Cursor::new(bytes.clone()));
        if let Ok(mut reader) = OggOpusReader::open(Cursor::new(bytes)) {
            for _ in 0..10_000 {
                match reader.next_packet() {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            let _ = reader.seek_ms(seek_ms);
            let _ = reader.next_packet();
        }
    }

    /// Found by `a_damaged_file_is_refused`: a damaged capture pattern on the first audio
    /// page made the reader skip that page, and the file verified 200 ms short.
    #[test]
    fn a_file_whose_first_audio_page_is_unreadable_is_refused() {
        let mut bytes = cache_file(&vec![vec![0u8; 40]; 17]);
        let second_page = 47 + 27 + 1 + 32;
        assert_eq!(&bytes[second_page..second_page + 4], b"OggS");
        bytes[second_page] ^= 1;
        assert!(matches!(verify(Cursor::new(bytes)), Err(OggOpusError::Incomplete(_))));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096), seek in any::<u64>()) {
            read_all(bytes.clone(), seek);
            let mut framed = b"OggS".to_vec();
            framed.extend(bytes);
            read_all(framed, seek);
        }

        #[test]
        fn a_valid_file_reads_back_exactly(payloads in payloads()) {
            let bytes = cache_file(&payloads);
            let index = verify(Cursor::new(bytes.clone())).expect("a file just written verifies");
            prop_assert_eq!(index.packets, payloads.len() as u64);
            let mut reader = OggOpusReader::open(Cursor::new(bytes)).expect("opens");
            for payload in &payloads {
                let packet = reader.next_packet().expect("reads").expect("a packet");
                prop_assert_eq!(&packet[1..], &payload[..]);
            }
            prop_assert_eq!(reader.next_packet().expect("reads"), None);
        }

        #[test]
        fn a_damaged_file_is_refused(payloads in payloads(), at in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let mut bytes = cache_file(&payloads);
            let i = at.index(bytes.len());
            bytes[i] ^= flip;
            prop_assert!(verify(Cursor::new(bytes)).is_err(), "byte {} changed and the file still verifies", i);
        }

        #[test]
        fn a_cut_file_is_refused(payloads in payloads(), at in any::<prop::sample::Index>()) {
            let bytes = cache_file(&payloads);
            let cut = at.index(bytes.len());
            prop_assert!(verify(Cursor::new(bytes[..cut].to_vec())).is_err(), "cut at {} still verifies", cut);
        }
    }
}
