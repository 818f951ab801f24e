//! The streaming embedder.
//!
//! The host is resampled to 16 kHz (only to *look* at it) and analysed in 64 ms frames. Each
//! period, the embedder decides for every unit how far to move its log ratio (see
//! [`Embedder::plan_period`]), turns that into a smooth gain field over time and frequency
//! (each cell's gain interpolated between neighbouring slot and band centres), and applies
//! it to the host's frames. The resynthesized difference from the host is the mark; it is
//! resampled to the host's rate and added to the untouched original. Only the mark passes
//! through the resamplers, and it lies within about 270–3500 Hz, far from either rate's
//! Nyquist frequency, so the host's own content is never altered.
//!
//! Because the mark is a slowly varying gain (changing over half-second slots and
//! 50–150 Hz bands), it is shaped by the host's own spectrum in every frame and band, and
//! in a pause it is the pause's room tone scaled by a fraction of a decibel.
//!
//! Latency: a period's plan depends on all of its cells, so output lags input by about
//! 9.5 s (a period, a second and a half of look-ahead for the level rules, and the
//! resamplers' and window's delays). [`Embedder::finish`] flushes the rest; the output is exactly as
//! long as the input.

use std::collections::VecDeque;

use realfft::num_complex::Complex;

use crate::conv_code;
use crate::features::{time_weight, units};
use crate::layout::{
    Layout, ANALYSIS_RATE, BANDS, FRAME_LEN, HOP, PAIRS, QIM_STEP, SLOTS_PER_PERIOD, SLOT_HOPS,
    UNITS_PER_PERIOD,
};
use crate::resample::StreamResampler;
use crate::spectrum::{bin_band_weights, BandKernels, Stft, KEPT_BINS, SPECTRUM_LEN};
use crate::{check_rate, subkey, Payload, WatermarkError};

/// The mark's energy is held this far below the host's, period by period.
pub(crate) const TARGET_SNR_DB: f64 = 35.1;
/// Slots quieter than this in-band level (dBFS) are silence and never marked.
const SILENCE_DBFS: f64 = -60.0;
/// The most a cell's level is ever changed, in nepers of energy (±2 dB): a quiet band
/// beside a loud one could otherwise be pushed far to move its measured level, which
/// includes some of the loud neighbour's energy.
const MAX_STEP: f64 = 0.46;
/// Passes of the solver that makes the measured unit values meet their targets.
const SOLVER_PASSES: usize = 8;
/// Rounds of shrinking a period's steps that is still over its energy budget; each round
/// scales them to fit, so more than a few means they cannot fit (see `plan_period`).
const LAST_RESORT_ROUNDS: usize = 8;

/// The frame whose centre is slot `k`'s centre.
fn slot_center(k: i64) -> i64 {
    k * SLOT_HOPS as i64 + SLOT_HOPS as i64 / 2
}
/// Extra slots of host levels either side of a period, for the level rules.
const CONTEXT_SLOTS: usize = 2;

/// Slot energy (sum over bands of kernel-weighted Hann power) of a signal whose in-band
/// power is `dbfs` relative to full scale.
pub(crate) fn slot_energy_at_dbfs(dbfs: f64) -> f64 {
    // One-sided Σ|X|² of a Hann frame is (N/2)·Σw²·P = 3N²/16·P; a slot's kernel weights
    // sum to SLOT_HOPS frames.
    let per_frame = 3.0 * (FRAME_LEN * FRAME_LEN) as f64 / 16.0;
    SLOT_HOPS as f64 * per_frame * 10f64.powf(dbfs / 10.0)
}

