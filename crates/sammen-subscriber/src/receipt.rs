//! Where delivery receipts go: RabbitMQ's receipts queues, or an in-process channel.

use crate::SubscriberError;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use sammen_bus::receipts::{
    is_node_queue, receipts_queue_arguments, DeliveryReceipt, RECEIPTS_EXCHANGE,
    RECEIPT_CONTENT_TYPE, RECEIPT_TYPE,
};
use std::time::Duration;
use tokio::sync::{mpsc, Mutex};
use tracing::warn;

/// Receives a [`DeliveryReceipt`] once a message is durable on the subscriber's side (before its ack).
#[async_trait::async_trait]
pub trait ReceiptSink: Send + Sync {
    /// Hand over one receipt; `Ok` once the other side holds it.
    async fn send(&self, receipt: &DeliveryReceipt) -> Result<(), SubscriberError>;

    /// Hand over the receipt for a delivery whose AMQP `reply_to` was `reply_to` (the publishing node's
    /// receipts queue). Sinks that do not route by it (in-process ones) just [`ReceiptSink::send`].
    async fn send_reply(
        &self,
        receipt: &DeliveryReceipt,
        reply_to: Option<&str>,
    ) -> Result<(), SubscriberError> {
        let _ = reply_to;
        self.send(receipt).await
    }
}

/// Receipts into a Tokio channel: for a subscriber running inside `sammen serve` with the embedded bus.
#[derive(Debug, Clone)]
pub struct ChannelReceiptSink(pub mpsc::UnboundedSender<DeliveryReceipt>);

#[async_trait::async_trait]
impl ReceiptSink for ChannelReceiptSink {
    async fn send(&self, receipt: &DeliveryReceipt) -> Result<(), SubscriberError> {
        self.0
            .send(receipt.clone())
            .map_err(|_| SubscriberError::Receipt("receipt channel closed".into()))
    }
}

struct Link {
    conn: Connection,
    channel: Channel,
}

/// Receipts to RabbitMQ: its own connection (not the consumer's, so flow control on one never stalls the
/// other), the shared receipts queue declared idempotently, persistent publishes with publisher confirms
/// and a timeout on each. A receipt goes to the delivery's `reply_to` when that is a node receipts queue
/// of the topology ([`sammen_bus::receipts::reply_queue`]; so it reaches the node holding the message),
/// otherwise, or when that queue is gone (the publish comes back), to the shared queue. After any failure
/// the connection is dropped and rebuilt on the next receipt (one retry per call); no reliance on lapin's
/// recovery.
pub struct AmqpReceiptSink {
    url: String,
    queue: String,
    timeout: Duration,
    link: Mutex<Option<Link>>,
}

impl std::fmt::Debug for AmqpReceiptSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpReceiptSink")
            .field("queue", &self.queue)
            .finish()
    }
}

fn amqp(op: &str, e: impl std::fmt::Display) -> SubscriberError {
    SubscriberError::Receipt(format!("{op}: {e}"))
}

