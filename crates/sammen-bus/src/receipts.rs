//! Delivery receipts: how a subscriber tells the broker "this message is safely on my side".
//!
//! With the embedded bus the broker sees the ack itself; with RabbitMQ it does not (the ack goes to
//! RabbitMQ only), so the outbox could never move a message from `published` to `delivered`. The
//! reference subscriber (`sammen-subscriber`) therefore publishes one [`DeliveryReceipt`] per message to
//! the receipts queue, and the relay consumes that queue and marks the message delivered.
//!
//! ## Wire format (RabbitMQ)
//! - Queue [`RECEIPTS_QUEUE`] (`sammen.receipts`; namespaced topologies: [`receipts_queue`]), durable,
//!   `x-queue-type = quorum`, no other arguments ([`receipts_queue_arguments`]). Declare it with exactly
//!   these arguments on both sides (idempotent), or RabbitMQ answers PRECONDITION_FAILED.
//! - Published to the default exchange (`""`) with routing key = the queue name, persistent
//!   (delivery mode 2), publisher confirms, `content_type` = [`RECEIPT_CONTENT_TYPE`],
//!   `message_id` = the delivered message's id, `type` = [`RECEIPT_TYPE`].
//! - Body: one JSON object, [`DeliveryReceipt::to_json`]:
//!   `{"v":1,"message_id":"…","receiver_gln":"…","sha256":"…","outcome":"written"|"duplicate",
//!   "delivered_at":<unix seconds>,"subscriber":"…"}`. Unknown fields are ignored when reading, so later
//!   versions can add fields.
//!
//! ## Semantics (what the relay may rely on)
//! - A receipt is published only once the message's file is durable on the subscriber's disk
//!   (file and directory fsynced), before the subscriber acks it. So a receipt never claims more than is
//!   true, and a crash between receipt and ack yields a redelivery, a dropped duplicate and a second receipt.
//! - Receipts are therefore **at least once and unordered**: mark-delivered must be idempotent, and a
//!   receipt for an unknown or already-delivered id is not an error (ack it and move on).
//! - Receipts are advisory: a receipt that never arrives (subscriber down, RabbitMQ lost it) leaves the
//!   message `published`, never lost. `outcome = duplicate` means the subscriber already had the file.
//! - `sha256` echoes the message's `sammen-sha256` header as the subscriber received it.

use crate::topology::{Topology, ARG_QUEUE_TYPE, DEAD_QUEUE, QUEUE_TYPE_QUORUM};
use serde_json::{json, Value};

/// Queue receipts are published to (default topology).
pub const RECEIPTS_QUEUE: &str = "sammen.receipts";
/// Exchange receipts are published to: the default exchange, routing key = queue name.
pub const RECEIPTS_EXCHANGE: &str = "";
/// `content_type` of a receipt.
pub const RECEIPT_CONTENT_TYPE: &str = "application/vnd.sammen.receipt+json";
/// AMQP `type` of a receipt.
pub const RECEIPT_TYPE: &str = "sammen.delivery-receipt";
/// Current receipt format version (`"v"`).
pub const RECEIPT_VERSION: u64 = 1;

/// The receipts queue of a topology: [`RECEIPTS_QUEUE`] with the same namespace prefix as its dead-letter
/// queue (`Topology::namespaced("ns")` → `ns.sammen.receipts`).
pub fn receipts_queue(t: &Topology) -> String {
    match t.dead_queue.strip_suffix(DEAD_QUEUE) {
        Some(ns) => format!("{ns}{RECEIPTS_QUEUE}"),
        None => format!("{}.receipts", t.dead_queue),
    }
}

/// Arguments the receipts queue is declared with (durable, quorum, nothing else).
pub fn receipts_queue_arguments() -> Vec<(&'static str, &'static str)> {
    vec![(ARG_QUEUE_TYPE, QUEUE_TYPE_QUORUM)]
}

/// What the subscriber did with the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptOutcome {
    /// Written to the subscriber's disk now.
    Written,
    /// The subscriber already had it (a redelivery or resend); not rewritten.
    Duplicate,
}

impl ReceiptOutcome {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptOutcome::Written => "written",
            ReceiptOutcome::Duplicate => "duplicate",
        }
    }
}

/// "Message `message_id` to `receiver_gln` is durably on the subscriber's disk." See the module docs for
/// the queue, wire format and at-least-once semantics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReceipt {
    /// The delivered message's id (the bus message's `message_id`).
    pub message_id: String,
    /// The receiver whose inbox it came from.
    pub receiver_gln: String,
    /// The `sammen-sha256` header as received.
    pub sha256: String,
    /// Written now, or already there.
    pub outcome: ReceiptOutcome,
    /// When the file was found durable, seconds since the Unix epoch.
    pub delivered_at: u64,
    /// Free-form name of the subscriber instance (host, process), for the timeline.
    pub subscriber: String,
}

/// Why a receipt body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid delivery receipt: {0}")]
pub struct ReceiptError(pub String);

impl DeliveryReceipt {
    /// The JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        json!({
            "v": RECEIPT_VERSION,
            "message_id": self.message_id,
            "receiver_gln": self.receiver_gln,
            "sha256": self.sha256,
            "outcome": self.outcome.as_str(),
            "delivered_at": self.delivered_at,
            "subscriber": self.subscriber,
        })
        .to_string()
        .into_bytes()
    }

    /// Read a JSON body (unknown fields ignored; a newer major version is refused).
    pub fn from_json(body: &[u8]) -> Result<Self, ReceiptError> {
        let v: Value =
            serde_json::from_slice(body).map_err(|e| ReceiptError(format!("not JSON: {e}")))?;
        let s = |k: &str| -> Result<String, ReceiptError> {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| ReceiptError(format!("missing string field {k:?}")))
        };
        let version = v.get("v").and_then(Value::as_u64).unwrap_or(0);
        if version != RECEIPT_VERSION {
            return Err(ReceiptError(format!("unsupported version {version}")));
        }
        let outcome = match s("outcome")?.as_str() {
            "written" => ReceiptOutcome::Written,
            "duplicate" => ReceiptOutcome::Duplicate,
            other => return Err(ReceiptError(format!("unknown outcome {other:?}"))),
        };
        let message_id = s("message_id")?;
        if message_id.is_empty() || message_id.len() > 255 {
            return Err(ReceiptError("message_id must be 1-255 bytes".into()));
        }
        Ok(DeliveryReceipt {
            message_id,
            receiver_gln: s("receiver_gln")?,
            sha256: s("sha256")?,
            outcome,
            delivered_at: v.get("delivered_at").and_then(Value::as_u64).unwrap_or(0),
            subscriber: s("subscriber").unwrap_or_default(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names_follow_the_namespace() {
        let r = DeliveryReceipt {
            message_id: "a5e5b880-c087-4055-b9ec-99108695f81d".into(),
            receiver_gln: "5790001348120".into(),
            sha256: "0".repeat(64),
            outcome: ReceiptOutcome::Duplicate,
            delivered_at: 1_700_000_000,
            subscriber: "host/1".into(),
        };
        assert_eq!(DeliveryReceipt::from_json(&r.to_json()).unwrap(), r);
        assert!(DeliveryReceipt::from_json(b"{\"v\":2}").is_err());
        assert!(DeliveryReceipt::from_json(b"nope").is_err());
        assert_eq!(receipts_queue(&Topology::default()), "sammen.receipts");
        assert_eq!(
            receipts_queue(&Topology::namespaced("t1")),
            "t1.sammen.receipts"
        );
    }
}
