//! One struct per telemetry event (Vector's `InternalEvent` style).
//!
//! Each event updates its metrics and writes at most one structured `tracing` event (target
//! `sammen::telemetry`, field `event` = the event's name) carrying the message id through [`LogId`] and the
//! sanitised labels, never a payload, a patient identifier or free text from the message. Samplers
//! (`OutboxSampled`, `InboxSampled`, `AuditSampled`, `BusStatusSampled`, `CertificateObserved`) only set
//! gauges and log nothing unless something changed that an operator must see.
//!
//! Emit with `event.emit(&telemetry)` or `telemetry.emit(event)`.

use crate::labels::{self, LogId};
use crate::metrics::vals;
use crate::Telemetry;
use sammen_model::{AckCode, Family};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::{debug, error, info, warn};

/// A telemetry event: updates metrics, writes one log event.
pub trait InternalEvent {
    /// Record the event.
    fn emit(&self, t: &Telemetry);
}

const TARGET: &str = "sammen::telemetry";

fn id(message_id: Option<&str>) -> LogId<'_> {
    LogId::new(message_id.unwrap_or(""))
}

/// A message arrived at the ingress (after parsing enough to know family and event, before acceptance).
#[derive(Debug, Clone, Copy)]
pub struct MessageReceived<'a> {
    /// Message id, when it could be read.
    pub message_id: Option<&'a str>,
    /// Family, when recognised.
    pub family: Option<Family>,
    /// `Report::event`.
    pub event: Option<&'a str>,
    /// Body size in bytes.
    pub bytes: usize,
}

impl InternalEvent for MessageReceived<'_> {
    fn emit(&self, t: &Telemetry) {
        let (f, e) = (labels::family(self.family), labels::event(self.event));
        t.metrics.received.with_label_values(&vals([f, e])).inc();
        debug!(target: TARGET, event = "message_received", message_id = %id(self.message_id),
            family = %f, message_event = %e, bytes = self.bytes);
    }
}

/// A message was validated and durably accepted (the ingress answers 202).
#[derive(Debug, Clone, Copy)]
pub struct MessageAccepted<'a> {
    /// Message id.
    pub message_id: &'a str,
    /// Outbox record id.
    pub record: u64,
    /// Family.
    pub family: Family,
    /// `Report::event`.
    pub event: Option<&'a str>,
    /// Receiver GLN.
    pub receiver: Option<&'a str>,
    /// Time spent from request start to the durable accept.
    pub latency: Duration,
}

impl InternalEvent for MessageAccepted<'_> {
    fn emit(&self, t: &Telemetry) {
        let (f, e) = (labels::family(Some(self.family)), labels::event(self.event));
        t.metrics.accepted.with_label_values(&vals([f, e])).inc();
        info!(target: TARGET, event = "message_accepted", message_id = %LogId::new(self.message_id),
            record = self.record, family = %f, message_event = %e,
            receiver = %t.labels.gln(self.receiver), latency_ms = millis(self.latency));
    }
}

/// A message was refused (4xx): invalid, unknown receiver, too large, ...
#[derive(Debug, Clone, Copy)]
pub struct MessageRejected<'a> {
    /// Message id, when it could be read.
    pub message_id: Option<&'a str>,
    /// Family, when recognised.
    pub family: Option<Family>,
    /// The first error's issue code (`Report::errors().next()`), or a broker code.
    pub code: Option<&'a str>,
    /// HTTP status answered.
    pub status: u16,
}

impl InternalEvent for MessageRejected<'_> {
    fn emit(&self, t: &Telemetry) {
        let (f, c) = (labels::family(self.family), t.labels.reason(self.code));
        t.metrics.rejected.with_label_values(&vals([f, c])).inc();
        info!(target: TARGET, event = "message_rejected", message_id = %id(self.message_id),
            family = %f, code = %c, status = self.status);
    }
}

/// A message whose id was already accepted: answered from the outbox, not forwarded again.
#[derive(Debug, Clone, Copy)]
pub struct DuplicateDropped<'a> {
    /// Message id.
    pub message_id: &'a str,
    /// Family.
    pub family: Family,
    /// The record the id was first accepted as.
    pub record: u64,
}

