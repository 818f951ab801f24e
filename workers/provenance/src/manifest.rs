//! The manifest every voxproof file carries, signing it into a file, and reading it back.

use std::fs::{File, OpenOptions};
use std::io::Seek;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use voxproof_watermark::Payload;

use crate::signer::Ed25519Signer;
use crate::ProvenanceError;

/// IPTC digital source type for media made by a trained model.
pub const TRAINED_ALGORITHMIC_MEDIA: &str =
    "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia";
/// The soft-binding algorithm name of our watermark.
pub const WATERMARK_ALGORITHM: &str = "io.voxproof.watermark.v1";
/// Label of our own assertion.
pub const PROVENANCE_ASSERTION: &str = "io.voxproof.provenance";

/// What a file's provenance record says: stored in the manifest's voxproof assertion, and
/// under the record id in the server's database or the local index, so that a file whose
/// manifest was stripped can still be traced through its watermark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProvenanceRecord {
    /// The id carried by the watermark payload.
    pub record_id: u32,
    /// The full watermark payload, hex.
    pub watermark: Payload,
    /// The platform job, when the file came from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// An opaque tenant id (never the tenant's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub voice: String,
    pub voice_model_sha256: String,
    /// SHA-256 of the input document's bytes.
    pub input_sha256: String,
    /// RFC 3339.
    pub created_at: String,
}

/// How a file carries its manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Wav,
    Mp3,
    Flac,
    /// MP4 audio (.m4a, .m4b).
    Mp4,
    /// Ogg Opus: no C2PA embedding exists, the manifest goes in a `.c2pa` file beside it.
    Opus,
}

impl Container {
    pub fn from_path(path: &Path) -> Result<Self, ProvenanceError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        Ok(match ext.as_str() {
            "wav" | "wave" => Self::Wav,
            "mp3" => Self::Mp3,
            "flac" => Self::Flac,
            "m4a" | "m4b" | "mp4" => Self::Mp4,
            "opus" | "ogg" => Self::Opus,
            _ => {
                return Err(ProvenanceError::UnsupportedFormat(format!(
                    "{}: no C2PA support for .{ext} files (wav, mp3, flac, m4a, m4b, opus)",
                    path.display()
                )))
            }
        })
    }

    /// The MIME type c2pa knows the format by.
    pub fn mime(self) -> &'static str {
        match self {
            Self::Wav => "audio/wav",
            Self::Mp3 => "audio/mpeg",
            Self::Flac => "audio/flac",
            Self::Mp4 => "audio/mp4",
            Self::Opus => "audio/ogg",
        }
    }

    /// The usual file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Wav => "wav",
            Self::Mp3 => "mp3",
            Self::Flac => "flac",
            Self::Mp4 => "m4a",
            Self::Opus => "opus",
        }
    }

    /// Whether the manifest lives in a sidecar file.
    pub fn uses_sidecar(self) -> bool {
        self == Self::Opus
    }
}

/// The sidecar manifest path of `path`: `book.opus` → `book.opus.c2pa`.
pub fn sidecar_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".c2pa");
    PathBuf::from(name)
}

fn software_agent() -> Value {
    json!({ "name": "voxproof", "version": env!("CARGO_PKG_VERSION") })
}

/// The manifest definition for a file described by `record`.
fn definition(title: &str, record: &ProvenanceRecord) -> Value {
    let watermark_value =
        base64::engine::general_purpose::STANDARD.encode(record.watermark.0.to_be_bytes());
    json!({
        "title": title,
        "claim_generator_info": [software_agent()],
        "assertions": [
            { "label": "c2pa.actions.v2", "data": { "actions": [
                { "action": "c2pa.created",
                  "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                  "softwareAgent": software_agent(),
                  "description": format!("Speech synthesized with the voice {}", record.voice) },
                { "action": "c2pa.watermarked",
                  "softwareAgent": software_agent(),
                  "description": format!("Inaudible watermark {WATERMARK_ALGORITHM} carrying the provenance record") }
            ] } },
            { "label": "c2pa.soft-binding", "data": {
                "alg": WATERMARK_ALGORITHM,
                "blocks": [ { "scope": {}, "value": watermark_value } ] } },
            { "label": PROVENANCE_ASSERTION, "data": record }
        ]
    })
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> ProvenanceError + '_ {
    move |source| ProvenanceError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn c2pa_error(path: &Path) -> impl Fn(c2pa::Error) -> ProvenanceError + '_ {
    move |e| ProvenanceError::C2pa(format!("{}: {e}", path.display()))
}

