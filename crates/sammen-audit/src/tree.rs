//! RFC 6962 / RFC 9162 Merkle tree hashing, the compact range (right edge) and proof *generation*.
//!
//! Hashing: `leaf = SHA-256(0x00 ‖ data)`, `node = SHA-256(0x01 ‖ left ‖ right)`, the empty tree hashes to
//! `SHA-256("")`. A tree of `n > 1` leaves splits at `k`, the largest power of two `< n` (RFC 6962 §2.1).
//!
//! Storage-independent: proofs are generated from any [`NodeSource`], which only has to answer the hash of
//! a *perfect* subtree `(level, index)` = leaves `[index·2^level, (index+1)·2^level)`. The durable log
//! answers from its node tree; tests answer from a plain vector.

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// Root of the empty tree: SHA-256 of nothing (`e3b0c442…`).
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// RFC 6962 leaf hash: `SHA-256(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// RFC 6962 interior node hash: `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Largest power of two strictly below `n` (`n >= 2`).
pub(crate) fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// Root of a tree over already-hashed leaves (MTH of RFC 6962, computed bottom-up).
pub fn root_from_leaf_hashes(leaves: &[Hash]) -> Hash {
    let mut edge = CompactRange::default();
    for h in leaves {
        edge.push(*h, |_, _, _| {});
    }
    edge.root()
}

/// The right edge of a tree: the roots of its perfect subtrees, largest first. Enough to append and to
/// compute the root; `O(log n)` memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    /// `(level, hash)`, levels strictly decreasing.
    nodes: Vec<(u8, Hash)>,
}