impl InternalEvent for DuplicateDropped<'_> {
    fn emit(&self, t: &Telemetry) {
        let f = labels::family(Some(self.family));
        t.metrics.duplicates.with_label_values(&vals([f])).inc();
        info!(target: TARGET, event = "duplicate_dropped", message_id = %LogId::new(self.message_id),
            family = %f, record = self.record);
    }
}

/// A resend of an accepted message (same id, new envelope) was forwarded.
#[derive(Debug, Clone, Copy)]
pub struct ResendForwarded<'a> {
    /// Message id.
    pub message_id: &'a str,
    /// Family.
    pub family: Family,
    /// Record id.
    pub record: u64,
}

impl InternalEvent for ResendForwarded<'_> {
    fn emit(&self, t: &Telemetry) {
        let f = labels::family(Some(self.family));
        t.metrics.resends.with_label_values(&vals([f])).inc();
        info!(target: TARGET, event = "resend_forwarded", message_id = %LogId::new(self.message_id),
            family = %f, record = self.record);
    }
}

/// The bus confirmed a publish.
#[derive(Debug, Clone, Copy)]
pub struct PublishConfirmed<'a> {
    /// Message id.
    pub message_id: &'a str,
    /// Record id.
    pub record: u64,
    /// Publish → confirm.
    pub latency: Duration,
}

impl InternalEvent for PublishConfirmed<'_> {
    fn emit(&self, t: &Telemetry) {
        t.metrics
            .confirm_latency
            .with_label_values(&vals([labels::internal("ack")]))
            .observe(self.latency.as_secs_f64());
        debug!(target: TARGET, event = "publish_confirmed", message_id = %LogId::new(self.message_id),
            record = self.record, latency_ms = millis(self.latency));
    }
}

/// How a publish failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishFailure {
    /// The bus nacked it.
    Nack,
    /// No confirm in time.
    Timeout,
    /// Unroutable: no inbox queue for the receiver.
    Returned,
    /// The bus link was down.
    NotConnected,
}

impl PublishFailure {
    /// Label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            PublishFailure::Nack => "nack",
            PublishFailure::Timeout => "timeout",
            PublishFailure::Returned => "returned",
            PublishFailure::NotConnected => "not-connected",
        }
    }
}

/// A publish failed; the relay will retry (or give up, see [`MessageDead`]).
#[derive(Debug, Clone, Copy)]
pub struct PublishFailed<'a> {
    /// Message id.
    pub message_id: &'a str,
    /// Record id.
    pub record: u64,
    /// How.
    pub failure: PublishFailure,
    /// Publish → outcome.
    pub latency: Duration,
    /// Attempt number (1-based).
    pub attempt: u32,
}

impl InternalEvent for PublishFailed<'_> {
    fn emit(&self, t: &Telemetry) {
        let o = labels::internal(self.failure.as_str());
        t.metrics
            .confirm_latency
            .with_label_values(&vals([o]))
            .observe(self.latency.as_secs_f64());
        warn!(target: TARGET, event = "publish_failed", message_id = %LogId::new(self.message_id),
            record = self.record, outcome = %o, attempt = self.attempt, latency_ms = millis(self.latency));
    }
}

/// The receiver's subscriber took the message (delivery receipt).
#[derive(Debug, Clone, Copy)]
pub struct MessageDelivered<'a> {
    /// Message id.
    pub message_id: &'a str,
    /// Family.
    pub family: Family,
    /// Receiver GLN.
    pub receiver: Option<&'a str>,
    /// Accept → delivered.
    pub since_accept: Duration,
}

impl InternalEvent for MessageDelivered<'_> {
    fn emit(&self, t: &Telemetry) {
        let (f, r) = (
            labels::family(Some(self.family)),
            t.labels.gln(self.receiver),
        );
        t.metrics.delivered.with_label_values(&vals([f, r])).inc();
        t.metrics
            .accept_to_delivered
            .with_label_values(&vals([f]))
            .observe(self.since_accept.as_secs_f64());
        info!(target: TARGET, event = "message_delivered", message_id = %LogId::new(self.message_id),
            family = %f, receiver = %r, since_accept_ms = millis(self.since_accept));
    }
}

