//! Provenance on one machine: the watermark key, the signing credentials and the record index
//! that `voxproof synth` uses, `voxproof keys init-ca`, and `voxproof verify`.
//!
//! Defaults live under `<cache>/provenance/` (or `VOXPROOF_PROVENANCE_DIR`) and are created
//! on first use: a random watermark key, development signing credentials (named as such in
//! their certificates) and `records.jsonl`. `VOXPROOF_WATERMARK_KEY` (hex),
//! `VOXPROOF_SIGNING_KEYS` (a directory made by `keys init-ca`) and `VOXPROOF_TRUST_ANCHORS`
//! (PEM files, `:`-separated) override them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use voxproof_provenance::{
    init_ca as create_ca, CaOptions, LocalIndex, Provenance, ProvenanceRecord, ProvenanceSettings,
    Verdict, VerifyOptions,
};

fn provenance_dir() -> PathBuf {
    match std::env::var_os("VOXPROOF_PROVENANCE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => voxproof_voice::paths::cache_dir().join("provenance"),
    }
}

/// Provenance settings from the environment, with development defaults.
pub fn settings() -> ProvenanceSettings {
    ProvenanceSettings {
        watermark_key_hex: std::env::var("VOXPROOF_WATERMARK_KEY").ok(),
        signing_keys: std::env::var_os("VOXPROOF_SIGNING_KEYS").map(PathBuf::from),
        trust_anchors: std::env::var_os("VOXPROOF_TRUST_ANCHORS")
            .map(|list| std::env::split_paths(&list).collect())
            .unwrap_or_default(),
        local_dir: provenance_dir(),
    }
}

fn local_index() -> LocalIndex {
    LocalIndex::at(&provenance_dir().join("records.jsonl"))
}

/// What `voxproof synth` marks and signs its outputs with.
pub struct LocalProvenance {
    pub material: Provenance,
    pub index: LocalIndex,
}

impl LocalProvenance {
    pub fn open() -> Result<Self> {
        Ok(Self {
            material: settings().load()?,
            index: local_index(),
        })
    }

    /// A new record for a file made from `input` with `voice`, stored in the index before
    /// the audio exists so that no marked file is ever without its record.
    pub fn new_record(
        &self,
        input: &[u8],
        voice: &str,
        voice_model_sha256: &str,
    ) -> Result<ProvenanceRecord> {
        use sha2::Digest;
        let (record_id, watermark) = self.index.allocate(&self.material.watermark_key)?;
        let record = ProvenanceRecord {
            record_id,
            watermark,
            job_id: None,
            tenant: None,
            voice: voice.to_string(),
            voice_model_sha256: voice_model_sha256.to_string(),
            input_sha256: hex::encode(sha2::Sha256::digest(input)),
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        self.index.add(&record)?;
        Ok(record)
    }
}

pub fn init_ca(dir: &Path, organization: &str) -> Result<()> {
    let files = create_ca(dir, &CaOptions::new(organization))?;
    eprintln!(
        "created signing credentials in {}:\n  root.pem          trust anchor: give it to verifiers\n  \
         signer.pem/.key   what the servers sign with (VOXPROOF_SIGNING_KEYS={})\n  \
         root.key, intermediate.key: keep them offline",
        files.dir.display(),
        files.dir.display()
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The audio file to check.
    file: PathBuf,
    /// Print the full result as JSON.
    #[arg(long)]
    json: bool,
    /// Another PEM file of trusted roots (repeatable).
    #[arg(long = "trust-anchor")]
    trust_anchors: Vec<PathBuf>,
    /// How many seconds of audio to search for the watermark.
    #[arg(long, default_value_t = 600.0)]
    max_seconds: f64,
}

pub fn verify(args: VerifyArgs) -> Result<()> {
    if !args.file.is_file() {
        bail!("{} is not a file", args.file.display());
    }
    if args.max_seconds.is_nan() || args.max_seconds <= 0.0 {
        bail!("--max-seconds must be positive");
    }
    let mut settings = settings();
    settings
        .trust_anchors
        .extend(args.trust_anchors.iter().cloned());
    let material = settings.load()?;
    let result = voxproof_provenance::verify_file(
        &args.file,
        &VerifyOptions {
            trust_anchors: &material.trust_anchors,
            watermark_key: &material.watermark_key,
            max_seconds: args.max_seconds,
        },
        &local_index(),
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        let verdict = match result.verdict {
            Verdict::Authentic => "authentic",
            Verdict::Altered => "altered",
            Verdict::Stripped => "stripped",
            Verdict::Unknown => "unknown",
        };
        println!("{}: {verdict}", args.file.display());
        for reason in &result.reasons {
            println!("  - {reason}");
        }
        if let Some(record) = &result.record {
            println!(
                "  record {:08x}: voice {}, made {}{}",
                record.record_id,
                record.voice,
                record.created_at,
                record
                    .job_id
                    .as_deref()
                    .map(|j| format!(", job {j}"))
                    .unwrap_or_default()
            );
        }
        for (start, end) in &result.watermark.ranges {
            println!("  watermark found {start:.1}–{end:.1} s");
        }
    }
    Ok(())
}
