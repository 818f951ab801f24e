//! The Postgres side of a job's life: creation with its segments, segment claims and
//! completion, assembly, cancellation and what the sweeper looks for. Every state change
//! that a user or operator could ask about is audited in the same transaction.

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgPool};
use uuid::Uuid;

use crate::audit::{self, Actor, AuditEvent, PendingValues, PENDING_COLUMNS};
use crate::model::{ArtifactRow, JobOptions, JobRow, Priority, JOB_COLUMNS};
use crate::plan::PlannedSegment;

/// Sources up to this size are stored in Postgres with the job (one transaction, no object
/// write per request); larger ones go to object storage first.
pub const INLINE_SOURCE_BYTES: usize = 256 * 1024;

/// A validated job, ready to be stored.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub key_id: Uuid,
    pub priority: Priority,
    pub voice: String,
    pub model_sha256: String,
    pub input_format: String,
    pub output_format: String,
    pub options: JobOptions,
    /// Where a large source is stored; `None` keeps it in `job_sources` ([`INLINE_SOURCE_BYTES`]).
    pub source_key: Option<String>,
    pub source_sha256: String,
    pub source_bytes: i64,
    pub idempotency_key: Option<String>,
    /// Hash of the request's meaning, so a reused idempotency key with a different request
    /// is refused rather than silently answered with the old job.
    pub request_sha256: String,
    pub max_concurrent_jobs: i32,
}

#[derive(Debug)]
pub enum Created {
    New(Box<JobRow>),
    /// Same idempotency key, same request: the earlier job.
    Existing(Box<JobRow>),
    /// Same idempotency key, different request.
    KeyReused,
    /// The tenant already has this many jobs queued or running.
    TooManyJobs(i32),
}

/// Writes the job, its segments, its source when `inline_source` is given (see
/// [`INLINE_SOURCE_BYTES`]) and the audit event in one transaction.
pub async fn create(
    pool: &PgPool,
    job: &NewJob,
    segments: &[PlannedSegment],
    inline_source: Option<&[u8]>,
    request_id: &str,
) -> anyhow::Result<Created> {
    // The slot first, before this request holds a connection in a transaction: taking a
    // second connection from inside one could starve the pool under load.
    let reserved = reserve_slot(pool, job.tenant_id, job.max_concurrent_jobs).await?;
    let outcome = match &job.idempotency_key {
        None if !reserved => Ok(Created::TooManyJobs(job.max_concurrent_jobs)),
        // One statement is one transaction: no BEGIN/COMMIT round trips.
        None => write_job(pool, job, segments, inline_source, request_id)
            .await
            .map(|row| Created::New(Box::new(row))),
        Some(key) => {
            create_keyed(
                pool,
                job,
                key,
                reserved,
                segments,
                inline_source,
                request_id,
            )
            .await
        }
    };
    // Only a job that was written keeps the slot; any other outcome, errors included, gives
    // it back.
    if reserved && !matches!(outcome, Ok(Created::New(_))) {
        if let Err(e) = release_slot(pool, job.tenant_id).await {
            tracing::warn!("could not give back a reserved job slot: {e}");
        }
    }
    outcome
}

/// [`create`] for a request with an `Idempotency-Key`: the earlier job when the key was
/// used for this same request, a refusal when it was used for another, else a new job.
async fn create_keyed(
    pool: &PgPool,
    job: &NewJob,
    key: &str,
    reserved: bool,
    segments: &[PlannedSegment],
    inline_source: Option<&[u8]>,
    request_id: &str,
) -> anyhow::Result<Created> {
    let mut tx = pool.begin().await?;
    // Serializes concurrent requests with the same key so exactly one job is created.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, $2::bigint))")
        .bind(key)
        .bind(i64::from_le_bytes(
            job.tenant_id.as_bytes()[..8].try_into()?,
        ))
        .execute(&mut *tx)
        .await?;
    let existing: Option<(Uuid, Option<String>)> = sqlx::query_as(
        "SELECT id, request_sha256 FROM jobs WHERE tenant_id = $1 AND idempotency_key = $2",
    )
    .bind(job.tenant_id)
    .bind(key)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((id, hash)) = existing {
        tx.rollback().await?;
        if hash.as_deref() != Some(job.request_sha256.as_str()) {
            return Ok(Created::KeyReused);
        }
        let row = get(pool, job.tenant_id, id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("job {id} vanished"))?;
        return Ok(Created::Existing(Box::new(row)));
    }
    if !reserved {
        tx.rollback().await?;
        return Ok(Created::TooManyJobs(job.max_concurrent_jobs));
    }
    let row = write_job(&mut *tx, job, segments, inline_source, request_id).await?;
    tx.commit().await?;
    Ok(Created::New(Box::new(row)))
}

