//! The job model as the API and workers see it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            "cancelled" => JobStatus::Cancelled,
            _ => return None,
        })
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Interactive,
    #[default]
    Bulk,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Interactive => "interactive",
            Priority::Bulk => "bulk",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "interactive" => Some(Priority::Interactive),
            "bulk" => Some(Priority::Bulk),
            _ => None,
        }
    }
}

/// Output formats a job may ask for (the engine's, by extension).
pub const OUTPUT_FORMATS: &[&str] = &["mp3", "opus", "flac", "wav", "m4b"];

/// Speaking and packaging options of a job, stored as JSON on the job row.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobOptions {
    #[serde(default)]
    pub rate: Option<f32>,
    #[serde(default)]
    pub speaker: Option<String>,
    #[serde(default)]
    pub subtitles: bool,
    #[serde(default)]
    pub per_chapter: bool,
    /// Word → respelling or `/ipa/`.
    #[serde(default)]
    pub lexicon: std::collections::BTreeMap<String, String>,
}

/// A job row as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub status: String,
    pub priority: String,
    pub voice: String,
    pub model_sha256: String,
    pub input_format: String,
    pub output_format: String,
    pub options: sqlx::types::Json<JobOptions>,
    pub source_key: Option<String>,
    pub source_sha256: String,
    pub segments_total: i32,
    pub segments_done: i32,
    pub assembly_attempts: i32,
    pub audio_seconds: Option<f64>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl JobRow {
    pub fn status(&self) -> JobStatus {
        JobStatus::parse(&self.status).unwrap_or(JobStatus::Failed)
    }

    pub fn priority(&self) -> Priority {
        Priority::parse(&self.priority).unwrap_or_default()
    }
}

/// The columns of `JobRow`, for queries.
pub const JOB_COLUMNS: &str =
    "id, tenant_id, status, priority, voice, model_sha256, input_format, \
     output_format, options, source_key, source_sha256, segments_total, segments_done, \
     assembly_attempts, \
     audio_seconds, error_code, error_message, created_at, started_at, finished_at";

#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct ArtifactRow {
    pub job_id: Uuid,
    pub name: String,
    pub kind: String,
    pub storage_key: String,
    pub bytes: i64,
    pub content_type: String,
}
