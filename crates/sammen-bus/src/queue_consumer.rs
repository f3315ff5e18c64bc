//! One connection consuming one durable quorum queue, for the broker's own side queues (`sammen.ingress`,
//! `sammen.receipts`): connect, declare, set the prefetch, consume, and notice a lost connection even when
//! no delivery arrives. The callers keep their own reconnect loop and their own ack/nack decisions.
//!
//! A delivery this consumer cannot use but another may (a receipt for another node's message) goes back
//! with [`QueueConsumer::requeue_at_back`], not with `nack` + requeue: RabbitMQ 3.10's quorum queues hand
//! a returned message to the head of the queue and, with credit to spare, to the same consumer again, so
//! two nodes each bounced the other's receipts to themselves for seconds until they gave up on them
//! (test `receipts_nodes`: 8 of 20 receipts per node dropped, 242 returns each).

use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer};
use std::time::Duration;

use crate::topology::{ARG_QUEUE_TYPE, QUEUE_TYPE_QUORUM};

/// Longest wait for one AMQP operation.
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// `f` within [`OP_TIMEOUT`], its error as text naming `what`.
pub async fn timed<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, lapin::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(OP_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {OP_TIMEOUT:?}")),
    }
}

/// A consumer on one durable quorum queue over its own connection.
pub struct QueueConsumer {
    conn: Connection,
    channel: Channel,
    queue: ShortString,
    consumer: Consumer,
    poll: tokio::time::Interval,
}

impl QueueConsumer {
    /// Connect to `url` and consume `queue` (declared durable, `x-queue-type = quorum`) with `prefetch`
    /// unacked deliveries at most, as consumer `tag`. The connection is closed again when a step fails.
    pub async fn open(url: &str, queue: &str, prefetch: u16, tag: &str) -> Result<Self, String> {
        let conn = crate::amqp_connect(url, ConnectionProperties::default(), OP_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        let r = async {
            let ch = timed("channel", conn.create_channel()).await?;
            let mut args = FieldTable::default();
            args.insert(
                ARG_QUEUE_TYPE.into(),
                AMQPValue::LongString(LongString::from(QUEUE_TYPE_QUORUM)),
            );
            let opts = QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            };
            timed("queue.declare", ch.queue_declare(queue.into(), opts, args)).await?;
            timed(
                "basic.qos",
                ch.basic_qos(prefetch.max(1), BasicQosOptions::default()),
            )
            .await?;
            // Confirms for requeue_at_back (they concern publishes only).
            timed(
                "confirm.select",
                ch.confirm_select(ConfirmSelectOptions::default()),
            )
            .await?;
            let consumer = timed(
                "basic.consume",
                ch.basic_consume(
                    queue.into(),
                    ShortString::from(tag),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await?;
            Ok((ch, consumer))
        }
        .await;
        match r {
            Ok((channel, consumer)) => Ok(QueueConsumer {
                conn,
                channel,
                queue: ShortString::from(queue),
                consumer,
                poll: tokio::time::interval(Duration::from_millis(500)),
            }),
            Err(e) => {
                close(&conn, "sammen consumer failed").await;
                Err(e)
            }
        }
    }

    /// The next delivery; an error once the consumer or its connection is gone (reconnect then).
    pub async fn next(&mut self) -> Result<Delivery, String> {
        loop {
            tokio::select! {
                _ = self.poll.tick() => if !self.conn.status().connected() {
                    return Err("connection lost".to_string());
                },
                d = self.consumer.next() => return match d {
                    Some(Ok(d)) => Ok(d),
                    Some(Err(e)) => Err(format!("consumer: {e}")),
                    None => Err("consumer ended".into()),
                },
            }
        }
    }

    /// The next delivery if it has already arrived, without waiting (`None` when none has): for taking
    /// what arrived together as one group. An error as in [`Self::next`].
    pub async fn try_next(&mut self) -> Option<Result<Delivery, String>> {
        match futures_lite::future::poll_once(self.consumer.next()).await? {
            Some(Ok(d)) => Some(Ok(d)),
            Some(Err(e)) => Some(Err(format!("consumer: {e}"))),
            None => Some(Err("consumer ended".into())),
        }
    }

    /// Publish `body` with `props` to the back of this queue (default exchange, persistent, mandatory) and
    /// wait for the broker's confirm. The caller acks the delivery it came from afterwards: a crash in
    /// between leaves a copy, never a loss. See the module docs for why not `nack` + requeue.
    pub async fn requeue_at_back(&self, body: &[u8], props: BasicProperties) -> Result<(), String> {
        let confirm = timed(
            "basic.publish",
            self.channel.basic_publish(
                ShortString::from(""),
                self.queue.clone(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                props.with_delivery_mode(2),
            ),
        )
        .await?;
        match timed("publisher confirm", confirm).await? {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => Err(format!("requeue: {} is gone", self.queue)),
            Confirmation::Nack(_) => Err(format!("requeue: {} refused the message", self.queue)),
            Confirmation::NotRequested => Err("requeue: confirms not enabled".into()),
        }
    }

    /// Close the connection (at most 2 s); unacked deliveries return to the queue.
    pub async fn close(self, why: &str) {
        close(&self.conn, why).await;
    }
}

async fn close(conn: &Connection, why: &str) {
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        conn.close(200, ShortString::from(why.to_string())),
    )
    .await;
}