/// Takes one of the tenant's open-job slots, in a statement of its own so the counter row is
/// locked only for that statement. False when the tenant is at its limit.
async fn reserve_slot(pool: &PgPool, tenant_id: Uuid, limit: i32) -> sqlx::Result<bool> {
    // A single autocommitted statement (see the function in the migrations): the counter
    // row stays locked only inside the server.
    let reserved: bool = sqlx::query_scalar("SELECT reserve_open_job($1, $2)")
        .bind(tenant_id)
        .bind(limit)
        .fetch_one(pool)
        .await?;
    Ok(reserved)
}

async fn release_slot(pool: &PgPool, tenant_id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE tenant_open_jobs SET open_jobs = greatest(open_jobs - 1, 0) WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Sets open-job counts back to the truth where a crash between a slot's reservation and
/// its job's commit left one too many; only for tenants with no reservation in the last
/// five minutes, so requests in flight are never miscounted. Returns the tenants fixed.
pub async fn reconcile_open_jobs(pool: &PgPool) -> sqlx::Result<u64> {
    let fixed = sqlx::query(
        "UPDATE tenant_open_jobs o SET open_jobs = actual.n
         FROM (SELECT o2.tenant_id, (SELECT count(*) FROM jobs j WHERE j.tenant_id = o2.tenant_id
                   AND j.status IN ('queued', 'running'))::int AS n
               FROM tenant_open_jobs o2
               WHERE o2.reserved_at < now() - interval '5 minutes') actual
         WHERE o.tenant_id = actual.tenant_id AND o.open_jobs <> actual.n",
    )
    .execute(pool)
    .await?;
    Ok(fixed.rows_affected())
}

/// Writes the job, its segments, its inline source and its audit event in one statement:
/// atomic on its own, and one round trip to Postgres whatever the book's length (the
/// segments travel as arrays). Foreign keys are checked at the end of the statement, so
/// the segment rows may reference the job row inserted beside them.
async fn write_job(
    executor: impl sqlx::PgExecutor<'_>,
    job: &NewJob,
    segments: &[PlannedSegment],
    inline_source: Option<&[u8]>,
    request_id: &str,
) -> anyhow::Result<JobRow> {
    let indexes: Vec<i32> = segments.iter().map(|s| s.index).collect();
    let items: Vec<serde_json::Value> = segments
        .iter()
        .map(|s| serde_json::to_value(&s.items))
        .collect::<Result<_, _>>()?;
    let sentences: Vec<i32> = segments.iter().map(|s| s.sentences).collect();
    let keys: Vec<String> = segments.iter().map(|s| s.content_key.clone()).collect();
    let event = AuditEvent {
        request_id: request_id.to_string(),
        actor: Actor::Key(job.key_id),
        tenant_id: Some(job.tenant_id),
        action: "job.create".into(),
        target: format!("job:{}", job.id),
        details: serde_json::json!({
            "voice": job.voice,
            "output_format": job.output_format,
            "priority": job.priority.as_str(),
            "segments": segments.len(),
            "source_sha256": job.source_sha256,
        }),
    };
    let query = sqlx::query_as(AssertSqlSafe(format!(
        "WITH job AS (
            INSERT INTO jobs (id, tenant_id, created_by_key, status, priority, voice,
                model_sha256, input_format, output_format, options, source_key, source_sha256,
                source_bytes, idempotency_key, request_sha256, segments_total, assembly_ready_at)
            VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                now())
            RETURNING {JOB_COLUMNS}
         ), segment_rows AS (
            -- Counted as queued from the start: the API pushes them right after the commit,
            -- and if that push is lost the sweeper re-pushes once they look stale.
            INSERT INTO segments (job_id, index, items, sentences, content_key, enqueued_at)
            SELECT $1, *, now() FROM UNNEST($16::int[], $17::jsonb[], $18::int[], $19::text[])
         ), source_row AS (
            INSERT INTO job_sources (job_id, body) SELECT $1, $20::bytea WHERE $20 IS NOT NULL
         ), audit_row AS (
            INSERT INTO audit_pending ({PENDING_COLUMNS})
            VALUES ($21, $22, $23, $24, $25, $26, $27)
         )
         SELECT * FROM job"
    )))
    .bind(job.id)
    .bind(job.tenant_id)
    .bind(job.key_id)
    .bind(job.priority.as_str())
    .bind(&job.voice)
    .bind(&job.model_sha256)
    .bind(&job.input_format)
    .bind(&job.output_format)
    .bind(sqlx::types::Json(&job.options))
    .bind(&job.source_key)
    .bind(&job.source_sha256)
    .bind(job.source_bytes)
    .bind(&job.idempotency_key)
    .bind(&job.request_sha256)
    .bind(segments.len() as i32)
    .bind(indexes)
    .bind(items)
    .bind(sentences)
    .bind(keys)
    .bind(inline_source);
    let row: JobRow = PendingValues::of(&event)
        .bind(query)
        .fetch_one(executor)
        .await?;
    Ok(row)
}

