//! End-to-end tests on synthetic signals: speech-like (voiced syllables with moving pitch and
//! formants, fricative noise bursts, pauses with room tone), and unmarked noise, music-like
//! and silent signals for the false-alarm side.

use crate::resample::resample;
use crate::{
    detect, detect_each, embed, Detection, Detector, Embedder, Payload, SearchRange,
    SUPPORTED_SAMPLE_RATES,
};

const KEY: &[u8] = b"test deployment key";

/// A small deterministic generator (xorshift), so the tests need no dependencies.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [−1, 1).
    fn signed(&mut self) -> f64 {
        2.0 * self.next() - 1.0
    }
}

fn rms_dbfs(x: &[f32]) -> f64 {
    let p = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / x.len() as f64;
    10.0 * p.log10()
}

fn scale_to_dbfs(x: &mut [f32], dbfs: f64) {
    let gain = 10f64.powf((dbfs - rms_dbfs(x)) / 20.0) as f32;
    x.iter_mut().for_each(|v| *v *= gain);
}

/// Speech-like signal: sentences of syllables separated by pauses of room tone. Voiced
/// syllables are harmonic series on a gliding pitch (85–170 Hz) shaped by three formants
/// that move from syllable to syllable; unvoiced ones are bursts of differentiated noise.
/// Mastered to −20 dBFS RMS.
fn speech_like(rate: u32, seconds: f64, seed: u64) -> Vec<f32> {
    let mut noise = Noise(seed | 1);
    let len = (seconds * rate as f64) as usize;
    let mut out = vec![0f32; len];
    let tau = std::f64::consts::TAU;
    let mut t = 0.3;
    let mut phases = [0f64; 60];
    let mut previous_noise = 0.0;
    while t < seconds - 0.5 {
        let sentence_end = (t + 1.5 + 1.5 * noise.next()).min(seconds - 0.3);
        let mut f0 = 95.0 + 50.0 * noise.next();
        while t < sentence_end {
            let duration = 0.12 + 0.2 * noise.next();
            let voiced = noise.next() < 0.75;
            let formants = [
                300.0 + 500.0 * noise.next(),
                900.0 + 1300.0 * noise.next(),
                2300.0 + 800.0 * noise.next(),
            ];
            let f0_end = (f0 * (0.85 + 0.3 * noise.next())).clamp(85.0, 170.0);
            let start = (t * rate as f64) as usize;
            let end = (((t + duration) * rate as f64) as usize).min(len);
            for (i, sample) in out.iter_mut().enumerate().take(end).skip(start) {
                let progress = (i - start) as f64 / (end - start) as f64;
                let envelope = (progress * std::f64::consts::PI).sin().powf(0.6);
                if voiced {
                    let pitch = f0 + (f0_end - f0) * progress;
                    let mut value = 0.0;
                    for (h, phase) in phases.iter_mut().enumerate() {
                        let freq = pitch * (h + 1) as f64;
                        if freq > 0.45 * rate as f64 {
                            break;
                        }
                        *phase = (*phase + tau * freq / rate as f64) % tau;
                        let resonance: f64 = formants
                            .iter()
                            .zip([1.0, 0.6, 0.35])
                            .map(|(&f, gain)| gain / (1.0 + ((freq - f) / (0.12 * f)).powi(2)))
                            .sum();
                        value += phase.sin() * resonance / (h + 1) as f64;
                    }
                    *sample += (envelope * value) as f32;
                } else {
                    let white = noise.signed();
                    let hiss = white - 0.9 * previous_noise;
                    previous_noise = white;
                    *sample += (0.15 * envelope * hiss) as f32;
                }
            }
            f0 = f0_end;
            t += duration;
        }
        t += 0.3 + 0.5 * noise.next();
    }
    scale_to_dbfs(&mut out, -20.0);
    // Room tone at −70 dBFS everywhere.
    let floor = 10f64.powf(-70.0 / 20.0) * 3f64.sqrt();
    for v in &mut out {
        *v += (floor * noise.signed()) as f32;
    }
    out
}

