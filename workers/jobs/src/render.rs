//! Segment rendering: claim in Postgres, reuse or render the content-addressed PCM, store
//! it, mark the segment done, and queue the assembly when it was the last one.

use bytes::Bytes;
use futures_util::StreamExt;
use uuid::Uuid;
use voxproof_scheduler::jobs::{self, SegmentClaim, SegmentWork};
use voxproof_scheduler::model::JobRow;
use voxproof_scheduler::queue::Task;
use voxproof_synth::{PreparedSentence, SentenceEngine, Speaking};
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
    if let Some(samples) = stored_samples(shared, work).await {
        return Ok(samples);
    }
    let engine = shared.engine(&work.job).await?;
    let speaking = speaking(&work.job, &engine)?;
    // Phonemized before a model slot is taken: with the segment this process claims ahead,
    // espeak-ng works while the sessions render, and a freed session starts at once.
    let items = work.items.clone();
    let prepared = {
        let engine = engine.clone();
        tokio::task::spawn_blocking(move || prepare_items(&engine, &items, &speaking)).await??
    };
    let slot = shared.slots.acquire(work.job.priority()).await;
    let index = slot.index;
    let rendered = shared
        .slot_threads
        .run(index, move || {
            let rendered = engine.render(slot.index, &prepared);
            let sample_rate = engine.voice().sample_rate();
            drop(slot);
            rendered.map(|pcm| (sample_rate, pcm))
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

/// The samples of a finished segment stored under the work's content key, when there is
/// one to reuse: its header must list the work's items and account for the object's size.
/// Only the header is fetched (the assembly reads the samples).
async fn stored_samples(shared: &Shared, work: &SegmentWork) -> Option<i64> {
    let (size, mut stream) = shared.storage.get_stream(&work.content_key).await.ok()?;
    let mut prefix = Vec::new();
    while let Some(chunk) = stream.next().await {
        prefix.extend_from_slice(&chunk.ok()?);
        if let Some(header) = blob::header(&prefix).ok()? {
            let reusable =
                header.lengths.len() == work.items.len() && header.stored_bytes() == size;
            return reusable.then(|| header.samples() as i64);
        }
        if prefix.len() > blob::header_bytes(work.items.len()) {
            return None; // a header this long cannot list the work's items
        }
    }
    None
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

/// The model input of each item: `None` for items with no speech.
fn prepare_items(
    engine: &SentenceEngine,
    items: &[Item],
    speaking: &Speaking,
) -> anyhow::Result<Vec<Option<PreparedSentence>>> {
    items
        .iter()
        .map(|item| match item {
            Item::Sentence(sentence) => Ok(Some(engine.prepare(sentence, speaking)?)),
            _ => Ok(None),
        })
        .collect()
}