pub async fn get(pool: &PgPool, tenant_id: Uuid, id: Uuid) -> sqlx::Result<Option<JobRow>> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND tenant_id = $2"
    )))
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(pool)
    .await
}

/// Newest first; the cursor is the last row of the previous page.
pub async fn list(
    pool: &PgPool,
    tenant_id: Uuid,
    status: Option<&str>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> sqlx::Result<Vec<JobRow>> {
    let (cursor_time, cursor_id) = match after {
        Some((t, id)) => (Some(t), Some(id)),
        None => (None, None),
    };
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM jobs
         WHERE tenant_id = $1
           AND ($2::text IS NULL OR status = $2)
           AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
         ORDER BY created_at DESC, id DESC
         LIMIT $5"
    )))
    .bind(tenant_id)
    .bind(status)
    .bind(cursor_time)
    .bind(cursor_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn artifacts(pool: &PgPool, job_id: Uuid) -> sqlx::Result<Vec<ArtifactRow>> {
    sqlx::query_as(
        "SELECT job_id, name, kind, storage_key, bytes, content_type FROM artifacts
         WHERE job_id = $1 ORDER BY kind = 'audio' DESC, name",
    )
    .bind(job_id)
    .fetch_all(pool)
    .await
}

#[derive(Debug)]
pub enum Cancelled {
    Done(Box<JobRow>),
    NotFound,
    AlreadyFinished(Box<JobRow>),
}

/// Cancels a queued or running job: its open segments stop being claimable.
pub async fn cancel(
    pool: &PgPool,
    tenant_id: Uuid,
    id: Uuid,
    actor: Actor,
    request_id: &str,
) -> anyhow::Result<Cancelled> {
    let mut tx = pool.begin().await?;
    let row: Option<JobRow> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND tenant_id = $2 FOR UPDATE"
    )))
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(Cancelled::NotFound);
    };
    if row.status().is_finished() {
        return Ok(Cancelled::AlreadyFinished(Box::new(row)));
    }
    let row: JobRow = sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE jobs SET status = 'cancelled', finished_at = now(),
             error_code = NULL, error_message = NULL
         WHERE id = $1 RETURNING {JOB_COLUMNS}"
    )))
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE segments SET status = 'cancelled'
         WHERE job_id = $1 AND status IN ('pending', 'running')",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    audit::append(
        &mut tx,
        &AuditEvent {
            request_id: request_id.to_string(),
            actor,
            tenant_id: Some(tenant_id),
            action: "job.cancel".into(),
            target: format!("job:{id}"),
            details: serde_json::json!({}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Cancelled::Done(Box::new(row)))
}

// ---- workers -------------------------------------------------------------------------

/// A segment a worker now holds.
#[derive(Debug, Clone)]
pub struct SegmentWork {
    pub job: JobRow,
    pub index: i32,
    pub items: Vec<voxproof_text::Item>,
    pub content_key: String,
    pub attempt: i32,
}

