//! Typed errors.

use sammen_store::StoreError;

use crate::proof::ProofError;

/// Everything the audit log can report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The underlying store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// File system error (key files, checkpoint export).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Bad configuration or input (key too short, malformed key file...).
    #[error("configuration: {0}")]
    Config(String),
    /// Rollback: the stored log is shorter than a checkpoint exported earlier.
    #[error(
        "rollback: stored log has {stored} leaves but checkpoint {source_name} says {checkpoint}"
    )]
    Rollback {
        /// Leaves in the store.
        stored: u64,
        /// Size of the checkpoint.
        checkpoint: u64,
        /// Which checkpoint (`exported` or `stored`).
        source_name: &'static str,
    },
    /// The stored log does not extend an exported/stored checkpoint (forked or rewritten history).
    #[error("stored log is inconsistent with checkpoint {source_name} of size {size}")]
    Inconsistent {
        /// Size of the checkpoint.
        size: u64,
        /// Which checkpoint (`exported` or `stored`).
        source_name: &'static str,
    },
    /// A leaf index is missing below the end of the log (a deleted entry or a crash inside a failed group).
    #[error("leaf {0} is missing")]
    Gap(u64),
    /// The configured signing key is not the log's current key.
    #[error("signing key {configured} is not the log's current key {current}")]
    WrongSigningKey {
        /// Fingerprint of the configured key.
        configured: String,
        /// Fingerprint of the key the log expects.
        current: String,
    },
    /// A previous store failure left the in-memory tree unable to continue; reopen the log.
    #[error("audit log is poisoned after a failed write; reopen it")]
    Poisoned,
    /// Offline verification found tampering.
    #[error("tampered: {0}")]
    Tampered(Finding),
    /// A proof document or checkpoint did not verify.
    #[error("proof: {0}")]
    Proof(#[from] ProofError),
    /// A checkpoint note is malformed or its signature is wrong.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// Nothing to prove: no leaf for this message, or no checkpoint yet.
    #[error("not found: {0}")]
    NotFound(String),
}

impl AuditError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        AuditError::Io {
            context: context.into(),
            source,
        }
    }
}

/// The first problem `verify` found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Finding {
    /// A leaf is missing, undecodable, or hashes differently from the stored tree.
    #[error("leaf {index}: {problem}")]
    BadLeaf {
        /// Leaf index.
        index: u64,
        /// What is wrong.
        problem: String,
    },
    /// A stored interior node does not match the recomputed tree.
    #[error("node ({level}, {index}) does not match the leaves")]
    BadNode {
        /// Level.
        level: u8,
        /// Index at that level.
        index: u64,
    },
    /// A checkpoint has a bad signature, a wrong root, a size beyond the log or not growing.
    #[error("checkpoint {seq} (size {size}): {problem}")]
    BadCheckpoint {
        /// Sequence number (0 = first).
        seq: u64,
        /// Claimed tree size.
        size: u64,
        /// What is wrong.
        problem: String,
    },
    /// The exported checkpoint is not signed by the log, lies beyond it, or disagrees with it.
    #[error("exported checkpoint (size {size}): {problem}")]
    BadExportedCheckpoint {
        /// Claimed tree size.
        size: u64,
        /// What is wrong.
        problem: String,
    },
    /// The trusted public key is not in the log's key chain.
    #[error("the given public key is not in the log's key chain")]
    UntrustedKey,
}
