//! Job progress as Postgres notifications (triggers of migration 0006): a segment is done, a
//! job has finished. One connection per process listens and fans them out, so whatever waits
//! on a job (an assembler following its segments, an API request held with `Prefer: wait`)
//! wakes the moment the row changes instead of asking Postgres again and again.
//!
//! Notifications are a hint, never the truth: one sent while the listening connection was
//! down is lost, and a waiter that falls behind misses some. Both show up as
//! [`Event::Resync`], and waiters re-read Postgres then (and now and then anyway).

use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio::time::Instant;
use uuid::Uuid;

/// Channel of "a segment of job <payload> is done".
pub const SEGMENT_DONE: &str = "voxproof_segment_done";
/// Channel of "job <payload> succeeded, failed or was cancelled".
pub const JOB_FINISHED: &str = "voxproof_job_finished";

/// Events held for a waiter that is busy elsewhere; one that falls further behind gets a
/// [`Event::Resync`] instead of the ones it missed.
const BACKLOG: usize = 1024;

/// How long to wait before listening again after the connection could not be opened.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    SegmentDone(Uuid),
    JobFinished(Uuid),
    /// Notifications may have been missed: re-read whatever is waited on.
    Resync,
}

impl Event {
    fn parse(channel: &str, payload: &str) -> Option<Self> {
        let job = Uuid::parse_str(payload).ok()?;
        match channel {
            SEGMENT_DONE => Some(Event::SegmentDone(job)),
            JOB_FINISHED => Some(Event::JobFinished(job)),
            _ => None,
        }
    }
}

/// This process's feed of job events.
#[derive(Debug, Clone)]
pub struct JobEvents {
    sender: broadcast::Sender<Event>,
}

impl JobEvents {
    /// Starts listening on a connection of its own, opened with `pool`'s settings and opened
    /// again whenever it is lost, for as long as the process runs.
    pub fn listen(pool: &PgPool) -> Self {
        let (sender, _) = broadcast::channel(BACKLOG);
        tokio::spawn(forward(pool.clone(), sender.clone()));
        Self { sender }
    }

    /// Events from now on. Subscribe before reading the state to wait on, so that a change
    /// between the read and the wait is not missed.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            receiver: self.sender.subscribe(),
        }
    }
}

/// A connection listening on both channels.
async fn open_listener(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen_all([SEGMENT_DONE, JOB_FINISHED]).await?;
    Ok(listener)
}

async fn forward(pool: PgPool, sender: broadcast::Sender<Event>) {
    loop {
        let mut listener = match open_listener(&pool).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!("cannot listen for job events (waiters fall back to polling): {e}");
                tokio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            }
        };
        // Whatever happened before this connection listened was not heard.
        let _ = sender.send(Event::Resync);
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    if let Some(event) =
                        Event::parse(notification.channel(), notification.payload())
                    {
                        // No subscriber is fine: nobody waits right now.
                        let _ = sender.send(event);
                    }
                }
                // The connection was lost; the next call opens it again and listens again.
                Ok(None) => {
                    tracing::debug!("job event connection lost; listening again");
                    let _ = sender.send(Event::Resync);
                }
                Err(e) => {
                    tracing::warn!("job events stopped (listening again): {e}");
                    let _ = sender.send(Event::Resync);
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    break;
                }
            }
        }
    }
}

/// One waiter's view of the feed.
#[derive(Debug)]
pub struct Subscription {
    receiver: broadcast::Receiver<Event>,
}

impl Subscription {
    /// Waits until a segment of `job` may be done or the job may have finished, or until
    /// `deadline`: what an assembler following the job needs. See [`Subscription::wait`].
    pub async fn segment_done(&mut self, job: Uuid, deadline: Instant) -> bool {
        self.wait(
            deadline,
            |event| matches!(event, Event::SegmentDone(id) | Event::JobFinished(id) if id == job),
        )
        .await
    }

