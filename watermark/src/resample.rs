//! Streaming sample-rate conversion between a supported rate and the 16 kHz analysis rate.
//!
//! Wraps rubato's synchronous FFT resampler, which wants fixed-size input chunks: input is
//! queued until a whole chunk is there, so the output does not depend on how the caller
//! slices the stream. The resampler's own delay is dropped from the front of the output, so
//! output sample `n` lines up with time `n / rate_out` of the input.

use rubato::{FftFixedInOut, Resampler};

/// Input samples per chunk (rounded up to an even multiple of the rates' ratio).
const CHUNK: usize = 2048;

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

pub(crate) struct StreamResampler {
    inner: Option<FftFixedInOut<f32>>,
    chunk_in: usize,
    pending: Vec<f32>,
    /// Output samples still to be dropped to cancel the resampler's delay.
    skip: usize,
    out_buf: Vec<Vec<f32>>,
    /// Input samples pushed so far, and output samples emitted so far.
    pushed: u64,
    emitted: u64,
    rate_in: u32,
    rate_out: u32,
}

impl std::fmt::Debug for StreamResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamResampler")
            .field("rate_in", &self.rate_in)
            .field("rate_out", &self.rate_out)
            .finish_non_exhaustive()
    }
}

impl StreamResampler {
    pub(crate) fn new(rate_in: u32, rate_out: u32) -> Self {
        let inner = (rate_in != rate_out).then(|| {
            // Whole multiples of the rates' ratio, an even number of them: with odd FFT
            // sizes rubato's reported delay is off by half a sample.
            let (a, b) = (rate_in as usize, rate_out as usize);
            let unit = a / gcd(a, b);
            let multiple = CHUNK.div_ceil(unit).next_multiple_of(2);
            FftFixedInOut::<f32>::new(a, b, multiple * unit, 1).expect("rates are positive")
        });
        let (chunk_in, skip, out_len) = match &inner {
            Some(r) => (
                r.input_frames_next(),
                r.output_delay(),
                r.output_frames_max(),
            ),
            None => (1, 0, 1),
        };
        Self {
            inner,
            chunk_in,
            pending: Vec::new(),
            skip,
            out_buf: vec![vec![0.0; out_len]],
            pushed: 0,
            emitted: 0,
            rate_in,
            rate_out,
        }
    }

    /// Queues `input` and appends every output sample that is now complete to `out`.
    pub(crate) fn push(&mut self, input: &[f32], out: &mut Vec<f32>) {
        self.pushed += input.len() as u64;
        let Some(inner) = &mut self.inner else {
            out.extend_from_slice(input);
            self.emitted += input.len() as u64;
            return;
        };
        self.pending.extend_from_slice(input);
        let mut start = 0;
        while self.pending.len() - start >= self.chunk_in {
            let chunk = [&self.pending[start..start + self.chunk_in]];
            let (_, produced) = inner
                .process_into_buffer(&chunk, &mut self.out_buf, None)
                .expect("buffers are sized by the resampler");
            start += self.chunk_in;
            let produced = &self.out_buf[0][..produced];
            let dropped = self.skip.min(produced.len());
            self.skip -= dropped;
            out.extend_from_slice(&produced[dropped..]);
            self.emitted += (produced.len() - dropped) as u64;
        }
        self.pending.drain(..start);
    }

    /// The number of output samples that corresponds to all input pushed so far.
    pub(crate) fn expected_output(&self) -> u64 {
        (self.pushed * self.rate_out as u64).div_ceil(self.rate_in as u64)
    }

    /// Flushes the stream: pads with silence until every output sample belonging to the input
    /// pushed so far has been appended to `out`, and no more.
    pub(crate) fn finish(&mut self, out: &mut Vec<f32>) {
        let wanted = self.expected_output();
        let zeros = vec![0.0; self.chunk_in];
        while self.emitted < wanted {
            self.push(&zeros, out);
        }
        let surplus = (self.emitted - wanted) as usize;
        out.truncate(out.len() - surplus);
        self.emitted = wanted;
    }
}

/// Converts a whole signal; the output has `ceil(len · rate_out / rate_in)` samples.
pub(crate) fn resample(input: &[f32], rate_in: u32, rate_out: u32) -> Vec<f32> {
    let mut resampler = StreamResampler::new(rate_in, rate_out);
    let mut out = Vec::with_capacity(input.len() * rate_out as usize / rate_in as usize + 16);
    resampler.push(input, &mut out);
    resampler.finish(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, hz: f64, len: usize) -> Vec<f32> {
        (0..len)
            .map(|n| (2.0 * std::f64::consts::PI * hz * n as f64 / rate as f64).sin() as f32 * 0.5)
            .collect()
    }

    #[test]
    fn lengths_and_alignment() {
        for rate in [22_050, 24_000, 44_100, 48_000] {
            let input = tone(rate, 1000.0, rate as usize * 2 + 77);
            let out = resample(&input, rate, 16_000);
            assert_eq!(
                out.len() as u64,
                (input.len() as u64 * 16_000).div_ceil(rate as u64)
            );
            // The output must be the same tone at the same phase: compare in the middle.
            let expected = tone(16_000, 1000.0, out.len());
            let err: f32 = out[4000..28000]
                .iter()
                .zip(&expected[4000..28000])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(err < 0.01, "rate {rate}: max error {err}");
            let back = resample(&out, 16_000, rate);
            assert!(back.len() >= input.len());
        }
    }

    #[test]
    fn chunking_does_not_change_output() {
        let input = tone(44_100, 440.0, 50_000);
        let whole = resample(&input, 44_100, 16_000);
        let mut resampler = StreamResampler::new(44_100, 16_000);
        let mut pieces = Vec::new();
        for chunk in input.chunks(777) {
            resampler.push(chunk, &mut pieces);
        }
        resampler.finish(&mut pieces);
        assert_eq!(whole, pieces);
    }
}