async fn timed<T, E: std::fmt::Display>(
    op: &str,
    t: Duration,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, SubscriberError> {
    match tokio::time::timeout(t, f).await {
        Ok(r) => r.map_err(|e| amqp(op, e)),
        Err(_) => Err(amqp(op, format!("no answer within {t:?}"))),
    }
}

impl AmqpReceiptSink {
    /// Receipts to `queue` (see [`sammen_bus::receipts::receipts_queue`]) on the broker at `url`. Connects
    /// lazily.
    pub fn new(url: impl Into<String>, queue: impl Into<String>) -> Self {
        AmqpReceiptSink {
            url: url.into(),
            queue: queue.into(),
            timeout: Duration::from_secs(10),
            link: Mutex::new(None),
        }
    }

    async fn connect(&self) -> Result<Link, SubscriberError> {
        let t = self.timeout;
        // sammen_bus::amqp_connect: a timed-out handshake leaves no lapin thread or socket behind.
        let conn = sammen_bus::amqp_connect(
            &self.url,
            ConnectionProperties::default()
                .with_connection_name(LongString::from("sammen-subscriber-receipts")),
            t,
        )
        .await
        .map_err(|e| amqp("connect", e))?;
        let channel = timed("channel.open", t, conn.create_channel()).await?;
        let mut args = FieldTable::default();
        for (k, v) in receipts_queue_arguments() {
            args.insert(
                ShortString::from(k),
                AMQPValue::LongString(LongString::from(v)),
            );
        }
        let queue = ShortString::try_new(self.queue.as_str())
            .map_err(|_| amqp("queue.declare", "queue name longer than 255 bytes"))?;
        let opts = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        timed("queue.declare", t, channel.queue_declare(queue, opts, args)).await?;
        timed(
            "confirm.select",
            t,
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        Ok(Link { conn, channel })
    }

    /// Publish to the node queue `reply_to` names (checked), falling back to the shared queue.
    async fn publish_reply(
        &self,
        link: &Link,
        r: &DeliveryReceipt,
        reply_to: Option<&str>,
    ) -> Result<(), SubscriberError> {
        if let Some(q) = reply_to.filter(|q| is_node_queue(&self.queue, q)) {
            if !self.publish_to(link, q, r).await? {
                return Ok(());
            }
            // The node's queue was deleted (node retired): the shared queue is the best left.
            warn!(message_id = %r.message_id, queue = %q, "receipt: reply_to queue gone, using the shared queue");
        }
        if self.publish_to(link, &self.queue, r).await? {
            return Err(amqp("publish", "receipt returned (no queue)"));
        }
        Ok(())
    }

    /// Publish and await the confirm; `Ok(true)` when it came back unroutable.
    async fn publish_to(
        &self,
        link: &Link,
        queue: &str,
        r: &DeliveryReceipt,
    ) -> Result<bool, SubscriberError> {
        let t = self.timeout;
        let props = BasicProperties::default()
            .with_content_type(ShortString::from(RECEIPT_CONTENT_TYPE))
            .with_type(ShortString::from(RECEIPT_TYPE))
            .with_delivery_mode(2)
            .with_message_id(
                ShortString::try_new(r.message_id.as_str())
                    .map_err(|_| amqp("publish", "message id longer than 255 bytes"))?,
            );
        let queue = ShortString::try_new(queue)
            .map_err(|_| amqp("publish", "queue name longer than 255 bytes"))?;
        let body = r.to_json();
        let confirm = timed(
            "basic.publish",
            t,
            link.channel.basic_publish(
                ShortString::from(RECEIPTS_EXCHANGE),
                queue,
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &body,
                props,
            ),
        )
        .await?;
        match timed("confirm", t, confirm).await? {
            Confirmation::Ack(None) => Ok(false),
            Confirmation::Ack(Some(_)) => Ok(true),
            other => Err(amqp("publish", format!("not confirmed: {other:?}"))),
        }
    }
}

#[async_trait::async_trait]
impl ReceiptSink for AmqpReceiptSink {
    async fn send(&self, receipt: &DeliveryReceipt) -> Result<(), SubscriberError> {
        self.send_reply(receipt, None).await
    }

    async fn send_reply(
        &self,
        receipt: &DeliveryReceipt,
        reply_to: Option<&str>,
    ) -> Result<(), SubscriberError> {
        let mut slot = self.link.lock().await;
        let mut last = None;
        for _attempt in 0..2 {
            if slot.is_none() {
                match self.connect().await {
                    Ok(l) => *slot = Some(l),
                    Err(e) => {
                        last = Some(e);
                        continue;
                    }
                }
            }
            if let Some(link) = slot.as_ref() {
                match self.publish_reply(link, receipt, reply_to).await {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        if let Some(l) = slot.take() {
                            let _ = tokio::time::timeout(
                                Duration::from_secs(2),
                                l.conn.close(200, ShortString::from("receipt failed")),
                            )
                            .await;
                        }
                        last = Some(e);
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| amqp("publish", "failed")))
    }
}
