//! Verifying a file: its C2PA manifest, its watermark, and the provenance record behind
//! them, combined into one verdict.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use serde::Serialize;
use serde_json::Value;
use voxproof_watermark::{Detection, Detector, Payload};

use crate::manifest::{read_manifest, ManifestReport, ManifestState, ProvenanceRecord};
use crate::ProvenanceError;

/// The rate audio is decoded at for detection: the detector analyses at 16 kHz anyway.
const DETECTION_RATE: u32 = 16_000;

/// Shortest audio that carries a whole payload.
pub const MIN_MARKED_SECONDS: f64 = 15.0;

/// What the file is, as far as this deployment can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// A trusted manifest whose hashes match, and the watermark it names is in the audio.
    Authentic,
    /// A manifest is there but the audio no longer matches what was signed.
    Altered,
    /// No manifest, but our watermark is in the audio.
    Stripped,
    /// Nothing ties the file to this deployment.
    Unknown,
}

/// The verify output (`voxproof verify --json`, `POST /v1/verify`).
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub verdict: Verdict,
    /// Why, in sentences.
    pub reasons: Vec<String>,
    pub c2pa: C2paSummary,
    pub watermark: WatermarkSummary,
    pub record: Option<ProvenanceRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct C2paSummary {
    pub state: ManifestState,
    pub errors: Vec<String>,
    pub manifest: Option<Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WatermarkSummary {
    pub detected: bool,
    /// The payload, 16 hex digits.
    pub payload: Option<Payload>,
    /// `-log10` of the false-alarm bound (≥ 8 means found).
    pub score: f64,
    /// Where the mark was found, `[start_s, end_s]`.
    pub ranges: Vec<(f64, f64)>,
    /// Seconds of audio examined.
    pub examined_seconds: f64,
}

/// Looks provenance records up by id: the server's database or the local index.
pub trait RecordLookup {
    fn find_record(&self, record_id: u32) -> Result<Option<ProvenanceRecord>, ProvenanceError>;
}

impl RecordLookup for crate::LocalIndex {
    fn find_record(&self, record_id: u32) -> Result<Option<ProvenanceRecord>, ProvenanceError> {
        self.find(record_id)
    }
}

/// Records already read (a local index read once for its issued payloads, say).
impl RecordLookup for Vec<ProvenanceRecord> {
    fn find_record(&self, record_id: u32) -> Result<Option<ProvenanceRecord>, ProvenanceError> {
        Ok(self.iter().find(|r| r.record_id == record_id).cloned())
    }
}

/// Decodes up to `max_seconds` of any audio file ffmpeg reads into mono samples at the
/// detection rate.
pub fn decode_for_detection(path: &Path, max_seconds: f64) -> Result<Vec<f32>, ProvenanceError> {
    let mut child = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-t", &format!("{max_seconds:.3}"), "-vn", "-ac", "1", "-ar"])
        .arg(DETECTION_RATE.to_string())
        .args(["-f", "f32le", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ProvenanceError::Decode(format!("cannot run ffmpeg: {e}")))?;
    let mut bytes = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_end(&mut bytes)
            .map_err(|e| ProvenanceError::Decode(e.to_string()))?;
    }
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    let status = child
        .wait()
        .map_err(|e| ProvenanceError::Decode(e.to_string()))?;
    if !status.success() {
        let why = stderr.lines().last().unwrap_or("unknown error").trim();
        return Err(ProvenanceError::Decode(format!(
            "{} is not audio this server can decode: {why}",
            path.display()
        )));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Everything a verification needs besides the file.
#[derive(Debug)]
pub struct VerifyOptions<'a> {
    /// PEM roots whose chains make a manifest `trusted`.
    pub trust_anchors: &'a str,
    /// The deployment's watermark key.
    pub watermark_key: &'a [u8],
    /// How much of the file's audio to search for the mark.
    pub max_seconds: f64,
    /// The watermark payloads of this deployment's provenance records. Where blind decoding
    /// reads nothing, the detector judges each of these directly, which still finds marks
    /// that heavy lossy coding left too weak to decode (see
    /// `voxproof_watermark::Detector::with_issued_payloads`). Empty: blind detection only.
    pub issued: &'a [Payload],
}

/// What a file holds, before any record lookup.
#[derive(Debug, Clone)]
pub struct Examination {
    pub manifest: ManifestReport,
    pub detection: Detection,
    pub examined_seconds: f64,
    /// The provenance record id the watermark carries, when found and its tag checks.
    pub record_id: Option<u32>,
}

/// Reads the manifest and searches the audio for the watermark. Blocking (decodes with
/// ffmpeg and runs the detector).
pub fn examine(path: &Path, options: &VerifyOptions<'_>) -> Result<Examination, ProvenanceError> {
    let manifest = read_manifest(path, options.trust_anchors)?;
    let samples = decode_for_detection(path, options.max_seconds)?;
    let detection = Detector::new(options.watermark_key)
        .map_err(|e| ProvenanceError::Decode(format!("watermark key: {e}")))?
        .with_issued_payloads(options.issued.iter().copied())
        .detect(DETECTION_RATE, &samples)
        .map_err(|e| ProvenanceError::Decode(e.to_string()))?;
    let record_id = detection
        .payload
        .filter(|_| detection.found)
        .and_then(|p| p.record_id(options.watermark_key));
    Ok(Examination {
        manifest,
        examined_seconds: samples.len() as f64 / f64::from(DETECTION_RATE),
        detection,
        record_id,
    })
}

/// Verifies the file at `path`, looking its record up in `records`.
pub fn verify_file(
    path: &Path,
    options: &VerifyOptions<'_>,
    records: &dyn RecordLookup,
) -> Result<Verification, ProvenanceError> {
    let examination = examine(path, options)?;
    let stored = match examination.record_id {
        Some(id) => records.find_record(id)?,
        None => None,
    };
    Ok(judge(examination, stored))
}

/// Combines what the manifest, the watermark and the record store said.
pub fn judge(examination: Examination, stored_record: Option<ProvenanceRecord>) -> Verification {
    let Examination {
        manifest,
        detection,
        examined_seconds,
        ..
    } = examination;
    let mut reasons = Vec::new();
    let mark = detection.found.then_some(detection.payload).flatten();
    let named = manifest.soft_binding;
    let verdict = match manifest.state {
        ManifestState::Absent => {
            if let Some(payload) = mark {
                reasons.push(format!(
                    "no C2PA manifest, but this deployment's watermark ({payload}) is in the audio"
                ));
                if stored_record.is_none() {
                    reasons.push("no provenance record with this payload is stored here".into());
                }
                Verdict::Stripped
            } else {
                reasons.push("no C2PA manifest and no watermark of this deployment".into());
                Verdict::Unknown
            }
        }
        ManifestState::Invalid => {
            if manifest.hash_mismatch {
                reasons.push(
                    "the audio does not match the hash signed in its C2PA manifest: it was \
                     changed after signing"
                        .into(),
                );
            } else {
                reasons.push("the C2PA manifest does not validate".into());
            }
            reasons.extend(manifest.errors.iter().cloned());
            Verdict::Altered
        }
        ManifestState::Trusted | ManifestState::Valid => {
            let agrees = match (mark, named) {
                (Some(found), Some(named)) => found == named,
                _ => false,
            };
            if manifest.state == ManifestState::Valid {
                reasons.push(
                    "the C2PA manifest is valid but its signer does not chain to a trusted root"
                        .into(),
                );
            }
            if agrees {
                reasons.push("the watermark in the audio is the one the manifest names".into());
            } else if let (Some(found), Some(named)) = (mark, named) {
                reasons.push(format!(
                    "the watermark in the audio ({found}) differs from the one the manifest \
                     names ({named})"
                ));
            } else if named.is_none() {
                reasons.push("the manifest names no watermark of this deployment".into());
            } else if examined_seconds < MIN_MARKED_SECONDS {
                reasons.push(format!(
                    "the audio is shorter than {MIN_MARKED_SECONDS} s, too short to carry the \
                     watermark; the signed hash vouches for it"
                ));
            } else {
                // The hashes match, so these are the very bytes that were marked and signed:
                // the mark did not survive this file's own encoding well enough to be read
                // (low-bitrate Opus), which says nothing against the file.
                reasons.push(
                    "the watermark the manifest names was not detected in this encoding; the \
                     signed hash vouches for the audio"
                        .into(),
                );
            }
            // Only a mark that reads as a different payload contradicts a valid manifest.
            let contradicted = mark.is_some() && !agrees;
            match (manifest.state, contradicted, named.is_some()) {
                (ManifestState::Trusted, false, true) => Verdict::Authentic,
                (_, true, _) => Verdict::Altered,
                _ => Verdict::Unknown,
            }
        }
    };
    let record = manifest.record.clone().or(stored_record);
    Verification {
        verdict,
        reasons,
        c2pa: C2paSummary {
            state: manifest.state,
            errors: manifest.errors,
            manifest: manifest.manifest,
        },
        watermark: WatermarkSummary {
            detected: detection.found,
            payload: detection.payload.filter(|_| detection.found),
            score: detection.score,
            ranges: detection.ranges.clone(),
            examined_seconds,
        },
        record,
    }
}