    /// Waits until `job` may have finished, or until `deadline`. A waiter on the finish is
    /// not woken by each of the job's segments. See [`Subscription::wait`].
    pub async fn finished(&mut self, job: Uuid, deadline: Instant) -> bool {
        self.wait(deadline, |event| event == Event::JobFinished(job))
            .await
    }

    /// Waits for an event `wanted` accepts (or a resync), or until `deadline`. Returns false
    /// when the deadline came first. Either way the caller reads Postgres again: a true is a
    /// hint, and a false after a long wait covers notifications that never came.
    async fn wait(&mut self, deadline: Instant, wanted: impl Fn(Event) -> bool) -> bool {
        loop {
            let received = tokio::select! {
                received = self.receiver.recv() => received,
                _ = tokio::time::sleep_until(deadline) => return false,
            };
            match received {
                Ok(event) if event == Event::Resync || wanted(event) => {
                    // Several events for the job may be queued: one read covers them all.
                    self.drain();
                    return true;
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.drain();
                    return true;
                }
                // The feed is gone (its process is stopping): only the deadline is left.
                Err(broadcast::error::RecvError::Closed) => {
                    tokio::time::sleep_until(deadline).await;
                    return false;
                }
            }
        }
    }

    fn drain(&mut self) {
        while !matches!(
            self.receiver.try_recv(),
            Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed)
        ) {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_a_job_on_a_known_channel() {
        let job = Uuid::now_v7();
        assert_eq!(
            Event::parse(SEGMENT_DONE, &job.to_string()),
            Some(Event::SegmentDone(job))
        );
        assert_eq!(
            Event::parse(JOB_FINISHED, &job.to_string()),
            Some(Event::JobFinished(job))
        );
        assert_eq!(Event::parse("other", &job.to_string()), None);
        assert_eq!(Event::parse(SEGMENT_DONE, "not an id"), None);
    }

    #[tokio::test]
    async fn a_waiter_wakes_for_its_job_and_a_resync_only() {
        let (sender, _) = broadcast::channel(4);
        let events = JobEvents { sender };
        let (mine, other) = (Uuid::now_v7(), Uuid::now_v7());
        let mut waiter = events.subscribe();
        let soon = || Instant::now() + Duration::from_millis(50);

        events.sender.send(Event::SegmentDone(other)).unwrap();
        assert!(
            !waiter.segment_done(mine, soon()).await,
            "another job's event"
        );

        events.sender.send(Event::SegmentDone(mine)).unwrap();
        events.sender.send(Event::SegmentDone(mine)).unwrap();
        assert!(waiter.segment_done(mine, soon()).await);
        assert!(
            !waiter.segment_done(mine, soon()).await,
            "queued events for the job are covered by one wake-up"
        );

        events.sender.send(Event::JobFinished(mine)).unwrap();
        assert!(
            waiter.segment_done(mine, soon()).await,
            "an assembler hears its job end"
        );

        events.sender.send(Event::Resync).unwrap();
        assert!(waiter.segment_done(mine, soon()).await);

        // Falling behind is a resync.
        for _ in 0..6 {
            events.sender.send(Event::SegmentDone(other)).unwrap();
        }
        assert!(waiter.segment_done(mine, soon()).await);
    }

    #[tokio::test]
    async fn a_waiter_on_the_finish_sleeps_through_the_job_s_segments() {
        let (sender, _) = broadcast::channel(4);
        let events = JobEvents { sender };
        let job = Uuid::now_v7();
        let mut waiter = events.subscribe();
        let soon = || Instant::now() + Duration::from_millis(50);

        events.sender.send(Event::SegmentDone(job)).unwrap();
        events
            .sender
            .send(Event::JobFinished(Uuid::now_v7()))
            .unwrap();
        assert!(!waiter.finished(job, soon()).await);

        events.sender.send(Event::SegmentDone(job)).unwrap();
        events.sender.send(Event::JobFinished(job)).unwrap();
        assert!(waiter.finished(job, soon()).await);

        events.sender.send(Event::Resync).unwrap();
        assert!(waiter.finished(job, soon()).await);
    }
}
