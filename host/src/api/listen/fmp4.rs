//! Fragmented MP4 (CMAF) with one Opus track, for HLS: an init segment that describes the
//! track, and media segments that carry Opus packets as they are (no re-encode). The time
//! scale is 48 kHz, so a 20 ms packet lasts 960 units and a segment's decode time is its first
//! tick × 960.

use mp4_atom::{
    Audio, Codec, Dinf, Dops, Dref, Encode, Ftyp, Hdlr, Mdhd, Mdia, Mfhd, Minf, Moof, Moov, Mvex, Mvhd, Opus, Smhd,
    Stbl, Stco, Stsc, Stsd, Stsz, Stts, Styp, Tfdt, Tfhd, Tkhd, Traf, Trak, Trex, Trun, TrunEntry, Url,
};

use crate::audio::opus_packets::frame_samples;

const TRACK: u32 = 1;
pub const TIMESCALE: u32 = 48_000;
/// Samples in one 20 ms packet at 48 kHz.
pub const TICK_SAMPLES: u32 = 960;
/// Every Opus packet decodes on its own: each sample is a sync sample.
const SYNC_SAMPLE: u32 = 0x0200_0000;

#[derive(Debug, thiserror::Error)]
#[error("cannot write MP4: {0}")]
pub struct Mp4Error(String);

fn wrap(e: mp4_atom::Error) -> Mp4Error {
    Mp4Error(e.to_string())
}

fn brands() -> Vec<mp4_atom::FourCC> {
    vec![b"iso6".into(), b"cmfc".into(), b"mp41".into()]
}

/// `ftyp` + `moov` for a 48 kHz stereo Opus track.
pub fn init_segment() -> Result<Vec<u8>, Mp4Error> {
    let opus = Opus {
        audio: Audio { data_reference_index: 1, channel_count: 2, sample_size: 16, sample_rate: 48_000.into() },
        dops: Dops { output_channel_count: 2, pre_skip: 0, input_sample_rate: TIMESCALE, output_gain: 0 },
        btrt: None,
    };
    let moov = Moov {
        mvhd: Mvhd { timescale: TIMESCALE, rate: 1.into(), volume: 1.into(), next_track_id: 2, ..Default::default() },
        mvex: Some(Mvex {
            trex: vec![Trex { track_id: TRACK, default_sample_description_index: 1, ..Default::default() }],
            ..Default::default()
        }),
        trak: vec![Trak {
            tkhd: Tkhd { track_id: TRACK, enabled: true, in_movie: true, volume: 1.into(), ..Default::default() },
            mdia: Mdia {
                mdhd: Mdhd { timescale: TIMESCALE, language: "und".into(), ..Default::default() },
                hdlr: Hdlr { handler: b"soun".into(), name: "SoundHandler".into() },
                minf: Minf {
                    smhd: Some(Smhd::default()),
                    dinf: Dinf { dref: Dref { urls: vec![Url { location: String::new() }] } },
                    stbl: Stbl {
                        stsd: Stsd { codecs: vec![Codec::from(opus)] },
                        stts: Stts::default(),
                        stsc: Stsc::default(),
                        stsz: Stsz::default(),
                        stco: Some(Stco::default()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            },
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut out = Vec::with_capacity(1024);
    Ftyp { major_brand: b"iso6".into(), minor_version: 0, compatible_brands: brands() }
        .encode(&mut out)
        .map_err(wrap)?;
    moov.encode(&mut out).map_err(wrap)?;
    Ok(out)
}

/// One media segment: `styp`, `moof`, `mdat` holding `packets` (each lasting what its own
/// header says), decoded from `start_samples` on. `sequence` numbers the fragment.
pub fn media_segment<P: AsRef<[u8]>>(sequence: u32, start_samples: u64, packets: &[P]) -> Result<Vec<u8>, Mp4Error> {
    let entries: Vec<TrunEntry> = packets
        .iter()
        .map(|p| TrunEntry {
            duration: Some(frame_samples(p.as_ref()).map_or(TICK_SAMPLES, |s| s as u32)),
            size: Some(p.as_ref().len() as u32),
            flags: None,
            cts: None,
        })
        .collect();
    let data_bytes: usize = packets.iter().map(|p| p.as_ref().len()).sum();
    let mut moof = Moof {
        mfhd: Mfhd { sequence_number: sequence },
        traf: vec![Traf {
            tfhd: Tfhd {
                track_id: TRACK,
                default_sample_flags: Some(SYNC_SAMPLE),
                default_base_is_moof: true,
                ..Default::default()
            },
            tfdt: Some(Tfdt { base_media_decode_time: start_samples }),
            trun: vec![Trun { data_offset: Some(0), entries }],
            ..Default::default()
        }],
    };
    // The data offset counts from the start of `moof` to the first byte of `mdat`'s data.
    let mut sized = Vec::new();
    moof.encode(&mut sized).map_err(wrap)?;
    moof.traf[0].trun[0].data_offset = Some(sized.len() as i32 + 8);
    let mut out = Vec::with_capacity(sized.len() + data_bytes + 64);
    Styp { major_brand: b"msdh".into(), minor_version: 0, compatible_brands: vec![b"msdh".into(), b"msix".into()] }
        .encode(&mut out)
        .map_err(wrap)?;
    moof.encode(&mut out).map_err(wrap)?;
    out.extend_from_slice(&((data_bytes + 8) as u32).to_be_bytes());
    out.extend_from_slice(b"mdat");
    for p in packets {
        out.extend_from_slice(p.as_ref());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mp4_atom::{Decode, Moof as M};

    #[test]
    fn a_segment_points_its_samples_at_its_mdat() {
        let packets = [vec![0xf8, 0xff, 0xfe], vec![0xf8, 1, 2, 3]];
        let segment = media_segment(7, 960 * 50, &packets).unwrap();
        let mut buf = std::io::Cursor::new(&segment[..]);
        let _styp = Styp::decode(&mut buf).unwrap();
        let moof_at = buf.position() as usize;
        let moof = M::decode(&mut buf).unwrap();
        assert_eq!(moof.mfhd.sequence_number, 7);
        let traf = &moof.traf[0];
        assert_eq!(traf.tfdt.as_ref().unwrap().base_media_decode_time, 48_000);
        let offset = moof_at + traf.trun[0].data_offset.unwrap() as usize;
        assert_eq!(&segment[offset..offset + 3], &[0xf8, 0xff, 0xfe]);
        assert_eq!(&segment[offset + 3..], &[0xf8, 1, 2, 3]);
        assert_eq!(traf.trun[0].entries.iter().map(|e| e.duration.unwrap()).sum::<u32>(), 1920);
    }

    #[test]
    fn the_init_segment_describes_stereo_opus() {
        let init = init_segment().unwrap();
        let mut buf = std::io::Cursor::new(&init[..]);
        Ftyp::decode(&mut buf).unwrap();
        let moov = Moov::decode(&mut buf).unwrap();
        match &moov.trak[0].mdia.minf.stbl.stsd.codecs[0] {
            Codec::Opus(opus) => assert_eq!(opus.dops.output_channel_count, 2),
            other => panic!("not Opus: {other:?}"),
        }
    }
}