/// The receiver's acknowledgement of a forwarded message arrived.
#[derive(Debug, Clone, Copy)]
pub struct AckReceived<'a> {
    /// Id of the acknowledged (original) message.
    pub message_id: &'a str,
    /// Family of the original message.
    pub family: Family,
    /// Response code.
    pub code: AckCode,
    /// Accept → acknowledged; `None` when the original's accept time is no longer known.
    pub since_accept: Option<Duration>,
}

impl InternalEvent for AckReceived<'_> {
    fn emit(&self, t: &Telemetry) {
        let (f, c) = (
            labels::family(Some(self.family)),
            labels::ack_code(self.code),
        );
        t.metrics
            .acknowledgements
            .with_label_values(&vals([f, c]))
            .inc();
        if let Some(d) = self.since_accept {
            t.metrics
                .accept_to_acknowledged
                .with_label_values(&vals([f, c]))
                .observe(d.as_secs_f64());
        }
        let ms = self.since_accept.map(millis);
        if self.code == AckCode::Ok {
            info!(target: TARGET, event = "ack_received", message_id = %LogId::new(self.message_id),
                family = %f, code = %c, since_accept_ms = ms);
        } else {
            warn!(target: TARGET, event = "ack_received", message_id = %LogId::new(self.message_id),
                family = %f, code = %c, since_accept_ms = ms);
        }
    }
}

/// No acknowledgement arrived within the window.
#[derive(Debug, Clone, Copy)]
pub struct MessageOverdue<'a> {
    /// Message id.
    pub message_id: &'a str,
    /// Family.
    pub family: Family,
    /// Receiver GLN.
    pub receiver: Option<&'a str>,
    /// Accept → now.
    pub since_accept: Duration,
}

impl InternalEvent for MessageOverdue<'_> {
    fn emit(&self, t: &Telemetry) {
        let (f, r) = (
            labels::family(Some(self.family)),
            t.labels.gln(self.receiver),
        );
        t.metrics.overdue.with_label_values(&vals([f, r])).inc();
        warn!(target: TARGET, event = "message_overdue", message_id = %LogId::new(self.message_id),
            family = %f, receiver = %r, since_accept_ms = millis(self.since_accept));
    }
}

/// A delivery receipt matched no message of this node and was dropped (see `sammen_relay::receipts`).
#[derive(Debug, Clone, Copy)]
pub struct ReceiptUnmatched<'a> {
    /// Message id the receipt names.
    pub message_id: &'a str,
    /// The queue it came from (a receipts queue name: no personal data).
    pub queue: &'a str,
    /// Deliveries of the receipt so far (other nodes had their chance).
    pub delivery_count: u32,
}

impl InternalEvent for ReceiptUnmatched<'_> {
    fn emit(&self, t: &Telemetry) {
        t.metrics.receipts_unmatched.inc();
        warn!(target: TARGET, event = "receipt_unmatched", message_id = %LogId::new(self.message_id),
            queue = %self.queue, delivery_count = self.delivery_count);
    }
}

/// A snapshot of the HTTPS listener's cumulative handshake counts (`sammen_ingress::TlsStats`), taken
/// periodically; the counters follow them (a count that went down, i.e. a new listener, adds nothing).
#[derive(Debug, Clone, Copy)]
pub struct TlsSampled {
    /// Handshakes completed.
    pub handshakes_ok: u64,
    /// Handshakes failed or timed out.
    pub handshakes_refused: u64,
    /// Certificate refusals kept out of the audit log by its rate limit.
    pub refusals_suppressed: u64,
}

impl InternalEvent for TlsSampled {
    fn emit(&self, t: &Telemetry) {
        let m = &t.metrics;
        for (c, now) in [
            (&m.tls_handshakes_ok, self.handshakes_ok),
            (&m.tls_handshakes_refused, self.handshakes_refused),
            (&m.tls_refusals_suppressed, self.refusals_suppressed),
        ] {
            c.inc_by(now.saturating_sub(c.get()));
        }
    }
}