fn white_noise(rate: u32, seconds: f64, seed: u64) -> Vec<f32> {
    let mut noise = Noise(seed | 1);
    let mut out: Vec<f32> = (0..(seconds * rate as f64) as usize)
        .map(|_| noise.signed() as f32)
        .collect();
    scale_to_dbfs(&mut out, -20.0);
    out
}

/// Pink-ish noise: a sum of octave-spaced random walks (Voss–McCartney).
fn pink_noise(rate: u32, seconds: f64, seed: u64) -> Vec<f32> {
    let mut noise = Noise(seed | 1);
    let mut rows = [0f64; 12];
    let mut out: Vec<f32> = (0..(seconds * rate as f64) as usize)
        .map(|i| {
            let k = (i + 1).trailing_zeros() as usize;
            if k < rows.len() {
                rows[k] = noise.signed();
            }
            (rows.iter().sum::<f64>() + noise.signed()) as f32
        })
        .collect();
    scale_to_dbfs(&mut out, -20.0);
    out
}

/// Music-like: chords of decaying harmonic tones changing twice a second.
fn music_like(rate: u32, seconds: f64, seed: u64) -> Vec<f32> {
    let mut noise = Noise(seed | 1);
    let len = (seconds * rate as f64) as usize;
    let mut out = vec![0f32; len];
    let beat = rate as usize / 2;
    for start in (0..len).step_by(beat) {
        let root = 110.0 * 2f64.powf((noise.next() * 24.0).floor() / 12.0);
        for ratio in [1.0, 1.26, 1.5, 2.0] {
            let f = root * ratio;
            for (i, sample) in out.iter_mut().enumerate().skip(start).take(beat * 2) {
                let t = (i - start) as f64 / rate as f64;
                let decay = (-3.0 * t).exp();
                let tone: f64 = (1..6)
                    .map(|h| (std::f64::consts::TAU * f * h as f64 * t).sin() / h as f64)
                    .sum();
                *sample += (decay * tone) as f32;
            }
        }
    }
    scale_to_dbfs(&mut out, -20.0);
    out
}

fn snr_db(original: &[f32], marked: &[f32]) -> f64 {
    let signal: f64 = original.iter().map(|&x| (x as f64).powi(2)).sum();
    let noise: f64 = original
        .iter()
        .zip(marked)
        .map(|(&x, &y)| ((y - x) as f64).powi(2))
        .sum();
    10.0 * (signal / noise).log10()
}

fn assert_found(detection: &Detection, payload: Payload, what: &str) {
    assert!(detection.found, "{what}: not found: {detection:?}");
    assert_eq!(detection.payload, Some(payload), "{what}: {detection:?}");
    assert!(detection.false_alarm <= 1e-8, "{what}: {detection:?}");
}

fn assert_not_found(detection: &Detection, what: &str) {
    assert!(!detection.found, "{what}: false detection: {detection:?}");
    assert!(detection.false_alarm > 1e-8, "{what}: {detection:?}");
    assert!(detection.ranges.is_empty(), "{what}: {detection:?}");
}

#[test]
fn round_trip_at_every_rate() {
    for (i, &rate) in SUPPORTED_SAMPLE_RATES.iter().enumerate() {
        let host = speech_like(rate, 20.0, 11 + i as u64);
        let payload = Payload::for_record(KEY, 1000 + i as u32);
        let marked = embed(KEY, rate, payload, &host).unwrap();
        assert_eq!(marked.len(), host.len());
        let snr = snr_db(&host, &marked);
        assert!(snr >= 35.0, "{rate} Hz: SNR {snr:.2} dB");
        let detection = detect(KEY, rate, &marked).unwrap();
        assert_found(&detection, payload, &format!("{rate} Hz"));
        assert_eq!(
            detection.payload.unwrap().record_id(KEY),
            Some(1000 + i as u32)
        );
        let (start, end) = detection.ranges[0];
        assert!(start < 2.0 && end > 17.0, "{rate} Hz: range {start}–{end}");
    }
}

