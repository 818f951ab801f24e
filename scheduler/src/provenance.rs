//! Provenance records in Postgres: one per job, created when its assembly first starts, and
//! looked up by the id a watermark carries when a file comes back without its manifest.

use sqlx::PgPool;
use uuid::Uuid;
use voxproof_provenance::{ProvenanceRecord, ProvenanceSettings};
use voxproof_watermark::Payload;

use crate::config::Config;
use crate::model::JobRow;

impl Config {
    /// Where this process's provenance material comes from; development material lives in
    /// `default_local_dir` unless the configuration names another place.
    pub fn provenance_settings(&self, default_local_dir: std::path::PathBuf) -> ProvenanceSettings {
        let p = &self.provenance;
        ProvenanceSettings {
            watermark_key_hex: p.watermark_key.clone(),
            signing_keys: p.signing_keys.clone(),
            trust_anchors: p.trust_anchors.clone(),
            local_dir: p.local_dir.clone().unwrap_or(default_local_dir),
        }
    }
}

#[derive(sqlx::FromRow)]
struct RecordRow {
    record_id: i64,
    watermark: String,
    job_id: Option<Uuid>,
    tenant_id: Option<Uuid>,
    voice: String,
    voice_model_sha256: String,
    input_sha256: String,
    created_at: chrono::DateTime<chrono::Utc>,
}

impl RecordRow {
    fn into_record(self) -> ProvenanceRecord {
        let watermark = u64::from_str_radix(&self.watermark, 16).unwrap_or_default();
        ProvenanceRecord {
            record_id: self.record_id as u32,
            watermark: Payload(watermark),
            job_id: self.job_id.map(|id| id.to_string()),
            tenant: self.tenant_id.map(|id| id.to_string()),
            voice: self.voice,
            voice_model_sha256: self.voice_model_sha256,
            input_sha256: self.input_sha256,
            created_at: self
                .created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }
}

const RECORD_COLUMNS: &str = "record_id, watermark, job_id, tenant_id, voice, \
     voice_model_sha256, input_sha256, created_at";

/// The job's record, created with a fresh random id on first use. A retried assembly gets
/// the same record, so every file of the job carries the same mark.
pub async fn record_for_job(
    pool: &PgPool,
    job: &JobRow,
    watermark_key: &[u8],
) -> sqlx::Result<ProvenanceRecord> {
    loop {
        let existing: Option<RecordRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {RECORD_COLUMNS} FROM provenance_records WHERE job_id = $1"
        )))
        .bind(job.id)
        .fetch_optional(pool)
        .await?;
        if let Some(row) = existing {
            return Ok(row.into_record());
        }
        let mut bytes = [0u8; 4];
        getrandom::fill(&mut bytes).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        let record_id = u32::from_be_bytes(bytes);
        let payload = Payload::for_record(watermark_key, record_id);
        // A clash on the id draws again; a clash on the job means another attempt won.
        let inserted: Option<RecordRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO provenance_records \
               (record_id, watermark, job_id, tenant_id, voice, voice_model_sha256, input_sha256) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT DO NOTHING RETURNING {RECORD_COLUMNS}"
        )))
        .bind(i64::from(record_id))
        .bind(format!("{:016x}", payload.0))
        .bind(job.id)
        .bind(job.tenant_id)
        .bind(&job.voice)
        .bind(&job.model_sha256)
        .bind(&job.source_sha256)
        .fetch_optional(pool)
        .await?;
        if let Some(row) = inserted {
            return Ok(row.into_record());
        }
    }
}

/// The record with `record_id`, if this deployment made it.
pub async fn find(pool: &PgPool, record_id: u32) -> sqlx::Result<Option<ProvenanceRecord>> {
    let row: Option<RecordRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {RECORD_COLUMNS} FROM provenance_records WHERE record_id = $1"
    )))
    .bind(i64::from(record_id))
    .fetch_optional(pool)
    .await?;
    Ok(row.map(RecordRow::into_record))
}

/// The most issued payloads a verification judges directly: about half a microsecond each
/// per window examined, so a 10-minute upload costs at most a few seconds more.
pub const MAX_ISSUED_PAYLOADS: i64 = 100_000;

/// The watermark payloads of this deployment's newest records (at most
/// [`MAX_ISSUED_PAYLOADS`]), for the detector to judge directly where blind decoding reads
/// nothing.
pub async fn issued_payloads(pool: &PgPool) -> sqlx::Result<Vec<Payload>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT watermark FROM provenance_records ORDER BY created_at DESC LIMIT $1",
    )
    .bind(MAX_ISSUED_PAYLOADS)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(hex,)| u64::from_str_radix(&hex, 16).ok().map(Payload))
        .collect())
}
