//! `/v1/jobs`: submit, look at, list, cancel, download.

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use voxproof_scheduler::audit::{self, Actor, AuditEvent};
use voxproof_scheduler::jobs::{self as repo, Cancelled, Created, NewJob};
use voxproof_scheduler::keys::Role;
use voxproof_scheduler::model::{ArtifactRow, JobOptions, JobRow, Priority, OUTPUT_FORMATS};
use voxproof_scheduler::plan::{self, RenderSettings};
use voxproof_scheduler::queue::Task;
use voxproof_text::{InputFormat, Lexicon};

use crate::error::ErrorBody;
use crate::openapi::{self, JobOptionsSchema};
use crate::{ApiError, AppState, Caller, RequestId};

// The fields are checked by `validate`, not by their types, so that a bad value is a 422 with
// a precise code; the schema still states what is valid. Doc comments on this and the other
// types below are the OpenAPI document's descriptions.
/// A job to render.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct JobRequest {
    /// A voice the deployment has (`GET /v1/voices`).
    #[schema(value_type = String)]
    voice: Option<String>,
    /// The document.
    #[schema(value_type = String)]
    text: Option<String>,
    #[schema(schema_with = openapi::input_format)]
    input_format: Option<String>,
    #[schema(schema_with = openapi::output_format)]
    output_format: Option<String>,
    #[serde(default)]
    #[schema(value_type = JobOptionsSchema)]
    options: Option<JobOptions>,
    #[schema(schema_with = openapi::priority)]
    priority: Option<String>,
    /// Only from multipart: the uploaded file's name and bytes.
    #[serde(skip)]
    file: Option<(String, Bytes)>,
}

/// The multipart form of a job: the fields of `JobRequest` as parts, with the document as a
/// `file` part (its name's extension tells the format) or a `text` part.
#[derive(ToSchema)]
#[allow(dead_code)] // Only described: `read_multipart` reads the parts one by one.
struct JobUpload {
    /// The document: text, Markdown, SSML or EPUB.
    #[serde(default)]
    #[schema(format = Binary, content_media_type = "application/octet-stream")]
    file: String,
    /// A voice the deployment has (`GET /v1/voices`).
    voice: String,
    /// The document as text, instead of a file.
    #[serde(default)]
    text: String,
    #[serde(default)]
    #[schema(schema_with = openapi::upload_input_format)]
    input_format: String,
    #[serde(default)]
    #[schema(schema_with = openapi::output_format)]
    output_format: String,
    #[serde(default)]
    #[schema(schema_with = openapi::priority)]
    priority: String,
    /// `JobOptions` as JSON.
    #[serde(default)]
    options: String,
}

/// The `Idempotency-Key` header of a job request.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Only described: `create` reads the header itself.
struct IdempotencyKey {
    /// 1–255 visible ASCII characters, chosen by the client.
    #[param(
        rename = "Idempotency-Key",
        required = false,
        min_length = 1,
        max_length = 255
    )]
    key: String,
}

/// The answer to an accepted job.
#[derive(Debug, Serialize, ToSchema)]
struct Accepted {
    id: Uuid,
    #[schema(schema_with = openapi::job_status)]
    status: String,
    /// Where to follow the job: `/v1/jobs/{id}`.
    status_url: String,
}

