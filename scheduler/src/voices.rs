//! The voices a deployment can render, as its processes found them on disk. Each API and
//! worker process registers its voices when it starts; the API lists them from here, so a
//! client sees what the whole deployment offers, not only what one host has.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct VoiceRecord {
    pub name: String,
    pub language: String,
    pub quality: Option<String>,
    pub sample_rate: i32,
    /// Speaker names in id order; empty for a single-speaker voice.
    pub speakers: sqlx::types::Json<Vec<String>>,
    pub model_sha256: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VoiceRow {
    #[sqlx(flatten)]
    pub voice: VoiceRecord,
    pub updated_at: DateTime<Utc>,
}

/// Inserts or refreshes `voices` (a changed model file shows as a new digest).
pub async fn register(pool: &PgPool, voices: &[VoiceRecord]) -> sqlx::Result<()> {
    for voice in voices {
        sqlx::query(
            "INSERT INTO voices (name, language, quality, sample_rate, speakers, model_sha256)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (name) DO UPDATE SET language = EXCLUDED.language,
                 quality = EXCLUDED.quality, sample_rate = EXCLUDED.sample_rate,
                 speakers = EXCLUDED.speakers, model_sha256 = EXCLUDED.model_sha256,
                 updated_at = now()",
        )
        .bind(&voice.name)
        .bind(&voice.language)
        .bind(&voice.quality)
        .bind(voice.sample_rate)
        .bind(&voice.speakers)
        .bind(&voice.model_sha256)
        .execute(pool)
        .await?;
    }
    Ok(())
}

pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<VoiceRow>> {
    sqlx::query_as(
        "SELECT name, language, quality, sample_rate, speakers, model_sha256, updated_at
         FROM voices ORDER BY name",
    )
    .fetch_all(pool)
    .await
}
