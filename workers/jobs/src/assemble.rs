//! Assembly: the job's segments in order through mastering and the encoder into the final
//! files in a scratch folder, then uploaded (multipart on S3) and recorded. One segment's
//! PCM is in memory at a time, whatever the book's length.
//!
//! An assembly starts with its job and follows the segments as they finish, so encoding
//! overlaps rendering and the job completes moments after its last segment instead of a
//! whole encode later. It runs beside the queue handlers: waiting for segments must not
//! hold a queue permit or a model slot that rendering needs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;
use voxproof_scheduler::events::Subscription;
use voxproof_scheduler::jobs::{self, AssemblyClaim, NewArtifact};
use voxproof_scheduler::model::JobRow;
use voxproof_synth::{OutputPaths, SynthSettings, Watermarking, Writer};
use voxproof_text::Item;

use crate::{blob, Shared};

/// Segments fetched per page from Postgres.
const PAGE: i64 = 64;

/// How long a waiting assembler goes without looking for the next finished segment when no
/// notification wakes it (one lost with its connection). Normally a segment's notification
/// wakes it at once.
const POLL: Duration = Duration::from_secs(1);

/// How often a waiting assembler checks that it still holds the job and the job is open.
const HOLD_CHECK: Duration = Duration::from_secs(2);

/// Why an assembly stopped before writing its files.
#[derive(Debug)]
enum Stopped {
    /// The job was cancelled or failed, or another worker took the assembly.
    NotOurs,
    /// This process is shutting down.
    Shutdown,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stopped::NotOurs => "the job is no longer this worker's to assemble",
            Stopped::Shutdown => "the worker is shutting down",
        })
    }
}

impl std::error::Error for Stopped {}

/// Claims the job's assembly and, if this worker got it, runs it in the background.
pub async fn start(shared: &Arc<Shared>, job_id: Uuid) -> anyhow::Result<()> {
    let settings = &shared.config.worker;
    let claim = jobs::claim_assembly(
        &shared.pool,
        job_id,
        &shared.name,
        settings.lease_seconds,
        settings.max_attempts,
    )
    .await?;
    let job = match claim {
        AssemblyClaim::Work(job) => job,
        AssemblyClaim::Skip => return Ok(()),
        AssemblyClaim::GaveUp => return Ok(()),
    };
    tracing::info!(%job_id, attempt = job.assembly_attempts + 1, "assembly claimed");
    let task_shared = shared.clone();
    shared
        .assemblies
        .lock()
        .expect("assembly set")
        .spawn(async move {
            if let Err(e) = run(&task_shared, &job).await {
                tracing::error!(%job_id, "assembly outcome not recorded (its lease will run out): {e:#}");
            }
        });
    Ok(())
}

async fn run(shared: &Shared, job: &JobRow) -> anyhow::Result<()> {
    let job_id = job.id;
    match assemble(shared, job).await {
        Ok((artifacts, seconds)) => {
            if !jobs::succeed(&shared.pool, job, &shared.name, &artifacts, seconds).await? {
                tracing::info!(%job_id, "assembly finished after the job changed state; result dropped");
            }
        }
        Err(e) => match e.downcast_ref::<Stopped>() {
            Some(Stopped::NotOurs) => tracing::info!(%job_id, "assembly stopped: {e}"),
            Some(Stopped::Shutdown) => {
                tracing::info!(%job_id, "assembly handed back: {e}");
                jobs::release_assembly(&shared.pool, job_id, &shared.name).await?;
            }
            None => {
                tracing::warn!(%job_id, "assembly failed: {e:#}");
                jobs::assembly_failed(&shared.pool, job_id, &shared.name, 5.0).await?;
            }
        },
    }
    Ok(())
}

/// Waits until segment `next` is done (returning the finished run from it), or the
/// assembly must stop.
async fn next_parts(
    shared: &Shared,
    job: &JobRow,
    next: i32,
    events: &mut Subscription,
) -> anyhow::Result<Vec<jobs::AssemblyPart>> {
    let mut shutdown = shared.shutdown.clone();
    let mut checked = tokio::time::Instant::now();
    loop {
        let parts = jobs::assembly_parts(&shared.pool, job.id, next, PAGE).await?;
        if !parts.is_empty() {
            return Ok(parts);
        }
        if *shutdown.borrow() {
            return Err(Stopped::Shutdown.into());
        }
        if checked.elapsed() >= HOLD_CHECK {
            if !jobs::assembly_held(&shared.pool, job.id, &shared.name).await? {
                return Err(Stopped::NotOurs.into());
            }
            checked = tokio::time::Instant::now();
        }
        tokio::select! {
            _ = events.segment_done(job.id, tokio::time::Instant::now() + POLL) => {}
            _ = voxproof_scheduler::until_stopping(&mut shutdown) => {}
        }
    }
}

