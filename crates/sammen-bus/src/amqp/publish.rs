//! Publishing: message → AMQP properties, the in-flight window, and each confirm's outcome.

use super::{amqp_err, AmqpBus};
use crate::bus::{PendingConfirm, PublishOutcome};
use crate::error::{BusError, InvalidMessage};
use crate::message::{BusMessage, HEADER_EVENT, HEADER_RESEND, HEADER_SENDER, HEADER_SHA256};
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Confirmation};

/// AMQP persistent delivery mode.
const PERSISTENT: u8 = 2;

fn short(field: &'static str, s: &str) -> Result<ShortString, InvalidMessage> {
    ShortString::try_new(s).map_err(|_| InvalidMessage::Length { field })
}

/// Properties and headers of a (validated) message; `reply_to`: the publishing node's receipts queue.
pub(crate) fn properties(
    msg: &BusMessage,
    reply_to: Option<&str>,
) -> Result<BasicProperties, InvalidMessage> {
    let mut h = FieldTable::default();
    let s = |v: &str| AMQPValue::LongString(LongString::from(v));
    h.insert(HEADER_SENDER.into(), s(&msg.sender_gln));
    h.insert(HEADER_EVENT.into(), s(&msg.event));
    h.insert(HEADER_SHA256.into(), s(&msg.sha256));
    h.insert(HEADER_RESEND.into(), AMQPValue::Boolean(msg.resend));
    // An over-long name is a configuration error the link's declare already refuses (it never comes
    // up); it must not make the message itself invalid, which would mark it dead.
    let props = match reply_to.and_then(|q| ShortString::try_new(q).ok()) {
        Some(q) => BasicProperties::default().with_reply_to(q),
        None => BasicProperties::default(),
    };
    Ok(props
        .with_message_id(short("message_id", &msg.message_id)?)
        .with_content_type(short("content_type", &msg.content_type)?)
        .with_type(ShortString::from(msg.family.as_str()))
        .with_timestamp(msg.timestamp)
        .with_delivery_mode(PERSISTENT)
        .with_headers(h))
}

pub(crate) async fn publish(bus: &AmqpBus, msg: &BusMessage) -> Result<PendingConfirm, BusError> {
    let shared = &bus.shared;
    let cfg = &shared.config;
    let key = msg.routing_key()?;
    let props = properties(msg, cfg.reply_to.as_deref())?;
    let exchange = short("route_exchange", &cfg.topology.route_exchange)?;
    let key = short("routing_key", &key)?;

    // The window slot is held until the confirm resolves, so at most `window` are unconfirmed.
    let permit = match tokio::time::timeout(
        cfg.confirm_timeout,
        shared.window.clone().acquire_owned(),
    )
    .await
    {
        Ok(Ok(p)) => p,
        Ok(Err(_)) => return Err(BusError::Closed),
        Err(_) => {
            return Err(BusError::Timeout {
                op: "in-flight window",
                after: cfg.confirm_timeout,
            })
        }
    };
    let link = bus.link().await?;
    let opts = BasicPublishOptions {
        mandatory: true,
        immediate: false,
    };
    let sent = tokio::time::timeout(
        cfg.op_timeout,
        link.channel
            .basic_publish(exchange, key, opts, &msg.body, props),
    )
    .await;
    let confirm = match sent {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            link.lost.cancel();
            return Err(amqp_err("basic.publish", e));
        }
        Err(_) => {
            link.lost.cancel();
            return Err(BusError::Timeout {
                op: "basic.publish",
                after: cfg.op_timeout,
            });
        }
    };
    let deadline = tokio::time::Instant::now() + cfg.confirm_timeout;
    // Resolved in its own task: the window slot frees when the broker answers, whether or not the
    // caller polls the PendingConfirm yet (a caller may pipeline more than `window` messages).
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let outcome = tokio::select! {
            biased;
            r = confirm => match r {
                Ok(Confirmation::Ack(None)) => PublishOutcome::Confirmed,
                Ok(Confirmation::Ack(Some(ret)) | Confirmation::Nack(Some(ret))) => PublishOutcome::Returned {
                    reply_code: ret.reply_code,
                    reply_text: ret.reply_text.to_string(),
                },
                Ok(Confirmation::Nack(None)) => PublishOutcome::Nacked,
                // Confirms are always selected on our channel; anything else means it broke.
                Ok(Confirmation::NotRequested) | Err(_) => {
                    link.lost.cancel();
                    PublishOutcome::ConnectionLost
                }
            },
            _ = link.lost.cancelled() => PublishOutcome::ConnectionLost,
            _ = tokio::time::sleep_until(deadline) => {
                // A confirm that never comes means a stuck channel (lapin #245): rebuild the link.
                link.lost.cancel();
                PublishOutcome::TimedOut
            }
        };
        drop(permit);
        let _ = tx.send(outcome);
    });
    Ok(PendingConfirm::new(async move {
        rx.await.unwrap_or(PublishOutcome::ConnectionLost)
    }))
}
