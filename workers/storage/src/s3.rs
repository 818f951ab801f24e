//! S3 and S3-compatible servers through `aws-sdk-s3`: explicit endpoint and region,
//! path-style addressing (what self-hosted servers expect), multipart upload for large
//! files, presigned downloads.

use std::path::Path;
use std::time::Duration;

use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream as AwsByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::Bytes;
use tokio::io::AsyncReadExt;

use crate::{check_key, ByteStream, Storage, StorageError};

/// Parts of this size; S3 needs at least 5 MiB for all but the last.
const PART_BYTES: usize = 8 * 1024 * 1024;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// From sending a request to the first byte of its answer.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(60);
/// One attempt at one operation, body included (an 8 MiB part at ~30 KB/s).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Clone)]
pub struct S3Settings {
    pub bucket: String,
    /// Prepended to every key (no slashes at either end).
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
}

// By hand, so the secret never reaches a log.
impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct S3Storage {
    client: Client,
    settings: S3Settings,
}

fn s3_error(operation: &'static str, key: &str) -> impl FnOnce(aws_sdk_s3::Error) -> StorageError {
    let key = key.to_string();
    move |e| StorageError::S3 {
        operation,
        key,
        message: describe(&e),
    }
}

/// Flattens an SDK error (whose `Display` alone is often just "service error").
fn describe<E: std::error::Error>(e: &E) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl S3Storage {
    pub fn new(settings: S3Settings) -> Result<Self, StorageError> {
        let (Some(id), Some(secret)) = (&settings.access_key_id, &settings.secret_access_key)
        else {
            return Err(StorageError::Config(
                "S3 storage needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into(),
            ));
        };
        let credentials = Credentials::new(
            id,
            secret,
            settings.session_token.clone(),
            None,
            "voxproof-config",
        );
        let mut builder = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(true)
            // Checksums only where the API requires them: by default the SDK streams file
            // bodies as aws-chunked with a checksum trailer, which S3-compatible servers
            // (Garage among them) reject as a bad payload signature.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            // The SDK waits forever for a response by default; a server that accepts a
            // request and never answers would hold a segment or an assembly until its lease
            // ran out. Each attempt is bounded instead, and the SDK's retries take over.
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .read_timeout(FIRST_BYTE_TIMEOUT)
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .build(),
            );
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Ok(Self {
            client: Client::from_conf(builder.build()),
            settings,
        })
    }

    fn full_key(&self, key: &str) -> Result<String, StorageError> {
        check_key(key)?;
        Ok(if self.settings.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.settings.prefix)
        })
    }

    async fn multipart(
        &self,
        key: &str,
        path: &Path,
        content_type: &str,
    ) -> Result<u64, StorageError> {
        let full = self.full_key(key)?;
        let bucket = &self.settings.bucket;
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(&full)
            .content_type(content_type)
            .send()
            .await
            .map_err(|e| s3_error("CreateMultipartUpload", key)(e.into()))?;
        let upload_id = upload.upload_id().unwrap_or_default().to_string();
        let result = async {
            let mut file =
                tokio::fs::File::open(path)
                    .await
                    .map_err(|source| StorageError::Io {
                        context: format!("reading {}", path.display()),
                        source,
                    })?;
            let mut parts = Vec::new();
            let mut total = 0u64;
            let mut buffer = vec![0u8; PART_BYTES];
            for number in 1.. {
                let mut filled = 0;
                while filled < PART_BYTES {
                    let n = file.read(&mut buffer[filled..]).await.map_err(|source| {
                        StorageError::Io {
                            context: format!("reading {}", path.display()),
                            source,
                        }
                    })?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                if filled == 0 && number > 1 {
                    break;
                }
                total += filled as u64;
                let part = self
                    .client
                    .upload_part()
                    .bucket(bucket)
                    .key(&full)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .body(AwsByteStream::from(buffer[..filled].to_vec()))
                    .send()
                    .await
                    .map_err(|e| s3_error("UploadPart", key)(e.into()))?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(part.e_tag().map(str::to_string))
                        .build(),
                );
                if filled < PART_BYTES {
                    break;
                }
            }
            self.client
                .complete_multipart_upload()
                .bucket(bucket)
                .key(&full)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| s3_error("CompleteMultipartUpload", key)(e.into()))?;
            Ok(total)
        }
        .await;
        if result.is_err() {
            // Leaves no invisible parts behind to be billed for.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(&full)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }
}