/// Submit a job (JSON, or multipart with a `file` part)
///
/// The document is parsed and checked before the job is accepted. A retry with the same
/// `Idempotency-Key` and the same request answers with the job the first one created.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    tag = "jobs",
    security(("bearer" = [])),
    params(IdempotencyKey),
    request_body(content(
        (JobRequest = "application/json"),
        (JobUpload = "multipart/form-data"),
    )),
    responses(
        (status = 202, description = "accepted (or, for a repeated Idempotency-Key, the job it created)", body = Accepted),
        (status = 400, description = "malformed request: `invalid_idempotency_key`, `invalid_json`, `invalid_multipart`", body = ErrorBody),
        (status = 401, description = "missing or invalid API key: `unauthorized`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`: the Idempotency-Key was used for a different request", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body, file or document is too large", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: send application/json or multipart/form-data", body = ErrorBody),
        (status = 422, description = "invalid voice, format, options or document: `missing_field`, `unknown_voice`, `invalid_output_format`, `invalid_priority`, `ambiguous_input`, `invalid_input_format`, `invalid_options`, `invalid_lexicon`, `invalid_document`", body = ErrorBody),
        (status = 429, description = "`too_many_jobs`: the tenant has too many jobs queued or running", body = ErrorBody),
        (status = 500, description = "`internal`: see the logs under the X-Request-Id", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RequestId(request_id): RequestId,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let idempotency_key = headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 255)
                .map(str::to_string)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_idempotency_key",
                        "Idempotency-Key must be 1–255 visible ASCII characters",
                    )
                })
        })
        .transpose()?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let limit = state.config.limits.max_body_bytes;
    let body = if content_type.starts_with("multipart/form-data") {
        read_multipart(request, &state).await?
    } else if content_type.starts_with("application/json") {
        let bytes = axum::body::to_bytes(request.into_body(), limit)
            .await
            .map_err(|_| ApiError::too_large(format!("the request body exceeds {limit} bytes")))?;
        serde_json::from_slice::<JobRequest>(&bytes)
            .map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send application/json or multipart/form-data",
        ));
    };
    let job = validate(&state, &caller, body, idempotency_key).await?;
    submit(&state, job, &request_id).await
}

async fn read_multipart(request: Request, state: &AppState) -> Result<JobRequest, ApiError> {
    let mut multipart = Multipart::from_request(request, state)
        .await
        .map_err(|e| ApiError::bad_request("invalid_multipart", e.body_text()))?;
    let mut job = JobRequest::default();
    let field_error = |e| ApiError::multipart(e, state.config.limits.max_body_bytes);
    while let Some(field) = multipart.next_field().await.map_err(field_error)? {
        let name = field.name().unwrap_or("").to_string();
        let file_name = field.file_name().map(str::to_string);
        let bytes = field.bytes().await.map_err(field_error)?;
        if bytes.len() > state.config.limits.max_body_bytes {
            return Err(ApiError::too_large("the uploaded file is too large"));
        }
        let text = || {
            String::from_utf8(bytes.to_vec()).map_err(|_| {
                ApiError::bad_request("invalid_multipart", format!("part {name:?} is not UTF-8"))
            })
        };
        match name.as_str() {
            "file" => job.file = Some((file_name.unwrap_or_default(), bytes.clone())),
            "voice" => job.voice = Some(text()?),
            "text" => job.text = Some(text()?),
            "input_format" => job.input_format = Some(text()?),
            "output_format" => job.output_format = Some(text()?),
            "priority" => job.priority = Some(text()?),
            "options" => {
                job.options = Some(
                    serde_json::from_str(&text()?)
                        .map_err(|e| ApiError::unprocessable("invalid_options", e.to_string()))?,
                )
            }
            other => {
                return Err(ApiError::bad_request(
                    "invalid_multipart",
                    format!("unknown part {other:?}"),
                ))
            }
        }
    }
    Ok(job)
}

/// Everything `submit` needs, checked.
struct Validated {
    job: NewJob,
    segments: Vec<plan::PlannedSegment>,
    source: Bytes,
}