#[test]
fn streaming_matches_one_shot() {
    let rate = 44_100;
    let host = speech_like(rate, 12.0, 5);
    let payload = Payload(0x0123_4567_89ab_cdef);
    let whole = embed(KEY, rate, payload, &host).unwrap();
    let mut embedder = Embedder::new(KEY, rate, payload).unwrap();
    let mut streamed = Vec::new();
    let mut sizes = [1, 7, 4099, 333, 65_536, 12_345].iter().cycle();
    let mut rest = &host[..];
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap()).min(rest.len());
        streamed.extend(embedder.process(&rest[..n]));
        rest = &rest[n..];
    }
    streamed.extend(embedder.finish());
    assert_eq!(streamed.len(), host.len());
    assert!(
        whole == streamed,
        "streamed output differs from one-shot output"
    );
}

#[test]
fn survives_offset_and_crop() {
    let rate = 22_050;
    let host = speech_like(rate, 40.0, 7);
    let payload = Payload(0xfeed_face_cafe_beef);
    let marked = embed(KEY, rate, payload, &host).unwrap();
    // Drop an odd number of samples (a codec's delay), then keep 15 s from the middle.
    let start = 12_345 + 9 * rate as usize;
    let crop = &marked[start..start + 15 * rate as usize];
    assert_found(&detect(KEY, rate, crop).unwrap(), payload, "15 s crop");
}

#[test]
fn survives_resampling_to_16_khz_and_back() {
    let rate = 48_000;
    let host = speech_like(rate, 20.0, 13);
    let payload = Payload(0x1111_2222_3333_4444);
    let marked = embed(KEY, rate, payload, &host).unwrap();
    let round_trip = resample(&resample(&marked, rate, 16_000), 16_000, rate);
    assert_found(
        &detect(KEY, rate, &round_trip).unwrap(),
        payload,
        "16 kHz round trip",
    );
}

#[test]
fn survives_speed_changes_of_five_percent() {
    let rate = 22_050;
    let host = speech_like(rate, 25.0, 17);
    let payload = Payload(0x5555_6666_7777_8888);
    let marked = embed(KEY, rate, payload, &host).unwrap();
    // Resampling to rate / speed and playing back at `rate` changes speed and pitch alike.
    for (resampled_rate, speed) in [(21_000, 1.05), (23_210, 0.95)] {
        let changed = resample(&marked, rate, resampled_rate);
        let detection = detect(KEY, rate, &changed).unwrap();
        assert_found(&detection, payload, &format!("speed {speed}"));
        let segment = &detection.segments[0];
        assert!((segment.pitch_factor - speed).abs() < 0.01, "{segment:?}");
        assert!((segment.tempo_factor - speed).abs() < 0.01, "{segment:?}");
    }
}

#[test]
fn unmarked_signals_and_wrong_keys_find_nothing() {
    let rate = 22_050;
    let unmarked = [
        ("white noise", white_noise(rate, 20.0, 1)),
        ("pink noise", pink_noise(rate, 20.0, 2)),
        ("music-like", music_like(rate, 20.0, 3)),
        ("speech-like", speech_like(rate, 20.0, 4)),
        ("silence", vec![0.0; 20 * rate as usize]),
    ];
    for (what, signal) in &unmarked {
        assert_not_found(&detect(KEY, rate, signal).unwrap(), what);
    }
    let payload = Payload(0x0123_4567_89ab_cdef);
    let marked = embed(KEY, rate, payload, &unmarked[3].1).unwrap();
    for wrong in [&b"another deployment"[..], b"test deployment kez", b"x"] {
        assert_not_found(&detect(wrong, rate, &marked).unwrap(), "wrong key");
    }
}

#[test]
fn detecting_with_several_keys_at_once_matches_one_at_a_time() {
    let rate = 22_050;
    // 40 s: five half-overlapping 15 s windows, the last flush with the end, and where they
    // find nothing, one 60 s window over the whole signal.
    let payload = Payload::for_record(KEY, 77);
    let marked = embed(KEY, rate, payload, &speech_like(rate, 40.0, 41)).unwrap();
    let keys: [&[u8]; 3] = [b"another deployment", KEY, b"a third one"];
    let detectors: Vec<Detector> = keys.iter().map(|k| Detector::new(k).unwrap()).collect();
    let together = detect_each(&detectors, rate, &marked).unwrap();
    assert_eq!(together.len(), keys.len());
    for (key, detection) in keys.iter().zip(&together) {
        assert_eq!(detection, &detect(key, rate, &marked).unwrap());
        let windows = if *key == KEY { 5 } else { 6 };
        assert_eq!(detection.windows, windows, "{detection:?}");
    }
    assert_found(&together[1], payload, "the marking key among others");
    assert_not_found(&together[0], "another key");
    assert_not_found(&together[2], "a third key");

    assert_eq!(detect_each(&[], rate, &marked).unwrap(), Vec::new());
    let narrow = Detector::new(KEY)
        .unwrap()
        .with_search_range(SearchRange::none());
    assert_eq!(
        detect_each(&[detectors[0].clone(), narrow], rate, &marked),
        Err(crate::WatermarkError::MixedSearchRanges)
    );
}

