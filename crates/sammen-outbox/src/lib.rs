//! # sammen-outbox: store-and-forward for accepted MedCom messages
//!
//! Why it exists: when Sammen answers a sender "accepted", the message must reach its receiver even if the
//! broker process is killed, the machine loses power, RabbitMQ is down or the receiver is away for days. The
//! outbox is the single place that promise is kept: the ingress calls [`Outbox::accept`] and answers only
//! after it returns; the relay drains [`Outbox::next_batch`] and reports back what the bus confirmed.
//!
//! ## On-disk layout (one [`sammen_store::Store`], trees in [`trees`])
//! Record ids ([`RecordId`]) are a global monotonic `u64`, stored big-endian so key order is id order.
//! Strings in keys carry a big-endian `u16` length prefix (`‖` below), so no separator can be forged.
//! Parties are keyed by [`party_key`]: `gln:<GLN>`, else `sor:<SOR>`.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `payload` | id | the exact bytes accepted |
//! | `meta` | id | JSON [`Status`]: ids, family, event, parties, sha256, state, timeline, attempts |
//! | `dedupe` | `e`‖sender‖envelope_id | id ‖ message_id |
//! | `dedupe` | `m`‖sender‖message_id | id of the first record with this message id |
//! | `msgid` | message_id ‖ id | (empty) |
//! | `queue` | receiver ‖ id | (empty): per-receiver publish queue |
//! | `pending` | id | (empty): all records still to publish, in accept order |
//! | `fin_payload`, `fin_meta` | finished_ms ‖ id | (empty): retention queues |
//! | `counters` | `next_id` | next id (never reused, even after purge) |
//! | `await_ack` | received_ms ‖ id | (empty): records waiting for an acknowledgement |
//! | `audit_patient` | id | patient pseudonym (hex HMAC) of records written before [`Status::patient`]: read and purged, never written |
//!
//! ## Invariants
//! - `accept` writes payload, metadata, dedupe keys, first state `accepted`, the queue entries and the id
//!   counter in **one atomic batch** and returns only once the store says it is durable (fdatasync'd, group
//!   committed with concurrent accepts). A caller that got `Accepted`/`Resend` will find the record after any
//!   crash; a caller that got an error may or may not (it retries; dedupe makes that safe).
//! - Dedupe (MedCom reliable messaging), keyed by sender: same message id + same envelope id → `Duplicate`,
//!   nothing written; same message id + new envelope id → `Resend`, a new record flagged with `resend_of`;
//!   an envelope id already used with another message id → `Conflict`, nothing written.
//! - A record is in `queue` and `pending` exactly while its state is `accepted`; the transition out of
//!   `accepted` deletes both in the same batch that writes the new state.
//! - Ids are allocated and submitted to the group committer under one lock, so they commit in id order:
//!   `next_batch` returns each receiver's records in accept order.
//! - Every transition is validated ([`State::can_go_to`]), appended to the timeline and committed durably
//!   before the call returns. Operations on one record (and accepts of one dedupe key) are serialised
//!   in memory; different records share group commits.
//! - Acknowledgements ([`Outbox::accept_acknowledgement`]): the ack's accept and the move of the records it
//!   answers (same message id, sent by the ack's receiver to the ack's sender) to `acknowledged(code)`,
//!   with their `acknowledged_by` link and leaves, are **one batch**. An original keeps its first
//!   acknowledgement: a different one is refused ([`ALREADY_ACKNOWLEDGED_CODE`]), as is an ack answering
//!   an ack ([`ACK_OF_ACK_CODE`]); an ack matching nothing is stored and queued with no originals.
//! - A resend of an acknowledged message is stored as acknowledged (never forwarded) and the stored
//!   acknowledgement is queued again for the sender as a new record flagged as a resend, in one batch: the
//!   same answer, never a different one. Without the stored payload (purged) the resend is forwarded.
//! - A non-acknowledgement record sits in `await_ack` (key: received time ‖ id) until it is acknowledged,
//!   overdue or dead; [`Outbox::mark_overdue_before`] walks only that index and never resends anything.
//!   Acknowledgements are never in it (MedCom KR2).
//! - Operator replay ([`Outbox::replay`]) is the only way out of `dead`: back to `accepted` (attempts 0,
//!   `finished_at` and retention entries cleared, queue/pending/`await_ack` entries restored, depth + 1)
//!   with a `replay` leaf, in one batch; refused for other states and once the payload is purged.
//! - A record that reaches a final state gets retention entries; `purge` drops its payload after
//!   `payload_ttl` and the whole record, with its dedupe keys, after `meta_ttl`.
//!
//! ## Audit (optional: [`Outbox::open_with_audit`], [`open_fjall_audited`], [`open_sled_audited`])
//! - The outbox and its [`sammen_audit::AuditLog`] share one store (opened with [`trees::AUDITED`]); every
//!   change's leaf goes into **the same batch** as the change (`AuditLog::submit`), so a failed batch leaves
//!   neither (the log fills the index with a `lost-write` leaf) and a committed one both.
//! - One leaf per event: `accepted` or `resend` (accept), `published`, `delivered`, `acknowledged`
//!   (code), `overdue`, `dead` (one per state entered; a counted attempt that does not kill enters none),
//!   `replay` (operator, dead → accepted),
//!   `payload-purged` and `purged` (retention). Leaf time = the timeline step's time.
//! - `Duplicate` and `Conflict` change nothing in the outbox; each still gets a leaf (`duplicate`, or
//!   `rejected` with [`CONFLICT_CODE`]) in **its own batch**, durable before `accept` answers (under the
//!   dedupe key lock, so repeats are recorded in answer order).
//! - The patient id given to [`Outbox::accept_with`] is hashed with the log's key at once; only that
//!   pseudonym is kept, in the record's metadata ([`Status::patient`], purged with the record), so later
//!   leaves carry it too. The CPR number is never written.
//! - Lock order: dedupe/record key guard → `next_id` (accept only) → the audit log's state lock (inside
//!   `AuditLog::submit`, held across staging and `Store::submit`) → the store's queue. The audit log never
//!   calls back into the outbox, so there is no cycle; ids and leaf indices both commit in submit order.
//! - [`Outbox::record`] writes events from outside the outbox (received, rejected by validation,
//!   certificate/identity refusals, operator actions) as their own batch.
//!
//! ## Observing
//! [`Outbox::with_observer`] registers a [`TransitionObserver`], called after every state change is durable
//! (not for accept, duplicate and conflict, which the caller sees in [`AcceptOutcome`]); `sammen serve` turns
//! these into metrics, so every path that changes a state is counted without instrumenting each caller.
//!
//! ## Recovery
//! Nothing to replay: on open the store runs its engine's recovery, the outbox recomputes the id allocator
//! (max of the counter and the last `meta` key + 1) and the pending depth (count of `pending`). Records that
//! were `accepted` before a crash are simply still in the queue; the relay publishes them again (at-least-once,
//! the subscriber dedupes by message id).
#![forbid(unsafe_code)]