async fn validate(
    state: &AppState,
    caller: &voxproof_scheduler::keys::Principal,
    request: JobRequest,
    idempotency_key: Option<String>,
) -> Result<Validated, ApiError> {
    let voice_name = request
        .voice
        .ok_or_else(|| ApiError::unprocessable("missing_field", "voice is required"))?;
    let output_format = request.output_format.unwrap_or_else(|| "mp3".into());
    if !OUTPUT_FORMATS.contains(&output_format.as_str()) {
        return Err(ApiError::unprocessable(
            "invalid_output_format",
            format!(
                "output_format {output_format:?} is not one of {}",
                OUTPUT_FORMATS.join(", ")
            ),
        ));
    }
    let priority = match request.priority.as_deref() {
        None => Priority::Bulk,
        Some(p) => Priority::parse(p).ok_or_else(|| {
            ApiError::unprocessable(
                "invalid_priority",
                format!("priority {p:?} is not interactive or bulk"),
            )
        })?,
    };
    let (source, file_name) = match (request.text, request.file) {
        (Some(_), Some(_)) => {
            return Err(ApiError::unprocessable(
                "ambiguous_input",
                "send either text or a file, not both",
            ))
        }
        (Some(text), None) => (Bytes::from(text), None),
        (None, Some((name, bytes))) => (bytes, Some(name)),
        (None, None) => {
            return Err(ApiError::unprocessable(
                "missing_field",
                "text (or a file part) is required",
            ))
        }
    };
    let input_format = match (&request.input_format, &file_name) {
        (Some(f), _) => match f.as_str() {
            "text" => InputFormat::Text,
            "markdown" => InputFormat::Markdown,
            "ssml" => InputFormat::Ssml,
            "epub" if file_name.is_some() => InputFormat::Epub,
            other => {
                return Err(ApiError::unprocessable(
                    "invalid_input_format",
                    format!(
                        "input_format {other:?} is not text, markdown or ssml (epub as a file)"
                    ),
                ))
            }
        },
        (None, Some(name)) => InputFormat::from_extension(name).ok_or_else(|| {
            ApiError::unprocessable(
                "invalid_input_format",
                format!("cannot tell the format of {name:?}: use .txt, .md, .ssml or .epub"),
            )
        })?,
        (None, None) => InputFormat::Text,
    };
    let options = request.options.unwrap_or_default();
    let rate = options.rate.unwrap_or(1.0);
    if !(0.25..=4.0).contains(&rate) {
        return Err(ApiError::unprocessable(
            "invalid_options",
            format!("options.rate {rate} is outside 0.25–4.0"),
        ));
    }
    let mut lexicon = Lexicon::default();
    for (word, replacement) in &options.lexicon {
        lexicon.insert(word, replacement).map_err(|e| {
            ApiError::unprocessable("invalid_lexicon", format!("lexicon entry {word:?}: {e}"))
        })?;
    }

    // Voice lookup, digest and parsing read files and burn CPU: off the async threads.
    let max_chars = state.config.limits.max_text_chars;
    let source_for_parse = source.clone();
    let voice_for_parse = voice_name.clone();
    let speaker = options.speaker.clone();
    let voices = state.voices.clone();
    let parsed = tokio::task::spawn_blocking(move || {
        let cached = voices.get(&voice_for_parse)?;
        let speaker_id = cached
            .voice
            .speaker_id(speaker.as_deref())
            .map_err(|e| ApiError::unprocessable("invalid_options", e.to_string()))?;
        let digest = cached.model_sha256.clone();
        let document = voxproof_text::parse(&source_for_parse, input_format)
            .map_err(|e| ApiError::unprocessable("invalid_document", e.to_string()))?;
        let script = voxproof_text::script(&document, &lexicon);
        let chars = script.normalized_text.chars().count();
        if chars > max_chars {
            return Err(ApiError::too_large(format!(
                "the document has {chars} characters; the limit is {max_chars}"
            )));
        }
        Ok::<_, ApiError>((cached, speaker_id, digest, script))
    })
    .await
    .map_err(anyhow::Error::from)??;
    let (cached, speaker_id, digest, script) = parsed;
    let voice = &cached.voice;
    if script.sentences().next().is_none() {
        return Err(ApiError::unprocessable(
            "invalid_document",
            "the document has nothing to speak",
        ));
    }
    let settings = RenderSettings {
        model_sha256: digest.clone(),
        speaker_id,
        rate,
        noise_scale: None,
        noise_w: None,
    };
    let segments = plan::segments(&script, &voice.name, &settings);
    let source_sha256 = hex::encode(Sha256::digest(&source));
    let input_format_name = match input_format {
        InputFormat::Text => "text",
        InputFormat::Markdown => "markdown",
        InputFormat::Ssml => "ssml",
        InputFormat::Epub => "epub",
    };
    let request_sha256 = {
        let meaning = serde_json::json!({
            "voice": voice.name, "input_format": input_format_name,
            "output_format": output_format, "options": options,
            "priority": priority.as_str(), "source_sha256": source_sha256,
        });
        hex::encode(Sha256::digest(meaning.to_string().as_bytes()))
    };
    let id = Uuid::now_v7();
    Ok(Validated {
        job: NewJob {
            id,
            tenant_id: caller.tenant_id,
            key_id: caller.key_id,
            priority,
            voice: voice.name.clone(),
            model_sha256: digest,
            input_format: input_format_name.into(),
            output_format,
            options,
            source_key: (source.len() > repo::INLINE_SOURCE_BYTES).then(|| format!("sources/{id}")),
            source_sha256,
            source_bytes: source.len() as i64,
            idempotency_key,
            request_sha256,
            max_concurrent_jobs: caller
                .max_concurrent_jobs
                .min(state.config.limits.max_concurrent_jobs),
        },
        segments,
        source,
    })
}

