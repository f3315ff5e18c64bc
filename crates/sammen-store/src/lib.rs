//! # sammen-store: the embedded durable key-value store behind Sammen's outbox
//!
//! Why it exists: the outbox must answer "accepted" only once a message survives an OS crash or a power
//! loss, and it must do so fast enough that many concurrent clients share one disk sync. The engines we can
//! embed do not all give that guarantee on their own, so the outbox talks to a narrow [`Store`] trait and
//! this crate makes each engine keep it.
//!
//! ## The trait
//! A store is a fixed set of named *trees* (sled trees / fjall keyspaces), declared when it is opened.
//! Reads are `get`, `range`, `keys`, `scan_prefix` and `last`. Writes are only ever a [`Batch`] of puts and deletes
//! across trees, committed atomically: after [`Store::commit`] (or [`Ticket::wait`]) returns `Ok`, the whole
//! batch is on stable storage; after it returns `Err`, the caller must assume it is not (it may still appear
//! after a restart — callers write idempotent batches).
//!
//! ## Group commit
//! Every store owns one committer thread. Writers send their batch with a one-shot reply channel. The
//! committer takes the first waiting batch plus every batch already queued behind it (bounded by
//! [`MAX_GROUP_BATCHES`] / [`MAX_GROUP_BYTES`]), merges them in arrival order (a later write to a key wins),
//! writes the group as **one atomic engine write**, syncs **once**, and then answers every writer of the group
//! with the same result. So a failed write or sync fails every waiter of that group, and batches submitted
//! in order are applied in order (the outbox relies on that for its per-receiver sequence). Puts to a tree
//! with a [`Coalesce`] joiner that continue each other within one group are written as one put (the audit
//! log's leaf runs: one key per group instead of one per writer).
//!
//! ## Durability per backend
//! - [`SledStore`] (sled 0.34.7): sled's `flush()` commits its log with `sync_file_range` (see
//!   `src/pagecache/iobuf.rs`, upstream issue #1452), which neither flushes the device's volatile write cache
//!   nor the file metadata: after a power loss the "flushed" data can be gone. Large values go to separate
//!   blob files that sled writes without any sync at all. So after `flush()` we `fdatasync` sled's log file
//!   and every blob file we have not synced yet (plus the blobs directory when a blob appeared).
//! - [`FjallStore`] (fjall 3): one `WriteBatch` per group, then `Database::persist(PersistMode::SyncAll)`,
//!   a real `fsync` of the journal. `SyncAll` rather than `SyncData`: on an append-only journal both must write
//!   the inode (the size changes), so it costs about the same, and `SyncAll` also covers the journal file
//!   fresh after a rotation.
//!
//! ## fjall's background workers
//! fjall 3.1.13 is built from a patched copy (`vendor/fjall`, why in `vendor/README.md`): its first worker
//! hands compaction requests back to the shared mailbox, and without a pause it took them straight back in
//! a hot loop for as long as the other worker compacted (test `tests/fjall_workers.rs`). A store runs at
//! least two workers ([`fjall_worker_threads`]).
//!
//! ## Failure and recovery
//! Disk full and I/O errors come back as a typed [`StoreError`] (`DiskFull`, `Io`, ...), never a panic. After
//! a failed group the engine's in-memory state can no longer be trusted (sled latches a global error, fjall
//! poisons itself after a failed sync, and a failed fsync may have dropped dirty pages), so the committer
//! closes the engine and the next operation reopens it from disk, which runs the engine's own crash
//! recovery. While it cannot be reopened (still no space) every operation returns an error; once space is
//! back the store works again without a restart.
//!
//! ## Invariants
//! - Only the committer thread writes to the engine; readers never see half of a group, not even across
//!   trees. fjall shows a batch memtable by memtable, so it reads through a snapshot (without: 5,112 of
//!   512,365 racing reads torn) and, since even that tore while a memtable rotated (4–6 in ~100,000 with
//!   8 MiB memtables), every read holds a gate the committer takes while it applies a group (not while it
//!   syncs). Tested by `*_readers_never_see_half_a_group`, whose writes rotate fjall's memtables.
//! - A writer is answered only after the sync that covers its batch has returned.
//! - A joined put ([`Coalesce`]) replaces its parts inside their one group: a reader sees the parts' data
//!   under the joined key or, where the joiner declined, the parts themselves; never both, never half.
//! - Data written by a group becomes visible to readers just before its sync: a reader may observe a batch
//!   whose writer is still waiting (and which a crash at that instant would lose). Callers must not tell
//!   the outside world about data from such a read as if it were promised (the outbox's relay may publish
//!   it early; the sender was not yet answered and will resend).
#![forbid(unsafe_code)]

