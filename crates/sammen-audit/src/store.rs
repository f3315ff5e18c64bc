//! The durable log: trees in a [`sammen_store::Store`], the staging API and checkpointing.
//!
//! ## On-disk layout (trees in [`trees`], added to the store's tree list by whoever opens it)
//! | tree | key | value |
//! |---|---|---|
//! | `audit_leaves` | index (u64 BE) | canonical leaf bytes ([`crate::leaf`]): a batch's only leaf |
//! | `audit_leaves` | last index of the run (u64 BE) | the leaves of a batch of several, or of the batches one group commit joined ([`crate::runs`]) |
//! | `audit_nodes` | `0xfe` ‖ end (u64 BE) | node chunk: start (u64 BE) ‖ the 32-byte hashes of levels 0 and 4 and up, by level, each level's nodes `start >> l .. end >> l` in index order |
//! | `audit_nodes` | `0xff` ‖ end (u64 BE) | named node chunk (older logs): start (u64 BE) ‖ entries `level (u8) ‖ index (u64 BE) ‖ hash (32)`, sorted by (level, index) |
//! | `audit_nodes` | level (u8) ‖ index (u64 BE) | 32-byte hash of that perfect subtree (older logs) |
//! | `audit_checkpoints` | seq (u64 BE) | signed checkpoint note text |
//! | `audit_meta` | `nodes_size` | u64 BE: the tree size the stored nodes cover (= last checkpoint's) |
//! | `audit_meta` | `index_size` | u64 BE: the leaves the posting lists cover (≤ `nodes_size`; absent in older logs: = `nodes_size`) |
//! | `audit_meta` | `key` ‖ seq (u64 BE) | 32-byte Ed25519 public key, seq 0 = genesis key |
//! | `audit_index` | `}` ‖ `g`/`s` ‖ len (u16 BE) ‖ value ‖ first (u64 BE) | indices as LEB128 gaps, the first from `first`: GLN, SOR (and message id `m`, patient `p` in older logs) |
//! | `audit_index` | `}` ‖ `M`/`P` ‖ bucket (u8) ‖ first (u64 BE) | message ids, patients hashed into 256 buckets: per value, `hash (low 32 bits of XXH3-64, BE) ‖ count (LEB128) ‖ indices as LEB128 gaps from first` (see `index`) |
//! | `audit_index` | `~` ‖ `m`/`g`/`s`/`p` ‖ len (u16 BE) ‖ value ‖ first | indices (u64 BE each): the same (older logs) |
//! | `audit_index` | `~t` ‖ latest time_ms (u64 BE) ‖ first | earliest time_ms ‖ end (u64 BE each): time |
//! | `audit_index` | `m`/`g`/`s`/`p` ‖ len (u16 BE) ‖ value ‖ index | (empty): the same, one key per leaf (older logs) |
//! | `audit_index` | `t` ‖ time_ms (u64 BE) ‖ index | (empty): time, one key per leaf (older logs) |
//!
//! Nodes are written with each checkpoint, in the same batch as the checkpoint record, so every node of
//! the tree at the last checkpoint is stored and proofs against it need `O(log n)` reads. Nodes completed
//! since then live in memory and are recomputed from the leaves at open (at most one checkpoint interval).
//! A checkpoint stores its nodes as **one chunk**: every node completed by the leaves `[start, end)` it
//! adds (node `(l, i)` is completed by leaf `(i + 1)·2^l − 1`), found by the first chunk key `≥ 0xfe ‖
//! completing leaf + 1`. Why: one key per node was about two memtable inserts per leaf in the committer,
//! the largest part of the audit's cost on the accept path. Leaf hashes (level 0) stay stored one by one
//! inside the chunk, so `verify` still names a changed leaf. A chunk (version 2) holds only hashes, each
//! at the place its level and index give, and leaves out levels 1–3: a node there is the hash of its
//! children, at most 7 hashes of reading away. Why: naming each node and storing those levels was over
//! half of every chunk (about 120 of 225 bytes a message, kept for good). Logs written before this carry
//! one key per node, or chunks whose entries name their node (`0xff`); lookups try the node's key, then
//! a version-2 chunk, then a named one, so those data dirs keep working unchanged.
//!
//! The search index is written the same way: the checkpoint batch carries one posting list per value for
//! the leaves `[first, end)` it covers (`~` keys), so it covers exactly the leaves below `nodes_size`; the
//! unsigned tail is searched by reading its leaves. A leaf's own batch carries only the leaf. Why: the
//! index is a convenience, not evidence, and five keys per leaf in the accept batch (each a memtable
//! insert in the committer) were most of the audit's cost on the accept path, while one list per value
//! per checkpoint is a few keys. A list holds its indices as LEB128 gaps (`}` keys): one or two bytes
//! an index instead of eight. Message ids and patients, nearly unique per message, go into 256 hashed
//! buckets a window instead of one list per value (one key per message was still about a sixth of the
//! audit's instructions). Logs written before this carry one list per message id and patient, lists of
//! u64 indices (`~`) or one key per leaf (no `~`); search reads all of them, so those data dirs keep
//! working unchanged.
//!
//! The periodic checkpoint writes the lists only once [`INDEX_WINDOW`] leaves wait for them (an explicit
//! one, e.g. at shutdown, always does, even with nothing new to sign), and `index_size` marks how far
//! they reach; search reads every leaf from there on. Why: a message's leaves that fall in two windows
//! cost two message-id keys, and under load its `published` leaf usually lands a checkpoint after its
//! `accepted` one. The waiting leaves' search keys are kept in memory and rebuilt at open from the leaves
//! between `index_size` and the tree's end.
//!
//! ## Staging: no change without its leaf, no leaf without its change
//! A caller adds the leaf's puts to the very [`Batch`] that carries its state change
//! ([`AuditLog::stage`]), so the store commits both or neither. The index is handed out at staging time;
//! the in-memory tree takes the leaf only once the caller reports the commit ([`AuditLog::committed`]).
//! Commits are folded in index order, whatever order the waiters wake up in.
//!
//! Rules for callers of the low-level `stage`: submit batches to the store **in staging order** (hold one
//! lock across `stage` + `Store::submit`, as the outbox already does for its ids), and report every staged
//! leaf exactly once with `committed` or `failed`. [`AuditLog::submit`] does all of that in one call.
//!
//! A failed batch leaves its index unused while later batches may already be committed (group commit).
//! When the tree reaches a failed index it looks in the store: if the batch landed after all (the store
//! only promises "assume not"), the leaf is taken; if not, a [`crate::Event::LostWrite`] leaf is committed
//! at that index so the tree stays contiguous and says openly that nothing was recorded there. If even
//! that write fails (disk still full), the hole stays and is retried at every later settle and
//! checkpoint: later batches keep committing, the tree just does not grow past the hole until it is
//! filled (so a full disk is not a permanent outage). Only a *different* leaf under the index poisons
//! the log (every call errs until reopened). A crash while a hole is open leaves it in the store, which
//! [`AuditLog::open`] refuses ([`AuditError::Gap`]): an operator must look.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sammen_store::{Batch, Store, Ticket};

