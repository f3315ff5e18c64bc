//! Public types of the outbox.

use std::fmt;
use std::time::SystemTime;

use sammen_model::{AckCode, Family, Party, PatientId};
use sammen_store::StoreError;
use serde::{Deserialize, Serialize};

/// Identifies one accepted record (an original or a resend). Monotonic: a later accept has a larger id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RecordId(pub u64);

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What the ingress knows about a message when it hands it to the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageMeta {
    /// MessageHeader id (FHIR) or letter id (OIOXML).
    pub message_id: String,
    /// Bundle id (FHIR) or envelope id.
    pub envelope_id: String,
    /// Message family.
    pub family: Family,
    /// Event code (routing key part).
    pub event: String,
    /// Sender organisation.
    pub sender: Party,
    /// Receiver organisation.
    pub receiver: Party,
    /// When the ingress received it.
    pub received: SystemTime,
}

/// One message to accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptRequest {
    /// The exact bytes received; stored and forwarded unchanged.
    pub bytes: Vec<u8>,
    /// Its identifiers and addresses.
    pub meta: MessageMeta,
}

/// What only the audit leaf of an accept needs ([`crate::Outbox::accept_with`]); ignored without an
/// audit log. A separate argument so [`AcceptRequest`] stays as it was.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AcceptAudit {
    /// The patient from the validation report: only its keyed hash is stored (leaf and outbox),
    /// never the identifier itself.
    pub patient: Option<PatientId>,
    /// Client certificate fingerprint (hex SHA-256 of the DER).
    pub cert_fingerprint: Option<String>,
    /// Also write a `received` leaf (time = `meta.received`) in the same batch as the outcome's leaf, so
    /// the ingress pays no extra commit for it.
    pub received: bool,
}

impl AcceptAudit {
    /// With the patient of the validation report.
    pub fn patient(mut self, patient: Option<PatientId>) -> Self {
        self.patient = patient;
        self
    }

    /// With the client certificate's fingerprint.
    pub fn cert_fingerprint(mut self, fingerprint: Option<String>) -> Self {
        self.cert_fingerprint = fingerprint;
        self
    }

    /// With a `received` leaf before the outcome's leaf.
    pub fn received(mut self, yes: bool) -> Self {
        self.received = yes;
        self
    }
}

/// How `accept` answered (MedCom reliable messaging).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcceptOutcome {
    /// New message: stored durably and queued for its receiver.
    Accepted {
        /// The new record.
        id: RecordId,
    },
    /// Same message id from the same sender in a new envelope: stored and queued, flagged as a resend.
    Resend {
        /// The new record.
        id: RecordId,
        /// The first record with this message id.
        original: RecordId,
    },
    /// Same message id in the same envelope: an exact repeat, nothing written.
    Duplicate {
        /// The record that already holds it.
        id: RecordId,
    },
    /// The envelope id was already used by this sender for another message id: refused, nothing written.
    Conflict {
        /// The record that owns the envelope id.
        existing: RecordId,
    },
    /// A resend of a message that is already acknowledged (MedCom: same answer, never a different one).
    /// The resend is stored as acknowledged (not forwarded) and the stored acknowledgement is queued again
    /// for the sender as record `reroute`, flagged as a resend; all in one batch.
    AlreadyAcknowledged {
        /// The resend's record.
        id: RecordId,
        /// The first record with this message id.
        original: RecordId,
        /// The acknowledgement that answered it.
        ack: AckLink,
        /// The acknowledgement queued again for the sender.
        reroute: RecordId,
    },
}

