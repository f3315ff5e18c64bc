//! The offline operations behind `sammen keygen` / `sammen audit …`: verify, prove, check-proof,
//! consistency and search. Each has a `*_store` form over any [`Store`] and a data-dir form that opens
//! the store read-only by convention (the broker must not be running: both engines lock their directory).
//!
//! ## How `verify` follows the chain of keys
//! Leaf 0 is [`Event::LogCreated`] naming key K0. Each [`Event::KeyRotation`] leaf at index `r` names
//! K(j+1) and carries K(j)'s signature over [`rotation_message`], checked against the previous key. The
//! key chain is therefore read from the (hash-verified) leaves, never from configuration. A checkpoint of
//! size `s` must be signed by K(j), the newest key whose rotation leaf lies inside it (`r < s`); only the
//! *first* checkpoint containing that rotation leaf (the handover, which [`crate::AuditLog::rotate_key`]
//! signs with the old key) may instead be signed by K(j-1). The public key the operator passes is the trust anchor: it must be one of the chain's keys,
//! otherwise the whole log (which could be a rewrite under an attacker's key) is refused.

use std::collections::BTreeMap;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use sammen_store::{FjallStore, SledStore, Store};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, SignedCheckpoint};
use crate::error::{AuditError, Finding};
use crate::index::{
    bucket_indices, bucket_prefix, decode_gaps, hashed_tag, index_prefix, value_hash, POSTINGS,
    POSTINGS_GAPS,
};
use crate::keys::{fingerprint, load_public_key};
use crate::leaf::{hex, rotation_message, unhex, Event, Leaf, LeafIndex, PatientKey};
use crate::proof::{verify_consistency, verify_inclusion};
use crate::runs;
use crate::store::{decode_u64, trees, LogNodes, META_INDEX_SIZE, META_NODES_SIZE};
use crate::tree::{consistency_proof, inclusion_proof, leaf_hash, CompactRange, Hash};

/// Format tag of [`ProofDocument`] as written today: each leaf's bytes in base64, and the leaf decoded.
pub const PROOF_FORMAT: &str = "sammen-audit-proof/2";
/// Format tag of proof documents written before binary leaves: each leaf's bytes as JSON text. Still
/// checked.
pub const PROOF_FORMAT_V1: &str = "sammen-audit-proof/1";
/// Format tag of [`ConsistencyDocument`].
pub const CONSISTENCY_FORMAT: &str = "sammen-audit-consistency/1";

/// Open the store in `data_dir` with the audit trees (sled if it holds sled's `conf` and `db`, else fjall).
/// Refuses a directory that does not exist rather than creating an empty store.
pub fn open_data_dir(data_dir: &Path) -> Result<Box<dyn Store>, AuditError> {
    if !data_dir.is_dir() {
        return Err(AuditError::Config(format!(
            "{} is not a data directory",
            data_dir.display()
        )));
    }
    if data_dir.join("conf").is_file() && data_dir.join("db").is_file() {
        Ok(Box::new(SledStore::open(data_dir, &trees::ALL)?))
    } else {
        Ok(Box::new(FjallStore::open(data_dir, &trees::ALL)?))
    }
}

fn tampered(f: Finding) -> AuditError {
    AuditError::Tampered(f)
}

fn bad_leaf(index: u64, problem: impl Into<String>) -> AuditError {
    tampered(Finding::BadLeaf {
        index,
        problem: problem.into(),
    })
}

fn bad_cp(seq: u64, size: u64, problem: impl Into<String>) -> AuditError {
    tampered(Finding::BadCheckpoint {
        seq,
        size,
        problem: problem.into(),
    })
}

/// What a successful `verify` checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Leaves recomputed.
    pub leaves: u64,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// Fingerprints of the key chain, oldest first.
    pub keys: Vec<String>,
    /// The latest stored checkpoint.
    pub latest: Option<Checkpoint>,
}

