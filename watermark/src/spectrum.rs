//! Short-time spectra at the analysis rate, and the mapping from FFT bins to bands.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};

use crate::layout::{band_position, kernel, BANDS, BIN_HZ, FRAME_LEN, HOP};

/// Bins kept for band energies: up to 4 kHz, enough for bands stretched by 10%.
pub(crate) const KEPT_BINS: usize = 256;
/// One-sided spectrum length.
pub(crate) const SPECTRUM_LEN: usize = FRAME_LEN / 2 + 1;

/// Forward and inverse FFTs with the two windows the mark uses: Hann for measuring levels
/// (low leakage), and square-root Hann for analysis–modification–synthesis (its square is
/// Hann, which sums to a constant at a quarter-window hop, so an unmodified spectrum
/// resynthesizes exactly).
pub(crate) struct Stft {
    forward: Arc<dyn RealToComplex<f32>>,
    inverse: Arc<dyn ComplexToReal<f32>>,
    hann: Vec<f32>,
    sqrt_hann: Vec<f32>,
    frame: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    scratch_fwd: Vec<Complex<f32>>,
    scratch_inv: Vec<Complex<f32>>,
}

impl std::fmt::Debug for Stft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stft").finish_non_exhaustive()
    }
}

impl Stft {
    pub(crate) fn new() -> Self {
        let mut planner = RealFftPlanner::<f32>::new();
        let forward = planner.plan_fft_forward(FRAME_LEN);
        let inverse = planner.plan_fft_inverse(FRAME_LEN);
        // Periodic Hann, so shifted copies sum exactly to a constant.
        let hann: Vec<f32> = (0..FRAME_LEN)
            .map(|n| {
                let phase = 2.0 * std::f64::consts::PI * n as f64 / FRAME_LEN as f64;
                (0.5 - 0.5 * phase.cos()) as f32
            })
            .collect();
        let sqrt_hann = hann.iter().map(|w| w.sqrt()).collect();
        Self {
            scratch_fwd: forward.make_scratch_vec(),
            scratch_inv: inverse.make_scratch_vec(),
            forward,
            inverse,
            hann,
            sqrt_hann,
            frame: vec![0.0; FRAME_LEN],
            spectrum: vec![Complex::default(); SPECTRUM_LEN],
        }
    }

    /// Copies the frame centred on absolute sample `center` out of `signal` (whose first
    /// sample is absolute sample `base`), with zeros outside the signal, times `window`.
    fn load(frame: &mut [f32], window: &[f32], signal: &[f32], base: i64, center: i64) {
        let start = center - FRAME_LEN as i64 / 2;
        for (n, (out, w)) in frame.iter_mut().zip(window).enumerate() {
            let index = start + n as i64 - base;
            let sample = if index >= 0 && (index as usize) < signal.len() {
                signal[index as usize]
            } else {
                0.0
            };
            *out = sample * w;
        }
    }

    /// Power spectrum (|X|², first `out.len()` bins) of the Hann-windowed frame.
    pub(crate) fn power(&mut self, signal: &[f32], base: i64, center: i64, out: &mut [f32]) {
        Self::load(&mut self.frame, &self.hann, signal, base, center);
        self.forward
            .process_with_scratch(&mut self.frame, &mut self.spectrum, &mut self.scratch_fwd)
            .expect("sizes match the plan");
        for (o, x) in out.iter_mut().zip(&self.spectrum) {
            *o = x.norm_sqr();
        }
    }

    /// Complex spectrum of the square-root-Hann-windowed frame.
    pub(crate) fn analyze(
        &mut self,
        signal: &[f32],
        base: i64,
        center: i64,
        out: &mut [Complex<f32>],
    ) {
        Self::load(&mut self.frame, &self.sqrt_hann, signal, base, center);
        self.forward
            .process_with_scratch(&mut self.frame, out, &mut self.scratch_fwd)
            .expect("sizes match the plan");
    }

