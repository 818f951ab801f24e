//! Every encoder's file read back by an independent decoder (ffprobe/ffmpeg): duration,
//! sample rate and chapters.

use std::path::Path;
use std::process::Command;

use voxproof_audio::{encoder, AudioFormat, ChapterMark};

const RATE: u32 = 22050;

fn tone(seconds: f32) -> Vec<f32> {
    let n = (seconds * RATE as f32) as usize;
    (0..n)
        .map(|i| 0.4 * (i as f32 * 2.0 * std::f32::consts::PI * 220.0 / RATE as f32).sin())
        .collect()
}

fn probe(path: &Path) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
            "-show_chapters",
        ])
        .arg(path)
        .output()
        .expect("ffprobe (scripts/setup installs ffmpeg)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Seconds of audio ffmpeg decodes from the file (what a listener gets).
fn decoded_seconds(path: &Path) -> f64 {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "s16le", "-ac", "1", "-ar", "22050", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout.len() as f64 / 2.0 / f64::from(RATE)
}

fn encode(format: AudioFormat, path: &Path) -> f64 {
    let audio = tone(3.0);
    let mut encoder = encoder(format, path, RATE).unwrap();
    for chunk in audio.chunks(4000) {
        encoder.write(chunk).unwrap();
    }
    let chapters = [
        ChapterMark {
            title: "Opening".into(),
            start_ms: 0,
            end_ms: 1250,
        },
        ChapterMark {
            title: "Second = part; #2".into(),
            start_ms: 1250,
            end_ms: 3000,
        },
    ];
    encoder.finish(&chapters).unwrap();
    audio.len() as f64 / f64::from(RATE)
}

fn check(format: AudioFormat, extension: &str, tolerance: f64, has_chapters: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("out.{extension}"));
    let seconds = encode(format, &path);
    let decoded = decoded_seconds(&path);
    assert!(
        (decoded - seconds).abs() <= tolerance,
        "{extension}: decoded {decoded:.4} s of {seconds:.4} s"
    );
    let info = probe(&path);
    let chapters = info["chapters"].as_array().unwrap();
    if has_chapters {
        let titles: Vec<&str> = chapters
            .iter()
            .map(|c| c["tags"]["title"].as_str().unwrap())
            .collect();
        assert_eq!(titles, ["Opening", "Second = part; #2"], "{extension}");
        let second: f64 = chapters[1]["start_time"].as_str().unwrap().parse().unwrap();
        assert!(
            (second - 1.25).abs() < 0.002,
            "{extension}: second chapter at {second}"
        );
    } else {
        assert!(chapters.is_empty());
    }
}

#[test]
fn wav_reads_back() {
    check(AudioFormat::Wav, "wav", 0.0, false);
}

#[test]
fn flac_reads_back_with_chapters() {
    check(AudioFormat::Flac, "flac", 0.0, true);
}

#[test]
fn mp3_reads_back_with_chapters() {
    // LAME pads to whole frames (1152 samples) plus encoder delay unless a decoder reads
    // the gapless info: allow two frames.
    check(
        AudioFormat::Mp3,
        "mp3",
        2.0 * 1152.0 / f64::from(RATE),
        true,
    );
}

#[test]
fn opus_reads_back_with_chapters() {
    // Pre-skip and the end granule trim Opus exactly; resampling leaves a sample or two.
    check(AudioFormat::Opus, "opus", 0.002, true);
}

#[test]
fn m4b_reads_back_with_chapters() {
    // AAC frames are 1024 samples; priming is signalled in the MP4 edit list.
    check(
        AudioFormat::M4b,
        "m4b",
        2.0 * 1024.0 / f64::from(RATE),
        true,
    );
}

#[test]
fn flac_is_lossless() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exact.flac");
    encode(AudioFormat::Flac, &path);
    let wav = dir.path().join("exact.wav");
    encode(AudioFormat::Wav, &wav);
    let decode = |p: &Path| {
        Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(p)
            .args(["-f", "s16le", "-"])
            .output()
            .unwrap()
            .stdout
    };
    assert_eq!(decode(&path), decode(&wav));
}
