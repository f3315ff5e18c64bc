//! # sammen-relay: from the durable outbox to the bus, and back with what happened
//!
//! Why it exists: the ingress promised the sender "accepted" once the outbox held the message. Keeping that
//! promise means publishing every accepted row through the [`Bus`](sammen_bus::Bus), in order per receiver,
//! learning whether the broker now holds it, and retrying — for days if the receiver's side is down —
//! without ever losing a row or flooding a broken broker. The relay is that loop, plus the two timers
//! that follow a message after publishing: delivery receipts and retention.
//!
//! Invariants kept here:
//! - A row is marked `published` only after a positive, routed publisher confirm
//!   ([`PublishOutcome::Confirmed`](sammen_bus::PublishOutcome)). Every other outcome leaves it `accepted`
//!   (and counts an attempt), so a crash at any point re-publishes rather than loses (at-least-once; the
//!   subscriber dedupes by message id). Confirms are marked in groups (one commit for up to 256
//!   records, `Outbox::mark_published_many`); a record stays in flight until its group is durable.
//! - Per receiver ("lane"), rows are published in outbox id order (accept order), each `publish` awaited
//!   before the next. After a failed confirm the lane stops, backs off (jittered exponential,
//!   `sammen-backoff`) and restarts from the failed row; rows already confirmed behind it are not recalled
//!   (the only way a receiver can see a later message before an earlier one is this retry).
//! - At most `window` publishes await a confirm across all lanes.
//! - Returned (unroutable) rows: the receiver's inbox is declared again and the row retried; after
//!   `max_returns` returns it is marked dead with the reason. Invalid rows (cannot be routed at all) are
//!   marked dead at once. Attempts and TTL are enforced by the outbox (`record_attempt`).
//! - Delivery: a [`DeliveryReceipt`](sammen_bus::receipts::DeliveryReceipt) moves a matching `published`
//!   row (same message id, receiver and sha256) to `delivered`; receipts are idempotent and may overtake
//!   the confirm (the row is then marked published first). With RabbitMQ they are consumed from this
//!   node's receipts queue (the `reply_to` of what it publishes) and the shared one
//!   ([`receipts::AmqpReceipts`], which applies the receipts that arrived together with one commit);
//!   in-process subscribers call [`receipts::apply`].
//! - Overdue ([`overdue`]): a record not acknowledged within the configured time (from acceptance) is marked
//!   `overdue` by a periodic scan, durably with its leaf; acknowledgements never wait for one, records not
//!   yet published stay `accepted`, and nothing is ever resent by the broker.
//! - Auto-acknowledgement ([`auto_ack`]): for receivers the broker acknowledges for, a delivered FHIR
//!   message gets a standard `ok` Acknowledgement and a delivered OIOXML letter an XCTL03 positive receipt,
//!   built by the broker (valid by our own validator, ids derived from the message so a repeat is a
//!   duplicate), accepted like a posted one.
//! - Outbox calls block on fsync: they run on the blocking pool, never on a runtime worker.
#![forbid(unsafe_code)]

pub mod auto_ack;
mod convert;
mod error;
mod lane;
pub mod overdue;
pub mod receipts;
mod relay;
mod retention;

pub use auto_ack::{ack_channel, AckObserver, AckQueue, AutoAckStats, AutoAcknowledger};
pub use convert::{content_type_of, to_bus_message};
pub use error::RelayError;
pub use overdue::{OverdueScanner, OverdueStats};
pub use relay::{Relay, RelayConfig};
pub use retention::run_retention;

use std::sync::Arc;

/// The outbox as the relay and the ingress share it: backend chosen at run time.
pub type SharedOutbox = Arc<sammen_outbox::Outbox<Arc<dyn sammen_store::Store>>>;

/// Run a blocking outbox call on the blocking pool.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, RelayError>
where
    F: FnOnce() -> Result<T, sammen_outbox::OutboxError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RelayError::Join(e.to_string()))?
        .map_err(RelayError::Outbox)
}