async fn submit(state: &AppState, v: Validated, request_id: &str) -> Result<Response, ApiError> {
    // A large source is stored first, so a job row never points at a missing object; a
    // small one is written with the job itself.
    let inline_source = match &v.job.source_key {
        Some(key) => {
            state
                .storage
                .put_bytes(key, v.source.clone(), "application/octet-stream")
                .await?;
            None
        }
        None => Some(&v.source[..]),
    };
    let created = repo::create(&state.pool, &v.job, &v.segments, inline_source, request_id).await?;
    let stored_elsewhere = || async {
        if let Some(key) = &v.job.source_key {
            let _ = state.storage.delete(key).await;
        }
    };
    let row = match created {
        Created::New(row) => {
            enqueue(state, &row, &v.segments).await;
            row
        }
        Created::Existing(row) => {
            stored_elsewhere().await;
            row
        }
        Created::KeyReused => {
            stored_elsewhere().await;
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request",
            ));
        }
        Created::TooManyJobs(limit) => {
            stored_elsewhere().await;
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_jobs",
                format!("the tenant already has {limit} jobs queued or running"),
            ));
        }
    };
    let body = Accepted {
        id: row.id,
        status: row.status,
        status_url: format!("/v1/jobs/{}", row.id),
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// Queues the new job's assembly (which follows the segments as they finish) and its
/// segments; a failure here is recovered by the sweeper.
async fn enqueue(state: &AppState, row: &JobRow, segments: &[plan::PlannedSegment]) {
    let assembly = Task::Assemble { job_id: row.id };
    if let Err(e) = state.queue.push(row.priority(), assembly, 0).await {
        tracing::warn!(job_id = %row.id, "queue push failed (the sweeper will retry): {e:#}");
        return;
    }
    for segment in segments {
        let task = Task::Segment {
            job_id: row.id,
            index: segment.index,
        };
        if let Err(e) = state.queue.push(row.priority(), task, 0).await {
            tracing::warn!(job_id = %row.id, "queue push failed (the sweeper will retry): {e:#}");
            break;
        }
    }
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    // A malformed id names no job: 404, like any job the caller cannot see.
    Uuid::parse_str(id).map_err(|_| ApiError::not_found("job"))
}

fn artifact_url(job_id: Uuid, artifact: &ArtifactRow) -> String {
    format!("/v1/jobs/{job_id}/artifacts/{}", artifact.name)
}

/// A job as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Job {
    id: Uuid,
    #[schema(schema_with = openapi::job_status)]
    status: String,
    #[schema(schema_with = openapi::priority)]
    priority: String,
    voice: String,
    #[schema(schema_with = openapi::upload_input_format)]
    input_format: String,
    #[schema(schema_with = openapi::output_format)]
    output_format: String,
    #[schema(value_type = JobOptionsSchema)]
    options: JobOptions,
    progress: Progress,
    /// Length of the finished audio.
    audio_seconds: Option<f64>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    /// Why the job failed.
    error: Option<JobError>,
    /// The files of a succeeded job.
    artifacts: Vec<Artifact>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Progress {
    segments_done: i32,
    segments_total: i32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobError {
    code: String,
    message: Option<String>,
}

/// One file of a finished job.
#[derive(Debug, Serialize, ToSchema)]
pub struct Artifact {
    #[schema(schema_with = openapi::artifact_kind)]
    kind: String,
    /// Unique within the job; chapter files are under `chapters/`.
    name: String,
    bytes: i64,
    content_type: String,
    /// Where to download it: `/v1/jobs/{id}/artifacts/{name}`.
    url: String,
}

fn view(row: &JobRow, artifacts: &[ArtifactRow]) -> Job {
    Job {
        id: row.id,
        status: row.status.clone(),
        priority: row.priority.clone(),
        voice: row.voice.clone(),
        input_format: row.input_format.clone(),
        output_format: row.output_format.clone(),
        options: row.options.0.clone(),
        progress: Progress {
            segments_done: row.segments_done,
            segments_total: row.segments_total,
        },
        audio_seconds: row.audio_seconds,
        created_at: row.created_at,
        started_at: row.started_at,
        finished_at: row.finished_at,
        error: row.error_code.clone().map(|code| JobError {
            code,
            message: row.error_message.clone(),
        }),
        artifacts: artifacts
            .iter()
            .map(|a| Artifact {
                kind: a.kind.clone(),
                name: a.name.clone(),
                bytes: a.bytes,
                content_type: a.content_type.clone(),
                url: artifact_url(row.id, a),
            })
            .collect(),
    }
}

/// A job
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    security(("bearer" = [])),
    params(openapi::JobId, openapi::PreferWait),
    responses(
        (status = 200, description = "the job", body = Job, headers(
            ("Preference-Applied" = String, description = "`wait=N` when the request waited (up to N seconds) for the job to finish"),
        )),
        (status = 401, description = "missing or invalid API key: `unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such job for this tenant", body = ErrorBody),
        (status = 500, description = "`internal`: see the logs under the X-Request-Id", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let wait = preferred_wait(&headers);
    // Subscribed before the first read, so that a finish between the read and the wait
    // still wakes this request.
    let mut events = wait.map(|_| state.events.subscribe());
    let read = || async {
        repo::get(&state.pool, caller.tenant_id, id)
            .await?
            .ok_or_else(|| ApiError::not_found("job"))
    };
    let mut row = read().await?;
    if let (Some(wait), Some(events)) = (wait, events.as_mut()) {
        let deadline = tokio::time::Instant::now() + wait;
        let mut stopping = state.stopping.clone();
        while !row.status().is_finished()
            && tokio::time::Instant::now() < deadline
            && !*stopping.borrow()
        {
            // A notification wakes the wait at once; a lost one costs at most `WAIT_LOOK`.
            let look = deadline.min(tokio::time::Instant::now() + WAIT_LOOK);
            tokio::select! {
                _ = events.finished(id, look) => {}
                _ = voxproof_scheduler::until_stopping(&mut stopping) => {}
            }
            row = read().await?;
        }
    }
    let artifacts = repo::artifacts(&state.pool, id).await?;
    let mut response = Json(view(&row, &artifacts)).into_response();
    if let Some(wait) = wait {
        let applied = format!("wait={}", wait.as_secs());
        if let Ok(value) = header::HeaderValue::from_str(&applied) {
            response.headers_mut().insert("preference-applied", value);
        }
    }
    Ok(response)
}

/// The longest a request may wait for its job (`Prefer: wait=N` asks for N seconds).
pub const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// How long a waiting request goes without reading the job again when no notification wakes
/// it (the notification was lost with its connection).
const WAIT_LOOK: std::time::Duration = std::time::Duration::from_secs(5);

/// The `wait` preference of RFC 7240 (`Prefer: wait=10`, possibly among others), at most
/// [`MAX_WAIT`]. A preference is advisory: one that cannot be read is ignored, as the RFC
/// asks, and the answer's `Preference-Applied` says what was honoured.
fn preferred_wait(headers: &HeaderMap) -> Option<std::time::Duration> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|preference| {
            // Parameters after `;` do not apply to `wait`.
            let token = preference.split(';').next()?;
            let (name, value) = token.split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("wait") {
                return None;
            }
            let seconds: u64 = value.trim().trim_matches('"').parse().ok()?;
            Some(std::time::Duration::from_secs(seconds).min(MAX_WAIT))
        })
        .next()
        .filter(|wait| !wait.is_zero())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only jobs with this status.
    #[param(schema_with = openapi::job_status)]
    status: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Jobs per page.
    #[param(minimum = 1, maximum = 100, default = 20)]
    limit: Option<i64>,
}

/// A page of jobs.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    jobs: Vec<Job>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

fn encode_cursor(row: &JobRow) -> String {
    format!("{}_{}", row.created_at.timestamp_micros(), row.id.simple())
}

fn decode_cursor(cursor: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let (micros, id) = cursor.split_once('_')?;
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        Uuid::parse_str(id).ok()?,
    ))
}

