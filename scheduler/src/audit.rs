//! The tamper-evident audit log. Each row's hash covers its fields and the previous row's
//! hash; `verify` recomputes the chain and names the first bad row.
//!
//! Events are written in two steps so that the chain never serializes the platform:
//! [`append`] inserts the event into `audit_pending` inside the caller's transaction (it
//! lands with the change it describes, or not at all, and takes no lock), and [`chain_pending`]
//! moves committed events into `audit_events` in the order they were written, under an
//! advisory lock, computing `seq` and the hashes. Every API and worker process runs the
//! chainer a few times a second, and `verify` runs it first, so an event waits in
//! `audit_pending` for well under a second.

use chrono::{DateTime, SubsecRound, Utc};
use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, PgPool, Postgres, Transaction};
use uuid::Uuid;

/// Lock id for appends (an arbitrary constant: "vxaudit" in ASCII).
const AUDIT_LOCK: i64 = 0x0076_7861_7564_6974;

/// Who did it.
#[derive(Debug, Clone, Copy)]
pub enum Actor {
    /// An API key.
    Key(Uuid),
    /// The command line on a server (key creation, migrations).
    Operator,
    /// The platform itself (workers, the sweeper).
    System,
}

impl Actor {
    fn key_id(self) -> Option<Uuid> {
        match self {
            Actor::Key(id) => Some(id),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub request_id: String,
    pub actor: Actor,
    pub tenant_id: Option<Uuid>,
    pub action: String,
    pub target: String,
    pub details: serde_json::Value,
}

struct Row<'a> {
    seq: i64,
    at: DateTime<Utc>,
    request_id: &'a str,
    actor_key_id: Option<Uuid>,
    tenant_id: Option<Uuid>,
    action: &'a str,
    target: &'a str,
    details: &'a str,
}

/// SHA-256 over the previous hash and each field, length-prefixed so no two rows can be
/// made to read the same by moving bytes between fields.
fn row_hash(prev: &[u8], row: &Row<'_>) -> Vec<u8> {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(prev);
    field(&row.seq.to_be_bytes());
    field(&row.at.timestamp_micros().to_be_bytes());
    field(row.request_id.as_bytes());
    field(
        row.actor_key_id
            .map(|u| *u.as_bytes())
            .unwrap_or_default()
            .as_slice(),
    );
    field(
        row.tenant_id
            .map(|u| *u.as_bytes())
            .unwrap_or_default()
            .as_slice(),
    );
    field(row.action.as_bytes());
    field(row.target.as_bytes());
    field(row.details.as_bytes());
    h.finalize().to_vec()
}

/// The `audit_pending` columns an event fills, in the order [`PendingValues`] binds them.
pub(crate) const PENDING_COLUMNS: &str =
    "at, request_id, actor_key_id, tenant_id, action, target, details";

/// An event as its `audit_pending` row holds it.
pub(crate) struct PendingValues {
    pub at: DateTime<Utc>,
    pub request_id: String,
    pub actor_key_id: Option<Uuid>,
    pub tenant_id: Option<Uuid>,
    pub action: String,
    pub target: String,
    pub details: String,
}

impl PendingValues {
    pub fn of(event: &AuditEvent) -> Self {
        PendingValues {
            // Postgres keeps microseconds: hash what will be read back.
            at: Utc::now().trunc_subsecs(6),
            request_id: event.request_id.clone(),
            actor_key_id: event.actor.key_id(),
            tenant_id: event.tenant_id,
            action: event.action.clone(),
            target: event.target.clone(),
            details: event.details.to_string(),
        }
    }

