//! The HTTP API (`voxproof serve`): jobs, voices, health, and the OpenAPI description.
//! Every request gets an id (`X-Request-Id`, taken from the client when well-formed) that
//! the audit log and error answers carry.

mod error;
mod jobs;
mod openapi;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sqlx::PgPool;
use voxproof_scheduler::keys::{self, Principal};
use voxproof_scheduler::queue::Queue;
use voxproof_scheduler::Config;
use voxproof_storage::Storage;

pub use error::ApiError;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub pool: PgPool,
    pub queue: Queue,
    pub storage: Arc<dyn Storage>,
    /// Recently checked API keys (a few seconds), so requests do not each query the database.
    pub keys: keys::KeyCache,
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
        .route("/v1/voices", get(voices))
        .route("/v1/jobs", post(jobs::create).get(jobs::list))
        .route("/v1/jobs/{id}", get(jobs::get))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/v1/jobs/{id}/result", get(jobs::result))
        .route("/v1/jobs/{id}/artifacts/{*name}", get(jobs::artifact))
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

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Ready when Postgres, Redis and storage all answer.
async fn readyz(State(state): State<AppState>) -> Response {
    let database = sqlx::query("SELECT 1").execute(&state.pool).await.err();
    let queue = state.queue.ping().await.err();
    let storage = state.storage.check().await.err();
    let check = |e: Option<String>| match e {
        None => serde_json::json!({ "ok": true }),
        Some(message) => serde_json::json!({ "ok": false, "error": message }),
    };
    let ready = database.is_none() && queue.is_none() && storage.is_none();
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": {
            "database": check(database.map(|e| e.to_string())),
            "queue": check(queue.map(|e| e.to_string())),
            "storage": check(storage.map(|e| e.to_string())),
        }
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// What the deployment renders: the voices its API and workers registered.
async fn voices(
    State(state): State<AppState>,
    _: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let voices: Vec<_> = voxproof_scheduler::voices::list(&state.pool)
        .await?
        .into_iter()
        .map(|row| {
            let v = row.voice;
            serde_json::json!({
                "name": v.name,
                "language": v.language,
                "quality": v.quality,
                "sample_rate": v.sample_rate,
                "speakers": v.speakers.0,
                "model_sha256": v.model_sha256,
                "updated_at": row.updated_at,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "voices": voices })))
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
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
