//! The HTTP inbox: receivers that do not speak AMQP read their queue with a long poll and ack over HTTPS.
//!
//! ## API
//! - `GET /v1/inbox/{gln}?wait=SECONDS&max=N` — the next message(s) of that receiver's inbox queue.
//!   `wait` (default 0, capped at [`InboxConfig::max_wait`]) is how long to hold the request open when
//!   nothing is there; `max` (default 1, capped at [`InboxConfig::max_batch`]) how many to hand out at once.
//!   - nothing within `wait`: **204** (poll again).
//!   - `max` absent or 1, one message: **200** with the payload exactly as it was posted, its
//!     `Content-Type`, and headers `Sammen-Delivery-Id`, `Sammen-Message-Id`, `Sammen-Family`,
//!     `Sammen-Event`, `Sammen-Sender-Gln`, `Sammen-Resend` (`true` when the sender resent an earlier
//!     message), `Sammen-Redelivered`, `Sammen-Delivery-Count`, `Sammen-Sha256`, `Sammen-Ack` (the path to
//!     POST the ack to) and `Sammen-Ack-Within` (seconds).
//!   - `max` > 1: **200** `application/json`, always this shape, one to `max` messages:
//!     `{"messages":[{"delivery_id","ack","message_id","family","event","sender_gln","receiver_gln",
//!     "content_type","resend","redelivered","delivery_count","sha256","ack_within_secs","body_base64"}]}`
//!     (`body_base64`: standard base64 of the exact payload bytes; OIOXML may be ISO-8859-1).
//! - `POST /v1/inbox/{gln}/{delivery_id}/ack` — "I have stored it": **200**
//!   `{"delivery_id","message_id","status":"acked"}`. The outbox moves the message to `delivered` through
//!   the delivery-receipt path ([`sammen_relay::receipts::apply`]), then the bus forgets it. With several
//!   sammen nodes on one RabbitMQ a message in the queue may have been published by another node: when
//!   this node holds no record of it, the receipt is sent to the delivery's `reply_to` (that node's
//!   receipts queue, or the shared one) through [`InboxRegistry::forward_receipts`].
//!   Unknown, already acked or expired delivery id: **404** `inbox.unknown-delivery`.
//! - Refusals: no client certificate **403** `inbox.client-certificate-required`; a certificate that may
//!   not receive for the GLN **403** `identity.receiver-not-allowed` (nothing is consumed); a GLN that is
//!   not 13 digits with a valid check digit **422** `inbox.gln-invalid`; a GLN the broker does not serve
//!   **404** `inbox.unknown-receiver`; a bad `wait`/`max` **400** `inbox.bad-query`; bus unavailable **503**
//!   `inbox.bus-unavailable` with Retry-After.
//!
//! ## Invariants
//! - Nothing is lost: a delivery is acked on the bus only after its HTTP ack; one not acked within
//!   [`InboxConfig::visibility_timeout`] is returned to its queue (`nack(requeue)`) and handed out again
//!   (flagged redelivered), as is everything unsettled when the process stops ([`InboxRegistry::close`],
//!   or the bus connection going away). Receivers therefore dedupe by message id. Every return counts
//!   against the queue's delivery limit (quorum queues), after which the message is dead-lettered.
//! - Memory is bounded by [`InboxConfig::max_unsettled`] deliveries per receiver (the bus prefetch),
//!   never by the backlog.
//! - One bus subscription per receiver, created on the first poll; pollers take turns on it, so two
//!   concurrent pollers never get the same delivery.
//! - Delivery ids are 128 random bits (never reused across restarts, so an old id cannot ack a new
//!   delivery).
//! - Nothing personal is logged or put in an error body: ids, GLNs and counts only.

use crate::answer;
use crate::state::Ingress;
use crate::state::SharedOutbox;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use sammen_bus::receipts::{DeliveryReceipt, ReceiptOutcome};
use sammen_bus::{Bus, BusError, Delivery, Source, Subscription};
use sammen_identity::PeerIdentity;
use sammen_subscriber::ReceiptSink;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::OnceCell;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Limits of the inbox.
#[derive(Debug, Clone)]
pub struct InboxConfig {
    /// Longest long poll (`wait` is capped to it).
    pub max_wait: Duration,
    /// A delivery not acked within this is returned to its queue and handed out again.
    pub visibility_timeout: Duration,
    /// Deliveries per receiver held at once, handed out or waiting for a poller (the bus prefetch).
    pub max_unsettled: u16,
    /// Largest `max` (messages per response).
    pub max_batch: usize,
}