/// How [`crate::Outbox::accept_acknowledgement`] answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckAcceptOutcome {
    /// Stored and queued for its receiver (the original's sender). `originals` moved to acknowledged in
    /// the same batch (empty: uncorrelated, nothing here matches what it answers).
    Accepted {
        /// The acknowledgement's record.
        id: RecordId,
        /// Set when this acknowledgement was itself resent (same message id, new envelope).
        resend_of: Option<RecordId>,
        /// The records it acknowledged.
        originals: Vec<RecordId>,
    },
    /// Same acknowledgement in the same envelope: nothing written.
    Duplicate {
        /// The record that holds it.
        id: RecordId,
    },
    /// The envelope id was already used by this sender for another message id: nothing written.
    Conflict {
        /// The record that owns the envelope id.
        existing: RecordId,
    },
    /// The original already has a different acknowledgement: the first is kept, nothing written.
    AlreadyAcknowledged {
        /// The acknowledged record.
        original: RecordId,
        /// The acknowledgement it keeps.
        ack: AckLink,
    },
    /// It answers an acknowledgement, which is never acknowledged (MedCom KR2): nothing written.
    AnswersAcknowledgement {
        /// The acknowledgement it answers.
        original: RecordId,
    },
}

/// Where a record is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Durable in the outbox, waiting to be published.
    Accepted,
    /// The bus confirmed it (publisher confirm).
    Published,
    /// The subscriber acked it.
    Delivered,
    /// The receiver's acknowledgement arrived.
    Acknowledged(AckCode),
    /// No acknowledgement in time.
    Overdue,
    /// Given up (attempts or time to live exhausted, or marked dead).
    Dead,
}

impl State {
    /// Stable name for status output and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Accepted => "accepted",
            State::Published => "published",
            State::Delivered => "delivered",
            State::Acknowledged(AckCode::Ok) => "acknowledged-ok",
            State::Acknowledged(AckCode::TransientError) => "acknowledged-transient-error",
            State::Acknowledged(AckCode::FatalError) => "acknowledged-fatal-error",
            State::Overdue => "overdue",
            State::Dead => "dead",
        }
    }

    /// Whether `self → to` is a legal transition.
    ///
    /// accepted → published | dead; published → delivered | acknowledged | overdue | dead
    /// (an acknowledgement may overtake the subscriber's ack); delivered → acknowledged | overdue | dead;
    /// overdue → acknowledged | dead. Acknowledged and dead are final for the broker; only an operator
    /// takes a dead record back to accepted ([`crate::Outbox::replay`], not a transition allowed here).
    pub const fn can_go_to(self, to: State) -> bool {
        use State::*;
        matches!(
            (self, to),
            (Accepted, Published | Dead)
                | (Published, Delivered | Acknowledged(_) | Overdue | Dead)
                | (Delivered, Acknowledged(_) | Overdue | Dead)
                | (Overdue, Acknowledged(_) | Dead)
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of a record's timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// State entered.
    pub state: State,
    /// When.
    pub at: SystemTime,
}

/// Everything the outbox keeps about a record except its payload. Holds no personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Record id.
    pub id: RecordId,
    /// Identifiers and addresses.
    pub meta: MessageMeta,
    /// SHA-256 of the payload, lowercase hex.
    pub sha256: String,
    /// Payload size in bytes.
    pub size: u64,
    /// Set for a resend: the first record with the same message id.
    pub resend_of: Option<RecordId>,
    /// Current state (last step of the timeline).
    pub state: State,
    /// Every state entered, in order.
    pub timeline: Vec<Step>,
    /// Delivery attempts recorded by the relay.
    pub attempts: u32,
    /// Last error the relay recorded.
    pub last_error: Option<String>,
    /// When the record reached a final state (retention counts from here).
    pub finished_at: Option<SystemTime>,
    /// False once retention dropped the payload.
    pub payload_retained: bool,
    /// Set on a record once an acknowledgement answered it: which one (the first; never replaced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_by: Option<AckLink>,
    /// Set on an acknowledgement record: what it answers, and whether that was found here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers: Option<Answers>,
    /// Audit only: the patient's pseudonym (hex HMAC with the audit log's key, never the CPR number), so
    /// the leaves after `accepted` carry it too. Kept in the record itself rather than under a key of its
    /// own: one write less per accept and one read less per transition. Not shown by the status views.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
}

