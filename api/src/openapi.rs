//! The API's OpenAPI 3.1 description, generated from the handlers' `#[utoipa::path]`
//! attributes and the types they take and return, and the Swagger UI page that renders it.
//! Swagger UI's files are embedded in the binary (see build.rs), so `/docs` works where the
//! internet cannot be reached.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use voxproof_scheduler::model::OUTPUT_FORMATS;

use crate::{jobs, verify, ApiError};

#[derive(OpenApi)]
#[openapi(
    info(title = "voxproof", description = "Long-form text to speech with provenance."),
    paths(
        crate::healthz,
        crate::readyz,
        document,
        docs,
        asset,
        crate::voices,
        jobs::create,
        jobs::list,
        jobs::get,
        jobs::cancel,
        jobs::result,
        jobs::artifact,
        verify::verify,
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "jobs", description = "Submit, follow, cancel and download jobs"),
        (name = "voices", description = "What the deployment can render"),
        (name = "provenance", description = "Check where an audio file came from, without an API key"),
        (name = "health", description = "Probes, without an API key"),
        (name = "docs", description = "This description and its viewer, without an API key"),
    )
)]
pub struct ApiDoc;

/// The `bearer` scheme that the `security(("bearer" = []))` of the handlers names.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key from `voxproof keys create`: `Authorization: Bearer <key>`",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document never changes while the process runs: built once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_json()
        .expect("the OpenAPI document serializes")
});

/// This OpenAPI description
#[utoipa::path(get, path = "/openapi.json", tag = "docs",
    responses((status = 200, description = "the OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn document() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
        .into_response()
}

/// The installed swagger-ui-dist version (build.rs checks it against the pin in
/// swagger-ui/package.json). Asset URLs carry it, so browsers may keep them for good.
const SWAGGER_UI_VERSION: &str = env!("SWAGGER_UI_VERSION");

macro_rules! asset_url {
    ($file:literal) => {
        concat!("/docs/assets/", env!("SWAGGER_UI_VERSION"), "/", $file)
    };
}

/// No URL leaves this server: `validatorUrl: null` turns off the badge that would ask
/// validator.swagger.io about the document.
const DOCS_PAGE: &str = concat!(
    r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>voxproof API</title>
<link rel="icon" type="image/png" href=""#,
    asset_url!("favicon-32x32.png"),
    r#"">
<link rel="stylesheet" href=""#,
    asset_url!("swagger-ui.css"),
    r#""></head>
<body><div id="ui"></div>
<script src=""#,
    asset_url!("swagger-ui-bundle.js"),
    r##""></script>
<script>SwaggerUIBundle({ url: "/openapi.json", dom_id: "#ui", validatorUrl: null });</script>
</body></html>"##
);

/// Swagger UI, rendering this description
#[utoipa::path(get, path = "/docs", tag = "docs",
    responses((status = 200, description = "the page", content_type = "text/html")))]
pub async fn docs() -> Html<&'static str> {
    Html(DOCS_PAGE)
}

macro_rules! swagger_ui_file {
    ($file:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/swagger-ui/node_modules/swagger-ui-dist/",
            $file
        ))
    };
}

/// Name, content type and bytes of each file the page loads, and of swagger-ui-dist's
/// license texts (Apache-2.0 asks that copies carry them; the bundle's header points at
/// its own).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "swagger-ui.css",
        "text/css; charset=utf-8",
        swagger_ui_file!("swagger-ui.css"),
    ),
    (
        "swagger-ui-bundle.js",
        "text/javascript; charset=utf-8",
        swagger_ui_file!("swagger-ui-bundle.js"),
    ),
    (
        "favicon-32x32.png",
        "image/png",
        swagger_ui_file!("favicon-32x32.png"),
    ),
    (
        "swagger-ui-bundle.js.LICENSE.txt",
        "text/plain; charset=utf-8",
        swagger_ui_file!("swagger-ui-bundle.js.LICENSE.txt"),
    ),
    (
        "LICENSE",
        "text/plain; charset=utf-8",
        swagger_ui_file!("LICENSE"),
    ),
    (
        "NOTICE",
        "text/plain; charset=utf-8",
        swagger_ui_file!("NOTICE"),
    ),
];

/// A Swagger UI file
#[utoipa::path(get, path = "/docs/assets/{version}/{file}", tag = "docs",
    params(
        ("version" = String, Path, description = "the embedded Swagger UI version"),
        ("file" = String, Path, description = "e.g. `swagger-ui.css`"),
    ),
    responses(
        (status = 200, description = "the file, cacheable for a year"),
        (status = 404, description = "`not_found`: another version, or no such file", body = crate::error::ErrorBody),
    ))]
