//! # sammen-bus-store: the embedded bus's queues on Sammen's durable store
//!
//! Why it exists: with no RabbitMQ configured, `sammen serve` routes messages through the in-process
//! [`EmbeddedBus`](sammen_bus::EmbeddedBus). Once the relay has a `Confirmed` publish it marks the outbox
//! row `published` and stops caring, so the bus must then hold the message exactly as durably as the
//! outbox did: across `kill -9`, an OS crash and a power loss. This crate implements the bus's
//! [`EmbeddedQueueStore`] seam over [`sammen_store::Store`] (sled with an explicit fdatasync, or fjall with
//! `PersistMode::SyncAll`), so the bus inherits the store's durability and group commit.
//!
//! ## Invariants
//! - Every [`EmbeddedQueueStore`] method returns `Ok` only after its write is durable (one
//!   [`Store::commit`], i.e. a group-committed, fsynced atomic batch). The bus confirms a publish right
//!   after `append`, so a confirmed message survives a crash; an acked message (`remove`) does not come
//!   back; a failed call leaves the bus's previous durable state intact.
//! - Each call is one atomic batch: a message's record and its queue's declaration are written together,
//!   `remove` deletes the record and its delivery count together.
//! - [`read`](EmbeddedQueueStore::read) returns a queue's messages in `seq` order and refuses (errors) on a
//!   record it cannot decode rather than silently dropping a message; [`queues`](EmbeddedQueueStore::queues)
//!   counts them. Both page through the store, so memory does not grow with a queue's backlog.
//! - Only the trees in [`TREES`] are touched, so the same [`Store`] may also hold the outbox's trees (then
//!   outbox accepts and bus appends share syncs).
//!
//! ## Layout
//! - [`TREE_QUEUES`]: `queue name` → empty (declared queues, also empty ones).
//! - [`TREE_MESSAGES`]: `u16 BE len(queue) ‖ queue ‖ u64 BE seq` → encoded message (see `codec`).
//! - [`TREE_COUNTS`]: same key → `u32 BE` delivery count, only once non-zero (a return is then one small
//!   put instead of rewriting the whole message).
//!
//! ## Threading assumption
//! The [`EmbeddedQueueStore`] trait is synchronous and the embedded bus calls it from inside its async
//! `publish`/`ack`/`nack` **while holding its state lock**, so each call blocks the calling Tokio worker
//! thread for one group commit (one fdatasync, typically 0.1–5 ms). Run the bus on a multi-threaded
//! runtime (`sammen serve` does); never on a `current_thread` runtime that also drives latency-critical
//! I/O. The store's committer thread does the actual I/O; the blocking caller only waits on its ticket.
//! Because the bus serialises its calls, appends of one bus are one group each; group commit still
//! merges them with concurrent writers of the same store (the outbox, when it shares the store).
//!
//! Closing: the engine keeps a lock on its data dir until the last clone of the store is dropped, which
//! includes the bus's subscription tasks (they end shortly after `Bus::close`). Reopen the same dir in
//! the same process only after that, or retry the open briefly.
#![forbid(unsafe_code)]

mod codec;

use sammen_bus::embedded::{QueueSummary, ReadBudget};
use sammen_bus::{EmbeddedQueueStore, StoredMessage};
use sammen_store::{Batch, FjallStore, SledStore, Store};
use std::path::Path;
use std::sync::Arc;

/// Declared queues.
pub const TREE_QUEUES: &str = "bus.queues";
/// Messages by queue and seq.
pub const TREE_MESSAGES: &str = "bus.messages";
/// Delivery counts (only non-zero ones) by queue and seq.
pub const TREE_COUNTS: &str = "bus.counts";
/// Every tree this crate uses: open a shared [`Store`] with these (plus your own).
pub const TREES: [&str; 3] = [TREE_QUEUES, TREE_MESSAGES, TREE_COUNTS];

/// Which engine [`StoreQueueStore::open`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// sled 0.34.7 with fdatasync after each group ([`SledStore`]).
    Sled,
    /// fjall 3 with `PersistMode::SyncAll` after each group ([`FjallStore`]).
    Fjall,
}

impl Backend {
    /// `sled` or `fjall`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sled => "sled",
            Backend::Fjall => "fjall",
        }
    }
}

/// Why a [`StoreQueueStore`] could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store could not be opened, or lacks one of [`TREES`].
    #[error("bus store: {0}")]
    Store(#[from] sammen_store::StoreError),
}

/// A durable [`EmbeddedQueueStore`] over a [`Store`]. Cheap to clone (shares the store).
#[derive(Clone)]
pub struct StoreQueueStore {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for StoreQueueStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreQueueStore")
            .field("backend", &self.store.backend_name())
            .finish()
    }
}

impl StoreQueueStore {
    /// Use an open store; it must have been opened with every tree in [`TREES`].
    pub fn new(store: Arc<dyn Store>) -> Result<Self, Error> {
        for tree in TREES {
            store.last(tree)?;
        }
        Ok(StoreQueueStore { store })
    }

