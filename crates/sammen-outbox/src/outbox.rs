//! The outbox over a [`Store`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sammen_audit::{AuditLog, Event, LeafEvent, LeafIndex, Outcome, PendingCommit};
use sammen_model::{AckCode, Party, ResponseRef};
use sammen_store::{Batch, Store, Ticket};
use sha2::{Digest, Sha256};
use std::borrow::Cow;

use crate::types::*;

/// Tree names (also the on-disk partition names).
pub mod trees {
    /// `id` → payload bytes.
    pub const PAYLOAD: &str = "payload";
    /// `id` → JSON [`crate::Status`].
    pub const META: &str = "meta";
    /// `e‖sender‖envelope_id` → `id‖message_id`; `m‖sender‖message_id` → first `id`.
    pub const DEDUPE: &str = "dedupe";
    /// `message_id‖id` → empty (lookup by message id).
    pub const MSGID: &str = "msgid";
    /// `receiver‖id` → empty: the per-receiver publish queue.
    pub const QUEUE: &str = "queue";
    /// `id` → empty: every record still to publish, in accept order.
    pub const PENDING: &str = "pending";
    /// `finished_ms‖id` → empty: finished records whose payload is still kept.
    pub const FIN_PAYLOAD: &str = "fin_payload";
    /// `finished_ms‖id` → empty: finished records whose metadata is still kept.
    pub const FIN_META: &str = "fin_meta";
    /// `next_id` → u64: the id allocator's high-water mark.
    pub const COUNTERS: &str = "counters";
    /// `received_ms‖id` → empty: records waiting for an acknowledgement (the overdue scanner's index).
    pub const AWAIT_ACK: &str = "await_ack";
    /// `id` → empty: records now `overdue` (entered with the state, removed when it is left), so the
    /// overdue gauge is a count of this tree, never a scan of every record.
    pub const OVERDUE: &str = "overdue";
    /// `id` → patient pseudonym (hex HMAC, never the CPR), as data dirs before [`Status::patient`] kept
    /// it: read for their records, deleted with them, never written now. Audit only.
    ///
    /// [`Status::patient`]: crate::Status::patient
    pub const AUDIT_PATIENT: &str = "audit_patient";
    /// All trees, for opening a store.
    pub const ALL: &[&str] = &[
        PAYLOAD,
        META,
        DEDUPE,
        MSGID,
        QUEUE,
        PENDING,
        FIN_PAYLOAD,
        FIN_META,
        COUNTERS,
        AWAIT_ACK,
        OVERDUE,
    ];
    /// [`ALL`] plus the audit log's trees and [`AUDIT_PATIENT`]: open the store with these for
    /// [`crate::Outbox::open_with_audit`].
    pub const AUDITED: &[&str] = &[
        PAYLOAD,
        META,
        DEDUPE,
        MSGID,
        QUEUE,
        PENDING,
        FIN_PAYLOAD,
        FIN_META,
        COUNTERS,
        AWAIT_ACK,
        OVERDUE,
        AUDIT_PATIENT,
        sammen_audit::trees::LEAVES,
        sammen_audit::trees::NODES,
        sammen_audit::trees::CHECKPOINTS,
        sammen_audit::trees::INDEX,
        sammen_audit::trees::META,
    ];
}
use trees::*;

const NEXT_ID: &[u8] = b"next_id";
/// Identifiers longer than this are refused (keys carry a u16 length prefix).
pub const MAX_ID_LEN: usize = 1024;
/// Records handled per purge commit.
const PURGE_CHUNK: usize = 256;

/// Source of "now" for timelines; tests inject their own.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Told about every state change once it is durable (telemetry: delivered, acknowledged, overdue, dead
/// are counted here, whoever made the change: relay, receipts, inbox acks, acknowledgement matching).
/// Called on the thread that made the change, while the record is still locked: keep it cheap, and never
/// call back into the outbox.
pub trait TransitionObserver: Send + Sync {
    /// `status` entered its current state from `from`.
    fn on_transition(&self, from: State, status: &Status);
}

/// The durable outbox. Share it with `Arc`; every method takes `&self`.
pub struct Outbox<S: Store> {
    store: S,
    config: OutboxConfig,
    clock: Clock,
    /// Next record id; held while an accept allocates its id and submits, so ids commit in order.
    next_id: Mutex<u64>,
    /// Keys (dedupe keys, record ids) with a batch in flight: a second operation on them waits.
    busy: Mutex<HashSet<Vec<u8>>>,
    freed: Condvar,
    depth: AtomicU64,
    /// When set, every change commits together with its audit leaf.
    audit: Option<Arc<AuditLog<S>>>,
    /// Told about every committed state change.
    observers: Vec<Arc<dyn TransitionObserver>>,
}

/// A submitted batch: plain, or carrying audit leaves.
enum Commit<'a, S: Store> {
    Plain(Ticket),
    Audited(PendingCommit<'a, S>),
}

impl<S: Store> Commit<'_, S> {
    fn wait(self) -> Result<Vec<LeafIndex>, OutboxError> {
        match self {
            Commit::Plain(t) => t.wait().map(|()| Vec::new()).map_err(Into::into),
            Commit::Audited(p) => p.wait().map_err(Into::into),
        }
    }
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    sammen_audit::leaf::unhex(s).and_then(|v| v.try_into().ok())
}

/// Leaf of one record event; the time is the timeline step's, so leaf and timeline agree. Borrows the
/// record's ids and parties (no copies: three leaves a message on the accept path).
fn leaf_of<'a>(
    meta: &'a MessageMeta,
    sha256: Option<[u8; 32]>,
    event: Event,
    outcome: Outcome,
    at: SystemTime,
    pseudonym: Option<Cow<'a, str>>,
) -> LeafEvent<'a> {
    let mut e = LeafEvent::new(millis(at), event, outcome);
    e.message_id = Some(Cow::Borrowed(&meta.message_id));
    e.bundle_id = Some(Cow::Borrowed(&meta.envelope_id));
    e.family = Some(meta.family);
    e.event_code = Some(Cow::Borrowed(&meta.event));
    e.sender = Some(Cow::Borrowed(&meta.sender));
    e.receiver = Some(Cow::Borrowed(&meta.receiver));
    e.payload_sha256 = sha256;
    e.patient_pseudonym = pseudonym;
    e
}

/// What every leaf of one accept shares: the request's certificate, patient and payload hash.
#[derive(Clone, Copy)]
struct AcceptLeaves<'x> {
    extra: &'x AcceptAudit,
    pseudonym: Option<&'x str>,
    sha256: [u8; 32],
    /// Whether a `received` leaf goes first.
    received: bool,
}

