//! The detector: search, decode, decide, locate.
//!
//! The signal is resampled to 16 kHz and turned into a power spectrogram once. It is then
//! examined in windows of 15 s (half-overlapping when the signal is longer). In each window,
//! every hypothesis of
//!
//! * *warp*: playback speed 0.94–1.06 (frequencies and durations scale together, as after
//!   resampling), tempo 0.90–1.10 (durations only) and pitch 0.96–1.08 (frequencies only),
//! * *grid phase*: where the slot grid starts, in eighths of a slot,
//! * *shift*: which slot of the period the window's first slot is,
//! * *parity*: whether that period is an even or an odd one,
//!
//! is scored by how well the sync units sit on their lattice points. The best few
//! hypotheses are decoded at their phase and half a phase step either side: the coded bits'
//! soft values go through the Viterbi decoder, then twice more after estimating each band
//! pair's offset (what an equalizer or a band filter does to a ratio of neighbouring bands)
//! from the previous decoding. The decoded codeword and the sync values together give the
//! final statistics, which [`crate::stats`] turns into a bound on the false-alarm
//! probability. If nothing passes, the window's best hypothesis is list-decoded and checked
//! as a record payload. Where a window is found, its span is trimmed to the slots that carry
//! the mark, and overlapping spans with the same payload are merged.

use realfft::num_complex::Complex;
use serde::{Deserialize, Serialize};

use crate::conv_code::{self, CODED_BITS};
use crate::features::{units, BandSeries, Units};
use crate::layout::{
    Layout, Role, ANALYSIS_RATE, BANDS, HOP, PAIRS, QIM_STEP, SLOTS_PER_PERIOD, SLOT_HOPS,
    UNITS_PER_PERIOD,
};
use crate::payload::record_key;
use crate::resample::resample;
use crate::spectrum::{BandKernels, Stft, KEPT_BINS};
use crate::stats::{
    coherent_bound, incoherent_bound, issued_payload_bits, ANY_PAYLOAD_BITS, FOUND_FALSE_ALARM,
    RECORD_PAYLOAD_BITS,
};
use crate::{check_rate, subkey, Payload, WatermarkError};

/// Window length in analysis hops (15 s); windows overlap by half, and a signal up to 21 s
/// is one window (see [`windows_of`]).
const WINDOW_HOPS: usize = 938;
/// Long windows (60 s, eight periods) fold four times the copies of a 15 s window, 6 dB
/// more evidence per coded bit: what lets a longer file be read after codecs that leave too
/// little of the mark in any 15 s (Opus at 24 kbit/s, measured). They are examined
/// only when no 15 s window finds the mark, so spliced files keep their exact ranges. A
/// half-step duration error drifts their slot grid by up to a sixth of a slot at the ends.
const LONG_WINDOW_HOPS: usize = 4 * WINDOW_HOPS;

/// Windows of `len` hops over a signal of `frames` hops: one for the whole signal up to
/// 1.4 `len`, else windows every `len / 2` hops with the last one flush with the end.
fn windows_of(frames: usize, len: usize) -> Vec<(usize, usize)> {
    if frames <= len * 7 / 5 {
        return vec![(0, frames)];
    }
    let mut starts: Vec<usize> = (0..)
        .map(|i| i * (len / 2))
        .take_while(|&s| s + len < frames)
        .collect();
    starts.push(frames - len);
    starts.into_iter().map(|s| (s, len)).collect()
}

/// Grid phases searched per slot; each candidate is then also decoded half a phase step
/// either side, so the hypotheses judged lie on a grid twice as fine.
const PHASES: usize = 8;
const REFINED_PHASES: usize = 2 * PHASES;
/// Hypotheses decoded per 15 s window, and per 60 s window. A long window is decoded only
/// when no short one found the mark, that is when the mark is weak, and then its sync
/// scores rank the true hypothesis less reliably: on Opus 24 kbit/s speech, a near miss
/// (0.3% off in speed) outscored it while the true one ranked between 5th and 8th.
const CANDIDATES: usize = 4;
const LONG_CANDIDATES: usize = 8;
/// Decodings per candidate: one plain, the rest with band-pair angles from the previous.
const DECODE_ATTEMPTS: usize = 3;
/// Payloads the list decoder proposes for the record check.
const LIST_SIZE: usize = 64;
/// A payload not checked by a record tag must beat the runner-up codeword by this much in
/// the coherent statistic. On attacked speech, of 173 windows found this way, the 2 wrong
/// payloads led their runner-up by 0.11 and 0.14; the right ones by 0.04 to 3 (5 of them
/// under 0.2).
const RUNNER_UP_MARGIN: f64 = 0.2;

/// What the search covers. The default covers playback speed ±6%, tempo ±10% and pitch
/// −70…+130 cents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchRange {
    /// Playback speeds (resampling: pitch and tempo change together) to try.
    pub speed: (f64, f64),
    /// Tempo factors (durations scaled, pitch kept) to try; `(1.0, 1.0)` for none.
    pub tempo: (f64, f64),
    /// Pitch factors (frequencies scaled, durations kept) to try; `(1.0, 1.0)` for none.
    pub pitch: (f64, f64),
}

impl Default for SearchRange {
    fn default() -> Self {
        Self {
            speed: (0.94, 1.06),
            tempo: (0.90, 1.10),
            pitch: (0.96, 1.08),
        }
    }
}

impl SearchRange {
    /// Only the signal as it is: no speed, tempo or pitch change.
    pub fn none() -> Self {
        Self {
            speed: (1.0, 1.0),
            tempo: (1.0, 1.0),
            pitch: (1.0, 1.0),
        }
    }
}

/// Grid steps. A frequency error of half a step moves a band edge by a twentieth of a band;
/// a duration error of half a step drifts the slot grid by a thirtieth of a slot at the ends
/// of a 15 s window.
const FREQ_STEP: f64 = 0.003;
const TIME_STEP: f64 = 0.004;

/// One way the signal may have been transformed: content at frequency `f` now sits at
/// `freq_scale · f`, and what lasted 1 s now lasts `time_scale` s.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Warp {
    freq_scale: f64,
    time_scale: f64,
}