#[derive(Debug)]
pub enum SegmentClaim {
    Work(Box<SegmentWork>),
    /// Done, cancelled, failed or held by a live worker: nothing to do.
    Skip,
    /// Attempts exhausted: the job has been failed.
    GaveUp,
}

/// Takes a segment of the job for rendering under a lease, counting the attempt in Postgres
/// (Redis redelivery does not count attempts, and a task that kills its worker would
/// otherwise come back forever).
///
/// A segment message names a segment, but the claim takes the job's lowest claimable one: the
/// queue hands messages out of order (measured on a 15-page book: segments 1–9 came one
/// every ten others), and the assembler, which needs segments in order, then waited a
/// minute for segment 8 while 80 later ones sat finished. Messages are one per segment, so
/// every segment still gets one; the one for a segment taken early claims another or none.
pub async fn claim_segment(
    pool: &PgPool,
    job_id: Uuid,
    worker: &str,
    lease_seconds: i64,
    max_attempts: i32,
) -> anyhow::Result<SegmentClaim> {
    let mut tx = pool.begin().await?;
    let job: Option<JobRow> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"
    )))
    .bind(job_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(job) = job else {
        return Ok(SegmentClaim::Skip);
    };
    if job.status().is_finished() {
        return Ok(SegmentClaim::Skip);
    }
    type Claimable = (
        i32,
        i32,
        sqlx::types::Json<Vec<voxproof_text::Item>>,
        String,
        Option<String>,
    );
    // A segment waiting out its retry backoff is not claimable before `not_before`.
    let segment: Option<Claimable> = sqlx::query_as(
        "SELECT index, attempts, items, content_key, last_error FROM segments
             WHERE job_id = $1
               AND ((status = 'pending' AND not_before <= now())
                    OR (status = 'running' AND lease_until < now()))
             ORDER BY index
             LIMIT 1
             FOR UPDATE SKIP LOCKED",
    )
    .bind(job_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((index, attempts, items, content_key, last_error)) = segment else {
        return Ok(SegmentClaim::Skip);
    };
    if attempts >= max_attempts {
        sqlx::query("UPDATE segments SET status = 'failed' WHERE job_id = $1 AND index = $2")
            .bind(job_id)
            .bind(index)
            .execute(&mut *tx)
            .await?;
        fail_in(
            &mut tx,
            &job,
            "segment_failed",
            &format!(
                "segment {index} failed {attempts} times; last error: {}",
                last_error
                    .as_deref()
                    .unwrap_or("the worker stopped while rendering it")
            ),
        )
        .await?;
        tx.commit().await?;
        return Ok(SegmentClaim::GaveUp);
    }
    sqlx::query(
        "UPDATE segments SET status = 'running', attempts = attempts + 1, claims = claims + 1,
             worker = $3,
             lease_until = now() + make_interval(secs => $4)
         WHERE job_id = $1 AND index = $2",
    )
    .bind(job_id)
    .bind(index)
    .bind(worker)
    .bind(lease_seconds as f64)
    .execute(&mut *tx)
    .await?;
    let job: JobRow = sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE jobs SET status = 'running', started_at = coalesce(started_at, now())
         WHERE id = $1 RETURNING {JOB_COLUMNS}"
    )))
    .bind(job_id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(SegmentClaim::Work(Box::new(SegmentWork {
        job,
        index,
        items: items.0,
        content_key,
        attempt: attempts + 1,
    })))
}

/// Extends the leases a live worker holds (its heartbeat).
pub async fn renew_leases(pool: &PgPool, worker: &str, lease_seconds: i64) -> sqlx::Result<u64> {
    let segments = sqlx::query(
        "UPDATE segments SET lease_until = now() + make_interval(secs => $2)
         WHERE worker = $1 AND status = 'running'",
    )
    .bind(worker)
    .bind(lease_seconds as f64)
    .execute(pool)
    .await?;
    sqlx::query(
        "UPDATE jobs SET assembly_lease_until = now() + make_interval(secs => $2)
         WHERE assembly_worker = $1 AND status IN ('queued', 'running')",
    )
    .bind(worker)
    .bind(lease_seconds as f64)
    .execute(pool)
    .await?;
    Ok(segments.rows_affected())
}