impl Default for InboxConfig {
    fn default() -> Self {
        InboxConfig {
            max_wait: Duration::from_secs(60),
            visibility_timeout: Duration::from_secs(300),
            max_unsettled: 32,
            max_batch: 16,
        }
    }
}

/// What the inbox counted (for metrics).
#[derive(Debug, Default)]
pub struct InboxStats {
    /// Deliveries handed to a poller.
    pub handed_out: AtomicU64,
    /// Deliveries acked by their receiver.
    pub acked: AtomicU64,
    /// Deliveries returned to their queue after the visibility timeout.
    pub expired: AtomicU64,
}

/// Why the inbox could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InboxError {
    /// The bus refused (not connected, closed, queue missing).
    #[error("message bus: {0}")]
    Bus(#[from] BusError),
    /// The inbox is shutting down.
    #[error("the inbox is shutting down")]
    Closed,
    /// No randomness for a delivery id.
    #[error("no OS randomness for a delivery id")]
    Random,
}

/// A delivery handed to a poller and not yet acked.
struct Pending {
    delivery: Delivery,
    deadline: Instant,
}

/// One receiver's subscription and its handed-out deliveries.
struct ReceiverInbox {
    gln: String,
    sub: tokio::sync::Mutex<Option<Subscription>>,
    pending: Mutex<HashMap<String, Pending>>,
    /// The subscription ended (bus closed): the registry makes a new one on the next poll.
    ended: AtomicBool,
}

/// One handed-out message, as a poller sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Handed {
    /// Opaque id to ack with.
    pub delivery_id: String,
    /// Path of the ack.
    pub ack: String,
    /// MessageHeader id / letter id.
    pub message_id: String,
    /// Message family.
    pub family: String,
    /// Event code.
    pub event: String,
    /// Sender GLN.
    pub sender_gln: String,
    /// Receiver GLN (the inbox).
    pub receiver_gln: String,
    /// MIME type of the payload.
    pub content_type: String,
    /// The sender resent an earlier message.
    pub resend: bool,
    /// Handed out before and not acked then.
    pub redelivered: bool,
    /// Returns so far.
    pub delivery_count: u32,
    /// Hex SHA-256 of the payload.
    pub sha256: String,
    /// Seconds left to ack before it is handed out again.
    pub ack_within_secs: u64,
    /// The payload (not serialised; see [`HandedJson`]).
    #[serde(skip)]
    pub body: bytes::Bytes,
}

/// Every receiver's inbox. Cheap to create; subscriptions are made on the first poll of each receiver.
pub struct InboxRegistry {
    bus: Arc<dyn Bus>,
    outbox: SharedOutbox,
    cfg: InboxConfig,
    receivers: Mutex<HashMap<String, Arc<OnceCell<Arc<ReceiverInbox>>>>>,
    stop: CancellationToken,
    stats: Arc<InboxStats>,
    /// Receipts for messages this node does not hold (another node published them).
    forward: std::sync::OnceLock<Arc<dyn ReceiptSink>>,
}