/// The factors `1 + i · step` within `range`: anchored at 1 so that the speed and pitch
/// lines share their frequency scales (and the band energies computed for them).
fn grid(range: (f64, f64), step: f64) -> Vec<f64> {
    let first = ((range.0 - 1.0) / step - 1e-9).ceil() as i64;
    let last = ((range.1 - 1.0) / step + 1e-9).floor() as i64;
    (first..=last).map(|i| 1.0 + i as f64 * step).collect()
}

fn warps(range: &SearchRange) -> Vec<Warp> {
    let mut warps = vec![Warp {
        freq_scale: 1.0,
        time_scale: 1.0,
    }];
    let mut add = |w: Warp| {
        let same = |v: &Warp| {
            (v.freq_scale - w.freq_scale).abs() < 1e-4 && (v.time_scale - w.time_scale).abs() < 1e-4
        };
        if !warps.iter().any(same) {
            warps.push(w);
        }
    };
    for s in grid(range.speed, FREQ_STEP) {
        add(Warp {
            freq_scale: s,
            time_scale: 1.0 / s,
        });
    }
    for t in grid(range.tempo, TIME_STEP) {
        add(Warp {
            freq_scale: 1.0,
            time_scale: 1.0 / t,
        });
    }
    for f in grid(range.pitch, FREQ_STEP) {
        add(Warp {
            freq_scale: f,
            time_scale: 1.0,
        });
    }
    warps.sort_by(|a, b| a.freq_scale.total_cmp(&b.freq_scale));
    warps
}

/// A stretch of the signal where the mark was found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Start and end, in seconds from the start of the examined signal.
    pub start_s: f64,
    pub end_s: f64,
    /// The payload read there.
    pub payload: Payload,
    /// The strongest window's false-alarm bound (see [`Detection::false_alarm`]).
    pub false_alarm: f64,
    /// How the signal was found to be transformed: its content sits at `pitch_factor` times
    /// its marked frequencies and plays `tempo_factor` times as fast (both equal for a
    /// playback-speed change, one of them 1 for a pure pitch shift or time stretch).
    pub pitch_factor: f64,
    pub tempo_factor: f64,
}

/// The result of [`detect`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// Whether a mark made with this key was found and read: some window's `false_alarm`
    /// is ≤ 1e-8 and its payload is trustworthy (a record payload whose tag checks under
    /// the key, or a payload the decoder preferred clearly over every other). A
    /// `false_alarm` ≤ 1e-8 with `found` false means the mark is there but too damaged to
    /// read.
    pub found: bool,
    /// The payload of the strongest segment.
    pub payload: Option<Payload>,
    /// The smallest false-alarm bound over the windows examined: an upper bound on the
    /// probability that a 15 s window without this key's mark scores as well as this one
    /// did (see the crate documentation). 1 when nothing resembled the mark.
    pub false_alarm: f64,
    /// `-log10(false_alarm)`, capped at 300: ≥ 8 means found.
    pub score: f64,
    /// The time ranges `(start_s, end_s)` where the mark was found, in order.
    pub ranges: Vec<(f64, f64)>,
    /// Every segment found, in time order (a splice of differently marked files shows
    /// several payloads).
    pub segments: Vec<Segment>,
    /// The windows examined: one for a signal up to 21 s, else 15 s windows every 7.5 s
    /// (the last one flush with the end), and when none of those found the mark, 60 s
    /// windows every 30 s (one up to 84 s). `false_alarm` bounds each of them.
    #[serde(default)]
    pub windows: usize,
}

/// Detects the mark made with `key` in mono samples at `sample_rate`, with the default
/// search range. See [`Detector`] to configure it.
pub fn detect(key: &[u8], sample_rate: u32, samples: &[f32]) -> Result<Detection, WatermarkError> {
    Detector::new(key)?.detect(sample_rate, samples)
}

/// Examines one signal (mono `samples` at `sample_rate`) for the mark of each of `detectors`,
/// analysing it once for all: the spectrogram, band energies and units of every warp and
/// grid phase do not depend on the key, only the search and decoding do. Results are in the
/// order of `detectors`, which must share one search range.
pub fn detect_each(
    detectors: &[Detector],
    sample_rate: u32,
    samples: &[f32],
) -> Result<Vec<Detection>, WatermarkError> {
    check_rate(sample_rate)?;
    let Some(lead) = detectors.first() else {
        return Ok(Vec::new());
    };
    if detectors.iter().any(|d| d.range != lead.range) {
        return Err(WatermarkError::MixedSearchRanges);
    }
    let signal = resample(samples, sample_rate, ANALYSIS_RATE);
    let spectrogram = power_spectrogram(&signal);
    let frames = spectrogram.len() / KEPT_BINS;
    let warps = warps(&lead.range);
    let hypotheses = (warps.len() * REFINED_PHASES * SLOTS_PER_PERIOD * 2) as f64;

    // The 15 s windows, then (for longer signals) the 60 s ones examined when no 15 s
    // window finds the mark.
    let mut windows = windows_of(frames, WINDOW_HOPS);
    let short_windows = windows.len();
    if short_windows > 1 {
        windows.extend(windows_of(frames, LONG_WINDOW_HOPS));
    }

    // Search, keeping the best candidates per detector and window (the long windows' too:
    // their search is cheap next to decoding, which happens only if they are needed).
    // Warps sharing a frequency scale share the band energies; every window shares the
    // units of each slot grid, which cover the whole signal.
    let mut candidates: Vec<Vec<Vec<Candidate>>> =
        vec![vec![Vec::new(); windows.len()]; detectors.len()];
    let mut band_frames = vec![0f64; frames * BANDS];
    let mut current_scale = f64::NAN;
    let mut series = BandSeries::new(&[], 0);
    for warp in &warps {
        if warp.freq_scale != current_scale {
            current_scale = warp.freq_scale;
            let kernels = BandKernels::new(current_scale);
            for (j, row) in band_frames.chunks_mut(BANDS).enumerate() {
                kernels.energies(&spectrogram[j * KEPT_BINS..(j + 1) * KEPT_BINS], row);
            }
            series = BandSeries::new(&band_frames, frames);
        }
        let slot_len = SLOT_HOPS as f64 * warp.time_scale;
        for phase in 0..PHASES {
            let offset = phase as f64 * slot_len / PHASES as f64;
            let total = ((frames as f64 - offset) / slot_len).floor() as usize;
            if total < 2 {
                continue;
            }
            let read = units(
                &series.grid(offset + slot_len / 2.0, slot_len, total),
                total,
                0.0,
            );
            let phasors = unit_phasors(&read);
            for (w, &(start, len)) in windows.iter().enumerate() {
                let (first, count) = slots_within(start, len, offset, slot_len, total);
                if count < 2 {
                    continue;
                }
                let window_phasors = &phasors[first * PAIRS..(first + count) * PAIRS];
                let limit = if w < short_windows {
                    CANDIDATES
                } else {
                    LONG_CANDIDATES
                };
                for (detector, candidates) in detectors.iter().zip(&mut candidates) {
                    let use_data = w >= short_windows;
                    detector.search(window_phasors, count, use_data, |shift, parity, score| {
                        keep_best(
                            &mut candidates[w],
                            Candidate {
                                warp: *warp,
                                first_center: offset + (first as f64 + 0.5) * slot_len,
                                slot_len,
                                slots: count,
                                shift,
                                parity,
                                score,
                            },
                            limit,
                        );
                    });
                }
            }
        }
    }

    Ok(detectors
        .iter()
        .zip(&candidates)
        .map(|(detector, candidates)| {
            detector.conclude(candidates, short_windows, &spectrogram, frames, hypotheses)
        })
        .collect())
}

