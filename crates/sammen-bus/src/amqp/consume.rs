//! Subscriptions. Each has its own connection and reconnect loop, so a slow subscriber never blocks the
//! publisher (RabbitMQ flow control is per connection) and a dead consumer stream is noticed by polling
//! the connection status (lapin #389) rather than by waiting for a message that never comes.

use super::{connection_properties, with_timeout, Shared};
use crate::bus::{Delivery, Settle, Subscription};
use crate::error::BusError;
use crate::message::{
    BusMessage, HEADER_DELIVERY_COUNT, HEADER_EVENT, HEADER_RESEND, HEADER_SENDER, HEADER_SHA256,
};
use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::Acker;
use lapin::{Connection, Consumer};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

const STATUS_POLL: Duration = Duration::from_millis(250);

struct Open {
    conn: Connection,
    consumer: Consumer,
}

async fn open(shared: &Shared, queue: &str, prefetch: u16) -> Result<Open, BusError> {
    let c = &shared.config;
    let conn = super::connect::connect(
        &c.url,
        connection_properties(&format!("{}-consumer", c.connection_name)),
        c.connect_timeout,
    )
    .await?;
    let r = async {
        let ch = with_timeout("channel.open", c.op_timeout, conn.create_channel()).await?;
        with_timeout(
            "basic.qos",
            c.op_timeout,
            ch.basic_qos(prefetch.max(1), BasicQosOptions::default()),
        )
        .await?;
        let q = ShortString::try_new(queue).map_err(|_| BusError::TopologyMismatch {
            name: queue.to_string(),
            reason: "queue name longer than 255 bytes".into(),
        })?;
        with_timeout(
            "basic.consume",
            c.op_timeout,
            ch.basic_consume(
                q,
                ShortString::from(""),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
    }
    .await;
    match r {
        Ok(consumer) => Ok(Open { conn, consumer }),
        Err(e) => {
            close(&conn).await;
            Err(e)
        }
    }
}

async fn close(conn: &Connection) {
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        conn.close(200, ShortString::from("sammen unsubscribing")),
    )
    .await;
}

struct Stop(CancellationToken);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

pub(crate) async fn subscribe(
    shared: Arc<Shared>,
    queue: String,
    prefetch: u16,
) -> Result<Subscription, BusError> {
    if shared.shutdown.is_cancelled() {
        return Err(BusError::Closed);
    }
    // First connection in the caller's task: a missing queue or a dead broker is an error now.
    let first = open(&shared, &queue, prefetch).await?;
    let (tx, rx) = mpsc::channel(usize::from(prefetch.max(1)));
    let stop = shared.shutdown.child_token();
    tokio::spawn(run(shared, queue, prefetch, first, tx, stop.clone()));
    Ok(Subscription {
        rx,
        _guard: Box::new(Stop(stop)),
    })
}

async fn run(
    shared: Arc<Shared>,
    queue: String,
    prefetch: u16,
    first: Open,
    tx: mpsc::Sender<Delivery>,
    stop: CancellationToken,
) {
    let mut backoff = shared.config.backoff.stream();
    let mut next = Some(first);
    loop {
        let open_now = match next.take() {
            Some(o) => Ok(o),
            None => open(&shared, &queue, prefetch).await,
        };
        match open_now {
            Ok(o) => {
                backoff.reset();
                let done = pump(&shared, o.consumer, &o.conn, &tx, &stop).await;
                close(&o.conn).await;
                if done {
                    return;
                }
                warn!(queue = %queue, "amqp: consumer lost, reconnecting");
            }
            Err(e) => warn!(queue = %queue, error = %e, "amqp: consumer connect failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Forward deliveries until the consumer breaks (`false`) or the subscription ends (`true`).
async fn pump(
    shared: &Shared,
    mut consumer: Consumer,
    conn: &Connection,
    tx: &mpsc::Sender<Delivery>,
    stop: &CancellationToken,
) -> bool {
    let mut poll = tokio::time::interval(STATUS_POLL);
    let t = shared.config.op_timeout;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return true,
            _ = poll.tick() => if !conn.status().connected() { return false },
            d = consumer.next() => match d {
                Some(Ok(d)) => match decode(&d) {
                    Ok(message) => {
                        let delivery = Delivery {
                            message,
                            routing_key: d.routing_key.to_string(),
                            redelivered: d.redelivered,
                            delivery_count: delivery_count(d.properties.headers().as_ref()),
                            reply_to: d.properties.reply_to().as_ref().map(|q| q.to_string()),
                            settle: Settle::Amqp(d.acker, t),
                        };
                        tokio::select! {
                            r = tx.send(delivery) => if r.is_err() { return true },
                            _ = stop.cancelled() => return true,
                        }
                    }
                    Err(why) => {
                        // Nobody could process it: dead-letter it rather than loop on it.
                        warn!(reason = why, "amqp: undecodable delivery, dead-lettering");
                        let _ = nack(&d.acker, false, t).await;
                    }
                },
                Some(Err(_)) | None => return false,
            },
        }
    }
}

fn header_str(h: &FieldTable, k: &str) -> Option<String> {
    match h.inner().get(k)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

fn as_u64(v: &AMQPValue) -> Option<u64> {
    match v {
        AMQPValue::ShortShortInt(i) => u64::try_from(*i).ok(),
        AMQPValue::ShortShortUInt(i) => Some(u64::from(*i)),
        AMQPValue::ShortInt(i) => u64::try_from(*i).ok(),
        AMQPValue::ShortUInt(i) => Some(u64::from(*i)),
        AMQPValue::LongInt(i) => u64::try_from(*i).ok(),
        AMQPValue::LongUInt(i) => Some(u64::from(*i)),
        AMQPValue::LongLongInt(i) => u64::try_from(*i).ok(),
        AMQPValue::Timestamp(i) => Some(*i),
        _ => None,
    }
}

fn delivery_count(h: Option<&FieldTable>) -> u32 {
    h.and_then(|h| h.inner().get(HEADER_DELIVERY_COUNT))
        .and_then(as_u64)
        .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

fn decode(d: &lapin::message::Delivery) -> Result<BusMessage, &'static str> {
    let p = &d.properties;
    let h = p.headers().as_ref().ok_or("no headers")?;
    let family = p
        .kind()
        .as_ref()
        .ok_or("no type")?
        .as_str()
        .parse()
        .map_err(|_| "unknown family in type")?;
    let receiver_gln = d
        .routing_key
        .as_str()
        .split('.')
        .next()
        .unwrap_or_default()
        .to_string();
    let resend = matches!(h.inner().get(HEADER_RESEND), Some(AMQPValue::Boolean(true)));
    Ok(BusMessage {
        message_id: p.message_id().as_ref().ok_or("no message_id")?.to_string(),
        receiver_gln,
        sender_gln: header_str(h, HEADER_SENDER).ok_or("no sender header")?,
        family,
        event: header_str(h, HEADER_EVENT).ok_or("no event header")?,
        content_type: p
            .content_type()
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        timestamp: p.timestamp().unwrap_or(0),
        sha256: header_str(h, HEADER_SHA256).ok_or("no sha256 header")?,
        resend,
        body: bytes::Bytes::copy_from_slice(&d.data),
    })
}

pub(crate) async fn ack(acker: &Acker, t: Duration) -> Result<(), BusError> {
    settled(tokio::time::timeout(t, acker.ack(BasicAckOptions::default())).await)
}

pub(crate) async fn nack(acker: &Acker, requeue: bool, t: Duration) -> Result<(), BusError> {
    let opts = BasicNackOptions {
        requeue,
        multiple: false,
    };
    settled(tokio::time::timeout(t, acker.nack(opts)).await)
}

fn settled(r: Result<lapin::Result<bool>, tokio::time::error::Elapsed>) -> Result<(), BusError> {
    match r {
        Ok(Ok(true)) => Ok(()),
        // Already settled, channel gone, or no answer: the broker redelivers what it did not get.
        _ => Err(BusError::StaleDelivery),
    }
}
