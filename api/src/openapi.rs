//! The API's OpenAPI 3.1 description and a Swagger UI page that renders it.

use axum::response::Html;
use axum::Json;
use serde_json::{json, Value};

fn error_response(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": {
        "schema": { "$ref": "#/components/schemas/Error" } } } })
}

pub async fn document() -> Json<Value> {
    let errors = |codes: &[&str]| -> Value {
        let mut map = serde_json::Map::new();
        for code in codes {
            let text = match *code {
                "400" => "malformed request",
                "401" => "missing or invalid API key",
                "403" => "the key's role does not allow this",
                "404" => "no such job for this tenant",
                "409" => "conflicting state or idempotency key",
                "413" => "body or document too large",
                "415" => "unsupported content type",
                "422" => "invalid voice, format, options or document",
                "429" => "too many jobs queued or running",
                _ => "error",
            };
            map.insert((*code).to_string(), error_response(text));
        }
        Value::Object(map)
    };
    let merge = |mut ok: Value, errs: Value| {
        if let (Some(o), Value::Object(e)) = (ok.as_object_mut(), errs) {
            o.extend(e);
        }
        ok
    };
    let job_id = json!({ "name": "id", "in": "path", "required": true,
        "schema": { "type": "string", "format": "uuid" } });
    Json(json!({
        "openapi": "3.1.0",
        "info": { "title": "voxproof", "version": env!("CARGO_PKG_VERSION"),
            "description": "Long-form text to speech with provenance." },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": { "type": "object", "required": ["error"], "properties": {
                    "error": { "type": "object", "required": ["code", "message"], "properties": {
                        "code": { "type": "string" }, "message": { "type": "string" } } } } },
                "JobOptions": { "type": "object", "additionalProperties": false, "properties": {
                    "rate": { "type": "number", "minimum": 0.25, "maximum": 4.0 },
                    "speaker": { "type": "string" },
                    "subtitles": { "type": "boolean" },
                    "per_chapter": { "type": "boolean" },
                    "lexicon": { "type": "object", "additionalProperties": { "type": "string" } } } },
                "JobRequest": { "type": "object", "required": ["voice", "text"], "properties": {
                    "voice": { "type": "string" }, "text": { "type": "string" },
                    "input_format": { "enum": ["text", "markdown", "ssml"] },
                    "output_format": { "enum": ["mp3", "opus", "flac", "wav", "m4b"] },
                    "options": { "$ref": "#/components/schemas/JobOptions" },
                    "priority": { "enum": ["interactive", "bulk"] } } },
                "Accepted": { "type": "object", "properties": {
                    "id": { "type": "string", "format": "uuid" },
                    "status": { "type": "string" }, "status_url": { "type": "string" } } },
                "Job": { "type": "object", "properties": {
                    "id": { "type": "string", "format": "uuid" },
                    "status": { "enum": ["queued", "running", "succeeded", "failed", "cancelled"] },
                    "progress": { "type": "object", "properties": {
                        "segments_done": { "type": "integer" }, "segments_total": { "type": "integer" } } },
                    "audio_seconds": { "type": ["number", "null"] },
                    "created_at": { "type": "string", "format": "date-time" },
                    "finished_at": { "type": ["string", "null"], "format": "date-time" },
                    "error": { "oneOf": [ { "type": "null" }, { "type": "object", "properties": {
                        "code": { "type": "string" }, "message": { "type": "string" } } } ] },
                    "artifacts": { "type": "array", "items": { "type": "object", "properties": {
                        "kind": { "enum": ["audio", "subtitles", "marks", "chapter_audio"] },
                        "name": { "type": "string" }, "bytes": { "type": "integer" },
                        "url": { "type": "string" } } } } } }
            }
        },
        "security": [ { "bearer": [] } ],
        "paths": {
            "/healthz": { "get": { "security": [], "summary": "Liveness",
                "responses": { "200": { "description": "alive" } } } },
            "/readyz": { "get": { "security": [], "summary": "Readiness (Postgres, Redis, storage)",
                "responses": { "200": { "description": "ready" }, "503": { "description": "not ready" } } } },
            "/v1/voices": { "get": { "summary": "Voices the deployment can render (name, language, quality, sample_rate, speakers, model_sha256, updated_at)",
                "responses": merge(json!({ "200": { "description": "voices" } }), errors(&["401"])) } },
            "/v1/jobs": {
                "post": { "summary": "Submit a job (JSON, or multipart with a file part)",
                    "parameters": [ { "name": "Idempotency-Key", "in": "header", "schema": { "type": "string" } } ],
                    "requestBody": { "required": true, "content": {
                        "application/json": { "schema": { "$ref": "#/components/schemas/JobRequest" } },
                        "multipart/form-data": { "schema": { "type": "object", "properties": {
                            "file": { "type": "string", "format": "binary" },
                            "voice": { "type": "string" }, "input_format": { "type": "string" },
                            "output_format": { "type": "string" }, "priority": { "type": "string" },
                            "options": { "type": "string", "description": "JobOptions as JSON" } } } } } },
                    "responses": merge(json!({ "202": { "description": "accepted", "content": {
                        "application/json": { "schema": { "$ref": "#/components/schemas/Accepted" } } } } }),
                        errors(&["400", "401", "409", "413", "415", "422", "429"])) },
                "get": { "summary": "List jobs, newest first",
                    "parameters": [
                        { "name": "status", "in": "query", "schema": { "type": "string" } },
                        { "name": "cursor", "in": "query", "schema": { "type": "string" } },
                        { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 100 } } ],
                    "responses": merge(json!({ "200": { "description": "a page of jobs" } }), errors(&["400", "401"])) } },
            "/v1/jobs/{id}": { "get": { "summary": "A job", "parameters": [job_id],
                "responses": merge(json!({ "200": { "description": "the job", "content": {
                    "application/json": { "schema": { "$ref": "#/components/schemas/Job" } } } } }),
                    errors(&["401", "404"])) } },
            "/v1/jobs/{id}/cancel": { "post": { "summary": "Cancel a queued or running job",
                "parameters": [job_id],
                "responses": merge(json!({ "200": { "description": "cancelled" } }), errors(&["401", "403", "404", "409"])) } },
            "/v1/jobs/{id}/result": { "get": { "summary": "The finished audio (302 to a presigned URL, or the bytes)",
                "parameters": [job_id],
                "responses": merge(json!({ "200": { "description": "audio bytes" },
                    "302": { "description": "presigned storage URL" } }), errors(&["401", "404", "409"])) } },
            "/v1/jobs/{id}/artifacts/{name}": { "get": { "summary": "One file of a finished job",
                "parameters": [job_id, { "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }],
                "responses": merge(json!({ "200": { "description": "bytes" },
                    "302": { "description": "presigned storage URL" } }), errors(&["401", "404", "409"])) } }
        }
    }))
}

pub async fn docs() -> Html<&'static str> {
    Html(
        r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>voxproof API</title>
<link rel="stylesheet" href="https://unpkg.com/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="https://unpkg.com/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({ url: "/openapi.json", dom_id: "#ui" });</script>
</body></html>"##,
    )
}
