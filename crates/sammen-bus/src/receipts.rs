//! Delivery receipts: how a subscriber tells the broker "this message is safely on my side".
//!
//! With the embedded bus the broker sees the ack itself; with RabbitMQ it does not (the ack goes to
//! RabbitMQ only), so the outbox could never move a message from `published` to `delivered`. The
//! reference subscriber (`sammen-subscriber`) therefore publishes one [`DeliveryReceipt`] per message to
//! the receipts queue, and the relay consumes that queue and marks the message delivered.
//!
//! ## Which queue (several sammen nodes, issue #6)
//! Every node has its own outbox, so a receipt must reach the node that published the message: a node
//! that does not hold the message can only drop it. So each node has its own receipts queue,
//! [`node_receipts_queue`] (`sammen.receipts.<node>`, node name checked by [`check_node_name`] and stable
//! across restarts), and the node's bus sets the AMQP `reply_to` of every message it publishes to it.
//! A subscriber sends the receipt to the delivery's `reply_to` ([`reply_queue`]); a message without one
//! (published before this version) or with one that is not a receipts queue of the topology gets its
//! receipt on the shared queue [`RECEIPTS_QUEUE`], which every node also consumes (there a node that does
//! not hold the message returns the receipt for another node to take, a bounded number of times).
//!
//! ## Wire format (RabbitMQ)
//! - Queues [`RECEIPTS_QUEUE`] (`sammen.receipts`; namespaced topologies: [`receipts_queue`]) and
//!   [`node_receipts_queue`], durable, `x-queue-type = quorum`, no other arguments
//!   ([`receipts_queue_arguments`]). Declare them with exactly these arguments (idempotent), or RabbitMQ
//!   answers PRECONDITION_FAILED. A node queue is declared by its node (on every connect, before
//!   anything is published with it as `reply_to`), never by a subscriber: a `reply_to` naming a queue that
//!   is gone makes the publish come back (mandatory), and the receipt goes to the shared queue instead.
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

/// Longest node name: queue names stay far below AMQP's 255 bytes, whatever the namespace.
pub const MAX_NODE_NAME_LEN: usize = 64;

/// A node name that cannot name a receipts queue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node name must be 1-{MAX_NODE_NAME_LEN} characters of A-Z, a-z, 0-9, '-' and '_'")]
pub struct InvalidNodeName;

/// Check a node name: 1–[`MAX_NODE_NAME_LEN`] of `A-Za-z0-9_-` (no dot, so it can neither look like a
/// namespace nor a routing-key part).
pub fn check_node_name(node: &str) -> Result<(), InvalidNodeName> {
    let ok = !node.is_empty()
        && node.len() <= MAX_NODE_NAME_LEN
        && node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(InvalidNodeName)
    }
}

/// The receipts queue of one node: `<receipts_queue>.<node>` (`sammen.receipts.node-a`,
/// `ns.sammen.receipts.node-a`).
pub fn node_receipts_queue(t: &Topology, node: &str) -> Result<String, InvalidNodeName> {
    check_node_name(node)?;
    Ok(format!("{}.{node}", receipts_queue(t)))
}

/// Where the receipt for a delivery goes: its `reply_to` when that is a node receipts queue of `t`,
/// otherwise (no `reply_to`: published by an older version; or anything else, which a subscriber must
/// never publish to) the shared receipts queue.
pub fn reply_queue(t: &Topology, reply_to: Option<&str>) -> String {
    let shared = receipts_queue(t);
    match reply_to {
        Some(q) if is_node_queue(&shared, q) => q.to_string(),
        _ => shared,
    }
}

/// `queue` is `<shared>.<node>` with a valid node name: a node receipts queue beside the shared receipts
/// queue `shared`.
pub fn is_node_queue(shared: &str, queue: &str) -> bool {
    queue
        .strip_prefix(shared)
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|node| check_node_name(node).is_ok())
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

    #[test]
    fn node_queues_are_checked_and_namespaced() {
        let t1 = Topology::namespaced("t1");
        assert_eq!(
            node_receipts_queue(&Topology::default(), "node-a_1").unwrap(),
            "sammen.receipts.node-a_1"
        );
        assert_eq!(
            node_receipts_queue(&t1, "b").unwrap(),
            "t1.sammen.receipts.b"
        );
        let long = "n".repeat(MAX_NODE_NAME_LEN);
        assert!(node_receipts_queue(&t1, &long).is_ok());
        for bad in ["", "a.b", "a b", "a#", "æ", &format!("{long}n")] {
            assert_eq!(check_node_name(bad), Err(InvalidNodeName), "{bad:?}");
        }
    }

    #[test]
    fn receipts_follow_reply_to_only_into_receipts_queues() {
        let t1 = Topology::namespaced("t1");
        assert_eq!(
            reply_queue(&t1, Some("t1.sammen.receipts.node-a")),
            "t1.sammen.receipts.node-a"
        );
        // No reply_to (an older publisher), or one that is not a node receipts queue of this topology:
        // the shared queue, never an arbitrary queue such as another receiver's inbox.
        for other in [
            None,
            Some("t1.sammen.inbox.5790001348120"),
            Some("sammen.receipts.node-a"),
            Some("t1.sammen.receipts"),
            Some("t1.sammen.receipts."),
            Some("t1.sammen.receipts.a.b"),
            Some("t1.sammen.receiptsX"),
        ] {
            assert_eq!(reply_queue(&t1, other), "t1.sammen.receipts", "{other:?}");
        }
    }
}
