//! Segment rendering: claim in Postgres, reuse or render the content-addressed PCM, store
//! it, mark the segment done, and queue the assembly when it was the last one.

use bytes::Bytes;
use uuid::Uuid;
use voxproof_scheduler::jobs::{self, SegmentClaim, SegmentWork};
use voxproof_scheduler::model::JobRow;
use voxproof_scheduler::queue::Task;
use voxproof_synth::{SentenceEngine, Speaking};
use voxproof_text::Item;

use crate::{blob, Shared};

/// Handles a segment message: renders the job's lowest claimable segment (see
/// [`jobs::claim_segment`]), usually the one the message names.
pub async fn segment(shared: &Shared, job_id: Uuid) -> anyhow::Result<()> {
    let settings = &shared.config.worker;
    let claim = jobs::claim_segment(
        &shared.pool,
        job_id,
        &shared.name,
        settings.lease_seconds,
        settings.max_attempts,
    )
    .await?;
    let work = match claim {
        SegmentClaim::Work(work) => work,
        SegmentClaim::Skip => return Ok(()),
        SegmentClaim::GaveUp => {
            tracing::warn!(%job_id, "segment attempts exhausted: job failed");
            return Ok(());
        }
    };
    let index = work.index;
    let outcome = render_and_store(shared, &work).await;
    match outcome {
        Ok(samples) => {
            tracing::debug!(%job_id, index, samples, "segment stored");
            let last =
                jobs::complete_segment(&shared.pool, job_id, index, &shared.name, samples).await?;
            if last {
                shared
                    .queue
                    .push(work.job.priority(), Task::Assemble { job_id }, 0)
                    .await
                    .unwrap_or_else(|e| tracing::warn!(%job_id, "assembly push failed (the sweeper will retry): {e:#}"));
            }
        }
        Err(e) => {
            let message = format!("{e:#}");
            tracing::warn!(%job_id, index, attempt = work.attempt, "segment failed: {message}");
            // Exponential backoff: 2, 4, 8 … seconds, at most a minute.
            let retry_in = f64::from(2u32.pow(work.attempt.clamp(1, 5) as u32)).min(60.0);
            jobs::segment_attempt_failed(
                &shared.pool,
                job_id,
                index,
                &shared.name,
                &message,
                retry_in,
            )
            .await?;
        }
    }
    Ok(())
}

/// Reuses or renders the segment and stores it. Only the rendering holds a model slot: the
/// reuse lookup and the upload happen outside it, so a session never waits on storage.
async fn render_and_store(shared: &Shared, work: &SegmentWork) -> anyhow::Result<i64> {
    // A finished segment with the same content (a retry, a resubmitted book) is reused.
    if let Ok(bytes) = shared.storage.get_bytes(&work.content_key).await {
        if let Ok((_, items)) = blob::decode(&bytes) {
            if items.len() == work.items.len() {
                return Ok(items.iter().map(|i| i.len() as i64).sum());
            }
        }
    }
    let engine = shared.engine(&work.job).await?;
    let speaking = speaking(&work.job, &engine)?;
    let items = work.items.clone();
    let slot = shared.slots.acquire(work.job.priority()).await;
    let rendered = tokio::task::spawn_blocking(move || {
        let rendered = render_items(&engine, slot.index, &items, &speaking);
        drop(slot);
        rendered
    })
    .await??;
    let samples = rendered.1.iter().map(|i| i.len() as i64).sum();
    let bytes = blob::encode(rendered.0, &rendered.1);
    shared
        .storage
        .put_bytes(
            &work.content_key,
            Bytes::from(bytes),
            "application/octet-stream",
        )
        .await?;
    Ok(samples)
}

pub fn speaking(job: &JobRow, engine: &SentenceEngine) -> anyhow::Result<Speaking> {
    let options = &job.options.0;
    Ok(Speaking {
        speaker_id: engine.voice().speaker_id(options.speaker.as_deref())?,
        rate: options.rate.unwrap_or(1.0),
        noise_scale: None,
        noise_w: None,
    })
}

fn render_items(
    engine: &SentenceEngine,
    slot: usize,
    items: &[Item],
    speaking: &Speaking,
) -> anyhow::Result<(u32, Vec<Vec<f32>>)> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        out.push(match item {
            Item::Sentence(sentence) => engine.render(slot, sentence, speaking)?,
            _ => Vec::new(),
        });
    }
    Ok((engine.voice().sample_rate(), out))
}
