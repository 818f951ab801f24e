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
}