#[test]
fn silence_stays_silent() {
    let rate = 16_000;
    let mut host = speech_like(rate, 16.0, 23);
    // Five seconds of digital silence and five of room tone in the middle.
    host[4 * rate as usize..9 * rate as usize].fill(0.0);
    let marked = embed(KEY, rate, Payload(42), &host).unwrap();
    let silent = 4 * rate as usize + 1000..9 * rate as usize - 1000;
    assert!(marked[silent.clone()].iter().all(|&x| x == 0.0));
    // Room tone (−70 dBFS) keeps its level: no mark above it.
    let pause = speech_like(rate, 16.0, 23);
    let marked_pause = embed(KEY, rate, Payload(42), &pause).unwrap();
    let difference: Vec<f32> = pause
        .iter()
        .zip(&marked_pause)
        .map(|(a, b)| b - a)
        .collect();
    // In the pause before the first sentence (the first 0.3 s), the mark is a fraction of
    // the room tone, far below hearing.
    let head = 0..(0.25 * rate as f64) as usize;
    let mark = rms_dbfs(&difference[head.clone()]);
    assert!(
        mark < rms_dbfs(&pause[head]) - 10.0 && mark < -80.0,
        "{mark:.1} dBFS"
    );
}

#[test]
fn a_splice_shows_two_ranges() {
    let rate = 22_050;
    let payload = Payload(0xabcd_ef01_2345_6789);
    let first = embed(KEY, rate, payload, &speech_like(rate, 20.0, 31)).unwrap();
    let middle = speech_like(rate, 20.0, 32);
    let last = embed(KEY, rate, payload, &speech_like(rate, 20.0, 33)).unwrap();
    let spliced: Vec<f32> = [first, middle, last].concat();
    let detection = detect(KEY, rate, &spliced).unwrap();
    assert_found(&detection, payload, "splice");
    assert_eq!(detection.ranges.len(), 2, "{detection:?}");
    let (a, b) = (detection.ranges[0], detection.ranges[1]);
    assert!(a.0 < 3.0 && (15.0..26.0).contains(&a.1), "{a:?}");
    assert!((34.0..45.0).contains(&b.0) && b.1 > 57.0, "{b:?}");
}

#[test]
fn short_and_invalid_inputs() {
    let payload = Payload(7);
    for rate in [16_000, 44_100] {
        for len in [0, 1, 1000, rate as usize / 2] {
            let host = speech_like(rate, 1.0, 3)[..len].to_vec();
            let marked = embed(KEY, rate, payload, &host).unwrap();
            assert_eq!(marked.len(), len);
            assert!(!detect(KEY, rate, &marked).unwrap().found);
        }
    }
    assert_eq!(
        embed(KEY, 8_000, payload, &[0.0; 100]),
        Err(crate::WatermarkError::UnsupportedSampleRate(8_000))
    );
    assert!(detect(b"", 16_000, &[0.0; 100]).is_err());
}

#[test]
fn output_lags_input_by_about_nine_seconds() {
    let rate = 24_000;
    let host = speech_like(rate, 30.0, 9);
    let mut embedder = Embedder::new(KEY, rate, Payload(1)).unwrap();
    let mut lag = 0;
    let mut produced = 0;
    for (i, chunk) in host.chunks(rate as usize / 10).enumerate() {
        produced += embedder.process(chunk).len();
        lag = lag.max((i + 1) * chunk.len() - produced);
    }
    let seconds = lag as f64 / rate as f64;
    assert!((8.5..10.0).contains(&seconds), "lag {seconds:.2} s");
}