/// List jobs, newest first
#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "jobs",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "a page of jobs; artifacts are listed for succeeded jobs", body = JobList),
        (status = 400, description = "`invalid_query`: unknown status or parameter, limit outside 1–100, malformed cursor", body = ErrorBody),
        (status = 401, description = "missing or invalid API key: `unauthorized`", body = ErrorBody),
        (status = 500, description = "`internal`: see the logs under the X-Request-Id", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JobList>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    if let Some(status) = &query.status {
        if voxproof_scheduler::model::JobStatus::parse(status).is_none() {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("unknown status {status:?}"),
            ));
        }
    }
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be 1–100",
        ));
    }
    let after = match &query.cursor {
        Some(c) => Some(
            decode_cursor(c)
                .ok_or_else(|| ApiError::bad_request("invalid_query", "malformed cursor"))?,
        ),
        None => None,
    };
    let rows = repo::list(
        &state.pool,
        caller.tenant_id,
        query.status.as_deref(),
        after,
        limit + 1,
    )
    .await?;
    let more = rows.len() as i64 > limit;
    let page = &rows[..rows.len().min(limit as usize)];
    let mut jobs = Vec::with_capacity(page.len());
    for row in page {
        let artifacts = if row.status == "succeeded" {
            repo::artifacts(&state.pool, row.id).await?
        } else {
            Vec::new()
        };
        jobs.push(view(row, &artifacts));
    }
    Ok(Json(JobList {
        jobs,
        next_cursor: if more {
            page.last().map(encode_cursor)
        } else {
            None
        },
    }))
}