    /// Binds the values of [`PENDING_COLUMNS`], in order.
    pub fn bind<'q, O>(
        self,
        query: sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments> {
        query
            .bind(self.at)
            .bind(self.request_id)
            .bind(self.actor_key_id)
            .bind(self.tenant_id)
            .bind(self.action)
            .bind(self.target)
            .bind(self.details)
    }
}

/// Records `event` inside the caller's transaction, so the event lands with the change it
/// describes or not at all. It joins the hash chain when [`chain_pending`] next runs.
pub async fn append(tx: &mut Transaction<'_, Postgres>, event: &AuditEvent) -> sqlx::Result<i64> {
    let query = sqlx::query_as(AssertSqlSafe(format!(
        "INSERT INTO audit_pending ({PENDING_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)
         RETURNING id"
    )));
    let (id,): (i64,) = PendingValues::of(event)
        .bind(query)
        .fetch_one(&mut **tx)
        .await?;
    Ok(id)
}

/// Records `event` in a transaction of its own.
pub async fn record(pool: &PgPool, event: &AuditEvent) -> sqlx::Result<i64> {
    let mut tx = pool.begin().await?;
    let id = append(&mut tx, event).await?;
    tx.commit().await?;
    Ok(id)
}

type PendingRow = (
    i64,
    DateTime<Utc>,
    String,
    Option<Uuid>,
    Option<Uuid>,
    String,
    String,
    String,
);

/// Moves committed pending events into the hash chain, oldest first, a batch per
/// transaction; returns how many were chained. Safe to run from every process at once:
/// chaining holds a transaction-scoped advisory lock, so the chain never forks and `seq`
/// has no gaps.
pub async fn chain_pending(pool: &PgPool) -> sqlx::Result<u64> {
    let mut chained = 0u64;
    loop {
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(AUDIT_LOCK)
            .execute(&mut *tx)
            .await?;
        let pending: Vec<PendingRow> = sqlx::query_as(
            "SELECT id, at, request_id, actor_key_id, tenant_id, action, target, details
             FROM audit_pending ORDER BY id LIMIT 500",
        )
        .fetch_all(&mut *tx)
        .await?;
        if pending.is_empty() {
            tx.rollback().await?;
            return Ok(chained);
        }
        let last: Option<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?;
        let (mut seq, mut prev) = last.unwrap_or((0, vec![0u8; 32]));
        let mut columns = ChainColumns::default();
        for (id, at, request_id, actor_key_id, tenant_id, action, target, details) in pending {
            seq += 1;
            let hash = row_hash(
                &prev,
                &Row {
                    seq,
                    at,
                    request_id: &request_id,
                    actor_key_id,
                    tenant_id,
                    action: &action,
                    target: &target,
                    details: &details,
                },
            );
            columns.ids.push(id);
            columns.seqs.push(seq);
            columns.ats.push(at);
            columns.request_ids.push(request_id);
            columns.actors.push(actor_key_id);
            columns.tenants.push(tenant_id);
            columns.actions.push(action);
            columns.targets.push(target);
            columns.details.push(details);
            columns
                .prev_hashes
                .push(std::mem::replace(&mut prev, hash.clone()));
            columns.hashes.push(hash);
        }
        sqlx::query(
            "INSERT INTO audit_events
               (seq, at, request_id, actor_key_id, tenant_id, action, target, details, prev_hash, hash)
             SELECT * FROM UNNEST($1::bigint[], $2::timestamptz[], $3::text[], $4::uuid[],
                 $5::uuid[], $6::text[], $7::text[], $8::text[], $9::bytea[], $10::bytea[])",
        )
        .bind(&columns.seqs)
        .bind(&columns.ats)
        .bind(&columns.request_ids)
        .bind(&columns.actors)
        .bind(&columns.tenants)
        .bind(&columns.actions)
        .bind(&columns.targets)
        .bind(&columns.details)
        .bind(&columns.prev_hashes)
        .bind(&columns.hashes)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM audit_pending WHERE id = ANY($1)")
            .bind(&columns.ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        chained += columns.ids.len() as u64;
    }
}

/// One batch of chained rows, column by column, for a single multi-row insert.
#[derive(Default)]
struct ChainColumns {
    ids: Vec<i64>,
    seqs: Vec<i64>,
    ats: Vec<DateTime<Utc>>,
    request_ids: Vec<String>,
    actors: Vec<Option<Uuid>>,
    tenants: Vec<Option<Uuid>>,
    actions: Vec<String>,
    targets: Vec<String>,
    details: Vec<String>,
    prev_hashes: Vec<Vec<u8>>,
    hashes: Vec<Vec<u8>>,
}

/// Runs [`chain_pending`] every `every` until the task is dropped.
pub async fn chain_forever(pool: PgPool, every: std::time::Duration) {
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = chain_pending(&pool).await {
            tracing::warn!("chaining audit events failed: {e}");
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Verification {
    pub rows: u64,
    /// The first row that does not check out, and why.
    pub first_broken: Option<BrokenRow>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BrokenRow {
    pub seq: i64,
    pub reason: String,
}

type StoredRow = (
    i64,
    DateTime<Utc>,
    String,
    Option<Uuid>,
    Option<Uuid>,
    String,
    String,
    String,
    Vec<u8>,
    Vec<u8>,
);

/// Chains what is pending, then walks the whole chain in order, a page at a time.
pub async fn verify(pool: &PgPool) -> sqlx::Result<Verification> {
    chain_pending(pool).await?;
    let mut expected_seq = 1i64;
    let mut prev = vec![0u8; 32];
    let mut rows = 0u64;
    loop {
        let page: Vec<StoredRow> = sqlx::query_as(
            "SELECT seq, at, request_id, actor_key_id, tenant_id, action, target, details,
                    prev_hash, hash
             FROM audit_events WHERE seq >= $1 ORDER BY seq LIMIT 1000",
        )
        .bind(expected_seq)
        .fetch_all(pool)
        .await?;
        if page.is_empty() {
            break;
        }
        for (seq, at, request_id, actor, tenant, action, target, details, prev_hash, hash) in page {
            let broken = |reason: String| {
                Ok(Verification {
                    rows,
                    first_broken: Some(BrokenRow { seq, reason }),
                })
            };
            if seq != expected_seq {
                return broken(format!("row {expected_seq} is missing"));
            }
            if prev_hash != prev {
                return broken("prev_hash does not match the previous row's hash".into());
            }
            let row = Row {
                seq,
                at,
                request_id: &request_id,
                actor_key_id: actor,
                tenant_id: tenant,
                action: &action,
                target: &target,
                details: &details,
            };
            if row_hash(&prev, &row) != hash {
                return broken("the row's contents do not match its hash".into());
            }
            prev = hash;
            expected_seq += 1;
            rows += 1;
        }
    }
    Ok(Verification {
        rows,
        first_broken: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(details: &str) -> Row<'_> {
        Row {
            seq: 7,
            at: DateTime::from_timestamp(1_800_000_000, 123_000).unwrap(),
            request_id: "req",
            actor_key_id: None,
            tenant_id: None,
            action: "job.create",
            target: "job:1",
            details,
        }
    }

    #[test]
    fn every_field_and_the_previous_hash_count() {
        let base = row_hash(&[0; 32], &row("{}"));
        assert_ne!(base, row_hash(&[1; 32], &row("{}")));
        assert_ne!(base, row_hash(&[0; 32], &row("{ }")));
        let mut moved = row("{}");
        moved.action = "job.creat";
        moved.target = "ejob:1";
        assert_ne!(base, row_hash(&[0; 32], &moved));
    }
}
