//! The geometry of the mark: which time–frequency units exist, and what each one carries.
//!
//! All analysis runs at 16 kHz with a 64 ms window and a 16 ms hop, whatever the signal's
//! own rate, so every parameter here is a fixed number of seconds or hertz.
//!
//! * A *slot* is 32 hops (512 ms). A *band* is one of 32 bands spread evenly over 300–3400 Hz
//!   on the warped scale `ln(1 + f / 1 kHz)` (about 45 Hz wide at the bottom, 150 Hz at the
//!   top). A *cell* is one slot of one band; its level is the spectrogram's energy weighted by
//!   [`kernel`] in time and in frequency: flat around the cell's centre, falling linearly to
//!   zero towards the neighbouring cells' centres. The overlapping ramps make a cell's level
//!   change smoothly, not abruptly, when the detector's grid is a little off.
//! * A *unit* is the two cells of bands `2n` and `2n + 1` in one slot; its value is the log of
//!   their energy ratio, which gain changes, compression and anything else that scales a slot
//!   as a whole cannot move.
//! * A *period* is 15 slots (7.68 s), 240 units: 192 carry the coded payload bits (one coded
//!   bit each) and 48 carry keyed *sync* values known to the detector. The period repeats, so
//!   any 15 s window holds nearly two of them.
//!
//! Each unit carries its value by quantization index modulation: the unit's log ratio is
//! moved to the nearest point of a lattice with step [`QIM_STEP`], offset by a keyed dither,
//! and by half a step more for a −1 than for a +1. The dither differs between even and odd
//! periods, so the two copies a window holds are independent draws for the statistics.

use crate::conv_code::CODED_BITS;
use crate::keystream::Keystream;

/// The rate every analysis runs at.
pub(crate) const ANALYSIS_RATE: u32 = 16_000;
/// Analysis window (64 ms) and hop (16 ms) in samples at the analysis rate.
pub(crate) const FRAME_LEN: usize = 1024;
pub(crate) const HOP: usize = 256;
/// Frequency resolution of the analysis in Hz.
pub(crate) const BIN_HZ: f64 = ANALYSIS_RATE as f64 / FRAME_LEN as f64;

/// Hops per slot (512 ms) and slots per period (7.68 s).
pub(crate) const SLOT_HOPS: usize = 32;
pub(crate) const SLOTS_PER_PERIOD: usize = 15;

/// Bands, the band range in Hz, and the units (band pairs) per slot.
pub(crate) const BANDS: usize = 32;
pub(crate) const LOW_HZ: f64 = 300.0;
pub(crate) const HIGH_HZ: f64 = 3400.0;
pub(crate) const PAIRS: usize = BANDS / 2;

/// Units per period; all but the coded bits' are sync units.
pub(crate) const UNITS_PER_PERIOD: usize = SLOTS_PER_PERIOD * PAIRS;
pub(crate) const SYNC_UNITS: usize = UNITS_PER_PERIOD - CODED_BITS;

/// Lattice step of the quantization, in nepers of energy ratio (2.6 dB). Larger steps
/// survive more distortion but cost more energy per unit; 0.6 balanced the two on speech.
pub(crate) const QIM_STEP: f64 = 0.6;

/// Half-width of the flat top of the cell kernels, as a fraction of the slot or band spacing.
/// A flat top keeps more of a cell's step inside the cell (the mark costs less energy for the
/// same effect); the ramps to the neighbouring cells keep levels changing smoothly when the
/// detector's grid is a little off.
pub(crate) const KERNEL_FLAT: f64 = 0.25;

/// The cell kernel at `x` spacings from a cell's centre: 1 on the flat top, falling linearly
/// to 0 at `1 − KERNEL_FLAT`. Neighbouring kernels sum to 1.
pub(crate) fn kernel(x: f64) -> f64 {
    let x = x.abs();
    if x <= KERNEL_FLAT {
        1.0
    } else if x >= 1.0 - KERNEL_FLAT {
        0.0
    } else {
        (1.0 - KERNEL_FLAT - x) / (1.0 - 2.0 * KERNEL_FLAT)
    }
}