pub async fn asset(Path((version, file)): Path<(String, String)>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, bytes)) if version == SWAGGER_UI_VERSION => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            *bytes,
        )
            .into_response(),
        _ => ApiError::not_found("asset").into_response(),
    }
}

/// The `{id}` of a job's routes.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Only described: handlers take the id as a string and answer 404 for a bad one.
pub(crate) struct JobId {
    /// The job's id (a UUID).
    id: uuid::Uuid,
}

/// `GET /v1/jobs/{id}`'s `Prefer` header.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Only described: the handler reads the header itself.
pub(crate) struct PreferWait {
    /// `wait=N` (RFC 7240): answer when the job has finished, or after N seconds (at most 60)
    /// if it is still queued or running, instead of at once. Saves polling: a client that
    /// asks again with the same header follows a job of any length with a request a minute.
    #[param(rename = "Prefer", example = "wait=60")]
    prefer: Option<String>,
}

// The schema of `voxproof_scheduler::model::JobOptions`, which is defined outside this crate;
// a test below checks that the two have the same fields. Doc comments here are the document's
// descriptions.
/// Speaking and packaging options.
#[derive(ToSchema)]
#[schema(as = JobOptions)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Only described.
pub(crate) struct JobOptionsSchema {
    /// Speaking rate: 1 is the voice's own, 1.25 a quarter faster.
    #[serde(default)]
    #[schema(minimum = 0.25, maximum = 4.0, default = 1.0)]
    rate: Option<f32>,
    /// A speaker of a multi-speaker voice, by name or number (default: the first).
    #[serde(default)]
    speaker: Option<String>,
    /// Also write WebVTT subtitles (a `subtitles` artifact).
    #[serde(default)]
    subtitles: bool,
    /// Also write one audio file per chapter (`chapter_audio` artifacts).
    #[serde(default)]
    per_chapter: bool,
    /// Word → respelling or `/ipa/`.
    #[serde(default)]
    lexicon: BTreeMap<String, String>,
}

// The string fields below hold one of a few values: the handlers check them (for a precise
// 422) or write them, and the schema names the values.

fn one_of(values: &[&str], description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
        .description(Some(description))
        .build()
}

pub(crate) fn input_format() -> Object {
    one_of(
        &["text", "markdown", "ssml"],
        "How to read `text` (default `text`). EPUB comes only as a multipart `file`.",
    )
}

pub(crate) fn upload_input_format() -> Object {
    one_of(
        &["text", "markdown", "ssml", "epub"],
        "How to read the document (default: from the file name's extension, \
         .txt .md .ssml .xml .epub; `text` for a `text` part).",
    )
}

pub(crate) fn output_format() -> Object {
    one_of(OUTPUT_FORMATS, "Audio format (default `mp3`).")
}

pub(crate) fn priority() -> Object {
    one_of(
        &["interactive", "bulk"],
        "Interactive jobs are rendered before bulk ones (default `bulk`).",
    )
}

pub(crate) fn job_status() -> Object {
    one_of(
        &["queued", "running", "succeeded", "failed", "cancelled"],
        "Where the job is.",
    )
}

pub(crate) fn artifact_kind() -> Object {
    one_of(
        &["audio", "subtitles", "marks", "chapter_audio", "manifest"],
        "The whole audio, WebVTT subtitles, JSON timestamps, one chapter's audio, or the C2PA \
         manifest of an Opus file (`.c2pa`, which Ogg cannot embed).",
    )
}

pub(crate) fn health_status() -> Object {
    one_of(&["ok"], "Always `ok`: the process answers.")
}

pub(crate) fn readiness_status() -> Object {
    one_of(&["ready", "not_ready"], "`ready` when every check is ok.")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn keys(object: &serde_json::Value) -> BTreeSet<String> {
        object.as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    fn job_options_schema_has_the_fields_of_job_options() {
        let options = voxproof_scheduler::model::JobOptions::default();
        let document: serde_json::Value = serde_json::from_str(&DOCUMENT).unwrap();
        let schema = &document["components"]["schemas"]["JobOptions"];
        assert_eq!(
            keys(&serde_json::to_value(options).unwrap()),
            keys(&schema["properties"])
        );
        assert_eq!(schema["additionalProperties"], false);
    }

    #[test]
    fn the_docs_page_loads_only_embedded_assets() {
        assert!(!DOCS_PAGE.contains("http://") && !DOCS_PAGE.contains("https://"));
        for url in DOCS_PAGE.split('"').filter(|p| p.starts_with("/docs/")) {
            let file = url.strip_prefix(asset_url!("")).unwrap();
            assert!(
                ASSETS.iter().any(|(name, _, _)| *name == file),
                "{url} is not embedded"
            );
        }
    }
}