/// Cancel a queued or running job
///
/// Admin keys may cancel any job of their tenant; member keys only the jobs they created.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/cancel",
    tag = "jobs",
    security(("bearer" = [])),
    params(openapi::JobId),
    responses(
        (status = 200, description = "cancelled: the job, now `cancelled`", body = Job),
        (status = 401, description = "missing or invalid API key: `unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: a member key may cancel only the jobs it created", body = ErrorBody),
        (status = 404, description = "`not_found`: no such job for this tenant", body = ErrorBody),
        (status = 409, description = "`job_finished`: the job has already finished", body = ErrorBody),
        (status = 500, description = "`internal`: see the logs under the X-Request-Id", body = ErrorBody),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    let id = parse_id(&id)?;
    if caller.role != Role::Admin {
        let owner: Option<Option<Uuid>> =
            sqlx::query_scalar("SELECT created_by_key FROM jobs WHERE id = $1 AND tenant_id = $2")
                .bind(id)
                .bind(caller.tenant_id)
                .fetch_optional(&state.pool)
                .await?;
        match owner {
            None => return Err(ApiError::not_found("job")),
            Some(owner) if owner != Some(caller.key_id) => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "members may cancel only the jobs their own key created",
                ))
            }
            Some(_) => {}
        }
    }
    match repo::cancel(
        &state.pool,
        caller.tenant_id,
        id,
        Actor::Key(caller.key_id),
        &request_id,
    )
    .await?
    {
        Cancelled::Done(row) => Ok(Json(view(&row, &[]))),
        Cancelled::NotFound => Err(ApiError::not_found("job")),
        Cancelled::AlreadyFinished(row) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "job_finished",
            format!("the job is already {}", row.status),
        )),
    }
}

/// The finished audio
///
/// A 302 to a short-lived presigned URL where storage has them (S3), else the bytes.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/result",
    tag = "jobs",
    security(("bearer" = [])),
    params(openapi::JobId),
    responses(
        (status = 200, description = "the audio bytes (local storage)", content_type = "application/octet-stream",
            headers(("content-disposition" = String, description = "attachment; filename=\"{id}-{name}\""))),
        (status = 302, description = "a presigned storage URL",
            headers(("location" = String, description = "the presigned URL"))),
        (status = 401, description = "missing or invalid API key: `unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such job for this tenant, or it has no audio", body = ErrorBody),
        (status = 409, description = "`job_not_finished`: the job has not succeeded", body = ErrorBody),
        (status = 500, description = "`internal`: see the logs under the X-Request-Id", body = ErrorBody),
    )
)]
pub async fn result(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let (row, artifacts) = finished_job(&state, &caller, id).await?;
    let audio = artifacts
        .into_iter()
        .find(|a| a.kind == "audio")
        .ok_or_else(|| ApiError::not_found("audio"))?;
    download(&state, &caller, &row, &audio, &request_id).await
}

