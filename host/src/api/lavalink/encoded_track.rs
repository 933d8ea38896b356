//! Lavalink's encoded track: one lavaplayer track message in standard Base64. Clients keep
//! these strings, hand them back to play a track, and some decode them on their own, so the
//! bytes must be exactly what lavaplayer writes and reads.
//!
//! The message is a big-endian header (two flag bits, then the size of the rest), a version
//! byte, the track's fields as Java `writeUTF` strings (modified UTF-8), bytes that only the
//! track's source understands, and the start position in the last eight bytes. The source's
//! bytes are kept as they are, so a track from any source decodes and encodes back the same.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Flag bit 0 of the header: a version byte follows.
const VERSIONED: u32 = 1;
/// The version written (adds artwork URL and ISRC to version 2's URI).
const VERSION: u8 = 3;
/// The low 30 bits of the header hold the size of the rest of the message.
const SIZE_MASK: u32 = (1 << 30) - 1;

/// A track as its encoded form carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedTrack {
    pub title: String,
    pub author: String,
    /// Milliseconds; a stream carries `i64::MAX` (lavaplayer's "unknown").
    pub length_ms: i64,
    pub identifier: String,
    pub is_stream: bool,
    pub uri: Option<String>,
    pub artwork_url: Option<String>,
    pub isrc: Option<String>,
    /// Which source reads the extra bytes (`http`, `youtube`, …).
    pub source_name: String,
    /// The source's own fields, kept as written.
    pub source_extra: Vec<u8>,
    /// Where playback starts, in milliseconds.
    pub position_ms: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("not valid base64")]
    Base64,
    #[error("the track message ends early")]
    Truncated,
    #[error("the header says {declared} bytes but {actual} follow")]
    Size { declared: usize, actual: usize },
    #[error("unsupported track message version {0}")]
    Version(u8),
    #[error("a text field is not valid modified UTF-8")]
    Text,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the {0} field is longer than 65535 bytes in modified UTF-8")]
