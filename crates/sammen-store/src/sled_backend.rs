//! sled 0.34.7, made durable with an explicit fdatasync after `flush()`.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sled::transaction::{TransactionError, Transactional};

use crate::group::Backend;
use crate::{KeyValue, MergedGroup, StoreError};

const NAME: &str = "sled";

fn err(e: &sled::Error) -> StoreError {
    StoreError::from_engine(NAME, e)
}

fn io(e: &std::io::Error) -> StoreError {
    StoreError::from_io(e)
}

/// The sled engine. See the crate docs for why `sync` does more than `flush`.
pub struct SledBackend {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    /// sled's single log/segment file, kept open only to fdatasync it.
    log_file: File,
    blobs_dir: PathBuf,
    /// Blob files already fdatasync'd (sled never rewrites a blob file in place).
    synced_blobs: Mutex<HashSet<OsString>>,
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(&e))
}

impl SledBackend {
    /// fdatasync blob files sled wrote since the last sync; sled writes them with `write_all` only.
    fn sync_new_blobs(&self) -> Result<(), StoreError> {
        let entries = match std::fs::read_dir(&self.blobs_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(&e)),
        };
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|p| p.into_inner());
        let mut present = HashSet::new();
        let mut any_new = false;
        for entry in entries {
            let entry = entry.map_err(|e| io(&e))?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                match File::open(entry.path()) {
                    Ok(f) => f.sync_data().map_err(|e| io(&e))?,
                    // sled's GC removed it meanwhile: nothing left to make durable.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io(&e)),
                }
                any_new = true;
            }
            present.insert(name);
        }
        *synced = present;
        if any_new {
            sync_dir(&self.blobs_dir)?;
        }
        Ok(())
    }
}

/// Open sled's database, waiting a little for its file lock: sled's background flusher drops the lock
/// shortly *after* the last handle of a previous open is gone, so an immediate reopen (after a failed
/// commit, or a restart in-process) would otherwise fail with `WouldBlock`.
fn open_db(path: &Path) -> Result<sled::Db, StoreError> {
    const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new().path(path).open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => return Err(err(&e)),
        }
    }
}

impl Backend for SledBackend {
    const NAME: &'static str = NAME;

    fn open(path: &Path, trees: &[&'static str]) -> Result<Self, StoreError> {
        let db = open_db(path)?;
        let trees = trees
            .iter()
            .map(|t| db.open_tree(t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(&e))?;
        // Read-only is enough: fdatasync acts on the inode, whatever the descriptor's access mode.
        let log_file = File::open(path.join("db")).map_err(|e| io(&e))?;
        let blobs_dir = path.join("blobs");
        // sled creates its files without syncing their directory entries; do it once per open.
        db.flush().map_err(|e| err(&e))?;
        log_file.sync_data().map_err(|e| io(&e))?;
        if let Ok(conf) = File::open(path.join("conf")) {
            conf.sync_all().map_err(|e| io(&e))?;
        }
        sync_dir(path)?;
        let backend = SledBackend {
            db,
            trees,
            log_file,
            blobs_dir,
            synced_blobs: Mutex::new(HashSet::new()),
        };
        backend.sync_new_blobs()?;
        Ok(backend)
    }

    fn get(&self, tree: usize, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.trees[tree]
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
        let t = &self.trees[tree];
        let iter = match to {
            Some(to) => t.range(from..to),
            None => t.range(from..),
        };
        iter.take(limit)
            .map(|kv| {
                kv.map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(|e| err(&e))
            })
            .collect()
    }

    fn keys(
        &self,
        tree: usize,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let t = &self.trees[tree];
        let iter = match to {
            Some(to) => t.range(from..to),
            None => t.range(from..),
        };
        iter.keys()
            .take(limit)
            .map(|k| k.map(|k| k.to_vec()).map_err(|e| err(&e)))
            .collect()
    }

    fn last(&self, tree: usize) -> Result<Option<KeyValue>, StoreError> {
        self.trees[tree]
            .last()
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .map_err(|e| err(&e))
    }

    fn write(&self, group: &MergedGroup<'_>) -> Result<(), StoreError> {
        let mut batches = Vec::with_capacity(group.len());
        for writes in group {
            let mut b = sled::Batch::default();
            for (k, v) in writes {
                match v {
                    Some(v) => b.insert(*k, *v),
                    None => b.remove(*k),
                }
            }
            batches.push(b);
        }
        // A multi-tree transaction is sled's only atomic write across trees.
        self.trees
            .as_slice()
            .transaction(|tx| {
                for (t, b) in tx.iter().zip(&batches) {
                    t.apply_batch(b)?;
                }
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e: TransactionError<()>| match e {
                TransactionError::Storage(e) => err(&e),
                TransactionError::Abort(()) => StoreError::Engine {
                    backend: NAME,
                    message: "transaction aborted".into(),
                },
            })
    }

    fn sync(&self) -> Result<(), StoreError> {
        // flush() writes sled's buffers and calls sync_file_range, which is not durable (no device cache
        // flush, no metadata): sled#1452. fdatasync on the same file makes it durable.
        self.db.flush().map_err(|e| err(&e))?;
        self.log_file.sync_data().map_err(|e| io(&e))?;
        self.sync_new_blobs()
    }
}