    /// Open (or create, or recover) a store of its own at `path` with exactly [`TREES`].
    pub fn open(path: impl AsRef<Path>, backend: Backend) -> Result<Self, Error> {
        let store: Arc<dyn Store> = match backend {
            Backend::Sled => Arc::new(SledStore::open(path, &TREES)?),
            Backend::Fjall => Arc::new(FjallStore::open(path, &TREES)?),
        };
        Self::new(store)
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn commit(&self, op: &'static str, batch: Batch) -> Result<(), sammen_bus::StoreError> {
        self.store.commit(batch).map_err(|e| bus_err(op, &e))
    }
}

fn bus_err(op: &'static str, e: &dyn std::fmt::Display) -> sammen_bus::StoreError {
    sammen_bus::StoreError {
        op,
        message: e.to_string(),
    }
}

impl EmbeddedQueueStore for StoreQueueStore {
    fn declare_queue(&self, queue: &str) -> Result<(), sammen_bus::StoreError> {
        // Declarations repeat on every open and ensure_receiver: skip the sync when it is already durable.
        // (A committed write is durable; a write still in its group would make `get` see it early, but the
        // bus serialises its own calls and only ever reports a queue after this returned.)
        if self
            .store
            .get(TREE_QUEUES, queue.as_bytes())
            .map_err(|e| bus_err("declare_queue", &e))?
            .is_some()
        {
            return Ok(());
        }
        let mut b = Batch::new();
        b.put(TREE_QUEUES, queue.as_bytes(), Vec::new());
        self.commit("declare_queue", b)
    }

    fn append(&self, queue: &str, msg: &StoredMessage) -> Result<(), sammen_bus::StoreError> {
        let key = codec::message_key(queue, msg.seq).map_err(|e| bus_err("append", &e))?;
        let mut b = Batch::new();
        // Idempotent, and keeps "every message's queue is declared" true even for undeclared appends.
        b.put(TREE_QUEUES, queue.as_bytes(), Vec::new());
        if msg.delivery_count > 0 {
            b.put(TREE_COUNTS, key.clone(), msg.delivery_count.to_be_bytes());
        } else {
            b.delete(TREE_COUNTS, key.clone());
        }
        b.put(TREE_MESSAGES, key, codec::encode(msg));
        self.commit("append", b)
    }

    fn set_delivery_count(
        &self,
        queue: &str,
        seq: u64,
        count: u32,
    ) -> Result<(), sammen_bus::StoreError> {
        let key = codec::message_key(queue, seq).map_err(|e| bus_err("set_delivery_count", &e))?;
        let mut b = Batch::new();
        b.put(TREE_COUNTS, key, count.to_be_bytes());
        self.commit("set_delivery_count", b)
    }

    fn remove(&self, queue: &str, seq: u64) -> Result<(), sammen_bus::StoreError> {
        let key = codec::message_key(queue, seq).map_err(|e| bus_err("remove", &e))?;
        let mut b = Batch::new();
        b.delete(TREE_COUNTS, key.clone());
        b.delete(TREE_MESSAGES, key);
        self.commit("remove", b)
    }

    fn queues(&self) -> Result<Vec<QueueSummary>, sammen_bus::StoreError> {
        let err = |e: &dyn std::fmt::Display| bus_err("queues", e);
        let mut out = Vec::new();
        for (name, _) in self
            .store
            .range(TREE_QUEUES, b"", None, usize::MAX)
            .map_err(|e| err(&e))?
        {
            let name = String::from_utf8(name).map_err(|e| err(&e))?;
            let prefix = codec::queue_prefix(&name).map_err(|e| err(&e))?;
            let end = sammen_store::prefix_end(&prefix);
            // Keys only, page by page: a backlog's messages are never held to count them.
            let (mut messages, mut next_seq) = (0u64, 0u64);
            let mut from = prefix.clone();
            loop {
                let page = self
                    .store
                    .keys(TREE_MESSAGES, &from, end.as_deref(), COUNT_PAGE)
                    .map_err(|e| err(&e))?;
                let Some(last) = page.last() else { break };
                next_seq = codec::seq_of(last, prefix.len()).map_err(|e| err(&e))? + 1;
                messages += page.len() as u64;
                from = last.clone();
                from.push(0);
            }
            out.push(QueueSummary {
                name,
                messages,
                next_seq,
            });
        }
        Ok(out)
    }

    fn read(
        &self,
        queue: &str,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredMessage>, sammen_bus::StoreError> {
        let err = |e: &dyn std::fmt::Display| bus_err("read", e);
        let prefix = codec::queue_prefix(queue).map_err(|e| err(&e))?;
        let end = sammen_store::prefix_end(&prefix);
        let mut key = codec::message_key(queue, from).map_err(|e| err(&e))?;
        let mut out = Vec::new();
        let mut budget = ReadBudget::new(limit, max_bytes);
        // Small pages: a page's values are all in memory at once, and messages may be 10 MiB each.
        while budget.messages_left() > 0 {
            let page = self
                .store
                .range(
                    TREE_MESSAGES,
                    &key,
                    end.as_deref(),
                    READ_PAGE.min(budget.messages_left()),
                )
                .map_err(|e| err(&e))?;
            let Some((last, _)) = page.last() else { break };
            let next_key = {
                let mut k = last.clone();
                k.push(0);
                k
            };
            for (k, value) in page {
                let seq = codec::seq_of(&k, prefix.len()).map_err(|e| err(&e))?;
                let mut m = codec::decode(seq, &value).map_err(|e| err(&e))?;
                if let Some(c) = self.store.get(TREE_COUNTS, &k).map_err(|e| err(&e))? {
                    m.delivery_count = codec::count(&c).map_err(|e| err(&e))?;
                }
                if !budget.take(&m) {
                    return Ok(out);
                }
                out.push(m);
            }
            key = next_key;
        }
        Ok(out)
    }
}

/// Keys per page when counting a queue at open.
const COUNT_PAGE: usize = 4096;
/// Messages per page when reading a queue back.
const READ_PAGE: usize = 8;

#[cfg(test)]
mod tests;