/// Why a message was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    /// Failed publish attempts exhausted.
    Attempts,
    /// Unroutable returns exhausted.
    Returns,
    /// Time to live exhausted.
    Ttl,
    /// Marked dead by an operator.
    Manual,
}

impl DeadReason {
    /// Label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeadReason::Attempts => "attempts",
            DeadReason::Returns => "returns",
            DeadReason::Ttl => "ttl",
            DeadReason::Manual => "manual",
        }
    }
}

/// A message was given up.
#[derive(Debug, Clone, Copy)]
pub struct MessageDead<'a> {
    /// Message id.
    pub message_id: &'a str,
    /// Record id.
    pub record: u64,
    /// Family.
    pub family: Family,
    /// Why.
    pub reason: DeadReason,
}

impl InternalEvent for MessageDead<'_> {
    fn emit(&self, t: &Telemetry) {
        let (f, r) = (
            labels::family(Some(self.family)),
            labels::internal(self.reason.as_str()),
        );
        t.metrics.dead.with_label_values(&vals([f, r])).inc();
        error!(target: TARGET, event = "message_dead", message_id = %LogId::new(self.message_id),
            record = self.record, family = %f, reason = %r);
    }
}

/// Bus backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusBackend {
    /// RabbitMQ.
    Amqp,
    /// In-process.
    Embedded,
}

impl BusBackend {
    /// Label value (the same names as `BusStatus::kind`).
    pub const fn as_str(self) -> &'static str {
        match self {
            BusBackend::Amqp => "amqp",
            BusBackend::Embedded => "embedded",
        }
    }

    /// From `BusStatus::kind`; anything unknown counts as `amqp`.
    pub fn from_kind(kind: &str) -> Self {
        if kind == "embedded" {
            BusBackend::Embedded
        } else {
            BusBackend::Amqp
        }
    }
}

/// A snapshot of `sammen_bus::BusStatus`, taken periodically (and on `/readyz`). Counters follow the
/// bus's cumulative counts; a drop to `connected = false` and every new reconnect is logged once.
#[derive(Debug, Clone, Copy)]
pub struct BusStatusSampled {
    /// Backend.
    pub backend: BusBackend,
    /// `LinkState::Connected`.
    pub connected: bool,
    /// `BusStatus::reconnects` (cumulative).
    pub reconnects: u64,
    /// `BusStatus::connect_failures` (cumulative).
    pub connect_failures: u64,
}

impl InternalEvent for BusStatusSampled {
    fn emit(&self, t: &Telemetry) {
        let b = labels::internal(self.backend.as_str());
        let m = &t.metrics;
        let gauge = m.bus_connected.with_label_values(&vals([b]));
        let was = gauge.get();
        gauge.set(i64::from(self.connected));
        let rc = m.bus_reconnects.with_label_values(&vals([b]));
        let new_reconnects = self.reconnects.saturating_sub(rc.get());
        rc.inc_by(new_reconnects);
        let cf = m.bus_connect_failures.with_label_values(&vals([b]));
        cf.inc_by(self.connect_failures.saturating_sub(cf.get()));
        if new_reconnects > 0 {
            warn!(target: TARGET, event = "bus_reconnected", backend = %b,
                reconnects = self.reconnects, connect_failures = self.connect_failures);
        } else if was == 1 && !self.connected {
            warn!(target: TARGET, event = "bus_disconnected", backend = %b,
                connect_failures = self.connect_failures);
        }
    }
}

/// The bus link came back (for code that sees the reconnect itself rather than sampling).
#[derive(Debug, Clone, Copy)]
pub struct BusReconnected {
    /// Backend.
    pub backend: BusBackend,
}

impl InternalEvent for BusReconnected {
    fn emit(&self, t: &Telemetry) {
        let b = labels::internal(self.backend.as_str());
        t.metrics.bus_reconnects.with_label_values(&vals([b])).inc();
        t.metrics.bus_connected.with_label_values(&vals([b])).set(1);
        warn!(target: TARGET, event = "bus_reconnected", backend = %b);
    }
}

