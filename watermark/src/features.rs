//! What the detector measures, computed identically by the embedder (on the host, to know
//! where each unit starts from) and by the detector (on whatever it is given).
//!
//! Cell levels come from per-frame band energies weighted by the cell kernel in time
//! ([`crate::layout::kernel`]): flat around the slot's centre, falling to zero three
//! quarters of a slot away. A unit's value is the log ratio of its two cells.
//!
//! Only *reliable* units count: the slot must be within [`SLOT_RANGE_DB`] of the loudest
//! slot within about a second (and, when embedding, above an absolute floor), and both cells
//! within [`CELL_RANGE_DB`] of the slot's strongest band. Pauses and spectral holes carry
//! nothing: a codec or added noise would rewrite them, and marking them gains nothing.
//!
//! Reliable units do not all survive alike, so the detector weighs each by how well units
//! at its levels kept the mark through lossy coding ([`unit_weight`]). The weights come
//! from the audio alone, never from the key, so the false-alarm bounds (which allow any
//! such weights) hold unchanged.

use crate::layout::{kernel, BANDS, KERNEL_FLAT, PAIRS};

/// A slot counts within this many dB of the loudest slot nearby.
pub(crate) const SLOT_RANGE_DB: f64 = 30.0;
/// "Nearby" for the rule above: this many slots either side.
const NEARBY_SLOTS: usize = 2;
/// A unit counts when both its cells are within this many dB of the slot's strongest band.
pub(crate) const CELL_RANGE_DB: f64 = 40.0;

/// How much of the mark a reliable unit kept, by its levels: the mean lattice alignment of
/// units after Opus at 24 kbit/s, relative to the best, measured on 35,000 units of 20
/// marked speech files (piper-tts, −20 dBFS), as (dB, weight) points between which the
/// weight is interpolated.
///
/// By how far the unit's quieter cell lies below the slot's strongest band: a codec spends
/// few bits in spectral valleys, and units 30–40 dB down kept a quarter of what units 10–15
/// dB down kept; units whose cells are both near the strongest band (a formant peak) keep
/// less too.
const QUIETER_CELL_CURVE: [(f64, f64); 7] = [
    (-35.0, 0.26),
    (-27.5, 0.37),
    (-22.5, 0.51),
    (-17.5, 0.85),
    (-12.5, 1.0),
    (-7.5, 0.88),
    (-2.5, 0.59),
];
/// By how far the slot lies below the loudest slot nearby: slots 20–30 dB down kept a fifth.
const SLOT_LEVEL_CURVE: [(f64, f64); 7] = [
    (-25.0, 0.2),
    (-17.5, 0.6),
    (-12.5, 0.84),
    (-8.0, 0.94),
    (-4.5, 1.0),
    (-2.0, 0.95),
    (-0.5, 0.75),
];

/// The weight of a reliable unit whose quieter cell is `quieter_cell_db` below its slot's
/// strongest band and whose slot is `slot_db` below the loudest slot nearby (both ≤ 0).
/// Weighing the soft values this way took blind recovery after Opus at 24 kbit/s from 32
/// to 39 of 40 files (the 20 the curves were not measured on included), and raised the
/// scores after MP3 and AAC at 32 kbit/s too.
pub(crate) fn unit_weight(quieter_cell_db: f64, slot_db: f64) -> f64 {
    interpolate(&QUIETER_CELL_CURVE, quieter_cell_db) * interpolate(&SLOT_LEVEL_CURVE, slot_db)
}

/// Piecewise-linear through `points` (sorted by x), constant beyond the ends.
fn interpolate(points: &[(f64, f64)], x: f64) -> f64 {
    let (first, last) = (points[0], points[points.len() - 1]);
    if x <= first.0 {
        return first.1;
    }
    for pair in points.windows(2) {
        let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
        if x <= x1 {
            return y0 + (x - x0) / (x1 - x0) * (y1 - y0);
        }
    }
    last.1
}

/// Weight of frame `frame` in the cell centred on `center` (both in hops), slots `spacing`
/// hops apart.
pub(crate) fn time_weight(frame: f64, center: f64, spacing: f64) -> f64 {
    kernel((frame - center) / spacing)
}