use crate::checkpoint::{key_hash, Checkpoint, SignedCheckpoint};
use crate::error::{AuditError, Finding};
use crate::index::{postings, IndexKeys};
use crate::keys::fingerprint;
use crate::leaf::{rotation_message, Event, Leaf, LeafEvent, LeafIndex, Outcome, PatientKey};
use crate::leaf_bin::View;
use crate::runs;
use crate::tree::{
    leaf_hash, node_hash, perfect_decomposition, subtree_root, CompactRange, Hash, NodeSource,
};

/// Tree names; add [`trees::ALL`] to the list the shared store is opened with.
pub mod trees {
    /// Leaves by index.
    pub const LEAVES: &str = "audit_leaves";
    /// Perfect-subtree hashes.
    pub const NODES: &str = "audit_nodes";
    /// Signed checkpoints by sequence number.
    pub const CHECKPOINTS: &str = "audit_checkpoints";
    /// Search index.
    pub const INDEX: &str = "audit_index";
    /// Node coverage and the key chain.
    pub const META: &str = "audit_meta";
    /// Every audit tree.
    pub const ALL: [&str; 5] = [LEAVES, NODES, CHECKPOINTS, INDEX, META];
}

pub(crate) const META_NODES_SIZE: &[u8] = b"nodes_size";
/// Leaves below this are in the search index's posting lists; absent in logs written before it, whose
/// index always covered `nodes_size`.
pub(crate) const META_INDEX_SIZE: &[u8] = b"index_size";
/// The periodic checkpoint ([`AuditLog::maybe_checkpoint`]) writes posting lists only once this many
/// leaves wait for them (an explicit checkpoint always writes them). Why: a list is one key per value per
/// window, and a message's leaves that fall in two windows (its `published` leaf lands a checkpoint after
/// its `accepted` one under load) cost two message-id keys; those keys were about a third of the audit's
/// instructions per message (`examples/audit_instructions`). The bound on memory (the waiting leaves'
/// search keys, about 200 bytes each) and on the search tail (read leaf by leaf) is this constant.
pub(crate) const INDEX_WINDOW: usize = 16_384;
pub(crate) const META_KEY_PREFIX: &[u8] = b"key";

