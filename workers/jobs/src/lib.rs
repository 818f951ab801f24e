//! Workers of the voxproof platform: segment renderers and assemblers fed by the Redis
//! queues, with a heartbeat that renews their Postgres leases and a sweeper that re-queues
//! what Redis lost or a dead worker held.

mod assemble;
mod blob;
mod render;
mod slots;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use apalis::layers::catch_panic::CatchPanicLayer;
use apalis::layers::limit::ConcurrencyLimitLayer;
use apalis::prelude::*;
use sqlx::PgPool;
use tokio::sync::{watch, Mutex};
use voxproof_scheduler::jobs;
use voxproof_scheduler::model::JobRow;
use voxproof_scheduler::queue::{Queue, Task};
use voxproof_scheduler::Config;
use voxproof_storage::Storage;
use voxproof_synth::{SentenceEngine, SynthSettings};
use voxproof_voice::ExecutionProvider;

pub use assemble::audio_content_type;
pub use slots::{Slot, SlotThreads, Slots};

/// How a worker process runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Segments rendered at once (one model session each).
    pub concurrency: usize,
    pub provider: ExecutionProvider,
}

/// What every task of a worker process shares.
pub struct Shared {
    pub config: Config,
    pub pool: PgPool,
    pub queue: Queue,
    pub storage: Arc<dyn Storage>,
    pub slots: Slots,
    /// Where each slot's session runs.
    pub slot_threads: SlotThreads,
    /// The watermark key and signer every assembled file is marked and signed with.
    pub provenance: Arc<voxproof_provenance::Provenance>,
    /// This process's name in leases and queue registrations.
    pub name: String,
    /// Job progress from Postgres: an assembly waits on it for its next segment.
    pub events: voxproof_scheduler::events::JobEvents,
    options: WorkerOptions,
    engines: Mutex<HashMap<String, Arc<SentenceEngine>>>,
    /// Assemblies follow their job's segments for as long as the job renders, so they run
    /// beside the queue's handlers (holding neither a queue permit nor a model slot).
    assemblies: std::sync::Mutex<tokio::task::JoinSet<()>>,
    /// Turns true when the process is asked to stop.
    shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The job's voice, loaded once per process with one session per slot.
    async fn engine(&self, job: &JobRow) -> anyhow::Result<Arc<SentenceEngine>> {
        let mut engines = self.engines.lock().await;
        if let Some(engine) = engines.get(&job.voice) {
            return Ok(engine.clone());
        }
        let voice = voxproof_voice::Voice::find(&job.voice)?;
        let digest = voxproof_voice::model_sha256_cached(&voice.model_path)?;
        anyhow::ensure!(
            digest == job.model_sha256,
            "voice {} on this worker (model {}) is not the one the job was planned for ({})",
            job.voice,
            &digest[..12],
            &job.model_sha256[..12.min(job.model_sha256.len())]
        );
        let settings = SynthSettings {
            sessions: self.options.concurrency,
            provider: self.options.provider,
            ..SynthSettings::default()
        };
        let engine =
            tokio::task::spawn_blocking(move || SentenceEngine::load(voice, &settings)).await??;
        let engine = Arc::new(engine);
        engines.insert(job.voice.clone(), engine.clone());
        Ok(engine)
    }
}

/// Where this machine's provenance material comes from: the configuration, with development
/// material under `<cache>/provenance` where it names none.
pub fn provenance_settings(config: &Config) -> voxproof_provenance::ProvenanceSettings {
    config.provenance_settings(voxproof_voice::paths::cache_dir().join("provenance"))
}

/// Loads the watermark key and signing credentials; development material is named loudly,
/// since every worker of a deployment must share the real ones.
pub async fn load_provenance(config: &Config) -> anyhow::Result<voxproof_provenance::Provenance> {
    let settings = provenance_settings(config);
    let provenance = tokio::task::spawn_blocking(move || settings.load())
        .await?
        .map_err(|e| anyhow::anyhow!("provenance: {e}"))?;
    if provenance.development_keys || provenance.development_watermark_key {
        tracing::warn!(
            "using development provenance material from this machine's cache; set \
             VOXPROOF_WATERMARK_KEY and VOXPROOF_SIGNING_KEYS (voxproof keys init-ca) so that \
             every process of the deployment marks and signs alike"
        );
    }
    Ok(provenance)
}