fn stored_checkpoints<S: Store + ?Sized>(
    store: &S,
) -> Result<Vec<(u64, SignedCheckpoint)>, AuditError> {
    let mut out = Vec::new();
    let mut from = Vec::new();
    loop {
        let rows = store.range(trees::CHECKPOINTS, &from, None, 1024)?;
        let Some((last, _)) = rows.last() else {
            break;
        };
        from = last.clone();
        from.push(0);
        for (k, v) in rows {
            let expected = out.len() as u64;
            let seq = decode_u64(&k).filter(|s| *s == expected);
            let Some(seq) = seq else {
                return Err(bad_cp(expected, 0, "missing from the sequence"));
            };
            let cp = String::from_utf8(v)
                .ok()
                .and_then(|t| SignedCheckpoint::parse(&t).ok())
                .ok_or_else(|| bad_cp(seq, 0, "malformed note"))?;
            out.push((seq, cp));
        }
    }
    Ok(out)
}

/// Recompute every leaf hash and node, check every checkpoint's root, signature (following the key
/// chain) and consistency with its predecessor, and the exported checkpoint if given. `Err(Tampered)`
/// names the first bad leaf, node or checkpoint.
pub fn verify_store<S: Store + ?Sized>(
    store: &S,
    trusted: &VerifyingKey,
    exported: Option<&SignedCheckpoint>,
) -> Result<VerifyReport, AuditError> {
    let nodes_size = store
        .get(trees::META, META_NODES_SIZE)?
        .map(|v| decode_u64(&v).ok_or_else(|| bad_cp(0, 0, "malformed node coverage")))
        .transpose()?
        .unwrap_or(0);
    let cps = stored_checkpoints(store)?;
    let mut want_roots: BTreeMap<u64, Option<Hash>> =
        cps.iter().map(|(_, c)| (c.checkpoint.size, None)).collect();
    if let Some(e) = exported {
        want_roots.insert(e.checkpoint.size, None);
    }
    // Rotation leaves sign over the origin, which the checkpoints name.
    let origin = cps
        .first()
        .map(|(_, c)| c.checkpoint.origin.clone())
        .or_else(|| exported.map(|e| e.checkpoint.origin.clone()));
    // (key, index of the leaf that introduced it)
    let mut chain: Vec<(VerifyingKey, u64)> = Vec::new();
    let mut edge = CompactRange::default();
    let stored = LogNodes::new(store, None);
    runs::for_each(
        store,
        0,
        |k, v| {
            let i = edge.size();
            if k != i {
                return Err(bad_leaf(i, "missing"));
            }
            let leaf = Leaf::decode(v).map_err(|e| bad_leaf(i, e.to_string()))?;
            check_chain_leaf(&leaf, i, origin.as_deref(), &mut chain)?;
            let mut completed = Vec::new();
            edge.push(leaf_hash(v), |l, idx, h| completed.push((l, idx, *h)));
            for (l, idx, h) in completed {
                if (idx + 1) << l > nodes_size {
                    continue;
                }
                if stored.stored(l, idx)? != Some(h) {
                    return Err(if l == 0 {
                        bad_leaf(idx, "hash differs from the stored tree")
                    } else {
                        tampered(Finding::BadNode {
                            level: l,
                            index: idx,
                        })
                    });
                }
            }
            if let Some(slot) = want_roots.get_mut(&edge.size()) {
                *slot = Some(edge.root());
            }
            Ok(())
        },
        runs::damaged,
    )?;
    let leaves = edge.size();
    if leaves < nodes_size {
        return Err(bad_leaf(
            leaves,
            "missing: the log ends below its stored tree",
        ));
    }
    if !chain.iter().any(|(k, _)| k == trusted) {
        return Err(tampered(Finding::UntrustedKey));
    }
    let nodes = LogNodes::new(store, None);
    let mut prev: Option<&Checkpoint> = None;
    for (seq, cp) in &cps {
        let (seq, c) = (*seq, &cp.checkpoint);
        if Some(&c.origin) != origin.as_ref() {
            return Err(bad_cp(
                seq,
                c.size,
                "origin differs from the first checkpoint",
            ));
        }
        if c.size > leaves {
            return Err(bad_cp(
                seq,
                c.size,
                format!("beyond the log's {leaves} leaves"),
            ));
        }
        if let Some(p) = prev {
            if c.size <= p.size {
                return Err(bad_cp(seq, c.size, "does not grow (replayed or reordered)"));
            }
            if c.time_ms < p.time_ms {
                return Err(bad_cp(seq, c.size, "time goes backwards"));
            }
        }
        if want_roots.get(&c.size).copied().flatten() != Some(c.root) {
            return Err(bad_cp(seq, c.size, "root does not match the leaves"));
        }
        if !signed_by_allowed_key(cp, &chain, prev.map_or(0, |p| p.size)) {
            return Err(bad_cp(
                seq,
                c.size,
                "not signed by the log's key for this size",
            ));
        }
        if let Some(p) = prev {
            if c.size <= nodes_size {
                let proof = consistency_proof(&nodes, p.size, c.size)?;
                verify_consistency(p.size, c.size, &p.root, &c.root, &proof).map_err(|e| {
                    bad_cp(
                        seq,
                        c.size,
                        format!("not consistent with its predecessor: {e}"),
                    )
                })?;
            }
        }
        prev = Some(c);
    }
    if let Some(p) = prev {
        if p.size != nodes_size {
            return Err(bad_cp(
                cps.len() as u64 - 1,
                p.size,
                format!("latest checkpoint is not the stored tree's ({nodes_size})"),
            ));
        }
    }
    if let Some(e) = exported {
        let c = &e.checkpoint;
        let problem = if !chain.iter().any(|(k, _)| e.verify(k).is_ok()) {
            Some("not signed by any key of the log".to_owned())
        } else if c.size > leaves {
            Some(format!("beyond the log's {leaves} leaves (rollback)"))
        } else if want_roots.get(&c.size).copied().flatten() != Some(c.root) {
            Some("root does not match the leaves (forked or rewritten)".to_owned())
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(tampered(Finding::BadExportedCheckpoint {
                size: c.size,
                problem,
            }));
        }
    }
    Ok(VerifyReport {
        leaves,
        checkpoints: cps.len() as u64,
        keys: chain.iter().map(|(k, _)| fingerprint(k)).collect(),
        latest: cps.last().map(|(_, c)| c.checkpoint.clone()),
    })
}

