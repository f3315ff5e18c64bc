//! Delivery receipts: `published` → `delivered`.
//!
//! The reference subscriber publishes a [`DeliveryReceipt`] once a message is durable on its side (wire
//! format and queues in `sammen_bus::receipts`). [`apply`] moves the matching rows to `delivered`; with
//! RabbitMQ, [`AmqpReceipts`] consumes this node's receipts queue and the shared one, each with its own
//! reconnect loop (no lapin recovery).
//!
//! Several nodes (issue #6): a receipt on the node's own queue (the `reply_to` of what it published) is
//! for this node. The shared queue holds receipts for messages published without a `reply_to` (before the
//! upgrade) and is consumed by every node, so a receipt there may be for a message another node holds: it
//! is put back at the end of the queue for another consumer ([`QueueConsumer::requeue_at_back`], counted
//! in the [`HEADER_RETURNS`] header; a `nack` with requeue went back to the same node again and again),
//! until it has been returned [`SHARED_REDELIVERIES`] times **and** this node first saw it
//! [`SHARED_MIN_AGE`] ago; then it is
//! dropped, logged with its message id and counted (`sammen_receipts_unmatched_total`). Both bounds,
//! because a count alone ran out in well under a second while the node holding the message was busy (CI:
//! 2 of 40 receipts dropped, their messages left `published`). Limitation: a node that is down for longer than those redeliveries
//! take loses the shared-queue receipts for its messages (they stay `published`, as when a receipt is lost;
//! delivery itself happened). Its own queue keeps everything until it is back.

use crate::{blocking, RelayError, SharedOutbox};
use lapin::options::BasicAckOptions;
use lapin::types::{AMQPValue, FieldTable};
use sammen_backoff::ExponentialBackoff;
use sammen_bus::message::HEADER_DELIVERY_COUNT;
use sammen_bus::queue_consumer::{timed, QueueConsumer};
use sammen_bus::receipts::{node_receipts_queue, receipts_queue, DeliveryReceipt, InvalidNodeName};
use sammen_bus::Topology;
use sammen_outbox::{OutboxError, RecordId, State};
use sammen_telemetry::events::ReceiptUnmatched;
use sammen_telemetry::SharedTelemetry;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Deliveries of a shared-queue receipt no node holds before it is dropped: enough for every node of a
/// small cluster to see it many times over (RabbitMQ hands a returned message to any consumer).
pub const SHARED_REDELIVERIES: u32 = 20;

/// Header counting how often nodes put a shared-queue receipt back ([`QueueConsumer::requeue_at_back`]).
pub const HEADER_RETURNS: &str = "sammen-receipt-returns";

/// How long a node keeps returning a shared-queue receipt it does not hold before it may drop it.
pub const SHARED_MIN_AGE: Duration = Duration::from_secs(5);

/// What one receipt did on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Rows moved to `delivered`.
    pub changed: usize,
    /// This node holds a row with the receipt's message id, receiver and sha256 (whatever its state).
    pub held: bool,
}

/// Apply one receipt: every row with its message id, receiver GLN and sha256 that is `accepted` or
/// `published` becomes `delivered`. Idempotent; returns how many rows changed.
pub async fn apply(outbox: &SharedOutbox, r: &DeliveryReceipt) -> Result<usize, RelayError> {
    Ok(apply_receipt(outbox, r).await?.changed)
}

/// [`apply`], also telling whether this node holds the message at all.
pub async fn apply_receipt(
    outbox: &SharedOutbox,
    r: &DeliveryReceipt,
) -> Result<Applied, RelayError> {
    let mut one = apply_receipts(outbox, vec![r.clone()]).await?;
    Ok(one.pop().unwrap_or(Applied {
        changed: 0,
        held: false,
    }))
}

/// [`apply_receipt`] for receipts that arrived together, in one blocking call; the usual case (a
/// `published` row becomes `delivered`) for all of them in one commit. Per receipt, in order.
pub async fn apply_receipts(
    outbox: &SharedOutbox,
    receipts: Vec<DeliveryReceipt>,
) -> Result<Vec<Applied>, RelayError> {
    let ob = outbox.clone();
    blocking(move || {
        let mut applied = vec![
            Applied {
                changed: 0,
                held: false
            };
            receipts.len()
        ];
        // (receipt, row) pairs to move published → delivered together; a row once (a later receipt for
        // it finds it delivered, as it would applied alone).
        let mut group = Vec::new();
        let mut grouped = HashSet::new();
        for (i, r) in receipts.iter().enumerate() {
            let _span = sammen_telemetry::message_span(&r.message_id).entered();
            for id in ob.find(&r.message_id)? {
                let Some(s) = ob.status(id)? else { continue };
                if s.meta.receiver.gln.as_deref() != Some(r.receiver_gln.as_str())
                    || s.sha256 != r.sha256
                {
                    continue;
                }
                applied[i].held = true;
                match s.state {
                    State::Accepted => {
                        // The receipt overtook the relay's own confirm handling (rare): on its own.
                        tolerate(ob.mark_published(id))?;
                        tolerate(ob.mark_delivered(id))?;
                        applied[i].changed += 1;
                    }
                    State::Published if grouped.insert(id) => group.push((i, id)),
                    _ => {}
                }
            }
        }
        let ids: Vec<RecordId> = group.iter().map(|(_, id)| *id).collect();
        if !ids.is_empty() {
            for ((i, _), r) in group.iter().zip(ob.mark_delivered_many(&ids)?) {
                tolerate(r)?;
                applied[*i].changed += 1;
            }
        }
        Ok(applied)
    })
    .await
}

