//! The durability seam of the embedded bus.
//!
//! The embedded bus keeps its queues in memory for speed and writes every change through an
//! [`EmbeddedQueueStore`] before it reports success, so a restart can [`load`](EmbeddedQueueStore::load)
//! them back. Implement it over `sammen-store` for `sammen serve`; [`MemoryQueueStore`] is the
//! in-process implementation for tests and throw-away runs.

use crate::error::StoreError;
use crate::message::BusMessage;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// One stored message of one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Position in the bus's global order; queues deliver in ascending `seq`.
    pub seq: u64,
    /// Returns so far.
    pub delivery_count: u32,
    /// Routing key it was published with.
    pub routing_key: String,
    /// The message.
    pub message: BusMessage,
}

/// Everything a store holds: queue name → messages in `seq` order.
pub type StoredQueues = BTreeMap<String, Vec<StoredMessage>>;

/// Durable storage for the embedded bus. Every method must be durable when it returns `Ok`
/// (the bus confirms a publish right after `append`). Calls for one bus are serialised by the bus.
pub trait EmbeddedQueueStore: Send + Sync + 'static {
    /// Remember that a queue exists (so routing to it survives a restart even while it is empty).
    fn declare_queue(&self, queue: &str) -> Result<(), StoreError>;
    /// Add a message to a queue.
    fn append(&self, queue: &str, msg: &StoredMessage) -> Result<(), StoreError>;
    /// Record a return (nack with requeue, or a subscriber that went away).
    fn set_delivery_count(&self, queue: &str, seq: u64, count: u32) -> Result<(), StoreError>;
    /// Forget a message (acked, or moved to the dead-letter queue after being appended there).
    fn remove(&self, queue: &str, seq: u64) -> Result<(), StoreError>;
    /// Every declared queue with its messages.
    fn load(&self) -> Result<StoredQueues, StoreError>;
}

/// An [`EmbeddedQueueStore`] in memory: durable only as long as the process (share it in an `Arc` to
/// simulate a restart in tests).
#[derive(Debug, Default)]
pub struct MemoryQueueStore {
    queues: Mutex<BTreeMap<String, BTreeMap<u64, StoredMessage>>>,
}

impl MemoryQueueStore {
    fn with<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut BTreeMap<String, BTreeMap<u64, StoredMessage>>) -> T,
    ) -> Result<T, StoreError> {
        let mut g = self.queues.lock().map_err(|_| StoreError {
            op,
            message: "lock poisoned".into(),
        })?;
        Ok(f(&mut g))
    }
}

impl EmbeddedQueueStore for MemoryQueueStore {
    fn declare_queue(&self, queue: &str) -> Result<(), StoreError> {
        self.with("declare_queue", |q| {
            q.entry(queue.to_string()).or_default();
        })
    }

    fn append(&self, queue: &str, msg: &StoredMessage) -> Result<(), StoreError> {
        self.with("append", |q| {
            q.entry(queue.to_string())
                .or_default()
                .insert(msg.seq, msg.clone());
        })
    }

    fn set_delivery_count(&self, queue: &str, seq: u64, count: u32) -> Result<(), StoreError> {
        self.with("set_delivery_count", |q| {
            if let Some(m) = q.get_mut(queue).and_then(|q| q.get_mut(&seq)) {
                m.delivery_count = count;
            }
        })
    }

    fn remove(&self, queue: &str, seq: u64) -> Result<(), StoreError> {
        self.with("remove", |q| {
            if let Some(q) = q.get_mut(queue) {
                q.remove(&seq);
            }
        })
    }

    fn load(&self) -> Result<StoredQueues, StoreError> {
        self.with("load", |q| {
            q.iter()
                .map(|(k, v)| (k.clone(), v.values().cloned().collect()))
                .collect()
        })
    }
}
