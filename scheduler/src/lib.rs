//! Job model and state machine, Postgres repository and Redis queue of the voxproof
//! platform: fan-out of a long document into segments, fan-in, retries, the sweeper that
//! re-queues what Redis lost, configuration, API keys and the audit log.
//!
//! Postgres is the source of truth. Redis (through apalis) only carries "look at segment
//! N of job J" messages: every message may be lost or delivered twice, and every handler
//! re-reads and claims its work in Postgres.

pub mod audit;
pub mod config;
pub mod db;
pub mod events;
pub mod jobs;
pub mod keys;
pub mod model;
pub mod plan;
pub mod provenance;
pub mod queue;
pub mod voices;

pub use config::Config;

/// Resolves once `stopping` is true. Never resolves if the sender is gone without saying so
/// (a process that could not listen for signals): a loop that also waits on this then
/// waits on its other futures instead of spinning.
pub async fn until_stopping(stopping: &mut tokio::sync::watch::Receiver<bool>) {
    if stopping.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[tokio::test]
    async fn stopping_resolves_on_true_and_never_for_a_silent_sender() {
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        drop(tx);
        let waited =
            tokio::time::timeout(Duration::from_millis(50), super::until_stopping(&mut rx)).await;
        assert!(waited.is_err(), "a dropped sender is not a stop");

        let (tx, mut rx) = tokio::sync::watch::channel(false);
        tx.send(true).unwrap();
        drop(tx);
        tokio::time::timeout(Duration::from_millis(50), super::until_stopping(&mut rx))
            .await
            .expect("a stop that was sent is seen, even after its sender is gone");
    }
}
