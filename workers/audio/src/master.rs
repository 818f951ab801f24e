//! Audiobook mastering: consistent loudness across sentences, a peak ceiling, and room tone.
//!
//! Piper scales every sentence to full scale, so loud and quiet sentences come out alike and
//! peaks touch 0 dBFS. Here each sentence is brought to a target speech level (RMS over its
//! voiced frames), the gain may only drift slowly from sentence to sentence, and a limiter
//! holds peaks under the ceiling. The defaults meet the ACX audiobook requirements: RMS
//! between −23 and −18 dBFS, peaks at or below −3 dBFS, noise floor below −60 dBFS.

/// Mastering targets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MasteringSettings {
    /// RMS of voiced speech, in dBFS. Pauses pull the whole-file RMS (what ACX measures)
    /// about 2–4 dB lower, into the middle of the −23…−18 dBFS window.
    pub speech_rms_dbfs: f32,
    /// Peak ceiling in dBFS.
    pub peak_ceiling_dbfs: f32,
    /// Level of room tone (pauses, chapter heads and tails), in dBFS RMS.
    pub room_tone_dbfs: f32,
    /// Largest gain change between consecutive sentences, in dB.
    pub max_gain_step_db: f32,
}

impl Default for MasteringSettings {
    fn default() -> Self {
        Self {
            speech_rms_dbfs: -17.0,
            peak_ceiling_dbfs: -3.5,
            room_tone_dbfs: -70.0,
            max_gain_step_db: 1.5,
        }
    }
}

/// Stateful mastering over a stream of sentences.
#[derive(Debug)]
pub struct Master {
    settings: MasteringSettings,
    sample_rate: u32,
    gain_db: Option<f32>,
    noise: NoiseSource,
}

impl Master {
    pub fn new(settings: MasteringSettings, sample_rate: u32) -> Self {
        Self {
            settings,
            sample_rate,
            gain_db: None,
            noise: NoiseSource::new(0x5EED_F00D),
        }
    }

    /// Levels one sentence in place.
    pub fn sentence(&mut self, samples: &mut [f32]) {
        let Some(speech_rms) = voiced_rms(samples, self.sample_rate) else {
            return;
        };
        let wanted_db = self.settings.speech_rms_dbfs - to_db(speech_rms);
        let gain_db = match self.gain_db {
            None => wanted_db,
            Some(previous) => {
                let step = self.settings.max_gain_step_db;
                wanted_db.clamp(previous - step, previous + step)
            }
        };
        self.gain_db = Some(gain_db);
        let gain = from_db(gain_db);
        for s in samples.iter_mut() {
            *s *= gain;
        }
        limit(
            samples,
            from_db(self.settings.peak_ceiling_dbfs),
            self.sample_rate,
        );
        self.fill_quiet_with_room_tone(samples);
    }

    /// Room tone for `count` samples (pauses between sentences and chapter heads/tails).
    pub fn room_tone(&mut self, count: usize) -> Vec<f32> {
        let level = from_db(self.settings.room_tone_dbfs);
        (0..count).map(|_| self.noise.next() * level).collect()
    }

    /// Keeps the noise floor constant: the model's near-silent stretches would otherwise
    /// be quieter than the room tone around them, which listeners hear as gating.
    fn fill_quiet_with_room_tone(&mut self, samples: &mut [f32]) {
        let level = from_db(self.settings.room_tone_dbfs);
        for s in samples.iter_mut() {
            if s.abs() < level {
                *s += self.noise.next() * level;
            }
        }
    }
}

/// RMS over 20 ms frames louder than −50 dBFS (voiced speech); `None` if nothing is voiced.
fn voiced_rms(samples: &[f32], sample_rate: u32) -> Option<f32> {
    let frame = (sample_rate as usize / 50).max(1);
    let threshold = from_db(-50.0);
    let (mut sum, mut count) = (0f64, 0usize);
    for chunk in samples.chunks(frame) {
        let energy: f64 = chunk.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
        if (energy / chunk.len() as f64).sqrt() as f32 > threshold {
            sum += energy;
            count += chunk.len();
        }
    }
    (count > 0).then(|| (sum / count as f64).sqrt() as f32)
}

/// Look-ahead peak limiter over a whole sentence: gain reductions start 2 ms before a peak
/// and recover over 50 ms, so there are no clicks and no sample exceeds `ceiling`.
fn limit(samples: &mut [f32], ceiling: f32, sample_rate: u32) {
    if samples.iter().all(|s| s.abs() <= ceiling) {
        return;
    }
    let lookahead = (sample_rate as usize / 500).max(1);
    let release = (-1.0 / (0.050 * sample_rate as f32)).exp();
    let needed: Vec<f32> = samples
        .iter()
        .map(|s| {
            if s.abs() > ceiling {
                ceiling / s.abs()
            } else {
                1.0
            }
        })
        .collect();
    // Each sample takes the deepest reduction needed within the next `lookahead` samples.
    let gains: Vec<f32> = (0..needed.len())
        .map(|i| {
            needed[i..(i + lookahead + 1).min(needed.len())]
                .iter()
                .copied()
                .fold(1.0, f32::min)
        })
        .collect();
    // Forward pass: release smoothly, never above what is needed.
    let mut g = 1.0f32;
    for (sample, &target) in samples.iter_mut().zip(&gains) {
        g = if target < g {
            target
        } else {
            target.min(1.0 - (1.0 - g) * release)
        };
        *sample *= g;
        *sample = sample.clamp(-ceiling, ceiling);
    }
}