/// A detector for one key; reusable across signals.
#[derive(Clone)]
pub struct Detector {
    layout: Layout,
    /// The subkey record tags are checked with.
    record_key: [u8; 32],
    range: SearchRange,
    /// For each parity and unit: the rotation that brings a sync unit's lattice point to
    /// phase zero (None for data units).
    sync_rotation: [Vec<Option<Complex<f64>>>; 2],
    /// The sync units as (slot, band pair) within the period.
    sync_units: Vec<(usize, usize)>,
    /// The data units as (slot, band pair), with the rotation that brings a +1's lattice
    /// point to phase zero in even and odd periods.
    data_units: Vec<(usize, usize, [Complex<f64>; 2])>,
    /// Payloads the deployment issued, with the unit values each implies (see
    /// [`Detector::with_issued_payloads`]).
    issued: Vec<(Payload, Vec<i8>)>,
}

impl std::fmt::Debug for Detector {
    /// Shows the search range only: everything else derives from the secret key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("range", &self.range)
            .field("issued", &self.issued.len())
            .finish_non_exhaustive()
    }
}

/// A scored hypothesis within a window.
#[derive(Debug, Clone)]
struct Candidate {
    warp: Warp,
    /// Centre (in hops) of the window's first slot, the slot length in hops, and the number
    /// of slots in the window.
    first_center: f64,
    slot_len: f64,
    slots: usize,
    shift: usize,
    parity: usize,
    score: f64,
}

/// One decoding of a candidate: its bound, payload, the unit values that payload implies,
/// the band-pair turns the soft values were read with, and the soft values.
struct Decoding {
    false_alarm: f64,
    payload: Payload,
    values: Vec<i8>,
    offsets: Vec<Complex<f64>>,
    soft: Vec<f32>,
}

/// A window's verdict.
#[derive(Debug, Clone)]
struct WindowResult {
    payload: Payload,
    false_alarm: f64,
    /// Whether the payload can be trusted: a record payload whose tag checks, or a payload
    /// the decoder preferred clearly over the runner-up.
    confident: bool,
    warp: Warp,
    start_s: f64,
    end_s: f64,
}

fn rotation(phase: f64) -> Complex<f64> {
    Complex::from_polar(1.0, -2.0 * std::f64::consts::PI * phase)
}

fn lattice_phasor(log_ratio: f64) -> Complex<f64> {
    Complex::from_polar(1.0, 2.0 * std::f64::consts::PI * log_ratio / QIM_STEP)
}

impl Detector {
    /// A detector for the deployment's secret `key`.
    pub fn new(key: &[u8]) -> Result<Self, WatermarkError> {
        if key.is_empty() {
            return Err(WatermarkError::EmptyKey);
        }
        let layout = Layout::new(&subkey(key, "pattern"));
        let sync_rotation = [0, 1].map(|parity| {
            (0..UNITS_PER_PERIOD)
                .map(|u| match layout.roles[u] {
                    Role::Sync(v) => Some(rotation(layout.target_phase(parity, u, v))),
                    Role::Data(_) => None,
                })
                .collect()
        });
        let sync_units = (0..UNITS_PER_PERIOD)
            .filter(|&u| matches!(layout.roles[u], Role::Sync(_)))
            .map(|u| (u / PAIRS, u % PAIRS))
            .collect();
        let data_units = (0..UNITS_PER_PERIOD)
            .filter(|&u| matches!(layout.roles[u], Role::Data(_)))
            .map(|u| {
                let turns = [0, 1].map(|parity| rotation(layout.target_phase(parity, u, 1)));
                (u / PAIRS, u % PAIRS, turns)
            })
            .collect();
        Ok(Self {
            layout,
            record_key: record_key(key),
            range: SearchRange::default(),
            sync_rotation,
            sync_units,
            data_units,
            issued: Vec::new(),
        })
    }

    /// Replaces the search range.
    #[must_use]
    pub fn with_search_range(mut self, range: SearchRange) -> Self {
        self.range = range;
        self
    }

    /// Also judges `payloads`, the ones this deployment issued (its provenance records'),
    /// where a window's blind decoding finds nothing.
    ///
    /// Blind decoding must pick one of 2⁶⁴ codewords (or 2³² record payloads) from the
    /// window's soft values, and after heavy lossy coding it can miss the right one even
    /// when the mark is plainly there: the right payload's statistics would pass with room
    /// to spare. Judging each issued payload directly needs no decoding, and its union
    /// bound ranges over `log2(count)` bits instead of 32 or 64, so fewer marks are missed
    /// at the same false-alarm rate per window. Each payload costs a few microseconds per
    /// window examined.
    #[must_use]
    pub fn with_issued_payloads(mut self, payloads: impl IntoIterator<Item = Payload>) -> Self {
        let mut payloads: Vec<Payload> = payloads.into_iter().collect();
        payloads.sort_by_key(|p| p.0);
        payloads.dedup();
        self.issued = payloads
            .into_iter()
            .map(|p| (p, self.layout.unit_values(&conv_code::encode(p.0))))
            .collect();
        self
    }

