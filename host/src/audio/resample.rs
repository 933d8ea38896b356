//! Conversion of interleaved stereo at any rate to 48 kHz with a stateful resampler, so
//! packet boundaries leave no clicks and the output length matches the input duration.
//!
//! Rates in a small ratio to 48 kHz (44.1, 22.05, 96 kHz…) go through a synchronous FFT
//! resampler, exact and cheap. Its transform sizes follow `rate / gcd(rate, 48000)`, so an
//! odd rate (a prime, say) would need transforms of hundreds of thousands of points: those
//! go through a windowed-sinc interpolator instead, whose tables do not depend on the rate.
//! Either way a resampler's memory is bounded by construction (see [`MAX_FFT_POINTS`]).

use rubato::{
    FftFixedIn, SincFixedIn, SincInterpolationParameters, SincInterpolationType, VecResampler, WindowFunction,
};

pub const OUTPUT_RATE: u32 = 48_000;
/// Input frames per resampler call.
const CHUNK: usize = 1024;
/// The largest FFT (input or output side) a rate may use; past it the sinc interpolator
/// takes over. 8192 points keep every common rate on the FFT path (11.025 kHz uses 2560).
pub const MAX_FFT_POINTS: usize = 8192;

#[derive(Debug, thiserror::Error)]
#[error("resampler: {0}")]
pub struct ResampleError(String);

pub struct To48k {
    inner: Option<Box<dyn VecResampler<f32>>>,
    input_rate: u32,
    pending: [Vec<f32>; 2],
    to_trim: usize,
    frames_in: u64,
    frames_out: u64,
}

impl To48k {
    pub fn new(input_rate: u32) -> Result<Self, ResampleError> {
        let inner = if input_rate == OUTPUT_RATE { None } else { Some(kernel(input_rate)?) };
        let to_trim = inner.as_ref().map_or(0, |r| r.output_delay());
        Ok(Self { inner, input_rate, pending: [Vec::new(), Vec::new()], to_trim, frames_in: 0, frames_out: 0 })
    }

    pub fn input_rate(&self) -> u32 {
        self.input_rate
    }

    fn expected_out(&self) -> u64 {
        (self.frames_in * OUTPUT_RATE as u64).div_ceil(self.input_rate as u64)
    }

    fn emit(&mut self, planar: &[Vec<f32>], out: &mut Vec<f32>, limit: Option<u64>) {
        let [left, right] = planar else { return };
        for (l, r) in left.iter().zip(right) {
            if self.to_trim > 0 {
                self.to_trim -= 1;
                continue;
            }
            if limit.is_some_and(|l| self.frames_out >= l) {
                return;
            }
            out.push(*l);
            out.push(*r);
            self.frames_out += 1;
        }
    }

    /// Appends the 48 kHz version of `stereo` (interleaved) to `out`.
    pub fn push(&mut self, stereo: &[f32], out: &mut Vec<f32>) -> Result<(), ResampleError> {
        self.frames_in += (stereo.len() / 2) as u64;
        if self.inner.is_none() {
            out.extend_from_slice(stereo);
            return Ok(());
        }
        for pair in stereo.chunks_exact(2) {
            self.pending[0].push(pair[0]);
            self.pending[1].push(pair[1]);
        }
        while self.pending[0].len() >= CHUNK {
            let chunk: Vec<Vec<f32>> = self.pending.iter_mut().map(|p| p.drain(..CHUNK).collect()).collect();
            let Some(inner) = self.inner.as_mut() else { break };
            let planar = inner.process(&chunk, None).map_err(|e| ResampleError(e.to_string()))?;
            self.emit(&planar, out, None);
        }
        Ok(())
    }

    /// Flushes what is still inside the resampler, ending exactly at the input's duration.
    pub fn finish(&mut self, out: &mut Vec<f32>) -> Result<(), ResampleError> {
        let expected = self.expected_out();
        let Some(inner) = self.inner.as_mut() else { return Ok(()) };
        let rest: Vec<Vec<f32>> = self.pending.iter_mut().map(std::mem::take).collect();
        // rubato refuses an empty partial chunk (it clears the padding it made for it): with
        // nothing pending (AAC's 1024-frame packets leave nothing), flush with no input.
        let rest = Some(&rest[..]).filter(|r| !r[0].is_empty());
        let mut planar = inner.process_partial(rest, None).map_err(|e| ResampleError(e.to_string()))?;
        let mut rounds = 0;
        loop {
            self.emit(&planar, out, Some(expected));
            if self.frames_out >= expected || rounds > 8 {
                break;
            }
            let Some(inner) = self.inner.as_mut() else { break };
            planar = inner.process_partial(None, None).map_err(|e| ResampleError(e.to_string()))?;
            rounds += 1;
        }
        Ok(())
    }
}

