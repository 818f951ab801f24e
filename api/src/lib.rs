//! The HTTP API (`voxproof serve`): jobs, voices, health, and the OpenAPI description.
//! Every request gets an id (`X-Request-Id`, taken from the client when well-formed) that
//! the audit log and error answers carry.

mod error;
mod jobs;
mod openapi;
mod verify;
mod voice_cache;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;
use voxproof_scheduler::events::JobEvents;
use voxproof_scheduler::keys::{self, Principal};
use voxproof_scheduler::queue::Queue;
use voxproof_scheduler::Config;
use voxproof_storage::Storage;

pub use error::ApiError;
use error::ErrorBody;
pub use verify::Verifier;
pub use voice_cache::VoiceCache;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub pool: PgPool,
    pub queue: Queue,
    pub storage: Arc<dyn Storage>,
    /// Recently checked API keys (a few seconds), so requests do not each query the database.
    pub keys: keys::KeyCache,
    /// `POST /v1/verify`: the deployment's provenance material and the endpoint's limits.
    pub verifier: Arc<Verifier>,
    /// Voices recently read from disk (a few seconds), for job requests.
    pub voices: Arc<VoiceCache>,
    /// Job progress from Postgres, for requests that wait on a job.
    pub events: JobEvents,
    /// Turns true when the server is asked to stop: waiting requests answer at once.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// The request's id, as set by the middleware.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

pub fn router(state: AppState) -> Router {
    // Multipart uploads carry the document: the body limit is the configured maximum plus
    // room for the other parts.
    let body_limit = state.config.limits.max_body_bytes + 64 * 1024;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi::document))
        .route("/docs", get(openapi::docs))
        .route("/docs/assets/{version}/{file}", get(openapi::asset))
        .route("/v1/voices", get(voices))
        .route("/v1/jobs", post(jobs::create).get(jobs::list))
        .route("/v1/jobs/{id}", get(jobs::get))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/v1/jobs/{id}/result", get(jobs::result))
        .route("/v1/jobs/{id}/artifacts/{*name}", get(jobs::artifact))
        .route("/v1/verify", post(verify::verify))
        .fallback(|| async { ApiError::not_found("route") })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(request_id))
        .with_state(state)
}

async fn request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(|| RequestId(uuid::Uuid::now_v7().to_string())))
    }
}

/// The caller, from `Authorization: Bearer <key>`.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(ApiError::unauthorized)?;
        let key = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .ok_or_else(ApiError::unauthorized)?;
        match state.keys.authenticate(&state.pool, key).await? {
            Some(principal) => Ok(Caller(principal)),
            None => Err(ApiError::unauthorized()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
struct Health {
    #[schema(schema_with = openapi::health_status)]
    status: &'static str,
}

/// Liveness
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "alive", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Debug, Serialize, ToSchema)]
struct Readiness {
    #[schema(schema_with = openapi::readiness_status)]
    status: &'static str,
    checks: Checks,
}

#[derive(Debug, Serialize, ToSchema)]
struct Checks {
    database: Check,
    queue: Check,
    storage: Check,
}

#[derive(Debug, Serialize, ToSchema)]
struct Check {
    ok: bool,
    /// Why the dependency does not answer; absent when `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Check {
    fn of<E: std::fmt::Display>(result: Result<impl Sized, E>) -> Self {
        let error = result.err().map(|e| e.to_string());
        Check {
            ok: error.is_none(),
            error,
        }
    }
}

/// Readiness (Postgres, Redis, storage)
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "ready: Postgres, Redis and storage all answer", body = Readiness),
        (status = 503, description = "not ready: the checks say which dependency does not answer", body = Readiness),
    ))]
async fn readyz(State(state): State<AppState>) -> Response {
    let checks = Checks {
        database: Check::of(sqlx::query("SELECT 1").execute(&state.pool).await),
        queue: Check::of(state.queue.ping().await),
        storage: Check::of(state.storage.check().await),
    };
    let ready = checks.database.ok && checks.queue.ok && checks.storage.ok;
    let (status, code) = if ready {
        ("ready", StatusCode::OK)
    } else {
        ("not_ready", StatusCode::SERVICE_UNAVAILABLE)
    };
    (code, Json(Readiness { status, checks })).into_response()
}

#[derive(Debug, Serialize, ToSchema)]
struct VoiceList {
    voices: Vec<Voice>,
}

#[derive(Debug, Serialize, ToSchema)]
struct Voice {
    /// What a job's `voice` names.
    name: String,
    language: String,
    quality: Option<String>,
    sample_rate: i32,
    /// Speaker names in id order; empty for a single-speaker voice.
    speakers: Vec<String>,
    /// SHA-256 of the model file: a changed model shows as a new digest.
    model_sha256: String,
    updated_at: chrono::DateTime<chrono::Utc>,
}

/// Voices the deployment can render
///
/// The voices its API and workers registered at start.
#[utoipa::path(get, path = "/v1/voices", tag = "voices",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "voices", body = VoiceList),
        (status = 401, description = "missing or invalid API key: `unauthorized`", body = ErrorBody),
        (status = 500, description = "`internal`: see the logs under the X-Request-Id", body = ErrorBody),
    ))]
async fn voices(State(state): State<AppState>, _: Caller) -> Result<Json<VoiceList>, ApiError> {
    let voices = voxproof_scheduler::voices::list(&state.pool)
        .await?
        .into_iter()
        .map(|row| {
            let v = row.voice;
            Voice {
                name: v.name,
                language: v.language,
                quality: v.quality,
                sample_rate: v.sample_rate,
                speakers: v.speakers.0,
                model_sha256: v.model_sha256,
                updated_at: row.updated_at,
            }
        })
        .collect();
    Ok(Json(VoiceList { voices }))
}

/// Binds and serves until `shutdown` resolves; in-flight requests finish.
pub async fn serve(
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listen = state.config.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    // Client addresses are needed by the verify endpoint's per-address rate limit.
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