impl<'x> AcceptLeaves<'x> {
    /// [`leaf_of`] with the request's certificate fingerprint.
    fn leaf<'a>(
        &self,
        meta: &'a MessageMeta,
        (ev, ok): (Event, Outcome),
        at: SystemTime,
    ) -> LeafEvent<'a>
    where
        'x: 'a,
    {
        let p = self.pseudonym.map(Cow::Borrowed);
        let mut e = leaf_of(meta, Some(self.sha256), ev, ok, at, p);
        e.cert_fingerprint = self.extra.cert_fingerprint.as_deref().map(Cow::Borrowed);
        e
    }

    /// `received` (when asked for), then `then`: the request's leaves.
    fn leaves<'a>(
        &self,
        meta: &'a MessageMeta,
        then: ((Event, Outcome), SystemTime),
    ) -> Vec<LeafEvent<'a>>
    where
        'x: 'a,
    {
        let mut leaves = Vec::with_capacity(3);
        if self.received {
            leaves.push(self.leaf(meta, (Event::Received, Outcome::Success), meta.received));
        }
        leaves.push(self.leaf(meta, then.0, then.1));
        leaves
    }
}

/// The leaf event for entering `state` (none for `accepted`, which `accept` records itself).
fn state_event(state: State) -> Option<(Event, Outcome)> {
    Some(match state {
        State::Accepted => return None,
        State::Published => (Event::Published, Outcome::Success),
        State::Delivered => (Event::Delivered, Outcome::Success),
        State::Acknowledged(code) => (
            Event::Acknowledged { code },
            match code {
                AckCode::Ok => Outcome::Success,
                AckCode::TransientError => Outcome::MinorFailure,
                AckCode::FatalError => Outcome::SeriousFailure,
            },
        ),
        State::Overdue => (Event::Overdue, Outcome::MinorFailure),
        State::Dead => (Event::Dead, Outcome::MajorFailure),
    })
}

/// Stable code of the dedupe refusal, as in the `rejected` leaf.
pub const CONFLICT_CODE: &str = "outbox.envelope-id-conflict";
/// Stable code: an acknowledgement answering an acknowledgement (MedCom KR2), as in the `rejected` leaf.
pub const ACK_OF_ACK_CODE: &str = "ack.answers-acknowledgement";
/// Stable code: a second, different acknowledgement for an acknowledged message, as in the `rejected` leaf.
pub const ALREADY_ACKNOWLEDGED_CODE: &str = "ack.already-acknowledged";

/// What `accept_impl` did; the public accept calls map it to their outcome types.
enum Done {
    Stored {
        id: RecordId,
        original: Option<RecordId>,
        originals: Vec<RecordId>,
    },
    Duplicate {
        id: RecordId,
    },
    Conflict {
        existing: RecordId,
    },
    Answered {
        id: RecordId,
        original: RecordId,
        ack: AckLink,
        reroute: RecordId,
    },
    Refused(AckAcceptOutcome),
}

fn await_key(s: &Status) -> Vec<u8> {
    fin_key(s.meta.received, s.id)
}

/// Index changes for `status` having moved on from `was`: out of the publish queue once it leaves
/// `accepted`; out of the overdue index once acknowledged, overdue or dead. True when it left the queue.
fn index_effects(was: State, status: &Status, b: &mut Batch) -> bool {
    let left_queue = was == State::Accepted && status.state != State::Accepted;
    if left_queue {
        b.delete(
            QUEUE,
            queue_key(&party_key(&status.meta.receiver), status.id),
        );
        b.delete(PENDING, id_key(status.id));
    }
    if matches!(
        status.state,
        State::Acknowledged(_) | State::Overdue | State::Dead
    ) {
        b.delete(AWAIT_ACK, await_key(status));
    }
    match (was == State::Overdue, status.state == State::Overdue) {
        (false, true) => b.put(OVERDUE, id_key(status.id), []),
        (true, false) => b.delete(OVERDUE, id_key(status.id)),
        _ => {}
    }
    left_queue
}

impl<S: Store> std::fmt::Debug for Outbox<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("backend", &self.store.backend_name())
            .field("depth", &self.depth())
            .finish()
    }
}

/// Releases busy keys on drop (also on early return or error).
struct KeyGuard<'a, S: Store> {
    outbox: &'a Outbox<S>,
    keys: Vec<Vec<u8>>,
}

impl<S: Store> KeyGuard<'_, S> {
    fn add(&mut self, key: Vec<u8>) {
        let mut busy = self.outbox.busy_set();
        busy.insert(key.clone());
        self.keys.push(key);
    }
}

impl<S: Store> Drop for KeyGuard<'_, S> {
    fn drop(&mut self) {
        let mut busy = self.outbox.busy_set();
        for k in &self.keys {
            busy.remove(k);
        }
        drop(busy);
        self.outbox.freed.notify_all();
    }
}

fn lp(out: &mut Vec<u8>, s: &str) {
    // Lengths are checked against MAX_ID_LEN before any key is built.
    out.extend_from_slice(&(s.len().min(u16::MAX as usize) as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Routing identity of a party: GLN when known, else SOR.
pub fn party_key(p: &Party) -> String {
    match (&p.gln, &p.sor) {
        (Some(gln), _) => format!("gln:{gln}"),
        (None, Some(sor)) => format!("sor:{sor}"),
        (None, None) => String::new(),
    }
}

fn id_key(id: RecordId) -> [u8; 8] {
    id.0.to_be_bytes()
}

fn envelope_key(sender: &str, envelope_id: &str) -> Vec<u8> {
    let mut k = vec![b'e'];
    lp(&mut k, sender);
    lp(&mut k, envelope_id);
    k
}

fn message_key(sender: &str, message_id: &str) -> Vec<u8> {
    let mut k = vec![b'm'];
    lp(&mut k, sender);
    lp(&mut k, message_id);
    k
}

fn msgid_key(message_id: &str, id: RecordId) -> Vec<u8> {
    let mut k = Vec::new();
    lp(&mut k, message_id);
    k.extend_from_slice(&id_key(id));
    k
}

fn queue_prefix(receiver: &str) -> Vec<u8> {
    let mut k = Vec::new();
    lp(&mut k, receiver);
    k
}

fn queue_key(receiver: &str, id: RecordId) -> Vec<u8> {
    let mut k = queue_prefix(receiver);
    k.extend_from_slice(&id_key(id));
    k
}

fn busy_id(id: RecordId) -> Vec<u8> {
    let mut k = vec![b'r'];
    k.extend_from_slice(&id_key(id));
    k
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn fin_key(at: SystemTime, id: RecordId) -> Vec<u8> {
    let mut k = millis(at).to_be_bytes().to_vec();
    k.extend_from_slice(&id_key(id));
    k
}

fn u64_of(bytes: &[u8]) -> Result<u64, OutboxError> {
    let arr: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| OutboxError::Corrupt("short id".into()))?;
    Ok(u64::from_be_bytes(arr))
}

fn id_from_tail(key: &[u8]) -> Result<RecordId, OutboxError> {
    let start = key
        .len()
        .checked_sub(8)
        .ok_or_else(|| OutboxError::Corrupt("short key".into()))?;
    u64_of(&key[start..]).map(RecordId)
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 15)] as char);
    }
    s
}

