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

pub const HEARTBEAT: Duration = Duration::from_secs(5);
pub const MISSED_HEARTBEATS: usize = 3;

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

    /// Redis answers (readiness).
    pub async fn ping(&self) -> anyhow::Result<()> {
        let mut conn = self.connection.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }
}