/// Running sums of per-frame band energies, so that any kernel-weighted cell costs O(1).
#[derive(Debug, Clone)]
pub(crate) struct BandSeries {
    frames: usize,
    /// Per band, `frames + 1` running sums of `E(j)` and of `j · E(j)`.
    sum: Vec<f64>,
    moment: Vec<f64>,
}

impl BandSeries {
    /// `band_frames` holds `frames × BANDS` energies, frame-major.
    pub(crate) fn new(band_frames: &[f64], frames: usize) -> Self {
        let mut sum = vec![0f64; BANDS * (frames + 1)];
        let mut moment = vec![0f64; BANDS * (frames + 1)];
        for b in 0..BANDS {
            let row = b * (frames + 1);
            for j in 0..frames {
                let e = band_frames[j * BANDS + b];
                sum[row + j + 1] = sum[row + j] + e;
                moment[row + j + 1] = moment[row + j] + j as f64 * e;
            }
        }
        Self {
            frames,
            sum,
            moment,
        }
    }

    /// `Σ_j time_weight(j, center, spacing) · E_band(j)` over the frames held.
    pub(crate) fn cell(&self, band: usize, center: f64, spacing: f64) -> f64 {
        let row = band * (self.frames + 1);
        let clamp = |x: f64| x.clamp(0.0, self.frames as f64) as usize;
        let s = |a: usize, b: usize| self.sum[row + b.max(a)] - self.sum[row + a];
        let m = |a: usize, b: usize| self.moment[row + b.max(a)] - self.moment[row + a];
        let flat = KERNEL_FLAT;
        let ramp = 1.0 - 2.0 * flat;
        // Rising ramp, flat top, falling ramp: each a run of frames with linear weights.
        let rise_from = clamp((center - spacing * (1.0 - flat)).floor() + 1.0);
        let top_from = clamp((center - spacing * flat).ceil()).max(rise_from);
        let fall_from = clamp((center + spacing * flat).floor() + 1.0).max(top_from);
        let fall_to = clamp((center + spacing * (1.0 - flat)).ceil()).max(fall_from);
        let c = center / spacing;
        let rising =
            ((1.0 - flat - c) * s(rise_from, top_from) + m(rise_from, top_from) / spacing) / ramp;
        let top = s(top_from, fall_from);
        let falling =
            ((1.0 - flat + c) * s(fall_from, fall_to) - m(fall_from, fall_to) / spacing) / ramp;
        (rising + top + falling).max(0.0)
    }

    /// Cell energies (`slots × BANDS`) of the slot grid whose first slot is centred at
    /// `first_center` hops, slots `slot_len` hops apart.
    pub(crate) fn grid(&self, first_center: f64, slot_len: f64, slots: usize) -> Vec<f64> {
        let mut out = vec![0f64; slots * BANDS];
        for k in 0..slots {
            let center = first_center + k as f64 * slot_len;
            for b in 0..BANDS {
                out[k * BANDS + b] = self.cell(b, center, slot_len);
            }
        }
        out
    }
}

/// The units of a run of slots: log ratio of each band pair and whether it counts.
#[derive(Debug, Clone)]
pub(crate) struct Units {
    /// `slots × PAIRS` values `ln(E(2n) / E(2n + 1))`.
    pub(crate) log_ratio: Vec<f64>,
    /// How much a reliable unit counts ([`unit_weight`], at most 1); 0 for the others.
    pub(crate) weight: Vec<f32>,
}

fn from_db(db: f64) -> f64 {
    10f64.powf(db / 10.0)
}