/// Adds the watermark to a stream of mono samples, chunk by chunk.
///
/// Feed any number of samples at a time with [`Embedder::process`]; it returns the marked
/// samples that are ready, and [`Embedder::finish`] returns the rest. The concatenated
/// output has exactly as many samples as the input, and does not depend on how the input
/// was split.
///
/// The output lags the input by about 9.5 s: the mark of each 7.68 s period is planned from
/// all of that period's audio plus 1.3 s beyond it. Memory stays bounded (about 10 s of
/// audio), whatever the length of the stream.
pub struct Embedder {
    layout: Layout,
    /// The value (±1) each unit of a period carries.
    values: Vec<i8>,
    stft: Stft,
    kernels: BandKernels,
    spread: Vec<[(usize, f32); 2]>,
    down: StreamResampler,
    up: StreamResampler,
    /// Host at 16 kHz; `host[0]` is absolute sample `host_base`.
    host: Vec<f32>,
    host_base: i64,
    /// Mark at 16 kHz being overlap-added; `mark[0]` is absolute sample `mark_base`.
    mark: Vec<f32>,
    mark_base: i64,
    next_period: usize,
    /// Log-energy steps of the previous period's last slot, which the next period's first
    /// frames still blend with.
    previous_steps: [f64; BANDS],
    /// Original samples waiting for their share of the mark, and mark samples waiting for
    /// their original.
    original: VecDeque<f32>,
    mark_native: VecDeque<f32>,
    silence_floor: f64,
}

impl std::fmt::Debug for Embedder {
    /// Shows the stream position only: the pattern derives from the secret key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("next_period", &self.next_period)
            .finish_non_exhaustive()
    }
}

/// One period's frames: host levels for the plan, and the spectra the gains apply to.
struct PeriodFrames {
    /// First frame held (absolute index) and the per-frame Hann band energies / powers.
    first: i64,
    power: Vec<f32>,
    /// Square-root-Hann spectra of the frames the period synthesizes.
    spectra: Vec<Complex<f32>>,
    spectra_first: i64,
}

impl Embedder {
    /// An embedder for `payload` under the deployment's secret `key`, for audio at
    /// `sample_rate` (one of [`crate::SUPPORTED_SAMPLE_RATES`]).
    pub fn new(key: &[u8], sample_rate: u32, payload: Payload) -> Result<Self, WatermarkError> {
        check_rate(sample_rate)?;
        if key.is_empty() {
            return Err(WatermarkError::EmptyKey);
        }
        let layout = Layout::new(&subkey(key, "pattern"));
        let values = layout.unit_values(&conv_code::encode(payload.0));
        Ok(Self {
            layout,
            values,
            stft: Stft::new(),
            kernels: BandKernels::new(1.0),
            spread: bin_band_weights(),
            down: StreamResampler::new(sample_rate, ANALYSIS_RATE),
            up: StreamResampler::new(ANALYSIS_RATE, sample_rate),
            host: Vec::new(),
            host_base: 0,
            mark: Vec::new(),
            mark_base: 0,
            next_period: 0,
            previous_steps: [0.0; BANDS],
            original: VecDeque::new(),
            mark_native: VecDeque::new(),
            silence_floor: slot_energy_at_dbfs(SILENCE_DBFS),
        })
    }

    /// Feeds `input` and returns the marked samples that are complete so far.
    pub fn process(&mut self, input: &[f32]) -> Vec<f32> {
        self.original.extend(input);
        let mut resampled = Vec::new();
        self.down.push(input, &mut resampled);
        self.host.extend_from_slice(&resampled);
        while self.host_end() >= Self::needed_host_end(self.next_period) {
            self.embed_period();
        }
        self.take_output()
    }

    /// Flushes the stream and returns the remaining marked samples.
    pub fn finish(mut self) -> Vec<f32> {
        let mut resampled = Vec::new();
        self.down.finish(&mut resampled);
        self.host.extend_from_slice(&resampled);
        let host_end = self.host_end();
        // Every period whose frames reach the signal gets its mark; beyond the end the host
        // is silence.
        let first_sample =
            |p: usize| Self::synthesis_range(p).0 * HOP as i64 - (FRAME_LEN / 2) as i64;
        while first_sample(self.next_period) < host_end {
            let missing = (Self::needed_host_end(self.next_period) - self.host_end()).max(0);
            self.host.extend(std::iter::repeat_n(0.0, missing as usize));
            self.embed_period();
        }
        let final_len = (host_end - self.mark_base).max(0) as usize;
        if self.mark.len() < final_len {
            self.mark.resize(final_len, 0.0);
        }
        let mut out = Vec::new();
        self.up.push(&self.mark[..final_len], &mut out);
        self.mark.clear();
        self.up.finish(&mut out);
        self.mark_native.extend(out);
        let mut output = self.take_output();
        // The resampled mark can run a sample or so past the input; the original decides.
        output.extend(self.original.drain(..));
        output
    }

