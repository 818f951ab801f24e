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