/// Signs `record`'s manifest into the audio file at `path`, in place: the signed copy is
/// written beside it and renamed over it, so the file is never half-written. Opus files get
/// a `.c2pa` sidecar instead. Returns the manifest's size in bytes.
pub fn sign_file(
    signer: &Ed25519Signer,
    path: &Path,
    record: &ProvenanceRecord,
) -> Result<usize, ProvenanceError> {
    let container = Container::from_path(path)?;
    let title = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let context = c2pa::Context::new()
        // Audio gets no thumbnail (and the feature that makes them is not built).
        .with_settings(json!({
            "verify": { "verify_after_sign": false },
            "builder": { "thumbnail": { "enabled": false } }
        }))
        .map_err(c2pa_error(path))?;
    let mut builder = c2pa::Builder::from_context(context)
        .with_definition(definition(&title, record))
        .map_err(c2pa_error(path))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut source = File::open(path).map_err(io_error(path))?;
    if container.uses_sidecar() {
        builder.set_no_embed(true);
        let sidecar = sidecar_path(path);
        let manifest = sign_detached(&mut builder, signer, container, &mut source, path)?;
        let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(io_error(dir))?;
        std::io::Write::write_all(&mut temp, &manifest).map_err(io_error(&sidecar))?;
        temp.persist(&sidecar)
            .map_err(|e| io_error(&sidecar)(e.error))?;
        return Ok(manifest.len());
    }
    let temp = tempfile::NamedTempFile::new_in(dir).map_err(io_error(dir))?;
    let mut dest = OpenOptions::new()
        .read(true)
        .write(true)
        .open(temp.path())
        .map_err(io_error(temp.path()))?;
    let manifest = builder
        .sign(signer, container.mime(), &mut source, &mut dest)
        .map_err(c2pa_error(path))?;
    dest.sync_all().map_err(io_error(path))?;
    temp.persist(path).map_err(|e| io_error(path)(e.error))?;
    Ok(manifest.len())
}

/// A manifest for a file that cannot hold one: a data hash over the whole file (no
/// exclusions, since nothing is inserted), signed, as a standalone manifest store.
fn sign_detached(
    builder: &mut c2pa::Builder,
    signer: &Ed25519Signer,
    container: Container,
    source: &mut File,
    path: &Path,
) -> Result<Vec<u8>, ProvenanceError> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(source, &mut hasher).map_err(io_error(path))?;
    source.rewind().map_err(io_error(path))?;
    let mut data_hash = c2pa::assertions::DataHash::new("jumbf manifest", "sha256");
    data_hash.set_hash(hasher.finalize().to_vec());
    builder.set_format(container.mime());
    builder
        .add_assertion(c2pa::assertions::labels::DATA_HASH, &data_hash)
        .map_err(c2pa_error(path))?;
    builder
        .sign_data_hashed_embeddable(signer, &data_hash, "application/c2pa")
        .map_err(c2pa_error(path))
}

/// Validation state of a file's manifest, as the verify output names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ManifestState {
    /// Valid and signed by a certificate chaining to a configured trust anchor.
    Trusted,
    /// Cryptographically valid, but the signer is not trusted here.
    Valid,
    /// Present but failing validation (hash mismatch, bad signature, ...).
    Invalid,
    /// No manifest.
    Absent,
}

/// What reading a file's manifest found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestReport {
    pub state: ManifestState,
    /// Validation failures, `code: explanation`.
    pub errors: Vec<String>,
    /// The active manifest as c2pa reports it, or null when absent.
    pub manifest: Option<Value>,
    /// Whether a failure says the audio's bytes no longer match the signed hash.
    #[serde(skip)]
    pub hash_mismatch: bool,
    /// The watermark value the soft-binding assertion names.
    #[serde(skip)]
    pub soft_binding: Option<Payload>,
    /// The voxproof assertion.
    #[serde(skip)]
    pub record: Option<ProvenanceRecord>,
    /// The signing certificate's subject.
    #[serde(skip)]
    pub signer: Option<String>,
}

