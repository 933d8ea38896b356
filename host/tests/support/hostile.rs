//! Hostile media: real files of every container the decoder reads (made by ffmpeg, see
//! `media`), cut to 16 KB and with header fields set to what no real audio has (rates of
//! 1 Hz or 4 GHz, thousands of channels, lengths of 2^64), as a stranger's link could serve
//! them. Each container names its fields by where they are in the file; an edit writes a
//! field and repairs the checksums a reader checks first (Ogg pages), so the reader gets as
//! far as the field before anything else stops it.

use super::media::fixtures;

/// What a hostile file starts from: the first 16 KB of a real file, or a header built here.
pub const PREFIX: usize = 16 * 1024;

/// Values a field of `bits` bits is set to: the edges, what a header can say but no audio
/// has, and the largest the field holds.
pub fn extremes(bits: u32) -> Vec<u64> {
    let max = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
    let mut values = vec![0, 1, 2, 3, 7, 255, 7_999, 8_000, 384_000, 384_001, 65_535, 65_536, 4_294_967_291];
    values.extend([max, max - 1, max / 2, max / 2 + 1]);
    values.into_iter().map(|v| v & max).collect()
}

/// A container whose fields are edited in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Flac,
    OggVorbis,
    OggOpus,
    Mp3,
    Adts,
    Mp4,
    Webm,
}

pub const CONTAINERS: [Container; 7] = [
    Container::Flac,
    Container::OggVorbis,
    Container::OggOpus,
    Container::Mp3,
    Container::Adts,
    Container::Mp4,
    Container::Webm,
];

/// A field: its bit offset from the start of the file (big-endian bit order unless `le`),
/// its width in bits.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub bit: usize,
    pub bits: u32,
    pub le: bool,
}