    fn host_end(&self) -> i64 {
        self.host_base + self.host.len() as i64
    }

    /// Frames `[start, end)` whose synthesis period `p` completes: from the previous
    /// period's last slot centre to this period's last slot centre.
    fn synthesis_range(p: usize) -> (i64, i64) {
        let first_slot = (p * SLOTS_PER_PERIOD) as i64;
        (
            slot_center(first_slot - 1).max(0),
            slot_center(first_slot + SLOTS_PER_PERIOD as i64 - 1),
        )
    }

    /// Frames `[start, end)` whose host levels period `p` looks at: its cells' kernels plus
    /// the context slots either side.
    fn level_range(p: usize) -> (i64, i64) {
        let first_slot = (p * SLOTS_PER_PERIOD) as i64;
        let margin = ((CONTEXT_SLOTS + 1) * SLOT_HOPS) as i64;
        (
            slot_center(first_slot) - margin,
            slot_center(first_slot + SLOTS_PER_PERIOD as i64 - 1) + margin,
        )
    }

    /// The host must reach this absolute sample before period `p` can be planned.
    fn needed_host_end(p: usize) -> i64 {
        Self::level_range(p).1 * HOP as i64 + (FRAME_LEN / 2) as i64
    }

    fn take_output(&mut self) -> Vec<f32> {
        let n = self.original.len().min(self.mark_native.len());
        self.original
            .drain(..n)
            .zip(self.mark_native.drain(..n))
            .map(|(x, m)| x + m)
            .collect()
    }

    fn analyse(&mut self, p: usize) -> PeriodFrames {
        let (first, end) = Self::level_range(p);
        let mut power = vec![0f32; (end - first) as usize * KEPT_BINS];
        for (i, row) in power.chunks_mut(KEPT_BINS).enumerate() {
            let center = (first + i as i64) * HOP as i64;
            self.stft.power(&self.host, self.host_base, center, row);
        }
        let (s_first, s_end) = Self::synthesis_range(p);
        let mut spectra = vec![Complex::default(); (s_end - s_first) as usize * SPECTRUM_LEN];
        for (i, spectrum) in spectra.chunks_mut(SPECTRUM_LEN).enumerate() {
            let center = (s_first + i as i64) * HOP as i64;
            self.stft
                .analyze(&self.host, self.host_base, center, spectrum);
        }
        PeriodFrames {
            first,
            power,
            spectra,
            spectra_first: s_first,
        }
    }

    fn embed_period(&mut self) {
        let p = self.next_period;
        self.next_period += 1;
        let frames = self.analyse(p);
        let steps = self.plan_period(p, &frames);

        // Resynthesize (gain − 1) × spectrum: the mark alone.
        let (s_first, s_end) = Self::synthesis_range(p);
        let start = s_first * HOP as i64 - (FRAME_LEN / 2) as i64;
        let len = (s_end - s_first) as usize * HOP + FRAME_LEN;
        let mut period_mark = vec![0f32; len];
        let mut log_gain = vec![0f64; SPECTRUM_LEN];
        let mut spectra = frames.spectra;
        for (i, spectrum) in spectra.chunks_mut(SPECTRUM_LEN).enumerate() {
            let frame = s_first + i as i64;
            if !self.frame_log_gain(p, &steps, frame, &mut log_gain) {
                continue;
            }
            for (x, g) in spectrum.iter_mut().zip(&log_gain) {
                *x *= ((0.5 * g).exp() - 1.0) as f32;
            }
            self.stft
                .synthesize_add(spectrum, &mut period_mark, start, frame * HOP as i64);
        }

        // Overlap-add into the running mark, then release what no later period can touch.
        let offset = (start - self.mark_base).max(0) as usize;
        let skip = (self.mark_base - start).max(0) as usize;
        if self.mark.len() < offset + len - skip {
            self.mark.resize(offset + len - skip, 0.0);
        }
        for (m, x) in self.mark[offset..].iter_mut().zip(&period_mark[skip..]) {
            *m += x;
        }
        let final_end = (s_end * HOP as i64 - (FRAME_LEN / 2) as i64).min(self.host_end());
        let ready = ((final_end - self.mark_base).max(0) as usize).min(self.mark.len());
        let mut out = Vec::new();
        self.up.push(&self.mark[..ready], &mut out);
        self.mark.drain(..ready);
        self.mark_base += ready as i64;
        self.mark_native.extend(out);

        let last = SLOTS_PER_PERIOD - 1;
        self.previous_steps
            .copy_from_slice(&steps[last * BANDS..(last + 1) * BANDS]);
        // Keep the host from the next period's first frame on.
        let keep_from = Self::synthesis_range(p + 1)
            .0
            .min(Self::level_range(p + 1).0)
            * HOP as i64
            - (FRAME_LEN / 2) as i64;
        let drop = (keep_from - self.host_base).clamp(0, self.host.len() as i64) as usize;
        self.host.drain(..drop);
        self.host_base += drop as i64;
    }

