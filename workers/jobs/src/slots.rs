//! Model session slots shared by every task of a worker process: interactive tasks get a
//! freed slot before bulk tasks that are already waiting.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use voxproof_scheduler::model::Priority;

#[derive(Debug, Default)]
struct State {
    free: Vec<usize>,
    interactive: VecDeque<oneshot::Sender<usize>>,
    bulk: VecDeque<oneshot::Sender<usize>>,
}

#[derive(Debug, Clone)]
pub struct Slots {
    state: Arc<Mutex<State>>,
}

/// A held slot; dropping it hands the slot to the next waiter.
#[derive(Debug)]
pub struct Slot {
    pub index: usize,
    slots: Slots,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.release(self.index);
    }
}

impl Slots {
    pub fn new(count: usize) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                free: (0..count.max(1)).rev().collect(),
                ..State::default()
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub async fn acquire(&self, priority: Priority) -> Slot {
        let waiter = {
            let mut state = self.lock();
            let may_take = priority == Priority::Interactive || state.interactive.is_empty();
            if may_take {
                if let Some(index) = state.free.pop() {
                    return Slot {
                        index,
                        slots: self.clone(),
                    };
                }
            }
            let (tx, rx) = oneshot::channel();
            match priority {
                Priority::Interactive => state.interactive.push_back(tx),
                Priority::Bulk => state.bulk.push_back(tx),
            }
            rx
        };
        let index = waiter
            .await
            .expect("a slot sender is only dropped after sending");
        Slot {
            index,
            slots: self.clone(),
        }
    }

    fn release(&self, index: usize) {
        let mut state = self.lock();
        loop {
            let next = match state.interactive.pop_front() {
                Some(tx) => tx,
                None => match state.bulk.pop_front() {
                    Some(tx) => tx,
                    None => {
                        state.free.push(index);
                        return;
                    }
                },
            };
            // A waiter that gave up (its task was dropped) is skipped.
            if next.send(index).is_ok() {
                return;
            }
        }
    }
}

type SlotWork = Box<dyn FnOnce() + Send>;

/// One thread per model slot, for the life of the process: a slot's session always runs on
/// the same thread, as each session of `voxproof synth` does, rather than on whichever
/// pooled blocking thread is free, and keeps the core it may be given there (see
/// `voxproof_synth::dedicate_session_thread`).
#[derive(Debug)]
pub struct SlotThreads {
    senders: Vec<std::sync::mpsc::Sender<SlotWork>>,
}

impl SlotThreads {
    pub fn new(count: usize) -> std::io::Result<Self> {
        let count = count.max(1);
        let senders = (0..count)
            .map(|slot| {
                let (tx, rx) = std::sync::mpsc::channel::<SlotWork>();
                std::thread::Builder::new()
                    .name(format!("voxproof-slot-{slot}"))
                    // Ends when the process drops its last sender. A panic ends only the
                    // work in hand (its caller hears of it), not the slot's thread.
                    .spawn(move || {
                        voxproof_synth::dedicate_session_thread(slot, count);
                        for work in rx {
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
                        }
                    })?;
                Ok(tx)
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Self { senders })
    }

    /// Runs `work` on slot `slot`'s thread and waits for its result without blocking the
    /// async runtime.
    pub async fn run<T: Send + 'static>(
        &self,
        slot: usize,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let (tx, rx) = oneshot::channel();
        let sender = self
            .senders
            .get(slot)
            .ok_or_else(|| anyhow::anyhow!("no model slot {slot}"))?;
        sender
            .send(Box::new(move || {
                let _ = tx.send(work());
            }))
            .map_err(|_| anyhow::anyhow!("model slot {slot}'s thread has stopped"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("model slot {slot}'s work panicked"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn interactive_waiters_go_before_earlier_bulk_waiters() {
        let slots = Slots::new(1);
        let order = Arc::new(Mutex::new(Vec::new()));
        let held = slots.acquire(Priority::Bulk).await;
        let spawn_waiter = |priority: Priority, name: &'static str| {
            let (slots, order) = (slots.clone(), order.clone());
            tokio::spawn(async move {
                let slot = slots.acquire(priority).await;
                order.lock().unwrap().push(name);
                drop(slot);
            })
        };
        let bulk = spawn_waiter(Priority::Bulk, "bulk");
        tokio::task::yield_now().await;
        let interactive = spawn_waiter(Priority::Interactive, "interactive");
        tokio::task::yield_now().await;
        drop(held);
        interactive.await.unwrap();
        bulk.await.unwrap();
        assert_eq!(*order.lock().unwrap(), vec!["interactive", "bulk"]);
    }

    #[tokio::test]
    async fn a_slot_s_work_always_runs_on_that_slot_s_thread() {
        let threads = SlotThreads::new(2).unwrap();
        let name = || std::thread::current().name().map(str::to_owned);
        let mut seen = Vec::new();
        for slot in [0, 1, 0, 1, 1] {
            seen.push((slot, threads.run(slot, name).await.unwrap()));
        }
        for (slot, thread) in seen {
            assert_eq!(thread, Some(format!("voxproof-slot-{slot}")));
        }
        assert!(threads.run(2, || ()).await.is_err(), "no third slot");
        let panicked = threads.run(0, || panic!("model failure")).await;
        assert!(panicked.is_err());
        assert_eq!(
            threads.run(0, name).await.unwrap(),
            Some("voxproof-slot-0".to_string()),
            "a panic in a slot's work does not stop its thread"
        );
    }
}
