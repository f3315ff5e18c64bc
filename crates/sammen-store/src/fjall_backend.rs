//! fjall 3: one cross-keyspace `WriteBatch` per group, then `persist(SyncAll)`.

use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::group::Backend;
use crate::{KeyValue, MergedGroup, StoreError};

const NAME: &str = "fjall";

fn err(e: &fjall::Error) -> StoreError {
    StoreError::from_engine(NAME, e)
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

impl Backend for FjallBackend {
    const NAME: &'static str = NAME;

    fn open(path: &Path, trees: &[&'static str]) -> Result<Self, StoreError> {
        // We persist explicitly per group; no background fsync timer is needed.
        let db = Database::builder(path)
            .manual_journal_persist(true)
            .open()
            .map_err(|e| err(&e))?;
        let keyspaces = trees
            .iter()
            .map(|t| db.keyspace(t, KeyspaceCreateOptions::default))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(&e))?;
        Ok(FjallBackend { db, keyspaces })
    }

    fn get(&self, tree: usize, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.keyspaces[tree]
            .get(key)
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
        let ks = &self.keyspaces[tree];
        let iter = match to {
            Some(to) => ks.range(from..to),
            None => ks.range(from..),
        };
        iter.take(limit).map(pair).collect()
    }

    fn last(&self, tree: usize) -> Result<Option<KeyValue>, StoreError> {
        self.keyspaces[tree].last_key_value().map(pair).transpose()
    }

    fn write(&self, group: &MergedGroup) -> Result<(), StoreError> {
        let mut batch = self.db.batch();
        for (ks, writes) in self.keyspaces.iter().zip(group) {
            for (k, v) in writes {
                match v {
                    Some(v) => batch.insert(ks, k.as_slice(), v.as_slice()),
                    None => batch.remove(ks, k.as_slice()),
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
