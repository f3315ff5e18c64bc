//! The raw-lapin baseline: persistent publishes with publisher confirms and a fixed window to a durable
//! quorum queue, no `Bus` in between. Benchmarks (`benches/publish.rs`, `sammen bench --baseline`) run it in
//! the same run as what they measure and report ratios against it, because this machine's absolute rates
//! swing by 2x between runs.

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Receiver GLN used for the routed variant's binding and routing key.
const GLN: &str = "5790001348120";

/// Why a baseline run failed.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// Connection, declare or publish failed.
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker answered a publish with something other than a plain ack.
    #[error("publish not confirmed: {0}")]
    NotConfirmed(String),
    /// Nothing to publish.
    #[error("no payloads")]
    NoPayloads,
}

/// What one run measured.
#[derive(Debug, Clone, Copy)]
pub struct BaselineRun {
    /// Messages published and confirmed.
    pub messages: usize,
    /// Wall time from the first publish to the last confirm.
    pub elapsed: Duration,
    /// Bytes published.
    pub bytes: u64,
}

impl BaselineRun {
    /// Confirmed messages per second.
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Publish `n` messages (cycling through `payloads`) to a fresh durable quorum queue `queue`, persistent,
/// with at most `window` unconfirmed; the queue (and exchange) are deleted afterwards.
/// `routed`: publish what the `Bus` publishes (topic exchange, mandatory, same properties and headers),
/// to separate client overhead from broker-side routing cost.
pub async fn raw_publish(
    url: &str,
    queue: &str,
    routed: bool,
    n: usize,
    window: usize,
    payloads: &[Vec<u8>],
) -> Result<BaselineRun, BaselineError> {
    if payloads.is_empty() {
        return Err(BaselineError::NoPayloads);
    }
    let window = window.max(1);
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let mut props = BasicProperties::default().with_delivery_mode(2);
    let (mut exchange, mut key) = (String::new(), queue.to_string());
    let mut opts = BasicPublishOptions::default();
    if routed {
        exchange = format!("{queue}-x");
        ch.exchange_declare(
            exchange.as_str().into(),
            lapin::ExchangeKind::Topic,
            Default::default(),
            FieldTable::default(),
        )
        .await?;
        ch.queue_bind(
            queue.into(),
            exchange.as_str().into(),
            format!("{GLN}.#").into(),
            Default::default(),
            FieldTable::default(),
        )
        .await?;
        key = format!("{GLN}.HospitalNotification.admit-inpatient");
        opts.mandatory = true;
        let mut h = FieldTable::default();
        for k in ["sammen-sender-gln", "sammen-event", "sammen-sha256"] {
            h.insert(
                k.into(),
                AMQPValue::LongString(LongString::from("x".repeat(13))),
            );
        }
        h.insert("sammen-resend".into(), AMQPValue::Boolean(false));
        props = props
            .with_message_id("bench-000000".into())
            .with_content_type("application/fhir+xml".into())
            .with_type("HospitalNotification".into())
            .with_timestamp(1_700_000_000)
            .with_headers(h);
    }
    let check = |c: Confirmation| match c {
        Confirmation::Ack(None) => Ok(()),
        other => Err(BaselineError::NotConfirmed(format!("{other:?}"))),
    };
    let mut inflight: VecDeque<lapin::PublisherConfirm> = VecDeque::with_capacity(window);
    let mut bytes = 0u64;
    let t0 = Instant::now();
    for i in 0..n {
        if inflight.len() == window {
            if let Some(c) = inflight.pop_front() {
                check(c.await?)?;
            }
        }
        let payload = &payloads[i % payloads.len()];
        bytes += payload.len() as u64;
        let c = ch
            .basic_publish(
                exchange.as_str().into(),
                key.as_str().into(),
                opts,
                payload,
                props.clone(),
            )
            .await?;
        inflight.push_back(c);
    }
    for c in inflight {
        check(c.await?)?;
    }
    let elapsed = t0.elapsed();
    ch.queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    if routed {
        ch.exchange_delete(exchange.as_str().into(), Default::default())
            .await?;
    }
    conn.close(200, "bench done".into()).await?;
    Ok(BaselineRun {
        messages: n,
        elapsed,
        bytes,
    })
}
