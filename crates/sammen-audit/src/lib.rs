//! # sammen-audit: Sammen's signed, tamper-evident audit log
//!
//! Why it exists: afterwards, an operator, an auditor or a sender must be able to prove what happened to
//! every MedCom message the broker handled, and to detect any change to that record. IHE ATNA asks for
//! audit records but not for tamper evidence; this crate adds it the way Certificate Transparency does
//! (RFC 6962 / 9162): every lifecycle event is a leaf of an append-only Merkle tree, the tree head is
//! signed periodically (Ed25519 checkpoints in the transparency-log note format) and exported beside the
//! data dir, and anyone holding the public key can check a per-message inclusion proof or that the log
//! only grew.
//!
//! ## Threat model
//! Detected (by [`ops::verify`], or at [`AuditLog::open`]):
//! - any change, deletion, insertion or reordering of stored leaves covered by a checkpoint, and of stored
//!   tree nodes; a checkpoint whose root, signature, size order or key does not fit; a log truncated below
//!   its checkpoints; a replayed or reordered old checkpoint; a checkpoint signed by a key outside the
//!   chain; a rollback of the whole data dir to an earlier copy, **if** a newer checkpoint was exported
//!   (open refuses: [`AuditError::Rollback`] / [`AuditError::Inconsistent`]).
//! - a sender holding a [`ops::ProofDocument`] can later show the broker's signed log contained its events.
//!
//! Not detected:
//! - a full rewrite by someone holding the signing key (they re-sign everything): only checkpoints kept
//!   *outside* the broker's control (the exported file copied to WORM storage / an auditor, proofs held
//!   by senders) expose it, via [`ops::consistency_store`].
//! - changes to leaves appended after the last checkpoint (not yet signed); keep `checkpoint_every` /
//!   `checkpoint_interval_ms` small. Truncation of that unsigned tail is invisible too.
//! - events the broker never recorded (a lying broker); the search index (`audit_index`) is a
//!   convenience, not evidence: search and prove re-check every hit against the leaf itself. It is
//!   written with a checkpoint once enough leaves wait, and with every explicit one, never with each leaf
//!   (see [`store`]); search reads the leaves after its mark (`index_size`) one by one.
//!
//! ## Invariants
//! - Leaf `i` is stored under index `i`, or inside a run keyed by the run's last index: the run of its
//!   batch, or of all the batches its group commit joined (one key per group, see [`runs`]); indices are
//!   contiguous from 0; leaf 0 is `log-created`.
//! - A leaf is written in the same store batch as the state change it records ([`AuditLog::stage`] /
//!   [`AuditLog::submit`]); the in-memory tree takes leaves only after their batch is durable, in index
//!   order (see [`store`] for failed batches).
//! - Every checkpoint is stored together with all tree nodes it covers, atomically; the exported file
//!   is written only after that commit (temp file, fsync, rename, directory fsync).
//! - No personal data: leaves hold identifiers of messages and organisations, hashes and codes; the
//!   patient appears only as `HMAC-SHA256(key, CPR)` ([`leaf::PatientKey`]).
//! - Proof verification ([`proof`]) and checkpoint verification ([`checkpoint`]) never touch storage.
//!
//! ## Modules
//! [`tree`] hashing and proof generation · [`proof`] verification · [`leaf`] events and encoding ·
//! [`checkpoint`] signed notes · [`keys`] key files · [`store`] the durable log · [`runs`] a batch's
//! leaves under one key · `index` the search index's posting lists · [`export`] atomic export ·
//! [`ops`] the CLI operations.
#![forbid(unsafe_code)]

pub mod checkpoint;
mod error;
pub mod export;
mod index;
pub mod keys;
pub mod leaf;
pub mod leaf_bin;
pub mod ops;
pub mod proof;
pub mod runs;
pub mod store;
pub mod tree;

pub use checkpoint::{Checkpoint, SignedCheckpoint};
pub use error::{AuditError, Finding};
pub use keys::{keygen, KeyFiles};
pub use leaf::{Event, Leaf, LeafEvent, LeafIndex, Outcome, PatientKey};
pub use ops::{
    check_consistency, check_proof, consistency, prove, search, verify, ConsistencyDocument,
    ProofDocument, Search, VerifyReport,
};
pub use proof::{verify_consistency, verify_inclusion, ProofError};
pub use runs::stored_leaves;
pub use store::{trees, AuditConfig, AuditLog, PendingCommit, Staged};
pub use tree::Hash;

/// Re-exported for callers that build keys without naming ed25519-dalek.
pub use ed25519_dalek::{SigningKey, VerifyingKey};