    /// Log-energy gain (nepers of power) per bin for absolute frame `frame`, blending the two
    /// nearest slots' steps in time and the two nearest bands' in frequency. `steps` holds
    /// period `p`'s slots; the slot before comes from the previous period and the slot
    /// after is taken as unmarked. Returns false when the gain is zero everywhere.
    fn frame_log_gain(&self, p: usize, steps: &[f64], frame: i64, out: &mut [f64]) -> bool {
        let first_slot = (p * SLOTS_PER_PERIOD) as i64;
        let position = (frame as f64 - SLOT_HOPS as f64 / 2.0) / SLOT_HOPS as f64;
        let lower = position.floor();
        let frac = position - lower;
        let slot_steps = |k: i64| -> Option<&[f64]> {
            let local = k - first_slot;
            if local == -1 {
                Some(&self.previous_steps[..])
            } else if (0..SLOTS_PER_PERIOD as i64).contains(&local) {
                Some(&steps[local as usize * BANDS..(local as usize + 1) * BANDS])
            } else {
                None
            }
        };
        let mut band_steps = [0f64; BANDS];
        let mut any = false;
        for (k, w) in [(lower as i64, 1.0 - frac), (lower as i64 + 1, frac)] {
            if let Some(row) = slot_steps(k) {
                for (b, s) in band_steps.iter_mut().zip(row) {
                    *b += w * s;
                    any |= *s != 0.0 && w > 0.0;
                }
            }
        }
        if !any {
            return false;
        }
        for (o, pair) in out.iter_mut().zip(&self.spread) {
            *o = pair.iter().map(|&(b, w)| w as f64 * band_steps[b]).sum();
        }
        true
    }