fn encode(status: &Status) -> Result<Vec<u8>, OutboxError> {
    serde_json::to_vec(status).map_err(|e| OutboxError::Corrupt(e.to_string()))
}

fn decode(bytes: &[u8]) -> Result<Status, OutboxError> {
    serde_json::from_slice(bytes).map_err(|e| OutboxError::Corrupt(e.to_string()))
}

fn check_id(s: &str, what: &'static str) -> Result<(), OutboxError> {
    if s.is_empty() || s.len() > MAX_ID_LEN {
        return Err(OutboxError::InvalidRequest(what));
    }
    Ok(())
}

impl<S: Store> Outbox<S> {
    /// Open the outbox on `store` (opened with [`trees::ALL`]); recovers the id allocator and depth.
    pub fn open(store: S, config: OutboxConfig) -> Result<Self, OutboxError> {
        let from_counter = match store.get(COUNTERS, NEXT_ID)? {
            Some(v) => u64_of(&v)?,
            None => 1,
        };
        let from_meta = match store.last(META)? {
            Some((k, _)) => u64_of(&k)? + 1,
            None => 1,
        };
        let depth = count_pending(&store)?;
        Ok(Self {
            store,
            config,
            clock: Arc::new(SystemTime::now),
            next_id: Mutex::new(from_counter.max(from_meta)),
            busy: Mutex::new(HashSet::new()),
            freed: Condvar::new(),
            depth: AtomicU64::new(depth),
            audit: None,
            observers: Vec::new(),
        })
    }

    /// Open the outbox on the audit log's own store (opened with [`trees::AUDITED`]), so each change
    /// and its leaf share one batch.
    pub fn open_with_audit(
        audit: Arc<AuditLog<S>>,
        config: OutboxConfig,
    ) -> Result<Self, OutboxError>
    where
        S: Clone,
    {
        // Fail now, not at the first accept, when the store lacks the outbox's audit tree.
        audit.store().get(AUDIT_PATIENT, b"")?;
        let mut ob = Self::open(audit.store().clone(), config)?;
        ob.audit = Some(audit);
        Ok(ob)
    }

    /// The attached audit log, if any (for checkpoints and proofs).
    pub fn audit(&self) -> Option<&Arc<AuditLog<S>>> {
        self.audit.as_ref()
    }

    /// Record an event outside the outbox's own transitions (received, rejected by validation,
    /// certificate or identity refusals, operator actions) as its own durable batch. Returns its leaf
    /// index once durable; `None` when no audit log is attached.
    pub fn record(&self, event: LeafEvent<'_>) -> Result<Option<LeafIndex>, OutboxError> {
        match &self.audit {
            None => Ok(None),
            Some(a) => Ok(a.submit(Batch::new(), vec![event])?.wait()?.pop()),
        }
    }

    /// [`Self::record`] for several events in one durable batch (e.g. `received` and the refusal that
    /// followed, so a refused request costs one commit). Their leaf indices; empty without an audit log.
    pub fn record_all(&self, events: Vec<LeafEvent<'_>>) -> Result<Vec<LeafIndex>, OutboxError> {
        match &self.audit {
            Some(a) if !events.is_empty() => Ok(a.submit(Batch::new(), events)?.wait()?),
            _ => Ok(Vec::new()),
        }
    }