pub struct EncodeError(&'static str);

impl EncodedTrack {
    /// The Base64 string clients see.
    pub fn encode(&self) -> Result<String, EncodeError> {
        let mut body = vec![VERSION];
        write_text(&mut body, &self.title, "title")?;
        write_text(&mut body, &self.author, "author")?;
        body.extend_from_slice(&self.length_ms.to_be_bytes());
        write_text(&mut body, &self.identifier, "identifier")?;
        body.push(u8::from(self.is_stream));
        write_optional(&mut body, self.uri.as_deref(), "uri")?;
        write_optional(&mut body, self.artwork_url.as_deref(), "artworkUrl")?;
        write_optional(&mut body, self.isrc.as_deref(), "isrc")?;
        write_text(&mut body, &self.source_name, "sourceName")?;
        body.extend_from_slice(&self.source_extra);
        body.extend_from_slice(&self.position_ms.to_be_bytes());
        // Every field is bounded (65535 bytes each), so the size fits in 30 bits.
        let header = (VERSIONED << 30) | (body.len() as u32 & SIZE_MASK);
        let mut message = header.to_be_bytes().to_vec();
        message.extend_from_slice(&body);
        Ok(STANDARD.encode(message))
    }

    /// Reads an encoded track; bytes after the position are ignored, as lavaplayer does.
    pub fn decode(encoded: &str) -> Result<Self, DecodeError> {
        let message = STANDARD.decode(encoded.trim()).map_err(|_| DecodeError::Base64)?;
        let mut r = Reader { bytes: &message };
        let header = u32::from_be_bytes(r.array()?);
        let size = (header & SIZE_MASK) as usize;
        if r.bytes.len() < size {
            return Err(DecodeError::Size { declared: size, actual: r.bytes.len() });
        }
        let mut r = Reader { bytes: &r.bytes[..size] };
        let version = if header >> 30 & VERSIONED == 1 { r.byte()? } else { 1 };
        if !(1..=VERSION).contains(&version) {
            return Err(DecodeError::Version(version));
        }
        let title = r.text()?;
        let author = r.text()?;
        let length_ms = i64::from_be_bytes(r.array()?);
        let identifier = r.text()?;
        let is_stream = r.byte()? != 0;
        let uri = if version >= 2 { r.optional()? } else { None };
        let (artwork_url, isrc) = if version >= 3 { (r.optional()?, r.optional()?) } else { (None, None) };
        let source_name = r.text()?;
        // The position is the message's last eight bytes; what lies between is the source's.
        let extra_len = r.bytes.len().checked_sub(8).ok_or(DecodeError::Truncated)?;
        let source_extra = r.take(extra_len)?.to_vec();
        let position_ms = i64::from_be_bytes(r.array()?);
        Ok(Self {
            title,
            author,
            length_ms,
            identifier,
            is_stream,
            uri,
            artwork_url,
            isrc,
            source_name,
            source_extra,
            position_ms,
        })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn text(&mut self) -> Result<String, DecodeError> {
        let len = u16::from_be_bytes(self.array()?) as usize;
        decode_modified_utf8(self.take(len)?)
    }

    fn optional(&mut self) -> Result<Option<String>, DecodeError> {
        if self.byte()? == 0 { Ok(None) } else { self.text().map(Some) }
    }
}

fn write_text(out: &mut Vec<u8>, text: &str, field: &'static str) -> Result<(), EncodeError> {
    let bytes = encode_modified_utf8(text);
    let len = u16::try_from(bytes.len()).map_err(|_| EncodeError(field))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&bytes);
    Ok(())
}

fn write_optional(out: &mut Vec<u8>, text: Option<&str>, field: &'static str) -> Result<(), EncodeError> {
    match text {
        None => {
            out.push(0);
            Ok(())
        }
        Some(text) => {
            out.push(1);
            write_text(out, text, field)
        }
    }
}

/// Java's modified UTF-8: NUL as two bytes, and characters beyond the Basic Multilingual
/// Plane as their two UTF-16 surrogates, three bytes each (Java's `readUTF` rejects 4-byte
/// sequences).
fn encode_modified_utf8(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for unit in text.encode_utf16() {
        match unit {
            0x0001..=0x007f => out.push(unit as u8),
            0x0000 | 0x0080..=0x07ff => {
                out.push(0xc0 | (unit >> 6) as u8);
                out.push(0x80 | (unit & 0x3f) as u8);
            }
            _ => {
                out.push(0xe0 | (unit >> 12) as u8);
                out.push(0x80 | ((unit >> 6) & 0x3f) as u8);
                out.push(0x80 | (unit & 0x3f) as u8);
            }
        }
    }
    out
}

/// Reads modified UTF-8, and standard 4-byte sequences too (other writers emit them).
fn decode_modified_utf8(bytes: &[u8]) -> Result<String, DecodeError> {
    let mut units: Vec<u16> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let continuation = |i: usize| bytes.get(i).filter(|b| *b & 0xc0 == 0x80).map(|b| u32::from(b & 0x3f));
    while i < bytes.len() {
        let b = u32::from(bytes[i]);
        let (code, len) = match b {
            0x00..=0x7f => (b, 1),
            0xc0..=0xdf => (((b & 0x1f) << 6) | continuation(i + 1).ok_or(DecodeError::Text)?, 2),
            0xe0..=0xef => {
                let (c1, c2) = (continuation(i + 1), continuation(i + 2));
                (((b & 0x0f) << 12) | (c1.ok_or(DecodeError::Text)? << 6) | c2.ok_or(DecodeError::Text)?, 3)
            }
            0xf0..=0xf7 => {
                let c: Option<Vec<u32>> = (1..4).map(|k| continuation(i + k)).collect();
                let c = c.ok_or(DecodeError::Text)?;
                (((b & 0x07) << 18) | (c[0] << 12) | (c[1] << 6) | c[2], 4)
            }
            _ => return Err(DecodeError::Text),
        };
        match char::from_u32(code) {
            Some(ch) if code > 0xffff => units.extend_from_slice(ch.encode_utf16(&mut [0; 2])),
            // Surrogates arrive one at a time; pairs are checked when the units are joined.
            _ if code <= 0xffff => units.push(code as u16),
            _ => return Err(DecodeError::Text),
        }
        i += len;
    }
    String::from_utf16(&units).map_err(|_| DecodeError::Text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample in Lavalink's own documentation: a version 2 message.
    const DOCS_SAMPLE: &str = "QAAAjQIAJVJpY2sgQXN0bGV5IC0gTmV2ZXIgR29ubmEgR2l2ZSBZb3UgVXAADlJpY2tBc3RsZXlWRVZPAAAAAAADPCAAC2RRdzR3OVdnWGNRAAEAK2h0dHBzOi8vd3d3LnlvdXR1YmUuY29tL3dhdGNoP3Y9ZFF3NHc5V2dYY1EAB3lvdXR1YmUAAAAAAAAAAA==";
    /// Version 3 from the http source, with its container probe as the source's extra field.
    const HTTP_MP3: &str = "QAAAjQMAC0RlYXRoIG9mIE1lAApTQUlOVCBQSE5YAAAAAAAAdVgAKGh0dHBzOi8vd3d3Lm1ib3hkcml2ZS5jb20vc3RhcnRtdXNpYy5tcDMAAQAoaHR0cHM6Ly93d3cubWJveGRyaXZlLmNvbS9zdGFydG11c2ljLm1wMwAAAARodHRwAANtcDMAAAAAAAAAAA==";
    /// Version 3 with artwork, and a title ending in a character beyond the BMP written as
    /// two 3-byte surrogates.
    const SURROGATES: &str = "QAAA2gMAN0NvenkgYW5pbWFsIGNyb3NzaW5nIG11c2ljIHRoYXQgY3VyZSBteSBoZWFkYWNoZXPtoLztvL8AC1RlbmRvIEZhcm1zAAAAAAA/26gACzhUYkx1Qk9DbFNnAAEAK2h0dHBzOi8vd3d3LnlvdXR1YmUuY29tL3dhdGNoP3Y9OFRiTHVCT0NsU2cBADpodHRwczovL2kueXRpbWcuY29tL3ZpX3dlYnAvOFRiTHVCT0NsU2cvbWF4cmVzZGVmYXVsdC53ZWJwAAAHeW91dHViZQAAAAAAAAAA";

    #[test]
    fn the_documented_sample_decodes_field_by_field() {
        let t = EncodedTrack::decode(DOCS_SAMPLE).unwrap();
        assert_eq!(t.title, "Rick Astley - Never Gonna Give You Up");
        assert_eq!(t.author, "RickAstleyVEVO");
        assert_eq!(t.length_ms, 212_000);
        assert_eq!(t.identifier, "dQw4w9WgXcQ");
        assert!(!t.is_stream);
        assert_eq!(t.uri.as_deref(), Some("https://www.youtube.com/watch?v=dQw4w9WgXcQ"));
        assert_eq!((t.artwork_url, t.isrc), (None, None));
        assert_eq!(t.source_name, "youtube");
        assert!(t.source_extra.is_empty());
        assert_eq!(t.position_ms, 0);
    }

    #[test]
    fn version_3_messages_encode_back_to_the_same_bytes() {
        for sample in [HTTP_MP3, SURROGATES] {
            let t = EncodedTrack::decode(sample).unwrap();
            assert_eq!(t.encode().unwrap(), sample);
        }
        let http = EncodedTrack::decode(HTTP_MP3).unwrap();
        assert_eq!(http.source_name, "http");
        assert_eq!(http.source_extra, b"\x00\x03mp3");
        assert_eq!(http.length_ms, 30_040);
        let surrogates = EncodedTrack::decode(SURROGATES).unwrap();
        assert!(surrogates.title.ends_with('\u{1F33F}'), "{}", surrogates.title);
    }

    #[test]
    fn text_is_written_as_java_writes_it() {
        assert_eq!(encode_modified_utf8("a\0é"), b"a\xc0\x80\xc3\xa9");
        assert_eq!(encode_modified_utf8("\u{1F33F}"), b"\xed\xa0\xbc\xed\xbc\xbf");
        // Standard UTF-8 from other writers is read too.
        assert_eq!(decode_modified_utf8(b"\xf0\x9f\x8c\xbf").unwrap(), "\u{1F33F}");
        assert_eq!(decode_modified_utf8(b"\xed\xa0\xbc"), Err(DecodeError::Text), "a lone surrogate");
    }

    #[test]
    fn broken_messages_are_errors() {
        assert_eq!(EncodedTrack::decode("not base64!"), Err(DecodeError::Base64));
        assert_eq!(EncodedTrack::decode("QAAAjQIA"), Err(DecodeError::Size { declared: 141, actual: 2 }));
        let mut t = EncodedTrack::decode(DOCS_SAMPLE).unwrap();
        t.position_ms = 90_000;
        let mut bytes = STANDARD.decode(t.encode().unwrap()).unwrap();
        bytes[4] = 9;
        assert_eq!(EncodedTrack::decode(&STANDARD.encode(&bytes)), Err(DecodeError::Version(9)));
    }
}