impl std::fmt::Debug for InboxRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxRegistry")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn random_id() -> Result<String, InboxError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|_| InboxError::Random)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn is_delivery_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl InboxRegistry {
    /// Inboxes over `bus`; acks become delivery receipts applied to `outbox`.
    pub fn new(bus: Arc<dyn Bus>, outbox: SharedOutbox, mut cfg: InboxConfig) -> Self {
        cfg.max_unsettled = cfg.max_unsettled.max(1);
        cfg.max_batch = cfg.max_batch.clamp(1, usize::from(cfg.max_unsettled));
        InboxRegistry {
            bus,
            outbox,
            cfg,
            receivers: Mutex::new(HashMap::new()),
            stop: CancellationToken::new(),
            stats: Arc::default(),
            forward: std::sync::OnceLock::new(),
        }
    }

    /// Send the receipt of an acked message this node holds no record of to `sink`, which routes it by
    /// the delivery's `reply_to` (several nodes on one RabbitMQ). Without it such a receipt is dropped.
    /// Only the first call counts.
    pub fn forward_receipts(&self, sink: Arc<dyn ReceiptSink>) {
        let _ = self.forward.set(sink);
    }

    /// The limits in force.
    pub fn config(&self) -> &InboxConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> &Arc<InboxStats> {
        &self.stats
    }

    /// Deliveries of `gln` handed out and not yet acked or expired.
    pub fn unsettled(&self, gln: &str) -> usize {
        self.existing(gln)
            .and_then(|r| r.pending.lock().ok().map(|p| p.len()))
            .unwrap_or(0)
    }

    /// Stop handing out: open long polls return 204 at once, later polls answer 503. Call when shutdown
    /// starts, so long polls do not hold up a graceful shutdown; then [`InboxRegistry::close`].
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    /// Return every unacked delivery to its queue and end the subscriptions (after [`Self::shutdown`]).
    pub async fn close(&self) {
        self.stop.cancel();
        let all: Vec<Arc<ReceiverInbox>> = match self.receivers.lock() {
            Ok(mut m) => m.drain().filter_map(|(_, c)| c.get().cloned()).collect(),
            Err(_) => Vec::new(),
        };
        for r in all {
            let pending: Vec<Pending> = match r.pending.lock() {
                Ok(mut p) => p.drain().map(|(_, v)| v).collect(),
                Err(_) => Vec::new(),
            };
            let n = pending.len();
            for p in pending {
                // A failure means the connection is gone, which returns it as well.
                let _ = p.delivery.nack(true).await;
            }
            // Dropping the subscription returns what it buffered.
            r.sub.lock().await.take();
            if n > 0 {
                info!(receiver = %r.gln, returned = n, "inbox: unacked deliveries returned to the queue");
            }
        }
    }

    fn existing(&self, gln: &str) -> Option<Arc<ReceiverInbox>> {
        self.receivers
            .lock()
            .ok()?
            .get(gln)
            .and_then(|c| c.get().cloned())
    }

    async fn receiver(&self, gln: &str) -> Result<Arc<ReceiverInbox>, InboxError> {
        let cell = {
            let mut m = self.receivers.lock().map_err(|_| InboxError::Closed)?;
            if let Some(c) = m.get(gln) {
                if c.get().is_some_and(|r| r.ended.load(Ordering::Acquire)) {
                    m.remove(gln);
                }
            }
            m.entry(gln.to_string()).or_default().clone()
        };
        let r = cell
            .get_or_try_init(|| async {
                if self.stop.is_cancelled() {
                    return Err(InboxError::Closed);
                }
                self.bus.ensure_receiver(gln).await?;
                let sub = self
                    .bus
                    .subscribe(Source::Inbox(gln.to_string()), self.cfg.max_unsettled)
                    .await?;
                let r = Arc::new(ReceiverInbox {
                    gln: gln.to_string(),
                    sub: tokio::sync::Mutex::new(Some(sub)),
                    pending: Mutex::new(HashMap::new()),
                    ended: AtomicBool::new(false),
                });
                tokio::spawn(sweep(
                    Arc::downgrade(&r),
                    self.cfg.visibility_timeout,
                    self.stats.clone(),
                    self.stop.clone(),
                ));
                debug!(receiver = %gln, "inbox: subscribed");
                Ok::<_, InboxError>(r)
            })
            .await?;
        Ok(r.clone())
    }

    /// Up to `max` deliveries of `gln`, waiting up to `wait` for the first. Empty: nothing arrived.
    /// The caller has checked that the peer may receive for `gln`.
    pub async fn poll(
        &self,
        gln: &str,
        wait: Duration,
        max: usize,
    ) -> Result<Vec<Handed>, InboxError> {
        if self.stop.is_cancelled() {
            return Err(InboxError::Closed);
        }
        let r = self.receiver(gln).await?;
        let deadline = Instant::now() + wait.min(self.cfg.max_wait);
        let max = max.clamp(1, self.cfg.max_batch);
        // Biased: once shutdown has begun, nothing more is handed out.
        let mut guard = tokio::select! {
            biased;
            () = self.stop.cancelled() => return Ok(Vec::new()),
            g = r.sub.lock() => g,
            () = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
        };
        let Some(sub) = guard.as_mut() else {
            return Err(InboxError::Closed);
        };
        // `Subscription::next` is cancel-safe (a channel receive), so a timed-out wait loses nothing.
        let first = tokio::select! {
            biased;
            () = self.stop.cancelled() => return Ok(Vec::new()),
            d = sub.next() => d,
            () = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
        };
        let Some(first) = first else {
            r.ended.store(true, Ordering::Release);
            guard.take();
            return Err(InboxError::Bus(BusError::Closed));
        };
        let mut got = vec![first];
        while got.len() < max {
            // Only what is already there: polled once, never waited for.
            match tokio::time::timeout(Duration::ZERO, sub.next()).await {
                Ok(Some(d)) => got.push(d),
                _ => break,
            }
        }
        drop(guard);
        // Registered before any further await: if this future is dropped now (poller gone), every
        // delivery is in `pending` and comes back after the visibility timeout.
        let (out, failed) = self.hand_out(&r, gln, got)?;
        self.stats
            .handed_out
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        for d in failed {
            let _ = d.nack(true).await;
        }
        if out.is_empty() {
            return Err(InboxError::Random);
        }
        Ok(out)
    }

    /// Register `got` as pending; deliveries that got no id come back in the second list (to be returned).
    fn hand_out(
        &self,
        r: &ReceiverInbox,
        gln: &str,
        got: Vec<Delivery>,
    ) -> Result<(Vec<Handed>, Vec<Delivery>), InboxError> {
        let deadline = Instant::now() + self.cfg.visibility_timeout;
        let mut out = Vec::with_capacity(got.len());
        let mut failed = Vec::new();
        let mut pending = r.pending.lock().map_err(|_| InboxError::Closed)?;
        for mut d in got {
            let Ok(id) = random_id() else {
                failed.push(d);
                continue;
            };
            let m = &d.message;
            out.push(Handed {
                ack: format!("/v1/inbox/{gln}/{id}/ack"),
                delivery_id: id.clone(),
                message_id: m.message_id.clone(),
                family: m.family.as_str().to_string(),
                event: m.event.clone(),
                sender_gln: m.sender_gln.clone(),
                receiver_gln: m.receiver_gln.clone(),
                content_type: m.content_type.clone(),
                resend: m.resend,
                redelivered: d.redelivered || d.delivery_count > 0,
                delivery_count: d.delivery_count,
                sha256: m.sha256.clone(),
                ack_within_secs: self.cfg.visibility_timeout.as_secs(),
                body: m.body.clone(),
            });
            // The handler holds the payload until it is sent; the pending entry needs no copy.
            d.message.body = bytes::Bytes::new();
            pending.insert(
                id,
                Pending {
                    delivery: d,
                    deadline,
                },
            );
        }
        Ok((out, failed))
    }

    /// Ack a delivery of `gln`: the receipt moves the outbox row to `delivered`, then the bus forgets the
    /// message. `Ok(None)`: no such delivery (unknown, acked before, or expired).
    pub async fn ack(&self, gln: &str, delivery_id: &str) -> Result<Option<String>, InboxError> {
        let Some(r) = self.existing(gln) else {
            return Ok(None);
        };
        let p = match r.pending.lock() {
            Ok(mut p) => p.remove(delivery_id),
            Err(_) => return Err(InboxError::Closed),
        };
        let Some(p) = p else { return Ok(None) };
        let m = &p.delivery.message;
        let message_id = m.message_id.clone();
        let receipt = DeliveryReceipt {
            message_id: message_id.clone(),
            receiver_gln: m.receiver_gln.clone(),
            sha256: m.sha256.clone(),
            outcome: ReceiptOutcome::Written,
            delivered_at: now_secs(),
            subscriber: "sammen-inbox".into(),
        };
        // Receipt before the bus ack, as the reference subscriber does: a crash in between redelivers
        // (the receiver dedupes), never loses. A failed receipt leaves the message `published`.
        match sammen_relay::receipts::apply_receipt(&self.outbox, &receipt).await {
            Ok(a) if a.held => {}
            // Published by another node: its receipts queue is the delivery's reply_to.
            Ok(_) => match self.forward.get() {
                Some(sink) => {
                    let reply_to = p.delivery.reply_to.as_deref();
                    if let Err(e) = sink.send_reply(&receipt, reply_to).await {
                        warn!(message_id = %message_id, error = %e, "inbox: delivery receipt not forwarded");
                    }
                }
                None => debug!(message_id = %message_id, "inbox: no record here for the receipt"),
            },
            Err(e) => {
                warn!(message_id = %message_id, error = %e, "inbox: delivery receipt not applied")
            }
        }
        if let Err(e) = p.delivery.ack().await {
            // The bus connection went away: the broker hands the message out again.
            warn!(message_id = %message_id, error = %e, "inbox: bus ack failed; it will be redelivered");
        }
        self.stats.acked.fetch_add(1, Ordering::Relaxed);
        Ok(Some(message_id))
    }
}