fn is_not_found<E, R>(e: &aws_sdk_s3::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
{
    match e {
        aws_sdk_s3::error::SdkError::ServiceError(service) => matches!(
            service.err().code(),
            Some("NoSuchKey") | Some("NotFound") | Some("404")
        ),
        _ => false,
    }
}

#[async_trait::async_trait]
impl Storage for S3Storage {
    async fn put_bytes(
        &self,
        key: &str,
        bytes: Bytes,
        content_type: &str,
    ) -> Result<(), StorageError> {
        let full = self.full_key(key)?;
        self.client
            .put_object()
            .bucket(&self.settings.bucket)
            .key(full)
            .content_type(content_type)
            .body(AwsByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| s3_error("PutObject", key)(e.into()))?;
        Ok(())
    }

    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        content_type: &str,
    ) -> Result<u64, StorageError> {
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|source| StorageError::Io {
                context: format!("reading {}", path.display()),
                source,
            })?
            .len();
        if size as usize > PART_BYTES {
            return self.multipart(key, path, content_type).await;
        }
        let body = AwsByteStream::from_path(path)
            .await
            .map_err(|e| StorageError::Config(describe(&e)))?;
        let full = self.full_key(key)?;
        self.client
            .put_object()
            .bucket(&self.settings.bucket)
            .key(full)
            .content_type(content_type)
            .body(body)
            .send()
            .await
            .map_err(|e| s3_error("PutObject", key)(e.into()))?;
        Ok(size)
    }

    async fn get_bytes(&self, key: &str) -> Result<Bytes, StorageError> {
        let (_, mut stream) = self.get_stream(key).await?;
        let mut out = Vec::new();
        use futures_util::StreamExt;
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out.into())
    }

    async fn get_stream(&self, key: &str) -> Result<(u64, ByteStream), StorageError> {
        let full = self.full_key(key)?;
        let object = match self
            .client
            .get_object()
            .bucket(&self.settings.bucket)
            .key(full)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) if is_not_found(&e) => return Err(StorageError::NotFound(key.to_string())),
            Err(e) => return Err(s3_error("GetObject", key)(e.into())),
        };
        let size = object.content_length().unwrap_or(0).max(0) as u64;
        let key = key.to_string();
        let stream = futures_util::stream::unfold(Some(object.body), move |body| {
            let key = key.clone();
            async move {
                let mut body = body?;
                match body.try_next().await {
                    Ok(Some(chunk)) => Some((Ok(chunk), Some(body))),
                    Ok(None) => None,
                    Err(e) => Some((
                        Err(StorageError::S3 {
                            operation: "GetObject",
                            key,
                            message: describe(&e),
                        }),
                        None,
                    )),
                }
            }
        });
        Ok((size, Box::pin(stream)))
    }

    async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        let full = self.full_key(key)?;
        match self
            .client
            .head_object()
            .bucket(&self.settings.bucket)
            .key(full)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(s3_error("HeadObject", key)(e.into())),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let full = self.full_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.settings.bucket)
            .key(full)
            .send()
            .await
            .map_err(|e| s3_error("DeleteObject", key)(e.into()))?;
        Ok(())
    }

    async fn presigned_get(
        &self,
        key: &str,
        ttl: Duration,
        download_name: Option<&str>,
    ) -> Result<Option<String>, StorageError> {
        let full = self.full_key(key)?;
        let config =
            PresigningConfig::expires_in(ttl).map_err(|e| StorageError::Config(describe(&e)))?;
        let mut request = self
            .client
            .get_object()
            .bucket(&self.settings.bucket)
            .key(full);
        if let Some(name) = download_name {
            request = request.response_content_disposition(format!(
                "attachment; filename=\"{}\"",
                name.replace(['"', '\\'], "_")
            ));
        }
        let presigned = request
            .presigned(config)
            .await
            .map_err(|e| s3_error("presign GetObject", key)(e.into()))?;
        Ok(Some(presigned.uri().to_string()))
    }

    async fn check(&self) -> Result<(), StorageError> {
        self.client
            .head_bucket()
            .bucket(&self.settings.bucket)
            .send()
            .await
            .map_err(|e| s3_error("HeadBucket", &self.settings.bucket)(e.into()))?;
        Ok(())
    }
}
