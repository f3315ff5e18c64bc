//! The `Bus` contract both backends keep, and the types that cross it.

use crate::error::BusError;
use crate::message::BusMessage;
use crate::topology::Topology;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// What became of one published message. Only [`PublishOutcome::Confirmed`] means the broker holds it;
/// every other outcome leaves the message the caller's responsibility (retry, or mark it dead).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishOutcome {
    /// Positive publisher confirm, and routed to a queue: durably stored by the broker.
    Confirmed,
    /// Unroutable: no queue is bound for the routing key (mandatory publish, `basic.return`).
    /// Nothing was stored. Usually the receiver was never declared ([`Bus::ensure_receiver`]).
    Returned {
        /// AMQP reply code (312 NO_ROUTE).
        reply_code: u16,
        /// Broker's text.
        reply_text: String,
    },
    /// The broker refused responsibility (`basic.nack`): e.g. a queue rejecting publishes. Retry.
    Nacked,
    /// No confirm within the timeout. The broker may or may not have it: retry; receivers dedupe by id.
    TimedOut,
    /// The connection failed before the confirm arrived. As for `TimedOut`: retry.
    ConnectionLost,
}

impl PublishOutcome {
    /// True only for a positive, routed confirm.
    pub fn is_confirmed(&self) -> bool {
        matches!(self, PublishOutcome::Confirmed)
    }
}

/// A published message whose confirm is still outstanding. It resolves exactly once, within the bus's
/// confirm timeout. Dropping it only gives up on learning the outcome; the in-flight slot is freed when
/// the broker answers (or the timeout passes), so callers may pipeline past the window.
pub struct PendingConfirm(Pin<Box<dyn Future<Output = PublishOutcome> + Send>>);

impl PendingConfirm {
    pub(crate) fn new(f: impl Future<Output = PublishOutcome> + Send + 'static) -> Self {
        PendingConfirm(Box::pin(f))
    }

    pub(crate) fn ready(outcome: PublishOutcome) -> Self {
        PendingConfirm::new(std::future::ready(outcome))
    }
}

impl Future for PendingConfirm {
    type Output = PublishOutcome;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<PublishOutcome> {
        self.0.as_mut().poll(cx)
    }
}

impl fmt::Debug for PendingConfirm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PendingConfirm")
    }
}

/// Which queue a subscription reads.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// A receiver's inbox, by GLN.
    Inbox(String),
    /// The dead-letter queue.
    DeadLetters,
}

impl Source {
    pub(crate) fn queue_name(&self, t: &Topology) -> Result<String, BusError> {
        match self {
            Source::Inbox(gln) => {
                crate::message::check_receiver(gln)?;
                Ok(t.inbox_queue(gln))
            }
            Source::DeadLetters => Ok(t.dead_queue.clone()),
        }
    }
}

/// One message handed to a subscriber. Settle it with [`Delivery::ack`] or [`Delivery::nack`]; until then it
/// counts against the subscription's prefetch, and if the subscription or connection goes away unsettled,
/// the message is delivered again (so subscribers dedupe by `message_id`).
#[derive(Debug)]
pub struct Delivery {
    /// The message.
    pub message: BusMessage,
    /// The routing key it was published with.
    pub routing_key: String,
    /// Delivered before (to this or another subscriber) and not acked.
    pub redelivered: bool,
    /// Returns so far (0 on first delivery; quorum queues' `x-delivery-count`).
    pub delivery_count: u32,
    /// AMQP `reply_to`: the receipts queue of the node that published it (see
    /// [`crate::receipts::reply_queue`]); `None` on the embedded bus and from older publishers.
    pub reply_to: Option<String>,
    pub(crate) settle: Settle,
}

#[derive(Debug)]
pub(crate) enum Settle {
    Amqp(lapin::Acker, Duration),
    Embedded(crate::embedded::EmbeddedSettle),
}

impl Delivery {
    /// Done: the broker forgets the message.
    pub async fn ack(self) -> Result<(), BusError> {
        match self.settle {
            Settle::Amqp(acker, t) => crate::amqp::consume::ack(&acker, t).await,
            Settle::Embedded(s) => s.ack(),
        }
    }

    /// Not done. `requeue = true` returns it for redelivery (dead-lettered once the delivery limit is
    /// passed); `requeue = false` dead-letters it now.
    pub async fn nack(self, requeue: bool) -> Result<(), BusError> {
        match self.settle {
            Settle::Amqp(acker, t) => crate::amqp::consume::nack(&acker, requeue, t).await,
            Settle::Embedded(s) => s.nack(requeue),
        }
    }
}

