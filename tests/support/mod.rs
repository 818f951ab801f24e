//! What the platform's end-to-end tests share: a running platform (the real `voxproof` binary
//! against real Postgres with a fresh database, real Redis under its own namespace, and local
//! or S3 storage), a small HTTP client for its API, and readers for the files it makes.
#![allow(dead_code)] // Each test binary uses its own part of this module.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_voxproof");
pub const VOICE: &str = "en_US-joe-medium";

/// Where a platform keeps its files.
pub enum Storage {
    /// A temporary directory.
    Local,
    /// The S3-compatible server of `scripts/s3-server`, under a prefix of its own.
    S3,
}

/// How a platform runs.
pub struct Options {
    pub storage: Storage,
    /// `None`: the machine's Redis. Some tests bring their own server.
    pub redis_url: Option<String>,
    /// 0: one `voxproof dev` process (API and a worker with 2 slots). N: a `voxproof serve`
    /// process and N `voxproof worker --concurrency 1` processes, each of which can be killed.
    pub workers: usize,
    /// Extra environment for every process.
    pub env: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            storage: Storage::Local,
            redis_url: None,
            workers: 0,
            env: Vec::new(),
        }
    }
}

pub struct Platform {
    pub env: Vec<(String, String)>,
    pub base: String,
    pub database: String,
    server: Child,
    pub workers: Vec<Option<Child>>,
    _storage: Option<tempfile::TempDir>,
}