impl CompactRange {
    /// Rebuild from the perfect-subtree roots of a tree of `size` leaves, largest first
    /// (exactly one per set bit of `size`).
    pub fn from_parts(size: u64, hashes: &[Hash]) -> Option<Self> {
        let levels = perfect_decomposition(0, size);
        if levels.len() != hashes.len() {
            return None;
        }
        let nodes = levels
            .iter()
            .zip(hashes)
            .map(|(&(level, _), h)| (level, *h))
            .collect();
        Some(Self { size, nodes })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Append one leaf hash; `completed(level, index, hash)` is called for every perfect node that the
    /// append completes (the leaf itself first, at level 0).
    pub fn push(&mut self, leaf: Hash, mut completed: impl FnMut(u8, u64, &Hash)) {
        let mut index = self.size;
        let mut level = 0u8;
        let mut h = leaf;
        completed(0, index, &h);
        while let Some(&(l, left)) = self.nodes.last() {
            if l != level {
                break;
            }
            self.nodes.pop();
            h = node_hash(&left, &h);
            level += 1;
            index >>= 1;
            completed(level, index, &h);
        }
        self.nodes.push((level, h));
        self.size += 1;
    }

    /// Root hash (MTH) of the tree.
    pub fn root(&self) -> Hash {
        let mut it = self.nodes.iter().rev();
        let Some(&(_, mut acc)) = it.next() else {
            return empty_root();
        };
        for (_, left) in it {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// Perfect aligned subtrees `(level, index)` that tile `[start, end)` when `start` is aligned to the
/// largest of them (always true for `start = 0`), largest first.
pub(crate) fn perfect_decomposition(start: u64, end: u64) -> Vec<(u8, u64)> {
    let mut out = Vec::new();
    let mut pos = start;
    while pos < end {
        let rem = end - pos;
        let mut level = 63 - rem.leading_zeros();
        // Alignment: the subtree must start at a multiple of its size.
        if pos != 0 {
            level = level.min(pos.trailing_zeros());
        }
        out.push((level as u8, pos >> level));
        pos += 1 << level;
    }
    out
}

/// Answers the hash of a perfect subtree. Errors are the source's own (I/O, missing node).
pub trait NodeSource {
    /// Error type of the backing storage.
    type Error;
    /// Hash of the perfect subtree `(level, index)`.
    fn node(&self, level: u8, index: u64) -> Result<Hash, Self::Error>;
}

/// MTH of leaves `[a, b)` for the subtrees that RFC 6962 proofs name.
pub fn subtree_root<S: NodeSource + ?Sized>(src: &S, a: u64, b: u64) -> Result<Hash, S::Error> {
    if b <= a {
        return Ok(empty_root());
    }
    let n = b - a;
    if n.is_power_of_two() && a & (n - 1) == 0 {
        return src.node(n.trailing_zeros() as u8, a / n);
    }
    if n == 1 {
        return src.node(0, a);
    }
    let k = split(n);
    let l = subtree_root(src, a, a + k)?;
    let r = subtree_root(src, a + k, b)?;
    Ok(node_hash(&l, &r))
}

/// Inclusion proof (RFC 6962 `PATH(m, D[n])`) for leaf `index` in the tree of `size` leaves.
/// Caller guarantees `index < size`.
pub fn inclusion_proof<S: NodeSource + ?Sized>(
    src: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, S::Error> {
    let mut out = Vec::new();
    path(src, index, 0, size, &mut out)?;
    Ok(out)
}

fn path<S: NodeSource + ?Sized>(
    src: &S,
    m: u64,
    a: u64,
    b: u64,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    if b - a <= 1 {
        return Ok(());
    }
    let k = split(b - a);
    if m < a + k {
        path(src, m, a, a + k, out)?;
        out.push(subtree_root(src, a + k, b)?);
    } else {
        path(src, m, a + k, b, out)?;
        out.push(subtree_root(src, a, a + k)?);
    }
    Ok(())
}

/// Consistency proof (RFC 6962 `PROOF(m, D[n])`) from `old` to `new` leaves. Empty when `old == 0`
/// or `old == new`. Caller guarantees `old <= new`.
pub fn consistency_proof<S: NodeSource + ?Sized>(
    src: &S,
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, S::Error> {
    let mut out = Vec::new();
    if old > 0 && old < new {
        subproof(src, old, 0, new, true, &mut out)?;
    }
    Ok(out)
}

fn subproof<S: NodeSource + ?Sized>(
    src: &S,
    m: u64,
    a: u64,
    b: u64,
    start: bool,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    let n = b - a;
    if m == n {
        if !start {
            out.push(subtree_root(src, a, b)?);
        }
        return Ok(());
    }
    let k = split(n);
    if m <= k {
        subproof(src, m, a, a + k, start, out)?;
        out.push(subtree_root(src, a + k, b)?);
    } else {
        subproof(src, m - k, a + k, b, false, out)?;
        out.push(subtree_root(src, a, a + k)?);
    }
    Ok(())
}

/// An in-memory tree over leaf hashes: a [`NodeSource`] for tests, tools and proof documents.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    leaves: Vec<Hash>,
}

impl MemoryTree {
    /// A tree over these leaf hashes.
    pub fn new(leaves: Vec<Hash>) -> Self {
        Self { leaves }
    }
    /// Append a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        self.leaves.push(leaf);
    }
    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.leaves.len() as u64
    }
    /// Root of the first `size` leaves.
    pub fn root_at(&self, size: u64) -> Hash {
        let end = usize::try_from(size).map_or(self.leaves.len(), |s| s.min(self.leaves.len()));
        root_from_leaf_hashes(&self.leaves[..end])
    }
}

/// The requested node lies outside the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("node ({level}, {index}) is outside the tree")]
pub struct OutOfRange {
    /// Level.
    pub level: u8,
    /// Index at that level.
    pub index: u64,
}

impl NodeSource for MemoryTree {
    type Error = OutOfRange;
    fn node(&self, level: u8, index: u64) -> Result<Hash, OutOfRange> {
        let oor = OutOfRange { level, index };
        let start = index.checked_shl(u32::from(level)).ok_or(oor)?;
        let end = start.checked_add(1u64 << level).ok_or(oor)?;
        if end > self.size() || level >= 64 {
            return Err(oor);
        }
        let (s, e) = (
            usize::try_from(start).map_err(|_| oor)?,
            usize::try_from(end).map_err(|_| oor)?,
        );
        Ok(root_from_leaf_hashes(&self.leaves[s..e]))
    }
}