    /// Decides each cell's log-energy step for period `p` (`SLOTS_PER_PERIOD × BANDS`
    /// values, nepers of power).
    ///
    /// Every reliable unit has a target: the nearest lattice point for its value. Moving
    /// towards it costs energy in proportion to the move squared and to the quieter cell's
    /// energy (the step goes mostly to the quieter cell of the pair, where it is cheapest).
    /// [`allocate`] decides how far each unit moves within the period's energy budget; a unit
    /// left where the host put it costs nothing and reads as noise. The cell steps that make
    /// the moves are then found by a few passes of measuring the cells with the gain field
    /// applied and correcting, since neighbouring cells' kernels overlap. The mark's energy
    /// is measured at the end, and the budget shrunk and the plan redone while it is over.
    fn plan_period(&self, p: usize, frames: &PeriodFrames) -> Vec<f64> {
        let parity = p % 2;
        let first_slot = (p * SLOTS_PER_PERIOD) as i64;
        let context = CONTEXT_SLOTS as i64;
        let frame_count = frames.power.len() / KEPT_BINS;

        // Host cells for the period and its context, and the detector's view of its units.
        let slots = SLOTS_PER_PERIOD + 2 * CONTEXT_SLOTS;
        let mut host_cells = vec![0f64; slots * BANDS];
        let mut bands = [0f64; BANDS];
        for i in 0..frame_count {
            let frame = frames.first + i as i64;
            self.kernels.energies(
                &frames.power[i * KEPT_BINS..(i + 1) * KEPT_BINS],
                &mut bands,
            );
            for s in 0..slots {
                let center = slot_center(first_slot - context + s as i64) as f64;
                let w = time_weight(frame as f64, center, SLOT_HOPS as f64);
                if w > 0.0 {
                    for (c, e) in host_cells[s * BANDS..(s + 1) * BANDS]
                        .iter_mut()
                        .zip(&bands)
                    {
                        *c += w * e;
                    }
                }
            }
        }
        let host_units = units(&host_cells, slots, self.silence_floor);
        let own = CONTEXT_SLOTS * PAIRS..(CONTEXT_SLOTS + SLOTS_PER_PERIOD) * PAIRS;
        let host_ratio = &host_units.log_ratio[own.clone()];
        let reliable = &host_units.weight[own];
        let cell = |u: usize, side: usize| -> f64 {
            let (slot, pair) = (u / PAIRS, u % PAIRS);
            host_cells[(slot + CONTEXT_SLOTS) * BANDS + 2 * pair + side]
        };

        // Each reliable unit's move to its target, and what moving costs per nepers squared.
        let moves: Vec<Move> = (0..UNITS_PER_PERIOD)
            .filter(|&u| reliable[u] > 0.0)
            .map(|u| {
                let phase = host_ratio[u] / QIM_STEP;
                let target = self.layout.target_phase(parity, u, self.values[u]);
                let mut shift = target - phase.rem_euclid(1.0);
                shift -= shift.round();
                let (a, b) = (cell(u, 0), cell(u, 1));
                // The step splits between the cells in inverse proportion to their energies;
                // amplitude steps are half the log-energy steps.
                Move {
                    unit: u,
                    delta: shift * QIM_STEP,
                    cost: a * b / (a + b) / 4.0,
                }
            })
            .collect();

        // Budget: the host's energy over the frames this period synthesizes, in Hann-power
        // units (the square-root-Hann spectra carry 4/3 of Hann's energy).
        let host_energy: f64 = frames
            .spectra
            .iter()
            .map(|x| x.norm_sqr() as f64)
            .sum::<f64>()
            * 0.75;
        let allowed = host_energy * 10f64.powf(-TARGET_SNR_DB / 10.0);
        let mut budget = allowed;
        let mut steps = vec![0f64; SLOTS_PER_PERIOD * BANDS];
        for attempt in 0..3 {
            let (amounts, _) = allocate(&moves, budget);
            let granted: Vec<(&Move, f64)> = moves
                .iter()
                .zip(amounts)
                .filter(|(_, amount)| *amount > 0.0)
                .collect();
            if granted.is_empty() {
                break;
            }
            steps.iter_mut().for_each(|s| *s = 0.0);
            for _pass in 0..SOLVER_PASSES {
                let measured = self.measure(p, frames, &steps);
                for &(m, amount) in &granted {
                    let (slot, pair) = (m.unit / PAIRS, m.unit % PAIRS);
                    let i = slot * BANDS + 2 * pair;
                    let now = (measured[i] / measured[i + 1]).ln();
                    let error = host_ratio[m.unit] + amount.copysign(m.delta) - now;
                    let (a, b) = (cell(m.unit, 0), cell(m.unit, 1));
                    steps[i] = (steps[i] + error * b / (a + b)).clamp(-MAX_STEP, MAX_STEP);
                    steps[i + 1] = (steps[i + 1] - error * a / (a + b)).clamp(-MAX_STEP, MAX_STEP);
                }
            }
            // Overlapping cells make the estimate imperfect: measure, and shrink the budget
            // if the mark came out over it.
            let cost = self.mark_energy(p, frames, &steps) * 0.75;
            if cost <= allowed {
                break;
            }
            budget *= allowed / cost;
            if attempt == 2 {
                // Last resort: scale the steps down until the mark fits. The frames at the
                // period's start also carry the previous period's steps, which no scaling
                // here reduces: where that spill-over alone is over the budget (a loud end
                // followed by near silence), the period goes unmarked instead.
                let mut cost = cost;
                for _ in 0..LAST_RESORT_ROUNDS {
                    if cost <= allowed {
                        break;
                    }
                    let scale = (allowed / cost).sqrt() * 0.99;
                    steps.iter_mut().for_each(|s| *s *= scale);
                    cost = self.mark_energy(p, frames, &steps) * 0.75;
                }
                if cost > allowed {
                    steps.iter_mut().for_each(|s| *s = 0.0);
                }
            }
        }
        steps
    }

