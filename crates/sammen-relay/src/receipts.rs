//! Delivery receipts: `published` → `delivered`.
//!
//! The reference subscriber publishes a [`DeliveryReceipt`] once a message is durable on its side (wire
//! format in `sammen_bus::receipts`). [`apply`] moves the matching rows to `delivered`; with RabbitMQ,
//! [`run_amqp_receipts`] consumes the receipts queue with its own reconnect loop (no lapin recovery).

use crate::{blocking, RelayError, SharedOutbox};
use lapin::options::BasicAckOptions;
use sammen_backoff::ExponentialBackoff;
use sammen_bus::queue_consumer::{timed, QueueConsumer};
use sammen_bus::receipts::{receipts_queue, DeliveryReceipt};
use sammen_bus::Topology;
use sammen_outbox::{OutboxError, State};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Apply one receipt: every row with its message id, receiver GLN and sha256 that is `accepted` or
/// `published` becomes `delivered`. Idempotent; returns how many rows changed.
pub async fn apply(outbox: &SharedOutbox, r: &DeliveryReceipt) -> Result<usize, RelayError> {
    let ob = outbox.clone();
    let r = r.clone();
    blocking(move || {
        // Delivery lines (and the delivered metric's log event) inside the message's span.
        let _span = sammen_telemetry::message_span(&r.message_id).entered();
        let mut n = 0;
        for id in ob.find(&r.message_id)? {
            let Some(s) = ob.status(id)? else { continue };
            if s.meta.receiver.gln.as_deref() != Some(r.receiver_gln.as_str())
                || s.sha256 != r.sha256
            {
                continue;
            }
            let step = |res: Result<_, OutboxError>| match res {
                Ok(_) | Err(OutboxError::IllegalTransition { .. }) => Ok(()),
                Err(e) => Err(e),
            };
            match s.state {
                State::Accepted => {
                    // The receipt overtook the relay's own confirm handling: the broker clearly had it.
                    step(ob.mark_published(id))?;
                    step(ob.mark_delivered(id))?;
                    n += 1;
                }
                State::Published => {
                    step(ob.mark_delivered(id))?;
                    n += 1;
                }
                _ => {}
            }
        }
        Ok(n)
    })
    .await
}

/// Consume the receipts queue of `topology` on RabbitMQ until `shutdown`, reconnecting after any failure.
pub async fn run_amqp_receipts(
    outbox: SharedOutbox,
    url: String,
    topology: Topology,
    backoff: ExponentialBackoff,
    shutdown: CancellationToken,
) {
    let queue = receipts_queue(&topology);
    let mut delays = backoff.stream();
    loop {
        match consume(&outbox, &url, &queue, &shutdown).await {
            Ok(()) => return,
            Err(e) => warn!(queue = %queue, error = %e, "receipts: consumer failed, reconnecting"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delays.next_delay()) => {}
        }
    }
}

/// One connection's worth of consuming; `Ok` only on shutdown.
async fn consume(
    outbox: &SharedOutbox,
    url: &str,
    queue: &str,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let mut qc = QueueConsumer::open(url, queue, 256, "sammen-relay-receipts").await?;
    info!(queue = %queue, "receipts: consuming");
    let r = async {
        loop {
            let d = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                d = qc.next() => d?,
            };
            match DeliveryReceipt::from_json(&d.data) {
                Ok(r) => match apply(outbox, &r).await {
                    Ok(n) => debug!(changed = n, "receipts: applied"),
                    // Not acked: RabbitMQ redelivers it after we reconnect.
                    Err(e) => return Err(format!("applying receipt: {e}")),
                },
                Err(e) => warn!(error = %e, "receipts: dropping undecodable receipt"),
            }
            timed("basic.ack", d.acker.ack(BasicAckOptions::default())).await?;
        }
    }
    .await;
    qc.close("sammen relay stopping").await;
    r
}
