//! Conversion of interleaved stereo at any rate to 48 kHz with a stateful FFT resampler, so
//! packet boundaries leave no clicks and the output length matches the input duration.

use rubato::{FftFixedIn, Resampler};

pub const OUTPUT_RATE: u32 = 48_000;
const CHUNK: usize = 1024;

#[derive(Debug, thiserror::Error)]
#[error("resampler: {0}")]
pub struct ResampleError(String);

pub struct To48k {
    inner: Option<FftFixedIn<f32>>,
    input_rate: u32,
    pending: [Vec<f32>; 2],
    to_trim: usize,
    frames_in: u64,
    frames_out: u64,
}

impl To48k {
    pub fn new(input_rate: u32) -> Result<Self, ResampleError> {
        let inner = if input_rate == OUTPUT_RATE {
            None
        } else {
            Some(
                FftFixedIn::<f32>::new(input_rate as usize, OUTPUT_RATE as usize, CHUNK, 2, 2)
                    .map_err(|e| ResampleError(e.to_string()))?,
            )
        };
        let to_trim = inner.as_ref().map_or(0, |r| r.output_delay());
        Ok(Self { inner, input_rate, pending: [Vec::new(), Vec::new()], to_trim, frames_in: 0, frames_out: 0 })
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
        let mut planar = inner.process_partial(Some(&rest), None).map_err(|e| ResampleError(e.to_string()))?;
        let mut rounds = 0;
        loop {
            self.emit(&planar, out, Some(expected));
            if self.frames_out >= expected || rounds > 8 {
                break;
            }
            let Some(inner) = self.inner.as_mut() else { break };
            planar = inner.process_partial::<Vec<f32>>(None, None).map_err(|e| ResampleError(e.to_string()))?;
            rounds += 1;
        }
        Ok(())
    }
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
    fn passes_48k_through() {
        let input = tone(48_000, 440.0, 0.1);
        let mut r = To48k::new(48_000).unwrap();
        let mut out = Vec::new();
        r.push(&input, &mut out).unwrap();
        r.finish(&mut out).unwrap();
        assert_eq!(out, input);
    }
}
