//! `POST /v1/verify`: anyone may ask whether an audio file came from this deployment. Public,
//! so it is bounded three ways: the request body limit, a per-address rate, and a cap on
//! verifications running at once (each decodes audio and searches it for the watermark).

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequest, Multipart, Request, State};
use axum::http::StatusCode;
use axum::Json;
use voxproof_provenance::{Container, Provenance, Verification, VerifyOptions};

use crate::error::{ApiError, ErrorBody};
use crate::AppState;

/// How much of a file's audio the watermark search reads.
const MAX_EXAMINED_SECONDS: f64 = 600.0;

/// Verification shared state: the deployment's key and anchors, and the limits.
pub struct Verifier {
    provenance: Arc<Provenance>,
    per_minute: u32,
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    running: tokio::sync::Semaphore,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("per_minute", &self.per_minute)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(provenance: Arc<Provenance>, per_minute: u32) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            provenance,
            per_minute,
            windows: Mutex::new(HashMap::new()),
            running: tokio::sync::Semaphore::new(cores),
        }
    }

    /// Counts a request from `address` in its one-minute window; false when over the rate.
    fn admit(&self, address: IpAddr) -> bool {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() > 10_000 {
            windows.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(60));
        }
        let (start, count) = windows.entry(address).or_insert((now, 0));
        if now.duration_since(*start) >= Duration::from_secs(60) {
            *start = now;
            *count = 0;
        }
        *count += 1;
        *count <= self.per_minute
    }
}

fn rate_limited(message: &str) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
}

/// The container of an upload, from its file name or else its content type.
fn container_of(file_name: Option<&str>, content_type: Option<&str>) -> Option<Container> {
    if let Some(found) = file_name.and_then(|n| Container::from_path(Path::new(n)).ok()) {
        return Some(found);
    }
    match content_type? {
        "audio/wav" | "audio/x-wav" | "audio/wave" => Some(Container::Wav),
        "audio/mpeg" => Some(Container::Mp3),
        "audio/flac" => Some(Container::Flac),
        "audio/mp4" | "audio/x-m4a" => Some(Container::Mp4),
        "audio/ogg" | "audio/opus" => Some(Container::Opus),
        _ => None,
    }
}

/// Checks an audio file: its C2PA manifest, this deployment's watermark, and the
/// provenance record behind them.
#[utoipa::path(post, path = "/v1/verify", tag = "provenance",
    request_body(content_type = "multipart/form-data", description = "a `file` part holding \
        WAV, MP3, FLAC, M4A/M4B or Opus audio (an Opus file's `.c2pa` sidecar may come as a \
        `manifest` part)"),
    responses(
        (status = 200, description = "the verdict: `{verdict: authentic|altered|stripped|unknown, \
            reasons, c2pa: {state, errors, manifest}, watermark: {detected, payload, score, \
            ranges}, record}`", body = Object),
        (status = 400, description = "`invalid_multipart`, `missing_file`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 422, description = "`unsupported_media`: not audio this server reads", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many verifications from this address, or too many at once", body = ErrorBody),
        (status = 500, description = "`internal`: see the logs under the X-Request-Id", body = ErrorBody),
    ))]
pub async fn verify(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    request: Request,
) -> Result<Json<Verification>, ApiError> {
    let verifier = state.verifier.clone();
    if !verifier.admit(peer.ip()) {
        return Err(rate_limited(&format!(
            "at most {} verifications per minute from one address",
            verifier.per_minute
        )));
    }
    let _permit = verifier
        .running
        .try_acquire()
        .map_err(|_| rate_limited("the verifier is busy; try again in a moment"))?;

    let limit = state.config.limits.max_body_bytes;
    let mut multipart = Multipart::from_request(request, &state)
        .await
        .map_err(|e| ApiError::bad_request("invalid_multipart", e.body_text()))?;
    let field_error = |e| ApiError::multipart(e, limit);
    let scratch = tempfile::tempdir().map_err(internal)?;
    let mut audio = None;
    let mut manifest = None;
    while let Some(mut field) = multipart.next_field().await.map_err(field_error)? {
        let name = field.name().unwrap_or("").to_string();
        let path = match name.as_str() {
            "file" => {
                let container =
                    container_of(field.file_name(), field.content_type()).ok_or_else(|| {
                        ApiError::unprocessable(
                            "unsupported_media",
                            "name the file with its extension (.wav, .mp3, .flac, .m4a, .m4b, \
                         .opus) or send an audio content type",
                        )
                    })?;
                scratch
                    .path()
                    .join(format!("upload.{}", container.extension()))
            }
            "manifest" => scratch.path().join("sidecar.c2pa"),
            _ => continue,
        };
        // Streamed to disk: a large file never sits in memory whole.
        let mut file = std::fs::File::create(&path).map_err(internal)?;
        while let Some(chunk) = field.chunk().await.map_err(field_error)? {
            file.write_all(&chunk).map_err(internal)?;
        }
        if name == "file" {
            audio = Some(path);
        } else {
            manifest = Some(path);
        }
    }
    let audio = audio.ok_or_else(|| {
        ApiError::bad_request(
            "missing_file",
            "send the audio as a multipart part named `file`",
        )
    })?;
    if let Some(sidecar) = manifest {
        std::fs::rename(sidecar, voxproof_provenance::sidecar_path(&audio)).map_err(internal)?;
    }

    let provenance = verifier.provenance.clone();
    let issued = voxproof_scheduler::provenance::issued_payloads(&state.pool).await?;
    // Messages about the upload name it as the client did, not by its scratch path.
    let scratch_name = audio.display().to_string();
    let examination = tokio::task::spawn_blocking(move || {
        let options = VerifyOptions {
            trust_anchors: &provenance.trust_anchors,
            watermark_key: &provenance.watermark_key,
            max_seconds: MAX_EXAMINED_SECONDS,
            issued: &issued,
        };
        let result = voxproof_provenance::examine(&audio, &options);
        drop(scratch);
        result
    })
    .await
    .map_err(internal)?
    .map_err(|e| match e {
        voxproof_provenance::ProvenanceError::Decode(message)
        | voxproof_provenance::ProvenanceError::UnsupportedFormat(message) => {
            ApiError::unprocessable(
                "unsupported_media",
                message.replace(&scratch_name, "the uploaded file"),
            )
        }
        other => internal(other),
    })?;
    let stored = match examination.record_id {
        Some(id) => voxproof_scheduler::provenance::find(&state.pool, id).await?,
        None => None,
    };
    Ok(Json(voxproof_provenance::judge(examination, stored)))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!("verify: {e}");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "verification failed; see the server log",
    )
}