/// Deterministic pink-ish noise (xorshift, one-pole smoothed), normalized to unit RMS.
#[derive(Debug)]
struct NoiseSource {
    state: u64,
    smooth: f32,
}

impl NoiseSource {
    fn new(seed: u64) -> Self {
        Self {
            state: seed | 1,
            smooth: 0.0,
        }
    }

    fn next(&mut self) -> f32 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let white = (self.state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
        self.smooth = 0.7 * self.smooth + 0.3 * white;
        // RMS of the smoothed uniform noise is about 0.3 × 0.577 / sqrt(1 − 0.49).
        self.smooth / 0.2425
    }
}

pub fn to_db(amplitude: f32) -> f32 {
    20.0 * amplitude.max(1e-10).log10()
}

pub fn from_db(db: f32) -> f32 {
    10f32.powf(db / 20.0)
}

/// Whole-program loudness measurement, in the terms of the ACX requirements.
#[derive(Debug, Clone, Default)]
pub struct LoudnessMeter {
    sum_squares: f64,
    samples: u64,
    peak: f32,
    quietest_window: Option<f64>,
    window_sum: f64,
    window_len: usize,
    window_size: usize,
}

/// The measured numbers.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Loudness {
    pub rms_dbfs: f32,
    pub peak_dbfs: f32,
    /// RMS of the quietest 500 ms window: the noise floor.
    pub noise_floor_dbfs: f32,
}

impl Loudness {
    /// Whether the ACX audiobook requirements hold.
    pub fn meets_acx(&self) -> bool {
        (-23.0..=-18.0).contains(&self.rms_dbfs)
            && self.peak_dbfs <= -3.0
            && self.noise_floor_dbfs <= -60.0
    }
}

impl LoudnessMeter {
    pub fn new(sample_rate: u32) -> Self {
        Self {
            window_size: (sample_rate / 2) as usize,
            ..Default::default()
        }
    }

    pub fn add(&mut self, samples: &[f32]) {
        for &s in samples {
            let sq = f64::from(s) * f64::from(s);
            self.sum_squares += sq;
            self.samples += 1;
            self.peak = self.peak.max(s.abs());
            self.window_sum += sq;
            self.window_len += 1;
            if self.window_len == self.window_size {
                let rms = self.window_sum / self.window_len as f64;
                self.quietest_window = Some(self.quietest_window.map_or(rms, |q| q.min(rms)));
                self.window_sum = 0.0;
                self.window_len = 0;
            }
        }
    }

    pub fn result(&self) -> Loudness {
        let rms = if self.samples == 0 {
            0.0
        } else {
            (self.sum_squares / self.samples as f64).sqrt()
        };
        Loudness {
            rms_dbfs: to_db(rms as f32),
            peak_dbfs: to_db(self.peak),
            noise_floor_dbfs: to_db(self.quietest_window.unwrap_or(0.0).sqrt() as f32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(amplitude: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| amplitude * (i as f32 * 0.07).sin())
            .collect()
    }

    #[test]
    fn sentences_of_different_levels_come_out_alike_and_under_the_ceiling() {
        let mut master = Master::new(
            MasteringSettings {
                max_gain_step_db: 40.0,
                ..Default::default()
            },
            22050,
        );
        let mut loud = tone(0.99, 22050);
        let mut quiet = tone(0.05, 22050);
        master.sentence(&mut loud);
        master.sentence(&mut quiet);
        let level = |s: &[f32]| to_db(voiced_rms(s, 22050).unwrap());
        assert!(
            (level(&loud) - level(&quiet)).abs() < 0.5,
            "{} vs {}",
            level(&loud),
            level(&quiet)
        );
        let ceiling = from_db(-3.5);
        assert!(loud.iter().chain(&quiet).all(|s| s.abs() <= ceiling + 1e-6));
    }

    #[test]
    fn limiter_catches_a_single_spike() {
        let mut samples = tone(0.3, 4000);
        samples[2000] = 1.0;
        limit(&mut samples, 0.5, 22050);
        assert!(samples.iter().all(|s| s.abs() <= 0.5));
        // Far from the spike the signal is untouched.
        assert!((samples[100] - 0.3 * (100.0f32 * 0.07).sin()).abs() < 1e-6);
    }

    #[test]
    fn room_tone_sits_near_its_level() {
        let mut master = Master::new(MasteringSettings::default(), 22050);
        let tone = master.room_tone(22050);
        let rms = (tone.iter().map(|s| s * s).sum::<f32>() / tone.len() as f32).sqrt();
        assert!((to_db(rms) + 70.0).abs() < 2.0, "{}", to_db(rms));
    }
}
