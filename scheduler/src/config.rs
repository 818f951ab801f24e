//! Platform configuration: defaults, then an optional `voxproof.toml`, then the environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Everything `serve`, `worker`, `dev`, `migrate`, `keys` and `audit` read.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub database_url: String,
    pub redis_url: String,
    /// `file:///dir` or `s3://bucket[/prefix]`.
    pub storage: String,
    pub s3_endpoint: Option<String>,
    pub s3_region: String,
    pub listen: SocketAddr,
    /// Run the migrations when `serve` starts.
    pub migrate_on_start: bool,
    /// Prefix of every Redis key, so deployments can share a Redis.
    pub queue_namespace: String,
    pub limits: Limits,
    pub worker: WorkerSettings,
    /// How long a presigned result URL stays valid.
    pub presign_seconds: u64,
    pub provenance: ProvenanceConfig,
}

/// Watermark key, signing credentials and trust anchors. Unset, a machine uses development
/// material kept in `local_dir` (fine for one machine; every worker of a deployment must
/// share the key and credentials, so set them there).
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProvenanceConfig {
    /// Hex, at least 16 bytes. Secret.
    pub watermark_key: Option<String>,
    /// A directory made by `voxproof keys init-ca`.
    pub signing_keys: Option<PathBuf>,
    /// Extra PEM files of trusted roots for verification.
    pub trust_anchors: Vec<PathBuf>,
    /// Where development material lives (default `<cache>/provenance`).
    pub local_dir: Option<PathBuf>,
    /// Verifications (`POST /v1/verify`) one client address may start per minute.
    pub verify_per_minute: u32,
}

impl std::fmt::Debug for ProvenanceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvenanceConfig")
            .field(
                "watermark_key",
                &self.watermark_key.as_ref().map(|_| "[set]"),
            )
            .field("signing_keys", &self.signing_keys)
            .field("trust_anchors", &self.trust_anchors)
            .field("local_dir", &self.local_dir)
            .field("verify_per_minute", &self.verify_per_minute)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body (JSON or multipart) the API reads.
    pub max_body_bytes: usize,
    /// Largest document text, in characters after parsing.
    pub max_text_chars: usize,
    /// Jobs queued or running per tenant at once (the tenant row may lower or raise it).
    pub max_concurrent_jobs: i32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    /// Attempts per segment (and per assembly) before the job fails.
    pub max_attempts: i32,
    /// A running segment whose worker has not renewed its lease for this long is taken back.
    pub lease_seconds: i64,
    /// How often the sweeper looks for work Redis lost or a dead worker held.
    pub sweep_seconds: u64,
    /// How long finished tasks stay in Redis (for inspection) before they are pruned.
    pub queue_retention_seconds: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: "postgres://postgres@127.0.0.1:5432/voxproof".into(),
            redis_url: "redis://127.0.0.1:6379/".into(),
            storage: "file:///var/lib/voxproof/storage".into(),
            s3_endpoint: None,
            s3_region: "us-east-1".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            migrate_on_start: false,
            queue_namespace: "voxproof".into(),
            limits: Limits::default(),
            worker: WorkerSettings::default(),
            presign_seconds: 300,
            provenance: ProvenanceConfig {
                verify_per_minute: 30,
                ..ProvenanceConfig::default()
            },
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 32 * 1024 * 1024,
            max_text_chars: 5_000_000,
            max_concurrent_jobs: 8,
        }
    }
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            lease_seconds: 30,
            sweep_seconds: 5,
            queue_retention_seconds: 3600,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("environment variable {name}: {message}")]
    Env { name: &'static str, message: String },
}