/// Name prefix of assembly scratch folders, and the lock file that marks one in use.
const SCRATCH_PREFIX: &str = "voxproof-assembly-";
const SCRATCH_LOCK: &str = ".in-use";

/// An assembly's scratch folder, removed when dropped. It holds an exclusive lock on a file
/// inside for as long as it lives; the lock dies with the process, so a folder whose lock can
/// be taken was left by a worker that was killed (a crash or SIGKILL skips the removal) and
/// holds a partial book that nothing will read.
struct Scratch {
    // Fields drop in order: the folder goes before its lock is released.
    dir: tempfile::TempDir,
    _lock: std::fs::File,
}

impl Scratch {
    /// A new scratch folder under `parent`. The lock file is locked under a temporary name and
    /// only then given the name a sweeper looks for, so no sweeper can find it unlocked.
    fn create(parent: &Path) -> std::io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(SCRATCH_PREFIX)
            .tempdir_in(parent)?;
        let staging = dir.path().join(format!("{SCRATCH_LOCK}.new"));
        let lock = std::fs::File::create(&staging)?;
        lock.lock()?;
        std::fs::rename(&staging, dir.path().join(SCRATCH_LOCK))?;
        Ok(Self { dir, _lock: lock })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Removes the scratch folders under `parent` that no live process holds; returns how
    /// many. A folder being created right now has no lock file by that name yet and is left
    /// alone.
    fn sweep_stale(parent: &Path) -> usize {
        let Ok(entries) = std::fs::read_dir(parent) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name.to_string_lossy().starts_with(SCRATCH_PREFIX) {
                continue;
            }
            let dir = entry.path();
            let Ok(lock) = std::fs::File::open(dir.join(SCRATCH_LOCK)) else {
                continue;
            };
            // Held by a live assembly (this process's or another worker's): leave it.
            if lock.try_lock().is_err() {
                continue;
            }
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!("could not remove stale {}: {e}", dir.display()),
            }
        }
        removed
    }
}

/// Removes scratch folders that killed workers left in the temporary directory.
pub(crate) fn sweep_stale_scratch() {
    let removed = Scratch::sweep_stale(&std::env::temp_dir());
    if removed > 0 {
        tracing::info!(
            removed,
            "removed assembly scratch folders left by stopped workers"
        );
    }
}

/// How long signing an assembly's files may take.
const SIGNING_LIMIT: Duration = Duration::from_secs(120);

async fn assemble(shared: &Shared, job: &JobRow) -> anyhow::Result<(Vec<NewArtifact>, f64)> {
    let voice = voxproof_voice::Voice::find(&job.voice)?;
    let sample_rate = voice.sample_rate();
    let scratch = Scratch::create(&std::env::temp_dir())?;
    let options = &job.options.0;
    let ext = job.output_format.as_str();
    let outputs = OutputPaths {
        audio: scratch.path().join(format!("audio.{ext}")),
        subtitles: options
            .subtitles
            .then(|| scratch.path().join("subtitles.vtt")),
        marks: Some(scratch.path().join("marks.json")),
        normalized_text: None,
        chapters_dir: options.per_chapter.then(|| scratch.path().join("chapters")),
    };
    let format = voxproof_synth::check_outputs(&outputs)?;
    let record = voxproof_scheduler::provenance::record_for_job(
        &shared.pool,
        job,
        &shared.provenance.watermark_key,
    )
    .await?;
    let synth_settings = SynthSettings {
        watermark: Some(Watermarking {
            key: shared.provenance.watermark_key.clone().into(),
            payload: record.watermark,
        }),
        ..SynthSettings::default()
    };

    // The writer is blocking work (mastering, encoding): it runs on its own thread and is
    // fed one segment at a time through a small channel.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Vec<Item>, Vec<Vec<f32>>)>(2);
    let writer_outputs = outputs.clone();
    let writer = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let mut writer = Writer::open(sample_rate, format, &synth_settings, &writer_outputs)?;
        while let Some((items, pcm)) = rx.blocking_recv() {
            for (item, pcm) in items.iter().zip(pcm) {
                writer.item(item, pcm)?;
            }
        }
        Ok(writer.finish("")?)
    });

    // Subscribed before the first look, so that no segment finished after it goes unheard.
    let mut events = shared.events.subscribe();
    let feed = async {
        let mut next = 0;
        while next < job.segments_total {
            let parts = next_parts(shared, job, next, &mut events).await?;
            for part in parts {
                anyhow::ensure!(part.index == next, "segment {next} is missing");
                let bytes = shared.storage.get_bytes(&part.content_key).await?;
                tracing::debug!(job_id = %job.id, index = next, bytes = bytes.len(), "segment fetched");
                let (rate, pcm) = blob::decode(&bytes)?;
                anyhow::ensure!(
                    rate == sample_rate && pcm.len() == part.items.len(),
                    "segment {next} does not match its items"
                );
                if tx.send((part.items, pcm)).await.is_err() {
                    return Ok(()); // the writer stopped: its error is reported below
                }
                next += 1;
            }
        }
        anyhow::ensure!(
            next == job.segments_total,
            "segments missing: {next} of {}",
            job.segments_total
        );
        Ok::<_, anyhow::Error>(())
    };
    let fed = feed.await;
    drop(tx);
    let written = writer.await??;
    fed?;

    // Sign every audio file (the main file and the chapter files) before anything is uploaded.
    let described: Vec<(PathBuf, Described)> = written
        .files
        .iter()
        .map(|path| (path.clone(), describe(path, &outputs, ext)))
        .collect();
    let audio_files: Vec<PathBuf> = described
        .iter()
        .filter(|(_, d)| d.kind.ends_with("audio"))
        .map(|(path, _)| path.clone())
        .collect();
    tracing::info!(job_id = %job.id, files = written.files.len(), "assembly written; signing");
    let provenance = shared.provenance.clone();
    let signing = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<PathBuf>> {
        let mut sidecars = Vec::new();
        for path in &audio_files {
            voxproof_provenance::sign_file(&provenance.signer, path, &record)?;
            let sidecar = voxproof_provenance::sidecar_path(path);
            if sidecar.is_file() {
                sidecars.push(sidecar);
            }
        }
        Ok(sidecars)
    });
    // Signing takes milliseconds; one that does not end is reported rather than waited on.
    let sidecars = tokio::time::timeout(SIGNING_LIMIT, signing)
        .await
        .map_err(|_| anyhow::anyhow!("signing did not finish in {SIGNING_LIMIT:?}"))???;
    tracing::info!(job_id = %job.id, "assembly signed; uploading");

    let sidecars = sidecars.into_iter().map(|path| {
        let d = describe(&path, &outputs, ext);
        (path, d)
    });
    let mut artifacts = Vec::new();
    for (
        path,
        Described {
            kind,
            content_type,
            name,
        },
    ) in described.into_iter().chain(sidecars)
    {
        let key = format!("jobs/{}/{}", job.id, name);
        let bytes = shared.storage.put_file(&key, &path, content_type).await?;
        tracing::debug!(job_id = %job.id, %key, bytes, "uploaded");
        artifacts.push(NewArtifact {
            name,
            kind,
            storage_key: key,
            bytes: bytes as i64,
            content_type,
        });
    }
    Ok((artifacts, written.audio_seconds))
}