/// The FFT sizes rubato's synchronous resampler would use for `rate` (its own arithmetic:
/// whole multiples of the reduced ratio covering half a chunk).
fn fft_points(rate: u32) -> (usize, usize) {
    let gcd = gcd(rate as usize, OUTPUT_RATE as usize);
    let (num, den) = (rate as usize / gcd, OUTPUT_RATE as usize / gcd);
    let chunks = (CHUNK / 2).div_ceil(num).max(1);
    (chunks * num, chunks * den)
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The resampler for `rate`: FFT when its transforms are small, else sinc interpolation.
fn kernel(rate: u32) -> Result<Box<dyn VecResampler<f32>>, ResampleError> {
    let error = |e: rubato::ResamplerConstructionError| ResampleError(e.to_string());
    let (points_in, points_out) = fft_points(rate);
    if points_in.max(points_out) <= MAX_FFT_POINTS {
        return Ok(Box::new(FftFixedIn::<f32>::new(rate as usize, OUTPUT_RATE as usize, CHUNK, 2, 2).map_err(error)?));
    }
    let parameters = SincInterpolationParameters {
        sinc_len: 128,
        f_cutoff: 0.95,
        oversampling_factor: 256,
        interpolation: SincInterpolationType::Linear,
        window: WindowFunction::BlackmanHarris2,
    };
    let ratio = f64::from(OUTPUT_RATE) / f64::from(rate);
    Ok(Box::new(SincFixedIn::<f32>::new(ratio, 1.0, parameters, CHUNK, 2).map_err(error)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, freq: f64, seconds: f64) -> Vec<f32> {
        (0..(rate as f64 * seconds) as usize)
            .flat_map(|i| {
                let v = (0.5 * (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin()) as f32;
                [v, v]
            })
            .collect()
    }

    #[test]
    fn keeps_duration_and_continuity_across_chunks() {
        let input = tone(44_100, 440.0, 1.0);
        let mut r = To48k::new(44_100).unwrap();
        let mut out = Vec::new();
        // Feed in uneven pieces, as a decoder would.
        for piece in input.chunks(2 * 577) {
            r.push(piece, &mut out).unwrap();
        }
        r.finish(&mut out).unwrap();
        assert_eq!(out.len() / 2, 48_000);
        // A clean 440 Hz sine never jumps by more than its largest per-sample step.
        let max_step = 0.5 * 2.0 * std::f64::consts::PI * 440.0 / 48_000.0;
        let left: Vec<f32> = out.iter().step_by(2).copied().collect();
        let worst = left[2000..46_000].windows(2).map(|w| (w[1] - w[0]).abs() as f64).fold(0.0, f64::max);
        assert!(worst < max_step * 1.05, "discontinuity {worst} > {max_step}");
    }

    #[test]
    fn odd_rates_are_interpolated_and_keep_their_duration_and_pitch() {
        // 44 101 Hz is prime: an FFT resampler would need 44 101-point transforms.
        assert!(fft_points(44_101).0 > MAX_FFT_POINTS);
        assert!(fft_points(44_100).0 <= MAX_FFT_POINTS && fft_points(11_025).1 <= MAX_FFT_POINTS);
        for rate in [44_101, 383_999, 8_001] {
            let input = tone(rate, 440.0, 1.0);
            let mut r = To48k::new(rate).unwrap();
            let mut out = Vec::new();
            for piece in input.chunks(2 * 1000) {
                r.push(piece, &mut out).unwrap();
            }
            r.finish(&mut out).unwrap();
            assert_eq!(out.len() / 2, 48_000, "{rate} Hz");
            // A 440 Hz tone crosses zero upwards 440 times a second.
            let left: Vec<f32> = out.iter().step_by(2).copied().collect();
            let rising = left[2400..45_600].windows(2).filter(|w| w[0] < 0.0 && w[1] >= 0.0).count();
            assert!((395..=397).contains(&rising), "{rate} Hz: {rising} rising zero crossings in 0.9 s");
        }
    }

    #[test]
    fn a_track_whose_length_is_whole_chunks_ends_cleanly() {
        // AAC packets are 1024 frames: nothing is left pending when the track ends.
        let input = tone(44_100, 440.0, 1024.0 * 10.0 / 44_100.0);
        let mut r = To48k::new(44_100).unwrap();
        let mut out = Vec::new();
        r.push(&input, &mut out).unwrap();
        r.finish(&mut out).unwrap();
        assert_eq!(out.len() / 2, (10 * 1024 * 48_000usize).div_ceil(44_100));
    }

    #[test]
    fn passes_48k_through() {
        let input = tone(48_000, 440.0, 0.1);
        let mut r = To48k::new(48_000).unwrap();
        let mut out = Vec::new();
        r.push(&input, &mut out).unwrap();
        r.finish(&mut out).unwrap();
        assert_eq!(out, input);
    }
}
