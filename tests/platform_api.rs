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
    let key = platform.key("acme");
    let other = platform.key("globex");
    let http = ::reqwest::Client::new();
    let base = platform.base.clone();
    support::runtime().block_on(async {
        let auth = |k: &str| format!("Bearer {k}");
        let book = "# One\n\nIt was a bright cold day. The clocks were striking.\n\n\
                    # Two\n\nSomewhere a dog barked. Then all was quiet.\n\n\
                    # Three\n\nThe end came softly, as ends do.";
        let request = json!({
            "voice": "en_US-joe-medium", "text": book, "input_format": "markdown",
            "output_format": "mp3", "options": { "subtitles": true }, "priority": "interactive"
        });
        let post = |body: Value, k: String, idem: Option<&str>| {
            let mut r = http
                .post(format!("{base}/v1/jobs"))
                .header("authorization", auth(&k))
                .json(&body);
            if let Some(i) = idem {
                r = r.header("idempotency-key", i);
            }
            r.send()
        };
        let created = post(request.clone(), key.clone(), Some("book-1"))
            .await
            .unwrap();
        assert_eq!(created.status(), 202);
        let created: Value = created.json().await.unwrap();
        let id = created["id"].as_str().unwrap().to_string();
        assert_eq!(created["status"], "queued");

        // Same key, same request: the same job. Same key, other request: 409.
        let again: Value = post(request.clone(), key.clone(), Some("book-1"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(again["id"], id.as_str());
        let mut changed = request.clone();
        changed["output_format"] = json!("wav");
        let conflict = post(changed, key.clone(), Some("book-1")).await.unwrap();
        assert_eq!(conflict.status(), 409);

        // Errors: no key, another tenant, bad voice, bad format, bad JSON.
        let no_key = http
            .get(format!("{base}/v1/jobs/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(no_key.status(), 401);
        let body: Value = no_key.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
        let foreign = http
            .get(format!("{base}/v1/jobs/{id}"))
            .header("authorization", auth(&other))
            .send()
            .await
            .unwrap();
        assert_eq!(foreign.status(), 404);
        let mut bad_voice = request.clone();
        bad_voice["voice"] = json!("nobody");
        let r = post(bad_voice, key.clone(), None).await.unwrap();
        assert_eq!(r.status(), 422);
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["code"],
            "unknown_voice"
        );
        let mut bad_format = request.clone();
        bad_format["output_format"] = json!("aiff");
        let r = post(bad_format, key.clone(), None).await.unwrap();
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["code"],
            "invalid_output_format"
        );

        // Over the body limit (200 kB here): 413, whether JSON or an uploaded file.
        let mut huge = request.clone();
        huge["text"] = json!("word ".repeat(60_000));
        let r = post(huge, key.clone(), None).await.unwrap();
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
        let r = http
            .post(format!("{base}/v1/jobs"))
            .header("authorization", auth(&key))
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413);
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["code"],
            "payload_too_large"
        );

        // The voices the deployment registered, with their model digests.
        let voices: Value = http
            .get(format!("{base}/v1/voices"))
            .header("authorization", auth(&key))
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

        // Wait for it.
        let started = Instant::now();
        let job = loop {
            let job: Value = http
                .get(format!("{base}/v1/jobs/{id}"))
                .header("authorization", auth(&key))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if job["status"] == "succeeded" || job["status"] == "failed" {
                break job;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "job stuck: {job}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        assert_eq!(job["status"], "succeeded", "{job}");
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
        let audio = http
            .get(format!("{base}/v1/jobs/{id}/result"))
            .header("authorization", auth(&key))
            .send()
            .await
            .unwrap();
        assert_eq!(audio.status(), 200);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("book.mp3");
        std::fs::write(&path, audio.bytes().await.unwrap()).unwrap();
        assert_eq!(support::chapter_titles(&path), ["One", "Two", "Three"]);
        let vtt = http
            .get(format!("{base}/v1/jobs/{id}/artifacts/subtitles.vtt"))
            .header("authorization", auth(&key))
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
        let cancel = http
            .post(format!("{base}/v1/jobs/{id}/cancel"))
            .header("authorization", auth(&key))
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