/// Return deliveries whose visibility timeout passed, until the receiver or the registry goes away.
async fn sweep(
    r: Weak<ReceiverInbox>,
    visibility: Duration,
    stats: Arc<InboxStats>,
    stop: CancellationToken,
) {
    let tick = (visibility / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            () = stop.cancelled() => return,
        }
        let Some(r) = r.upgrade() else { return };
        let now = Instant::now();
        let expired: Vec<(String, Pending)> = match r.pending.lock() {
            Ok(mut p) => {
                let ids: Vec<String> = p
                    .iter()
                    .filter(|(_, v)| v.deadline <= now)
                    .map(|(k, _)| k.clone())
                    .collect();
                ids.into_iter()
                    .filter_map(|k| p.remove(&k).map(|v| (k, v)))
                    .collect()
            }
            Err(_) => return,
        };
        for (id, p) in expired {
            debug!(receiver = %r.gln, delivery_id = %id, message_id = %p.delivery.message.message_id,
                "inbox: not acked in time, returned to the queue");
            stats.expired.fetch_add(1, Ordering::Relaxed);
            // A failure means the connection is gone, which returns it as well.
            let _ = p.delivery.nack(true).await;
        }
    }
}

/// `max` > 1 body.
#[derive(Debug, Serialize)]
struct Batch {
    messages: Vec<HandedJson>,
}

