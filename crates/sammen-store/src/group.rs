//! The group committer shared by both backends.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{Batch, KeyValue, MergedGroup, Op, Store, StoreError};

/// At most this many batches share one sync.
pub const MAX_GROUP_BATCHES: usize = 1024;
/// A group stops growing once its batches hold this many bytes.
pub const MAX_GROUP_BYTES: usize = 32 << 20;

/// An engine adapter: atomic unsynced group writes, one sync, and reads. Only the committer writes.
pub trait Backend: Send + Sync + Sized + 'static {
    /// Engine name.
    const NAME: &'static str;
    /// Open (or create, or recover) the engine at `path` with these trees.
    fn open(path: &Path, trees: &[&'static str]) -> Result<Self, StoreError>;
    /// Read one key; `tree` indexes the tree list given to `open`.
    fn get(&self, tree: usize, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Ordered range read.
    fn range(
        &self,
        tree: usize,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError>;
    /// Ordered range read of keys only.
    fn keys(
        &self,
        tree: usize,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError>;
    /// Greatest key.
    fn last(&self, tree: usize) -> Result<Option<KeyValue>, StoreError>;
    /// Apply a merged group as one atomic write (visible, not yet durable).
    fn write(&self, group: &MergedGroup<'_>) -> Result<(), StoreError>;
    /// Make everything written so far durable.
    fn sync(&self) -> Result<(), StoreError>;
}

type Reply = mpsc::SyncSender<Result<(), StoreError>>;

struct Job {
    batch: Batch,
    reply: Reply,
}

/// Waits for the group commit that carries one batch.
#[derive(Debug)]
#[must_use = "a batch is only durable once its ticket says so"]
pub struct Ticket {
    rx: mpsc::Receiver<Result<(), StoreError>>,
}

impl Ticket {
    /// Block until the batch is durable (`Ok`) or its group failed.
    pub fn wait(self) -> Result<(), StoreError> {
        self.rx.recv().unwrap_or(Err(StoreError::Closed))
    }
}

struct Shared<B> {
    path: PathBuf,
    trees: Vec<&'static str>,
    engine: RwLock<Option<Arc<B>>>,
    /// Held for writing while a group is applied, for reading by every read: fjall shows a batch
    /// memtable by memtable, and even through a snapshot tore reads across trees while a memtable
    /// rotated (4-6 in 100,000). Not held during the sync, so readers wait microseconds, not a sync.
    gate: RwLock<()>,
    groups: AtomicU64,
    batches: AtomicU64,
}

impl<B: Backend> Shared<B> {
    fn tree(&self, name: &str) -> Result<usize, StoreError> {
        self.trees
            .iter()
            .position(|t| *t == name)
            .ok_or_else(|| StoreError::UnknownTree(name.to_owned()))
    }

    /// The open engine, reopening it (engine crash recovery) after a failure closed it.
    fn engine(&self) -> Result<Arc<B>, StoreError> {
        if let Some(e) = self
            .engine
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            return Ok(Arc::clone(e));
        }
        let mut slot = self.engine.write().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = slot.as_ref() {
            return Ok(Arc::clone(e));
        }
        let opened = catch_unwind(AssertUnwindSafe(|| B::open(&self.path, &self.trees)))
            .unwrap_or_else(|_| Err(panicked(B::NAME, "open")))?;
        let e = Arc::new(opened);
        *slot = Some(Arc::clone(&e));
        Ok(e)
    }

    /// Drop the engine after a failed group so the next use reopens it from disk.
    fn close_engine(&self) {
        let taken = self
            .engine
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(mut arc) = taken {
            // Readers hold clones only for one call; wait for them so the engine's file lock is released.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match Arc::try_unwrap(arc) {
                    Ok(engine) => {
                        let _ = catch_unwind(AssertUnwindSafe(move || drop(engine)));
                        return;
                    }
                    Err(back) if Instant::now() < deadline => {
                        arc = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(_) => return,
                }
            }
        }
    }

    fn merge<'a>(&self, jobs: &'a [Job]) -> Result<MergedGroup<'a>, StoreError> {
        let mut merged: MergedGroup<'a> = vec![BTreeMap::new(); self.trees.len()];
        for job in jobs {
            for op in job.batch.ops() {
                match op {
                    Op::Put { tree, key, value } => {
                        merged[self.tree(tree)?].insert(key.as_slice(), Some(value.as_slice()));
                    }
                    Op::Delete { tree, key } => {
                        merged[self.tree(tree)?].insert(key.as_slice(), None);
                    }
                }
            }
        }
        Ok(merged)
    }

    /// Apply and sync one group; on success, how long its phases took.
    fn apply(&self, jobs: &[Job]) -> Result<GroupTimes, StoreError> {
        let t0 = Instant::now();
        let merged = self.merge(jobs)?;
        let engine = self.engine()?;
        let t1 = Instant::now();
        catch_unwind(AssertUnwindSafe(|| {
            {
                let _applying = self.gate.write().unwrap_or_else(|p| p.into_inner());
                engine.write(&merged)?;
            }
            let t2 = Instant::now();
            engine.sync()?;
            Ok(GroupTimes {
                batches: jobs.len(),
                merge: t1 - t0,
                write: t2 - t1,
                sync: t2.elapsed(),
            })
        }))
        .unwrap_or_else(|_| Err(panicked(B::NAME, "commit")))
    }
}

/// Where one group commit's time went.
#[derive(Clone, Copy, Debug, Default)]
struct GroupTimes {
    batches: usize,
    merge: Duration,
    write: Duration,
    sync: Duration,
}

impl GroupTimes {
    fn total(&self) -> Duration {
        self.merge + self.write + self.sync
    }
}

/// A group commit slower than this made every waiter of the group wait as long: counted and reported.
const SLOW_GROUP: Duration = Duration::from_millis(20);
/// At most one report per this interval, so a slow disk cannot flood the log.
const SLOW_REPORT_EVERY: Duration = Duration::from_secs(10);

/// Slow group commits since the last report, and the worst of them.
#[derive(Default)]
struct SlowGroups {
    count: u64,
    worst: GroupTimes,
    reported: Option<Instant>,
}

impl SlowGroups {
    fn record(&mut self, backend: &'static str, t: GroupTimes) {
        if t.total() < SLOW_GROUP {
            return;
        }
        self.count += 1;
        if t.total() > self.worst.total() {
            self.worst = t;
        }
        let now = Instant::now();
        if self.reported.is_some_and(|r| now - r < SLOW_REPORT_EVERY) {
            return;
        }
        // A slow disk (or a busy one: the engine's own flushes) shows here first.
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        tracing::warn!(
            backend,
            slow_groups = self.count,
            worst_ms = ms(self.worst.total()),
            worst_batches = self.worst.batches,
            worst_merge_ms = ms(self.worst.merge),
            worst_write_ms = ms(self.worst.write),
            worst_sync_ms = ms(self.worst.sync),
            "slow group commits (over 20 ms) since the last report"
        );
        *self = SlowGroups {
            reported: Some(now),
            ..SlowGroups::default()
        };
    }
}

fn panicked(backend: &'static str, what: &str) -> StoreError {
    StoreError::Engine {
        backend,
        message: format!("engine panicked during {what}"),
    }
}

/// A [`Store`] over one engine, with a committer thread doing group commit.
pub struct GroupStore<B: Backend> {
    shared: Arc<Shared<B>>,
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl<B: Backend> std::fmt::Debug for GroupStore<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupStore")
            .field("backend", &B::NAME)
            .field("path", &self.shared.path)
            .finish()
    }
}

