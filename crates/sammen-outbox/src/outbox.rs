//! The outbox over a [`Store`].

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sammen_model::{AckCode, Party};
use sammen_store::{Batch, Store};
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
}
use trees::*;

const NEXT_ID: &[u8] = b"next_id";
/// Identifiers longer than this are refused (keys carry a u16 length prefix).
pub const MAX_ID_LEN: usize = 1024;
/// Records handled per purge commit.
const PURGE_CHUNK: usize = 256;

/// Source of "now" for timelines; tests inject their own.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

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
        let mut depth = 0u64;
        let mut from = Vec::new();
        loop {
            let page = store.range(PENDING, &from, None, 4096)?;
            let Some((last, _)) = page.last() else { break };
            depth += page.len() as u64;
            from = last.clone();
            from.push(0);
        }
        Ok(Self {
            store,
            config,
            clock: Arc::new(SystemTime::now),
            next_id: Mutex::new(from_counter.max(from_meta)),
            busy: Mutex::new(HashSet::new()),
            freed: Condvar::new(),
            depth: AtomicU64::new(depth),
        })
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

        if let Some(v) = self.store.get(DEDUPE, &ekey)? {
            let id = RecordId(u64_of(&v)?);
            return Ok(if v.get(8..) == Some(meta.message_id.as_bytes()) {
                AcceptOutcome::Duplicate { id }
            } else {
                AcceptOutcome::Conflict { existing: id }
            });
        }
        let original = match self.store.get(DEDUPE, &mkey)? {
            Some(v) => Some(RecordId(u64_of(&v)?)),
            None => None,
        };

        let sha256 = hex(&Sha256::digest(&req.bytes));
        let size = req.bytes.len() as u64;
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
            let ticket = self.store.submit(b)?;
            *next = id.0 + 1;
            (id, ticket)
        };
        let (id, ticket) = ticket;
        ticket.wait()?;
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
        let was_pending = status.state == State::Accepted;
        let mut b = Batch::new();
        change(&mut status, &mut b)?;
        let left_queue = was_pending && status.state != State::Accepted;
        if left_queue {
            b.delete(QUEUE, queue_key(&party_key(&status.meta.receiver), id));
            b.delete(PENDING, id_key(id));
        }
        b.put(META, id_key(id), encode(&status)?);
        self.store.commit(b)?;
        if left_queue {
            self.depth.fetch_sub(1, Ordering::Relaxed);
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
            for ((k, _), id) in page.iter().zip(&ids) {
                b.delete(FIN_META, k.clone());
                b.delete(FIN_PAYLOAD, k.clone());
                b.delete(PAYLOAD, id_key(*id));
                b.delete(META, id_key(*id));
                let Some(s) = self.status(*id)? else { continue };
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
            self.store.commit(b)?;
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
            for ((k, _), id) in page.iter().zip(&ids) {
                b.delete(FIN_PAYLOAD, k.clone());
                b.delete(PAYLOAD, id_key(*id));
                if let Some(mut s) = self.status(*id)? {
                    s.payload_retained = false;
                    b.put(META, id_key(*id), encode(&s)?);
                    stats.payloads += 1;
                }
            }
            self.store.commit(b)?;
        }
        Ok(stats)
    }
}