    /// Examines `samples` (mono, at `sample_rate`).
    pub fn detect(&self, sample_rate: u32, samples: &[f32]) -> Result<Detection, WatermarkError> {
        let mut detections = detect_each(std::slice::from_ref(self), sample_rate, samples)?;
        Ok(detections.remove(0))
    }

    /// Decodes each window's best candidates and turns what passes into a detection: the
    /// first `short_windows` windows, then the long ones if none of those found the mark.
    fn conclude(
        &self,
        candidates: &[Vec<Candidate>],
        short_windows: usize,
        spectrogram: &[f32],
        frames: usize,
        hypotheses: f64,
    ) -> Detection {
        let mut found = Vec::new();
        let mut best_false_alarm = f64::INFINITY;
        let mut examined = 0;
        for (w, window_candidates) in candidates.iter().enumerate() {
            if w == short_windows && !found.is_empty() {
                break;
            }
            examined += 1;
            let mut best: Option<(WindowResult, Candidate)> = None;
            for coarse in window_candidates {
                for step in [0.0, -0.5, 0.5] {
                    let candidate = Candidate {
                        first_center: coarse.first_center + step * coarse.slot_len / PHASES as f64,
                        ..coarse.clone()
                    };
                    let read = candidate_units(spectrogram, frames, &candidate);
                    let result = self.decode(&candidate, &read, hypotheses, false);
                    if best
                        .as_ref()
                        .is_none_or(|b| result.false_alarm < b.0.false_alarm)
                    {
                        best = Some((result, candidate));
                    }
                }
            }
            let Some((_, candidate)) = best else {
                continue;
            };
            // The window's best hypothesis, decoded thoroughly: its payload checked against
            // the runner-up, or looked for among record payloads.
            let read = candidate_units(spectrogram, frames, &candidate);
            let result = self.decode(&candidate, &read, hypotheses, true);
            best_false_alarm = best_false_alarm.min(result.false_alarm);
            if result.false_alarm <= FOUND_FALSE_ALARM && result.confident {
                found.push(result);
            }
        }
        let segments = merge_segments(found);
        let mut ranges: Vec<(f64, f64)> = segments.iter().map(|s| (s.start_s, s.end_s)).collect();
        ranges.sort_by(|a, b| a.0.total_cmp(&b.0));
        let strongest = segments
            .iter()
            .min_by(|a, b| a.false_alarm.total_cmp(&b.false_alarm));
        Detection {
            found: !segments.is_empty(),
            payload: strongest.map(|s| s.payload),
            // The bounds are uncapped inside (see `coherent_bound`); a bound says nothing above 1.
            false_alarm: best_false_alarm.min(1.0),
            // `+ 0.0` turns the −0 of −log10(1) into 0.
            score: (-best_false_alarm.log10()).clamp(0.0, 300.0) + 0.0,
            ranges,
            segments,
            windows: examined,
        }
    }

    /// Calls `report(shift, parity, score)` for every position in the period and parity the
    /// window's first slot may have: the normalized sum of how well the sync units sit on
    /// their lattice points, and with `use_data` also how well the data units do.
    ///
    /// A data unit's value is unknown here, so its evidence is sign-free: each data unit's
    /// copies are folded (turned by their parity's dither, as for a +1), and the square of
    /// the fold's real part counts, less what unmarked audio gives it on average. Under the
    /// null each folded value is a sum of uniformly turned phasors, so the square has mean
    /// `Σ|copy|² / 2` and, summed over units and scaled, the term has mean 0 and about unit
    /// variance, like the sync term; the two are added with equal weight. In a 60 s window a
    /// data unit has eight copies, and 192 data units against 48 sync units make up for the
    /// squaring's loss: after Opus at 24 kbit/s the right hypothesis scored 2.4–5.9 on sync
    /// alone, no better than the best of the 62,400 wrong ones (about 3.5–4), and 6.3–9.3
    /// with the data units, first of all.
    fn search(
        &self,
        phasors: &[Complex<f64>],
        slots: usize,
        use_data: bool,
        mut report: impl FnMut(usize, usize, f64),
    ) {
        // Window slot k = r + 15j holds the same unit row for every j; under a shift, the
        // copies with j even fall in periods of one parity and j odd in the other, swapped
        // when the shift carries r past the period's end. Sum each residue's copies (and
        // their squared magnitudes) by j's parity once.
        let mut by_parity = vec![[Complex::<f64>::default(); 2]; SLOTS_PER_PERIOD * PAIRS];
        let mut energy = vec![0f64; SLOTS_PER_PERIOD * PAIRS];
        for k in 0..slots {
            let (r, j) = (k % SLOTS_PER_PERIOD, k / SLOTS_PER_PERIOD);
            for n in 0..PAIRS {
                by_parity[r * PAIRS + n][j % 2] += phasors[k * PAIRS + n];
                energy[r * PAIRS + n] += phasors[k * PAIRS + n].norm_sqr();
            }
        }
        // The copies of unit (slot, pair) under `shift`: those in the window's first period's
        // parity, then those in the other.
        let copies = |shift: usize, unit_slot: usize, pair: usize| {
            let r = (unit_slot + SLOTS_PER_PERIOD - shift) % SLOTS_PER_PERIOD;
            let [a, b] = by_parity[r * PAIRS + pair];
            // Copies with j even sit in the window's first period unless r + shift wraps.
            let folded = if r + shift >= SLOTS_PER_PERIOD {
                (b, a)
            } else {
                (a, b)
            };
            (folded, energy[r * PAIRS + pair])
        };
        let [even, odd] = &self.sync_rotation;
        for shift in 0..SLOTS_PER_PERIOD {
            // Per parity of the window's first period: the sum over sync units, and the
            // normalization (the same for both).
            let mut sums = [0f64; 2];
            let mut norm = 0.0;
            for &(unit_slot, pair) in &self.sync_units {
                let ((first, second), _) = copies(shift, unit_slot, pair);
                let u = unit_slot * PAIRS + pair;
                let (Some(r0), Some(r1)) = (even[u], odd[u]) else {
                    continue;
                };
                sums[0] += (first * r0).re + (second * r1).re;
                sums[1] += (first * r1).re + (second * r0).re;
                norm += (first.norm_sqr() + second.norm_sqr()) / 2.0;
            }
            if norm <= 0.0 {
                continue;
            }
            let mut data = [0f64; 2];
            let mut data_units = 0f64;
            if use_data {
                for &(unit_slot, pair, [r0, r1]) in &self.data_units {
                    let ((first, second), energy) = copies(shift, unit_slot, pair);
                    if energy <= 0.0 {
                        continue;
                    }
                    let null_mean = energy / 2.0;
                    data[0] += (first * r0 + second * r1).re.powi(2) / null_mean - 1.0;
                    data[1] += (first * r1 + second * r0).re.powi(2) / null_mean - 1.0;
                    data_units += 1.0;
                }
            }
            for parity in 0..2 {
                let sync = sums[parity] / norm.sqrt();
                let score = if data_units > 0.0 {
                    // Each unit's term has variance about 2 under the null.
                    let data = data[parity] / (2.0 * data_units).sqrt();
                    (sync + data) / std::f64::consts::SQRT_2
                } else {
                    sync
                };
                report(shift, parity, score);
            }
        }
    }