mod fjall_backend;
mod group;
mod sled_backend;

use std::collections::BTreeMap;

pub use fjall_backend::{fjall_worker_threads, FjallBackend, MEMTABLE as FJALL_MEMTABLE};
pub use group::{GroupStore, Ticket, MAX_GROUP_BATCHES, MAX_GROUP_BYTES};
pub use sled_backend::SledBackend;

/// sled 0.34.7 with an explicit fdatasync after every group commit.
pub type SledStore = GroupStore<SledBackend>;
/// fjall 3 with `PersistMode::SyncAll` after every group commit.
pub type FjallStore = GroupStore<FjallBackend>;

/// An owned key/value pair.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// What can go wrong in the store. Cloneable: one group failure is reported to every waiter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file system is full (ENOSPC / EDQUOT). Nothing of the failed batch is promised.
    #[error("disk full: {0}")]
    DiskFull(String),
    /// Another I/O error from the operating system.
    #[error("I/O error: {0}")]
    Io(String),
    /// The engine reported an error that is not plain I/O (corruption, poisoned, locked...).
    #[error("{backend} error: {message}")]
    Engine {
        /// `sled` or `fjall`.
        backend: &'static str,
        /// The engine's description.
        message: String,
    },
    /// The batch or read names a tree the store was not opened with (a programming error).
    #[error("unknown tree {0:?}")]
    UnknownTree(String),
    /// The store is shutting down (its committer is gone).
    #[error("store is closed")]
    Closed,
}

impl StoreError {
    /// True when retrying after space is freed can succeed.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::DiskFull(_))
    }

    /// Classify an engine error by the first `io::Error` in its source chain.
    pub(crate) fn from_engine(
        backend: &'static str,
        err: &(dyn std::error::Error + 'static),
    ) -> StoreError {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(e) = cur {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                return StoreError::from_io(io);
            }
            cur = e.source();
        }
        let message = format!("{err:?}");
        // sled re-creates latched errors from their Debug text, losing the source chain.
        if message.contains("No space left") || message.contains("StorageFull") {
            return StoreError::DiskFull(message);
        }
        StoreError::Engine { backend, message }
    }

    pub(crate) fn from_io(io: &std::io::Error) -> StoreError {
        const ENOSPC: i32 = 28;
        const EDQUOT: i32 = 122;
        let full = matches!(io.raw_os_error(), Some(ENOSPC | EDQUOT))
            || matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            )
            || io.to_string().contains("No space left");
        if full {
            StoreError::DiskFull(io.to_string())
        } else {
            StoreError::Io(io.to_string())
        }
    }
}

/// One write inside a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set `key` to `value` in `tree`.
    Put {
        /// Tree name.
        tree: &'static str,
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
    },
    /// Remove `key` from `tree` (no error when absent).
    Delete {
        /// Tree name.
        tree: &'static str,
        /// Key.
        key: Vec<u8>,
    },
}

/// Puts and deletes across trees, applied atomically and durably by [`Store::commit`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<Op>,
    bytes: usize,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set `key` to `value` in `tree`.
    pub fn put(&mut self, tree: &'static str, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        let (key, value) = (key.into(), value.into());
        self.bytes += key.len() + value.len();
        self.ops.push(Op::Put { tree, key, value });
    }

    /// Remove `key` from `tree`.
    pub fn delete(&mut self, tree: &'static str, key: impl Into<Vec<u8>>) {
        let key = key.into();
        self.bytes += key.len();
        self.ops.push(Op::Delete { tree, key });
    }

    /// Add `other`'s writes after this batch's own.
    pub fn append(&mut self, other: Batch) {
        self.bytes += other.bytes;
        self.ops.extend(other.ops);
    }

    /// The writes, in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Number of writes.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Approximate size of keys and values.
    pub fn size_bytes(&self) -> usize {
        self.bytes
    }
}

/// The writes of one group, merged per tree: `None` is a delete. Index = position in the store's tree list.
/// Borrowed from the batches: merging copies no key or value (payloads are KiBs each).
pub type MergedGroup<'a> = Vec<BTreeMap<&'a [u8], Option<&'a [u8]>>>;

