//! End to end through the HTTP API: the real binary (`voxproof dev`), real Postgres (a fresh
//! database per test), real Redis (its own queue namespace) and local storage.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_voxproof");

struct Platform {
    env: Vec<(String, String)>,
    base: String,
    child: Child,
    _storage: tempfile::TempDir,
}

impl Drop for Platform {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Each test's database goes with it.
        if let Some(name) = self.env[0].1.rsplit('/').next() {
            let _ = Command::new("psql")
                .args(["-h", "127.0.0.1", "-U", "postgres", "-q", "-c"])
                .arg(format!("DROP DATABASE IF EXISTS {name}"))
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Platform {
    fn start() -> Platform {
        let name = format!("vxtest_{}", uuid::Uuid::now_v7().simple());
        let status = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-q", "-c"])
            .arg(format!("CREATE DATABASE {name}"))
            .status()
            .expect("psql");
        assert!(status.success(), "cannot create the test database");
        let storage = tempfile::tempdir().unwrap();
        let port = free_port();
        let env = vec![
            (
                "VOXPROOF_DATABASE_URL".to_string(),
                format!("postgres://postgres@127.0.0.1/{name}"),
            ),
            (
                "VOXPROOF_STORAGE".into(),
                format!("file://{}", storage.path().display()),
            ),
            ("VOXPROOF_LISTEN".into(), format!("127.0.0.1:{port}")),
            ("VOXPROOF_QUEUE_NAMESPACE".into(), name.clone()),
            ("VOXPROOF_SWEEP_SECONDS".into(), "1".into()),
        ];
        let child = Command::new(BIN)
            .args(["dev", "--concurrency", "2"])
            .envs(env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let platform = Platform {
            env,
            base: format!("http://127.0.0.1:{port}"),
            child,
            _storage: storage,
        };
        let started = Instant::now();
        while reqwest::blocking_get(&format!("{}/readyz", platform.base)).is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the API never became ready"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        platform
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .args(args)
            .envs(self.env.iter().cloned())
            .output()
            .unwrap()
    }

    fn key(&self, tenant: &str) -> String {
        let out = self.cli(&[
            "keys", "create", "--tenant", tenant, "--role", "admin", "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["tenant"], tenant);
        assert_eq!(v["role"], "admin");
        v["key"].as_str().unwrap().to_string()
    }
}

/// A tiny blocking wrapper so the test reads top to bottom.
mod reqwest {
    pub fn blocking_get(url: &str) -> Option<u16> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            ::reqwest::get(url)
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|r| r.status().as_u16())
        })
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_markdown_book_renders_and_everything_around_it_holds() {
    let platform = Platform::start();
    let key = platform.key("acme");
    let other = platform.key("globex");
    let http = ::reqwest::Client::new();
    let base = platform.base.clone();
    runtime().block_on(async {
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
        let probe = Command::new("ffprobe")
            .args(["-v", "error", "-show_chapters", "-of", "json"])
            .arg(&path)
            .output()
            .unwrap();
        let probe: Value = serde_json::from_slice(&probe.stdout).unwrap();
        let titles: Vec<&str> = probe["chapters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["tags"]["title"].as_str().unwrap())
            .collect();
        assert_eq!(titles, ["One", "Two", "Three"]);
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
    let db = &platform.env[0].1;
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