/// One file of a finished job
///
/// A 302 to a short-lived presigned URL where storage has them (S3), else the bytes.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/artifacts/{name}",
    tag = "jobs",
    security(("bearer" = [])),
    params(
        openapi::JobId,
        ("name" = String, Path, description = "the artifact's `name` in the job (it may contain `/`)"),
    ),
    responses(
        (status = 200, description = "the bytes (local storage), with the artifact's content type", content_type = "application/octet-stream",
            headers(("content-disposition" = String, description = "attachment; filename=\"{id}-{name}\""))),
        (status = 302, description = "a presigned storage URL",
            headers(("location" = String, description = "the presigned URL"))),
        (status = 401, description = "missing or invalid API key: `unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such job for this tenant, or no such artifact", body = ErrorBody),
        (status = 409, description = "`job_not_finished`: the job has not succeeded", body = ErrorBody),
        (status = 500, description = "`internal`: see the logs under the X-Request-Id", body = ErrorBody),
    )
)]
pub async fn artifact(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RequestId(request_id): RequestId,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let (row, artifacts) = finished_job(&state, &caller, id).await?;
    let artifact = artifacts
        .into_iter()
        .find(|a| a.name == name)
        .ok_or_else(|| ApiError::not_found("artifact"))?;
    download(&state, &caller, &row, &artifact, &request_id).await
}

async fn finished_job(
    state: &AppState,
    caller: &voxproof_scheduler::keys::Principal,
    id: Uuid,
) -> Result<(JobRow, Vec<ArtifactRow>), ApiError> {
    let row = repo::get(&state.pool, caller.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("job"))?;
    if row.status != "succeeded" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "job_not_finished",
            format!(
                "the job is {}; results exist once it has succeeded",
                row.status
            ),
        ));
    }
    let artifacts = repo::artifacts(&state.pool, id).await?;
    Ok((row, artifacts))
}

/// A 302 to a short-lived presigned URL where storage has them, else the bytes streamed.
async fn download(
    state: &AppState,
    caller: &voxproof_scheduler::keys::Principal,
    row: &JobRow,
    artifact: &ArtifactRow,
    request_id: &str,
) -> Result<Response, ApiError> {
    audit::record(
        &state.pool,
        &AuditEvent {
            request_id: request_id.to_string(),
            actor: Actor::Key(caller.key_id),
            tenant_id: Some(caller.tenant_id),
            action: "job.download".into(),
            target: format!("job:{}", row.id),
            details: serde_json::json!({ "artifact": artifact.name }),
        },
    )
    .await?;
    let file_name = artifact.name.rsplit('/').next().unwrap_or("audio");
    let download_name = format!("{}-{file_name}", row.id);
    let ttl = std::time::Duration::from_secs(state.config.presign_seconds);
    if let Some(url) = state
        .storage
        .presigned_get(&artifact.storage_key, ttl, Some(&download_name))
        .await?
    {
        return Ok((
            StatusCode::FOUND,
            [
                (header::LOCATION, url),
                (header::CACHE_CONTROL, "no-store".into()),
            ],
        )
            .into_response());
    }
    let (size, stream) = state.storage.get_stream(&artifact.storage_key).await?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, artifact.content_type.clone()),
            (header::CONTENT_LENGTH, size.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{download_name}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefer(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("prefer", value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn the_wait_preference_is_read_among_others_and_capped() {
        let secs = std::time::Duration::from_secs;
        assert_eq!(preferred_wait(&prefer(&["wait=10"])), Some(secs(10)));
        assert_eq!(
            preferred_wait(&prefer(&["respond-async, Wait = \"5\""])),
            Some(secs(5))
        );
        assert_eq!(
            preferred_wait(&prefer(&["return=minimal", "wait=7;foo=bar"])),
            Some(secs(7))
        );
        assert_eq!(preferred_wait(&prefer(&["wait=3600"])), Some(MAX_WAIT));
        // Advisory: what cannot be read, or asks for no wait, is no wait.
        for ignored in ["wait=soon", "wait=-1", "wait=0", "waiting=5", "wait"] {
            assert_eq!(preferred_wait(&prefer(&[ignored])), None, "{ignored}");
        }
        assert_eq!(preferred_wait(&HeaderMap::new()), None);
    }
}