    /// Inverse of [`Stft::analyze`] for one frame: adds the square-root-Hann-windowed
    /// inverse transform of `spectrum` into `out` (whose first sample is absolute sample
    /// `base`) around absolute sample `center`, scaled so that overlap-adding every hop
    /// reconstructs the signal. `spectrum` is used as scratch.
    pub(crate) fn synthesize_add(
        &mut self,
        spectrum: &mut [Complex<f32>],
        out: &mut [f32],
        base: i64,
        center: i64,
    ) {
        // The DC and Nyquist bins of a real signal's spectrum are real.
        spectrum[0].im = 0.0;
        spectrum[SPECTRUM_LEN - 1].im = 0.0;
        self.inverse
            .process_with_scratch(spectrum, &mut self.frame, &mut self.scratch_inv)
            .expect("sizes match the plan");
        // realfft's inverse is unnormalized (×N); sqrt-Hann² = Hann sums to 2 at hop N/4.
        let overlap = (FRAME_LEN / HOP) as f32 / 2.0;
        let scale = 1.0 / (FRAME_LEN as f32 * overlap);
        let start = center - FRAME_LEN as i64 / 2 - base;
        for (n, (x, w)) in self.frame.iter().zip(&self.sqrt_hann).enumerate() {
            let index = start + n as i64;
            if index >= 0 && (index as usize) < out.len() {
                out[index as usize] += x * w * scale;
            }
        }
    }
}

/// The band kernels: bin `k` contributes to band `b` with weight
/// `kernel(position(k) − (b + ½))`, `position` being the bin's place on the band axis. Bands are stretched by `freq_scale` (a signal played 5% fast has its bands at 1.05×
/// their frequencies).
#[derive(Debug, Clone)]
pub(crate) struct BandKernels {
    pub(crate) bands: Vec<Vec<(usize, f32)>>,
}

impl BandKernels {
    pub(crate) fn new(freq_scale: f64) -> Self {
        let mut bands = vec![Vec::new(); BANDS];
        for k in 1..KEPT_BINS {
            let position = band_position(k as f64 * BIN_HZ / freq_scale);
            for (b, band) in bands.iter_mut().enumerate() {
                let weight = kernel(position - (b as f64 + 0.5));
                if weight > 0.0 {
                    band.push((k, weight as f32));
                }
            }
        }
        Self { bands }
    }

    /// Band energies of one frame's power spectrum.
    pub(crate) fn energies(&self, power: &[f32], out: &mut [f64]) {
        for (o, band) in out.iter_mut().zip(&self.bands) {
            *o = band.iter().map(|&(k, w)| (power[k] * w) as f64).sum();
        }
    }
}

/// The weight of each band at each bin for spreading per-band values over the spectrum:
/// the same kernels, read the other way (each bin blends its two nearest band centres).
pub(crate) fn bin_band_weights() -> Vec<[(usize, f32); 2]> {
    (0..SPECTRUM_LEN)
        .map(|k| {
            let position = band_position(k as f64 * BIN_HZ);
            let lower = (position - 0.5).floor() as i64;
            let pick = |b: i64| {
                if (0..BANDS as i64).contains(&b) {
                    (b as usize, kernel(position - (b as f64 + 0.5)) as f32)
                } else {
                    (0, 0.0)
                }
            };
            [pick(lower), pick(lower + 1)]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmodified_spectra_resynthesize_the_signal() {
        let mut stft = Stft::new();
        let signal: Vec<f32> = (0..4096)
            .map(|n| ((n as f32 * 0.37).sin() + (n as f32 * 0.011).cos()) * 0.3)
            .collect();
        let mut out = vec![0.0; signal.len()];
        let mut spectrum = vec![Complex::default(); SPECTRUM_LEN];
        let frames = signal.len() / HOP + 4;
        for j in 0..frames as i64 {
            stft.analyze(&signal, 0, j * HOP as i64, &mut spectrum);
            stft.synthesize_add(&mut spectrum, &mut out, 0, j * HOP as i64);
        }
        // Away from the start (where frames before 0 are missing) the match is exact.
        for n in FRAME_LEN..signal.len() - FRAME_LEN {
            assert!((out[n] - signal[n]).abs() < 1e-4, "sample {n}");
        }
    }

    #[test]
    fn kernels_form_a_partition_of_unity_inside_the_band_range() {
        let kernels = BandKernels::new(1.0);
        let mut total = vec![0f32; KEPT_BINS];
        for band in &kernels.bands {
            for &(k, w) in band {
                total[k] += w;
            }
        }
        // Between the first and last band centres every bin's weights sum to one.
        for (k, t) in total.iter().enumerate() {
            let position = band_position(k as f64 * BIN_HZ);
            if (0.5..BANDS as f64 - 0.5).contains(&position) {
                assert!((t - 1.0).abs() < 1e-5, "bin {k}: {t}");
            }
        }
        let spread = bin_band_weights();
        for (k, pair) in spread.iter().enumerate().take(KEPT_BINS) {
            let sum: f32 = pair.iter().map(|p| p.1).sum();
            assert!((sum - total[k]).abs() < 1e-5, "bin {k}");
        }
    }
}
