//! Proof *verification* (RFC 9162 §2.1.3.2 and §2.1.4.2): pure functions over hashes, no storage.

use crate::tree::{node_hash, Hash};

/// Why a proof does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The leaf index is not below the tree size.
    #[error("leaf index {index} is not below tree size {size}")]
    IndexBeyondSize {
        /// Leaf index.
        index: u64,
        /// Tree size.
        size: u64,
    },
    /// The old size is larger than the new size.
    #[error("old size {old} is larger than new size {new}")]
    SizeRegressed {
        /// Old size.
        old: u64,
        /// New size.
        new: u64,
    },
    /// The proof has the wrong number of hashes for these sizes.
    #[error("proof has the wrong length")]
    WrongLength,
    /// A consistency proof from the empty tree proves nothing.
    #[error("consistency from an empty tree proves nothing")]
    EmptyOldTree,
    /// The recomputed root differs from the expected root.
    #[error("recomputed root does not match")]
    RootMismatch,
}

/// Check that `leaf` (a leaf *hash*) is leaf `index` of the tree of `size` leaves with root `root`.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexBeyondSize { index, size });
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(ProofError::WrongLength);
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            // Skip the levels where this node is the right edge with no sibling.
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength);
    }
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Check that the tree of `old` leaves with root `old_root` is a prefix of the tree of `new` leaves with
/// root `new_root`.
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old > new {
        return Err(ProofError::SizeRegressed { old, new });
    }
    if old == new {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    if old == 0 {
        // Trivially true and therefore worthless as evidence: refused, as the transparency-dev vectors do.
        return Err(ProofError::EmptyOldTree);
    }
    if proof.is_empty() {
        return Err(ProofError::WrongLength);
    }
    // When the old tree is a perfect subtree its root is the proof's implied first element.
    let implied;
    let nodes: &[Hash] = if old.is_power_of_two() {
        implied = [&[*old_root][..], proof].concat();
        &implied
    } else {
        proof
    };
    let (mut f, mut s) = (old - 1, new - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (nodes[0], nodes[0]);
    for c in &nodes[1..] {
        if s == 0 {
            return Err(ProofError::WrongLength);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength);
    }
    if fr != *old_root || sr != *new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}