/// Original → the acknowledgement record that answered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckLink {
    /// The acknowledgement's record.
    pub record: RecordId,
    /// The acknowledgement's message id.
    pub message_id: String,
    /// Its response code.
    pub code: AckCode,
}

/// Acknowledgement → what it answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answers {
    /// The acknowledged message id (FHIR `response.identifier`, OIOXML original letter id).
    pub message_id: String,
    /// The acknowledged records found here (original and resends); empty: uncorrelated.
    pub originals: Vec<RecordId>,
    /// The response code.
    pub code: AckCode,
}

impl Status {
    /// True when nothing more will happen to the record (its payload may be purged).
    pub fn is_finished(&self) -> bool {
        match self.state {
            State::Acknowledged(_) | State::Dead => true,
            // Receipts are never acknowledged themselves (MedCom KR2): delivery is their end.
            State::Delivered => self.meta.family.is_acknowledgement(),
            _ => false,
        }
    }
}

/// A record waiting to be published, as the relay needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Record id (pass it back to `mark_*`).
    pub id: RecordId,
    /// Identifiers and addresses.
    pub meta: MessageMeta,
    /// SHA-256 of the payload, lowercase hex.
    pub sha256: String,
    /// Forward flagged as a resend.
    pub resend: bool,
    /// Attempts so far.
    pub attempts: u32,
    /// The exact bytes accepted.
    pub payload: Vec<u8>,
}

/// What `record_attempt` decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Try again later.
    Retry {
        /// Attempts so far.
        attempts: u32,
    },
    /// Attempts or time to live exhausted: the record is now dead.
    Dead {
        /// Attempts so far.
        attempts: u32,
    },
}

/// What one overdue scan ([`crate::Outbox::mark_overdue_before`]) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OverdueScan {
    /// Records that became overdue.
    pub marked: u64,
    /// Records past the deadline but not yet published (still owed to their receiver; left as they are).
    pub unpublished: u64,
}

/// What `purge` removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeStats {
    /// Payloads dropped (metadata kept).
    pub payloads: u64,
    /// Records dropped entirely (metadata, payload, dedupe keys).
    pub records: u64,
}

/// Errors of the outbox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The store failed; for `DiskFull` nothing of this call was promised. Retry later.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// No record with this id.
    #[error("no record {0}")]
    NotFound(RecordId),
    /// The transition is not allowed from the record's current state.
    #[error("record {id}: illegal transition {from} -> {to}")]
    IllegalTransition {
        /// Record.
        id: RecordId,
        /// Current state.
        from: State,
        /// Requested state.
        to: State,
    },
    /// The request cannot be stored (empty or oversized identifier).
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    /// Stored data could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// Replay refused: only a dead record can be replayed.
    #[error("record {id}: cannot replay a record in state {state} (only dead records)")]
    NotDead {
        /// Record.
        id: RecordId,
        /// Its current state.
        state: State,
    },
    /// Replay refused: retention already dropped the payload, so there is nothing to publish again.
    #[error("record {0}: cannot replay, the payload was already purged")]
    PayloadPurged(RecordId),
    /// The audit log refused (e.g. poisoned after a failed write); nothing of this call is promised.
    #[error("audit: {0}")]
    Audit(String),
}

impl From<sammen_audit::AuditError> for OutboxError {
    fn from(e: sammen_audit::AuditError) -> Self {
        match e {
            // Keep store errors typed: a full disk must still read as `is_disk_full`.
            sammen_audit::AuditError::Store(s) => OutboxError::Store(s),
            other => OutboxError::Audit(other.to_string()),
        }
    }
}

impl OutboxError {
    /// True for a full disk: the caller should answer "try later" (HTTP 507/503).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, OutboxError::Store(e) if e.is_disk_full())
    }
}

/// Relay limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxConfig {
    /// A record becomes dead when `record_attempt` reaches this many attempts.
    pub max_attempts: u32,
    /// A record becomes dead on `record_attempt` once it is older than this.
    pub ttl: std::time::Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            max_attempts: 50,
            ttl: std::time::Duration::from_secs(14 * 24 * 3600),
        }
    }
}
