//! Embeds or detects the watermark in raw mono little-endian f32 files, for trying the mark
//! against external tools (sox, lame, ffmpeg) by hand.
//!
//! ```text
//! cargo run --release -p voxproof-watermark --example raw_f32 -- embed KEY RATE PAYLOAD IN.f32 OUT.f32
//! cargo run --release -p voxproof-watermark --example raw_f32 -- detect KEY RATE IN.f32
//! cargo run --release -p voxproof-watermark --example raw_f32 -- scan KEY COUNT RATE IN.f32...
//! ```
//!
//! `scan` looks for the marks of COUNT keys (`KEY/0`, `KEY/1`, …) in each input, analysing
//! each input once for all of them ([`detect_each`]), and prints one JSON line: the windows
//! examined, the (window, key) pairs searched and how many (input, key) pairs found a mark. On audio
//! none of these keys marked, that counts false accepts: the detector's false-alarm bound
//! holds for each key's independent keyed pattern, whatever the audio.
//!
//! `detect` and `scan` take `--issued FILE`: payloads (16 hex digits each, whitespace-
//! separated) the deployment issued, which the detector judges directly where blind
//! decoding finds nothing ([`Detector::with_issued_payloads`]).
//!
//! `PAYLOAD` is 16 hex digits, or `record:ID` for the record payload of record `ID` under
//! `KEY`. `sox in.wav -t f32 in.f32` and `sox -t f32 -r RATE -c 1 out.f32 out.wav` convert.

use std::time::Instant;

use voxproof_watermark::{detect_each, embed, Detector, Payload};

fn read_f32(path: &str) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn write_f32(path: &str, samples: &[f32]) {
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {path}: {e}"));
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let issued: Vec<Payload> = match args.iter().position(|a| a == "--issued") {
        Some(at) if at + 1 < args.len() => {
            let path = args.remove(at + 1);
            args.remove(at);
            std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {path}: {e}"))
                .split_whitespace()
                .map(|hex| Payload(u64::from_str_radix(hex, 16).expect("ISSUED payload")))
                .collect()
        }
        Some(_) => panic!("--issued needs a file"),
        None => Vec::new(),
    };
    let usage = "usage: raw_f32 embed KEY RATE PAYLOAD IN OUT | raw_f32 detect KEY RATE IN | \
                 raw_f32 scan KEY COUNT RATE IN... (detect and scan: [--issued FILE])";
    match args.first().map(String::as_str) {
        Some("embed") if args.len() == 6 => {
            let rate: u32 = args[2].parse().expect("RATE");
            let payload = match args[3].strip_prefix("record:") {
                Some(id) => Payload::for_record(args[1].as_bytes(), id.parse().expect("record id")),
                None => Payload(u64::from_str_radix(&args[3], 16).expect("PAYLOAD")),
            };
            eprintln!("payload {payload}");
            let input = read_f32(&args[4]);
            let started = Instant::now();
            let output = embed(args[1].as_bytes(), rate, payload, &input).expect("embed");
            let elapsed = started.elapsed().as_secs_f64();
            let signal: f64 = input.iter().map(|&x| (x as f64).powi(2)).sum();
            let noise: f64 = input
                .iter()
                .zip(&output)
                .map(|(&x, &y)| ((y - x) as f64).powi(2))
                .sum();
            println!(
                "embedded {:.1} s in {elapsed:.2} s; SNR {:.2} dB",
                input.len() as f64 / rate as f64,
                10.0 * (signal / noise).log10()
            );
            write_f32(&args[5], &output);
        }
        Some("detect") if args.len() == 4 => {
            let rate: u32 = args[2].parse().expect("RATE");
            let input = read_f32(&args[3]);
            let detector = Detector::new(args[1].as_bytes())
                .expect("detector")
                .with_issued_payloads(issued);
            let started = Instant::now();
            let detection = detector.detect(rate, &input).expect("detect");
            let elapsed = started.elapsed().as_secs_f64();
            println!(
                "{}",
                serde_json::to_string(&detection).expect("serializable")
            );
            eprintln!(
                "detected over {:.1} s in {elapsed:.2} s",
                input.len() as f64 / rate as f64
            );
        }
        Some("scan") if args.len() >= 5 => {
            let count: usize = args[2].parse().expect("COUNT");
            let rate: u32 = args[3].parse().expect("RATE");
            let detectors: Vec<Detector> = (0..count)
                .map(|i| {
                    Detector::new(format!("{}/{i}", args[1]).as_bytes())
                        .expect("key")
                        .with_issued_payloads(issued.clone())
                })
                .collect();
            let started = Instant::now();
            let (mut seconds, mut windows, mut found, mut best_score) = (0.0, 0, 0, 0f64);
            for path in &args[4..] {
                let input = read_f32(path);
                seconds += input.len() as f64 / rate as f64;
                let detections = detect_each(&detectors, rate, &input).expect("detect");
                windows += detections.first().map_or(0, |d| d.windows);
                for detection in &detections {
                    found += usize::from(detection.found);
                    best_score = best_score.max(detection.score);
                    if detection.found {
                        eprintln!("{path}: found {detection:?}");
                    }
                }
            }
            println!(
                "{}",
                serde_json::json!({
                    "seconds": seconds,
                    "windows": windows,
                    "keys": count,
                    "key_windows": windows * count,
                    "found": found,
                    "best_score": best_score,
                })
            );
            eprintln!(
                "scanned {seconds:.1} s with {count} keys in {:.2} s",
                started.elapsed().as_secs_f64()
            );
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}
