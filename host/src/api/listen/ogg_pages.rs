//! An endless Ogg Opus stream written page by page into one reusable buffer: no allocation
//! per packet or per listener page, whole packets per page (a live stream never needs to
//! continue one across pages), each page's granule position at its last packet's end.

use bytes::{BufMut, Bytes, BytesMut};

use crate::audio::opus_packets::frame_samples;
use crate::cache::ogg_opus::{opus_head, opus_tags};

const HEADER: usize = 27;
const MAX_LACING: usize = 255;
const BEGINNING_OF_STREAM: u8 = 0x02;
/// 20 ms at 48 kHz, for a packet whose header cannot be read.
const DEFAULT_SAMPLES: u64 = 960;

pub struct OggStream {
    serial: u32,
    sequence: u32,
    granule: u64,
    out: BytesMut,
    lacing: Vec<u8>,
}

impl OggStream {
    /// A stream with its `OpusHead` and `OpusTags` pages already written.
    pub fn new(serial: u32) -> Self {
        let mut stream =
            Self { serial, sequence: 0, granule: 0, out: BytesMut::with_capacity(8192), lacing: Vec::new() };
        stream.page(&[opus_head(0)], BEGINNING_OF_STREAM);
        stream.page(&[opus_tags()], 0);
        stream
    }

    /// Appends packets as pages of as many whole packets as a page holds.
    pub fn push<P: AsRef<[u8]>>(&mut self, packets: &[P]) {
        let mut start = 0;
        while start < packets.len() {
            let mut lacing = 0;
            let mut end = start;
            while end < packets.len() {
                let needed = packets[end].as_ref().len() / 255 + 1;
                if lacing + needed > MAX_LACING {
                    break;
                }
                lacing += needed;
                end += 1;
            }
            // A packet too large for one page is not Opus (at most 1275 bytes): it is skipped.
            if end == start {
                start += 1;
                continue;
            }
            self.granule += packets[start..end]
                .iter()
                .map(|p| frame_samples(p.as_ref()).map_or(DEFAULT_SAMPLES, |s| s as u64))
                .sum::<u64>();
            self.page(&packets[start..end], 0);
            start = end;
        }
    }

    /// What was written since the last call.
    pub fn take(&mut self) -> Bytes {
        self.out.split().freeze()
    }

    fn page<P: AsRef<[u8]>>(&mut self, packets: &[P], flags: u8) {
        self.lacing.clear();
        for p in packets {
            let len = p.as_ref().len();
            self.lacing.extend(std::iter::repeat_n(255u8, len / 255));
            self.lacing.push((len % 255) as u8);
        }
        let start = self.out.len();
        self.out.put_slice(b"OggS");
        self.out.put_u8(0);
        self.out.put_u8(flags);
        self.out.put_u64_le(self.granule);
        self.out.put_u32_le(self.serial);
        self.out.put_u32_le(self.sequence);
        self.out.put_u32_le(0); // checksum, filled in below
        self.out.put_u8(self.lacing.len() as u8);
        self.out.put_slice(&self.lacing);
        for p in packets {
            self.out.put_slice(p.as_ref());
        }
        let crc = crc32(&self.out[start..]);
        self.out[start + 22..start + 26].copy_from_slice(&crc.to_le_bytes());
        self.sequence = self.sequence.wrapping_add(1);
        debug_assert!(self.out.len() - start >= HEADER);
    }
}

/// Ogg's CRC-32: polynomial 0x04c11db7, no reflection, zero start, no final xor. Sliced by
/// 16 tables: every listener checksums a page every 100 ms.
pub const OGG_CRC: crc::Algorithm<u32> = crc::Algorithm {
    width: 32,
    poly: 0x04c1_1db7,
    init: 0,
    refin: false,
    refout: false,
    xorout: 0,
    check: 0x89a1_897f,
    residue: 0,
};
static CRC: crc::Crc<u32, crc::Table<16>> = crc::Crc::<u32, crc::Table<16>>::new(&OGG_CRC);

fn crc32(data: &[u8]) -> u32 {
    CRC.checksum(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_is_oggs() {
        // The catalogue's check value for these parameters; the page test below has the ogg
        // crate verify whole pages.
        assert_eq!(crc32(b"123456789"), 0x89a1_897f);
    }

    #[test]
    fn pages_read_back_with_the_ogg_crate_checksums_and_granules_included() {
        let mut stream = OggStream::new(42);
        let silence = [0xf8u8, 0xff, 0xfe];
        let big = vec![0xf8u8; 1000];
        let packets: Vec<Vec<u8>> = (0..120).map(|i| if i % 3 == 0 { big.clone() } else { silence.to_vec() }).collect();
        stream.push(&packets);
        let bytes = stream.take();
        let mut reader = ogg::PacketReader::new(std::io::Cursor::new(bytes.to_vec()));
        let head = reader.read_packet_expected().unwrap();
        assert!(head.data.starts_with(b"OpusHead"));
        let tags = reader.read_packet_expected().unwrap();
        assert!(tags.data.starts_with(b"OpusTags"));
        let mut read = Vec::new();
        let mut last_granule = 0;
        while let Some(p) = reader.read_packet().unwrap() {
            if p.last_in_page() {
                last_granule = p.absgp_page();
            }
            read.push(p.data);
        }
        assert_eq!(read, packets);
        assert_eq!(last_granule, 120 * 960);
    }
}