/// One message of a batch: [`Handed`] plus its payload in base64.
#[derive(Debug, Serialize)]
struct HandedJson {
    #[serde(flatten)]
    handed: Handed,
    body_base64: String,
}

/// Parsed `wait` and `max`; `max` is `None` when absent.
fn parse_query(q: Option<&str>) -> Result<(u64, Option<usize>), String> {
    let (mut wait, mut max) = (0u64, None);
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "wait" => {
                wait = v
                    .parse()
                    .map_err(|_| "wait must be a whole number of seconds".to_string())?;
            }
            "max" => {
                let n: usize = v
                    .parse()
                    .map_err(|_| "max must be a positive whole number".to_string())?;
                if n == 0 {
                    return Err("max must be a positive whole number".into());
                }
                max = Some(n);
            }
            _ => {}
        }
    }
    Ok((wait, max))
}

/// Who may read `gln`: the GLN is well-formed, the peer may receive for it, and the broker serves it.
/// `Some`: the refusal to answer with.
fn refusal(ing: &Ingress, peer: Option<&PeerIdentity>, gln: &str) -> Option<Response> {
    if sammen_model::ident::check_gln(gln).is_some() {
        return Some(answer::error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "inbox.gln-invalid",
            "the inbox GLN must be 13 digits with a valid check digit",
        ));
    }
    let Some(peer) = peer else {
        return Some(answer::error(
            StatusCode::FORBIDDEN,
            "inbox.client-certificate-required",
            "inboxes are read over HTTPS with a client certificate allowed to receive for the GLN",
        ));
    };
    if let Err(r) = sammen_identity::authorize_receiver(peer, gln) {
        return Some(crate::tls::refused(&r));
    }
    if !ing.receivers.contains(gln) {
        return Some(answer::error(
            StatusCode::NOT_FOUND,
            "inbox.unknown-receiver",
            "the broker serves no receiver with this GLN",
        ));
    }
    None
}

fn unavailable(ing: &Ingress, e: &InboxError) -> Response {
    warn!(error = %e, "inbox: cannot serve a poll");
    answer::retry_later(
        StatusCode::SERVICE_UNAVAILABLE,
        "inbox.bus-unavailable",
        format!("the inbox cannot be read now ({e}); retry later"),
        ing.cfg.retry_after_secs,
    )
}

fn set(resp: &mut Response, name: &'static str, value: &str) {
    // A value that is not a valid header (never expected: ids are checked at accept) is left out.
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(HeaderName::from_static(name), v);
    }
}