    /// Decodes a candidate and judges it.
    ///
    /// A filter or equalizer moves every unit of a band pair by the same amount, which turns
    /// their lattice phases by a common angle. The first decoding ignores that; the next ones
    /// estimate each band pair's angle from the previous decoding's values (all units of the
    /// pair, pointed the way the decoded values say) and decode again, each band pair's soft
    /// values weighted by how reliable that pair proved (see [`pair_reliability`]). The
    /// statistics never use the estimated angles or weights, so whichever decoding is kept,
    /// the bound holds.
    fn decode(
        &self,
        candidate: &Candidate,
        read: &Units,
        hypotheses: f64,
        thorough: bool,
    ) -> WindowResult {
        let slots = candidate.slots;
        // Fold the window's units by (parity, unit): copies under one dither add up.
        let mut folded = [[Complex::<f64>::default(); UNITS_PER_PERIOD]; 2];
        for k in 0..slots {
            let (unit_slot, parity) = period_position(k, candidate.shift, candidate.parity);
            for n in 0..PAIRS {
                let i = k * PAIRS + n;
                folded[parity][unit_slot * PAIRS + n] +=
                    lattice_phasor(read.log_ratio[i]) * read.weight[i] as f64;
            }
        }
        // Each folded unit turned so that its dither sits at phase 0: a +1 then points to 0,
        // a −1 to π.
        let dithered: Vec<(usize, Complex<f64>)> = (0..2)
            .flat_map(|parity| (0..UNITS_PER_PERIOD).map(move |u| (parity, u)))
            .filter(|&(parity, u)| folded[parity][u].norm_sqr() > 0.0)
            .map(|(parity, u)| {
                (
                    u,
                    folded[parity][u] * rotation(self.layout.dithers[parity][u]),
                )
            })
            .collect();

        let evidence = Evidence::new(&dithered);
        let mut offsets = vec![Complex::new(1.0, 0.0); PAIRS];
        let mut reliability = [1.0; PAIRS];
        let mut best: Option<Decoding> = None;
        for _ in 0..DECODE_ATTEMPTS {
            let mut soft = vec![0f32; CODED_BITS];
            for &(u, z) in &dithered {
                if let Role::Data(bit) = self.layout.roles[u] {
                    let n = u % PAIRS;
                    soft[bit as usize] += ((z * offsets[n]).re * reliability[n]) as f32;
                }
            }
            let payload = Payload(conv_code::decode(&soft));
            let values = self.layout.unit_values(&conv_code::encode(payload.0));
            let false_alarm = self.verdict(&evidence, payload, &values, hypotheses);
            // The angle of each band pair, from all its units as the decoding has them.
            let offsets_next: Vec<Complex<f64>> = evidence
                .pair_sums(&values)
                .iter()
                .map(|p| {
                    if p.norm() > 0.0 {
                        p.conj() / p.norm()
                    } else {
                        Complex::new(1.0, 0.0)
                    }
                })
                .collect();
            reliability = pair_reliability(&dithered, &values, &offsets_next);
            if best.as_ref().is_none_or(|b| false_alarm < b.false_alarm) {
                best = Some(Decoding {
                    false_alarm,
                    payload,
                    values,
                    offsets: std::mem::replace(&mut offsets, offsets_next),
                    soft,
                });
            } else {
                offsets = offsets_next;
            }
        }
        let mut best = best.expect("at least one attempt");
        let mut confident = best.payload.record_id_under(&self.record_key).is_some();
        if thorough && !confident {
            let list = conv_code::decode_list(&best.soft, LIST_SIZE);
            if best.false_alarm <= FOUND_FALSE_ALARM {
                // Near the threshold the decoder can pick a codeword next to the right one:
                // trust the payload only if it beats the runner-up clearly.
                let z_of = |payload: u64| {
                    let values = self.layout.unit_values(&conv_code::encode(payload));
                    evidence.coherent_z(&values)
                };
                let runner_up = list
                    .iter()
                    .filter(|&&p| p != best.payload.0)
                    .map(|&p| z_of(p))
                    .fold(f64::NEG_INFINITY, f64::max);
                confident = z_of(best.payload.0) - runner_up >= RUNNER_UP_MARGIN;
            }
            // Record payloads carry their own check: among the codewords that nearly match,
            // one whose tag is valid under this key is judged against the 2³² record
            // payloads only.
            let mut record: Option<Decoding> = None;
            for listed in list {
                let payload = Payload(listed);
                if payload.record_id_under(&self.record_key).is_none() {
                    continue;
                }
                let values = self.layout.unit_values(&conv_code::encode(payload.0));
                let false_alarm = evidence.bound(&values, hypotheses, RECORD_PAYLOAD_BITS);
                if record.as_ref().is_none_or(|r| false_alarm < r.false_alarm) {
                    record = Some(Decoding {
                        false_alarm,
                        payload,
                        values,
                        offsets: best.offsets.clone(),
                        soft: Vec::new(),
                    });
                }
            }
            if let Some(record) = record {
                let trusted = best.false_alarm <= FOUND_FALSE_ALARM && confident;
                if (record.false_alarm <= FOUND_FALSE_ALARM && !trusted)
                    || record.false_alarm < best.false_alarm
                {
                    confident = true;
                    best = record;
                }
            }
        }
        if thorough && !(best.false_alarm <= FOUND_FALSE_ALARM && confident) {
            // The issued payloads, each judged as it is: no decoding to miss it.
            let bits = issued_payload_bits(self.issued.len());
            let issued = self
                .issued
                .iter()
                .map(|(payload, values)| {
                    let false_alarm = evidence.bound(values, hypotheses, bits);
                    (false_alarm, payload, values)
                })
                .min_by(|a, b| a.0.total_cmp(&b.0));
            if let Some((false_alarm, payload, values)) = issued {
                if false_alarm <= FOUND_FALSE_ALARM || false_alarm < best.false_alarm {
                    confident = true;
                    best = Decoding {
                        false_alarm,
                        payload: *payload,
                        values: values.clone(),
                        offsets: best.offsets.clone(),
                        soft: Vec::new(),
                    };
                }
            }
        }
        let (start_s, end_s) = self.marked_span(candidate, read, &best.values, &best.offsets);
        WindowResult {
            payload: best.payload,
            false_alarm: best.false_alarm,
            confident,
            warp: candidate.warp,
            start_s,
            end_s,
        }
    }