/// A stream of deliveries from one queue. Dropping it stops consuming; unsettled deliveries go back.
pub struct Subscription {
    pub(crate) rx: mpsc::Receiver<Delivery>,
    pub(crate) _guard: Box<dyn Send + Sync>,
}

impl Subscription {
    /// The next delivery; `None` once the bus is closed.
    pub async fn next(&mut self) -> Option<Delivery> {
        loop {
            let d = self.rx.recv().await?;
            // Buffered from a channel that has since died: the broker redelivers it, so skip it here
            // rather than hand out a delivery that cannot be settled.
            if let Settle::Amqp(acker, _) = &d.settle {
                if acker.poisoned() {
                    continue;
                }
            }
            return Some(d);
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Subscription")
    }
}

/// Link state for metrics and `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkState {
    /// Publishing works.
    Connected,
    /// Connecting or reconnecting; publishes fail fast with [`BusError::NotConnected`].
    Reconnecting,
    /// Closed by [`Bus::close`].
    Closed,
}

/// A snapshot of a bus's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusStatus {
    /// Backend name: `amqp` or `embedded`.
    pub kind: &'static str,
    /// Current link state.
    pub state: LinkState,
    /// Connections re-established after a loss (0 until the first reconnect).
    pub reconnects: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
}

/// Shared, lock-free status cell.
#[derive(Debug, Default)]
pub(crate) struct StatusCell {
    connected: AtomicBool,
    closed: AtomicBool,
    pub(crate) reconnects: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
}

impl StatusCell {
    pub(crate) fn set_connected(&self, c: bool) {
        self.connected.store(c, Ordering::Release);
    }
    pub(crate) fn set_closed(&self) {
        self.closed.store(true, Ordering::Release);
        self.connected.store(false, Ordering::Release);
    }
    pub(crate) fn snapshot(&self, kind: &'static str) -> BusStatus {
        let state = if self.closed.load(Ordering::Acquire) {
            LinkState::Closed
        } else if self.connected.load(Ordering::Acquire) {
            LinkState::Connected
        } else {
            LinkState::Reconnecting
        };
        BusStatus {
            kind,
            state,
            reconnects: self.reconnects.load(Ordering::Relaxed),
            connect_failures: self.connect_failures.load(Ordering::Relaxed),
        }
    }
}

/// A message bus: route by `<receiver>.<family>.<event>` into per-receiver queues, with per-message
/// outcomes on the publishing side and explicit settlement on the consuming side.
///
/// Ordering: messages published by one caller, one after the other (each `publish` awaited before the
/// next), are enqueued in that order; a receiver's queue delivers them in that order unless one is
/// returned with `nack(requeue)`.
#[async_trait::async_trait]
pub trait Bus: Send + Sync {
    /// Backend name and link state.
    fn status(&self) -> BusStatus;

    /// Names and limits in use.
    fn topology(&self) -> &Topology;

    /// Declare (idempotently) the inbox queue and binding of a receiver, and keep declaring it after
    /// every reconnect.
    async fn ensure_receiver(&self, gln: &str) -> Result<(), BusError>;

    /// Send one message. Returns once it is handed to the broker (or the in-flight window has room and
    /// the send failed); the returned [`PendingConfirm`] resolves to the outcome. An `Err` means nothing
    /// was sent.
    async fn publish(&self, msg: &BusMessage) -> Result<PendingConfirm, BusError>;

    /// Consume a queue with manual acks and at most `prefetch` unsettled deliveries.
    async fn subscribe(&self, source: Source, prefetch: u16) -> Result<Subscription, BusError>;

    /// Stop: reconnect loops end, later calls fail with [`BusError::Closed`].
    async fn close(&self);

    /// Publish and wait for the outcome.
    async fn publish_confirmed(&self, msg: &BusMessage) -> Result<PublishOutcome, BusError> {
        Ok(self.publish(msg).await?.await)
    }
}

/// Wait until `bus` is connected, or fail after `timeout` (tests and start-up use this to fail loudly).
pub async fn wait_connected(bus: &dyn Bus, timeout: Duration) -> Result<(), BusError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match bus.status().state {
            LinkState::Connected => return Ok(()),
            LinkState::Closed => return Err(BusError::Closed),
            LinkState::Reconnecting => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(BusError::NotConnected(timeout));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