impl Container {
    pub fn fixture(self) -> &'static str {
        match self {
            Self::Flac => "tone-660.flac",
            Self::OggVorbis => "tone-770.ogg",
            Self::OggOpus => "tone-880.opus",
            Self::Mp3 => "tone-440.mp3",
            Self::Adts => "tone-660.aac",
            Self::Mp4 => "tone-550.m4a",
            Self::Webm => "tone-990.webm",
        }
    }

    /// The first [`PREFIX`] bytes of the container's fixture (for Ogg Opus, whose pages
    /// hold a second of audio each, its first four pages). FLAC frames are rewritten to take
    /// their rate from STREAMINFO, as an encoder may write them, so an edited STREAMINFO is
    /// what the reader goes by.
    pub fn base(self) -> Vec<u8> {
        let mut bytes = std::fs::read(fixtures().join(self.fixture())).expect("fixture");
        let end = match self {
            Self::OggOpus => ogg_pages(&bytes).get(4).copied().unwrap_or(bytes.len()),
            _ => PREFIX,
        };
        bytes.truncate(end);
        if self == Self::Flac {
            flac_rates_from_streaminfo(&mut bytes);
        }
        bytes
    }

    /// The header fields of `bytes` worth setting to extremes.
    pub fn fields(self, bytes: &[u8]) -> Vec<Field> {
        let f = |name, byte: usize, bits, le| Field { name, bit: byte * 8, bits, le };
        let at = |name, bit: usize, bits| Field { name, bit, bits, le: false };
        match self {
            // STREAMINFO, right after `fLaC` and its block header.
            Self::Flac => vec![
                f("min block size", 8, 16, false),
                f("max block size", 10, 16, false),
                f("min frame size", 12, 24, false),
                f("max frame size", 15, 24, false),
                at("sample rate", 18 * 8, 20),
                at("channels - 1", 18 * 8 + 20, 3),
                at("bits per sample - 1", 18 * 8 + 23, 5),
                at("total samples", 18 * 8 + 28, 36),
            ],
            // The identification header fills the first page: 27 bytes of page header, one
            // lacing value, then `\x01vorbis`.
            Self::OggVorbis => {
                let mut fields = vec![
                    f("vorbis version", 35, 32, true),
                    f("channels", 39, 8, true),
                    f("sample rate", 40, 32, true),
                    f("bitrate maximum", 44, 32, true),
                    f("bitrate nominal", 48, 32, true),
                    at("blocksize 0", 56 * 8 + 4, 4),
                    at("blocksize 1", 56 * 8, 4),
                ];
                fields.extend(granules(bytes));
                fields
            }
            Self::OggOpus => {
                let mut fields = vec![
                    f("channels", 37, 8, true),
                    f("pre-skip", 38, 16, true),
                    f("input sample rate", 40, 32, true),
                    f("output gain", 44, 16, true),
                    f("channel mapping family", 46, 8, true),
                ];
                fields.extend(granules(bytes));
                fields
            }
            Self::Mp3 => {
                let mut fields = Vec::new();
                for frame in mp3_frames(bytes).into_iter().take(4) {
                    fields.push(at("bitrate index", frame * 8 + 16, 4));
                    fields.push(at("sample rate index", frame * 8 + 20, 2));
                    fields.push(at("channel mode", frame * 8 + 24, 2));
                    fields.push(at("version", frame * 8 + 11, 2));
                    fields.push(at("layer", frame * 8 + 13, 2));
                }
                if let Some(xing) = find(bytes, b"Xing").or_else(|| find(bytes, b"Info")) {
                    fields.push(f("Xing frames", xing + 8, 32, false));
                    fields.push(f("Xing bytes", xing + 12, 32, false));
                }
                fields
            }
            Self::Adts => {
                let mut fields = Vec::new();
                for frame in adts_frames(bytes).into_iter().take(4) {
                    fields.push(at("profile", frame * 8 + 16, 2));
                    fields.push(at("sampling frequency index", frame * 8 + 18, 4));
                    fields.push(at("channel configuration", frame * 8 + 23, 3));
                    fields.push(at("frame length", frame * 8 + 30, 13));
                    fields.push(at("raw blocks", frame * 8 + 54, 2));
                }
                fields
            }
            Self::Mp4 => {
                let mut fields = Vec::new();
                // Offsets from the box's type; -4 is its size.
                let mut box_at = |kind: &[u8], name, offset: isize, bits| {
                    if let Some(at) = find(bytes, kind) {
                        fields.push(f(name, at.saturating_add_signed(offset), bits, false));
                    }
                };
                box_at(b"mdhd", "mdhd timescale", 16, 32);
                box_at(b"mdhd", "mdhd duration", 20, 32);
                box_at(b"mvhd", "mvhd timescale", 16, 32);
                box_at(b"mp4a", "mp4a channel count", 20, 16);
                box_at(b"mp4a", "mp4a sample size", 22, 16);
                box_at(b"mp4a", "mp4a sample rate", 28, 32);
                box_at(b"stsz", "stsz sample count", 12, 32);
                box_at(b"stsz", "stsz sample size", 8, 32);
                box_at(b"stts", "stts entries", 8, 32);
                box_at(b"stsc", "stsc entries", 8, 32);
                box_at(b"stco", "stco entries", 8, 32);
                box_at(b"esds", "esds size", -4, 32);
                box_at(b"moov", "moov size", -4, 32);
                box_at(b"trak", "trak size", -4, 32);
                fields
            }
            Self::Webm => {
                let mut fields = Vec::new();
                // SamplingFrequency (0xB5) as an 8-byte float, Channels (0x9F), BitDepth.
                if let Some(at) = find(bytes, &[0xB5, 0x88]) {
                    fields.push(f("sampling frequency", at + 2, 64, false));
                }
                if let Some(at) = find(bytes, &[0x9F, 0x81]) {
                    fields.push(f("channels", at + 2, 8, false));
                }
                if let Some(at) = find(bytes, &[0x44, 0x89, 0x88]) {
                    fields.push(f("duration", at + 3, 64, false));
                }
                if let Some(at) = find(bytes, &[0x1F, 0x43, 0xB6, 0x75]) {
                    fields.push(f("cluster size", at + 4, 64, false));
                }
                fields
            }
        }
    }

    /// Sets `field` to `value` and repairs what the container checks before reading it.
    pub fn edit(self, bytes: &mut [u8], field: Field, value: u64) {
        write_bits(bytes, field, value);
        if matches!(self, Self::OggVorbis | Self::OggOpus) {
            fix_ogg_crcs(bytes);
        }
    }
}

/// Floats a float field is set to (a WebM sampling frequency or duration).
pub fn float_extremes() -> Vec<u64> {
    [1.0f64, 0.0, -48_000.0, 4_294_967_291.0, 1e300, f64::NAN, f64::INFINITY, 384_001.0, 7_999.0, 1e-300]
        .iter()
        .map(|f| f.to_bits())
        .collect()
}

fn find(bytes: &[u8], needle: &[u8]) -> Option<usize> {
    bytes.windows(needle.len()).position(|w| w == needle)
}

fn write_bits(bytes: &mut [u8], field: Field, value: u64) {
    if field.le {
        for i in 0..(field.bits as usize).div_ceil(8) {
            if let Some(b) = bytes.get_mut(field.bit / 8 + i) {
                *b = (value >> (8 * i)) as u8;
            }
        }
        return;
    }
    for i in 0..field.bits as usize {
        let bit = field.bit + i;
        let on = (value >> (field.bits as usize - 1 - i)) & 1 == 1;
        if let Some(b) = bytes.get_mut(bit / 8) {
            let mask = 0x80u8 >> (bit % 8);
            *b = if on { *b | mask } else { *b & !mask };
        }
    }
}

