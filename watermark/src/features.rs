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

use crate::layout::{kernel, BANDS, KERNEL_FLAT, PAIRS};

/// A slot counts within this many dB of the loudest slot nearby.
pub(crate) const SLOT_RANGE_DB: f64 = 30.0;
/// "Nearby" for the rule above: this many slots either side.
const NEARBY_SLOTS: usize = 2;
/// A unit counts when both its cells are within this many dB of the slot's strongest band.
pub(crate) const CELL_RANGE_DB: f64 = 40.0;

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
    /// 1 for a reliable unit, 0 otherwise.
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
                    weight[k * PAIRS + n] = 1.0;
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