fn single(h: Handed) -> Response {
    let ct = HeaderValue::from_str(&h.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let mut resp = (StatusCode::OK, Body::from(h.body.clone())).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    set(&mut resp, "sammen-delivery-id", &h.delivery_id);
    set(&mut resp, "sammen-message-id", &h.message_id);
    set(&mut resp, "sammen-family", &h.family);
    set(&mut resp, "sammen-event", &h.event);
    set(&mut resp, "sammen-sender-gln", &h.sender_gln);
    set(
        &mut resp,
        "sammen-resend",
        if h.resend { "true" } else { "false" },
    );
    set(
        &mut resp,
        "sammen-redelivered",
        if h.redelivered { "true" } else { "false" },
    );
    set(
        &mut resp,
        "sammen-delivery-count",
        &h.delivery_count.to_string(),
    );
    set(&mut resp, "sammen-sha256", &h.sha256);
    set(&mut resp, "sammen-ack", &h.ack);
    set(
        &mut resp,
        "sammen-ack-within",
        &h.ack_within_secs.to_string(),
    );
    resp
}

/// `GET /v1/inbox/{gln}`.
pub(crate) async fn get_inbox(
    State(ing): State<Arc<Ingress>>,
    peer: Option<axum::Extension<PeerIdentity>>,
    Path(gln): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    if let Some(r) = refusal(&ing, peer.as_ref().map(|p| &p.0), &gln) {
        return r;
    }
    let (wait, max) = match parse_query(q.as_deref()) {
        Ok(v) => v,
        Err(reason) => {
            return answer::error(StatusCode::BAD_REQUEST, "inbox.bad-query", reason);
        }
    };
    let batch = max.is_some_and(|m| m > 1);
    let got = match ing
        .inbox
        .poll(&gln, Duration::from_secs(wait), max.unwrap_or(1))
        .await
    {
        Ok(g) => g,
        Err(e) => return unavailable(&ing, &e),
    };
    if got.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    if batch {
        let b64 = base64::engine::general_purpose::STANDARD;
        let messages = got
            .into_iter()
            .map(|h| HandedJson {
                body_base64: b64.encode(&h.body),
                handed: h,
            })
            .collect();
        let mut resp = (StatusCode::OK, Json(Batch { messages })).into_response();
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return resp;
    }
    match got.into_iter().next() {
        Some(h) => single(h),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

/// Body of a successful ack.
#[derive(Debug, Serialize)]
struct Acked {
    delivery_id: String,
    message_id: String,
    status: &'static str,
}

/// `POST /v1/inbox/{gln}/{delivery_id}/ack`.
pub(crate) async fn post_ack(
    State(ing): State<Arc<Ingress>>,
    peer: Option<axum::Extension<PeerIdentity>>,
    Path((gln, delivery_id)): Path<(String, String)>,
) -> Response {
    if let Some(r) = refusal(&ing, peer.as_ref().map(|p| &p.0), &gln) {
        return r;
    }
    let unknown = || {
        answer::error(
            StatusCode::NOT_FOUND,
            "inbox.unknown-delivery",
            "no unacked delivery with this id: it was acked already, or not acked within the \
             visibility timeout and will be (or was) handed out again under a new id",
        )
    };
    if !is_delivery_id(&delivery_id) {
        return unknown();
    }
    match ing.inbox.ack(&gln, &delivery_id).await {
        Ok(Some(message_id)) => (
            StatusCode::OK,
            Json(Acked {
                delivery_id,
                message_id,
                status: "acked",
            }),
        )
            .into_response(),
        Ok(None) => unknown(),
        Err(e) => unavailable(&ing, &e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing() {
        assert_eq!(parse_query(None), Ok((0, None)));
        assert_eq!(parse_query(Some("wait=30&max=5")), Ok((30, Some(5))));
        assert_eq!(parse_query(Some("max=1&x=y")), Ok((0, Some(1))));
        assert!(parse_query(Some("wait=-1")).is_err());
        assert!(parse_query(Some("max=0")).is_err());
        assert!(parse_query(Some("wait=abc")).is_err());
    }

    #[test]
    fn delivery_ids_are_random_hex() {
        let a = random_id().unwrap();
        let b = random_id().unwrap();
        assert!(is_delivery_id(&a) && is_delivery_id(&b));
        assert_ne!(a, b);
        assert!(!is_delivery_id("../x"));
        assert!(!is_delivery_id(&a.to_uppercase()));
    }
}