/// Records this host's voices in Postgres, so the API can list what the deployment renders.
pub async fn register_local_voices(pool: &sqlx::PgPool) -> anyhow::Result<usize> {
    let records = tokio::task::spawn_blocking(|| {
        voxproof_voice::local_voices()
            .into_iter()
            .filter_map(|voice| {
                let summary = voxproof_voice::VoiceSummary::of(&voice);
                // A voice whose model cannot be read is simply not offered.
                let digest = voxproof_voice::model_sha256_cached(&voice.model_path).ok()?;
                let mut speakers: Vec<(i64, String)> = voice
                    .config
                    .speaker_id_map
                    .iter()
                    .map(|(name, id)| (*id, name.clone()))
                    .collect();
                speakers.sort();
                Some(voxproof_scheduler::voices::VoiceRecord {
                    name: summary.name,
                    language: summary.language.unwrap_or_default(),
                    quality: summary.quality,
                    sample_rate: i32::try_from(summary.sample_rate).ok()?,
                    speakers: sqlx::types::Json(speakers.into_iter().map(|(_, n)| n).collect()),
                    model_sha256: digest,
                })
            })
            .collect::<Vec<_>>()
    })
    .await?;
    voxproof_scheduler::voices::register(pool, &records).await?;
    Ok(records.len())
}

/// The object storage `config` names (API and workers open it the same way).
pub async fn open_storage(config: &Config) -> anyhow::Result<Arc<dyn Storage>> {
    Ok(voxproof_storage::open(
        &config.storage,
        config.s3_endpoint.as_deref(),
        &config.s3_region,
    )
    .await?)
}

/// How often an idle lane asks Redis for work. A freed model session waits for the next
/// poll, so on a long book every millisecond here is paid once per segment and slot; 50 ms
/// keeps that under 2% of a segment's render time at a cost of a few Redis calls a second.
const QUEUE_POLL: Duration = Duration::from_millis(50);

/// Segments a lane claims beyond its model sessions. The extra one waits in this process
/// for the next free session, so a session that finishes starts its next segment at once
/// instead of idling through the upload, the completion, the next poll and the next claim
/// (tens of milliseconds per segment). One is enough to hide that, and few enough that
/// other processes are not kept from work: it is always the job's lowest unclaimed segment.
/// The cost: at the very end of a job, that last claim can wait for a busy session here
/// while another process has nothing left to take (at most one segment's render time).
const CLAIMS_AHEAD: usize = 1;

/// A name unique to this process: apalis refuses a second live worker under one name.
pub fn process_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{host}-{}-{millis}", std::process::id())
}

async fn handle(task: Task, shared: Data<Arc<Shared>>) -> Result<(), BoxDynError> {
    let outcome = match task {
        // The index only names the message (see `jobs::claim_segment`).
        Task::Segment { job_id, .. } => render::segment(&shared, job_id).await,
        Task::Assemble { job_id } => assemble::start(&shared, job_id).await,
    };
    // Never a plain error: Redis would retry on its own schedule and ignore our cap. What
    // failed is in Postgres; the sweeper brings the work back.
    if let Err(e) = outcome {
        tracing::error!("task failed before its outcome was recorded: {e:#}");
    }
    Ok(())
}

/// Runs a worker until `shutdown` turns true: in-flight tasks finish (within the grace
/// period), nothing new is fetched.
pub async fn run(
    config: Config,
    options: WorkerOptions,
    provenance: Arc<voxproof_provenance::Provenance>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let provider = options.provider;
    tokio::task::spawn_blocking(move || {
        voxproof_voice::check_provider(&voxproof_voice::paths::ort_library(), provider)
    })
    .await??;
    tracing::info!(?provider, "ONNX Runtime ready");
    let pool = voxproof_scheduler::db::connect(&config.database_url, 8).await?;
    let queue = Queue::connect(&config.redis_url, &config.queue_namespace).await?;
    let storage = open_storage(&config).await?;
    let name = process_name();
    let events = voxproof_scheduler::events::JobEvents::listen(&pool);
    let shared = Arc::new(Shared {
        slots: Slots::new(options.concurrency),
        slot_threads: SlotThreads::new(options.concurrency)?,
        provenance,
        config,
        pool,
        queue,
        storage,
        name,
        events,
        options,
        engines: Mutex::new(HashMap::new()),
        assemblies: std::sync::Mutex::new(tokio::task::JoinSet::new()),
        shutdown: shutdown.clone(),
    });
    tracing::info!(worker = %shared.name, concurrency = shared.options.concurrency, "worker started");
    match register_local_voices(&shared.pool).await {
        Ok(count) => tracing::info!(count, "voices registered"),
        Err(e) => tracing::warn!("could not register this worker's voices: {e}"),
    }
    tokio::task::spawn_blocking(assemble::sweep_stale_scratch).await?;

    let heartbeat = tokio::spawn(heartbeat(shared.clone()));
    let sweeper = tokio::spawn(sweep_forever(shared.clone()));
    let chainer = tokio::spawn(voxproof_scheduler::audit::chain_forever(
        shared.pool.clone(),
        Duration::from_millis(250),
    ));

    // apalis workers stop for good on some Redis errors (a FLUSHALL unregisters them):
    // the monitor is then rebuilt under new names until shutdown.
    let mut generation = 0usize;
    while !*shutdown.borrow() {
        generation += 1;
        let (died_tx, mut died_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let handlers = shared.options.concurrency + CLAIMS_AHEAD;
        let make = |store: voxproof_scheduler::queue::Store, lane: &'static str| {
            let name = format!("{}-{lane}-{generation}", shared.name);
            let shared = shared.clone();
            move |_: usize| {
                WorkerBuilder::new(name.as_str())
                    .backend(store.clone().poll_with_interval(QUEUE_POLL))
                    .data(shared.clone())
                    .layer(ConcurrencyLimitLayer::new(handlers))
                    .parallelize(tokio::spawn)
                    .layer(CatchPanicLayer::new())
                    .build(handle)
            }
        };
        let monitor = Monitor::new()
            .should_restart(move |ctx, err| {
                tracing::warn!(worker = ctx.name(), "queue worker stopped: {err}");
                let _ = died_tx.send(ctx.name().to_owned());
                false
            })
            .shutdown_timeout(Duration::from_secs(110))
            .register(make(shared.queue.interactive.clone(), "interactive"))
            .register(make(shared.queue.bulk.clone(), "bulk"));
        let mut stop = shutdown.clone();
        let signal = async move {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {}
                _ = died_rx.recv() => {}
            }
            Ok(())
        };
        if let Err(e) = monitor.run_with_signal(signal).await {
            tracing::warn!("queue monitor stopped: {e}");
        }
        if !*shutdown.borrow() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = voxproof_scheduler::until_stopping(&mut shutdown) => {}
            }
        }
    }
    // Assemblies in hand hand themselves back (or finish writing) when they see the
    // shutdown; the heartbeat keeps their leases until they are done.
    let assemblies = std::mem::take(&mut *shared.assemblies.lock().expect("assembly set"));
    if tokio::time::timeout(Duration::from_secs(110), assemblies.join_all())
        .await
        .is_err()
    {
        tracing::warn!("assemblies did not stop in time; their leases will run out");
    }
    heartbeat.abort();
    sweeper.abort();
    chainer.abort();
    tracing::info!(worker = %shared.name, "worker stopped");
    Ok(())
}