/// The warped frequency scale the bands are even on.
pub(crate) fn warp(hz: f64) -> f64 {
    (1.0 + hz / 1000.0).ln()
}

/// Position of `hz` on the band axis: band `b`'s centre is at `b + 0.5`, 0 is 300 Hz and
/// `BANDS` is 3400 Hz.
pub(crate) fn band_position(hz: f64) -> f64 {
    let (lo, hi) = (warp(LOW_HZ), warp(HIGH_HZ));
    (warp(hz) - lo) / (hi - lo) * BANDS as f64
}

/// What a unit carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// A keyed value the detector knows in advance.
    Sync(i8),
    /// One of the coded bits of the payload.
    Data(u16),
}

/// The keyed assignment of roles and dithers to the units of a period. Unit index is
/// `slot * PAIRS + pair`.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) roles: Vec<Role>,
    /// Lattice offsets as fractions of a step, for even and odd periods.
    pub(crate) dithers: [Vec<f64>; 2],
}

impl Layout {
    /// `pattern_key` is the subkey for the pattern, not the deployment key itself.
    pub(crate) fn new(pattern_key: &[u8]) -> Self {
        let order = Keystream::new(pattern_key, "unit order").permutation(UNITS_PER_PERIOD);
        let sync_values = Keystream::new(pattern_key, "sync values").signs(SYNC_UNITS);
        let mut roles = vec![Role::Sync(1); UNITS_PER_PERIOD];
        for (rank, &unit) in order.iter().enumerate() {
            roles[unit] = if rank < CODED_BITS {
                Role::Data(rank as u16)
            } else {
                Role::Sync(sync_values[rank - CODED_BITS])
            };
        }
        let dithers = ["dither even", "dither odd"].map(|label| {
            let mut stream = Keystream::new(pattern_key, label);
            (0..UNITS_PER_PERIOD)
                .map(|_| stream.next_u32() as f64 / 4_294_967_296.0)
                .collect()
        });
        Self { roles, dithers }
    }

    /// The value (±1) each unit of a period carries for a given codeword.
    pub(crate) fn unit_values(&self, codeword: &[i8]) -> Vec<i8> {
        self.roles
            .iter()
            .map(|role| match role {
                Role::Sync(v) => *v,
                Role::Data(bit) => codeword[*bit as usize],
            })
            .collect()
    }

    /// The lattice phase (fraction of a step) where unit `unit` of a period with parity
    /// `parity` sits when carrying `value`: the dither, plus half a step for −1.
    pub(crate) fn target_phase(&self, parity: usize, unit: usize, value: i8) -> f64 {
        let phase = self.dithers[parity][unit] + if value < 0 { 0.5 } else { 0.0 };
        phase.fract()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_axis_spans_the_telephone_band() {
        assert!(band_position(LOW_HZ).abs() < 1e-9);
        assert!((band_position(HIGH_HZ) - BANDS as f64).abs() < 1e-9);
        let period = (SLOTS_PER_PERIOD * SLOT_HOPS * HOP) as f64 / ANALYSIS_RATE as f64;
        assert!((period - 7.68).abs() < 1e-9);
    }

    #[test]
    fn every_unit_has_one_role() {
        let layout = Layout::new(b"pattern");
        let mut bits: Vec<u16> = layout
            .roles
            .iter()
            .filter_map(|r| match r {
                Role::Data(b) => Some(*b),
                Role::Sync(_) => None,
            })
            .collect();
        bits.sort_unstable();
        assert_eq!(bits, (0..CODED_BITS as u16).collect::<Vec<_>>());
        assert_ne!(layout.dithers[0], layout.dithers[1]);
        assert!(layout.dithers[0].iter().all(|d| (0.0..1.0).contains(d)));
    }
}