impl Drop for Platform {
    fn drop(&mut self) {
        for child in self.workers.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
        // Each test's database goes with it.
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-q", "-c"])
            .arg(format!("DROP DATABASE IF EXISTS {}", self.name()))
            .stderr(Stdio::null())
            .status();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts (once per machine, idempotently) the S3-compatible server and returns its settings.
pub fn s3_server_env() -> Vec<(String, String)> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/s3-server");
    let start = Command::new(script).arg("start").output().unwrap();
    assert!(
        start.status.success(),
        "scripts/s3-server start failed: {}",
        String::from_utf8_lossy(&start.stderr)
    );
    let env = Command::new(script).arg("env").output().unwrap();
    assert!(env.status.success());
    String::from_utf8(env.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| line.strip_prefix("export ")?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Platform {
    pub fn start() -> Platform {
        Platform::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> Platform {
        let name = format!("vxtest_{}", uuid::Uuid::now_v7().simple());
        let status = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-q", "-c"])
            .arg(format!("CREATE DATABASE {name}"))
            .status()
            .expect("psql");
        assert!(status.success(), "cannot create the test database");
        let port = free_port();
        let database = format!("postgres://postgres@127.0.0.1/{name}");
        let mut env = vec![
            ("VOXPROOF_DATABASE_URL".to_string(), database.clone()),
            ("VOXPROOF_LISTEN".into(), format!("127.0.0.1:{port}")),
            ("VOXPROOF_QUEUE_NAMESPACE".into(), name.clone()),
            ("VOXPROOF_SWEEP_SECONDS".into(), "1".into()),
        ];
        let storage = match options.storage {
            Storage::Local => {
                let dir = tempfile::tempdir().unwrap();
                env.push((
                    "VOXPROOF_STORAGE".into(),
                    format!("file://{}", dir.path().display()),
                ));
                Some(dir)
            }
            Storage::S3 => {
                let s3 = s3_server_env();
                let bucket = s3
                    .iter()
                    .find(|(k, _)| k == "VOXPROOF_S3_TEST_BUCKET")
                    .map(|(_, v)| v.clone())
                    .expect("bucket");
                env.extend(s3);
                env.push(("VOXPROOF_STORAGE".into(), format!("s3://{bucket}/{name}")));
                None
            }
        };
        if let Some(url) = options.redis_url {
            env.push(("VOXPROOF_REDIS_URL".into(), url));
        }
        env.extend(options.env);

        let (server, workers) = if options.workers == 0 {
            (spawn(&env, &["dev", "--concurrency", "2"]), Vec::new())
        } else {
            let migrate = Command::new(BIN)
                .arg("migrate")
                .envs(env.iter().cloned())
                .output()
                .unwrap();
            assert!(
                migrate.status.success(),
                "{}",
                String::from_utf8_lossy(&migrate.stderr)
            );
            let workers = (0..options.workers)
                .map(|_| Some(spawn(&env, &["worker", "--concurrency", "1"])))
                .collect();
            (spawn(&env, &["serve"]), workers)
        };
        let platform = Platform {
            env,
            base: format!("http://127.0.0.1:{port}"),
            database,
            server,
            workers,
            _storage: storage,
        };
        let started = Instant::now();
        while !ready(&format!("{}/readyz", platform.base)) {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the API never became ready\n{}",
                process_logs(platform.name())
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        platform
    }

    /// The value this platform's processes get for `name`.
    pub fn env_value(&self, name: &str) -> String {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name} is not set"))
    }

    fn name(&self) -> &str {
        self.database.rsplit('/').next().unwrap()
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .args(args)
            .envs(self.env.iter().cloned())
            .output()
            .unwrap()
    }

    /// A new admin key for `tenant` (created if needed).
    pub fn key(&self, tenant: &str) -> String {
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

    /// The API as `tenant`.
    pub fn client(&self, tenant: &str) -> Api {
        Api {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: self.base.clone(),
            key: self.key(tenant),
            platform: self.name().to_string(),
        }
    }

    /// SIGKILL: no chance to hand anything back.
    pub fn kill_worker(&mut self, index: usize) {
        let mut child = self.workers[index].take().expect("worker already gone");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn worker_pid(&self, index: usize) -> u32 {
        self.workers[index].as_ref().expect("worker gone").id()
    }

    /// One query through psql, rows joined by newlines, columns by `|`.
    pub fn sql(&self, query: &str) -> String {
        let out = Command::new("psql")
            .args([self.database.as_str(), "-At", "-c", query])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{query}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

/// Starts a platform process; its log goes to `target/tmp/<database>-<command>-<n>.log`, so a
/// failed test can be read after the fact.
fn spawn(env: &[(String, String)], args: &[&str]) -> Child {
    let database = &env
        .iter()
        .find(|(k, _)| k == "VOXPROOF_DATABASE_URL")
        .unwrap()
        .1;
    let name = database.rsplit('/').next().unwrap();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(dir).unwrap();
    let log = (0..)
        .map(|n| dir.join(format!("{name}-{}-{n}.log", args[0])))
        .find(|p| !p.exists())
        .unwrap();
    Command::new(BIN)
        .args(args)
        .envs(env.iter().cloned())
        .env("VOXPROOF_LOG", "info,voxproof_jobs=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap()
}

/// The last lines of each log of a platform's processes, for a failure message: CI keeps
/// only what a test prints.
pub fn process_logs(platform: &str) -> String {
    const LINES: usize = 60;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{platform}-")))
        })
        .collect();
    logs.sort();
    let mut text = String::new();
    for log in logs {
        let content = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = content.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LINES)..];
        text.push_str(&format!(
            "--- last {} lines of {}\n{}\n",
            tail.len(),
            log.display(),
            tail.join("\n")
        ));
    }
    text
}

fn ready(url: &str) -> bool {
    runtime().block_on(async {
        reqwest::get(url)
            .await
            .is_ok_and(|r| r.status().is_success())
    })
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The HTTP API as one tenant. Redirects are not followed, so a 302 can be checked.
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub key: String,
    /// The platform's database name, which names its process logs.
    platform: String,
}

impl Api {
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    /// Submits a job and returns its id; the API must accept it.
    pub async fn submit(&self, body: &Value) -> String {
        let response = self.post("/v1/jobs").json(body).send().await.unwrap();
        let status = response.status();
        let answer: Value = response.json().await.unwrap();
        assert_eq!(status, 202, "{answer}");
        answer["id"].as_str().unwrap().to_string()
    }

    pub async fn job(&self, id: &str) -> Value {
        let response = self.get(&format!("/v1/jobs/{id}")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Polls the job until `done` holds for it, failing after `limit`.
    pub async fn wait_until(
        &self,
        id: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let started = Instant::now();
        loop {
            let job = self.job(id).await;
            if done(&job) {
                return job;
            }
            assert!(
                started.elapsed() < limit,
                "waited {limit:?}; the job is at {job}\n{}",
                process_logs(&self.platform)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits for a final status and returns the job.
    pub async fn finished(&self, id: &str, limit: Duration) -> Value {
        self.wait_until(id, limit, |job| {
            matches!(
                job["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            )
        })
        .await
    }

    /// Downloads `path`, following a redirect to storage by hand (presigned URLs carry no key).
    pub async fn download(&self, path: &str) -> (u16, Vec<u8>) {
        let response = self.get(path).send().await.unwrap();
        let response = if response.status() == 302 {
            let location = response.headers()["location"].to_str().unwrap().to_string();
            reqwest::get(location).await.unwrap()
        } else {
            response
        };
        let status = response.status().as_u16();
        (status, response.bytes().await.unwrap().to_vec())
    }
}

/// `ffmpeg -i input OPTIONS output`, which must succeed: a remux or a re-encode.
pub fn ffmpeg(input: &Path, options: &[&str], output: &Path) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(input)
        .args(options)
        .arg(output)
        .output()
        .expect("ffmpeg is installed by scripts/setup");
    assert!(
        out.status.success(),
        "ffmpeg {options:?} {}: {}",
        input.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What ffprobe reads of a media file: format, streams and chapters, as its JSON.
pub fn probe(path: &Path) -> Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_chapters",
            "-show_streams",
        ])
        .arg(path)
        .output()
        .expect("ffprobe is installed by scripts/setup");
    assert!(
        out.status.success(),
        "ffprobe cannot read {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Chapter titles as ffprobe reads them.
pub fn chapter_titles(path: &Path) -> Vec<String> {
    probe(path)["chapters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["tags"]["title"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Duration in seconds as ffprobe reads it.
pub fn duration_seconds(path: &Path) -> f64 {
    probe(path)["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("ffprobe gives {} no duration", path.display()))
}

/// A minimal valid EPUB 3 with a nav document: one XHTML file per chapter, in spine order.
pub fn epub(chapters: &[(&str, &str)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let deflated = zip::write::SimpleFileOptions::default();
    zip.start_file("mimetype", stored).unwrap();
    zip.write_all(b"application/epub+zip").unwrap();
    zip.start_file("META-INF/container.xml", deflated).unwrap();
    zip.write_all(
        br#"<?xml version="1.0"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
  <rootfiles><rootfile full-path="OEBPS/book.opf" media-type="application/oebps-package+xml"/></rootfiles>
</container>"#,
    )
    .unwrap();
    let mut manifest = String::new();
    let mut spine = String::new();
    let mut nav = String::new();
    for (i, (title, body)) in chapters.iter().enumerate() {
        manifest.push_str(&format!(
            r#"<item id="c{i}" href="c{i}.xhtml" media-type="application/xhtml+xml"/>"#
        ));
        spine.push_str(&format!(r#"<itemref idref="c{i}"/>"#));
        nav.push_str(&format!(r#"<li><a href="c{i}.xhtml">{title}</a></li>"#));
        zip.start_file(format!("OEBPS/c{i}.xhtml"), deflated)
            .unwrap();
        zip.write_all(
            format!(
                r#"<?xml version="1.0" encoding="utf-8"?>
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>{title}</title></head>
<body><h1>{title}</h1><p>{body}</p></body></html>"#
            )
            .as_bytes(),
        )
        .unwrap();
    }
    zip.start_file("OEBPS/nav.xhtml", deflated).unwrap();
    zip.write_all(
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?>
<html xmlns="http://www.w3.org/1999/xhtml" xmlns:epub="http://www.idpf.org/2007/ops">
<head><title>Contents</title></head>
<body><nav epub:type="toc"><ol>{nav}</ol></nav></body></html>"#
        )
        .as_bytes(),
    )
    .unwrap();
    zip.start_file("OEBPS/book.opf", deflated).unwrap();
    zip.write_all(
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?>
<package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">
  <metadata xmlns:dc="http://purl.org/dc/elements/1.1/">
    <dc:identifier id="id">urn:uuid:0f1e2d3c-0000-4000-8000-000000000001</dc:identifier>
    <dc:title>Test Book</dc:title><dc:language>en</dc:language>
  </metadata>
  <manifest><item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>{manifest}</manifest>
  <spine>{spine}</spine>
</package>"#
        )
        .as_bytes(),
    )
    .unwrap();
    zip.finish().unwrap().into_inner()
}

/// Sentences of the form "Sentence number N is here." for N in `range`: easy to count in
/// subtitles, each one distinct.
pub fn numbered_sentences(range: std::ops::Range<usize>) -> String {
    range
        .map(|n| format!("Sentence number {n} is spoken here."))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The Python of the cache's checkers venv, where scripts/setup installs the tests' Python
/// helpers (c2pa-python, onnx).
pub fn checkers_python() -> std::path::PathBuf {
    let cache = std::env::var_os("VOXPROOF_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/voxproof")
        });
    cache.join("checkers/bin/python")
}

/// c2pa-python's view of a file (installed by scripts/setup in the cache's checkers venv).
pub fn c2pa_python(file: &Path, anchor: &Path, sidecar: Option<&Path>) -> Value {
    let python = checkers_python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/c2pa_check.py");
    let mut cmd = Command::new(&python);
    cmd.arg(script).arg(file).arg(anchor);
    if let Some(sidecar) = sidecar {
        cmd.arg(sidecar);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{} (run scripts/setup): {e}", python.display()));
    assert!(
        out.status.success(),
        "c2pa-python failed on {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
