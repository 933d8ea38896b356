//! What a mount sends each tick: the current source's packet recorded (silence without one),
//! waiting sources kept warm, and handovers with a crossfade.

use std::sync::atomic::Ordering;

use super::{CROSSFADE_FRAMES, Fade, Frame, Mount, Sources};
use crate::audio::encode::{FRAME_LEN, OpusEncoder};
use crate::live::SourceStop;
use crate::voice::{OPUS_SILENCE, TickOutcome, Tickable};

impl Tickable for Mount {
    fn on_tick(&self, tick: u64, retry: bool) -> TickOutcome {
        let Some(mut guard) = self.sources.try_lock() else {
            if !retry {
                return TickOutcome::Retry;
            }
            self.recording.record(tick, &OPUS_SILENCE);
            return TickOutcome::Done;
        };
        let sources = &mut *guard;
        if sources.until_tick.is_some_and(|until| tick >= until) {
            Self::hand_over(sources);
            self.slot_over.notify_one();
        }
        if sources.current.is_some() {
            self.last_on_air.store(tick, Ordering::Release);
        }
        let (current, next) = (sources.current, sources.next);
        // With nobody current (and no handover under way) the fallback is what is heard.
        let current = current.or(sources.fallback.filter(|_| sources.fade.is_none()));
        let fading = sources.fade.as_ref().map(|f| f.from);
        let (mut heard, mut fading_out) = (None, None);
        let mut ended = Vec::new();
        for (at, air) in sources.connected.iter_mut().enumerate() {
            match Self::take_frame(air) {
                Frame::Packet(packet) if Some(air.session) == current => heard = Some((at, packet)),
                Frame::Packet(packet) if Some(air.session) == fading => fading_out = Some((at, packet)),
                Frame::Packet(packet) => {
                    // A waiting source is decoded and dropped, so it is current when its turn
                    // comes; the next one keeps its recent packets for the crossfade.
                    if Some(air.session) == next {
                        air.decoder.pass(&packet);
                    }
                    air.frames.ring.recycle(packet);
                }
                Frame::Nothing => {
                    if Some(air.session) == current && air.started {
                        self.underruns.inc();
                    }
                }
                Frame::Ended(Ok(())) => ended.push((air.session, SourceStop::Ended)),
                Frame::Ended(Err(e)) => ended.push((air.session, SourceStop::Failed(e.to_string()))),
            }
        }
        let recorded = match sources.fade.is_some() {
            true => self.record_crossfade(sources, tick, heard.as_ref(), fading_out.as_ref()),
            false => heard.as_ref().is_some_and(|(at, packet)| {
                self.recording.record(tick, packet);
                if fading.is_none() && next.is_some() {
                    sources.connected[*at].decoder.pass(packet);
                }
                true
            }),
        };
        for (at, packet) in heard.into_iter().chain(fading_out) {
            if let Some(air) = sources.connected.get(at) {
                air.frames.ring.recycle(packet);
            }
        }
        for (session, reason) in ended {
            if let SourceStop::Failed(e) = &reason {
                *self.last_failure.lock() = Some(e.clone());
            }
            // The source's connection sees its reader gone and closes.
            sources.remove(session, reason);
        }
        drop(guard);
        if !recorded {
            self.recording.record(tick, &OPUS_SILENCE);
        }
        TickOutcome::Done
    }
}

impl Mount {
    /// The current source's time is up: the next one takes over with a crossfade when it is
    /// ready; otherwise silence.
    fn hand_over(sources: &mut Sources) {
        let next = sources.next.take().filter(|n| sources.is_started(*n));
        sources.until_tick = None;
        match (sources.current, next) {
            (Some(from), Some(next)) if from != next => {
                sources.fade = Some(Fade { from, done: 0, encoder: None, then_stop: None });
                sources.current = Some(next);
            }
            _ => sources.current = next,
        }
    }

    /// Records one crossfaded frame: the outgoing source at falling gain under the incoming
    /// one at rising gain (silence for either without a packet this tick). The last frame
    /// of the fade lets the outgoing source go.
    fn record_crossfade(
        &self,
        sources: &mut Sources,
        tick: u64,
        heard: Option<&(usize, Vec<u8>)>,
        fading_out: Option<&(usize, Vec<u8>)>,
    ) -> bool {
        let Some(fade) = sources.fade.as_mut() else { return false };
        fade.done += 1;
        let rise = fade.done as f32 / (CROSSFADE_FRAMES + 1) as f32;
        let mut mix = vec![0.0f32; FRAME_LEN];
        for (side, gain) in [(heard, rise), (fading_out, 1.0 - rise)] {
            let Some((at, packet)) = side else { continue };
            let Ok(pcm) = sources.connected[*at].decoder.decode(packet) else { continue };
            for (m, s) in mix.iter_mut().zip(pcm) {
                *m += s * gain;
            }
        }
        let encoder = match fade.encoder.as_mut() {
            Some(encoder) => Some(encoder),
            None => OpusEncoder::with(&self.encoder).ok().map(|e| fade.encoder.insert(e)),
        };
        let recorded = match encoder.map(|e| e.encode_in_place(&mix)) {
            Some(Ok(packet)) => {
                self.recording.record(tick, packet);
                true
            }
            _ => false,
        };
        if fade.done >= CROSSFADE_FRAMES {
            let (from, then_stop) = (fade.from, fade.then_stop.take());
            sources.fade = None;
            if let Some(reason) = then_stop {
                sources.remove(from, reason);
            }
        }
        recorded
    }
}
