//! Where the platform keeps bytes: job sources, rendered segments (content-addressed) and
//! finished files. Two backends behind one trait: a local directory (the default, for one
//! machine) and S3 or any S3-compatible server.
//!
//! Writes are atomic on both: a reader sees the whole object or none of it.

mod local;
mod s3;

use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;

pub use local::LocalStorage;
pub use s3::{S3Settings, S3Storage};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object {0} not found")]
    NotFound(String),
    #[error("invalid object key {0:?}")]
    InvalidKey(String),
    #[error("storage configuration: {0}")]
    Config(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("S3 {operation} {key}: {message}")]
    S3 {
        operation: &'static str,
        key: String,
        message: String,
    },
}

pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, StorageError>> + Send>>;

#[async_trait::async_trait]
pub trait Storage: Send + Sync + std::fmt::Debug {
    async fn put_bytes(
        &self,
        key: &str,
        bytes: Bytes,
        content_type: &str,
    ) -> Result<(), StorageError>;
    /// Uploads a local file (multipart on S3 for large files); returns its size.
    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        content_type: &str,
    ) -> Result<u64, StorageError>;
    async fn get_bytes(&self, key: &str) -> Result<Bytes, StorageError>;
    /// Streams an object and tells its size.
    async fn get_stream(&self, key: &str) -> Result<(u64, ByteStream), StorageError>;
    async fn exists(&self, key: &str) -> Result<bool, StorageError>;
    async fn delete(&self, key: &str) -> Result<(), StorageError>;
    /// A short-lived URL a client can fetch the object from directly, where the backend
    /// has such a thing (S3); `None` means the caller should stream the bytes itself.
    async fn presigned_get(
        &self,
        key: &str,
        ttl: Duration,
        download_name: Option<&str>,
    ) -> Result<Option<String>, StorageError>;
    /// Checks the backend answers (readiness).
    async fn check(&self) -> Result<(), StorageError>;
}

/// Keys are relative paths of plain segments: no `..`, no leading `/`, no empty parts.
pub fn check_key(key: &str) -> Result<(), StorageError> {
    let ok = !key.is_empty()
        && key.len() <= 900
        && !key.starts_with('/')
        && key.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.=".contains(&b))
        });
    if ok {
        Ok(())
    } else {
        Err(StorageError::InvalidKey(key.to_string()))
    }
}

/// Opens the backend a `VOXPROOF_STORAGE` value names: `file:///dir` or
/// `s3://bucket[/prefix]`.
pub async fn open(
    spec: &str,
    s3_endpoint: Option<&str>,
    s3_region: &str,
) -> Result<std::sync::Arc<dyn Storage>, StorageError> {
    if let Some(path) = spec.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(StorageError::Config(format!(
                "{spec:?}: a file storage needs an absolute path (file:///dir)"
            )));
        }
        return Ok(std::sync::Arc::new(LocalStorage::new(path)?));
    }
    if let Some(rest) = spec.strip_prefix("s3://") {
        let (bucket, prefix) = match rest.split_once('/') {
            Some((b, p)) => (b, p.trim_matches('/')),
            None => (rest, ""),
        };
        if bucket.is_empty() {
            return Err(StorageError::Config(format!("{spec:?}: no bucket named")));
        }
        let settings = S3Settings {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            endpoint: s3_endpoint.map(str::to_string),
            region: s3_region.to_string(),
            access_key_id: std::env::var("AWS_ACCESS_KEY_ID").ok(),
            secret_access_key: std::env::var("AWS_SECRET_ACCESS_KEY").ok(),
            session_token: std::env::var("AWS_SESSION_TOKEN").ok(),
        };
        return Ok(std::sync::Arc::new(S3Storage::new(settings)?));
    }
    Err(StorageError::Config(format!(
        "{spec:?}: expected file:///dir or s3://bucket"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape() {
        assert!(check_key("jobs/0190/audio.mp3").is_ok());
        assert!(check_key("segments/en_US-joe-medium/ab12").is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "a//b",
            "a/./b",
            "a b",
            "a\\b",
            "..",
        ] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
    }
}