/// Renews this process's leases well before they run out.
async fn heartbeat(shared: Arc<Shared>) {
    let lease = shared.config.worker.lease_seconds;
    let every = Duration::from_secs((lease / 3).max(1) as u64);
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = jobs::renew_leases(&shared.pool, &shared.name, lease).await {
            tracing::warn!("lease renewal failed: {e}");
        }
    }
}

async fn sweep_forever(shared: Arc<Shared>) {
    let every = Duration::from_secs(shared.config.worker.sweep_seconds.max(1));
    let retention = Duration::from_secs(shared.config.worker.queue_retention_seconds);
    for round in 1u64.. {
        tokio::time::sleep(every).await;
        if let Err(e) = sweep(&shared.pool, &shared.queue, every.as_secs_f64() * 3.0).await {
            tracing::warn!("sweep failed: {e:#}");
        }
        // Finished tasks are only history (Postgres has the outcome): every tenth sweep
        // drops those past the retention, so Redis does not grow with every task ever run.
        if round % 10 == 0 {
            match shared.queue.prune_finished(retention).await {
                Ok(0) => {}
                Ok(removed) => tracing::debug!(removed, "pruned finished queue tasks"),
                Err(e) => tracing::warn!("queue pruning failed: {e:#}"),
            }
            match jobs::reconcile_open_jobs(&shared.pool).await {
                Ok(0) => {}
                Ok(fixed) => tracing::warn!(fixed, "corrected tenants' open-job counts"),
                Err(e) => tracing::warn!("open-job count check failed: {e}"),
            }
        }
    }
}

/// Takes back segments whose worker died, and (re-)queues everything Postgres says is due
/// but was not queued within `stale_seconds`. Re-pushing a message Redis still holds is a
/// no-op (deterministic ids), so this is safe to run from every worker at once.
pub async fn sweep(pool: &PgPool, queue: &Queue, stale_seconds: f64) -> anyhow::Result<usize> {
    let reclaimed = jobs::reclaim_expired(pool).await?;
    if reclaimed > 0 {
        tracing::info!(
            reclaimed,
            "took back segments from workers that stopped renewing"
        );
    }
    let due = jobs::due(pool, stale_seconds, 2000).await?;
    let mut by_job: HashMap<uuid::Uuid, Vec<i32>> = HashMap::new();
    for item in &due {
        match item.index {
            Some(index) => {
                queue
                    .push(
                        item.priority,
                        Task::Segment {
                            job_id: item.job_id,
                            index,
                        },
                        item.generation,
                    )
                    .await?;
                by_job.entry(item.job_id).or_default().push(index);
            }
            None => {
                queue
                    .push(
                        item.priority,
                        Task::Assemble {
                            job_id: item.job_id,
                        },
                        item.generation,
                    )
                    .await?;
                jobs::mark_assembly_enqueued(pool, item.job_id).await?;
            }
        }
    }
    for (job_id, indexes) in by_job {
        jobs::mark_enqueued(pool, job_id, &indexes).await?;
    }
    Ok(due.len())
}
