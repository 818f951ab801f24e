//! Wiring of the platform commands: migrate, serve, worker, dev, keys, audit.

use std::sync::Arc;

use anyhow::Result;
use clap::Subcommand;
use tokio::sync::watch;
use voxproof_scheduler::{audit, db, keys, queue::Queue, Config};
use voxproof_voice::ExecutionProvider;

#[derive(clap::Args)]
pub struct WorkerArgs {
    /// Segments rendered at once (one model session each); default one per core.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Run the model on a CUDA GPU (needs onnxruntime-gpu's library in VOXPROOF_ORT_LIB).
    #[arg(long)]
    cuda: bool,
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create an API key (and its tenant, if new); the key is printed once.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long, value_parser = ["admin", "member"])]
        role: String,
        #[arg(long)]
        json: bool,
    },
    /// Create C2PA signing credentials: an Ed25519 root, an intermediate and a claim-signing
    /// certificate with their keys, in DIR. Give verifiers `root.pem`; point
    /// `VOXPROOF_SIGNING_KEYS` at DIR; keep `root.key` offline.
    InitCa {
        #[arg(long)]
        dir: std::path::PathBuf,
        /// Organization named in the certificates.
        #[arg(long, default_value = "voxproof")]
        organization: String,
    },
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Recompute the audit log's hash chain and name the first broken row.
    Verify {
        #[arg(long)]
        json: bool,
    },
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// A channel that turns true on SIGTERM or Ctrl-C.
fn shutdown_channel() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("cannot listen for SIGTERM: {e}");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down: finishing work in hand");
        let _ = tx.send(true);
    });
    rx
}

pub fn migrate() -> Result<()> {
    runtime()?.block_on(async {
        let config = Config::load()?;
        let pool = db::connect(&config.database_url, 2).await?;
        db::migrate(&pool).await?;
        println!("migrations applied");
        Ok(())
    })
}

/// The API's shared state, with this host's voices registered (requests need them from the
/// first one on). `chain_audit` starts the audit chainer; `voxproof dev` leaves it to its
/// worker half, which runs one anyway.
async fn api_state(
    config: &Config,
    provenance: Arc<voxproof_provenance::Provenance>,
    chain_audit: bool,
    stopping: watch::Receiver<bool>,
) -> Result<voxproof_api::AppState> {
    let pool = db::connect(&config.database_url, 32).await?;
    if config.migrate_on_start {
        db::migrate(&pool).await?;
    }
    let queue = Queue::connect(&config.redis_url, &config.queue_namespace).await?;
    let storage = voxproof_jobs::open_storage(config).await?;
    if chain_audit {
        // Audit events join the hash chain in the background (see `audit::chain_pending`).
        tokio::spawn(audit::chain_forever(
            pool.clone(),
            std::time::Duration::from_millis(250),
        ));
    }
    let voices = voxproof_jobs::register_local_voices(&pool).await?;
    tracing::info!(voices, "voices registered");
    Ok(voxproof_api::AppState {
        verifier: Arc::new(voxproof_api::Verifier::new(
            provenance,
            config.provenance.verify_per_minute,
        )),
        keys: keys::KeyCache::new(std::time::Duration::from_secs(5)),
        voices: Arc::new(voxproof_api::VoiceCache::new(
            std::time::Duration::from_secs(5),
        )),
        config: Arc::new(config.clone()),
        events: voxproof_scheduler::events::JobEvents::listen(&pool),
        stopping,
        pool,
        queue,
        storage,
    })
}

pub fn serve() -> Result<()> {
    runtime()?.block_on(async {
        let config = Config::load()?;
        tracing::info!(?config, "starting the API");
        let provenance = Arc::new(voxproof_jobs::load_provenance(&config).await?);
        let mut shutdown = shutdown_channel();
        let state = api_state(&config, provenance, true, shutdown.clone()).await?;
        voxproof_api::serve(state, async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await
    })
}

fn worker_options(args: &WorkerArgs) -> voxproof_jobs::WorkerOptions {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    voxproof_jobs::WorkerOptions {
        concurrency: args.concurrency.unwrap_or(cores).max(1),
        provider: if args.cuda {
            ExecutionProvider::Cuda { device_id: 0 }
        } else {
            ExecutionProvider::Cpu
        },
    }
}

pub fn worker(args: WorkerArgs) -> Result<()> {
    runtime()?.block_on(async {
        let config = Config::load()?;
        tracing::info!(?config, "starting a worker");
        let provenance = Arc::new(voxproof_jobs::load_provenance(&config).await?);
        voxproof_jobs::run(
            config,
            worker_options(&args),
            provenance,
            shutdown_channel(),
        )
        .await
    })
}

/// API and worker in one process, for a single machine.
pub fn dev(args: WorkerArgs) -> Result<()> {
    runtime()?.block_on(async {
        let mut config = Config::load()?;
        config.migrate_on_start = true;
        tracing::info!(?config, "starting API and worker in one process");
        // Loaded once for both halves (it may create development keys, and says so).
        let provenance = Arc::new(voxproof_jobs::load_provenance(&config).await?);
        let shutdown = shutdown_channel();
        let state = api_state(&config, provenance.clone(), false, shutdown.clone()).await?;
        let mut api_shutdown = shutdown.clone();
        let api = tokio::spawn(voxproof_api::serve(state, async move {
            let _ = api_shutdown.wait_for(|s| *s).await;
        }));
        let worker = voxproof_jobs::run(config, worker_options(&args), provenance, shutdown);
        let (api, worker) = tokio::join!(api, worker);
        api??;
        worker
    })
}

pub fn keys(command: KeysCommand) -> Result<()> {
    let (tenant, role, json) = match command {
        KeysCommand::Create { tenant, role, json } => (tenant, role, json),
        KeysCommand::InitCa { dir, organization } => {
            return crate::provenance::init_ca(&dir, &organization)
        }
    };
    runtime()?.block_on(async {
        let config = Config::load()?;
        let pool = db::connect(&config.database_url, 2).await?;
        let role: keys::Role = role.parse().map_err(anyhow::Error::msg)?;
        let key = keys::create(&pool, &tenant, role).await?;
        if json {
            println!("{}", serde_json::to_string(&key)?);
        } else {
            println!("{}", key.key);
            eprintln!(
                "key for tenant {} with role {}: shown once, store it now",
                key.tenant,
                role.as_str()
            );
        }
        Ok(())
    })
}

pub fn audit(command: AuditCommand) -> Result<()> {
    let AuditCommand::Verify { json } = command;
    runtime()?.block_on(async {
        let config = Config::load()?;
        let pool = db::connect(&config.database_url, 2).await?;
        let result = audit::verify(&pool).await?;
        if json {
            println!("{}", serde_json::to_string(&result)?);
        }
        match &result.first_broken {
            None => {
                if !json {
                    println!("audit chain intact: {} rows", result.rows);
                }
                Ok(())
            }
            Some(broken) => anyhow::bail!(
                "audit chain broken at row {}: {} ({} rows before it check out)",
                broken.seq,
                broken.reason,
                result.rows
            ),
        }
    })
}