impl<B: Backend> GroupStore<B> {
    /// Open or create the store at `path` with exactly these trees.
    pub fn open(path: impl AsRef<Path>, trees: &[&'static str]) -> Result<Self, StoreError> {
        let shared = Arc::new(Shared {
            path: path.as_ref().to_path_buf(),
            trees: trees.to_vec(),
            engine: RwLock::new(None),
            gate: RwLock::new(()),
            groups: AtomicU64::new(0),
            batches: AtomicU64::new(0),
        });
        shared.engine()?;
        let (tx, rx) = mpsc::channel::<Job>();
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("{}-committer", B::NAME))
            .spawn(move || committer(&worker, &rx))
            .map_err(|e| StoreError::from_io(&e))?;
        Ok(Self {
            shared,
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// (groups committed, batches committed) since open: batches / groups = writers served per sync.
    pub fn group_stats(&self) -> (u64, u64) {
        (
            self.shared.groups.load(Ordering::Relaxed),
            self.shared.batches.load(Ordering::Relaxed),
        )
    }
}

fn committer<B: Backend>(shared: &Shared<B>, rx: &mpsc::Receiver<Job>) {
    let mut slow = SlowGroups::default();
    while let Ok(first) = rx.recv() {
        let mut bytes = first.batch.size_bytes();
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP_BATCHES && bytes < MAX_GROUP_BYTES {
            match rx.try_recv() {
                Ok(job) => {
                    bytes += job.batch.size_bytes();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let result = shared.apply(&jobs).map(|t| slow.record(B::NAME, t));
        if result.is_err() {
            shared.close_engine();
        } else {
            shared.groups.fetch_add(1, Ordering::Relaxed);
            shared
                .batches
                .fetch_add(jobs.len() as u64, Ordering::Relaxed);
        }
        for job in jobs {
            let _ = job.reply.send(result.clone());
        }
    }
}

impl<B: Backend> Drop for GroupStore<B> {
    fn drop(&mut self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl<B: Backend> Store for GroupStore<B> {
    fn backend_name(&self) -> &'static str {
        B::NAME
    }

    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let t = self.shared.tree(tree)?;
        {
            let _whole_groups = self.shared.gate.read().unwrap_or_else(|p| p.into_inner());
            self.shared.engine()?.get(t, key)
        }
    }

    fn range(
        &self,
        tree: &str,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let t = self.shared.tree(tree)?;
        if limit == 0 || to.is_some_and(|to| to <= from) {
            return Ok(Vec::new());
        }
        {
            let _whole_groups = self.shared.gate.read().unwrap_or_else(|p| p.into_inner());
            self.shared.engine()?.range(t, from, to, limit)
        }
    }

    fn keys(
        &self,
        tree: &str,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let t = self.shared.tree(tree)?;
        if limit == 0 || to.is_some_and(|to| to <= from) {
            return Ok(Vec::new());
        }
        {
            let _whole_groups = self.shared.gate.read().unwrap_or_else(|p| p.into_inner());
            self.shared.engine()?.keys(t, from, to, limit)
        }
    }

    fn last(&self, tree: &str) -> Result<Option<KeyValue>, StoreError> {
        let t = self.shared.tree(tree)?;
        {
            let _whole_groups = self.shared.gate.read().unwrap_or_else(|p| p.into_inner());
            self.shared.engine()?.last(t)
        }
    }

    fn submit(&self, batch: Batch) -> Result<Ticket, StoreError> {
        // Reject unknown trees here so one bad batch cannot fail a whole group.
        for op in batch.ops() {
            let (Op::Put { tree, .. } | Op::Delete { tree, .. }) = op;
            self.shared.tree(tree)?;
        }
        let (reply, rx) = mpsc::sync_channel(1);
        let guard = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let tx = guard.as_ref().ok_or(StoreError::Closed)?;
        tx.send(Job { batch, reply })
            .map_err(|_| StoreError::Closed)?;
        Ok(Ticket { rx })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn took(ms: u64) -> GroupTimes {
        GroupTimes {
            batches: 3,
            merge: Duration::ZERO,
            write: Duration::from_millis(ms / 2),
            sync: Duration::from_millis(ms - ms / 2),
        }
    }

    #[test]
    fn slow_groups_are_counted_and_reported_at_most_once_per_interval() {
        let mut s = SlowGroups::default();
        s.record("test", took(5));
        assert_eq!(
            (s.count, s.reported.is_some()),
            (0, false),
            "fast groups are not counted"
        );
        // The first slow group is reported at once; the report starts a new count.
        s.record("test", took(30));
        assert_eq!(s.count, 0);
        let first = s.reported;
        assert!(first.is_some());
        // Within the interval: counted, worst kept, not reported.
        s.record("test", took(25));
        s.record("test", took(60));
        s.record("test", took(40));
        assert_eq!(s.count, 3);
        assert_eq!(s.worst.total(), Duration::from_millis(60));
        assert_eq!(s.reported, first);
        // After the interval the next slow group reports and resets.
        let backdated = first.and_then(|r| r.checked_sub(SLOW_REPORT_EVERY));
        assert!(backdated.is_some());
        s.reported = backdated;
        s.record("test", took(21));
        assert_eq!(s.count, 0);
        assert_eq!(s.worst.total(), Duration::ZERO);
        assert!(s.reported > backdated);
    }
}