    /// Submit `b` with its leaves (plain when there is no audit log or nothing to record). Callers that
    /// need submit order (ids) hold their lock across this call; the audit log holds its own inside.
    fn submit(&self, b: Batch, events: Vec<LeafEvent<'_>>) -> Result<Commit<'_, S>, OutboxError> {
        match &self.audit {
            Some(a) if !events.is_empty() => Ok(Commit::Audited(a.submit(b, events)?)),
            _ => Ok(Commit::Plain(self.store.submit(b)?)),
        }
    }

    /// The record's patient pseudonym: in its metadata, or (records of older data dirs) under its own key.
    fn pseudonym_of<'a>(&self, status: &'a Status) -> Result<Option<Cow<'a, str>>, OutboxError> {
        if self.audit.is_none() {
            return Ok(None);
        }
        if let Some(p) = &status.patient {
            return Ok(Some(Cow::Borrowed(p)));
        }
        Ok(self
            .store
            .get(AUDIT_PATIENT, &id_key(status.id))?
            .and_then(|v| String::from_utf8(v).ok())
            .map(Cow::Owned))
    }

    /// Tell `observer` about every state change from now on ([`TransitionObserver`]), after those
    /// registered before it.
    pub fn with_observer(mut self, observer: Arc<dyn TransitionObserver>) -> Self {
        self.observers.push(observer);
        self
    }

    /// Replace the clock used for timeline times.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The underlying store.
    pub fn store(&self) -> &S {
        &self.store
    }

    fn now(&self) -> SystemTime {
        (self.clock)()
    }

    fn busy_set(&self) -> std::sync::MutexGuard<'_, HashSet<Vec<u8>>> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait until none of `keys` is busy, then mark them busy until the guard drops.
    fn lock_keys(&self, keys: Vec<Vec<u8>>) -> KeyGuard<'_, S> {
        let mut busy = self.busy_set();
        while keys.iter().any(|k| busy.contains(k)) {
            busy = self.freed.wait(busy).unwrap_or_else(|p| p.into_inner());
        }
        for k in &keys {
            busy.insert(k.clone());
        }
        drop(busy);
        KeyGuard { outbox: self, keys }
    }

    /// Accept one message: dedupe, then store payload, metadata, dedupe keys, first state and the publish
    /// queue entry in one atomic batch. Returns once that batch is durable.
    pub fn accept(&self, req: AcceptRequest) -> Result<AcceptOutcome, OutboxError> {
        self.accept_with(req, AcceptAudit::default())
    }

    /// [`Self::accept`] with what only the audit leaf needs (the patient id is hashed, never stored).
    ///
    /// A resend of a message that is already acknowledged is answered with that acknowledgement
    /// ([`AcceptOutcome::AlreadyAcknowledged`]) when its payload is still kept; otherwise it is forwarded.
    pub fn accept_with(
        &self,
        req: AcceptRequest,
        extra: AcceptAudit,
    ) -> Result<AcceptOutcome, OutboxError> {
        Ok(match self.accept_impl(req, extra, None)? {
            Done::Stored {
                id,
                original: Some(original),
                ..
            } => AcceptOutcome::Resend { id, original },
            Done::Stored { id, .. } => AcceptOutcome::Accepted { id },
            Done::Duplicate { id } => AcceptOutcome::Duplicate { id },
            Done::Conflict { existing } => AcceptOutcome::Conflict { existing },
            Done::Answered {
                id,
                original,
                ack,
                reroute,
            } => AcceptOutcome::AlreadyAcknowledged {
                id,
                original,
                ack,
                reroute,
            },
            // Only acknowledgements are refused for what they answer.
            Done::Refused(_) => return Err(OutboxError::InvalidRequest("not an acknowledgement")),
        })
    }

    /// Accept an acknowledgement (FHIR Acknowledgement, OIOXML XCTL receipt) that answers `response`:
    /// dedupe as [`Self::accept_with`], then correlate it with the records it answers (same message id,
    /// sent by its receiver to its sender) and move them to `acknowledged(code)`, linked to it, in **the
    /// same batch** as its own acceptance (their leaves too). It is stored and queued for its receiver
    /// even when nothing here matches (`originals` empty: uncorrelated). Refused, with nothing but a
    /// `rejected` leaf written, when it answers an acknowledgement or a record already answered by a
    /// different acknowledgement (the first is kept).
    pub fn accept_acknowledgement(
        &self,
        req: AcceptRequest,
        extra: AcceptAudit,
        response: &ResponseRef,
    ) -> Result<AckAcceptOutcome, OutboxError> {
        Ok(match self.accept_impl(req, extra, Some(response))? {
            Done::Stored {
                id,
                original,
                originals,
            } => AckAcceptOutcome::Accepted {
                id,
                resend_of: original,
                originals,
            },
            Done::Duplicate { id } => AckAcceptOutcome::Duplicate { id },
            Done::Conflict { existing } => AckAcceptOutcome::Conflict { existing },
            Done::Refused(o) => o,
            // Acknowledgements are never acknowledged, so a resend of one is never `Answered`.
            Done::Answered { id, original, .. } => AckAcceptOutcome::Accepted {
                id,
                resend_of: Some(original),
                originals: Vec::new(),
            },
        })
    }

    fn accept_impl(
        &self,
        req: AcceptRequest,
        extra: AcceptAudit,
        response: Option<&ResponseRef>,
    ) -> Result<Done, OutboxError> {
        let meta = req.meta;
        check_id(&meta.message_id, "message id must be 1..=1024 bytes")?;
        check_id(&meta.envelope_id, "envelope id must be 1..=1024 bytes")?;
        let sender = party_key(&meta.sender);
        let receiver = party_key(&meta.receiver);
        if sender.len() > MAX_ID_LEN || receiver.len() > MAX_ID_LEN || meta.event.len() > MAX_ID_LEN
        {
            return Err(OutboxError::InvalidRequest("party or event too long"));
        }
        let ekey = envelope_key(&sender, &meta.envelope_id);
        let mkey = message_key(&sender, &meta.message_id);
        // Records the acknowledgement may answer: read first, then locked with the dedupe keys, so no
        // relay or receipt changes them between our read and our commit.
        let candidates = match response {
            Some(r) if check_id(&r.message_id, "").is_ok() => self.find(&r.message_id)?,
            _ => Vec::new(),
        };
        let mut keys = vec![ekey.clone(), mkey.clone()];
        keys.extend(candidates.iter().map(|id| busy_id(*id)));
        let mut guard = self.lock_keys(keys);

        let pseudonym = match (&self.audit, &extra.patient) {
            (Some(a), Some(p)) => Some(a.config().patient_key.pseudonym(p.expose())),
            _ => None,
        };
        let sha_bytes: [u8; 32] = Sha256::digest(&req.bytes).into();
        // The leaves borrow from `meta`; the stored path builds them once the record holds it.
        let ctx = AcceptLeaves {
            extra: &extra,
            pseudonym: pseudonym.as_deref(),
            sha256: sha_bytes,
            received: extra.received,
        };
        // Nothing changes in the outbox: the leaves are their own batch, durable before we answer.
        let refuse = |code: &str, done: Done| -> Result<Done, OutboxError> {
            if self.audit.is_some() {
                let ev = Event::Rejected { code: code.into() };
                let leaves = ctx.leaves(&meta, ((ev, Outcome::SeriousFailure), self.now()));
                self.submit(Batch::new(), leaves)?.wait()?;
            }
            Ok(done)
        };
        if let Some(v) = self.store.get(DEDUPE, &ekey)? {
            let id = RecordId(u64_of(&v)?);
            if v.get(8..) != Some(meta.message_id.as_bytes()) {
                return refuse(CONFLICT_CODE, Done::Conflict { existing: id });
            }
            if self.audit.is_some() {
                let then = ((Event::Duplicate, Outcome::Success), self.now());
                self.submit(Batch::new(), ctx.leaves(&meta, then))?.wait()?;
            }
            return Ok(Done::Duplicate { id });
        }
        let original = match self.store.get(DEDUPE, &mkey)? {
            Some(v) => Some(RecordId(u64_of(&v)?)),
            None => None,
        };

        // What this acknowledgement answers: the records with its message id that its receiver sent to
        // its sender.
        let mut answered = Vec::new();
        if let Some(r) = response {
            for id in &candidates {
                let Some(s) = self.status(*id)? else { continue };
                if s.meta.message_id == r.message_id
                    && party_key(&s.meta.sender) == receiver
                    && party_key(&s.meta.receiver) == sender
                {
                    answered.push(s);
                }
            }
            if let Some(s) = answered.iter().find(|s| s.meta.family.is_acknowledgement()) {
                let done =
                    Done::Refused(AckAcceptOutcome::AnswersAcknowledgement { original: s.id });
                return refuse(ACK_OF_ACK_CODE, done);
            }
            let other = answered.iter().find_map(|s| {
                s.acknowledged_by
                    .as_ref()
                    .filter(|l| l.message_id != meta.message_id)
                    .map(|l| (s.id, l.clone()))
            });
            if let Some((original, ack)) = other {
                let done = Done::Refused(AckAcceptOutcome::AlreadyAcknowledged { original, ack });
                return refuse(ALREADY_ACKNOWLEDGED_CODE, done);
            }
        }
        // A resend of an acknowledged message gets the same acknowledgement back (MedCom).
        let reroute = match (response, original) {
            (None, Some(first)) => self.stored_ack(first)?,
            _ => None,
        };

        let sha256 = hex(&sha_bytes);
        let size = req.bytes.len() as u64;
        let now = self.now();
        let mut left_queue = 0u64;
        let mut queued = 0u64;
        // Originals moved to acknowledged: the observer hears of them once the batch is durable.
        let mut changed: Vec<(State, Status)> = Vec::new();
        let done = {
            let mut next = self.next_id.lock().unwrap_or_else(|p| p.into_inner());
            let id = RecordId(*next);
            guard.add(busy_id(id));
            let mut b = Batch::new();
            let first_state = if original.is_some() {
                Event::Resend
            } else {
                Event::Accepted
            };
            let mut status = Status {
                id,
                sha256,
                size,
                resend_of: original,
                state: State::Accepted,
                timeline: vec![Step {
                    state: State::Accepted,
                    at: meta.received,
                }],
                attempts: 0,
                last_error: None,
                finished_at: None,
                payload_retained: true,
                acknowledged_by: None,
                answers: None,
                patient: pseudonym.clone(),
                meta,
            };
            // `received`, then `accepted` (or `resend`): borrowed from the record, which outlives them.
            let accepted = ((first_state, Outcome::Success), status.meta.received);
            let mut leaves = if self.audit.is_some() {
                ctx.leaves(&status.meta, accepted)
            } else {
                Vec::new()
            };
            let done = if let Some((link, ack, ack_payload)) = reroute {
                // Stored as answered (never forwarded); the stored acknowledgement goes back, flagged as a
                // resend, as a record of its own.
                let (code, first) = (link.code, original.unwrap_or(id));
                let rid = RecordId(id.0 + 1);
                guard.add(busy_id(rid));
                status.state = State::Acknowledged(code);
                status.timeline.push(Step {
                    state: status.state,
                    at: now,
                });
                status.finished_at = Some(now);
                status.acknowledged_by = Some(link.clone());
                b.put(FIN_PAYLOAD, fin_key(now, id), []);
                b.put(FIN_META, fin_key(now, id), []);
                if let Some(what) = state_event(status.state) {
                    leaves.push(ctx.leaf(&status.meta, what, now));
                }
                let again = Status {
                    id: rid,
                    meta: MessageMeta {
                        received: now,
                        ..ack.meta.clone()
                    },
                    resend_of: Some(ack.id),
                    state: State::Accepted,
                    timeline: vec![Step {
                        state: State::Accepted,
                        at: now,
                    }],
                    attempts: 0,
                    last_error: None,
                    finished_at: None,
                    payload_retained: true,
                    acknowledged_by: None,
                    answers: ack.answers.clone(),
                    sha256: ack.sha256.clone(),
                    size: ack.size,
                    patient: self.pseudonym_of(&ack)?.map(Cow::into_owned),
                };
                if self.audit.is_some() {
                    let p = again.patient.as_deref().map(Cow::Borrowed);
                    let sha = unhex32(&again.sha256);
                    let mut e = leaf_of(&again.meta, sha, Event::Resend, Outcome::Success, now, p);
                    e.cert_fingerprint = extra.cert_fingerprint.as_deref().map(Cow::Borrowed);
                    // `again` ends with this block; the leaf owns its strings (a rare path).
                    leaves.push(e.into_owned());
                }
                let ack_receiver = party_key(&again.meta.receiver);
                b.put(PAYLOAD, id_key(rid), ack_payload);
                b.put(META, id_key(rid), encode(&again)?);
                b.put(MSGID, msgid_key(&again.meta.message_id, rid), []);
                b.put(QUEUE, queue_key(&ack_receiver, rid), []);
                b.put(PENDING, id_key(rid), []);
                queued += 1;
                Done::Answered {
                    id,
                    original: first,
                    ack: link,
                    reroute: rid,
                }
            } else {
                if let Some(r) = response {
                    let link = AckLink {
                        record: id,
                        message_id: status.meta.message_id.clone(),
                        code: r.code,
                    };
                    let mut originals = Vec::new();
                    for mut s in answered {
                        if s.acknowledged_by.is_some() {
                            // Already answered by this very acknowledgement (it is being resent).
                            originals.push(s.id);
                            continue;
                        }
                        let (was, steps) = (s.state, s.timeline.len());
                        let to = State::Acknowledged(r.code);
                        // The receiver answers, so it has the message: published, then acknowledged.
                        if was == State::Accepted {
                            self.transition(&mut s, &mut b, State::Published)?;
                        }
                        if !s.state.can_go_to(to) {
                            continue; // dead: stays dead
                        }
                        self.transition(&mut s, &mut b, to)?;
                        s.acknowledged_by = Some(link.clone());
                        left_queue += u64::from(index_effects(was, &s, &mut b));
                        b.put(META, id_key(s.id), encode(&s)?);
                        // `s` moves on below; its leaves own their strings.
                        for e in self.step_leaves(&s, steps)? {
                            leaves.push(e.into_owned());
                        }
                        originals.push(s.id);
                        changed.push((was, s));
                    }
                    status.answers = Some(Answers {
                        message_id: r.message_id.clone(),
                        originals,
                        code: r.code,
                    });
                }
                b.put(QUEUE, queue_key(&receiver, id), []);
                b.put(PENDING, id_key(id), []);
                if !status.meta.family.is_acknowledgement() {
                    b.put(AWAIT_ACK, await_key(&status), []);
                }
                queued += 1;
                Done::Stored {
                    id,
                    original,
                    originals: status
                        .answers
                        .as_ref()
                        .map(|a| a.originals.clone())
                        .unwrap_or_default(),
                }
            };
            let last = match done {
                Done::Answered { reroute, .. } => reroute,
                _ => id,
            };
            b.put(PAYLOAD, id_key(id), req.bytes);
            b.put(META, id_key(id), encode(&status)?);
            let mut eval = id_key(id).to_vec();
            eval.extend_from_slice(status.meta.message_id.as_bytes());
            b.put(DEDUPE, ekey, eval);
            if original.is_none() {
                b.put(DEDUPE, mkey, id_key(id));
            }
            b.put(MSGID, msgid_key(&status.meta.message_id, id), []);
            b.put(COUNTERS, NEXT_ID, (last.0 + 1).to_be_bytes());
            if self.audit.is_none() {
                leaves.clear();
            }
            let ticket = self.submit(b, leaves)?;
            *next = last.0 + 1;
            (done, ticket)
        };
        let (done, ticket) = done;
        let waited = ticket.wait();
        if waited.is_err() {
            // A failed commit may still have reached the disk (fjall after a failed sync): recount from the
            // store instead of guessing, so the depth cannot drift (found by the HTTP disk-full test).
            if let Ok(n) = count_pending(&self.store) {
                self.depth.store(n, Ordering::Relaxed);
            }
        }
        waited?;
        self.depth.fetch_add(queued, Ordering::Relaxed);
        self.sub_depth(left_queue);
        for o in &self.observers {
            for (was, s) in &changed {
                o.on_transition(*was, s);
            }
        }
        drop(guard);
        Ok(done)
    }

    /// The acknowledgement that answered record `first`, with its payload, when both are still kept.
    #[allow(clippy::type_complexity)]
    fn stored_ack(
        &self,
        first: RecordId,
    ) -> Result<Option<(AckLink, Status, Vec<u8>)>, OutboxError> {
        let Some(link) = self.status(first)?.and_then(|s| s.acknowledged_by) else {
            return Ok(None);
        };
        let (Some(ack), Some(payload)) = (self.status(link.record)?, self.payload(link.record)?)
        else {
            return Ok(None);
        };
        Ok(Some((link, ack, payload)))
    }

    fn sub_depth(&self, n: u64) {
        if n > 0 {
            // Saturating: a record whose failed accept still landed was never counted.
            let _ = self
                .depth
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                    Some(d.saturating_sub(n))
                });
        }
    }

    /// One leaf per state entered after the first `from_step` steps of the timeline.
    fn step_leaves<'a>(
        &self,
        status: &'a Status,
        from_step: usize,
    ) -> Result<Vec<LeafEvent<'a>>, OutboxError> {
        let mut leaves = Vec::new();
        if self.audit.is_none() || status.timeline.len() <= from_step {
            return Ok(leaves);
        }
        let pseudonym = self.pseudonym_of(status)?;
        for step in &status.timeline[from_step..] {
            if let Some((event, outcome)) = state_event(step.state) {
                let sha = unhex32(&status.sha256);
                let ev = leaf_of(
                    &status.meta,
                    sha,
                    event,
                    outcome,
                    step.at,
                    pseudonym.clone(),
                );
                leaves.push(ev);
            }
        }
        Ok(leaves)
    }

    /// Metadata and timeline of a record (never the payload).
    pub fn status(&self, id: RecordId) -> Result<Option<Status>, OutboxError> {
        self.store
            .get(META, &id_key(id))?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Records carrying this message id (original first, then resends), any sender.
    pub fn find(&self, message_id: &str) -> Result<Vec<RecordId>, OutboxError> {
        let mut prefix = Vec::new();
        lp(&mut prefix, message_id);
        self.store
            .scan_prefix(MSGID, &prefix, 1024)?
            .iter()
            .map(|(k, _)| id_from_tail(k))
            .collect()
    }

    /// The payload, while retention keeps it.
    pub fn payload(&self, id: RecordId) -> Result<Option<Vec<u8>>, OutboxError> {
        Ok(self.store.get(PAYLOAD, &id_key(id))?)
    }

    /// Up to `limit` records waiting to be published: for one receiver in its order, or for all in
    /// accept order (which is also each receiver's order).
    pub fn next_batch(
        &self,
        receiver: Option<&Party>,
        limit: usize,
    ) -> Result<Vec<Pending>, OutboxError> {
        let ids = match receiver {
            Some(r) => self
                .store
                .scan_prefix(QUEUE, &queue_prefix(&party_key(r)), limit)?,
            None => self.store.range(PENDING, &[], None, limit)?,
        };
        let mut out = Vec::with_capacity(ids.len());
        for (k, _) in ids {
            let id = id_from_tail(&k)?;
            // Between our two reads the relay may have finished it in another thread: skip then.
            let (Some(status), Some(payload)) = (self.status(id)?, self.payload(id)?) else {
                continue;
            };
            if status.state != State::Accepted {
                continue;
            }
            out.push(Pending {
                id,
                resend: status.resend_of.is_some(),
                attempts: status.attempts,
                sha256: status.sha256,
                meta: status.meta,
                payload,
            });
        }
        Ok(out)
    }

    /// Records now `overdue` (published, no acknowledgement in time, none since): the overdue gauge.
    /// Reads the overdue index only, in chunks.
    pub fn overdue_count(&self) -> Result<u64, OutboxError> {
        let mut n = 0u64;
        let mut from: Vec<u8> = Vec::new();
        loop {
            let chunk = self.store.range(OVERDUE, &from, None, PURGE_CHUNK)?;
            n += chunk.len() as u64;
            match chunk.last() {
                Some((k, _)) if chunk.len() == PURGE_CHUNK => {
                    from = k.clone();
                    from.push(0);
                }
                _ => return Ok(n),
            }
        }
    }

    /// Records waiting to be published.
    pub fn depth(&self) -> u64 {
        self.depth.load(Ordering::Relaxed)
    }

    /// Age of the oldest record waiting to be published (for metrics and backpressure).
    pub fn oldest_pending_age(&self, now: SystemTime) -> Result<Option<Duration>, OutboxError> {
        let Some((k, _)) = self.store.range(PENDING, &[], None, 1)?.pop() else {
            return Ok(None);
        };
        let Some(status) = self.status(id_from_tail(&k)?)? else {
            return Ok(None);
        };
        Ok(Some(
            now.duration_since(status.meta.received)
                .unwrap_or(Duration::ZERO),
        ))
    }

    /// Apply `change` to the record under its busy key and commit durably.
    fn update(
        &self,
        id: RecordId,
        change: impl FnOnce(&mut Status, &mut Batch) -> Result<(), OutboxError>,
    ) -> Result<Status, OutboxError> {
        let mut change = Some(change);
        let mut out = self.update_many(&[id], |s, b| match change.take() {
            Some(c) => c(s, b),
            None => Ok(()),
        })?;
        out.pop().unwrap_or(Err(OutboxError::NotFound(id)))
    }

    /// Apply `change` to each record under its busy key, and commit every record it changed in one
    /// durable batch with their leaves (one commit, one audit submission for a whole group).
    ///
    /// Per record, in the order of `ids`: its new status, or why it was left as it is: not found, the
    /// error `change` returned (its writes are dropped), or an illegal transition for an id repeated in
    /// `ids`. `Err` when a read or the commit failed: then none changed.
    fn update_many(
        &self,
        ids: &[RecordId],
        mut change: impl FnMut(&mut Status, &mut Batch) -> Result<(), OutboxError>,
    ) -> Result<Vec<Result<Status, OutboxError>>, OutboxError> {
        let _guard = self.lock_keys(ids.iter().map(|id| busy_id(*id)).collect());
        let mut b = Batch::new();
        // (place in `out`, steps before the change) of each changed record, for its leaves.
        let mut stepped = Vec::with_capacity(ids.len());
        let mut left_queue = 0u64;
        // id → its state after its first occurrence.
        let mut seen: HashMap<RecordId, State> = HashMap::with_capacity(ids.len());
        let mut out = Vec::with_capacity(ids.len());
        let mut changed = Vec::new();
        for &id in ids {
            if let Some(&now) = seen.get(&id) {
                out.push(Err(OutboxError::IllegalTransition {
                    id,
                    from: now,
                    to: now,
                }));
                continue;
            }
            let Some(mut status) = self.status(id)? else {
                out.push(Err(OutboxError::NotFound(id)));
                continue;
            };
            let (was, steps) = (status.state, status.timeline.len());
            let mut own = Batch::new();
            if let Err(e) = change(&mut status, &mut own) {
                seen.insert(id, was);
                out.push(Err(e));
                continue;
            }
            seen.insert(id, status.state);
            left_queue += u64::from(index_effects(was, &status, &mut own));
            own.put(META, id_key(id), encode(&status)?);
            b.append(own);
            if status.state != was {
                changed.push((was, status.clone()));
            }
            stepped.push((out.len(), steps));
            out.push(Ok(status));
        }
        if !b.is_empty() {
            // One leaf per state entered (an attempt that does not kill the record enters none),
            // borrowed from the statuses in `out`.
            let mut leaves = Vec::new();
            for &(at, steps) in &stepped {
                if let Some(Ok(status)) = out.get(at) {
                    leaves.extend(self.step_leaves(status, steps)?);
                }
            }
            self.submit(b, leaves)?.wait()?;
            self.sub_depth(left_queue);
            for o in &self.observers {
                for (was, s) in &changed {
                    o.on_transition(*was, s);
                }
            }
        }
        Ok(out)
    }

    /// Validated transition; records the step and, on reaching a final state, the retention entries.
    fn transition(&self, s: &mut Status, b: &mut Batch, to: State) -> Result<(), OutboxError> {
        if !s.state.can_go_to(to) {
            return Err(OutboxError::IllegalTransition {
                id: s.id,
                from: s.state,
                to,
            });
        }
        let at = self.now();
        s.state = to;
        s.timeline.push(Step { state: to, at });
        if s.finished_at.is_none() && s.is_finished() {
            s.finished_at = Some(at);
            b.put(FIN_PAYLOAD, fin_key(at, s.id), []);
            b.put(FIN_META, fin_key(at, s.id), []);
        }
        Ok(())
    }

    fn to_state(&self, id: RecordId, to: State) -> Result<Status, OutboxError> {
        self.update(id, |s, b| self.transition(s, b, to))
    }

    /// The bus confirmed the publish (positive publisher confirm).
    pub fn mark_published(&self, id: RecordId) -> Result<Status, OutboxError> {
        self.to_state(id, State::Published)
    }

    /// [`Self::mark_published`] for many records in one durable batch: one commit and, with the audit
    /// log, one submission for all their leaves. The relay marks the confirms it gets in groups: a
    /// blocking task and a commit per confirm kept hundreds of threads waiting on group commits, each
    /// taking the audit log's lock in turn.
    ///
    /// Per record, in the order of `ids`: its new status, or why it was left as it is (not found, an
    /// illegal transition; a repeated id is refused as already moving). `Err` when reading or the
    /// commit failed: then none changed.
    pub fn mark_published_many(
        &self,
        ids: &[RecordId],
    ) -> Result<Vec<Result<Status, OutboxError>>, OutboxError> {
        self.to_state_many(ids, State::Published)
    }

    /// [`Self::mark_delivered`] for many records in one durable batch, as [`Self::mark_published_many`]:
    /// the receipts consumer applies the receipts that arrived together with one commit.
    pub fn mark_delivered_many(
        &self,
        ids: &[RecordId],
    ) -> Result<Vec<Result<Status, OutboxError>>, OutboxError> {
        self.to_state_many(ids, State::Delivered)
    }

    fn to_state_many(
        &self,
        ids: &[RecordId],
        to: State,
    ) -> Result<Vec<Result<Status, OutboxError>>, OutboxError> {
        self.update_many(ids, |s, b| self.transition(s, b, to))
    }

    /// The subscriber acked the delivery.
    pub fn mark_delivered(&self, id: RecordId) -> Result<Status, OutboxError> {
        self.to_state(id, State::Delivered)
    }

    /// The receiver's acknowledgement arrived.
    pub fn mark_acknowledged(&self, id: RecordId, code: AckCode) -> Result<Status, OutboxError> {
        self.to_state(id, State::Acknowledged(code))
    }

    /// No acknowledgement in time.
    pub fn mark_overdue(&self, id: RecordId) -> Result<Status, OutboxError> {
        self.to_state(id, State::Overdue)
    }

    /// Overdue scan: every record accepted before `cutoff` that still waits for an acknowledgement and
    /// was published (or delivered) becomes `overdue`, each durably with its leaf. Records not yet
    /// published stay `accepted` (they are still owed to their receiver) and are counted; acknowledgements
    /// never wait. Nothing is resent.
    pub fn mark_overdue_before(&self, cutoff: SystemTime) -> Result<OverdueScan, OutboxError> {
        let end = millis(cutoff).to_be_bytes();
        let mut scan = OverdueScan::default();
        let mut from = Vec::new();
        loop {
            let page = self
                .store
                .range(AWAIT_ACK, &from, Some(&end), PURGE_CHUNK)?;
            let Some((last, _)) = page.last() else { break };
            from = last.clone();
            from.push(0);
            for (k, _) in &page {
                let id = id_from_tail(k)?;
                match self.status(id)?.map(|s| s.state) {
                    Some(State::Published | State::Delivered) => match self.mark_overdue(id) {
                        Ok(_) => scan.marked += 1,
                        // Acknowledged or dead meanwhile.
                        Err(OutboxError::IllegalTransition { .. }) => {}
                        Err(e) => return Err(e),
                    },
                    Some(State::Accepted) => scan.unpublished += 1,
                    // Left over (a state that no longer waits): drop the index entry.
                    _ => {
                        let mut b = Batch::new();
                        b.delete(AWAIT_ACK, k.clone());
                        self.store.submit(b)?.wait()?;
                    }
                }
            }
        }
        Ok(scan)
    }

    /// Give up on the record.
    pub fn mark_dead(&self, id: RecordId, reason: &str) -> Result<Status, OutboxError> {
        self.update(id, |s, b| {
            self.transition(s, b, State::Dead)?;
            s.last_error = Some(reason.chars().take(512).collect());
            Ok(())
        })
    }

    /// Operator replay: a dead record whose payload is still retained goes back to `accepted`, for the
    /// relay to publish again. Attempts reset, `finished_at` and its retention entries cleared, queue,
    /// pending and overdue index entries restored, a timeline step and a `replay` leaf written: one
    /// durable batch. `operator_note` is kept as the record's last error (shown by `sammen status`),
    /// never in the leaf: free text might carry personal data. Refused for any other state
    /// ([`OutboxError::NotDead`]) and once the payload is purged ([`OutboxError::PayloadPurged`]).
    pub fn replay(&self, id: RecordId, operator_note: &str) -> Result<Status, OutboxError> {
        let _guard = self.lock_keys(vec![busy_id(id)]);
        let mut s = self.status(id)?.ok_or(OutboxError::NotFound(id))?;
        if s.state != State::Dead {
            return Err(OutboxError::NotDead { id, state: s.state });
        }
        // Check the store too, not only the flag: without bytes the relay would skip it forever.
        if !s.payload_retained || self.store.get(PAYLOAD, &id_key(id))?.is_none() {
            return Err(OutboxError::PayloadPurged(id));
        }
        let was = s.state;
        let mut b = Batch::new();
        // Not finished any more: retention must not purge a record that is owed to its receiver again.
        if let Some(f) = s.finished_at.take() {
            b.delete(FIN_PAYLOAD, fin_key(f, id));
            b.delete(FIN_META, fin_key(f, id));
        }
        let at = self.now();
        s.state = State::Accepted;
        s.timeline.push(Step {
            state: State::Accepted,
            at,
        });
        s.attempts = 0;
        s.last_error = Some(format!(
            "replayed by operator: {}",
            operator_note.chars().take(480).collect::<String>()
        ));
        // As accept: `accepted` means in queue and pending (and awaiting an acknowledgement).
        b.put(QUEUE, queue_key(&party_key(&s.meta.receiver), id), []);
        b.put(PENDING, id_key(id), []);
        if !s.meta.family.is_acknowledgement() {
            b.put(AWAIT_ACK, await_key(&s), []);
        }
        b.put(META, id_key(id), encode(&s)?);
        let leaves = if self.audit.is_some() {
            let pseudonym = self.pseudonym_of(&s)?;
            let sha = unhex32(&s.sha256);
            vec![leaf_of(
                &s.meta,
                sha,
                Event::Replay,
                Outcome::Success,
                at,
                pseudonym,
            )]
        } else {
            Vec::new()
        };
        let waited = self.submit(b, leaves)?.wait();
        if waited.is_err() {
            // A failed commit may still have landed (as in accept): recount instead of guessing.
            if let Ok(n) = count_pending(&self.store) {
                self.depth.store(n, Ordering::Relaxed);
            }
        }
        waited?;
        self.depth.fetch_add(1, Ordering::Relaxed);
        for o in &self.observers {
            o.on_transition(was, &s);
        }
        Ok(s)
    }

    /// Count a failed attempt; the record dies when attempts or time to live are exhausted.
    pub fn record_attempt(&self, id: RecordId, error: &str) -> Result<AttemptOutcome, OutboxError> {
        let now = self.now();
        let status = self.update(id, |s, b| {
            if s.is_finished() {
                return Err(OutboxError::IllegalTransition {
                    id,
                    from: s.state,
                    to: s.state,
                });
            }
            s.attempts = s.attempts.saturating_add(1);
            s.last_error = Some(error.chars().take(512).collect());
            let expired = now
                .duration_since(s.meta.received)
                .is_ok_and(|age| age >= self.config.ttl);
            if s.attempts >= self.config.max_attempts || expired {
                self.transition(s, b, State::Dead)?;
            }
            Ok(())
        })?;
        Ok(if status.state == State::Dead {
            AttemptOutcome::Dead {
                attempts: status.attempts,
            }
        } else {
            AttemptOutcome::Retry {
                attempts: status.attempts,
            }
        })
    }

    /// Retention: drop payloads of records finished at least `payload_ttl` before `now`, and whole records
    /// (metadata, dedupe keys, index entries) finished at least `meta_ttl` before `now`.
    pub fn purge(
        &self,
        now: SystemTime,
        payload_ttl: Duration,
        meta_ttl: Duration,
    ) -> Result<PurgeStats, OutboxError> {
        let mut stats = PurgeStats::default();
        let cutoff = |ttl: Duration| {
            let t = now.checked_sub(ttl).unwrap_or(UNIX_EPOCH);
            (millis(t).saturating_add(1)).to_be_bytes()
        };
        // Whole records first, so the payload pass does not touch what is about to go anyway.
        let meta_end = cutoff(meta_ttl);
        loop {
            let page = self
                .store
                .range(FIN_META, &[], Some(&meta_end), PURGE_CHUNK)?;
            if page.is_empty() {
                break;
            }
            let ids = page
                .iter()
                .map(|(k, _)| id_from_tail(k))
                .collect::<Result<Vec<_>, _>>()?;
            let _guard = self.lock_keys(ids.iter().map(|id| busy_id(*id)).collect());
            let mut b = Batch::new();
            let mut leaves = Vec::new();
            for ((k, _), id) in page.iter().zip(&ids) {
                b.delete(FIN_META, k.clone());
                b.delete(FIN_PAYLOAD, k.clone());
                b.delete(PAYLOAD, id_key(*id));
                b.delete(META, id_key(*id));
                let Some(s) = self.status(*id)? else { continue };
                b.delete(AWAIT_ACK, await_key(&s));
                if self.audit.is_some() {
                    let pseudonym = self.pseudonym_of(&s)?;
                    b.delete(AUDIT_PATIENT, id_key(*id));
                    let sha = unhex32(&s.sha256);
                    let ev = leaf_of(
                        &s.meta,
                        sha,
                        Event::Purged,
                        Outcome::Success,
                        now,
                        pseudonym,
                    );
                    // `s` ends with this iteration: the leaf owns its strings.
                    leaves.push(ev.into_owned());
                }
                let sender = party_key(&s.meta.sender);
                let ekey = envelope_key(&sender, &s.meta.envelope_id);
                if self.store.get(DEDUPE, &ekey)?.and_then(|v| u64_of(&v).ok()) == Some(id.0) {
                    b.delete(DEDUPE, ekey);
                }
                let mkey = message_key(&sender, &s.meta.message_id);
                if self.store.get(DEDUPE, &mkey)?.and_then(|v| u64_of(&v).ok()) == Some(id.0) {
                    b.delete(DEDUPE, mkey);
                }
                b.delete(MSGID, msgid_key(&s.meta.message_id, *id));
                stats.records += 1;
            }
            self.submit(b, leaves)?.wait()?;
        }
        let payload_end = cutoff(payload_ttl);
        loop {
            let page = self
                .store
                .range(FIN_PAYLOAD, &[], Some(&payload_end), PURGE_CHUNK)?;
            if page.is_empty() {
                break;
            }
            let ids = page
                .iter()
                .map(|(k, _)| id_from_tail(k))
                .collect::<Result<Vec<_>, _>>()?;
            let _guard = self.lock_keys(ids.iter().map(|id| busy_id(*id)).collect());
            let mut b = Batch::new();
            let mut leaves = Vec::new();
            for ((k, _), id) in page.iter().zip(&ids) {
                b.delete(FIN_PAYLOAD, k.clone());
                b.delete(PAYLOAD, id_key(*id));
                if let Some(mut s) = self.status(*id)? {
                    s.payload_retained = false;
                    b.put(META, id_key(*id), encode(&s)?);
                    stats.payloads += 1;
                    if self.audit.is_some() {
                        let (ev, ok) = (Event::PayloadPurged, Outcome::Success);
                        let p = self.pseudonym_of(&s)?;
                        let e = leaf_of(&s.meta, unhex32(&s.sha256), ev, ok, now, p);
                        leaves.push(e.into_owned());
                    }
                }
            }
            self.submit(b, leaves)?.wait()?;
        }
        Ok(stats)
    }
}

/// Number of records waiting to be published (the `pending` tree), read page by page.
fn count_pending<S: Store>(store: &S) -> Result<u64, OutboxError> {
    let mut depth = 0u64;
    let mut from = Vec::new();
    loop {
        let page = store.range(PENDING, &from, None, 4096)?;
        let Some((last, _)) = page.last() else { break };
        depth += page.len() as u64;
        from = last.clone();
        from.push(0);
    }
    Ok(depth)
}