    /// The false-alarm bound of a decoded payload: against all payloads, or against record
    /// payloads only when its tag is valid under this key.
    fn verdict(
        &self,
        evidence: &Evidence<'_>,
        payload: Payload,
        values: &[i8],
        hypotheses: f64,
    ) -> f64 {
        let any = evidence.bound(values, hypotheses, ANY_PAYLOAD_BITS);
        if payload.record_id_under(&self.record_key).is_some() {
            any.min(evidence.bound(values, hypotheses, RECORD_PAYLOAD_BITS))
        } else {
            any
        }
    }

    /// The part of the window that carries the mark: the run of slots with the greatest
    /// excess of evidence over 0.3 of the window's average (a maximum-sum run), in seconds.
    fn marked_span(
        &self,
        candidate: &Candidate,
        read: &Units,
        values: &[i8],
        offsets: &[Complex<f64>],
    ) -> (f64, f64) {
        let slots = candidate.slots;
        let evidence: Vec<f64> = (0..slots)
            .map(|k| {
                let (unit_slot, parity) = period_position(k, candidate.shift, candidate.parity);
                (0..PAIRS)
                    .map(|n| {
                        let i = k * PAIRS + n;
                        let u = unit_slot * PAIRS + n;
                        let phase = self.layout.target_phase(parity, u, values[u]);
                        let z = lattice_phasor(read.log_ratio[i]) * rotation(phase) * offsets[n];
                        z.re * read.weight[i] as f64
                    })
                    .sum()
            })
            .collect();
        let mean = evidence.iter().sum::<f64>() / slots.max(1) as f64;
        let bias = 0.3 * mean.max(0.0);
        let (mut best, mut best_range) = (f64::NEG_INFINITY, (0, slots));
        let (mut run, mut run_start) = (0.0, 0);
        for (k, e) in evidence.iter().enumerate() {
            if run <= 0.0 {
                run = 0.0;
                run_start = k;
            }
            run += e - bias;
            if run > best {
                best = run;
                best_range = (run_start, k + 1);
            }
        }
        let seconds = |hops: f64| hops * HOP as f64 / ANALYSIS_RATE as f64;
        let edge = |k: usize| candidate.first_center + (k as f64 - 0.5) * candidate.slot_len;
        (
            seconds(edge(best_range.0).max(0.0)),
            seconds(edge(best_range.1)),
        )
    }
}

/// How much each band pair's units can be trusted, as weights for their soft values (mean 1
/// over the pairs): the signal-to-noise of the pair's units turned by `offsets` and pointed
/// the way `values` say, `mean / variance`, which is what scales a noisy ±1 reading into its
/// log-likelihood. A codec that spends few bits on some bands leaves their pairs noisier,
/// and an unweighted sum lets them outvote the clean ones (Opus at 24 kbit/s: 48 of 50
/// clips recovered with the weights, 47 without).
fn pair_reliability(
    dithered: &[(usize, Complex<f64>)],
    values: &[i8],
    offsets: &[Complex<f64>],
) -> [f64; PAIRS] {
    let mut sum = [0f64; PAIRS];
    let mut square = [0f64; PAIRS];
    let mut count = [0f64; PAIRS];
    for &(u, z) in dithered {
        let n = u % PAIRS;
        let x = (z * offsets[n]).re * values[u] as f64;
        sum[n] += x;
        square[n] += x * x;
        count[n] += 1.0;
    }
    let mut weights = [0f64; PAIRS];
    for n in 0..PAIRS {
        if count[n] >= 2.0 {
            let mean = sum[n] / count[n];
            let variance = (square[n] / count[n] - mean * mean).max(1e-12);
            weights[n] = mean.max(0.0) / variance;
        }
    }
    let total: f64 = weights.iter().sum();
    if total > 0.0 {
        weights.map(|w| w * PAIRS as f64 / total)
    } else {
        [1.0; PAIRS]
    }
}

/// A window's folded, dither-turned units, with what judging any codeword against them
/// shares: each band pair's energy and the coherent statistic's normalization.
struct Evidence<'a> {
    units: &'a [(usize, Complex<f64>)],
    pair_norm: [f64; PAIRS],
    pairs_present: usize,
    coherent_norm: f64,
}

impl<'a> Evidence<'a> {
    fn new(units: &'a [(usize, Complex<f64>)]) -> Self {
        let mut pair_norm = [0f64; PAIRS];
        for &(u, z) in units {
            pair_norm[u % PAIRS] += z.norm_sqr();
        }
        let total: f64 = pair_norm.iter().sum();
        Self {
            units,
            pair_norm,
            pairs_present: pair_norm.iter().filter(|&&n| n > 0.0).count(),
            coherent_norm: (total / 2.0).sqrt(),
        }
    }

