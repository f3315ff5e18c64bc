//! fjall 3: one cross-keyspace `WriteBatch` per group, then `persist(SyncAll)`.
//!
//! Reads go through a snapshot. `Keyspace::get`/`range` read at `SeqNo::MAX` and so see a batch while
//! it is being applied, memtable by memtable: a reader could find a message's queue key but not yet its
//! state (the relay then skipped the row for good). A snapshot reads at the last *published* batch.

use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};

use crate::group::Backend;
use crate::{KeyValue, MergedGroup, StoreError};

const NAME: &str = "fjall";

/// Memtable size per keyspace (bytes) before it is sealed and flushed to disk.
pub const MEMTABLE: u64 = 8 << 20;

fn err(e: &fjall::Error) -> StoreError {
    StoreError::from_engine(NAME, e)
}

/// Background workers (flushes, compactions) per store: fjall's own default, one per core and at most
/// four, but never fewer than two. Why not one: fjall 3.1's workers share one bounded mailbox, and a lone
/// worker can block for good on a send into it when writers have filled it (fjall-rs/fjall#323); with two,
/// one also keeps flushing while the other compacts.
pub fn fjall_worker_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, usize::from)
        .clamp(2, 4)
}

/// The fjall engine.
pub struct FjallBackend {
    db: Database,
    keyspaces: Vec<Keyspace>,
}

fn pair(g: fjall::Guard) -> Result<KeyValue, StoreError> {
    g.into_inner()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .map_err(|e| err(&e))
}

impl FjallBackend {
    fn iter(&self, tree: usize, from: &[u8], to: Option<&[u8]>) -> fjall::Iter {
        let (snap, ks) = (self.db.snapshot(), &self.keyspaces[tree]);
        match to {
            Some(to) => snap.range(ks, from..to),
            None => snap.range(ks, from..),
        }
    }
}

impl Backend for FjallBackend {
    const NAME: &'static str = NAME;

    fn open(path: &Path, trees: &[&'static str]) -> Result<Self, StoreError> {
        // We persist explicitly per group; no background fsync timer is needed.
        let db = Database::builder(path)
            .manual_journal_persist(true)
            .worker_threads(fjall_worker_threads())
            .open()
            .map_err(|e| err(&e))?;
        // fjall keeps up to one active and four sealed memtables per keyspace (64 MiB each by default)
        // and does not enforce a total: with payloads in two keyspaces a backlog grew the broker to
        // ~700 MiB. Smaller memtables bound that to 5 × MEMTABLE per keyspace.
        let keyspaces = trees
            .iter()
            .map(|t| {
                db.keyspace(t, || {
                    KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE)
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(&e))?;
        Ok(FjallBackend { db, keyspaces })
    }

    fn get(&self, tree: usize, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db
            .snapshot()
            .get(&self.keyspaces[tree], key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| err(&e))
    }

    fn range(
        &self,
        tree: usize,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        self.iter(tree, from, to).take(limit).map(pair).collect()
    }

    fn keys(
        &self,
        tree: usize,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        self.iter(tree, from, to)
            .take(limit)
            .map(|g| g.key().map(|k| k.to_vec()).map_err(|e| err(&e)))
            .collect()
    }

    fn last(&self, tree: usize) -> Result<Option<KeyValue>, StoreError> {
        self.db
            .snapshot()
            .last_key_value(&self.keyspaces[tree])
            .map(pair)
            .transpose()
    }

    fn write(&self, group: &MergedGroup<'_>) -> Result<(), StoreError> {
        let mut batch = self.db.batch();
        for (ks, writes) in self.keyspaces.iter().zip(group) {
            for (k, v) in writes {
                match v {
                    Some(v) => batch.insert(ks, *k, *v),
                    None => batch.remove(ks, *k),
                }
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        batch.commit().map_err(|e| err(&e))
    }

    fn sync(&self) -> Result<(), StoreError> {
        // SyncAll = fsync of the journal: durable across power loss (see crate docs for SyncAll vs SyncData).
        self.db.persist(PersistMode::SyncAll).map_err(|e| err(&e))
    }
}