pub(crate) fn u64_key(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

pub(crate) fn node_key(level: u8, index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = level;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

/// First byte of version-1 node-chunk keys (no tree has 255 levels): entries name their node.
pub(crate) const NODE_CHUNK: u8 = 0xff;
/// Bytes per version-1 node-chunk entry: level, index, hash.
const CHUNK_ENTRY: usize = 1 + 8 + 32;
/// First byte of version-2 node-chunk keys: hashes only, each node's place given by the chunk's range.
pub(crate) const NODE_CHUNK_V2: u8 = 0xfe;
/// Levels a version-2 chunk leaves out (`1..=SKIPPED_LEVELS`): recomputed from the level below on read.
/// Level 0 stays (so `verify` names a changed leaf), and so do the levels above, so a node is at most
/// `2^(SKIPPED_LEVELS + 1) - 1` hashes away from stored ones.
const SKIPPED_LEVELS: u8 = 3;

/// Whether a version-2 chunk stores level `l`.
fn v2_stores(l: u8) -> bool {
    l == 0 || l > SKIPPED_LEVELS
}

/// Where each stored level of the version-2 chunk of leaves `[start, end)` begins, in hashes from the
/// first: level `l` holds the nodes `start >> l .. end >> l` (exactly those the leaves complete), levels
/// in ascending order. The last element is the total.
fn v2_offsets(start: u64, end: u64) -> Vec<(u8, u64)> {
    let mut out = Vec::new();
    let mut at = 0u64;
    for l in 0..64u8 {
        let (lo, hi) = (start >> l, end >> l);
        if hi <= lo && l > 0 {
            break;
        }
        if v2_stores(l) {
            out.push((l, at));
            at += hi.saturating_sub(lo);
        }
    }
    out.push((u8::MAX, at));
    out
}

/// Perfect nodes completed since the last checkpoint's batch, in the order the tree completed them,
/// which is the order of their completing leaf ([`completing_leaf`]): appending allocates nothing per
/// node, a checkpoint takes a prefix, a lookup is a binary search. (A `BTreeMap` here was cloned whole
/// at every checkpoint, some 40,000 nodes a second under load, and its allocations were a visible part of
/// the audit's cost on the accept path.)
#[derive(Debug, Default)]
pub(crate) struct MemNodes {
    nodes: Vec<(u8, u64, Hash)>,
}

impl MemNodes {
    fn push(&mut self, level: u8, index: u64, h: Hash) {
        self.nodes.push((level, index, h));
    }

    fn len(&self) -> usize {
        self.nodes.len()
    }

    pub(crate) fn get(&self, level: u8, index: u64) -> Option<Hash> {
        let leaf = completing_leaf(level, index)?;
        let completes = |&(l, i, _): &(u8, u64, Hash)| completing_leaf(l, i).unwrap_or(u64::MAX);
        let from = self.nodes.partition_point(|n| completes(n) < leaf);
        self.nodes
            .get(from..)?
            .iter()
            .take_while(|n| completes(n) == leaf)
            .find(|n| n.0 == level && n.1 == index)
            .map(|n| n.2)
    }

    /// Every leaf completes its own level-0 node first, so the first node names the chunk's start.
    fn start(&self, end: u64) -> u64 {
        match self.nodes.first() {
            Some(&(0, i, _)) => i,
            _ => end,
        }
    }

    /// The key and value of the version-2 chunk holding the nodes here, for the leaves up to `end`: the
    /// hashes of the stored levels, each at the place its (level, index) gives. Why: naming every node
    /// (9 bytes) and storing levels 1–3 (7 of every 8 nodes above level 0) was over half of a chunk,
    /// which is written for every leaf and kept for good. Falls back to a version-1 chunk should the
    /// nodes not be exactly those the leaves complete (they always are; a wrong chunk would be damage).
    fn chunk(&self, end: u64) -> (Vec<u8>, Vec<u8>) {
        let start = self.start(end);
        let offsets = v2_offsets(start, end);
        let total = offsets.last().map_or(0, |o| o.1);
        let mut v = vec![0u8; 8 + 32 * total as usize];
        v[..8].copy_from_slice(&start.to_be_bytes());
        let mut placed = 0u64;
        for &(l, i, h) in &self.nodes {
            if !v2_stores(l) {
                continue;
            }
            let place = offsets
                .iter()
                .find(|o| o.0 == l)
                .and_then(|o| Some(o.1 + i.checked_sub(start >> l)?))
                .filter(|&p| i < end >> l && p < total);
            let Some(p) = place else {
                return self.chunk_v1(end);
            };
            let o = 8 + 32 * p as usize;
            v[o..o + 32].copy_from_slice(&h);
            placed += 1;
        }
        if placed != total {
            return self.chunk_v1(end);
        }
        (node_key(NODE_CHUNK_V2, end).to_vec(), v)
    }

    /// The version-1 chunk of the nodes here: entries sorted by (level, index), each naming its node.
    /// Within one level completion order is index order, so a counting sort by level does it.
    fn chunk_v1(&self, end: u64) -> (Vec<u8>, Vec<u8>) {
        let start = self.start(end);
        let mut at = [0usize; 256];
        for &(l, _, _) in &self.nodes {
            at[usize::from(l)] += 1;
        }
        let mut offset = 8;
        for slot in at.iter_mut() {
            let count = *slot;
            *slot = offset;
            offset += count * CHUNK_ENTRY;
        }
        let mut v = vec![0u8; offset];
        v[..8].copy_from_slice(&start.to_be_bytes());
        for &(l, i, h) in &self.nodes {
            let o = at[usize::from(l)];
            v[o] = l;
            v[o + 1..o + 9].copy_from_slice(&i.to_be_bytes());
            v[o + 9..o + CHUNK_ENTRY].copy_from_slice(&h);
            at[usize::from(l)] = o + CHUNK_ENTRY;
        }
        (node_key(NODE_CHUNK, end).to_vec(), v)
    }

    /// Forget the first `n` nodes (stored by a checkpoint).
    fn drop_first(&mut self, n: usize) {
        self.nodes.drain(..n.min(self.nodes.len()));
    }
}

/// The leaf whose append completes node `(level, index)`; `None` past `u64`.
fn completing_leaf(level: u8, index: u64) -> Option<u64> {
    index
        .checked_add(1)?
        .checked_mul(1u64.checked_shl(u32::from(level))?)?
        .checked_sub(1)
}

/// A node chunk read back: the leaves `[start, end)` whose nodes it holds, and its entries.
struct Chunk {
    start: u64,
    end: u64,
    /// Version 2 (hashes only, levels `1..=SKIPPED_LEVELS` left out): where each stored level begins
    /// ([`v2_offsets`], worked out once per chunk read, not per lookup); `None` for version 1 (named
    /// entries).
    v2: Option<Vec<(u8, u64)>>,
    entries: Vec<u8>,
}

/// What a chunk says about a node it covers.
#[derive(Debug, PartialEq)]
enum Found {
    Hash(Hash),
    /// Left out of a version-2 chunk: the hash of its two children.
    Children,
    /// Not there (a malformed chunk holds nothing).
    Missing,
}

impl Chunk {
    /// A chunk of the leaves `[start, end)` as read back; `v2` says which layout `entries` has.
    fn new(start: u64, end: u64, v2: bool, entries: Vec<u8>) -> Self {
        Chunk {
            start,
            end,
            v2: v2.then(|| v2_offsets(start, end)),
            entries,
        }
    }

    fn find(&self, level: u8, index: u64) -> Found {
        let found = match &self.v2 {
            Some(offsets) => self.find_v2(offsets, level, index),
            None => self.find_v1(level, index),
        };
        match found {
            Some(f) => f,
            None => Found::Missing,
        }
    }

    fn find_v2(&self, offsets: &[(u8, u64)], level: u8, index: u64) -> Option<Found> {
        let (lo, hi) = (
            self.start.checked_shr(level.into())?,
            self.end.checked_shr(level.into())?,
        );
        if !(lo..hi).contains(&index) {
            return None;
        }
        if !v2_stores(level) {
            return Some(Found::Children);
        }
        let total = offsets.last()?.1;
        if self.entries.len() as u64 != 32 * total {
            return None;
        }
        let at = offsets.iter().find(|o| o.0 == level)?.1 + (index - lo);
        let at = usize::try_from(at).ok()?.checked_mul(32)?;
        Some(Found::Hash(self.entries.get(at..at + 32)?.try_into().ok()?))
    }

    fn find_v1(&self, level: u8, index: u64) -> Option<Found> {
        let n = self.entries.len() / CHUNK_ENTRY;
        let entry = |k: usize| -> Option<((u8, u64), Hash)> {
            let e = self.entries.get(k * CHUNK_ENTRY..(k + 1) * CHUNK_ENTRY)?;
            let i = u64::from_be_bytes(e.get(1..9)?.try_into().ok()?);
            Some(((e[0], i), e.get(9..)?.try_into().ok()?))
        };
        let (mut lo, mut hi) = (0usize, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (key, h) = entry(mid)?;
            match key.cmp(&(level, index)) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(Found::Hash(h)),
            }
        }
        None
    }
}

pub(crate) fn meta_key_entry(seq: u64) -> Vec<u8> {
    [META_KEY_PREFIX, &seq.to_be_bytes()].concat()
}

/// A leaf encoded and hashed outside the log's lock (the costly part of staging).
struct Prepared {
    bytes: Vec<u8>,
    hash: Hash,
    keys: IndexKeys,
}

/// Encode and hash `leaf` as it is, any version (outside the log's lock).
fn prepare_leaf(leaf: &Leaf) -> Prepared {
    let bytes = leaf.encode();
    Prepared {
        hash: leaf_hash(&bytes),
        keys: IndexKeys::of(&leaf.view()),
        bytes,
    }
}

/// Encode and hash the leaf `view` gives (outside the log's lock).
fn prepare_view(view: &View<'_>) -> Prepared {
    let bytes = crate::leaf_bin::encode(view);
    Prepared {
        hash: leaf_hash(&bytes),
        keys: IndexKeys::of(view),
        bytes,
    }
}

/// `chunk`'s posting lists and the index's new mark (`size`; unchanged when `chunk` is empty).
fn put_index(batch: &mut Batch, chunk: &[(u64, IndexKeys)], size: u64) {
    for (k, v) in postings(chunk) {
        batch.put(trees::INDEX, k, v);
    }
    batch.put(
        trees::META,
        META_INDEX_SIZE.to_vec(),
        u64_key(size).to_vec(),
    );
}

pub(crate) fn decode_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How the log runs.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Log identity, first line of every checkpoint (e.g. `sammen.region-h.dk/audit`).
    pub origin: String,
    /// Checkpoint after this many new leaves (N).
    pub checkpoint_every: u64,
    /// ... or after this many milliseconds with new leaves (T).
    pub checkpoint_interval_ms: u64,
    /// Where the latest checkpoint is exported (`<dir>/checkpoint`); `None`: not exported.
    pub export_dir: Option<PathBuf>,
    /// HMAC key for patient pseudonyms.
    pub patient_key: PatientKey,
}

/// What became of a failed index.
enum Resolved {
    /// Fold this hash (the leaf landed after all, or a `lost-write` leaf now fills the index), indexed
    /// under these key prefixes.
    Take(Hash, IndexKeys),
    /// The filler could not be written either (e.g. disk still full): retry later.
    Retry,
    /// The index holds a different leaf: the log cannot continue.
    Poison,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    InFlight,
    Done,
    Failed,
}