/// Marks a rendered segment done. Returns true when it was the job's last: the caller then
/// enqueues the assembly again, in case no assembler is following the job (a no-op when
/// one holds it; the sweeper does the same if both pushes are lost).
pub async fn complete_segment(
    pool: &PgPool,
    job_id: Uuid,
    index: i32,
    worker: &str,
    samples: i64,
) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    // Only the holder's first completion counts, so a duplicate delivery cannot count twice.
    let updated = sqlx::query(
        "UPDATE segments SET status = 'done', samples = $4, finished_at = now(),
             lease_until = NULL, last_error = NULL
         WHERE job_id = $1 AND index = $2 AND status = 'running' AND worker = $3",
    )
    .bind(job_id)
    .bind(index)
    .bind(worker)
    .bind(samples)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    let last: Option<bool> = sqlx::query_scalar(
        "UPDATE jobs SET segments_done = segments_done + 1
         WHERE id = $1 AND status = 'running'
         RETURNING segments_done = segments_total",
    )
    .bind(job_id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(last.unwrap_or(false))
}

/// Records a failed attempt; the segment becomes claimable again after `retry_in`.
pub async fn segment_attempt_failed(
    pool: &PgPool,
    job_id: Uuid,
    index: i32,
    worker: &str,
    error: &str,
    retry_in_seconds: f64,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE segments SET status = 'pending', last_error = $4, lease_until = NULL,
             enqueued_at = NULL, not_before = now() + make_interval(secs => $5)
         WHERE job_id = $1 AND index = $2 AND status = 'running' AND worker = $3",
    )
    .bind(job_id)
    .bind(index)
    .bind(worker)
    .bind(error)
    .bind(retry_in_seconds)
    .execute(pool)
    .await?;
    Ok(())
}

/// Fails a job with a stable error code (outside any other transaction).
pub async fn fail(pool: &PgPool, job: &JobRow, code: &str, message: &str) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    fail_in(&mut tx, job, code, message).await?;
    tx.commit().await
}

async fn fail_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    job: &JobRow,
    code: &str,
    message: &str,
) -> sqlx::Result<()> {
    let updated = sqlx::query(
        "UPDATE jobs SET status = 'failed', error_code = $2, error_message = $3,
             finished_at = now(), assembly_worker = NULL, assembly_lease_until = NULL
         WHERE id = $1 AND status IN ('queued', 'running')",
    )
    .bind(job.id)
    .bind(code)
    .bind(message)
    .execute(&mut **tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(());
    }
    sqlx::query(
        "UPDATE segments SET status = 'cancelled' WHERE job_id = $1 AND status IN ('pending', 'running')",
    )
    .bind(job.id)
    .execute(&mut **tx)
    .await?;
    audit::append(
        tx,
        &AuditEvent {
            request_id: format!("job-{}", job.id),
            actor: Actor::System,
            tenant_id: Some(job.tenant_id),
            action: "job.fail".into(),
            target: format!("job:{}", job.id),
            details: serde_json::json!({ "code": code, "message": message }),
        },
    )
    .await?;
    Ok(())
}

/// One segment's part of the assembly: its items and where its PCM is.
#[derive(Debug, Clone)]
pub struct AssemblyPart {
    pub index: i32,
    pub items: Vec<voxproof_text::Item>,
    pub content_key: String,
}

#[derive(Debug)]
pub enum AssemblyClaim {
    Work(Box<JobRow>),
    Skip,
    GaveUp,
}

