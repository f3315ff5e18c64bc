//! The group committer shared by both backends.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{Batch, Coalesce, KeyValue, MergedGroup, Op, Store, StoreError};

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
    /// Per tree (same index as `trees`): the joiner of its continuing puts, if any ([`Store::coalesce`]).
    joiners: RwLock<Vec<Option<Arc<dyn Coalesce>>>>,
    groups: AtomicU64,
    batches: AtomicU64,
}

impl<B: Backend> Shared<B> {
    /// Not yet opened: the engine opens at first use.
    fn new(path: PathBuf, trees: &[&'static str]) -> Self {
        Shared {
            path,
            trees: trees.to_vec(),
            engine: RwLock::new(None),
            gate: RwLock::new(()),
            joiners: RwLock::new(vec![None; trees.len()]),
            groups: AtomicU64::new(0),
            batches: AtomicU64::new(0),
        }
    }

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

    fn merge<'a>(
        &self,
        jobs: &'a [Job],
        joined: &'a Joined<'a>,
    ) -> Result<MergedGroup<'a>, StoreError> {
        let mut merged: MergedGroup<'a> = vec![BTreeMap::new(); self.trees.len()];
        for job in jobs {
            for op in job.batch.ops() {
                match op {
                    Op::Put { tree, key, value } => {
                        let t = self.tree(tree)?;
                        if !joined.replaces(t, key) {
                            merged[t].insert(key.as_slice(), Some(value.as_slice()));
                        }
                    }
                    Op::Delete { tree, key } => {
                        merged[self.tree(tree)?].insert(key.as_slice(), None);
                    }
                }
            }
        }
        for (t, (key, value)) in &joined.puts {
            merged[*t].insert(key.as_slice(), Some(value.as_slice()));
        }
        Ok(merged)
    }

    /// The joined puts of trees with a [`Coalesce`] joiner: each maximal chain of puts that continue
    /// each other becomes one put. A tree is left as it is in a group that also deletes in it or puts one
    /// key twice (joining would change which write wins), and so is a chain its joiner declines.
    fn join<'a>(&self, jobs: &'a [Job]) -> Joined<'a> {
        let mut out = Joined::default();
        let joiners = self.joiners.read().unwrap_or_else(|p| p.into_inner());
        if joiners.iter().all(Option::is_none) {
            return out;
        }
        for (t, joiner) in joiners.iter().enumerate() {
            let (Some(joiner), Some(name)) = (joiner, self.trees.get(t)) else {
                continue;
            };
            let mut puts: Vec<(&'a [u8], &'a [u8])> = Vec::new();
            let mut plain = false;
            for op in jobs.iter().flat_map(|j| j.batch.ops()) {
                match op {
                    Op::Put { tree, key, value } if tree == name => {
                        puts.push((key.as_slice(), value.as_slice()));
                    }
                    Op::Delete { tree, .. } if tree == name => plain = true,
                    _ => {}
                }
            }
            if plain || puts.len() < 2 {
                continue;
            }
            let mut keys: Vec<&[u8]> = puts.iter().map(|p| p.0).collect();
            keys.sort_unstable();
            if keys.windows(2).any(|w| w[0] == w[1]) {
                continue;
            }
            let mut start = 0;
            for end in 1..=puts.len() {
                if end < puts.len() && joiner.continues(puts[end - 1], puts[end]) {
                    continue;
                }
                let chain = &puts[start..end];
                start = end;
                if chain.len() < 2 {
                    continue;
                }
                if let Some(kv) = joiner.join(chain) {
                    if out.replaced.len() <= t {
                        out.replaced.resize_with(t + 1, Vec::new);
                    }
                    out.replaced[t].extend(chain.iter().map(|p| p.0));
                    out.puts.push((t, kv));
                }
            }
        }
        for keys in &mut out.replaced {
            keys.sort_unstable();
        }
        out
    }

    /// Apply and sync one group; on success, how long its phases took.
    fn apply(&self, jobs: &[Job]) -> Result<GroupTimes, StoreError> {
        let t0 = Instant::now();
        // A joiner is an optimisation: should one panic, the group is written as given, and the
        // committer (every writer's) lives on.
        let joined = catch_unwind(AssertUnwindSafe(|| self.join(jobs))).unwrap_or_default();
        let merged = self.merge(jobs, &joined)?;
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

/// The puts a group's joiners made ([`Shared::join`]), and the parts they replace.
#[derive(Default)]
struct Joined<'a> {
    /// (tree index, joined put).
    puts: Vec<(usize, KeyValue)>,
    /// By tree index, the keys (sorted) of every put written as part of a joined one instead. Why not a
    /// set of (tree, key): `merge` asks about every put of the group, and hashing each key showed in
    /// profiles of the committer; puts of trees without a joiner are answered by the index alone.
    replaced: Vec<Vec<&'a [u8]>>,
}