/// Where each Ogg page starts.
pub fn ogg_pages(bytes: &[u8]) -> Vec<usize> {
    let mut pages = Vec::new();
    let mut at = 0;
    while at + 27 <= bytes.len() && &bytes[at..at + 4] == b"OggS" {
        pages.push(at);
        let segments = bytes[at + 26] as usize;
        let Some(table) = bytes.get(at + 27..at + 27 + segments) else { break };
        at += 27 + segments + table.iter().map(|&l| l as usize).sum::<usize>();
    }
    pages
}

/// The granule positions of the first pages.
fn granules(bytes: &[u8]) -> Vec<Field> {
    let pages = ogg_pages(bytes);
    pages
        .into_iter()
        .skip(2)
        .take(3)
        .map(|p| Field { name: "granule position", bit: (p + 6) * 8, bits: 64, le: true })
        .collect()
}

/// Every whole page's checksum, recomputed.
pub fn fix_ogg_crcs(bytes: &mut [u8]) {
    let crc = crc::Crc::<u32>::new(&mesastream::api::listen::ogg_pages::OGG_CRC);
    let pages = ogg_pages(bytes);
    for (i, &start) in pages.iter().enumerate() {
        let segments = bytes[start + 26] as usize;
        let body: usize = bytes[start + 27..start + 27 + segments].iter().map(|&l| l as usize).sum();
        let end = pages.get(i + 1).copied().unwrap_or(start + 27 + segments + body);
        if end > bytes.len() {
            break;
        }
        bytes[start + 22..start + 26].fill(0);
        let sum = crc.checksum(&bytes[start..end]);
        bytes[start + 22..start + 26].copy_from_slice(&sum.to_le_bytes());
    }
}

/// CRC-8 (polynomial 0x07) of a FLAC frame header, CRC-16 (0x8005) of a whole frame.
fn flac_crc(data: &[u8], width: u32, poly: u32) -> u32 {
    let top = 1u32 << (width - 1);
    let mask = if width == 32 { u32::MAX } else { (1 << width) - 1 };
    let mut crc = 0u32;
    for &byte in data {
        crc ^= u32::from(byte) << (width - 8);
        for _ in 0..8 {
            crc = if crc & top != 0 { (crc << 1) ^ poly } else { crc << 1 } & mask;
        }
    }
    crc
}

/// The length of the FLAC frame header at `at` when one is there (its CRC-8 matching).
fn flac_header_len(bytes: &[u8], at: usize) -> Option<usize> {
    let b = bytes.get(at..at + 5)?;
    if b[0] != 0xFF || b[1] & 0xFE != 0xF8 {
        return None;
    }
    // The frame or sample number, UTF-8 coded: its first byte says how many follow.
    let extra = b[4].leading_ones() as usize;
    let mut len = 5 + extra.saturating_sub(1);
    len += match b[2] >> 4 {
        6 => 1,
        7 => 2,
        _ => 0,
    };
    len += match b[2] & 0x0F {
        12 => 1,
        13 | 14 => 2,
        _ => 0,
    };
    let crc = *bytes.get(at + len)?;
    (flac_crc(&bytes[at..at + len], 8, 0x07) == u32::from(crc)).then_some(len)
}

/// Rewrites every whole FLAC frame to take its sample rate from STREAMINFO (rate code 0),
/// its checksums repaired. Only frames without an explicit rate after the header are
/// rewritten, so no byte moves.
fn flac_rates_from_streaminfo(bytes: &mut [u8]) {
    let starts: Vec<usize> = (42..bytes.len()).filter(|&at| flac_header_len(bytes, at).is_some()).collect();
    for pair in starts.windows(2) {
        let (at, next) = (pair[0], pair[1]);
        let Some(len) = flac_header_len(bytes, at) else { continue };
        if bytes[at + 2] & 0x0F >= 12 {
            continue;
        }
        bytes[at + 2] &= 0xF0;
        bytes[at + len] = flac_crc(&bytes[at..at + len], 8, 0x07) as u8;
        let crc16 = flac_crc(&bytes[at..next - 2], 16, 0x8005) as u16;
        bytes[next - 2..next].copy_from_slice(&crc16.to_be_bytes());
    }
}

/// Where the first MPEG-1 Layer III frames start (after any ID3v2 tag), each found from the
/// length its predecessor's header gives.
fn mp3_frames(bytes: &[u8]) -> Vec<usize> {
    const KBPS: [usize; 15] = [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320];
    const RATES: [usize; 3] = [44_100, 48_000, 32_000];
    let mut at = 0;
    if bytes.starts_with(b"ID3") && bytes.len() > 10 {
        let size = bytes[6..10].iter().fold(0usize, |n, &b| (n << 7) | (b & 0x7f) as usize);
        at = 10 + size;
    }
    let mut frames = Vec::new();
    while at + 4 <= bytes.len() && frames.len() < 8 {
        let (b1, b2) = (bytes[at + 1], bytes[at + 2]);
        let (kbps, rate) = (KBPS.get((b2 >> 4) as usize), RATES.get(((b2 >> 2) & 3) as usize));
        let (Some(&kbps), Some(&rate)) = (kbps, rate) else { break };
        if bytes[at] != 0xFF || b1 & 0xFE != 0xFA || kbps == 0 {
            break;
        }
        frames.push(at);
        at += 144_000 * kbps / rate + ((b2 >> 1) & 1) as usize;
    }
    frames
}

