//! The durability seam of the embedded bus.
//!
//! The embedded bus writes every change through an [`EmbeddedQueueStore`] before it reports success and
//! keeps only a bounded window of each queue in memory; the rest is [`read`](EmbeddedQueueStore::read)
//! back from the store as the window drains, and a restart finds the queues with
//! [`queues`](EmbeddedQueueStore::queues). Implement it over `sammen-store` for `sammen serve`;
//! [`MemoryQueueStore`] is the in-process implementation for tests and throw-away runs.

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

impl StoredMessage {
    /// Bytes this message holds in memory (body and header strings), for the bus's window bounds.
    pub fn size(&self) -> usize {
        let m = &self.message;
        m.body.len()
            + self.routing_key.len()
            + m.message_id.len()
            + m.receiver_gln.len()
            + m.sender_gln.len()
            + m.event.len()
            + m.content_type.len()
            + m.sha256.len()
    }
}

/// Everything a store holds: queue name → messages in `seq` order.
pub type StoredQueues = BTreeMap<String, Vec<StoredMessage>>;

/// A declared queue as a store holds it, without its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSummary {
    /// Queue name.
    pub name: String,
    /// Messages stored in it.
    pub messages: u64,
    /// One past its greatest `seq` (0 when empty).
    pub next_seq: u64,
}

/// Messages read per store call by [`EmbeddedQueueStore::load`].
const LOAD_PAGE: usize = 256;

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
    /// Every declared queue with its message count. Memory stays bounded whatever the backlog (the
    /// count may take a walk over the stored messages).
    fn queues(&self) -> Result<Vec<QueueSummary>, StoreError>;
    /// Messages of `queue` with `seq >= from`, in `seq` order: at most `limit` of them and, past the
    /// first, only while their [`size`](StoredMessage::size)s stay within `max_bytes` in all.
    fn read(
        &self,
        queue: &str,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// Every declared queue with all its messages, for tests and tools: memory grows with the backlog,
    /// so the bus itself never calls it.
    fn load(&self) -> Result<StoredQueues, StoreError> {
        let mut out = StoredQueues::new();
        for q in self.queues()? {
            let mut msgs: Vec<StoredMessage> = Vec::new();
            let mut from = 0;
            loop {
                let page = self.read(&q.name, from, LOAD_PAGE, usize::MAX)?;
                let Some(last) = page.last() else { break };
                from = last.seq + 1;
                msgs.extend(page);
            }
            out.insert(q.name, msgs);
        }
        Ok(out)
    }
}

/// What a [`EmbeddedQueueStore::read`] may still take: `limit` messages and `max_bytes` of their
/// [`size`](StoredMessage::size)s, the first message whatever its size. Shared by every store, so they
/// all cut a read at the same place.
#[derive(Debug, Clone, Copy)]
pub struct ReadBudget {
    messages: usize,
    bytes: usize,
    taken: usize,
}

impl ReadBudget {
    /// A budget of `limit` messages and `max_bytes` bytes.
    pub fn new(limit: usize, max_bytes: usize) -> Self {
        ReadBudget {
            messages: limit,
            bytes: max_bytes,
            taken: 0,
        }
    }

    /// Messages it may still take.
    pub fn messages_left(&self) -> usize {
        self.messages
    }

    /// Charge `m`; `false` (nothing charged) when it does not fit.
    pub fn take(&mut self, m: &StoredMessage) -> bool {
        let size = m.size();
        if self.messages == 0 || (self.taken > 0 && size > self.bytes) {
            return false;
        }
        self.messages -= 1;
        self.bytes = self.bytes.saturating_sub(size);
        self.taken += 1;
        true
    }
}

/// Keep messages from an ordered iterator while they fit `limit` and `max_bytes` (the first always).
pub fn take_within<I: IntoIterator<Item = StoredMessage>>(
    msgs: I,
    limit: usize,
    max_bytes: usize,
) -> Vec<StoredMessage> {
    let mut budget = ReadBudget::new(limit, max_bytes);
    msgs.into_iter().take_while(|m| budget.take(m)).collect()
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

    fn queues(&self) -> Result<Vec<QueueSummary>, StoreError> {
        self.with("queues", |q| {
            q.iter()
                .map(|(name, msgs)| QueueSummary {
                    name: name.clone(),
                    messages: msgs.len() as u64,
                    next_seq: msgs.keys().next_back().map_or(0, |s| s + 1),
                })
                .collect()
        })
    }

    fn read(
        &self,
        queue: &str,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.with("read", |q| {
            q.get(queue).map_or_else(Vec::new, |msgs| {
                take_within(msgs.range(from..).map(|(_, m)| m.clone()), limit, max_bytes)
            })
        })
    }
}