/// Outbox gauges: `Outbox::depth()`, `Outbox::oldest_pending_age()`, and the number overdue.
#[derive(Debug, Clone, Copy)]
pub struct OutboxSampled {
    /// Messages waiting to be published.
    pub depth: u64,
    /// Age of the oldest waiting message.
    pub oldest_age: Option<Duration>,
    /// Messages now overdue, when known.
    pub overdue: Option<u64>,
}

impl InternalEvent for OutboxSampled {
    fn emit(&self, t: &Telemetry) {
        t.metrics.outbox_depth.set(saturating_i64(self.depth));
        t.metrics
            .outbox_oldest_age
            .set(self.oldest_age.map_or(0.0, |d| d.as_secs_f64()));
        if let Some(n) = self.overdue {
            t.metrics.outbox_overdue.set(saturating_i64(n));
        }
    }
}

/// Depth of one receiver's inbox queue.
#[derive(Debug, Clone, Copy)]
pub struct InboxSampled<'a> {
    /// Receiver GLN. Only registered GLNs are recorded: the broker declares inboxes for those alone,
    /// and one gauge for all others could only show whichever was sampled last.
    pub receiver: &'a str,
    /// Messages in the queue.
    pub depth: u64,
}

impl InternalEvent for InboxSampled<'_> {
    fn emit(&self, t: &Telemetry) {
        let r = t.labels.gln(Some(self.receiver));
        if r.as_str() == labels::UNREGISTERED {
            return;
        }
        t.metrics
            .inbox_depth
            .with_label_values(&vals([r]))
            .set(saturating_i64(self.depth));
    }
}

/// Audit log gauges.
#[derive(Debug, Clone, Copy)]
pub struct AuditSampled {
    /// Leaves in the tree.
    pub leaves: u64,
    /// When the latest checkpoint was signed, if any.
    pub last_checkpoint: Option<SystemTime>,
    /// Now.
    pub now: SystemTime,
}

impl InternalEvent for AuditSampled {
    fn emit(&self, t: &Telemetry) {
        t.metrics.audit_leaves.set(saturating_i64(self.leaves));
        if let Some(at) = self.last_checkpoint {
            t.metrics.audit_checkpoint_timestamp.set(unix(at));
            let age = self.now.duration_since(at).unwrap_or(Duration::ZERO);
            t.metrics.audit_checkpoint_age.set(age.as_secs_f64());
        }
    }
}

/// A signed audit checkpoint was written.
#[derive(Debug, Clone, Copy)]
pub struct AuditCheckpointed {
    /// Tree size the checkpoint covers.
    pub leaves: u64,
    /// When it was signed.
    pub at: SystemTime,
}

impl InternalEvent for AuditCheckpointed {
    fn emit(&self, t: &Telemetry) {
        t.metrics.audit_leaves.set(saturating_i64(self.leaves));
        t.metrics.audit_checkpoint_timestamp.set(unix(self.at));
        t.metrics.audit_checkpoint_age.set(0.0);
        info!(target: TARGET, event = "audit_checkpointed", leaves = self.leaves);
    }
}

/// Whose certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertOwner<'a> {
    /// The broker's own server certificate.
    Server,
    /// A partner's client certificate, by the partner's GLN (`unregistered` unless configured).
    Partner(&'a str),
}

/// A certificate's expiry, observed at start-up and on reload.
#[derive(Debug, Clone, Copy)]
pub struct CertificateObserved<'a> {
    /// Whose.
    pub owner: CertOwner<'a>,
    /// `notAfter`.
    pub not_after: SystemTime,
    /// Now.
    pub now: SystemTime,
}

impl InternalEvent for CertificateObserved<'_> {
    fn emit(&self, t: &Telemetry) {
        let who = match self.owner {
            CertOwner::Server => labels::internal(labels::SERVER),
            CertOwner::Partner(gln) => t.labels.gln(Some(gln)),
        };
        let days = (unix(self.not_after) - unix(self.now)) / 86_400.0;
        t.metrics
            .cert_expiry_days
            .with_label_values(&vals([who]))
            .set(days);
        if days < 30.0 {
            warn!(target: TARGET, event = "certificate_expiring", partner = %who, days = days.floor());
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn unix(t: SystemTime) -> f64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}