/// Computes the units of `slots` slots from their cell energies (`slots × BANDS`). `floor` is
/// the least slot energy that can count.
pub(crate) fn units(cells: &[f64], slots: usize, floor: f64) -> Units {
    assert_eq!(cells.len(), slots * BANDS);
    let slot_energy: Vec<f64> = cells.chunks(BANDS).map(|c| c.iter().sum()).collect();
    let slot_range = from_db(-SLOT_RANGE_DB);
    let cell_range = from_db(-CELL_RANGE_DB);
    let mut log_ratio = vec![0f64; slots * PAIRS];
    let mut weight = vec![0f32; slots * PAIRS];
    for k in 0..slots {
        let lo = k.saturating_sub(NEARBY_SLOTS);
        let hi = (k + NEARBY_SLOTS + 1).min(slots);
        let nearby = slot_energy[lo..hi].iter().copied().fold(0.0, f64::max);
        let row = &cells[k * BANDS..(k + 1) * BANDS];
        let strongest = row.iter().copied().fold(0.0, f64::max);
        let slot_counts = slot_energy[k] > 0.0 && slot_energy[k] >= floor.max(nearby * slot_range);
        for n in 0..PAIRS {
            let (a, b) = (row[2 * n], row[2 * n + 1]);
            if a > 0.0 && b > 0.0 {
                log_ratio[k * PAIRS + n] = (a / b).ln();
                if slot_counts && a.min(b) >= strongest * cell_range {
                    let quieter_cell_db = 10.0 * (a.min(b) / strongest).log10();
                    let slot_db = 10.0 * (slot_energy[k] / nearby).log10();
                    weight[k * PAIRS + n] = unit_weight(quieter_cell_db, slot_db) as f32;
                }
            }
        }
    }
    Units { log_ratio, weight }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_weights_follow_the_measured_curves() {
        // On the points, between them, and held beyond the ends.
        assert!((unit_weight(-12.5, -4.5) - 1.0).abs() < 1e-12);
        assert!((unit_weight(-35.0, -4.5) - 0.26).abs() < 1e-12);
        assert!((unit_weight(-40.0, -4.5) - 0.26).abs() < 1e-12);
        assert!((unit_weight(-15.0, -4.5) - 0.925).abs() < 1e-12);
        assert!((unit_weight(-12.5, -30.0) - 0.2).abs() < 1e-12);
        assert!((unit_weight(0.0, 0.0) - 0.59 * 0.75).abs() < 1e-12);
        // Deep valleys and quiet slots count for less than mid-level units, never nothing.
        assert!(unit_weight(-38.0, -25.0) > 0.0);
        assert!(unit_weight(-38.0, -4.5) < unit_weight(-20.0, -4.5));
    }

    #[test]
    fn units_carry_their_weights() {
        // One slot: band pair 0 at −15 dB under the strongest band (pair 1's first band),
        // pair 2 at −35 dB, pair 3 with a band 50 dB down (not reliable).
        let mut cells = vec![from_db(-5.0); BANDS];
        cells[1] = from_db(-15.0);
        cells[2] = 1.0;
        cells[4] = from_db(-35.0);
        cells[6] = from_db(-50.0);
        let read = units(&cells, 1, 0.0);
        let slot_db = 0.0; // the only slot is the loudest nearby
        assert!((read.weight[0] as f64 - unit_weight(-15.0, slot_db)).abs() < 1e-6);
        assert!((read.weight[2] as f64 - unit_weight(-35.0, slot_db)).abs() < 1e-6);
        assert_eq!(read.weight[3], 0.0);
        assert!(read.weight[0] > read.weight[2]);
    }

    #[test]
    fn running_sums_match_direct_sums() {
        let frames = 200;
        let band_frames: Vec<f64> = (0..frames * BANDS)
            .map(|i| 1.0 + ((i * 7919) % 101) as f64 / 13.0)
            .collect();
        let series = BandSeries::new(&band_frames, frames);
        for &(center, half) in &[
            (50.0, 32.0),
            (77.3, 30.1),
            (5.5, 32.0),
            (190.2, 33.7),
            (64.0, 32.0),
        ] {
            for b in [0, 5, BANDS - 1] {
                let direct: f64 = (0..frames)
                    .map(|j| time_weight(j as f64, center, half) * band_frames[j * BANDS + b])
                    .sum();
                let fast = series.cell(b, center, half);
                assert!(
                    (direct - fast).abs() < 1e-9 * direct.max(1.0),
                    "{center} {half} {b}: {direct} vs {fast}"
                );
            }
        }
    }
}