impl Joined<'_> {
    fn replaces(&self, tree: usize, key: &[u8]) -> bool {
        self.replaced
            .get(tree)
            .is_some_and(|keys| keys.binary_search(&key).is_ok())
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
        let shared = Arc::new(Shared::new(path.as_ref().to_path_buf(), trees));
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

    fn coalesce(&self, tree: &str, joiner: Arc<dyn Coalesce>) -> Result<(), StoreError> {
        let t = self.shared.tree(tree)?;
        let mut joiners = self
            .shared
            .joiners
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = joiners.get_mut(t) {
            *slot = Some(joiner);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Test entries: key = last index (u64 BE), value = first index (u64 BE) ‖ one byte per index.
    struct Spans;

    fn span(first: u64, body: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let last = first + body.len() as u64 - 1;
        (
            last.to_be_bytes().to_vec(),
            [&first.to_be_bytes()[..], body].concat(),
        )
    }

    fn bounds(kv: (&[u8], &[u8])) -> Option<(u64, u64)> {
        let last = u64::from_be_bytes(kv.0.try_into().ok()?);
        let first = u64::from_be_bytes(kv.1.get(..8)?.try_into().ok()?);
        Some((first, last))
    }

    impl Coalesce for Spans {
        fn continues(&self, prev: (&[u8], &[u8]), next: (&[u8], &[u8])) -> bool {
            matches!((bounds(prev), bounds(next)), (Some((_, l)), Some((f, _))) if l + 1 == f)
        }
        fn join(&self, parts: &[(&[u8], &[u8])]) -> Option<KeyValue> {
            // Declines chains holding a `!`, as a joiner that cannot read a part would.
            if parts.iter().any(|p| p.1[8..].contains(&b'!')) {
                return None;
            }
            let (first, _) = bounds(parts[0])?;
            let body: Vec<u8> = parts.iter().flat_map(|p| p.1[8..].to_vec()).collect();
            Some(span(first, &body))
        }
    }

    fn shared(trees: &[&'static str]) -> Shared<crate::FjallBackend> {
        Shared::new(PathBuf::new(), trees)
    }

    /// A test write: a put, or (`None`) a delete.
    type TestOp = (&'static str, Option<KeyValue>);

    fn job(ops: &[TestOp]) -> Job {
        let mut batch = Batch::new();
        for (tree, op) in ops {
            match op {
                Some((k, v)) => batch.put(tree, k.clone(), v.clone()),
                None => batch.delete(tree, b"gone".to_vec()),
            }
        }
        Job {
            batch,
            reply: mpsc::sync_channel(1).0,
        }
    }

    /// The group as the engine would get it, values of tree `t` decoded as spans.
    fn written(
        s: &Shared<crate::FjallBackend>,
        jobs: &[Job],
        t: usize,
    ) -> Vec<(u64, u64, Vec<u8>)> {
        let joined = s.join(jobs);
        let merged = s.merge(jobs, &joined).unwrap();
        merged[t]
            .iter()
            .filter_map(|(k, v)| {
                let v = (*v)?;
                let (f, l) = bounds((k, v))?;
                Some((f, l, v[8..].to_vec()))
            })
            .collect()
    }

    #[test]
    fn continuing_puts_of_a_group_are_joined_and_the_rest_left_alone() {
        let s = shared(&["log", "other"]);
        s.joiners.write().unwrap()[0] = Some(Arc::new(Spans));
        let jobs = vec![
            job(&[
                ("log", Some(span(0, b"ab"))),
                ("other", Some(span(0, b"x"))),
            ]),
            job(&[("log", Some(span(2, b"c")))]),
            job(&[("other", Some(span(1, b"y")))]),
            job(&[("log", Some(span(3, b"de")))]),
            // A gap: a chain of its own.
            job(&[("log", Some(span(7, b"h")))]),
            job(&[("log", Some(span(8, b"ij")))]),
            // Alone after a gap: as it is.
            job(&[("log", Some(span(20, b"z")))]),
        ];
        assert_eq!(
            written(&s, &jobs, 0),
            vec![
                (0, 4, b"abcde".to_vec()),
                (7, 9, b"hij".to_vec()),
                (20, 20, b"z".to_vec())
            ]
        );
        // A tree without a joiner keeps one put per key.
        assert_eq!(
            written(&s, &jobs, 1),
            vec![(0, 0, b"x".to_vec()), (1, 1, b"y".to_vec())]
        );
    }

    #[test]
    fn no_joining_with_a_delete_a_repeated_key_or_a_declined_chain() {
        let s = shared(&["log"]);
        s.joiners.write().unwrap()[0] = Some(Arc::new(Spans));
        let parts = |jobs: &[Job]| written(&s, jobs, 0).len();
        // A delete in the tree: which write wins would change.
        let jobs = vec![
            job(&[("log", Some(span(0, b"a")))]),
            job(&[("log", None)]),
            job(&[("log", Some(span(1, b"b")))]),
        ];
        assert_eq!(parts(&jobs), 2);
        // One key put twice: the later write must win, as without a joiner.
        let jobs = vec![
            job(&[("log", Some(span(0, b"a")))]),
            job(&[("log", Some(span(1, b"b")))]),
            job(&[("log", Some(span(1, b"c")))]),
        ];
        assert_eq!(
            written(&s, &jobs, 0),
            vec![(0, 0, b"a".to_vec()), (1, 1, b"c".to_vec())]
        );
        // The joiner declines: the parts are written as they are.
        let jobs = vec![
            job(&[("log", Some(span(0, b"a")))]),
            job(&[("log", Some(span(1, b"!")))]),
        ];
        assert_eq!(parts(&jobs), 2);
    }

    /// A joiner that panics.
    struct Broken;

    impl Coalesce for Broken {
        fn continues(&self, _: (&[u8], &[u8]), _: (&[u8], &[u8])) -> bool {
            true
        }
        fn join(&self, _: &[(&[u8], &[u8])]) -> Option<KeyValue> {
            panic!("a broken joiner")
        }
    }

    /// One writer per `(index, byte)`, each a one-index span in `log`, all queued while a reader holds
    /// the gate the committer needs to apply a group; then released, and every writer answered.
    fn put_behind_the_gate(store: &crate::FjallStore, puts: impl Iterator<Item = (u64, u8)>) {
        let gate = store.shared.gate.read().unwrap();
        let tickets: Vec<Ticket> = puts
            .map(|(i, byte)| {
                let mut b = Batch::new();
                let (k, v) = span(i, &[byte]);
                b.put("log", k, v);
                store.submit(b).unwrap()
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        drop(gate);
        for t in tickets {
            t.wait().unwrap();
        }
    }

    #[test]
    fn a_panicking_joiner_leaves_the_group_as_given_and_the_committer_alive() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::FjallStore::open(dir.path(), &["log"]).unwrap();
        store.coalesce("log", Arc::new(Broken)).unwrap();
        for round in 0..2u64 {
            put_behind_the_gate(&store, (0..4).map(|i| (round * 4 + i, b'x')));
        }
        assert_eq!(store.range("log", &[], None, 100).unwrap().len(), 8);
    }

    #[test]
    fn a_held_committer_joins_the_writers_queued_behind_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::FjallStore::open(dir.path(), &["log"]).unwrap();
        store.coalesce("log", Arc::new(Spans)).unwrap();
        assert!(store.coalesce("nope", Arc::new(Spans)).is_err());
        put_behind_the_gate(&store, (0..10).map(|i| (i, b'a' + i as u8)));
        let rows = store.range("log", &[], None, 100).unwrap();
        // At most the group the committer held plus one for the rest.
        assert!(
            rows.len() <= 2,
            "{} keys for 10 continuing puts",
            rows.len()
        );
        let body: Vec<u8> = rows.iter().flat_map(|(_, v)| v[8..].to_vec()).collect();
        assert_eq!(body, b"abcdefghij");
        assert_eq!(bounds((&rows[0].0, &rows[0].1)).unwrap().0, 0);
        assert_eq!(rows.last().unwrap().0, 9u64.to_be_bytes());
    }

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
