//! Provenance on one machine: the watermark key, the signing credentials and the record index
//! that `voxproof synth` uses, `voxproof keys init-ca`, and `voxproof verify`.
//!
//! The settings are the platform's (`[provenance]` in `voxproof.toml`, `VOXPROOF_WATERMARK_KEY`,
//! `VOXPROOF_SIGNING_KEYS`, `VOXPROOF_TRUST_ANCHORS`, `VOXPROOF_PROVENANCE_DIR`); where they name
//! nothing, development material under `<cache>/provenance/` is created on first use: a random
//! watermark key, signing credentials named as development keys, and `records.jsonl`.

use std::path::{Path, PathBuf};

use voxproof_scheduler::Config;

use anyhow::{bail, Result};
use voxproof_provenance::{
    init_ca as create_ca, CaOptions, LocalIndex, Provenance, ProvenanceRecord, ProvenanceSettings,
    Verdict, VerifyOptions,
};

/// The same provenance settings the platform's processes read.
fn settings() -> Result<ProvenanceSettings> {
    Ok(voxproof_jobs::provenance_settings(&Config::load()?))
}

fn local_index(settings: &ProvenanceSettings) -> LocalIndex {
    LocalIndex::at(&settings.local_dir.join("records.jsonl"))
}

/// What `voxproof synth` marks and signs its outputs with.
pub struct LocalProvenance {
    pub material: Provenance,
    pub index: LocalIndex,
}

impl LocalProvenance {
    pub fn open() -> Result<Self> {
        let settings = settings()?;
        Ok(Self {
            material: settings.load()?,
            index: local_index(&settings),
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
    let mut settings = settings()?;
    settings
        .trust_anchors
        .extend(args.trust_anchors.iter().cloned());
    let material = settings.load()?;
    // Read once: its payloads are judged directly, and the found one is looked up in it.
    let records = local_index(&settings).records()?;
    let issued: Vec<_> = records.iter().map(|r| r.watermark).collect();
    let result = voxproof_provenance::verify_file(
        &args.file,
        &VerifyOptions {
            trust_anchors: &material.trust_anchors,
            watermark_key: &material.watermark_key,
            max_seconds: args.max_seconds,
            issued: &issued,
        },
        &records,
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