struct State {
    next: u64,
    edge: CompactRange,
    /// Perfect nodes completed since the last checkpoint's batch.
    mem: MemNodes,
    /// Staged leaves not yet folded into the tree: always exactly the indices from the tree's size up
    /// to `next` (staging appends, folding takes the front), so leaf `edge.size() + k` is entry `k`. A
    /// ring buffer, not a map: no node allocation and no search per leaf.
    pending: VecDeque<Staging>,
    /// Folded leaves not yet in the search index, from `index_size` on (written with a checkpoint once
    /// [`INDEX_WINDOW`] wait, or with an explicit one).
    unindexed: Vec<(u64, IndexKeys)>,
    /// Leaves below this are in the stored posting lists.
    index_size: u64,
    last: Option<SignedCheckpoint>,
    next_seq: u64,
    keys: Vec<VerifyingKey>,
    poisoned: bool,
}

/// A staged leaf's hash, its fate so far and its search keys (without the index).
struct Staging {
    hash: Hash,
    settle: Settle,
    keys: IndexKeys,
}

/// A leaf handed an index and added to a batch, not yet known to be durable.
#[derive(Debug)]
#[must_use = "report the batch's fate with AuditLog::committed or AuditLog::failed"]
pub struct Staged {
    index: LeafIndex,
}

impl Staged {
    /// The leaf's index.
    pub fn index(&self) -> LeafIndex {
        self.index
    }
}

/// A batch submitted through [`AuditLog::submit`]; wait for it.
#[must_use = "wait for the batch"]
pub struct PendingCommit<'a, S: Store> {
    log: &'a AuditLog<S>,
    ticket: Ticket,
    staged: Vec<Staged>,
}

impl<S: Store> PendingCommit<'_, S> {
    /// The indices of the leaves in this batch.
    pub fn indices(&self) -> Vec<LeafIndex> {
        self.staged.iter().map(Staged::index).collect()
    }

    /// Block until the batch (state change and leaves) is durable, then fold the leaves into the tree.
    pub fn wait(self) -> Result<Vec<LeafIndex>, AuditError> {
        let idx = self.indices();
        match self.ticket.wait() {
            Ok(()) => {
                self.log.settle(self.staged, Settle::Done)?;
                Ok(idx)
            }
            Err(e) => {
                self.log.settle(self.staged, Settle::Failed)?;
                Err(e.into())
            }
        }
    }
}

/// The live, append-only audit log over a shared store.
pub struct AuditLog<S: Store> {
    store: S,
    config: AuditConfig,
    state: Mutex<State>,
    signer: Mutex<SigningKey>,
    checkpointing: Mutex<()>,
}

impl<S: Store> std::fmt::Debug for AuditLog<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("origin", &self.config.origin)
            .finish_non_exhaustive()
    }
}

/// Nodes from memory first, then the store (a node's own key, then its chunk).
pub(crate) struct LogNodes<'a, S: Store + ?Sized> {
    store: &'a S,
    mem: Option<&'a MemNodes>,
    /// The chunk read last: `verify` walks the nodes in order, proofs touch few chunks.
    chunk: std::cell::RefCell<Option<Chunk>>,
}

impl<'a, S: Store + ?Sized> LogNodes<'a, S> {
    pub(crate) fn new(store: &'a S, mem: Option<&'a MemNodes>) -> Self {
        LogNodes {
            store,
            mem,
            chunk: std::cell::RefCell::new(None),
        }
    }

    /// The stored hash of node `(level, index)`, if any (a malformed chunk holds none). A node a
    /// version-2 chunk leaves out is the hash of its stored children.
    pub(crate) fn stored(&self, level: u8, index: u64) -> Result<Option<Hash>, AuditError> {
        self.stored_from(level, index, true)
    }

    /// [`Self::stored`]; `own_key` first tries the node's own key. A left-out node's children skip it
    /// when the chunk read last holds them: each child is also looked up by itself (by `verify`, and by
    /// proofs), own key first, so a stray key under a child is still found and refused there.
    fn stored_from(
        &self,
        level: u8,
        index: u64,
        own_key: bool,
    ) -> Result<Option<Hash>, AuditError> {
        if let Some(h) = self.mem.and_then(|m| m.get(level, index)) {
            return Ok(Some(h));
        }
        let Some(leaf) = completing_leaf(level, index) else {
            return Ok(None);
        };
        let covers =
            |c: &Option<Chunk>| c.as_ref().is_some_and(|c| c.start <= leaf && leaf < c.end);
        let cached = covers(&self.chunk.borrow());
        if own_key || !cached {
            if let Some(v) = self.store.get(trees::NODES, &node_key(level, index))? {
                return Ok(<[u8; 32]>::try_from(v.as_slice()).ok());
            }
        }
        if !cached {
            // Chunk keys sort after every per-node key, version 2 before version 1 (which only older
            // logs hold, for their earlier leaves): the first of either at or after `leaf + 1` is the
            // one, if it starts at or before `leaf`.
            let mut chunk = None;
            for tag in [NODE_CHUNK_V2, NODE_CHUNK] {
                let from = node_key(tag, leaf.saturating_add(1));
                let found = self.store.range(trees::NODES, &from, None, 1)?;
                chunk = found.into_iter().next().and_then(|(k, v)| {
                    let end = u64::from_be_bytes(k.get(1..9)?.try_into().ok()?);
                    let start = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
                    (k.first() == Some(&tag)).then(|| {
                        let entries = v.get(8..).map(<[u8]>::to_vec).unwrap_or_default();
                        Chunk::new(start, end, tag == NODE_CHUNK_V2, entries)
                    })
                });
                if covers(&chunk) {
                    break;
                }
            }
            *self.chunk.borrow_mut() = chunk;
        }
        let found = match self.chunk.borrow().as_ref() {
            Some(c) if c.start <= leaf && leaf < c.end => c.find(level, index),
            _ => Found::Missing,
        };
        match found {
            Found::Hash(h) => Ok(Some(h)),
            Found::Missing => Ok(None),
            // Children are completed before their parent, so they lie in this chunk or an earlier one.
            Found::Children => {
                let (Some(l), Some(r)) = (
                    self.stored_from(level - 1, 2 * index, false)?,
                    self.stored_from(level - 1, 2 * index + 1, false)?,
                ) else {
                    return Ok(None);
                };
                Ok(Some(node_hash(&l, &r)))
            }
        }
    }
}