/// A transition another writer made first (a receipt delivered twice, a receipt racing the relay) is
/// no failure of the receipt.
fn tolerate<T>(r: Result<T, OutboxError>) -> Result<(), OutboxError> {
    match r {
        Ok(_) | Err(OutboxError::IllegalTransition { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Receipts taken from a queue in one go at most (the consumer's prefetch).
const RECEIPT_GROUP: usize = 256;

/// Consume the shared receipts queue of `topology` on RabbitMQ until `shutdown`, reconnecting after any
/// failure (one node, no node queue; see [`AmqpReceipts`] for the node's own queue as well).
pub async fn run_amqp_receipts(
    outbox: SharedOutbox,
    url: String,
    topology: Topology,
    backoff: ExponentialBackoff,
    shutdown: CancellationToken,
) {
    AmqpReceipts::new(outbox, url, topology)
        .with_backoff(backoff)
        .run(shutdown)
        .await;
}

/// Counters of the receipts consumer.
#[derive(Debug, Default)]
pub struct ReceiptStats {
    /// Receipts that moved at least one row to `delivered`.
    pub applied: AtomicU64,
    /// Shared-queue receipts for a message this node does not hold, returned for another node.
    pub returned: AtomicU64,
    /// Receipts dropped because no row matched (also `sammen_receipts_unmatched_total`).
    pub unmatched: AtomicU64,
}

/// The receipts consumer of one node: its own queue ([`node_receipts_queue`], the `reply_to` of what it
/// publishes) and the shared queue ([`receipts_queue`]).
pub struct AmqpReceipts {
    outbox: SharedOutbox,
    url: String,
    topology: Topology,
    node_queue: Option<String>,
    backoff: ExponentialBackoff,
    telemetry: Option<SharedTelemetry>,
    stats: Arc<ReceiptStats>,
}

impl AmqpReceipts {
    /// Receipts for `outbox` from the shared queue of `topology` at `url`.
    pub fn new(outbox: SharedOutbox, url: String, topology: Topology) -> Self {
        AmqpReceipts {
            outbox,
            url,
            topology,
            node_queue: None,
            backoff: ExponentialBackoff::default(),
            telemetry: None,
            stats: Arc::default(),
        }
    }

    /// Also consume node `node`'s own queue (declared there, durable quorum).
    pub fn with_node(mut self, node: &str) -> Result<Self, InvalidNodeName> {
        self.node_queue = Some(node_receipts_queue(&self.topology, node)?);
        Ok(self)
    }

    /// Reconnect delays.
    pub fn with_backoff(mut self, backoff: ExponentialBackoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Count dropped receipts in `telemetry`.
    pub fn with_telemetry(mut self, telemetry: SharedTelemetry) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    /// The counters (shared with the running consumer).
    pub fn stats(&self) -> Arc<ReceiptStats> {
        self.stats.clone()
    }

    /// Consume until `shutdown`, reconnecting each queue after any failure.
    pub async fn run(self, shutdown: CancellationToken) {
        let shared = Queue {
            name: receipts_queue(&self.topology),
            shared: true,
        };
        let own = self.node_queue.clone().map(|name| Queue {
            name,
            shared: false,
        });
        let this = &self;
        let own = async {
            if let Some(q) = own {
                this.run_queue(q, &shutdown).await;
            }
        };
        tokio::join!(self.run_queue(shared, &shutdown), own);
    }

    async fn run_queue(&self, q: Queue, shutdown: &CancellationToken) {
        let mut delays = self.backoff.stream();
        loop {
            match self.consume(&q, shutdown).await {
                Ok(()) => return,
                Err(e) => {
                    warn!(queue = %q.name, error = %e, "receipts: consumer failed, reconnecting");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delays.next_delay()) => {}
            }
        }
    }

    /// One connection's worth of consuming; `Ok` only on shutdown.
    async fn consume(&self, q: &Queue, shutdown: &CancellationToken) -> Result<(), String> {
        let mut qc = QueueConsumer::open(&self.url, &q.name, 256, "sammen-relay-receipts").await?;
        info!(queue = %q.name, "receipts: consuming");
        // Returns seen here per message id: the bound holds even where a broker does not count returns.
        let mut seen: HashMap<String, (u32, std::time::Instant)> = HashMap::new();
        let r = async {
            loop {
                let first = tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    d = qc.next() => d?,
                };
                // Everything that arrived with it is applied with one commit.
                let mut ds = vec![first];
                while ds.len() < RECEIPT_GROUP {
                    match qc.try_next().await {
                        Some(d) => ds.push(d?),
                        None => break,
                    }
                }
                let mut receipts = Vec::with_capacity(ds.len());
                let mut group = Vec::with_capacity(ds.len());
                for d in ds {
                    match DeliveryReceipt::from_json(&d.data) {
                        Ok(r) => {
                            receipts.push(r.clone());
                            group.push((d, r));
                        }
                        Err(e) => {
                            warn!(queue = %q.name, error = %e, "receipts: dropping undecodable receipt");
                            timed("basic.ack", d.acker.ack(BasicAckOptions::default())).await?;
                        }
                    }
                }
                let applied = match apply_receipts(&self.outbox, receipts).await {
                    Ok(a) => a,
                    // Not acked: RabbitMQ redelivers them after we reconnect.
                    Err(e) => return Err(format!("applying receipts: {e}")),
                };
                for ((d, receipt), applied) in group.into_iter().zip(applied) {
                    self.settle(q, &mut qc, &mut seen, d, &receipt, applied).await?;
                }
            }
        }
        .await;
        qc.close("sammen relay stopping").await;
        r
    }

    /// Ack one receipt after its group was applied; or, on the shared queue, hand one this node does not
    /// hold back for another node, or count it unmatched.
    async fn settle(
        &self,
        q: &Queue,
        qc: &mut QueueConsumer,
        seen: &mut HashMap<String, (u32, std::time::Instant)>,
        d: lapin::message::Delivery,
        receipt: &DeliveryReceipt,
        applied: Applied,
    ) -> Result<(), String> {
        let headers = d.properties.headers().as_ref();
        let mut count = delivery_count(headers).max(returns(headers));
        let mut young = false;
        if q.shared && !applied.held {
            if seen.len() >= 10_000 {
                seen.clear();
            }
            let (n, first) = seen
                .entry(receipt.message_id.clone())
                .or_insert((0, std::time::Instant::now()));
            count = count.max(*n);
            *n += 1;
            young = first.elapsed() < SHARED_MIN_AGE;
        }
        if applied.held {
            if applied.changed > 0 {
                self.stats.applied.fetch_add(1, Ordering::Relaxed);
            }
            debug!(changed = applied.changed, "receipts: applied");
        } else if q.shared && (count < SHARED_REDELIVERIES || young) {
            // Probably another node's (published before reply_to): let another consumer take it.
            self.stats.returned.fetch_add(1, Ordering::Relaxed);
            let mut h = headers.cloned().unwrap_or_default();
            h.insert(
                HEADER_RETURNS.into(),
                AMQPValue::LongUInt(count.saturating_add(1)),
            );
            qc.requeue_at_back(&d.data, d.properties.clone().with_headers(h))
                .await?;
            timed("basic.ack", d.acker.ack(BasicAckOptions::default())).await?;
            // A short pause, so a lone node does not spin on it and others get their turn.
            tokio::time::sleep(Duration::from_millis(20)).await;
            return Ok(());
        } else {
            seen.remove(&receipt.message_id);
            self.stats.unmatched.fetch_add(1, Ordering::Relaxed);
            let event = ReceiptUnmatched {
                message_id: &receipt.message_id,
                queue: &q.name,
                delivery_count: count,
            };
            match &self.telemetry {
                Some(t) => t.emit(event),
                None => {
                    warn!(message_id = %receipt.message_id, queue = %q.name, delivery_count = count,
                    "receipts: no matching message on this node, dropping the receipt")
                }
            }
        }
        timed("basic.ack", d.acker.ack(BasicAckOptions::default())).await?;
        Ok(())
    }
}

/// One queue the consumer reads.
struct Queue {
    name: String,
    /// The shared (legacy) queue, where a receipt may be another node's.
    shared: bool,
}

/// How often nodes returned this receipt ([`HEADER_RETURNS`]; absent before the first return).
fn returns(h: Option<&FieldTable>) -> u32 {
    match h.and_then(|h| h.inner().get(HEADER_RETURNS)) {
        Some(AMQPValue::LongUInt(n)) => *n,
        _ => 0,
    }
}

/// Quorum queues count earlier deliveries in `x-delivery-count` (absent on the first).
fn delivery_count(h: Option<&FieldTable>) -> u32 {
    let n = match h.and_then(|h| h.inner().get(HEADER_DELIVERY_COUNT)) {
        Some(AMQPValue::LongLongInt(i)) => u64::try_from(*i).unwrap_or(0),
        Some(AMQPValue::LongInt(i)) => u64::try_from(*i).unwrap_or(0),
        Some(AMQPValue::LongUInt(i)) => u64::from(*i),
        Some(AMQPValue::ShortInt(i)) => u64::try_from(*i).unwrap_or(0),
        Some(AMQPValue::ShortUInt(i)) => u64::from(*i),
        _ => 0,
    };
    u32::try_from(n).unwrap_or(u32::MAX)
}