/// What a file the writer produced is, as an artifact.
struct Described {
    kind: &'static str,
    content_type: &'static str,
    name: String,
}

/// Kind, content type and artifact name of a file the writer produced.
fn describe(path: &Path, outputs: &OutputPaths, ext: &str) -> Described {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let in_chapters = path.parent().is_some() && path.parent() == outputs.chapters_dir.as_deref();
    let (kind, content_type, name) = if path.extension().is_some_and(|e| e == "c2pa") {
        let name = if in_chapters {
            format!("chapters/{file_name}")
        } else {
            file_name
        };
        ("manifest", "application/c2pa", name)
    } else if Some(path) == outputs.subtitles.as_deref() {
        ("subtitles", "text/vtt", file_name)
    } else if Some(path) == outputs.marks.as_deref() {
        ("marks", "application/json", file_name)
    } else if path == outputs.audio {
        ("audio", audio_content_type(ext), file_name)
    } else {
        (
            "chapter_audio",
            audio_content_type(ext),
            format!("chapters/{file_name}"),
        )
    };
    Described {
        kind,
        content_type,
        name,
    }
}

pub fn audio_content_type(ext: &str) -> &'static str {
    match ext {
        "mp3" => "audio/mpeg",
        "opus" => "audio/ogg",
        "flac" => "audio/flac",
        "wav" => "audio/wav",
        "m4b" => "audio/mp4",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_scratch_folders_no_process_holds_are_swept() {
        let parent = tempfile::tempdir().unwrap();
        let live = Scratch::create(parent.path()).unwrap();
        std::fs::write(live.path().join("audio.wav"), b"partial").unwrap();
        // What a killed worker leaves: the folder and its lock file, with no lock held.
        let Scratch { dir: stale, _lock } = Scratch::create(parent.path()).unwrap();
        std::fs::write(stale.path().join("audio.wav"), b"partial").unwrap();
        drop(_lock);
        let stale = stale.keep();
        // Not ours, or not yet locked: kept.
        let other = parent.path().join("voxproof-uploads");
        std::fs::create_dir(&other).unwrap();
        let unlocked = parent.path().join(format!("{SCRATCH_PREFIX}starting"));
        std::fs::create_dir(&unlocked).unwrap();

        assert_eq!(Scratch::sweep_stale(parent.path()), 1);
        assert!(!stale.exists());
        assert!(live.path().join("audio.wav").exists());
        assert!(other.exists() && unlocked.exists());
        assert_eq!(Scratch::sweep_stale(parent.path()), 0);
    }
}
