//! Provenance on one machine, end to end through the binary: `voxproof synth` marks and signs
//! what it writes, `voxproof verify` tells authentic, altered, stripped and unknown files
//! apart, and c2pa-python (the C2PA project's own reader) agrees that the manifests are
//! trusted under our root.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use support::c2pa_python;

mod support;

const VOICE: &str = "en_US-joe-medium";

/// About 40 seconds of speech: room for two full watermark windows.
const TEXT: &str = "The old lighthouse stood at the edge of the cliff, its white paint peeling in the salty wind. \
Every evening, the keeper climbed the narrow stairs to light the great lamp. Ships passing in the night \
relied on its steady beam to guide them safely past the rocks. He had done this work for nearly forty years, \
and he knew every creak of the wooden steps and every moan of the wind against the glass.\n\n\
One winter night a storm rolled in from the north, heavier than any he could remember. The rain came sideways \
and the waves climbed the rocks until spray hit the lantern room itself. He kept the lamp burning until dawn, \
and when the sky cleared he saw a small fishing boat tied safely in the harbour below.";

const WATERMARK_KEY: &str = "5f1e0c2b9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d";

struct Env {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    /// `keys init-ca` output, or `None` to let synth create development keys.
    keys: Option<PathBuf>,
}

impl Env {
    fn new(with_ca: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let mut env = Self {
            _dir: dir,
            dir: path.clone(),
            keys: None,
        };
        if with_ca {
            let keys = path.join("keys");
            let out = env
                .voxproof()
                .args([
                    "keys",
                    "init-ca",
                    "--organization",
                    "Test Narration Ltd",
                    "--dir",
                ])
                .arg(&keys)
                .output()
                .unwrap();
            assert_ok(&out);
            env.keys = Some(keys);
        }
        env
    }

    fn voxproof(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_voxproof"));
        cmd.stdin(Stdio::null())
            .env("VOXPROOF_PROVENANCE_DIR", self.dir.join("provenance"))
            .env("VOXPROOF_WATERMARK_KEY", WATERMARK_KEY)
            .env_remove("VOXPROOF_SIGNING_KEYS")
            .env_remove("VOXPROOF_TRUST_ANCHORS");
        if let Some(keys) = &self.keys {
            cmd.env("VOXPROOF_SIGNING_KEYS", keys);
        }
        cmd
    }

    /// The root a verifier is given: the CA's, or the development root synth created.
    fn anchor(&self) -> PathBuf {
        match &self.keys {
            Some(keys) => keys.join("root.pem"),
            None => self.dir.join("provenance/dev-keys/root.pem"),
        }
    }

    /// Runs synth on `text` and returns its JSON report.
    fn synth(&self, text: &str, input_name: &str, out: &Path, extra: &[&str]) -> Value {
        let input = self.dir.join(input_name);
        std::fs::write(&input, text).unwrap();
        let output = self
            .voxproof()
            .args(["synth", "--voice", VOICE, "--json", "--in"])
            .arg(&input)
            .arg("--out")
            .arg(out)
            .args(extra)
            .output()
            .unwrap();
        assert_ok(&output);
        serde_json::from_slice(&output.stdout).unwrap()
    }