    /// Cell energies of period `p`'s slots with the gain field of `steps` applied.
    fn measure(&self, p: usize, frames: &PeriodFrames, steps: &[f64]) -> Vec<f64> {
        let first_slot = (p * SLOTS_PER_PERIOD) as i64;
        let mut cells = vec![0f64; SLOTS_PER_PERIOD * BANDS];
        let mut log_gain = vec![0f64; SPECTRUM_LEN];
        let mut gained = vec![0f32; KEPT_BINS];
        let mut bands = [0f64; BANDS];
        let from = slot_center(first_slot) - SLOT_HOPS as i64;
        let to = slot_center(first_slot + SLOTS_PER_PERIOD as i64 - 1) + SLOT_HOPS as i64;
        for frame in from..to {
            let i = (frame - frames.first) as usize;
            let power = &frames.power[i * KEPT_BINS..(i + 1) * KEPT_BINS];
            if self.frame_log_gain(p, steps, frame, &mut log_gain) {
                for ((o, x), g) in gained.iter_mut().zip(power).zip(&log_gain) {
                    *o = x * g.exp() as f32;
                }
                self.kernels.energies(&gained, &mut bands);
            } else {
                self.kernels.energies(power, &mut bands);
            }
            for s in 0..SLOTS_PER_PERIOD {
                let center = slot_center(first_slot + s as i64) as f64;
                let w = time_weight(frame as f64, center, SLOT_HOPS as f64);
                if w > 0.0 {
                    for (c, e) in cells[s * BANDS..(s + 1) * BANDS].iter_mut().zip(&bands) {
                        *c += w * e;
                    }
                }
            }
        }
        cells
    }

    /// Energy of the mark over the frames period `p` synthesizes (square-root-Hann units).
    fn mark_energy(&self, p: usize, frames: &PeriodFrames, steps: &[f64]) -> f64 {
        let mut log_gain = vec![0f64; SPECTRUM_LEN];
        let mut total = 0.0;
        for (i, spectrum) in frames.spectra.chunks(SPECTRUM_LEN).enumerate() {
            let frame = frames.spectra_first + i as i64;
            if self.frame_log_gain(p, steps, frame, &mut log_gain) {
                total += spectrum
                    .iter()
                    .zip(&log_gain)
                    .map(|(x, g)| x.norm_sqr() as f64 * ((0.5 * g).exp() - 1.0).powi(2))
                    .sum::<f64>();
            }
        }
        total
    }
}

/// A unit's way to its lattice point: `delta` nepers away (signed, at most half a step),
/// at an energy cost of `cost · m²` for a move of `m`.
struct Move {
    unit: usize,
    delta: f64,
    cost: f64,
}

/// How far each unit moves towards its target within `budget`: each unit takes the move
/// that maximizes `cos(2π · remaining distance / step) − λ · cost`, the cosine being what
/// the detector credits it with, and λ is set by bisection so the costs sum to the budget.
/// Partial moves are worth having: half of the way to the target buys two thirds of the
/// credit on average at a quarter of the energy. Returns the amounts and their total cost.
fn allocate(moves: &[Move], budget: f64) -> (Vec<f64>, f64) {
    const STEPS: usize = 16;
    let choose = |lambda: f64| -> (Vec<f64>, f64) {
        let mut total = 0.0;
        let amounts = moves
            .iter()
            .map(|m| {
                let distance = m.delta.abs();
                let (mut best, mut best_value) = (0.0, f64::NEG_INFINITY);
                for i in 0..=STEPS {
                    let x = distance * i as f64 / STEPS as f64;
                    let credit = (std::f64::consts::TAU * (distance - x) / QIM_STEP).cos();
                    let value = credit - lambda * m.cost * x * x;
                    if value > best_value {
                        best_value = value;
                        best = x;
                    }
                }
                total += m.cost * best * best;
                best
            })
            .collect();
        (amounts, total)
    };
    let (all, full_cost) = choose(0.0);
    if full_cost <= budget {
        return (all, full_cost);
    }
    // Bisect on log λ: the cost falls as λ rises.
    let (mut lo, mut hi) = (-30f64, 30f64);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if choose(mid.exp()).1 > budget {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    choose(hi.exp())
}
