//! The Redis side: two apalis queues (interactive before bulk) carrying "look at segment N
//! of job J" and "assemble job J" messages.
//!
//! apalis-redis facts this module designs around (each checked against the 1.0.0 sources
//! and a running Redis):
//! - Delivery is at least once; Postgres claims decide who works.
//! - Redis-side retries ignore our settings, so handlers never return a plain error: the
//!   outcome is recorded in Postgres and a retry is a fresh push.
//! - Task ids are deterministic (`seg:<job>:<index>:<claims>`): a push of an id still held in
//!   Redis is a no-op, so the sweeper can re-push whatever Postgres says is pending without
//!   creating duplicates, and a push after `FLUSHALL` enqueues again.
//! - Finished tasks stay in Redis forever (a `done`/`dead` set entry, the payload in the
//!   lane's `data` hash and a `meta:<id>` hash each): [`Queue::prune_finished`] removes
//!   them once they are older than the retention, since Postgres holds the outcome.
//! - Orphans of a dead worker come back after heartbeat × missed beats (5 s × 3 here, not
//!   the 300 s default); the Postgres lease reclaims them too.

use std::time::Duration;

use apalis::prelude::{TaskBuilder, TaskId, TaskSink};
use apalis_redis::{Config as ApalisConfig, ConnectionManager, RedisStorage};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::Priority;

/// What a message asks a worker to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Task {
    Segment { job_id: Uuid, index: i32 },
    Assemble { job_id: Uuid },
}

pub type Store = RedisStorage<Task, ConnectionManager>;

/// How often a lane's worker beats in Redis. Also the longest an idle lane can sit on new
/// work: measured, a lane whose poll timer went quiet (seen right after another process
/// had the CPU for a moment) fetched again only at its next heartbeat, which at 5 s made
/// a 1-sentence job take 3–4 s instead of 0.3 s now and then.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// Beats missed before a worker's tasks go back to the queue: 15 s, as with 5 s × 3.
pub const MISSED_HEARTBEATS: usize = 15;

fn config(queue: &str) -> ApalisConfig {
    ApalisConfig::default()
        .queue(queue)
        // One task per fetch: a fetched task waits in this process, so fetching more would
        // hold back work other processes could start.
        .batch_size(1)
        .heartbeat_interval(HEARTBEAT)
        .missed_heartbeats(MISSED_HEARTBEATS)
        .lock_tasks(true)
        // Storing the result is what acknowledges a task.
        .persist_results(true)
}

/// Both queues on one auto-reconnecting connection.
#[derive(Clone)]
pub struct Queue {
    pub interactive: Store,
    pub bulk: Store,
    connection: ConnectionManager,
    namespace: String,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Queue {
    pub async fn connect(redis_url: &str, namespace: &str) -> anyhow::Result<Self> {
        let connection = apalis_redis::connect(redis_url.to_string())
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot connect to Redis at {}: {e}",
                    crate::config::redact_url(redis_url)
                )
            })?;
        Ok(Self::with_connection(connection, namespace))
    }

    pub fn with_connection(connection: ConnectionManager, namespace: &str) -> Self {
        let interactive = RedisStorage::new(connection.clone())
            .with_config(config(&format!("{namespace}:interactive")));
        let bulk =
            RedisStorage::new(connection.clone()).with_config(config(&format!("{namespace}:bulk")));
        Self {
            interactive,
            bulk,
            connection,
            namespace: namespace.to_string(),
        }
    }

    pub fn store(&self, priority: Priority) -> Store {
        match priority {
            Priority::Interactive => self.interactive.clone(),
            Priority::Bulk => self.bulk.clone(),
        }
    }

    /// Pushes a task under its deterministic id (a no-op while Redis still holds that id).
    pub async fn push(
        &self,
        priority: Priority,
        task: Task,
        generation: i32,
    ) -> anyhow::Result<()> {
        let id = match &task {
            Task::Segment { job_id, index } => format!("seg:{job_id}:{index}:{generation}"),
            Task::Assemble { job_id } => format!("asm:{job_id}:{generation}"),
        };
        let mut store = self.store(priority);
        store
            .push_task(
                TaskBuilder::new(task)
                    .task_id(TaskId::from_string(id))
                    .build(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("queue push: {e}"))?;
        Ok(())
    }

    /// Removes tasks that finished more than `retention` ago from both lanes: their entry
    /// in the `done`/`dead` set, their payload and their metadata. Returns how many went.
    pub async fn prune_finished(&self, retention: Duration) -> anyhow::Result<usize> {
        let cutoff = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .saturating_sub(retention)
            .as_secs();
        let mut conn = self.connection.clone();
        let mut removed = 0;
        for lane in ["interactive", "bulk"] {
            let base = format!("{}:{lane}", self.namespace);
            for set in ["done", "dead"] {
                let set_key = format!("{base}:{set}");
                let mut cursor = 0u64;
                loop {
                    let (next, ids): (u64, Vec<String>) = redis::cmd("SSCAN")
                        .arg(&set_key)
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(500)
                        .query_async(&mut conn)
                        .await?;
                    if !ids.is_empty() {
                        let count: usize = prune_script()
                            .key(&set_key)
                            .key(format!("{base}:data"))
                            .arg(format!("{base}:meta:"))
                            .arg(cutoff)
                            .arg(&ids)
                            .invoke_async(&mut conn)
                            .await?;
                        removed += count;
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
        }
        Ok(removed)
    }

    /// Redis answers (readiness).
    pub async fn ping(&self) -> anyhow::Result<()> {
        let mut conn = self.connection.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }
}

/// Removes, atomically per task, the finished tasks among ARGV[3..] whose `done_at` (unix
/// seconds, written by apalis when a task ends) is before the cutoff ARGV[2].
fn prune_script() -> redis::Script {
    redis::Script::new(
        r"
        local removed = 0
        for i = 3, #ARGV do
            local id = ARGV[i]
            local meta = ARGV[1] .. id
            local finished = tonumber(redis.call('HGET', meta, 'done_at'))
            if finished ~= nil and finished < tonumber(ARGV[2]) then
                redis.call('SREM', KEYS[1], id)
                redis.call('HDEL', KEYS[2], id)
                redis.call('DEL', meta)
                removed = removed + 1
            end
        end
        return removed
        ",
    )
}