    fn verify(&self, file: &Path) -> Value {
        let output = self
            .voxproof()
            .args(["verify", "--json"])
            .arg(file)
            .output()
            .unwrap();
        assert_ok(&output);
        serde_json::from_slice(&output.stdout).unwrap()
    }
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "voxproof failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run_tool(program: &str, args: &[&str], files: &[&Path]) {
    let mut cmd = Command::new(program);
    cmd.args(args);
    for f in files {
        cmd.arg(f);
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Where the samples of a RIFF/WAVE file start, found by walking its chunks.
fn wav_data_offset(bytes: &[u8]) -> usize {
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let size = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        if &bytes[at..at + 4] == b"data" {
            return at + 8;
        }
        at += 8 + size + (size & 1);
    }
    panic!("no data chunk");
}

fn record_id(report: &Value) -> u64 {
    report["provenance"]["record_id"].as_u64().unwrap()
}

#[test]
fn synth_output_is_authentic_and_tampering_is_told_apart() {
    let env = Env::new(true);
    let wav = env.dir.join("story.wav");
    let report = env.synth(TEXT, "story.txt", &wav, &[]);
    assert_eq!(report["provenance"]["development_keys"], false);
    let signer = report["provenance"]["signer"].as_str().unwrap();
    assert!(signer.contains("Test Narration Ltd"), "{signer}");
    let seconds = report["audio_seconds"].as_f64().unwrap();
    assert!(
        seconds > 30.0,
        "the text should give over 30 s, got {seconds}"
    );

    // Authentic: trusted manifest, hashes match, the mark it names is in the audio.
    let verdict = env.verify(&wav);
    assert_eq!(verdict["verdict"], "authentic", "{verdict:#}");
    assert_eq!(verdict["c2pa"]["state"], "trusted");
    assert!(verdict["c2pa"]["errors"].as_array().unwrap().is_empty());
    assert_eq!(verdict["watermark"]["detected"], true);
    assert_eq!(
        verdict["watermark"]["payload"],
        report["provenance"]["watermark"]
    );
    assert_eq!(
        verdict["record"]["record_id"].as_u64(),
        Some(record_id(&report))
    );
    assert_eq!(verdict["record"]["voice"], VOICE);
    // The mark covers the file, give or take the detector's window edges.
    let covered: f64 = verdict["watermark"]["ranges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[1].as_f64().unwrap() - r[0].as_f64().unwrap())
        .sum();
    assert!(
        covered > seconds * 0.8,
        "mark found over {covered} of {seconds} s"
    );

    // The C2PA project's reader agrees.
    let independent = c2pa_python(&wav, &env.anchor(), None);
    assert_eq!(independent["state"], "Trusted", "{independent:#}");
    assert_eq!(
        independent["voxproof"]["record_id"].as_u64(),
        Some(record_id(&report))
    );
    assert_eq!(
        independent["soft_binding"]["alg"],
        "io.voxproof.watermark.v1"
    );
    let actions = independent["actions"].to_string();
    assert!(
        actions.contains("c2pa.created") && actions.contains("c2pa.watermarked"),
        "{actions}"
    );

    // One flipped sample: the manifest is still there, the audio hash no longer matches.
    let mut bytes = std::fs::read(&wav).unwrap();
    let sample = wav_data_offset(&bytes) + 2 * (22_050 * 10);
    bytes[sample + 1] ^= 0x10;
    let altered = env.dir.join("altered.wav");
    std::fs::write(&altered, &bytes).unwrap();
    let verdict = env.verify(&altered);
    assert_eq!(verdict["verdict"], "altered", "{verdict:#}");
    assert_eq!(verdict["c2pa"]["state"], "invalid");
    let reasons = verdict["reasons"].to_string();
    assert!(reasons.contains("hash"), "{reasons}");

    // Manifest stripped by a remux: the mark leads back to the record.
    let stripped = env.dir.join("stripped.wav");
    support::ffmpeg(&wav, &["-c", "copy"], &stripped);
    let verdict = env.verify(&stripped);
    assert_eq!(verdict["verdict"], "stripped", "{verdict:#}");
    assert_eq!(verdict["c2pa"]["state"], "absent");
    assert_eq!(
        verdict["record"]["record_id"].as_u64(),
        Some(record_id(&report))
    );

    // Re-encoded at 64 kbps by another encoder: still traced.
    let mp3 = env.dir.join("reencoded.mp3");
    run_tool("lame", &["--quiet", "-b", "64"], &[&stripped, &mp3]);
    let verdict = env.verify(&mp3);
    assert_eq!(verdict["verdict"], "stripped", "{verdict:#}");
    assert_eq!(
        verdict["record"]["record_id"].as_u64(),
        Some(record_id(&report))
    );

    // Opus at 24 kbit/s leaves the mark too weak to decode blind here (score about 4, 8
    // needed), but verify also judges the payloads of the records in its index directly.
    let opus = env.dir.join("reencoded.ogg");
    support::ffmpeg(&stripped, &["-c:a", "libopus", "-b:a", "24k"], &opus);
    let verdict = env.verify(&opus);
    assert_eq!(verdict["verdict"], "stripped", "{verdict:#}");
    assert_eq!(
        verdict["record"]["record_id"].as_u64(),
        Some(record_id(&report))
    );

    // Audio this deployment never made.
    let tone = env.dir.join("tone.wav");
    let made = Command::new("sox")
        .args(["-n", "-r", "22050", "-c", "1"])
        .arg(&tone)
        .args(["synth", "20", "pinknoise", "vol", "0.2"])
        .status()
        .unwrap();
    assert!(made.success());
    let verdict = env.verify(&tone);
    assert_eq!(verdict["verdict"], "unknown", "{verdict:#}");
    assert_eq!(verdict["watermark"]["detected"], false);
    assert!(verdict["record"].is_null());
}

#[test]
fn development_keys_sign_every_container_and_chapter_file() {
    let env = Env::new(false);
    let markdown = format!("# Part one\n\n{TEXT}\n\n# Part two\n\nThe keeper slept until noon.\n");
    let book = env.dir.join("book.m4b");
    let chapters = env.dir.join("chapters");
    let report = env.synth(
        &markdown,
        "book.md",
        &book,
        &["--chapters-dir", chapters.to_str().unwrap()],
    );
    assert_eq!(report["provenance"]["development_keys"], true);
    assert!(env.anchor().is_file(), "synth creates development keys");

    let verdict = env.verify(&book);
    assert_eq!(verdict["verdict"], "authentic", "{verdict:#}");
    assert_eq!(c2pa_python(&book, &env.anchor(), None)["state"], "Trusted");

    let mut chapter_files: Vec<PathBuf> = std::fs::read_dir(&chapters)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    chapter_files.sort();
    assert_eq!(chapter_files.len(), 2);
    for file in &chapter_files {
        let independent = c2pa_python(file, &env.anchor(), None);
        assert_eq!(
            independent["state"],
            "Trusted",
            "{}: {independent:#}",
            file.display()
        );
        assert_eq!(
            independent["voxproof"]["record_id"].as_u64(),
            Some(record_id(&report))
        );
    }
    // The first chapter is long enough to carry the mark on its own.
    let verdict = env.verify(&chapter_files[0]);
    assert_eq!(verdict["verdict"], "authentic", "{verdict:#}");
    assert_eq!(verdict["watermark"]["detected"], true);

    // Opus cannot embed a manifest: it gets a sidecar that both readers accept.
    let opus = env.dir.join("short.opus");
    env.synth(TEXT, "short.txt", &opus, &[]);
    let sidecar = env.dir.join("short.opus.c2pa");
    assert!(sidecar.is_file());
    assert_eq!(
        c2pa_python(&opus, &env.anchor(), Some(&sidecar))["state"],
        "Trusted"
    );
    assert_eq!(env.verify(&opus)["verdict"], "authentic");
}

#[test]
fn verify_refuses_what_it_cannot_read() {
    let env = Env::new(false);
    let missing = env
        .voxproof()
        .args(["verify", "/nonexistent/file.wav"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not a file"));

    let text = env.dir.join("notes.mp3");
    std::fs::write(&text, "these are not audio bytes").unwrap();
    let garbage = env.voxproof().args(["verify"]).arg(&text).output().unwrap();
    assert!(!garbage.status.success());
    let message = String::from_utf8_lossy(&garbage.stderr);
    assert!(message.contains("notes.mp3"), "{message}");
}
