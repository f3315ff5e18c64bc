//! The outbox over a [`Store`].

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sammen_audit::{AuditLog, Event, LeafEvent, LeafIndex, Outcome, PendingCommit};
use sammen_model::{AckCode, Party};
use sammen_store::{Batch, Store, Ticket};
use sha2::{Digest, Sha256};

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
    /// `id` → patient pseudonym (hex HMAC, never the CPR): for the leaves after `accepted`. Audit only.
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
    observer: Option<Arc<dyn TransitionObserver>>,
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

/// Leaf of one record event; the time is the timeline step's, so leaf and timeline agree.
fn leaf_of(
    meta: &MessageMeta,
    sha256: Option<[u8; 32]>,
    event: Event,
    outcome: Outcome,
    at: SystemTime,
    pseudonym: Option<String>,
) -> LeafEvent {
    let mut e = LeafEvent::new(millis(at), event, outcome);
    e.message_id = Some(meta.message_id.clone());
    e.bundle_id = Some(meta.envelope_id.clone());
    e.family = Some(meta.family);
    e.event_code = Some(meta.event.clone());
    e.sender = Some(meta.sender.clone());
    e.receiver = Some(meta.receiver.clone());
    e.payload_sha256 = sha256;
    e.patient_pseudonym = pseudonym;
    e
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
            observer: None,
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
    pub fn record(&self, event: LeafEvent) -> Result<Option<LeafIndex>, OutboxError> {
        match &self.audit {
            None => Ok(None),
            Some(a) => Ok(a.submit(Batch::new(), vec![event])?.wait()?.pop()),
        }
    }

    /// Submit `b` with its leaves (plain when there is no audit log or nothing to record). Callers that
    /// need submit order (ids) hold their lock across this call; the audit log holds its own inside.
    fn submit(&self, b: Batch, events: Vec<LeafEvent>) -> Result<Commit<'_, S>, OutboxError> {
        match &self.audit {
            Some(a) if !events.is_empty() => Ok(Commit::Audited(a.submit(b, events)?)),
            _ => Ok(Commit::Plain(self.store.submit(b)?)),
        }
    }

    fn pseudonym_of(&self, id: RecordId) -> Result<Option<String>, OutboxError> {
        if self.audit.is_none() {
            return Ok(None);
        }
        Ok(self
            .store
            .get(AUDIT_PATIENT, &id_key(id))?
            .and_then(|v| String::from_utf8(v).ok()))
    }

    /// Tell `observer` about every state change from now on ([`TransitionObserver`]).
    pub fn with_observer(mut self, observer: Arc<dyn TransitionObserver>) -> Self {
        self.observer = Some(observer);
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
    pub fn accept_with(
        &self,
        req: AcceptRequest,
        extra: AcceptAudit,
    ) -> Result<AcceptOutcome, OutboxError> {
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
        let mut guard = self.lock_keys(vec![ekey.clone(), mkey.clone()]);

        let pseudonym = match (&self.audit, &extra.patient) {
            (Some(a), Some(p)) => Some(a.config().patient_key.pseudonym(p.expose())),
            _ => None,
        };
        let leaf = |event, outcome, at, sha256| {
            let mut e = leaf_of(&meta, sha256, event, outcome, at, pseudonym.clone());
            e.cert_fingerprint.clone_from(&extra.cert_fingerprint);
            e
        };
        if let Some(v) = self.store.get(DEDUPE, &ekey)? {
            let id = RecordId(u64_of(&v)?);
            let (outcome, event, result) = if v.get(8..) == Some(meta.message_id.as_bytes()) {
                (
                    Outcome::Success,
                    Event::Duplicate,
                    AcceptOutcome::Duplicate { id },
                )
            } else {
                let code = CONFLICT_CODE.to_owned();
                let ev = Event::Rejected { code };
                (
                    Outcome::SeriousFailure,
                    ev,
                    AcceptOutcome::Conflict { existing: id },
                )
            };
            // Nothing changes in the outbox, so the leaf is its own batch; answered only once durable.
            if self.audit.is_some() {
                let sha = Sha256::digest(&req.bytes).into();
                let ev = leaf(event, outcome, self.now(), Some(sha));
                self.submit(Batch::new(), vec![ev])?.wait()?;
            }
            return Ok(result);
        }
        let original = match self.store.get(DEDUPE, &mkey)? {
            Some(v) => Some(RecordId(u64_of(&v)?)),
            None => None,
        };

        let sha_bytes: [u8; 32] = Sha256::digest(&req.bytes).into();
        let sha256 = hex(&sha_bytes);
        let size = req.bytes.len() as u64;
        let accept_leaf = self.audit.as_ref().map(|_| {
            let event = if original.is_some() {
                Event::Resend
            } else {
                Event::Accepted
            };
            leaf(event, Outcome::Success, meta.received, Some(sha_bytes))
        });
        let ticket = {
            let mut next = self.next_id.lock().unwrap_or_else(|p| p.into_inner());
            let id = RecordId(*next);
            guard.add(busy_id(id));
            let status = Status {
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
                meta,
            };
            let mut b = Batch::new();
            b.put(PAYLOAD, id_key(id), req.bytes);
            b.put(META, id_key(id), encode(&status)?);
            let mut eval = id_key(id).to_vec();
            eval.extend_from_slice(status.meta.message_id.as_bytes());
            b.put(DEDUPE, ekey, eval);
            if original.is_none() {
                b.put(DEDUPE, mkey, id_key(id));
            }
            b.put(MSGID, msgid_key(&status.meta.message_id, id), []);
            b.put(QUEUE, queue_key(&receiver, id), []);
            b.put(PENDING, id_key(id), []);
            b.put(COUNTERS, NEXT_ID, (id.0 + 1).to_be_bytes());
            if let Some(p) = &pseudonym {
                b.put(AUDIT_PATIENT, id_key(id), p.as_bytes());
            }
            let ticket = self.submit(b, accept_leaf.into_iter().collect())?;
            *next = id.0 + 1;
            (id, ticket)
        };
        let (id, ticket) = ticket;
        let waited = ticket.wait();
        if waited.is_err() {
            // A failed commit may still have reached the disk (fjall after a failed sync): recount from the
            // store instead of guessing, so the depth cannot drift (found by the HTTP disk-full test).
            if let Ok(n) = count_pending(&self.store) {
                self.depth.store(n, Ordering::Relaxed);
            }
        }
        waited?;
        self.depth.fetch_add(1, Ordering::Relaxed);
        drop(guard);
        Ok(match original {
            Some(original) => AcceptOutcome::Resend { id, original },
            None => AcceptOutcome::Accepted { id },
        })
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
        let _guard = self.lock_keys(vec![busy_id(id)]);
        let mut status = self.status(id)?.ok_or(OutboxError::NotFound(id))?;
        let from = status.state;
        let was_pending = status.state == State::Accepted;
        let steps = status.timeline.len();
        let mut b = Batch::new();
        change(&mut status, &mut b)?;
        let left_queue = was_pending && status.state != State::Accepted;
        if left_queue {
            b.delete(QUEUE, queue_key(&party_key(&status.meta.receiver), id));
            b.delete(PENDING, id_key(id));
        }
        b.put(META, id_key(id), encode(&status)?);
        // One leaf per state entered (an attempt that does not kill the record enters none).
        let mut leaves = Vec::new();
        if self.audit.is_some() && status.timeline.len() > steps {
            let pseudonym = self.pseudonym_of(id)?;
            for step in &status.timeline[steps..] {
                if let Some((event, outcome)) = state_event(step.state) {
                    let sha = unhex32(&status.sha256);
                    let at = step.at;
                    let ev = leaf_of(&status.meta, sha, event, outcome, at, pseudonym.clone());
                    leaves.push(ev);
                }
            }
        }
        self.submit(b, leaves)?.wait()?;
        if left_queue {
            // Saturating: a record whose failed accept still landed was never counted.
            let _ = self
                .depth
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                    Some(d.saturating_sub(1))
                });
        }
        if let Some(o) = self.observer.as_ref().filter(|_| status.state != from) {
            o.on_transition(from, &status);
        }
        Ok(status)
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

    /// Give up on the record.
    pub fn mark_dead(&self, id: RecordId, reason: &str) -> Result<Status, OutboxError> {
        self.update(id, |s, b| {
            self.transition(s, b, State::Dead)?;
            s.last_error = Some(reason.chars().take(512).collect());
            Ok(())
        })
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
                if self.audit.is_some() {
                    let pseudonym = self.pseudonym_of(*id)?;
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
                    leaves.push(ev);
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
                        let p = self.pseudonym_of(*id)?;
                        leaves.push(leaf_of(&s.meta, unhex32(&s.sha256), ev, ok, now, p));
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