/// Takes the job's assembly under a lease: at most one assembler holds it at a time, and a
/// dead assembler's lease runs out for the sweeper to hand it to another.
pub async fn claim_assembly(
    pool: &PgPool,
    job_id: Uuid,
    worker: &str,
    lease_seconds: i64,
    max_attempts: i32,
) -> anyhow::Result<AssemblyClaim> {
    let mut tx = pool.begin().await?;
    // FOR UPDATE, not SKIP LOCKED: the job row is also locked, briefly, by every segment
    // claim and completion. Skipping it then would drop this delivery of the assembly task
    // although the assembly is free; waiting is short, and a row another assembler claimed
    // meanwhile fails the lease condition when it is re-checked after the wait.
    let job: Option<JobRow> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM jobs
         WHERE id = $1 AND status IN ('queued', 'running') AND assembly_ready_at IS NOT NULL
           AND (assembly_lease_until IS NULL OR assembly_lease_until < now())
         FOR UPDATE"
    )))
    .bind(job_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(job) = job else {
        return Ok(AssemblyClaim::Skip);
    };
    let attempts = job.assembly_attempts;
    if attempts >= max_attempts {
        fail_in(
            &mut tx,
            &job,
            "assembly_failed",
            &format!("assembling the audio failed {attempts} times"),
        )
        .await?;
        tx.commit().await?;
        return Ok(AssemblyClaim::GaveUp);
    }
    sqlx::query(
        "UPDATE jobs SET assembly_worker = $2, assembly_attempts = assembly_attempts + 1,
             assembly_claims = assembly_claims + 1,
             assembly_lease_until = now() + make_interval(secs => $3)
         WHERE id = $1",
    )
    .bind(job_id)
    .bind(worker)
    .bind(lease_seconds as f64)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(AssemblyClaim::Work(Box::new(job)))
}

/// The finished segments from `from_index` on, in order, up to the first one not yet done
/// and at most `limit` (a long book never sits in memory). Empty while `from_index` itself
/// is still being rendered.
pub async fn assembly_parts(
    pool: &PgPool,
    job_id: Uuid,
    from_index: i32,
    limit: i64,
) -> sqlx::Result<Vec<AssemblyPart>> {
    // Stops below the first segment not yet done, so a waiting assembler's polls read no
    // items they cannot use.
    let rows: Vec<(i32, sqlx::types::Json<Vec<voxproof_text::Item>>, String)> = sqlx::query_as(
        "SELECT index, items, content_key FROM segments
         WHERE job_id = $1 AND index >= $2
           AND index < coalesce((SELECT min(index) FROM segments
                                 WHERE job_id = $1 AND index >= $2 AND status <> 'done'),
                                2147483647)
         ORDER BY index LIMIT $3",
    )
    .bind(job_id)
    .bind(from_index)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(index, items, content_key)| AssemblyPart {
            index,
            items: items.0,
            content_key,
        })
        .collect())
}

/// Whether `worker` still holds the job's assembly and the job is still open: a progressive
/// assembler checks this while it waits for segments.
pub async fn assembly_held(pool: &PgPool, job_id: Uuid, worker: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND assembly_worker = $2
             AND status IN ('queued', 'running'))",
    )
    .bind(job_id)
    .bind(worker)
    .fetch_one(pool)
    .await
}

/// Hands an assembly back without charging an attempt (the worker is shutting down), for
/// another worker to take at once.
pub async fn release_assembly(pool: &PgPool, job_id: Uuid, worker: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE jobs SET assembly_worker = NULL, assembly_lease_until = NULL,
             assembly_attempts = greatest(assembly_attempts - 1, 0)
         WHERE id = $1 AND assembly_worker = $2",
    )
    .bind(job_id)
    .bind(worker)
    .execute(pool)
    .await?;
    Ok(())
}

/// A file the assembler stored.
#[derive(Debug, Clone)]
pub struct NewArtifact {
    pub name: String,
    pub kind: &'static str,
    pub storage_key: String,
    pub bytes: i64,
    pub content_type: &'static str,
}