    /// Each band pair's sum of units pointed the way `values` say.
    fn pair_sums(&self, values: &[i8]) -> [Complex<f64>; PAIRS] {
        let mut per_pair = [Complex::<f64>::default(); PAIRS];
        for &(u, z) in self.units {
            per_pair[u % PAIRS] += z * values[u] as f64;
        }
        per_pair
    }

    /// The coherent statistic `Σ a cos ψ / √(Σ a² / 2)` from the pairs' sums.
    fn z_of(&self, per_pair: &[Complex<f64>; PAIRS]) -> f64 {
        if self.coherent_norm > 0.0 {
            per_pair.iter().map(|p| p.re).sum::<f64>() / self.coherent_norm
        } else {
            0.0
        }
    }

    /// The coherent statistic of unit `values`.
    fn coherent_z(&self, values: &[i8]) -> f64 {
        self.z_of(&self.pair_sums(values))
    }

    /// The false-alarm bound of the codeword whose unit values are `values`: the better of
    /// the coherent statistic over all units and the per-band-pair statistic that lets each
    /// pair's angle float. One pass gives both: the coherent sum is the real part of the
    /// pairs' sums.
    fn bound(&self, values: &[i8], hypotheses: f64, payload_bits: f64) -> f64 {
        let per_pair = self.pair_sums(values);
        let z = self.z_of(&per_pair);
        let t: f64 = per_pair
            .iter()
            .zip(&self.pair_norm)
            .filter(|(_, &norm)| norm > 0.0)
            .map(|(p, norm)| p.norm_sqr() / norm)
            .sum();
        coherent_bound(z, hypotheses, payload_bits).min(incoherent_bound(
            t,
            self.pairs_present,
            hypotheses,
            payload_bits,
        ))
    }
}

/// Where the window's slot `k` sits in the period, given the period slot and parity of the
/// window's first slot: the unit row and the parity of its period.
fn period_position(k: usize, shift: usize, parity: usize) -> (usize, usize) {
    let absolute = k + shift;
    (
        absolute % SLOTS_PER_PERIOD,
        (absolute / SLOTS_PER_PERIOD + parity) % 2,
    )
}

/// Keeps the `limit` best-scoring hypotheses.
fn keep_best(candidates: &mut Vec<Candidate>, candidate: Candidate, limit: usize) {
    if candidates.len() == limit
        && candidates
            .last()
            .is_some_and(|w| w.score >= candidate.score)
    {
        return;
    }
    candidates.push(candidate);
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    candidates.truncate(limit);
}

/// Each unit's lattice phasor `e^(2πi · value / step)`, zero for units that do not count.
fn unit_phasors(read: &Units) -> Vec<Complex<f64>> {
    read.log_ratio
        .iter()
        .zip(&read.weight)
        .map(|(&d, &w)| {
            if w > 0.0 {
                lattice_phasor(d) * w as f64
            } else {
                Complex::default()
            }
        })
        .collect()
}

/// The slots of a grid (slot `k` centred at `offset + (k + ½) · slot_len` hops, `total` of
/// them) whose centres fall in the window `[start, start + len)`: first and count.
fn slots_within(
    start: usize,
    len: usize,
    offset: f64,
    slot_len: f64,
    total: usize,
) -> (usize, usize) {
    let index = |hop: f64| {
        ((hop - offset) / slot_len - 0.5)
            .ceil()
            .clamp(0.0, total as f64) as usize
    };
    let first = index(start as f64);
    let end = index((start + len) as f64);
    (first, end.saturating_sub(first))
}

/// The units a candidate's window holds, measured afresh: band energies for the frames its
/// slots (and two slots of context either side, for the level rules) reach.
fn candidate_units(spectrogram: &[f32], frames: usize, candidate: &Candidate) -> Units {
    const CONTEXT: usize = 2;
    let len = candidate.slot_len;
    let first_frame = (candidate.first_center - (CONTEXT as f64 + 1.0) * len)
        .floor()
        .max(0.0) as usize;
    let last_center = candidate.first_center + (candidate.slots - 1) as f64 * len;
    let end_frame = ((last_center + (CONTEXT as f64 + 1.0) * len).ceil() as usize).min(frames);
    let span = end_frame.saturating_sub(first_frame);
    let kernels = BandKernels::new(candidate.warp.freq_scale);
    let mut band_frames = vec![0f64; span * BANDS];
    for (j, row) in band_frames.chunks_mut(BANDS).enumerate() {
        let frame = first_frame + j;
        kernels.energies(
            &spectrogram[frame * KEPT_BINS..(frame + 1) * KEPT_BINS],
            row,
        );
    }
    let series = BandSeries::new(&band_frames, span);
    // Context slots that exist before the window (slot centres at or after the first frame).
    let before = (0..=CONTEXT)
        .rev()
        .find(|&c| candidate.first_center - c as f64 * len >= 0.0)
        .unwrap_or(0);
    let slots = before + candidate.slots + CONTEXT;
    let start_center = candidate.first_center - before as f64 * len - first_frame as f64;
    let read = units(&series.grid(start_center, len, slots), slots, 0.0);
    let own = before * PAIRS..(before + candidate.slots) * PAIRS;
    Units {
        log_ratio: read.log_ratio[own.clone()].to_vec(),
        weight: read.weight[own].to_vec(),
    }
}

/// Hann power spectra (first `KEPT_BINS` bins) of every hop, frame `j` centred on sample
/// `j * HOP`.
fn power_spectrogram(signal: &[f32]) -> Vec<f32> {
    let frames = signal.len().div_ceil(HOP);
    let mut stft = Stft::new();
    let mut out = vec![0f32; frames * KEPT_BINS];
    for (j, row) in out.chunks_mut(KEPT_BINS).enumerate() {
        stft.power(signal, 0, (j * HOP) as i64, row);
    }
    out
}