mod outbox;
mod types;

pub use outbox::{
    party_key, trees, Clock, Outbox, TransitionObserver, ACK_OF_ACK_CODE,
    ALREADY_ACKNOWLEDGED_CODE, CONFLICT_CODE, MAX_ID_LEN,
};
pub use types::{
    AcceptAudit, AcceptOutcome, AcceptRequest, AckAcceptOutcome, AckLink, Answers, AttemptOutcome,
    MessageMeta, OutboxConfig, OutboxError, OverdueScan, Pending, PurgeStats, RecordId, State,
    Status, Step,
};

/// Re-exported so callers of the audited outbox name one crate.
pub use sammen_audit;

/// Re-exported so callers name one crate.
pub use sammen_store::{FjallStore, SledStore, Store, StoreError};

/// Open an outbox on sled (made durable with fdatasync) at `path`.
pub fn open_sled(
    path: impl AsRef<std::path::Path>,
    config: OutboxConfig,
) -> Result<Outbox<SledStore>, OutboxError> {
    Outbox::open(SledStore::open(path, trees::ALL)?, config)
}

/// Open an outbox on fjall (PersistMode::SyncAll) at `path`.
pub fn open_fjall(
    path: impl AsRef<std::path::Path>,
    config: OutboxConfig,
) -> Result<Outbox<FjallStore>, OutboxError> {
    Outbox::open(FjallStore::open(path, trees::ALL)?, config)
}

/// Open an outbox with an audit log on sled at `path` (store opened with [`trees::AUDITED`]).
pub fn open_sled_audited(
    path: impl AsRef<std::path::Path>,
    config: OutboxConfig,
    audit: sammen_audit::AuditConfig,
    key: sammen_audit::SigningKey,
) -> Result<Outbox<std::sync::Arc<dyn Store>>, OutboxError> {
    let store: std::sync::Arc<dyn Store> =
        std::sync::Arc::new(SledStore::open(path, trees::AUDITED)?);
    open_audited(store, config, audit, key)
}

/// Open an outbox with an audit log on fjall at `path` (store opened with [`trees::AUDITED`]).
pub fn open_fjall_audited(
    path: impl AsRef<std::path::Path>,
    config: OutboxConfig,
    audit: sammen_audit::AuditConfig,
    key: sammen_audit::SigningKey,
) -> Result<Outbox<std::sync::Arc<dyn Store>>, OutboxError> {
    let store: std::sync::Arc<dyn Store> =
        std::sync::Arc::new(FjallStore::open(path, trees::AUDITED)?);
    open_audited(store, config, audit, key)
}

/// Open the audit log on `store` (refusing a rolled-back or inconsistent log), then the outbox on it.
pub fn open_audited<S: Store + Clone>(
    store: S,
    config: OutboxConfig,
    audit: sammen_audit::AuditConfig,
    key: sammen_audit::SigningKey,
) -> Result<Outbox<S>, OutboxError> {
    let log = sammen_audit::AuditLog::open(store, audit, key)?;
    Outbox::open_with_audit(std::sync::Arc::new(log), config)
}