impl<S: Store + ?Sized> NodeSource for LogNodes<'_, S> {
    type Error = AuditError;
    fn node(&self, level: u8, index: u64) -> Result<Hash, AuditError> {
        self.stored(level, index)?
            .ok_or(AuditError::Tampered(Finding::BadNode { level, index }))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Read the key chain from `audit_meta`.
pub(crate) fn read_key_chain<S: Store + ?Sized>(
    store: &S,
) -> Result<Vec<VerifyingKey>, AuditError> {
    let rows = store.scan_prefix(trees::META, META_KEY_PREFIX, usize::MAX)?;
    rows.iter()
        .map(|(_, v)| {
            <[u8; 32]>::try_from(v.as_slice())
                .ok()
                .and_then(|b| VerifyingKey::from_bytes(&b).ok())
                .ok_or_else(|| AuditError::Config("malformed key in the key chain".into()))
        })
        .collect()
}

/// Check a checkpoint against the current tree (signature by some chain key, size, root).
fn check_against_tree<S: Store + ?Sized>(
    nodes: &LogNodes<'_, S>,
    size: u64,
    cp: &SignedCheckpoint,
    keys: &[VerifyingKey],
    source_name: &'static str,
) -> Result<(), AuditError> {
    if !keys.iter().any(|k| cp.verify(k).is_ok()) {
        return Err(AuditError::Checkpoint(format!(
            "{source_name} checkpoint is not signed by any key of this log"
        )));
    }
    let c = &cp.checkpoint;
    if c.size > size {
        return Err(AuditError::Rollback {
            stored: size,
            checkpoint: c.size,
            source_name,
        });
    }
    if subtree_root(nodes, 0, c.size)? != c.root {
        return Err(AuditError::Inconsistent {
            size: c.size,
            source_name,
        });
    }
    Ok(())
}

impl<S: Store> AuditLog<S> {
    /// Open (or create) the log in `store`, which must have been opened with [`trees::ALL`].
    ///
    /// Refuses with a typed error when the stored log is shorter than ([`AuditError::Rollback`]) or does
    /// not extend ([`AuditError::Inconsistent`]) the last stored or exported checkpoint, when a leaf is
    /// missing ([`AuditError::Gap`]), or when `signer` is not the log's current key. A new log gets leaf 0,
    /// [`Event::LogCreated`], naming `signer`'s public key.
    pub fn open(store: S, config: AuditConfig, signer: SigningKey) -> Result<Self, AuditError> {
        // The runs of batches that share a group commit are stored as one run (one key per group).
        store.coalesce(trees::LEAVES, std::sync::Arc::new(runs::Joiner))?;
        let nodes_size = match store.get(trees::META, META_NODES_SIZE)? {
            Some(v) => {
                decode_u64(&v).ok_or_else(|| AuditError::Config("malformed nodes_size".into()))?
            }
            None => 0,
        };
        let leaf_count = store
            .last(trees::LEAVES)?
            .and_then(|(k, _)| decode_u64(&k))
            .map_or(0, |i| i + 1);
        if leaf_count < nodes_size {
            return Err(AuditError::Rollback {
                stored: leaf_count,
                checkpoint: nodes_size,
                source_name: "stored",
            });
        }
        let src = LogNodes::new(&store, None);
        let parts = perfect_decomposition(0, nodes_size)
            .into_iter()
            .map(|(l, i)| src.node(l, i))
            .collect::<Result<Vec<_>, _>>()?;
        let mut edge = CompactRange::from_parts(nodes_size, &parts)
            .ok_or_else(|| AuditError::Config("bad node decomposition".into()))?;
        let mut mem = MemNodes::default();
        let mut unindexed = Vec::new();
        let index_size = match store.get(trees::META, META_INDEX_SIZE)? {
            Some(v) => decode_u64(&v)
                .ok_or_else(|| AuditError::Config("malformed index_size".into()))?
                .min(nodes_size),
            None => nodes_size,
        };
        // Signed but not yet indexed: their search keys wait for the next posting lists. Damage here is
        // verify's business (the broker started on such a log before this was read); indexing stops there.
        let _ = runs::for_each(
            &store,
            index_size,
            |i, v| {
                if i >= nodes_size {
                    return Err(AuditError::Gap(i)); // done: the rest is read below
                }
                if let Ok(leaf) = Leaf::decode(v) {
                    unindexed.push((i, IndexKeys::of(&leaf.view())));
                }
                Ok(())
            },
            |i, _| AuditError::Gap(i),
        );
        runs::for_each(
            &store,
            nodes_size,
            |i, v| {
                if i != edge.size() {
                    return Err(AuditError::Gap(edge.size()));
                }
                edge.push(leaf_hash(v), |l, i, h| mem.push(l, i, *h));
                // Index the unsigned tail again; a leaf that does not decode is verify's business.
                if let Ok(leaf) = Leaf::decode(v) {
                    unindexed.push((i, IndexKeys::of(&leaf.view())));
                }
                Ok(())
            },
            |i, _| AuditError::Gap(i),
        )?;
        let keys = read_key_chain(&store)?;
        let last = match store.last(trees::CHECKPOINTS)? {
            Some((k, v)) => {
                let seq = decode_u64(&k)
                    .ok_or_else(|| AuditError::Checkpoint("malformed checkpoint key".into()))?;
                let text = String::from_utf8(v)
                    .map_err(|_| AuditError::Checkpoint("checkpoint is not UTF-8".into()))?;
                Some((seq, SignedCheckpoint::parse(&text)?))
            }
            None => None,
        };
        {
            let nodes = LogNodes::new(&store, Some(&mem));
            if let Some((_, cp)) = &last {
                check_against_tree(&nodes, edge.size(), cp, &keys, "stored")?;
            }
            if let Some(dir) = &config.export_dir {
                if let Some(cp) = crate::export::read_exported(dir)? {
                    if cp.checkpoint.origin != config.origin {
                        return Err(AuditError::Checkpoint(
                            "exported checkpoint names another origin".into(),
                        ));
                    }
                    check_against_tree(&nodes, edge.size(), &cp, &keys, "exported")?;
                }
            }
        }
        let size = edge.size();
        let next_seq = last.as_ref().map_or(0, |(s, _)| s + 1);
        let log = AuditLog {
            store,
            state: Mutex::new(State {
                next: size,
                edge,
                mem,
                pending: VecDeque::new(),
                unindexed,
                index_size,
                last: last.map(|(_, c)| c),
                next_seq,
                keys,
                poisoned: false,
            }),
            signer: Mutex::new(signer),
            config,
            checkpointing: Mutex::new(()),
        };
        log.start()?;
        Ok(log)
    }

    /// Write the genesis leaf of a new log, or check the signer against the key chain.
    fn start(&self) -> Result<(), AuditError> {
        let signer = lock(&self.signer).verifying_key();
        let (size, current) = {
            let st = lock(&self.state);
            (st.edge.size(), st.keys.last().copied())
        };
        match (size, current) {
            (0, _) => {
                let mut batch = Batch::new();
                batch.put(trees::META, meta_key_entry(0), signer.as_bytes().to_vec());
                let ev = LeafEvent::new(
                    now_ms(),
                    Event::LogCreated {
                        key: B64.encode(signer.as_bytes()),
                    },
                    Outcome::Success,
                );
                self.submit(batch, vec![ev])?.wait()?;
                lock(&self.state).keys = vec![signer];
                Ok(())
            }
            (_, Some(k)) if k == signer => Ok(()),
            (_, Some(k)) => Err(AuditError::WrongSigningKey {
                configured: fingerprint(&signer),
                current: fingerprint(&k),
            }),
            (_, None) => Err(AuditError::Config("log has leaves but no key chain".into())),
        }
    }

    /// The store (shared with the outbox).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &AuditConfig {
        &self.config
    }

    /// Leaves folded into the tree (durable and contiguous).
    pub fn size(&self) -> u64 {
        lock(&self.state).edge.size()
    }

    /// Root of the tree of [`Self::size`] leaves.
    pub fn root(&self) -> Hash {
        lock(&self.state).edge.root()
    }

    /// The latest checkpoint written.
    pub fn latest_checkpoint(&self) -> Option<SignedCheckpoint> {
        lock(&self.state).last.clone()
    }

    /// The current signing key's public half.
    pub fn public_key(&self) -> VerifyingKey {
        lock(&self.signer).verifying_key()
    }

    /// Hand `event` the next index and add its puts (leaf and search index) to `batch`.
    ///
    /// Contract: submit batches in staging order and report each [`Staged`] with [`Self::committed`] or
    /// [`Self::failed`]. Prefer [`Self::submit`], which keeps the contract for you.
    pub fn stage(&self, batch: &mut Batch, event: LeafEvent<'_>) -> Result<Staged, AuditError> {
        let p = self.prepare(&event);
        let mut st = lock(&self.state);
        let (staged, bytes) = self.stage_prepared(&mut st, p)?;
        runs::put(batch, staged.index.0, vec![bytes]);
        Ok(staged)
    }

    fn prepare(&self, event: &LeafEvent<'_>) -> Prepared {
        let pseudonym = event.pseudonym(&self.config.patient_key);
        prepare_view(&event.view(pseudonym.as_deref()))
    }

    /// Only index assignment under the lock: every writer of the broker passes here in turn. Returns the
    /// leaf's bytes for the caller to put (one leaf, or with the rest of its batch as a run).
    fn stage_prepared(&self, st: &mut State, p: Prepared) -> Result<(Staged, Vec<u8>), AuditError> {
        if st.poisoned {
            return Err(AuditError::Poisoned);
        }
        let index = st.next;
        st.next += 1;
        let staging = Staging {
            hash: p.hash,
            settle: Settle::InFlight,
            keys: p.keys,
        };
        st.pending.push_back(staging);
        let staged = Staged {
            index: LeafIndex(index),
        };
        Ok((staged, p.bytes))
    }

    /// Stage `events` into `batch` and submit it to the store in one step (so submit order = index order).
    pub fn submit(
        &self,
        batch: Batch,
        events: Vec<LeafEvent<'_>>,
    ) -> Result<PendingCommit<'_, S>, AuditError> {
        let prepared: Vec<Prepared> = events.iter().map(|e| self.prepare(e)).collect();
        self.submit_prepared(batch, prepared)
    }

    /// [`AuditLog::submit`] of leaves built elsewhere, as they are (their `v` says their encoding). For
    /// tests that need a log as an older version wrote it; the broker records events, never leaves.
    #[doc(hidden)]
    pub fn submit_leaves(
        &self,
        batch: Batch,
        leaves: &[Leaf],
    ) -> Result<PendingCommit<'_, S>, AuditError> {
        self.submit_prepared(batch, leaves.iter().map(prepare_leaf).collect())
    }

    fn submit_prepared(
        &self,
        mut batch: Batch,
        prepared: Vec<Prepared>,
    ) -> Result<PendingCommit<'_, S>, AuditError> {
        let mut st = lock(&self.state);
        let mut staged = Vec::with_capacity(prepared.len());
        let mut bytes = Vec::with_capacity(prepared.len());
        for p in prepared {
            match self.stage_prepared(&mut st, p) {
                Ok((s, b)) => {
                    staged.push(s);
                    bytes.push(b);
                }
                Err(e) => {
                    self.settle_locked(&mut st, staged, Settle::Failed);
                    return Err(e);
                }
            }
        }
        // The batch's indices are contiguous (all staged under this lock): one run, one key.
        if let Some(first) = staged.first() {
            runs::put(&mut batch, first.index.0, bytes);
        }
        match self.store.submit(batch) {
            Ok(ticket) => Ok(PendingCommit {
                log: self,
                ticket,
                staged,
            }),
            Err(e) => {
                self.settle_locked(&mut st, staged, Settle::Failed);
                Err(e.into())
            }
        }
    }

    /// The batch carrying `staged` is durable.
    pub fn committed(&self, staged: Staged) -> Result<(), AuditError> {
        self.settle(vec![staged], Settle::Done)
    }

    /// The batch carrying `staged` failed (its change is not promised either).
    pub fn failed(&self, staged: Staged) -> Result<(), AuditError> {
        self.settle(vec![staged], Settle::Failed)
    }

    fn settle(&self, staged: Vec<Staged>, how: Settle) -> Result<(), AuditError> {
        let mut st = lock(&self.state);
        self.settle_locked(&mut st, staged, how);
        if st.poisoned {
            Err(AuditError::Poisoned)
        } else {
            Ok(())
        }
    }

    fn settle_locked(&self, st: &mut State, staged: Vec<Staged>, how: Settle) {
        for s in staged {
            let k = s.index.0.checked_sub(st.edge.size());
            if let Some(p) = k.and_then(|k| st.pending.get_mut(usize::try_from(k).ok()?)) {
                p.settle = how;
            }
        }
        // Fold in index order as far as the prefix is settled.
        while let Some(p) = st.pending.front() {
            let index = st.edge.size();
            let (hash, settle) = (p.hash, p.settle);
            let lost = match settle {
                Settle::InFlight => break,
                Settle::Done => None,
                Settle::Failed => match self.resolve_failed(index, hash) {
                    Resolved::Take(h, _) if h == hash => None,
                    Resolved::Take(h, keys) => Some((h, keys)),
                    // Still failing (disk full): leave the hole, try again at the next settle.
                    Resolved::Retry => break,
                    Resolved::Poison => {
                        st.poisoned = true;
                        break;
                    }
                },
            };
            let Some(p) = st.pending.pop_front() else {
                break;
            };
            let (h, keys) = lost.unwrap_or((p.hash, p.keys));
            st.unindexed.push((index, keys));
            let State { edge, mem, .. } = st;
            edge.push(h, |l, i, h| mem.push(l, i, *h));
        }
    }

    /// A failed index: take the leaf if it landed anyway, else fill it with a `lost-write` leaf.
    fn resolve_failed(&self, index: u64, hash: Hash) -> Resolved {
        match runs::get(&self.store, index) {
            Ok(Some(bytes)) if leaf_hash(&bytes) == hash => {
                Resolved::Take(hash, IndexKeys::default())
            }
            // Another leaf under our index, or a damaged entry there: the store is not ours alone; stop.
            Ok(Some(_)) | Err(AuditError::Tampered(_)) => Resolved::Poison,
            Err(_) => Resolved::Retry,
            Ok(None) => {
                let leaf = LeafEvent::new(now_ms(), Event::LostWrite, Outcome::MajorFailure)
                    .into_leaf(&self.config.patient_key);
                let bytes = leaf.encode();
                let h = leaf_hash(&bytes);
                let mut batch = Batch::new();
                batch.put(trees::LEAVES, u64_key(index).to_vec(), bytes);
                match self.store.commit(batch) {
                    Ok(()) => Resolved::Take(h, IndexKeys::of(&leaf.view())),
                    Err(_) => Resolved::Retry,
                }
            }
        }
    }

    /// Checkpoint if `checkpoint_every` leaves or `checkpoint_interval_ms` passed since the last one.
    pub fn maybe_checkpoint(&self, now_ms: u64) -> Result<Option<SignedCheckpoint>, AuditError> {
        let due = {
            let st = lock(&self.state);
            let (last_size, last_time) = st
                .last
                .as_ref()
                .map_or((0, 0), |c| (c.checkpoint.size, c.checkpoint.time_ms));
            let grown = st.edge.size().saturating_sub(last_size);
            grown >= self.config.checkpoint_every.max(1)
                || (grown > 0
                    && now_ms.saturating_sub(last_time) >= self.config.checkpoint_interval_ms)
        };
        if due {
            let _one_at_a_time = lock(&self.checkpointing);
            self.checkpoint_locked(now_ms, false)
        } else {
            Ok(None)
        }
    }

    /// Checkpoint now (e.g. at shutdown), with the wall clock.
    pub fn checkpoint_now(&self) -> Result<Option<SignedCheckpoint>, AuditError> {
        self.checkpoint_at(now_ms())
    }

    /// Sign the current tree head at `now_ms`, store it with the nodes completed since the last one, and
    /// export it. `None` when nothing was appended since the last checkpoint.
    pub fn checkpoint_at(&self, now_ms: u64) -> Result<Option<SignedCheckpoint>, AuditError> {
        let _one_at_a_time = lock(&self.checkpointing);
        self.checkpoint_locked(now_ms, true)
    }

    /// Caller holds `checkpointing`. With `index_all`, or once [`INDEX_WINDOW`] leaves wait, the batch
    /// also carries the posting lists of every leaf not yet indexed.
    fn checkpoint_locked(
        &self,
        now_ms: u64,
        index_all: bool,
    ) -> Result<Option<SignedCheckpoint>, AuditError> {
        let (cp, nodes, seq, chunk, index_size) = {
            let mut st = lock(&self.state);
            // Fill a hole left by a failed batch first, if the store takes writes again.
            self.settle_locked(&mut st, Vec::new(), Settle::Done);
            if st.poisoned {
                return Err(AuditError::Poisoned);
            }
            let size = st.edge.size();
            let last_size = st.last.as_ref().map_or(0, |c| c.checkpoint.size);
            if size == 0 || size == last_size {
                if !index_all || st.unindexed.is_empty() {
                    return Ok(None);
                }
                // Nothing new to sign, but signed leaves wait for the index (e.g. at shutdown).
                let chunk = std::mem::take(&mut st.unindexed);
                drop(st);
                return self.write_index(chunk, size).map(|()| None);
            }
            // Checkpoint times never go backwards, even if the wall clock does.
            let floor = st.last.as_ref().map_or(0, |c| c.checkpoint.time_ms);
            let cp = Checkpoint {
                origin: self.config.origin.clone(),
                size,
                root: st.edge.root(),
                time_ms: now_ms.max(floor),
            };
            // Every folded leaf lies below `size`: the chunk is exactly the leaves `[index_size, size)`.
            // Taken out so the lists are built without the lock writers need.
            let (chunk, index_size) = if index_all || st.unindexed.len() >= INDEX_WINDOW {
                (std::mem::take(&mut st.unindexed), size)
            } else {
                (Vec::new(), st.index_size)
            };
            // Every node in memory was completed by a folded leaf, so below `size`: all go in.
            let nodes = (st.mem.len(), st.mem.chunk(cp.size));
            (cp, nodes, st.next_seq, chunk, index_size)
        };
        let signed = cp.sign(&lock(&self.signer));
        let mut batch = Batch::new();
        let (in_chunk, (k, v)) = nodes;
        batch.put(trees::NODES, k, v);
        batch.put(
            trees::META,
            META_NODES_SIZE.to_vec(),
            u64_key(cp.size).to_vec(),
        );
        put_index(&mut batch, &chunk, index_size);
        batch.put(
            trees::CHECKPOINTS,
            u64_key(seq).to_vec(),
            signed.text.clone().into_bytes(),
        );
        if let Err(e) = self.store.commit(batch) {
            self.unindex(chunk);
            return Err(e.into());
        }
        {
            let mut st = lock(&self.state);
            st.mem.drop_first(in_chunk);
            st.index_size = index_size;
            st.next_seq = seq + 1;
            st.last = Some(signed.clone());
        }
        if let Some(dir) = &self.config.export_dir {
            crate::export::export_checkpoint(dir, &signed)?;
        }
        Ok(Some(signed))
    }

    /// Store the posting lists of `chunk` (every leaf from the index's mark up to `size`) and move the
    /// mark to `size`. Caller holds `checkpointing`.
    fn write_index(&self, chunk: Vec<(u64, IndexKeys)>, size: u64) -> Result<(), AuditError> {
        let mut batch = Batch::new();
        put_index(&mut batch, &chunk, size);
        if let Err(e) = self.store.commit(batch) {
            self.unindex(chunk);
            return Err(e.into());
        }
        lock(&self.state).index_size = size;
        Ok(())
    }

    /// A batch with `chunk`'s lists failed: not indexed after all, so back in front of what folded
    /// meanwhile, for the next index write.
    fn unindex(&self, chunk: Vec<(u64, IndexKeys)>) {
        let mut st = lock(&self.state);
        let later = std::mem::replace(&mut st.unindexed, chunk);
        st.unindexed.extend(later);
    }

    /// Rotate the checkpoint key: checkpoint with the old key, append a [`Event::KeyRotation`] leaf signed
    /// by the old key (and the key-chain entry, same batch), checkpoint that with the old key, then sign
    /// with `new_key` from the next checkpoint on. Returns the handover checkpoint.
    pub fn rotate_key(
        &self,
        new_key: SigningKey,
        now_ms: u64,
    ) -> Result<SignedCheckpoint, AuditError> {
        // Held throughout, so the handover is the first checkpoint containing the rotation leaf.
        let _one_at_a_time = lock(&self.checkpointing);
        self.checkpoint_locked(now_ms, true)?;
        let new_pub = new_key.verifying_key();
        let sig =
            lock(&self.signer).sign(&rotation_message(&self.config.origin, new_pub.as_bytes()));
        let seq = lock(&self.state).keys.len() as u64;
        let mut batch = Batch::new();
        batch.put(
            trees::META,
            meta_key_entry(seq),
            new_pub.as_bytes().to_vec(),
        );
        let ev = LeafEvent::new(
            now_ms,
            Event::KeyRotation {
                new_key: B64.encode(new_pub.as_bytes()),
                signature: B64.encode(sig.to_bytes()),
            },
            Outcome::Success,
        );
        self.submit(batch, vec![ev])?.wait()?;
        let handover = self
            .checkpoint_locked(now_ms, true)?
            .ok_or_else(|| AuditError::Checkpoint("no handover checkpoint".into()))?;
        *lock(&self.signer) = new_key;
        lock(&self.state).keys.push(new_pub);
        Ok(handover)
    }

    /// Proof document for `message_id` against the latest checkpoint (see [`crate::ops::prove_store`]).
    pub fn prove(&self, message_id: &str) -> Result<crate::ops::ProofDocument, AuditError> {
        crate::ops::prove_store(&self.store, message_id)
    }

    /// The signer's key hash under this log's origin (for matching signature lines).
    pub fn key_hash(&self) -> [u8; 4] {
        key_hash(&self.config.origin, &self.public_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The nodes `n` leaves complete, in memory and as a sorted map (what chunks held before).
    fn nodes(from: u64, n: u64) -> (MemNodes, BTreeMap<(u8, u64), Hash>) {
        let mut edge = CompactRange::default();
        let (mut mem, mut map) = (MemNodes::default(), BTreeMap::new());
        for i in 0..from + n {
            let h = leaf_hash(&i.to_be_bytes());
            edge.push(h, |l, idx, h| {
                if i >= from {
                    mem.push(l, idx, *h);
                    map.insert((l, idx), *h);
                }
            });
        }
        (mem, map)
    }

    const RANGES: [(u64, u64); 8] = [
        (0, 1),
        (0, 2),
        (0, 1000),
        (5, 1),
        (37, 700),
        (1024, 1024),
        (15, 17),
        (3, 1),
    ];

    #[test]
    fn version_1_chunk_entries_are_sorted_by_level_and_index_and_every_node_is_found() {
        for (from, n) in RANGES {
            let (mem, map) = nodes(from, n);
            let (k, v) = mem.chunk_v1(from + n);
            assert_eq!(k, node_key(NODE_CHUNK, from + n).to_vec());
            let mut want = from.to_be_bytes().to_vec();
            for (&(l, i), h) in &map {
                want.push(l);
                want.extend_from_slice(&i.to_be_bytes());
                want.extend_from_slice(h);
            }
            assert_eq!(v, want, "chunk of leaves [{from}, {})", from + n);
            let chunk = Chunk::new(from, from + n, false, v[8..].to_vec());
            for (&(l, i), h) in &map {
                assert_eq!(mem.get(l, i), Some(*h), "({l}, {i})");
                assert_eq!(chunk.find(l, i), Found::Hash(*h), "({l}, {i})");
            }
            // Nodes completed before or after the range are not there.
            assert_eq!(mem.get(0, from + n), None);
            assert_eq!(mem.get(40, 0), None);
            if from > 0 {
                assert_eq!(mem.get(0, from - 1), None);
            }
        }
    }

    #[test]
    fn version_2_chunks_hold_the_hashes_of_levels_0_and_above_3_in_place() {
        for (from, n) in RANGES {
            let (mem, map) = nodes(from, n);
            let (k, v) = mem.chunk(from + n);
            assert_eq!(k, node_key(NODE_CHUNK_V2, from + n).to_vec());
            // The layout as documented: start, then per stored level its nodes in index order.
            let mut want = from.to_be_bytes().to_vec();
            for (&(l, _), h) in &map {
                if l == 0 || l > 3 {
                    want.extend_from_slice(h);
                }
            }
            assert_eq!(v, want, "chunk of leaves [{from}, {})", from + n);
            let chunk = Chunk::new(from, from + n, true, v[8..].to_vec());
            for (&(l, i), h) in &map {
                let want = if (1..=3).contains(&l) {
                    Found::Children
                } else {
                    Found::Hash(*h)
                };
                assert_eq!(
                    chunk.find(l, i),
                    want,
                    "({l}, {i}) in [{from}, {})",
                    from + n
                );
            }
            assert_eq!(chunk.find(0, from + n), Found::Missing);
            if from > 0 {
                assert_eq!(chunk.find(0, from - 1), Found::Missing);
            }
            // A chunk one hash short or long is malformed: it holds nothing.
            let longer = [&v[8..], &[0u8; 32][..]].concat();
            for entries in [&v[8..v.len() - 1], &longer[..]] {
                let bad = Chunk::new(from, from + n, true, entries.to_vec());
                assert_eq!(bad.find(0, from), Found::Missing);
            }
        }
    }

    #[test]
    fn nodes_left_out_of_version_2_chunks_are_read_from_their_children_across_chunks() {
        // Checkpoints at odd sizes, so left-out nodes have children in the chunk before; the first
        // two chunks in the named layout of older logs, the rest in version 2.
        let dir = tempfile::tempdir().unwrap();
        let store = sammen_store::FjallStore::open(dir.path(), &trees::ALL).unwrap();
        let (mut edge, mut mem, mut all) = (
            CompactRange::default(),
            MemNodes::default(),
            BTreeMap::new(),
        );
        let cuts = [5u64, 16, 37, 38, 101, 130];
        let mut b = Batch::new();
        for i in 0..130u64 {
            edge.push(leaf_hash(&i.to_be_bytes()), |l, idx, h| {
                mem.push(l, idx, *h);
                all.insert((l, idx), *h);
            });
            if cuts.contains(&(i + 1)) {
                let (k, v) = if i < 16 {
                    mem.chunk_v1(i + 1)
                } else {
                    mem.chunk(i + 1)
                };
                b.put(trees::NODES, k, v);
                mem.drop_first(mem.len());
            }
        }
        store.commit(b).unwrap();
        let nodes = LogNodes::new(&store, None);
        // Walked forwards, then backwards, so lookups also miss the cached chunk.
        for (&(l, i), h) in all.iter().chain(all.iter().rev()) {
            assert_eq!(nodes.stored(l, i).unwrap(), Some(*h), "({l}, {i})");
        }
        assert_eq!(nodes.stored(0, 130).unwrap(), None);
        assert_eq!(
            subtree_root(&nodes, 0, 130).unwrap(),
            edge.root(),
            "the root from the stored nodes"
        );
    }

    #[test]
    fn a_checkpoint_forgets_exactly_the_nodes_it_stored() {
        let (mut mem, map) = nodes(0, 100);
        let stored = 60;
        let kept: Vec<_> = mem.nodes[stored..].to_vec();
        mem.drop_first(stored);
        assert_eq!(mem.nodes, kept);
        for &(l, i, h) in &kept {
            assert_eq!(mem.get(l, i), Some(h));
            assert_eq!(map.get(&(l, i)), Some(&h));
        }
        mem.drop_first(usize::MAX);
        assert_eq!(mem.len(), 0);
        assert_eq!(mem.chunk(100).1, 100u64.to_be_bytes().to_vec());
        assert_eq!(mem.chunk_v1(100).1, 100u64.to_be_bytes().to_vec());
    }
}