/// Joins the found windows into segments: windows with the same payload whose spans
/// overlap or nearly touch become one segment.
fn merge_segments(mut found: Vec<WindowResult>) -> Vec<Segment> {
    found.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
    let mut segments: Vec<Segment> = Vec::new();
    for w in found {
        if let Some(last) = segments
            .iter_mut()
            .rev()
            .find(|s| s.payload == w.payload && w.start_s <= s.end_s + 1.0)
        {
            last.start_s = last.start_s.min(w.start_s);
            last.end_s = last.end_s.max(w.end_s);
            last.false_alarm = last.false_alarm.min(w.false_alarm);
            continue;
        }
        segments.push(Segment {
            start_s: w.start_s,
            end_s: w.end_s,
            payload: w.payload,
            false_alarm: w.false_alarm,
            pitch_factor: w.warp.freq_scale,
            tempo_factor: 1.0 / w.warp.time_scale,
        });
    }
    segments.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
    segments
}

#[cfg(test)]
mod unit_tests {
    use std::f64::consts::TAU;

    use super::*;
    use crate::keystream::Keystream;

    #[test]
    fn noisy_band_pairs_weigh_less() {
        // Units of a period, all carrying +1: pair 0 reads cleanly, pair 1 noisily, pair 2
        // mostly the wrong way; the other pairs read nothing.
        let values = vec![1i8; UNITS_PER_PERIOD];
        let mut dithered = Vec::new();
        for slot in 0..SLOTS_PER_PERIOD {
            let wobble = if slot % 2 == 0 { 1.0 } else { -1.0 };
            dithered.push((slot * PAIRS, Complex::new(1.0 + 0.1 * wobble, 0.0)));
            dithered.push((slot * PAIRS + 1, Complex::new(1.0 + 2.0 * wobble, 0.0)));
            dithered.push((slot * PAIRS + 2, Complex::new(-0.5 + 0.1 * wobble, 0.0)));
        }
        let offsets = vec![Complex::new(1.0, 0.0); PAIRS];
        let weights = pair_reliability(&dithered, &values, &offsets);
        assert!(weights[0] > 10.0 * weights[1], "{weights:?}");
        assert!(weights[1] > 0.0);
        assert_eq!(weights[2], 0.0);
        assert!(weights[3..].iter().all(|&w| w == 0.0));
        assert!((weights.iter().sum::<f64>() - PAIRS as f64).abs() < 1e-9);
    }

    /// Unit phasors for `slots` slots from period slot 0 of an even period: each unit at
    /// its lattice point for `values` (or at a random angle where `values` has 0), turned by
    /// Gaussian noise of `spread` radians.
    fn noisy_units(
        layout: &Layout,
        values: &[i8],
        slots: usize,
        spread: f64,
        noise: &mut Keystream,
    ) -> Vec<Complex<f64>> {
        let mut uniform = || (noise.next_u32() as f64 + 0.5) / 4_294_967_296.0;
        let mut phasors = Vec::new();
        for k in 0..slots {
            let (unit_slot, parity) = period_position(k, 0, 0);
            for n in 0..PAIRS {
                let u = unit_slot * PAIRS + n;
                let gaussian = (-2.0 * uniform().ln()).sqrt() * (TAU * uniform()).cos();
                let angle = if values[u] == 0 {
                    TAU * uniform()
                } else {
                    TAU * layout.target_phase(parity, u, values[u]) + spread * gaussian
                };
                phasors.push(Complex::from_polar(1.0, angle));
            }
        }
        phasors
    }

    #[test]
    fn search_scores_are_calibrated_on_unmarked_units() {
        // Sync and data terms are each scaled to about unit variance under the null, so
        // adding them keeps the search's scores comparable with or without the data units.
        let detector = Detector::new(b"calibration").unwrap();
        let mut noise = Keystream::new(b"calibration", "noise");
        let unmarked = vec![0i8; UNITS_PER_PERIOD];
        for use_data in [false, true] {
            let mut scores = Vec::new();
            for _ in 0..40 {
                let phasors = noisy_units(&detector.layout, &unmarked, 120, 0.0, &mut noise);
                detector.search(&phasors, 120, use_data, |_, _, score| scores.push(score));
            }
            let mean = scores.iter().sum::<f64>() / scores.len() as f64;
            let variance =
                scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / scores.len() as f64;
            assert_eq!(scores.len(), 40 * SLOTS_PER_PERIOD * 2);
            assert!(mean.abs() < 0.15, "use_data {use_data}: mean {mean}");
            assert!(
                (0.6..1.3).contains(&variance),
                "use_data {use_data}: variance {variance}"
            );
        }
    }

    #[test]
    fn search_finds_the_period_from_data_units_alone() {
        // Eight periods whose sync units read nothing and whose data units carry a payload
        // under heavy noise: sync alone cannot place the period, the data units can.
        let detector = Detector::new(b"data units").unwrap();
        let mut noise = Keystream::new(b"data units", "noise");
        let mut values = detector
            .layout
            .unit_values(&conv_code::encode(0x0123_4567_89ab_cdef));
        for (value, role) in values.iter_mut().zip(&detector.layout.roles) {
            if matches!(role, Role::Sync(_)) {
                *value = 0;
            }
        }
        let phasors = noisy_units(&detector.layout, &values, 120, 1.7, &mut noise);
        let ranked = |use_data: bool| {
            let mut scores = Vec::new();
            detector.search(&phasors, 120, use_data, |shift, parity, score| {
                scores.push((score, shift, parity));
            });
            scores.sort_by(|a, b| b.0.total_cmp(&a.0));
            scores
        };
        let with_data = ranked(true);
        assert_eq!((with_data[0].1, with_data[0].2), (0, 0), "{with_data:?}");
        assert!(with_data[0].0 > with_data[1].0 + 2.0, "{with_data:?}");
        let sync_only = ranked(false);
        let true_score = sync_only.iter().find(|s| (s.1, s.2) == (0, 0)).unwrap().0;
        assert!(
            true_score < 3.0,
            "sync alone scored the true position {true_score}"
        );
    }

    #[test]
    fn search_grid_size() {
        let w = warps(&SearchRange::default());
        assert_eq!(w.len(), 130);
        assert_eq!(warps(&SearchRange::none()).len(), 1);
        let hypotheses = w.len() * REFINED_PHASES * SLOTS_PER_PERIOD * 2;
        assert_eq!(hypotheses, 62_400);
    }
}