#[test]
fn embedders_and_detectors_can_move_between_threads() {
    fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Embedder>();
    send_and_sync::<crate::Detector>();
}

/// Every embedding ends, whatever the host: a period whose budget the previous period's
/// spill-over alone exceeds (a loud end followed by little or nothing) once kept shrinking
/// its own steps forever. Short books end that way: speech, a second of room tone, the end.
#[test]
fn embedding_always_ends() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rate = 22050;
        for (i, tenths) in (50..=100).step_by(3).enumerate() {
            let seconds = tenths as f64 / 10.0;
            for variant in 0..3u64 {
                let mut host = speech_like(rate, seconds, 500 + 7 * i as u64 + variant);
                if variant == 2 {
                    // Loud to the end, then near-silent room tone.
                    scale_to_dbfs(&mut host, -12.0);
                    let mut tone = Noise(99 + i as u64);
                    host.extend((0..rate).map(|_| (tone.signed() * 2e-3) as f32));
                }
                let payload = Payload::for_record(KEY, (i as u32) << 4 | variant as u32);
                let marked = embed(KEY, rate, payload, &host).unwrap();
                assert_eq!(marked.len(), host.len());
            }
        }
        done.send(()).unwrap();
    });
    finished
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("an embedding did not end");
}

/// `signal` (at 22.05 kHz) plus white noise `db_below` its level, drawn from `seed`.
fn under_white_noise(signal: &[f32], db_below: f64, seed: u64) -> Vec<f32> {
    let seconds = signal.len() as f64 / 22_050.0;
    let mut noise = white_noise(22_050, seconds, seed);
    scale_to_dbfs(&mut noise, rms_dbfs(signal) - db_below);
    signal.iter().zip(&noise).map(|(a, b)| a + b).collect()
}

#[test]
fn long_windows_read_what_no_15_s_window_can() {
    // A minute of speech-like audio under white noise 11 dB below it: too little of the mark
    // is left in any 15 s window, but a 60 s window folds eight periods together.
    let rate = 22_050;
    let payload = Payload::for_record(KEY, 9);
    let marked = embed(KEY, rate, payload, &speech_like(rate, 60.0, 51)).unwrap();
    let noisy = under_white_noise(&marked, 11.0, 52);
    let detection = detect(KEY, rate, &noisy).unwrap();
    assert_found(&detection, payload, "60 s window");
    // Seven 15 s windows found nothing, so the long one was examined too.
    assert_eq!(detection.windows, 7 + 1, "{detection:?}");
    for start in [0, 15, 30, 45] {
        let crop = &noisy[start * rate as usize..(start + 15) * rate as usize];
        assert_not_found(&detect(KEY, rate, crop).unwrap(), "a 15 s crop");
    }
}

#[test]
fn issued_payloads_are_found_where_blind_decoding_misses() {
    // A minute under white noise only 10 dB below it: no window decodes the payload blind,
    // but the mark is there, and judging the deployment's issued payloads directly finds it.
    let rate = 22_050;
    let payload = Payload::for_record(KEY, 77);
    let marked = embed(KEY, rate, payload, &speech_like(rate, 60.0, 61)).unwrap();
    let noisy = under_white_noise(&marked, 10.0, 62);
    assert_not_found(&detect(KEY, rate, &noisy).unwrap(), "blind");

    let others: Vec<Payload> = (1000..3000)
        .map(|id| Payload::for_record(KEY, id))
        .collect();
    let issued = Detector::new(KEY)
        .unwrap()
        .with_issued_payloads(others.iter().copied().chain([payload]));
    // Blind: score 0; judged among 2001 issued payloads: 10.3.
    assert_found(&issued.detect(rate, &noisy).unwrap(), payload, "issued");

    // Without the right payload among them, the others are not mistaken for it.
    let decoys = Detector::new(KEY).unwrap().with_issued_payloads(others);
    assert_not_found(&decoys.detect(rate, &noisy).unwrap(), "decoys only");
    // Nor does the unmarked original carry any of them.
    let original = speech_like(rate, 60.0, 61);
    assert_not_found(&issued.detect(rate, &original).unwrap(), "unmarked");
}