/// Completes the job with its files, if this worker still holds the assembly.
pub async fn succeed(
    pool: &PgPool,
    job: &JobRow,
    worker: &str,
    artifacts: &[NewArtifact],
    audio_seconds: f64,
) -> anyhow::Result<bool> {
    let mut tx = pool.begin().await?;
    let updated = sqlx::query(
        "UPDATE jobs SET status = 'succeeded', audio_seconds = $3, finished_at = now(),
             assembly_lease_until = NULL
         WHERE id = $1 AND status = 'running' AND assembly_worker = $2",
    )
    .bind(job.id)
    .bind(worker)
    .bind(audio_seconds)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    sqlx::query("DELETE FROM artifacts WHERE job_id = $1")
        .bind(job.id)
        .execute(&mut *tx)
        .await?;
    for a in artifacts {
        sqlx::query(
            "INSERT INTO artifacts (job_id, name, kind, storage_key, bytes, content_type)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(job.id)
        .bind(&a.name)
        .bind(a.kind)
        .bind(&a.storage_key)
        .bind(a.bytes)
        .bind(a.content_type)
        .execute(&mut *tx)
        .await?;
    }
    audit::append(
        &mut tx,
        &AuditEvent {
            request_id: format!("job-{}", job.id),
            actor: Actor::System,
            tenant_id: Some(job.tenant_id),
            action: "job.succeed".into(),
            target: format!("job:{}", job.id),
            details: serde_json::json!({
                "audio_seconds": audio_seconds,
                "artifacts": artifacts.iter().map(|a| &a.name).collect::<Vec<_>>(),
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Gives an assembly back after an error, for a retry after `retry_in_seconds`.
pub async fn assembly_failed(
    pool: &PgPool,
    job_id: Uuid,
    worker: &str,
    retry_in_seconds: f64,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE jobs SET assembly_worker = NULL,
             assembly_lease_until = now() + make_interval(secs => $3)
         WHERE id = $1 AND assembly_worker = $2 AND status = 'running'",
    )
    .bind(job_id)
    .bind(worker)
    .bind(retry_in_seconds)
    .execute(pool)
    .await?;
    Ok(())
}

// ---- sweeper ---------------------------------------------------------------------------

/// Work Postgres knows about that should be on the queue.
#[derive(Debug, Clone)]
pub struct Due {
    pub job_id: Uuid,
    pub index: Option<i32>,
    pub priority: Priority,
    /// Names the queue message: the same while the work is unchanged, so re-pushing a
    /// message Redis still holds is a no-op.
    pub generation: i32,
}

/// Running segments whose worker stopped renewing: back to pending, so they can be queued.
pub async fn reclaim_expired(pool: &PgPool) -> sqlx::Result<u64> {
    let r = sqlx::query(
        "UPDATE segments SET status = 'pending', enqueued_at = NULL
         WHERE status = 'running' AND lease_until < now()",
    )
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

/// Pending segments not queued since `stale_seconds` (or never), and assemblies whose
/// lease ran out, oldest first.
pub async fn due(pool: &PgPool, stale_seconds: f64, limit: i64) -> sqlx::Result<Vec<Due>> {
    let segments: Vec<(Uuid, i32, String, i32)> = sqlx::query_as(
        "SELECT s.job_id, s.index, j.priority, s.claims FROM segments s JOIN jobs j ON j.id = s.job_id
         WHERE s.status = 'pending' AND s.not_before <= now()
           AND j.status IN ('queued', 'running')
           AND (s.enqueued_at IS NULL OR s.enqueued_at < now() - make_interval(secs => $1))
         ORDER BY j.priority = 'interactive' DESC, j.created_at, s.index
         LIMIT $2",
    )
    .bind(stale_seconds)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let assemblies: Vec<(Uuid, String, i32)> = sqlx::query_as(
        "SELECT id, priority, assembly_claims FROM jobs
         WHERE status IN ('queued', 'running') AND assembly_ready_at IS NOT NULL
           AND (assembly_lease_until IS NULL OR assembly_lease_until < now())
           AND assembly_ready_at < now() - make_interval(secs => $1)
         LIMIT $2",
    )
    .bind(stale_seconds)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let priority = |p: &str| Priority::parse(p).unwrap_or_default();
    Ok(segments
        .into_iter()
        .map(|(job_id, index, p, generation)| Due {
            job_id,
            index: Some(index),
            priority: priority(&p),
            generation,
        })
        .chain(assemblies.into_iter().map(|(job_id, p, generation)| Due {
            job_id,
            index: None,
            priority: priority(&p),
            generation,
        }))
        .collect())
}

/// Notes that these segments are on the queue now.
pub async fn mark_enqueued(pool: &PgPool, job_id: Uuid, indexes: &[i32]) -> sqlx::Result<()> {
    sqlx::query("UPDATE segments SET enqueued_at = now() WHERE job_id = $1 AND index = ANY($2)")
        .bind(job_id)
        .bind(indexes)
        .execute(pool)
        .await?;
    Ok(())
}

/// Re-arms an assembly the sweeper re-queued, so it is not queued again at every sweep.
pub async fn mark_assembly_enqueued(pool: &PgPool, job_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("UPDATE jobs SET assembly_ready_at = now() WHERE id = $1")
        .bind(job_id)
        .execute(pool)
        .await?;
    Ok(())
}
