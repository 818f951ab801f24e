//! A directory on the local disk. Objects are written to a temporary file beside their
//! final name and renamed, so readers never see half an object.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::{check_key, ByteStream, Storage, StorageError};

#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StorageError {
    let context = context.into();
    move |source| StorageError::Io { context, source }
}

impl LocalStorage {
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(io(format!("creating {}", root.display())))?;
        Ok(Self { root })
    }

    fn path(&self, key: &str) -> Result<PathBuf, StorageError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    async fn temp_for(&self, target: &Path) -> Result<PathBuf, StorageError> {
        let dir = target.parent().unwrap_or(&self.root);
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(io(format!("creating {}", dir.display())))?;
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(|e| StorageError::Config(e.to_string()))?;
        Ok(dir.join(format!(".partial-{}", hex::encode(suffix))))
    }
}

#[async_trait::async_trait]
impl Storage for LocalStorage {
    async fn put_bytes(&self, key: &str, bytes: Bytes, _: &str) -> Result<(), StorageError> {
        let target = self.path(key)?;
        let temp = self.temp_for(&target).await?;
        let result = async {
            let mut file = tokio::fs::File::create(&temp).await?;
            file.write_all(&bytes).await?;
            file.sync_data().await?;
            tokio::fs::rename(&temp, &target).await
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        result.map_err(io(format!("writing {key}")))
    }

    async fn put_file(&self, key: &str, path: &Path, _: &str) -> Result<u64, StorageError> {
        let target = self.path(key)?;
        let temp = self.temp_for(&target).await?;
        let result = async {
            let bytes = tokio::fs::copy(path, &temp).await?;
            tokio::fs::File::open(&temp).await?.sync_data().await?;
            tokio::fs::rename(&temp, &target).await?;
            Ok(bytes)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        result.map_err(io(format!("storing {} as {key}", path.display())))
    }

    async fn get_bytes(&self, key: &str) -> Result<Bytes, StorageError> {
        let path = self.path(key)?;
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(bytes.into()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StorageError::NotFound(key.to_string()))
            }
            Err(e) => Err(io(format!("reading {key}"))(e)),
        }
    }

    async fn get_stream(&self, key: &str) -> Result<(u64, ByteStream), StorageError> {
        let path = self.path(key)?;
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StorageError::NotFound(key.to_string()))
            }
            Err(e) => return Err(io(format!("reading {key}"))(e)),
        };
        let size = file
            .metadata()
            .await
            .map_err(io(format!("reading {key}")))?
            .len();
        let context = format!("reading {key}");
        let stream =
            tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).map(move |chunk| {
                chunk.map_err(|source| StorageError::Io {
                    context: context.clone(),
                    source,
                })
            });
        Ok((size, Box::pin(stream)))
    }

    async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        let path = self.path(key)?;
        tokio::fs::try_exists(&path)
            .await
            .map_err(io(format!("checking {key}")))
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(format!("deleting {key}"))(e)),
        }
    }

    async fn presigned_get(
        &self,
        _: &str,
        _: Duration,
        _: Option<&str>,
    ) -> Result<Option<String>, StorageError> {
        Ok(None)
    }

    async fn check(&self) -> Result<(), StorageError> {
        tokio::fs::metadata(&self.root)
            .await
            .map(|_| ())
            .map_err(io(format!("storage directory {}", self.root.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_atomic_names() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path()).unwrap();
        storage
            .put_bytes(
                "a/b/c.bin",
                Bytes::from_static(b"hello"),
                "application/octet-stream",
            )
            .await
            .unwrap();
        assert_eq!(&storage.get_bytes("a/b/c.bin").await.unwrap()[..], b"hello");
        assert!(storage.exists("a/b/c.bin").await.unwrap());
        let (size, mut stream) = storage.get_stream("a/b/c.bin").await.unwrap();
        assert_eq!(size, 5);
        let mut got = Vec::new();
        while let Some(chunk) = stream.next().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(got, b"hello");
        // No temporary files are left beside the object.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("c.bin")]);
        storage.delete("a/b/c.bin").await.unwrap();
        assert!(matches!(
            storage.get_bytes("a/b/c.bin").await,
            Err(StorageError::NotFound(_))
        ));
        assert!(storage.get_bytes("../escape").await.is_err());
        assert!(storage
            .presigned_get("x", Duration::from_secs(1), None)
            .await
            .unwrap()
            .is_none());
    }
}