/// Genesis and rotation leaves extend the key chain; their placement and signatures are checked.
fn check_chain_leaf(
    leaf: &Leaf,
    i: u64,
    origin: Option<&str>,
    chain: &mut Vec<(VerifyingKey, u64)>,
) -> Result<(), AuditError> {
    let parse_key = |b64: &str| {
        B64.decode(b64)
            .ok()
            .and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok())
            .and_then(|b| VerifyingKey::from_bytes(&b).ok())
            .ok_or_else(|| bad_leaf(i, "malformed public key"))
    };
    match (&leaf.event, i) {
        (Event::LogCreated { key }, 0) => chain.push((parse_key(key)?, 0)),
        (_, 0) => return Err(bad_leaf(0, "leaf 0 is not log-created")),
        (Event::LogCreated { .. }, _) => return Err(bad_leaf(i, "second log-created leaf")),
        (Event::KeyRotation { new_key, signature }, _) => {
            let new = parse_key(new_key)?;
            let sig = B64
                .decode(signature)
                .ok()
                .and_then(|v| <[u8; 64]>::try_from(v.as_slice()).ok())
                .map(|b| Signature::from_bytes(&b))
                .ok_or_else(|| bad_leaf(i, "malformed rotation signature"))?;
            // The message names the origin, so a handover cannot be replayed into another log.
            let (old, _) = chain
                .last()
                .ok_or_else(|| bad_leaf(i, "rotation before genesis"))?;
            let signed = origin.is_some_and(|o| {
                old.verify_strict(&rotation_message(o, new.as_bytes()), &sig)
                    .is_ok()
            });
            if !signed {
                return Err(bad_leaf(i, "rotation not signed by the previous key"));
            }
            chain.push((new, i));
        }
        _ => {}
    }
    Ok(())
}

/// Whether an allowed chain key signed `cp`: the newest key whose rotation leaf lies inside the tree,
/// or — only on the first checkpoint that contains that rotation leaf — the key it replaced.
fn signed_by_allowed_key(
    cp: &SignedCheckpoint,
    chain: &[(VerifyingKey, u64)],
    prev_size: u64,
) -> bool {
    let size = cp.checkpoint.size;
    let Some(j) = chain.iter().rposition(|(_, r)| *r < size) else {
        return false;
    };
    let handover = j > 0 && prev_size <= chain[j].1;
    cp.verify(&chain[j].0).is_ok() || (handover && cp.verify(&chain[j - 1].0).is_ok())
}

