//! End to end through the HTTP API: the real binary against real Postgres (a fresh database
//! per test), real Redis (its own queue namespace), and local or S3 storage.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{Options, Platform, Storage};

#[test]
fn a_markdown_book_renders_and_everything_around_it_holds() {
    let platform = Platform::start_with(Options {
        env: vec![
            ("VOXPROOF_MAX_BODY_BYTES".into(), "200000".into()),
            ("VOXPROOF_QUEUE_RETENTION_SECONDS".into(), "0".into()),
        ],
        ..Options::default()
    });
    let api = platform.client("acme");
    let other = platform.client("globex");
    support::runtime().block_on(async {
        let book = "# One\n\nIt was a bright cold day. The clocks were striking.\n\n\
                    # Two\n\nSomewhere a dog barked. Then all was quiet.\n\n\
                    # Three\n\nThe end came softly, as ends do.";
        let request = json!({
            "voice": "en_US-joe-medium", "text": book, "input_format": "markdown",
            "output_format": "mp3", "options": { "subtitles": true }, "priority": "interactive"
        });
        let post = |body: Value, idem: Option<&str>| {
            let mut r = api.post("/v1/jobs").json(&body);
            if let Some(i) = idem {
                r = r.header("idempotency-key", i);
            }
            r.send()
        };
        let created = post(request.clone(), Some("book-1")).await.unwrap();
        assert_eq!(created.status(), 202);
        let created: Value = created.json().await.unwrap();
        let id = created["id"].as_str().unwrap().to_string();
        assert_eq!(created["status"], "queued");

        // Same key, same request: the same job. Same key, other request: 409.
        let again: Value = post(request.clone(), Some("book-1"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(again["id"], id.as_str());
        let mut changed = request.clone();
        changed["output_format"] = json!("wav");
        let conflict = post(changed, Some("book-1")).await.unwrap();
        assert_eq!(conflict.status(), 409);

        // Errors: no key, another tenant, bad voice, bad format, bad JSON.
        let no_key = api
            .http
            .get(format!("{}/v1/jobs/{id}", api.base))
            .send()
            .await
            .unwrap();
        assert_eq!(no_key.status(), 401);
        let body: Value = no_key.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
        let foreign = other.get(&format!("/v1/jobs/{id}")).send().await.unwrap();
        assert_eq!(foreign.status(), 404);
        let mut bad_voice = request.clone();
        bad_voice["voice"] = json!("nobody");
        let r = post(bad_voice, None).await.unwrap();
        assert_eq!(r.status(), 422);
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["code"],
            "unknown_voice"
        );
        let mut bad_format = request.clone();
        bad_format["output_format"] = json!("aiff");
        let r = post(bad_format, None).await.unwrap();
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["code"],
            "invalid_output_format"
        );

        // Over the body limit (200 kB here): 413, whether JSON or an uploaded file.
        let mut huge = request.clone();
        huge["text"] = json!("word ".repeat(60_000));
        let r = post(huge, None).await.unwrap();
        assert_eq!(r.status(), 413);
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["code"],
            "payload_too_large"
        );
        let form = ::reqwest::multipart::Form::new()
            .text("voice", "en_US-joe-medium")
            .text("output_format", "mp3")
            .part(
                "file",
                ::reqwest::multipart::Part::bytes(b"word ".repeat(46_000)).file_name("big.txt"),
            );
        let r = api.post("/v1/jobs").multipart(form).send().await.unwrap();
        assert_eq!(r.status(), 413);
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["code"],
            "payload_too_large"
        );

        // The voices the deployment registered, with their model digests.
        let voices: Value = api
            .get("/v1/voices")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let joe = voices["voices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "en_US-joe-medium")
            .unwrap_or_else(|| panic!("{voices}"));
        assert_eq!(joe["sample_rate"], 22050);
        assert_eq!(joe["language"], "en_US");
        assert_eq!(joe["model_sha256"].as_str().unwrap().len(), 64);

        // Wait for it: `Prefer: wait` holds the request until the job has finished, so
        // one request follows it (it renders in seconds; each request waits up to 60 s).
        let mut job = Value::Null;
        for _ in 0..2 {
            let response = api
                .get(&format!("/v1/jobs/{id}"))
                .header("prefer", "respond-async, wait=60")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["preference-applied"], "wait=60");
            job = response.json().await.unwrap();
            if job["status"] != "queued" && job["status"] != "running" {
                break;
            }
        }
        assert_eq!(job["status"], "succeeded", "{job}");
        // Without the preference the answer comes at once and says nothing of it.
        let plain = api.get(&format!("/v1/jobs/{id}")).send().await.unwrap();
        assert!(plain.headers().get("preference-applied").is_none());
        assert_eq!(
            job["progress"]["segments_done"],
            job["progress"]["segments_total"]
        );
        let seconds = job["audio_seconds"].as_f64().unwrap();
        assert!(seconds > 5.0, "{seconds}");
        let kinds: Vec<&str> = job["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["kind"].as_str().unwrap())
            .collect();
        assert!(
            kinds.contains(&"audio") && kinds.contains(&"subtitles"),
            "{kinds:?}"
        );

        // The audio reads back with its three chapters.
        let (status, audio) = api.download(&format!("/v1/jobs/{id}/result")).await;
        assert_eq!(status, 200);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("book.mp3");
        std::fs::write(&path, audio).unwrap();
        assert_eq!(support::chapter_titles(&path), ["One", "Two", "Three"]);
        let vtt = api
            .get(&format!("/v1/jobs/{id}/artifacts/subtitles.vtt"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            vtt.starts_with("WEBVTT") && vtt.contains("dog barked"),
            "{vtt}"
        );

        // Finished tasks do not pile up in Redis: the sweeper prunes them (retention 0 here).
        let namespace = platform.env_value("VOXPROOF_QUEUE_NAMESPACE");
        let leftovers = || {
            let out = Command::new("redis-cli")
                .args(["--scan", "--pattern"])
                .arg(format!("{namespace}:*"))
                .output()
                .unwrap();
            String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .filter(|k| k.contains(":meta:") || k.ends_with(":done") || k.ends_with(":data"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let started = Instant::now();
        while !leftovers().is_empty() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "still in Redis: {:?}",
                leftovers()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }

        // A finished job cannot be cancelled.
        let cancel = api
            .post(&format!("/v1/jobs/{id}/cancel"))
            .send()
            .await
            .unwrap();
        assert_eq!(cancel.status(), 409);
    });

    // The audit chain verifies, and a hand-edited row is named.
    let ok = platform.cli(&["audit", "verify"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let db = &platform.database;
    let edit = Command::new("psql")
        .args([db.as_str(), "-q", "-c"])
        .arg("UPDATE audit_events SET target = 'job:forged' WHERE seq = 3")
        .status()
        .unwrap();
    assert!(edit.success());
    let broken = platform.cli(&["audit", "verify"]);
    assert!(!broken.status.success());
    let message = String::from_utf8_lossy(&broken.stderr);
    assert!(message.contains("row 3"), "{message}");
}

#[test]
fn an_epub_upload_renders_into_s3_and_downloads_through_presigned_urls() {
    let platform = Platform::start_with(Options {
        storage: Storage::S3,
        ..Options::default()
    });
    let api = platform.client("initech");
    let book = support::epub(&[
        (
            "The Harbour",
            "Boats rocked in the grey water. A gull cried twice.",
        ),
        ("The Market", "Fish were sold by the pound. Nobody haggled."),
    ]);
    support::runtime().block_on(async {
        let form = ::reqwest::multipart::Form::new()
            .text("voice", support::VOICE)
            .text("output_format", "mp3")
            .text("options", r#"{"subtitles": true, "per_chapter": true}"#)
            .part(
                "file",
                ::reqwest::multipart::Part::bytes(book).file_name("harbour.epub"),
            );
        let response = api.post("/v1/jobs").multipart(form).send().await.unwrap();
        let status = response.status();
        let created: Value = response.json().await.unwrap();
        assert_eq!(status, 202, "{created}");
        let id = created["id"].as_str().unwrap();
        let job = api.finished(id, Duration::from_secs(120)).await;
        assert_eq!(job["status"], "succeeded", "{job}");

        // On S3 the result is a redirect to a presigned URL, which works without the key.
        let result = api
            .get(&format!("/v1/jobs/{id}/result"))
            .send()
            .await
            .unwrap();
        assert_eq!(result.status(), 302);
        let location = result.headers()["location"].to_str().unwrap();
        assert!(location.contains("X-Amz-Signature="), "{location}");
        // Path-style, in the bucket, under this deployment's prefix.
        let storage = platform.env_value("VOXPROOF_STORAGE");
        let (bucket, prefix) = storage
            .strip_prefix("s3://")
            .unwrap()
            .split_once('/')
            .unwrap();
        let endpoint = platform.env_value("VOXPROOF_S3_ENDPOINT");
        assert!(
            location.starts_with(&format!("{endpoint}/{bucket}/{prefix}/")),
            "{location}"
        );
        let (status, audio) = api.download(&format!("/v1/jobs/{id}/result")).await;
        assert_eq!(status, 200);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("book.mp3");
        std::fs::write(&path, &audio).unwrap();
        let listed = job["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["kind"] == "audio")
            .unwrap()["bytes"]
            .as_u64()
            .unwrap();
        assert_eq!(listed, audio.len() as u64);
        assert_eq!(
            support::chapter_titles(&path),
            ["The Harbour", "The Market"]
        );
        let whole = support::duration_seconds(&path);
        assert!(
            (whole - job["audio_seconds"].as_f64().unwrap()).abs() < 0.5,
            "{whole} vs {job}"
        );

        // Subtitles and one file per chapter, each listed and downloadable.
        let artifacts = job["artifacts"].as_array().unwrap();
        let named = |kind: &str| -> Vec<String> {
            artifacts
                .iter()
                .filter(|a| a["kind"] == kind)
                .map(|a| a["name"].as_str().unwrap().to_string())
                .collect()
        };
        let chapters = named("chapter_audio");
        assert_eq!(chapters.len(), 2, "{artifacts:?}");
        let mut chapter_seconds = 0.0;
        for name in &chapters {
            let (status, bytes) = api
                .download(&format!("/v1/jobs/{id}/artifacts/{name}"))
                .await;
            assert_eq!(status, 200, "{name}");
            let part = dir.path().join("chapter.mp3");
            std::fs::write(&part, &bytes).unwrap();
            chapter_seconds += support::duration_seconds(&part);
        }
        // The book adds room tone and pauses between chapters that chapter files leave out.
        assert!(
            chapter_seconds > 0.8 * whole && chapter_seconds < whole + 0.1,
            "chapters add up to {chapter_seconds} s, the book is {whole} s"
        );
        let subtitles = named("subtitles");
        let (status, vtt) = api
            .download(&format!("/v1/jobs/{id}/artifacts/{}", subtitles[0]))
            .await;
        assert_eq!(status, 200);
        let vtt = String::from_utf8(vtt).unwrap();
        assert!(vtt.contains("gull cried twice"), "{vtt}");
        assert!(vtt.contains("Nobody haggled"), "{vtt}");
    });
}

#[test]
fn the_openapi_document_describes_every_route_and_docs_work_offline() {
    let platform = Platform::start();
    let api = platform.client("umbrella");
    let http = ::reqwest::Client::new();
    let base = platform.base.clone();
    support::runtime().block_on(async {
        let response = http
            .get(format!("{base}/openapi.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let doc: Value = response.json().await.unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let bearer = &doc["components"]["securitySchemes"]["bearer"];
        assert_eq!(
            (&bearer["type"], &bearer["scheme"]),
            (&json!("http"), &json!("bearer"))
        );
        assert!(doc.get("security").is_none(), "no global requirement");

        // Every route the router registers, read from its source so that a new route fails
        // here until it is described.
        let routes = registered_routes();
        assert!(routes.len() >= 11, "{routes:?}");
        let public = [
            "/healthz",
            "/readyz",
            "/openapi.json",
            "/docs",
            "/v1/verify",
        ];
        for (path, methods) in &routes {
            let item = &doc["paths"][path.as_str()];
            assert!(item.is_object(), "{path} is not in /openapi.json");
            for method in methods {
                let operation = &item[method.as_str()];
                assert!(operation.is_object(), "{method} {path} is not described");
                assert!(
                    operation["summary"].is_string(),
                    "{method} {path}: no summary"
                );
                let security = operation.get("security");
                if public.contains(&path.as_str()) || path.starts_with("/docs/") {
                    assert!(security.is_none(), "{method} {path} is public");
                } else {
                    assert_eq!(
                        security,
                        Some(&json!([{ "bearer": [] }])),
                        "{method} {path}"
                    );
                    let unauthorized = &operation["responses"]["401"];
                    assert_eq!(
                        unauthorized["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/Error",
                        "{method} {path}"
                    );
                }
            }
            let described: Vec<&String> = item.as_object().unwrap().keys().collect();
            assert_eq!(described.len(), methods.len(), "{path}: {described:?}");
        }
        assert_eq!(
            doc["paths"].as_object().unwrap().len(),
            routes.len(),
            "described paths that the router does not have"
        );

        let schemas = &doc["components"]["schemas"];
        let error = &schemas["Error"];
        assert_eq!(error["required"], json!(["error"]));
        let detail = &schemas["ErrorDetail"];
        assert_eq!(detail["required"], json!(["code", "message"]));
        let request = &schemas["JobRequest"];
        let properties: Vec<&String> = request["properties"].as_object().unwrap().keys().collect();
        assert_eq!(
            properties,
            [
                "voice",
                "text",
                "input_format",
                "output_format",
                "options",
                "priority"
            ]
        );
        assert_eq!(request["required"], json!(["voice", "text"]));
        assert_eq!(request["additionalProperties"], false);
        let p = &request["properties"];
        assert_eq!(
            p["input_format"]["enum"],
            json!(["text", "markdown", "ssml"])
        );
        assert_eq!(
            p["output_format"]["enum"],
            json!(["mp3", "opus", "flac", "wav", "m4b"])
        );
        assert_eq!(p["priority"]["enum"], json!(["interactive", "bulk"]));
        assert_eq!(p["options"]["$ref"], "#/components/schemas/JobOptions");
        let options = &schemas["JobOptions"];
        assert_eq!(options["additionalProperties"], false);
        assert_eq!(options["properties"]["rate"]["minimum"], 0.25);
        assert_eq!(options["properties"]["rate"]["maximum"], 4.0);
        assert_eq!(
            schemas["Job"]["properties"]["status"]["enum"],
            json!(["queued", "running", "succeeded", "failed", "cancelled"])
        );

        let create = &doc["paths"]["/v1/jobs"]["post"];
        let upload = &create["requestBody"]["content"]["multipart/form-data"]["schema"];
        let upload = match upload["$ref"].as_str() {
            Some(r) => &schemas[r.rsplit('/').next().unwrap()],
            None => upload,
        };
        assert_eq!(upload["properties"]["file"]["format"], "binary");
        assert_eq!(
            create["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/JobRequest"
        );
        let list = &doc["paths"]["/v1/jobs"]["get"]["parameters"];
        let names: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["status", "cursor", "limit"]);
        assert_eq!(list[2]["schema"]["minimum"], 1);
        assert_eq!(list[2]["schema"]["maximum"], 100);

        // What the handlers answer is among what the document says they answer.
        let id = "0190f0f0-0000-7000-8000-000000000000";
        let answers = [
            ("get", "/v1/voices", http.get(format!("{base}/v1/voices"))),
            ("get", "/v1/jobs", api.get("/v1/jobs?limit=0")),
            ("get", "/v1/jobs/{id}", api.get("/v1/jobs/not-a-uuid")),
            (
                "post",
                "/v1/jobs",
                api.post("/v1/jobs")
                    .header("content-type", "text/plain")
                    .body("hi"),
            ),
            (
                "post",
                "/v1/jobs",
                api.post("/v1/jobs").json(&json!({ "text": "Hi." })),
            ),
            (
                "post",
                "/v1/jobs/{id}/cancel",
                api.post(&format!("/v1/jobs/{id}/cancel")),
            ),
            (
                "get",
                "/v1/jobs/{id}/result",
                api.get(&format!("/v1/jobs/{id}/result")),
            ),
        ];
        for (method, path, request) in answers {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16().to_string();
            let body: Value = response.json().await.unwrap();
            assert!(
                doc["paths"][path][method]["responses"][&status].is_object(),
                "{method} {path} answered {status}, which is not described"
            );
            assert!(body["error"]["code"].is_string(), "{body}");
            assert!(body["error"]["message"].is_string(), "{body}");
        }

        // The Swagger UI page loads only files this server embeds.
        let page = http.get(format!("{base}/docs")).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let page = page.text().await.unwrap();
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "{page}"
        );
        let assets: Vec<&str> = ["src=\"", "href=\""]
            .iter()
            .flat_map(|attr| page.split(attr).skip(1))
            .map(|rest| &rest[..rest.find('"').unwrap()])
            .collect();
        assert!(assets.len() >= 3, "{page}");
        for asset in assets {
            assert!(asset.starts_with("/docs/assets/"), "{asset}");
            let response = http.get(format!("{base}{asset}")).send().await.unwrap();
            assert_eq!(response.status(), 200, "{asset}");
            let header = |name: &str| response.headers()[name].to_str().unwrap().to_string();
            let expected_type = match asset.rsplit('.').next().unwrap() {
                "css" => "text/css",
                "js" => "text/javascript",
                "png" => "image/png",
                other => panic!("{asset}: unexpected .{other}"),
            };
            assert!(header("content-type").starts_with(expected_type), "{asset}");
            assert!(
                header("cache-control").contains("max-age=31536000"),
                "{asset}"
            );
            let bytes = response.bytes().await.unwrap();
            assert!(bytes.len() > 500, "{asset}");
            if expected_type == "text/css" {
                let css = String::from_utf8_lossy(&bytes);
                assert!(!css.contains("@import"), "{asset}");
                for url in css.split("url(").skip(1) {
                    let url = url.trim_start_matches(['"', '\'']);
                    assert!(
                        !url.starts_with("http://") && !url.starts_with("https://"),
                        "{asset} loads {url:.60}"
                    );
                }
            }
        }
        let other_version = http
            .get(format!("{base}/docs/assets/0.0.0/swagger-ui.css"))
            .send()
            .await
            .unwrap();
        assert_eq!(other_version.status(), 404);
    });
}

/// `(path, methods)` of each `.route(...)` in api/src/lib.rs, paths as OpenAPI writes them
/// (`{*name}` is `{name}`).
fn registered_routes() -> Vec<(String, Vec<String>)> {
    let source =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/api/src/lib.rs")).unwrap();
    source
        .split(".route(\"")
        .skip(1)
        .map(|route| {
            let (path, rest) = route.split_once('"').unwrap();
            let handlers = &rest[..rest.find('\n').unwrap()];
            let methods = ["get", "post", "put", "patch", "delete"]
                .into_iter()
                .filter(|m| {
                    handlers.contains(&format!(" {m}(")) || handlers.contains(&format!(".{m}("))
                })
                .map(str::to_string)
                .collect();
            (path.replace("{*", "{"), methods)
        })
        .collect()
}

/// Sends `bytes` named `name` to the public verify endpoint (no API key), with an optional
/// sidecar manifest.
async fn verify(
    api: &support::Api,
    name: &str,
    bytes: Vec<u8>,
    sidecar: Option<Vec<u8>>,
) -> (u16, Value) {
    let mut form = ::reqwest::multipart::Form::new().part(
        "file",
        ::reqwest::multipart::Part::bytes(bytes).file_name(name.to_string()),
    );
    if let Some(manifest) = sidecar {
        form = form.part("manifest", ::reqwest::multipart::Part::bytes(manifest));
    }
    let response = api
        .http
        .post(format!("{}/v1/verify", api.base))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[test]
fn job_outputs_are_marked_signed_and_traced_by_the_public_verifier() {
    // The deployment's own credentials and key, as an operator would configure them.
    let secrets = tempfile::tempdir().unwrap();
    let keys = secrets.path().join("keys");
    let made = Command::new(support::BIN)
        .args([
            "keys",
            "init-ca",
            "--organization",
            "Acme Audiobooks",
            "--dir",
        ])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let platform = Platform::start_with(Options {
        env: vec![
            ("VOXPROOF_SIGNING_KEYS".into(), keys.display().to_string()),
            (
                "VOXPROOF_WATERMARK_KEY".into(),
                "00112233445566778899aabbccddeeff0123456789abcdef".into(),
            ),
            (
                "VOXPROOF_PROVENANCE_DIR".into(),
                secrets.path().join("local").display().to_string(),
            ),
            ("VOXPROOF_VERIFY_PER_MINUTE".into(), "7".into()),
        ],
        ..Options::default()
    });
    let api = platform.client("acme");
    let dir = tempfile::tempdir().unwrap();
    support::runtime().block_on(async {
        // About 40 s of speech in two chapters, as MP3 with a file per chapter.
        let text = format!(
            "# Departure\n\n{}\n\n# Arrival\n\n{}",
            support::numbered_sentences(0..14),
            support::numbered_sentences(14..20)
        );
        let id = api
            .submit(&json!({
                "voice": support::VOICE, "text": text, "input_format": "markdown",
                "output_format": "mp3", "options": { "per_chapter": true }
            }))
            .await;
        let job = api.finished(&id, Duration::from_secs(180)).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert!(job["audio_seconds"].as_f64().unwrap() > 30.0, "{job}");

        let (status, audio) = api.download(&format!("/v1/jobs/{id}/result")).await;
        assert_eq!(status, 200);
        let book = dir.path().join("book.mp3");
        std::fs::write(&book, &audio).unwrap();

        // Authentic, traced to this job and tenant, signed by the configured CA.
        let (status, verdict) = verify(&api, "book.mp3", audio.clone(), None).await;
        assert_eq!(status, 200, "{verdict}");
        assert_eq!(verdict["verdict"], "authentic", "{verdict:#}");
        assert_eq!(verdict["c2pa"]["state"], "trusted");
        assert_eq!(verdict["record"]["job_id"], id.as_str());
        let tenant = platform.sql("SELECT tenant_id FROM jobs LIMIT 1");
        assert_eq!(verdict["record"]["tenant"], tenant.as_str());
        let stored = platform.sql(&format!(
            "SELECT record_id || ' ' || watermark FROM provenance_records WHERE job_id = '{id}'"
        ));
        let (record_id, watermark) = stored.split_once(' ').unwrap();
        assert_eq!(verdict["record"]["record_id"].to_string(), record_id);
        assert_eq!(verdict["watermark"]["payload"], watermark);
        let independent = support::c2pa_python(&book, &keys.join("root.pem"), None);
        assert_eq!(independent["state"], "Trusted", "{independent:#}");
        assert!(independent["failures"].as_array().unwrap().is_empty());

        // Every chapter file is signed for the same record.
        let chapters: Vec<String> = job["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["kind"] == "chapter_audio")
            .map(|a| a["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(chapters.len(), 2, "{job}");
        for name in &chapters {
            let (status, bytes) = api
                .download(&format!("/v1/jobs/{id}/artifacts/{name}"))
                .await;
            assert_eq!(status, 200);
            let path = dir.path().join("chapter.mp3");
            std::fs::write(&path, bytes).unwrap();
            let independent = support::c2pa_python(&path, &keys.join("root.pem"), None);
            assert_eq!(independent["state"], "Trusted", "{name}: {independent:#}");
            assert_eq!(independent["voxproof"]["job_id"], id.as_str());
        }

        // The manifest stripped by a remux: the watermark leads back to the job's record.
        let stripped = dir.path().join("stripped.mp3");
        support::ffmpeg(&book, &["-map_metadata", "-1", "-c", "copy"], &stripped);
        let (status, verdict) = verify(
            &api,
            "stripped.mp3",
            std::fs::read(&stripped).unwrap(),
            None,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(verdict["verdict"], "stripped", "{verdict:#}");
        assert_eq!(verdict["c2pa"]["state"], "absent");
        assert_eq!(verdict["record"]["job_id"], id.as_str());

        // Re-encoded as Opus at 24 kbit/s, where blind decoding often cannot read the mark:
        // the verifier also judges the payloads of the deployment's records directly.
        let opus = dir.path().join("reencoded.ogg");
        support::ffmpeg(&stripped, &["-c:a", "libopus", "-b:a", "24k"], &opus);
        let (status, verdict) =
            verify(&api, "reencoded.ogg", std::fs::read(&opus).unwrap(), None).await;
        assert_eq!(status, 200);
        assert_eq!(verdict["verdict"], "stripped", "{verdict:#}");
        assert_eq!(verdict["record"]["job_id"], id.as_str());

        // Bad requests: not audio, no file part.
        let (status, answer) = verify(&api, "notes.wav", b"plain text".to_vec(), None).await;
        assert_eq!(status, 422, "{answer}");
        assert_eq!(answer["error"]["code"], "unsupported_media");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("the uploaded file is not audio"),
            "{message}"
        );
        let (status, answer) = verify(&api, "notes.txt", b"plain text".to_vec(), None).await;
        assert_eq!(status, 422, "{answer}");
        let empty = api
            .http
            .post(format!("{}/v1/verify", api.base))
            .multipart(::reqwest::multipart::Form::new().text("other", "x"))
            .send()
            .await
            .unwrap();
        assert_eq!(empty.status(), 400);

        // Opus: the manifest is a sidecar artifact, and the verifier accepts it beside the audio.
        let id = api
            .submit(&json!({
                "voice": support::VOICE, "text": "A short note for the record.",
                "output_format": "opus"
            }))
            .await;
        let job = api.finished(&id, Duration::from_secs(120)).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        let manifest = job["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["kind"] == "manifest")
            .unwrap_or_else(|| panic!("no manifest artifact: {job}"));
        assert_eq!(manifest["name"], "audio.opus.c2pa");
        let (_, opus) = api.download(&format!("/v1/jobs/{id}/result")).await;
        let (_, sidecar) = api
            .download(&format!("/v1/jobs/{id}/artifacts/audio.opus.c2pa"))
            .await;
        let (status, verdict) = verify(&api, "note.opus", opus, Some(sidecar)).await;
        assert_eq!(status, 200);
        assert_eq!(verdict["verdict"], "authentic", "{verdict:#}");
        assert_eq!(verdict["record"]["job_id"], id.as_str());

        // Seven verifications a minute from one address were allowed; the eighth is refused.
        // (A small body: the server answers before reading it.)
        let (status, answer) = verify(&api, "tiny.wav", b"RIFF".to_vec(), None).await;
        assert_eq!(status, 429, "{answer}");
        assert_eq!(answer["error"]["code"], "rate_limited");
    });
}