impl ManifestReport {
    fn absent() -> Self {
        Self {
            state: ManifestState::Absent,
            errors: Vec::new(),
            manifest: None,
            hash_mismatch: false,
            soft_binding: None,
            record: None,
            signer: None,
        }
    }
}

/// Reads and validates the manifest of the audio file at `path` (embedded, or in its `.c2pa`
/// sidecar), trusting certificates that chain to `trust_anchors` (PEM; may be empty).
pub fn read_manifest(path: &Path, trust_anchors: &str) -> Result<ManifestReport, ProvenanceError> {
    let container = Container::from_path(path)?;
    let mut settings = json!({ "verify": { "remote_manifest_fetch": false, "ocsp_fetch": false } });
    if !trust_anchors.trim().is_empty() {
        settings["trust"] = json!({ "user_anchors": trust_anchors });
    }
    let context = c2pa::Context::new()
        .with_settings(settings)
        .map_err(c2pa_error(path))?;
    let stream = File::open(path).map_err(io_error(path))?;
    let sidecar = sidecar_path(path);
    let read = if sidecar.is_file() {
        let manifest = std::fs::read(&sidecar).map_err(io_error(&sidecar))?;
        c2pa::Reader::from_context(context).with_manifest_data_and_stream(
            &manifest,
            container.mime(),
            stream,
        )
    } else if container.uses_sidecar() {
        return Ok(ManifestReport::absent());
    } else {
        c2pa::Reader::from_context(context).with_stream(container.mime(), stream)
    };
    let reader = match read {
        Ok(reader) => reader,
        Err(
            c2pa::Error::JumbfNotFound
            | c2pa::Error::ProvenanceMissing
            | c2pa::Error::ClaimMissing { .. },
        ) => return Ok(ManifestReport::absent()),
        Err(e) => {
            // A manifest is there but cannot even be parsed.
            return Ok(ManifestReport {
                state: ManifestState::Invalid,
                errors: vec![e.to_string()],
                ..ManifestReport::absent()
            });
        }
    };
    Ok(report_from(&reader))
}

fn report_from(reader: &c2pa::Reader) -> ManifestReport {
    let state = match reader.validation_state() {
        c2pa::ValidationState::Trusted => ManifestState::Trusted,
        c2pa::ValidationState::Valid => ManifestState::Valid,
        c2pa::ValidationState::Invalid => ManifestState::Invalid,
    };
    let failures: Vec<&c2pa::validation_status::ValidationStatus> = reader
        .validation_results()
        .and_then(|results| results.active_manifest())
        .map(|codes| codes.failure().iter().collect())
        .unwrap_or_default();
    let errors = failures
        .iter()
        .map(|status| match status.explanation() {
            Some(why) => format!("{}: {why}", status.code()),
            None => status.code().to_string(),
        })
        .collect();
    let hash_mismatch = failures.iter().any(|s| s.code().ends_with("Hash.mismatch"));
    let manifest = reader.active_manifest();
    let manifest_json = reader
        .active_label()
        .and_then(|label| {
            serde_json::from_str::<Value>(&reader.json())
                .ok()
                .and_then(|all| all["manifests"][label].as_object().cloned())
        })
        .map(Value::Object);
    let assertion = |label: &str| -> Option<Value> {
        manifest?
            .assertions()
            .iter()
            .find(|a| a.label() == label)
            .and_then(|a| a.value().ok().cloned())
    };
    let soft_binding = assertion("c2pa.soft-binding").and_then(|value| {
        if value["alg"] != WATERMARK_ALGORITHM {
            return None;
        }
        let encoded = value["blocks"][0]["value"].as_str()?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        Some(Payload(u64::from_be_bytes(bytes.try_into().ok()?)))
    });
    let record = assertion(PROVENANCE_ASSERTION).and_then(|v| serde_json::from_value(v).ok());
    let signer = manifest
        .and_then(|m| m.signature_info())
        .and_then(|info| info.common_name.clone().or_else(|| info.issuer.clone()));
    ManifestReport {
        state,
        errors,
        manifest: manifest_json,
        hash_mismatch,
        soft_binding,
        record,
        signer,
    }
}