/// [`verify_store`] on a data dir, with the public key from a PEM file and the exported checkpoint from
/// [`crate::export::default_export_dir`] when present.
pub fn verify(data_dir: &Path, public_key: &Path) -> Result<VerifyReport, AuditError> {
    let key = load_public_key(public_key)?;
    let exported = crate::export::read_exported(&crate::export::default_export_dir(data_dir))?;
    let store = open_data_dir(data_dir)?;
    verify_store(&store, &key, exported.as_ref())
}

/// One leaf with its inclusion proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvenLeaf {
    /// Leaf index.
    pub index: u64,
    /// The canonical leaf bytes: base64 ([`PROOF_FORMAT`]), or the JSON text itself
    /// ([`PROOF_FORMAT_V1`]).
    pub leaf: String,
    /// The leaf decoded, for reading ([`PROOF_FORMAT`]); [`check_proof`] refuses a document where it
    /// differs from what `leaf` decodes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoded: Option<Leaf>,
    /// Audit path, hex hashes, leaf to root.
    pub proof: Vec<String>,
}

/// A self-contained proof of what happened to one message: its leaves and their inclusion proofs
/// against a signed checkpoint. Verifiable with [`check_proof`] and the public key alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofDocument {
    /// [`PROOF_FORMAT`].
    pub format: String,
    /// The message id.
    pub message_id: String,
    /// The signed checkpoint note the proofs lead to.
    pub checkpoint: String,
    /// Leaves inside the checkpoint, with proofs.
    pub entries: Vec<ProvenLeaf>,
    /// Indices of this message's leaves appended after the checkpoint (prove again later).
    pub pending: Vec<u64>,
}

fn latest_checkpoint<S: Store + ?Sized>(store: &S) -> Result<SignedCheckpoint, AuditError> {
    let (_, v) = store
        .last(trees::CHECKPOINTS)?
        .ok_or_else(|| AuditError::NotFound("no checkpoint yet".into()))?;
    let text = String::from_utf8(v)
        .map_err(|_| AuditError::Checkpoint("checkpoint is not UTF-8".into()))?;
    SignedCheckpoint::parse(&text)
}