impl Config {
    /// Defaults → `$VOXPROOF_CONFIG` (or `./voxproof.toml` when present) → environment.
    pub fn load() -> Result<Self, ConfigError> {
        let explicit = std::env::var_os("VOXPROOF_CONFIG").map(PathBuf::from);
        let mut config = match &explicit {
            Some(path) => Self::from_file(path)?,
            None if Path::new("voxproof.toml").is_file() => {
                Self::from_file(Path::new("voxproof.toml"))?
            }
            None => Self::default(),
        };
        config.apply_env(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Applies `VOXPROOF_*` variables read through `get`.
    pub fn apply_env(
        &mut self,
        get: impl Fn(&'static str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(v) = get("VOXPROOF_DATABASE_URL") {
            self.database_url = v;
        }
        if let Some(v) = get("VOXPROOF_REDIS_URL") {
            self.redis_url = v;
        }
        if let Some(v) = get("VOXPROOF_STORAGE") {
            self.storage = v;
        }
        if let Some(v) = get("VOXPROOF_S3_ENDPOINT") {
            self.s3_endpoint = Some(v);
        }
        if let Some(v) = get("VOXPROOF_S3_REGION") {
            self.s3_region = v;
        }
        if let Some(v) = get("VOXPROOF_LISTEN") {
            self.listen = parse_env("VOXPROOF_LISTEN", &v)?;
        }
        if let Some(v) = get("VOXPROOF_MIGRATE_ON_START") {
            self.migrate_on_start = parse_bool("VOXPROOF_MIGRATE_ON_START", &v)?;
        }
        if let Some(v) = get("VOXPROOF_QUEUE_NAMESPACE") {
            self.queue_namespace = v;
        }
        if let Some(v) = get("VOXPROOF_MAX_BODY_BYTES") {
            self.limits.max_body_bytes = parse_env("VOXPROOF_MAX_BODY_BYTES", &v)?;
        }
        if let Some(v) = get("VOXPROOF_MAX_TEXT_CHARS") {
            self.limits.max_text_chars = parse_env("VOXPROOF_MAX_TEXT_CHARS", &v)?;
        }
        if let Some(v) = get("VOXPROOF_MAX_CONCURRENT_JOBS") {
            self.limits.max_concurrent_jobs = parse_env("VOXPROOF_MAX_CONCURRENT_JOBS", &v)?;
        }
        if let Some(v) = get("VOXPROOF_LEASE_SECONDS") {
            self.worker.lease_seconds = parse_env("VOXPROOF_LEASE_SECONDS", &v)?;
        }
        if let Some(v) = get("VOXPROOF_SWEEP_SECONDS") {
            self.worker.sweep_seconds = parse_env("VOXPROOF_SWEEP_SECONDS", &v)?;
        }
        if let Some(v) = get("VOXPROOF_QUEUE_RETENTION_SECONDS") {
            self.worker.queue_retention_seconds =
                parse_env("VOXPROOF_QUEUE_RETENTION_SECONDS", &v)?;
        }
        if let Some(v) = get("VOXPROOF_WATERMARK_KEY") {
            self.provenance.watermark_key = Some(v);
        }
        if let Some(v) = get("VOXPROOF_SIGNING_KEYS") {
            self.provenance.signing_keys = Some(PathBuf::from(v));
        }
        if let Some(v) = get("VOXPROOF_TRUST_ANCHORS") {
            self.provenance.trust_anchors = std::env::split_paths(&v).collect();
        }
        if let Some(v) = get("VOXPROOF_PROVENANCE_DIR") {
            self.provenance.local_dir = Some(PathBuf::from(v));
        }
        if let Some(v) = get("VOXPROOF_VERIFY_PER_MINUTE") {
            self.provenance.verify_per_minute = parse_env("VOXPROOF_VERIFY_PER_MINUTE", &v)?;
        }
        if let Some(v) = get("VOXPROOF_MAX_ATTEMPTS") {
            self.worker.max_attempts = parse_env("VOXPROOF_MAX_ATTEMPTS", &v)?;
        }
        Ok(())
    }
}

fn parse_env<T: std::str::FromStr>(name: &'static str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e: T::Err| ConfigError::Env {
        name,
        message: format!("{value:?}: {e}"),
    })
}

fn parse_bool(name: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::Env {
            name,
            message: format!("{value:?} is not a boolean"),
        }),
    }
}

/// A URL with any password replaced, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{}://{}:***@{}", &url[..scheme_end], user, &url[at + 1..])
            } else {
                url.to_string()
            }
        }
        _ => url.to_string(),
    }
}

// Written by hand so that secrets in URLs never reach a log line.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &redact_url(&self.database_url))
            .field("redis_url", &redact_url(&self.redis_url))
            .field("storage", &self.storage)
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_region", &self.s3_region)
            .field("listen", &self.listen)
            .field("migrate_on_start", &self.migrate_on_start)
            .field("queue_namespace", &self.queue_namespace)
            .field("limits", &self.limits)
            .field("worker", &self.worker)
            .field("presign_seconds", &self.presign_seconds)
            .field("provenance", &self.provenance)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_file_values() {
        let mut config: Config =
            toml::from_str("listen = \"0.0.0.0:9000\"\nstorage = \"s3://from-file\"\n").unwrap();
        assert_eq!(config.listen.port(), 9000);
        config
            .apply_env(|name| match name {
                "VOXPROOF_STORAGE" => Some("file:///tmp/x".into()),
                "VOXPROOF_MIGRATE_ON_START" => Some("true".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(config.storage, "file:///tmp/x");
        assert_eq!(config.listen.port(), 9000);
        assert!(config.migrate_on_start);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let mut config = Config::default();
        let err = config
            .apply_env(|name| (name == "VOXPROOF_LISTEN").then(|| "nowhere".into()))
            .unwrap_err();
        assert!(err.to_string().contains("VOXPROOF_LISTEN"), "{err}");
        assert!(toml::from_str::<Config>("no_such_key = 1").is_err());
    }

    #[test]
    fn passwords_never_appear_in_debug_output() {
        let config = Config {
            database_url: "postgres://app:hunter2@db/voxproof".into(),
            redis_url: "redis://:s3cret@cache:6379/".into(),
            ..Config::default()
        };
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert!(shown.contains("postgres://app:***@db/voxproof"));
    }
}
