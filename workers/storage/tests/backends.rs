//! Both backends against the same expectations: the local directory, and S3 on the real
//! S3-compatible server that `scripts/s3-server` runs on loopback.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use voxproof_storage::{open, Storage, StorageError};

/// A storage under a prefix of its own on the test S3 server.
async fn s3_storage() -> Arc<dyn Storage> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/s3-server");
    let start = Command::new(script).arg("start").output().unwrap();
    assert!(
        start.status.success(),
        "scripts/s3-server start: {}",
        String::from_utf8_lossy(&start.stderr)
    );
    let env = Command::new(script).arg("env").output().unwrap();
    let mut endpoint = String::new();
    let mut bucket = String::new();
    for line in String::from_utf8(env.stdout).unwrap().lines() {
        let (name, value) = line
            .strip_prefix("export ")
            .and_then(|l| l.split_once('='))
            .unwrap();
        match name {
            "VOXPROOF_S3_ENDPOINT" => endpoint = value.to_string(),
            "VOXPROOF_S3_TEST_BUCKET" => bucket = value.to_string(),
            // The backend reads the standard AWS variables, as in production.
            "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY" => std::env::set_var(name, value),
            _ => {}
        }
    }
    let prefix = format!("backend-test-{}", std::process::id());
    open(
        &format!("s3://{bucket}/{prefix}"),
        Some(&endpoint),
        "garage",
    )
    .await
    .unwrap()
}

/// Deterministic bytes that are not all alike, so misordered parts would show.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

async fn behaves(storage: Arc<dyn Storage>, presigns: bool) {
    storage.check().await.unwrap();

    // Small objects round-trip, and overwrite replaces.
    storage
        .put_bytes(
            "jobs/a/source.txt",
            Bytes::from_static(b"first"),
            "text/plain",
        )
        .await
        .unwrap();
    storage
        .put_bytes(
            "jobs/a/source.txt",
            Bytes::from_static(b"second"),
            "text/plain",
        )
        .await
        .unwrap();
    assert_eq!(
        storage.get_bytes("jobs/a/source.txt").await.unwrap(),
        &b"second"[..]
    );
    assert!(storage.exists("jobs/a/source.txt").await.unwrap());

    // A small file goes up in one request.
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("subtitles.vtt");
    std::fs::write(&small, b"WEBVTT\n\n00:00.000 --> 00:01.000\nHello.\n").unwrap();
    let size = storage
        .put_file("jobs/a/subtitles.vtt", &small, "text/vtt")
        .await
        .unwrap();
    assert_eq!(size, 39);
    assert_eq!(
        storage.get_bytes("jobs/a/subtitles.vtt").await.unwrap(),
        std::fs::read(&small).unwrap()
    );
    storage.delete("jobs/a/subtitles.vtt").await.unwrap();

    // A file large enough for a multipart upload comes back whole and in order, streamed.
    let big = pattern(21 * 1024 * 1024 + 12_345);
    let path = dir.path().join("book.mp3");
    std::fs::write(&path, &big).unwrap();
    let size = storage
        .put_file("jobs/a/book.mp3", &path, "audio/mpeg")
        .await
        .unwrap();
    assert_eq!(size, big.len() as u64);
    let (told, mut stream) = storage.get_stream("jobs/a/book.mp3").await.unwrap();
    assert_eq!(told, big.len() as u64);
    let mut back = Vec::with_capacity(big.len());
    while let Some(chunk) = stream.next().await {
        back.extend_from_slice(&chunk.unwrap());
    }
    assert!(
        back == big,
        "the streamed object differs from what was uploaded"
    );

    // Missing objects are NotFound everywhere, not a transport error.
    assert!(!storage.exists("jobs/none").await.unwrap());
    assert!(matches!(
        storage.get_bytes("jobs/none").await,
        Err(StorageError::NotFound(_))
    ));
    assert!(matches!(
        storage.get_stream("jobs/none").await.map(|_| ()),
        Err(StorageError::NotFound(_))
    ));
    // Keys that could escape are refused before any request.
    assert!(matches!(
        storage.put_bytes("../etc", Bytes::new(), "x").await,
        Err(StorageError::InvalidKey(_))
    ));

    // Presigned URLs work without credentials, carry the download name, and expire.
    let url = storage
        .presigned_get("jobs/a/book.mp3", Duration::from_secs(60), Some("book.mp3"))
        .await
        .unwrap();
    if presigns {
        let url = url.expect("S3 presigns");
        let response = reqwest::get(&url).await.unwrap();
        assert_eq!(response.status(), 200);
        let disposition = response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(disposition.contains("book.mp3"), "{disposition}");
        assert!(response.bytes().await.unwrap() == big);
        let short = storage
            .presigned_get("jobs/a/book.mp3", Duration::from_secs(1), None)
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2100)).await;
        // Refused (AWS answers 403 to an expired URL, Garage 400): never the object.
        let refused = |status: reqwest::StatusCode| status == 400 || status == 403;
        let expired = reqwest::get(&short).await.unwrap().status();
        assert!(refused(expired), "expired URL answered {expired}");
        // A tampered signature (same length, one digit changed) is refused.
        let at = url.find("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
        let digit = if &url[at..=at] == "0" { "1" } else { "0" };
        let forged = format!("{}{digit}{}", &url[..at], &url[at + 1..]);
        let status = reqwest::get(&forged).await.unwrap().status();
        assert!(refused(status), "forged URL answered {status}");
    } else {
        assert!(url.is_none());
    }

    // Delete removes, and deleting again is not an error.
    storage.delete("jobs/a/book.mp3").await.unwrap();
    storage.delete("jobs/a/book.mp3").await.unwrap();
    assert!(!storage.exists("jobs/a/book.mp3").await.unwrap());
    storage.delete("jobs/a/source.txt").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_directory_backend() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&format!("file://{}", dir.path().display()), None, "")
        .await
        .unwrap();
    behaves(storage, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_backend_on_a_real_server() {
    behaves(s3_storage().await, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_with_wrong_credentials_fails_clearly() {
    let good = s3_storage().await;
    good.check().await.unwrap();
    // Same server and bucket, a secret that is not the server's.
    let env = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/s3-server"
    ))
    .arg("env")
    .output()
    .unwrap();
    let text = String::from_utf8(env.stdout).unwrap();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .unwrap()
            .to_string()
    };
    let settings = voxproof_storage::S3Settings {
        bucket: value("VOXPROOF_S3_TEST_BUCKET"),
        prefix: "wrong-credentials".into(),
        endpoint: Some(value("VOXPROOF_S3_ENDPOINT")),
        region: "garage".into(),
        access_key_id: Some(value("AWS_ACCESS_KEY_ID")),
        secret_access_key: Some("0".repeat(64)),
        session_token: None,
    };
    let bad = voxproof_storage::S3Storage::new(settings).unwrap();
    let error = bad.check().await.unwrap_err().to_string();
    assert!(error.contains("S3"), "{error}");
    let error = bad
        .put_bytes("x", Bytes::from_static(b"x"), "text/plain")
        .await
        .unwrap_err();
    assert!(!matches!(error, StorageError::NotFound(_)), "{error}");
}