fn index_hits<S: Store + ?Sized>(
    store: &S,
    from: &[u8],
    to: Option<&[u8]>,
) -> Result<Vec<u64>, AuditError> {
    let rows = store.range(trees::INDEX, from, to, usize::MAX)?;
    let mut out: Vec<u64> = rows
        .iter()
        .filter_map(|(k, _)| k.len().checked_sub(8).and_then(|s| decode_u64(&k[s..])))
        .collect();
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Leaf indices under one value (`prefix` = tag ‖ len ‖ value): its posting lists, the per-leaf keys of
/// older logs, and every leaf of the unindexed tail (callers re-check each leaf anyway).
fn prefix_hits<S: Store + ?Sized>(store: &S, prefix: &[u8]) -> Result<Vec<u64>, AuditError> {
    let end = sammen_store::prefix_end(prefix);
    let mut out = index_hits(store, prefix, end.as_deref())?;
    // Lists of indices as gaps from `first`, and those of older logs as u64 BE.
    for tag in [POSTINGS_GAPS, POSTINGS] {
        let lists = [&[tag][..], prefix].concat();
        for (k, v) in store.scan_prefix(trees::INDEX, &lists, usize::MAX)? {
            // The length prefix makes the value exact; only `‖ first` may follow it.
            let Some(first) = k.get(lists.len()..).and_then(decode_u64) else {
                continue;
            };
            if tag == POSTINGS {
                out.extend(v.chunks_exact(8).filter_map(decode_u64));
            } else {
                out.extend(decode_gaps(first, &v));
            }
        }
    }
    out.extend(tail(store)?);
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Leaf indices under `value` of `tag` (`m`, `g`, `s`, `p`): its hashed bucket lists (message id,
/// patient) and everything [`prefix_hits`] reads. Callers re-check each leaf (a hash may collide).
fn value_hits<S: Store + ?Sized>(store: &S, tag: u8, value: &str) -> Result<Vec<u64>, AuditError> {
    let mut out = prefix_hits(store, &index_prefix(tag, value))?;
    if let Some(hashed) = hashed_tag(tag) {
        let h = value_hash(value);
        let prefix = bucket_prefix(hashed, h);
        // One list a window: `prefix ‖ first`.
        for (k, v) in store.scan_prefix(trees::INDEX, &prefix, usize::MAX)? {
            if let Some(first) = k.get(prefix.len()..).and_then(decode_u64) {
                out.extend(bucket_indices(first, &v, h));
            }
        }
        out.sort_unstable();
        out.dedup();
    }
    Ok(out)
}

/// Leaf indices with a time in `[from_ms, to_ms)` or a chunk that may hold one, plus the unindexed tail.
fn time_hits<S: Store + ?Sized>(
    store: &S,
    from_ms: u64,
    to_ms: u64,
) -> Result<Vec<u64>, AuditError> {
    let from = [&b"t"[..], &from_ms.to_be_bytes()].concat();
    let to = [&b"t"[..], &to_ms.to_be_bytes()].concat();
    let mut out = index_hits(store, &from, Some(&to))?;
    // Chunks whose latest time is at least `from_ms`, then those whose earliest is before `to_ms`.
    let start = [&[POSTINGS, b't'][..], &from_ms.to_be_bytes()].concat();
    let end = sammen_store::prefix_end(&[POSTINGS, b't']);
    // The index is not evidence: a damaged entry must not make us list more leaves than there are.
    let leaf_end = store
        .last(trees::LEAVES)?
        .and_then(|(k, _)| decode_u64(&k))
        .map_or(0, |i| i + 1);
    for (k, v) in store.range(trees::INDEX, &start, end.as_deref(), usize::MAX)? {
        // key: `~t` ‖ latest ‖ first; value: earliest ‖ end.
        let (Some(first), Some(earliest), Some(stop)) = (
            k.get(10..18).and_then(decode_u64),
            v.get(..8).and_then(decode_u64),
            v.get(8..16).and_then(decode_u64),
        ) else {
            continue;
        };
        if earliest < to_ms {
            out.extend(first..stop.min(leaf_end));
        }
    }
    out.extend(tail(store)?);
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Indices of the leaves not yet in the posting lists: from `index_size` on (`nodes_size` in logs written
/// before the index had its own mark, whose lists always covered the stored tree).
fn tail<S: Store + ?Sized>(store: &S) -> Result<Vec<u64>, AuditError> {
    let mark = |key: &[u8]| -> Result<Option<u64>, AuditError> {
        Ok(store.get(trees::META, key)?.and_then(|v| decode_u64(&v)))
    };
    let from = match mark(META_INDEX_SIZE)? {
        Some(i) => i,
        None => mark(META_NODES_SIZE)?.unwrap_or(0),
    };
    let mut out = Vec::new();
    // A damaged entry is verify's business: search lists what it can read before it. A store error
    // is not damage and is passed on.
    match runs::for_each(
        store,
        from,
        |i, _| {
            out.push(i);
            Ok(())
        },
        runs::damaged,
    ) {
        Ok(()) | Err(AuditError::Tampered(_)) => Ok(out),
        Err(e) => Err(e),
    }
}

/// Leaf `i`'s bytes for search and prove, which re-check every index hit against the leaf: a damaged
/// entry is skipped like a leaf that does not decode (it is verify's business); store errors pass.
fn leaf_bytes<S: Store + ?Sized>(store: &S, i: u64) -> Result<Option<Vec<u8>>, AuditError> {
    match runs::get(store, i) {
        Err(AuditError::Tampered(_)) => Ok(None),
        other => other,
    }
}

/// Proof document for `message_id` against the latest stored checkpoint.
pub fn prove_store<S: Store + ?Sized>(
    store: &S,
    message_id: &str,
) -> Result<ProofDocument, AuditError> {
    let cp = latest_checkpoint(store)?;
    let size = cp.checkpoint.size;
    let nodes = LogNodes::new(store, None);
    let mut entries = Vec::new();
    let mut pending = Vec::new();
    for i in value_hits(store, b'm', message_id)? {
        let Some(bytes) = leaf_bytes(store, i)? else {
            continue;
        };
        // The index is a convenience, not evidence: keep only leaves that really name the message.
        let names_it =
            Leaf::decode(&bytes).is_ok_and(|l| l.message_id.as_deref() == Some(message_id));
        if !names_it {
            continue;
        }
        if i >= size {
            pending.push(i);
            continue;
        }
        let proof = inclusion_proof(&nodes, i, size)?;
        entries.push(ProvenLeaf {
            index: i,
            leaf: B64.encode(&bytes),
            decoded: Leaf::decode(&bytes).ok(),
            proof: proof.iter().map(|h| hex(h)).collect(),
        });
    }
    if entries.is_empty() && pending.is_empty() {
        return Err(AuditError::NotFound(format!(
            "no audit leaf for message id {message_id:?}"
        )));
    }
    Ok(ProofDocument {
        format: PROOF_FORMAT.into(),
        message_id: message_id.into(),
        checkpoint: cp.text,
        entries,
        pending,
    })
}

/// [`prove_store`] on a data dir.
pub fn prove(data_dir: &Path, message_id: &str) -> Result<ProofDocument, AuditError> {
    prove_store(&open_data_dir(data_dir)?, message_id)
}

fn parse_hashes(v: &[String]) -> Result<Vec<Hash>, AuditError> {
    v.iter()
        .map(|s| {
            unhex(s)
                .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                .ok_or_else(|| AuditError::Checkpoint("proof hash is not 32 hex bytes".into()))
        })
        .collect()
}

/// Verify a proof document with no data dir: the checkpoint's signature under `key`, every leaf's
/// inclusion proof against its root, and that every leaf names the document's message id.
pub fn check_proof(
    doc: &ProofDocument,
    key: &VerifyingKey,
) -> Result<Vec<(LeafIndex, Leaf)>, AuditError> {
    let base64 = match doc.format.as_str() {
        PROOF_FORMAT => true,
        PROOF_FORMAT_V1 => false,
        other => {
            return Err(AuditError::Checkpoint(format!(
                "unknown proof format {other:?}"
            )))
        }
    };
    let cp = SignedCheckpoint::parse(&doc.checkpoint)?;
    cp.verify(key)?;
    let c = &cp.checkpoint;
    let mut out = Vec::with_capacity(doc.entries.len());
    for e in &doc.entries {
        let bytes = if base64 {
            B64.decode(&e.leaf)
                .map_err(|_| AuditError::Checkpoint(format!("leaf {}: not base64", e.index)))?
        } else {
            e.leaf.as_bytes().to_vec()
        };
        let leaf = Leaf::decode(&bytes)
            .map_err(|err| AuditError::Checkpoint(format!("leaf {}: {err}", e.index)))?;
        if base64 && e.decoded.as_ref() != Some(&leaf) {
            return Err(AuditError::Checkpoint(format!(
                "leaf {}: the decoded leaf is not what its bytes say",
                e.index
            )));
        }
        if leaf.message_id.as_deref() != Some(doc.message_id.as_str()) {
            return Err(AuditError::Checkpoint(format!(
                "leaf {} is about another message",
                e.index
            )));
        }
        let proof = parse_hashes(&e.proof)?;
        verify_inclusion(&leaf_hash(&bytes), e.index, c.size, &proof, &c.root)?;
        out.push((LeafIndex(e.index), leaf));
    }
    Ok(out)
}

/// Proof that an old checkpoint's tree is a prefix of the latest one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyDocument {
    /// [`CONSISTENCY_FORMAT`].
    pub format: String,
    /// The old checkpoint note.
    pub old: String,
    /// The latest checkpoint note.
    pub new: String,
    /// RFC 9162 consistency proof, hex hashes.
    pub proof: Vec<String>,
}

/// Prove (and check locally) that the log only grew since `old`.
pub fn consistency_store<S: Store + ?Sized>(
    store: &S,
    old: &SignedCheckpoint,
) -> Result<ConsistencyDocument, AuditError> {
    let new = latest_checkpoint(store)?;
    let (o, n) = (&old.checkpoint, &new.checkpoint);
    if o.size > n.size {
        return Err(AuditError::Rollback {
            stored: n.size,
            checkpoint: o.size,
            source_name: "given",
        });
    }
    let proof = consistency_proof(&LogNodes::new(store, None), o.size, n.size)?;
    verify_consistency(o.size, n.size, &o.root, &n.root, &proof)?;
    Ok(ConsistencyDocument {
        format: CONSISTENCY_FORMAT.into(),
        old: old.text.clone(),
        new: new.text,
        proof: proof.iter().map(|h| hex(h)).collect(),
    })
}

/// [`consistency_store`] on a data dir, the old checkpoint read from a note file.
pub fn consistency(
    data_dir: &Path,
    old_checkpoint: &Path,
) -> Result<ConsistencyDocument, AuditError> {
    let text = std::fs::read_to_string(old_checkpoint)
        .map_err(|e| AuditError::io(format!("read {}", old_checkpoint.display()), e))?;
    let old = SignedCheckpoint::parse(&text)?;
    consistency_store(&open_data_dir(data_dir)?, &old)
}

/// Verify a consistency document offline; each checkpoint must be signed by one of `keys`.
pub fn check_consistency(
    doc: &ConsistencyDocument,
    keys: &[VerifyingKey],
) -> Result<(), AuditError> {
    let old = SignedCheckpoint::parse(&doc.old)?;
    let new = SignedCheckpoint::parse(&doc.new)?;
    for cp in [&old, &new] {
        if !keys.iter().any(|k| cp.verify(k).is_ok()) {
            return Err(AuditError::Checkpoint("not signed by a trusted key".into()));
        }
    }
    let (o, n) = (&old.checkpoint, &new.checkpoint);
    if o.origin != n.origin {
        return Err(AuditError::Checkpoint(
            "checkpoints of different logs".into(),
        ));
    }
    let proof = parse_hashes(&doc.proof)?;
    verify_consistency(o.size, n.size, &o.root, &n.root, &proof)?;
    Ok(())
}

/// What to search for.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Search {
    /// Every leaf of one message id.
    MessageId(String),
    /// Every leaf whose sender or receiver has this GLN.
    Gln(String),
    /// Every leaf whose sender or receiver has this SOR code.
    Sor(String),
    /// Leaves with `from_ms <= time_ms < to_ms`.
    TimeRange {
        /// Inclusive start, unix ms.
        from_ms: u64,
        /// Exclusive end, unix ms.
        to_ms: u64,
    },
    /// Every leaf of one patient: the CPR number is hashed with the key, never stored or printed.
    Cpr {
        /// The CPR number.
        cpr: String,
        /// The log's patient HMAC key.
        key: PatientKey,
    },
}

/// Leaves matching `query`, in index order. Results are re-checked against the leaf itself.
pub fn search_store<S: Store + ?Sized>(
    store: &S,
    query: &Search,
) -> Result<Vec<(LeafIndex, Leaf)>, AuditError> {
    let hits = match query {
        Search::MessageId(m) => value_hits(store, b'm', m)?,
        Search::Gln(g) => value_hits(store, b'g', g)?,
        Search::Sor(s) => value_hits(store, b's', s)?,
        Search::Cpr { cpr, key } => value_hits(store, b'p', &key.pseudonym(cpr))?,
        Search::TimeRange { from_ms, to_ms } => time_hits(store, *from_ms, *to_ms)?,
    };
    let pseudonym = match query {
        Search::Cpr { cpr, key } => Some(key.pseudonym(cpr)),
        _ => None,
    };
    let mut out = Vec::new();
    for i in hits {
        let Some(bytes) = leaf_bytes(store, i)? else {
            continue;
        };
        let Ok(leaf) = Leaf::decode(&bytes) else {
            continue;
        };
        let parties = [&leaf.sender, &leaf.receiver];
        let matches = match query {
            Search::MessageId(m) => leaf.message_id.as_deref() == Some(m.as_str()),
            Search::Gln(g) => parties
                .iter()
                .any(|p| p.as_ref().and_then(|p| p.gln.as_deref()) == Some(g.as_str())),
            Search::Sor(s) => parties
                .iter()
                .any(|p| p.as_ref().and_then(|p| p.sor.as_deref()) == Some(s.as_str())),
            Search::TimeRange { from_ms, to_ms } => (*from_ms..*to_ms).contains(&leaf.time_ms),
            Search::Cpr { .. } => leaf.patient.is_some() && leaf.patient == pseudonym,
        };
        if matches {
            out.push((LeafIndex(i), leaf));
        }
    }
    Ok(out)
}

/// [`search_store`] on a data dir.
pub fn search(data_dir: &Path, query: &Search) -> Result<Vec<(LeafIndex, Leaf)>, AuditError> {
    search_store(&open_data_dir(data_dir)?, query)
}