fn adts_frames(bytes: &[u8]) -> Vec<usize> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 7 <= bytes.len() && bytes[at] == 0xFF && bytes[at + 1] & 0xF0 == 0xF0 {
        frames.push(at);
        let len =
            ((bytes[at + 3] as usize & 0x3) << 11) | ((bytes[at + 4] as usize) << 3) | (bytes[at + 5] as usize >> 5);
        if len < 7 {
            break;
        }
        at += len;
    }
    frames
}

/// A WAV file built from its fields: any format tag, channel count, rate, block align, bit
/// depth and declared data length, followed by `payload` as its samples.
#[derive(Debug, Clone)]
pub struct WavHeader {
    pub format: u16,
    pub channels: u16,
    pub rate: u32,
    pub byte_rate: u32,
    pub block_align: u16,
    pub bits: u16,
    pub data_len: u32,
    /// WAVE_FORMAT_EXTENSIBLE's valid bits, channel mask and sub-format tag.
    pub extensible: Option<(u16, u32, u16)>,
}

impl WavHeader {
    /// 16-bit stereo PCM at `rate`, its data length the payload's.
    pub fn pcm(rate: u32, payload: usize) -> Self {
        Self {
            format: 1,
            channels: 2,
            rate,
            byte_rate: rate.wrapping_mul(4),
            block_align: 4,
            bits: 16,
            data_len: payload as u32,
            extensible: None,
        }
    }

    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        let mut fmt = Vec::new();
        fmt.extend(self.format.to_le_bytes());
        fmt.extend(self.channels.to_le_bytes());
        fmt.extend(self.rate.to_le_bytes());
        fmt.extend(self.byte_rate.to_le_bytes());
        fmt.extend(self.block_align.to_le_bytes());
        fmt.extend(self.bits.to_le_bytes());
        if let Some((valid, mask, sub)) = self.extensible {
            fmt.extend(22u16.to_le_bytes());
            fmt.extend(valid.to_le_bytes());
            fmt.extend(mask.to_le_bytes());
            fmt.extend(sub.to_le_bytes());
            // The rest of the sub-format GUID (KSDATAFORMAT_SUBTYPE_*).
            fmt.extend([0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71]);
        }
        let mut out = Vec::with_capacity(44 + payload.len());
        out.extend(b"RIFF");
        out.extend((36 + fmt.len() as u32 - 16 + payload.len() as u32).to_le_bytes());
        out.extend(b"WAVEfmt ");
        out.extend((fmt.len() as u32).to_le_bytes());
        out.extend(&fmt);
        out.extend(b"data");
        out.extend(self.data_len.to_le_bytes());
        out.extend(payload);
        out
    }
}

/// 16 KB of a 440 Hz tone as 16-bit stereo samples at 48 kHz (what the hostile headers
/// claim to describe).
pub fn wav_payload() -> Vec<u8> {
    (0..PREFIX / 4)
        .flat_map(|i| {
            let v = ((i as f64 * 440.0 * std::f64::consts::TAU / 48_000.0).sin() * 8000.0) as i16;
            let [a, b] = v.to_le_bytes();
            [a, b, a, b]
        })
        .collect()
}

/// The 16 KB WAV of the report: a sample-rate bomb declaring `rate`.
pub fn rate_bomb_wav(rate: u32) -> Vec<u8> {
    let payload = wav_payload();
    WavHeader::pcm(rate, payload.len()).build(&payload)
}

/// The same bomb in a FLAC header (its 20-bit field holds at most 1 048 575 Hz).
pub fn rate_bomb_flac(rate: u32) -> Vec<u8> {
    let mut bytes = Container::Flac.base();
    let field = Container::Flac.fields(&bytes).into_iter().find(|f| f.name == "sample rate").expect("field");
    Container::Flac.edit(&mut bytes, field, u64::from(rate));
    bytes
}

/// The same bomb in an Ogg Vorbis identification header, its page checksum repaired.
pub fn rate_bomb_ogg(rate: u32) -> Vec<u8> {
    let mut bytes = Container::OggVorbis.base();
    let field = Container::OggVorbis.fields(&bytes).into_iter().find(|f| f.name == "sample rate").expect("field");
    Container::OggVorbis.edit(&mut bytes, field, u64::from(rate));
    bytes
}