/// Joins puts to one tree that continue each other into one put, when they land in the same group
/// commit (see [`Store::coalesce`]).
///
/// Why: every key is a journal item and a memtable insert on the committer thread, the one thread every
/// writer waits for; an append-only log whose writers each put one entry (the audit log's leaf runs)
/// can store a whole group's entries under one key instead. The engine writes the joined put in place
/// of its parts, in the same atomic group: what is stored is the same, only fewer keys hold it.
pub trait Coalesce: Send + Sync + 'static {
    /// Whether the put `next` continues `prev` (the tree's put just before it in the group).
    fn continues(&self, prev: (&[u8], &[u8]), next: (&[u8], &[u8])) -> bool;
    /// One put storing exactly what `parts` (two or more, each continuing the one before) store, or
    /// `None` to write them as they are.
    fn join(&self, parts: &[(&[u8], &[u8])]) -> Option<KeyValue>;
}

/// The narrow storage interface the outbox needs.
pub trait Store: Send + Sync + 'static {
    /// Engine name, for logs and metrics (`sled` or `fjall`).
    fn backend_name(&self) -> &'static str;

    /// The value of `key` in `tree`.
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Up to `limit` pairs with `from <= key < to` (`to = None`: to the end), in key order.
    fn range(
        &self,
        tree: &str,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError>;

    /// Up to `limit` keys with `from <= key < to`, in key order, without their values (counting a
    /// backlog of large values must not hold them; the engines' stores override this default).
    fn keys(
        &self,
        tree: &str,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self
            .range(tree, from, to, limit)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// The pair with the greatest key in `tree`.
    fn last(&self, tree: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Queue `batch` for the next group commit; wait on the ticket for durability.
    fn submit(&self, batch: Batch) -> Result<Ticket, StoreError>;

    /// Up to `limit` pairs whose key starts with `prefix`, in key order.
    fn scan_prefix(
        &self,
        tree: &str,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let end = prefix_end(prefix);
        self.range(tree, prefix, end.as_deref(), limit)
    }

    /// Commit `batch` atomically; returns once it is durable (or failed).
    fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        self.submit(batch)?.wait()
    }

    /// From now on, join puts to `tree` that continue each other within one group commit ([`Coalesce`]).
    /// A layout optimisation only: a store may ignore it (this default does) and write every put as given.
    fn coalesce(&self, tree: &str, joiner: std::sync::Arc<dyn Coalesce>) -> Result<(), StoreError> {
        let _ = (tree, joiner);
        Ok(())
    }
}

macro_rules! forward_store {
    ($ptr:ident) => {
        /// Lets the outbox pick its backend at run time (`Box<dyn Store>` / `Arc<dyn Store>`).
        impl<T: Store + ?Sized> Store for std::sync::$ptr<T> {
            fn backend_name(&self) -> &'static str {
                (**self).backend_name()
            }
            fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
                (**self).get(tree, key)
            }
            fn range(
                &self,
                tree: &str,
                from: &[u8],
                to: Option<&[u8]>,
                limit: usize,
            ) -> Result<Vec<KeyValue>, StoreError> {
                (**self).range(tree, from, to, limit)
            }
            fn keys(
                &self,
                tree: &str,
                from: &[u8],
                to: Option<&[u8]>,
                limit: usize,
            ) -> Result<Vec<Vec<u8>>, StoreError> {
                (**self).keys(tree, from, to, limit)
            }
            fn last(&self, tree: &str) -> Result<Option<KeyValue>, StoreError> {
                (**self).last(tree)
            }
            fn submit(&self, batch: Batch) -> Result<Ticket, StoreError> {
                (**self).submit(batch)
            }
            fn coalesce(
                &self,
                tree: &str,
                joiner: std::sync::Arc<dyn Coalesce>,
            ) -> Result<(), StoreError> {
                (**self).coalesce(tree, joiner)
            }
        }
    };
}
forward_store!(Arc);

impl<T: Store + ?Sized> Store for Box<T> {
    fn backend_name(&self) -> &'static str {
        (**self).backend_name()
    }
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).get(tree, key)
    }
    fn range(
        &self,
        tree: &str,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        (**self).range(tree, from, to, limit)
    }
    fn keys(
        &self,
        tree: &str,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        (**self).keys(tree, from, to, limit)
    }
    fn last(&self, tree: &str) -> Result<Option<KeyValue>, StoreError> {
        (**self).last(tree)
    }
    fn submit(&self, batch: Batch) -> Result<Ticket, StoreError> {
        (**self).submit(batch)
    }
    fn coalesce(&self, tree: &str, joiner: std::sync::Arc<dyn Coalesce>) -> Result<(), StoreError> {
        (**self).coalesce(tree, joiner)
    }
}

/// The smallest key greater than every key starting with `prefix` (`None`: no such key).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests;
