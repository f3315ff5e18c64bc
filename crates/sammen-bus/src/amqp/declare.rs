//! Idempotent topology declaration. Runs on a throw-away channel: a PRECONDITION_FAILED reply closes the
//! channel it happened on, and that must never be the publishing channel.

use super::{amqp_err, with_timeout};
use crate::error::BusError;
use crate::topology::{ArgValue, Topology, DEAD_EXCHANGE_TYPE, ROUTE_EXCHANGE_TYPE};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ExchangeKind};
use std::time::Duration;

pub(crate) fn field_table(args: Vec<(&'static str, ArgValue)>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in args {
        let v = match v {
            ArgValue::Str(s) => AMQPValue::LongString(LongString::from(s)),
            ArgValue::String(s) => AMQPValue::LongString(LongString::from(s)),
            ArgValue::Int(i) => AMQPValue::LongLongInt(i),
        };
        t.insert(ShortString::from(k), v);
    }
    t
}

fn kind(name: &str) -> ExchangeKind {
    match name {
        "topic" => ExchangeKind::Topic,
        "fanout" => ExchangeKind::Fanout,
        "direct" => ExchangeKind::Direct,
        other => ExchangeKind::Custom(other.to_string()),
    }
}

fn short(name: &str, what: &str) -> Result<ShortString, BusError> {
    ShortString::try_new(name).map_err(|_| BusError::TopologyMismatch {
        name: what.to_string(),
        reason: "name longer than 255 bytes".into(),
    })
}

async fn open(conn: &Connection, t: Duration) -> Result<Channel, BusError> {
    with_timeout("channel.open", t, conn.create_channel()).await
}

/// Exchanges, the dead-letter queue and its binding.
pub(crate) async fn declare_base(
    conn: &Connection,
    topo: &Topology,
    t: Duration,
) -> Result<(), BusError> {
    let ch = open(conn, t).await?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for (name, ty) in [
        (&topo.route_exchange, ROUTE_EXCHANGE_TYPE),
        (&topo.dead_exchange, DEAD_EXCHANGE_TYPE),
    ] {
        let r = ch
            .exchange_declare(short(name, name)?, kind(ty), durable, FieldTable::default())
            .await;
        check(name, r)?;
    }
    declare_queue(&ch, &topo.dead_queue, topo.dead_queue_arguments()).await?;
    let r = ch
        .queue_bind(
            short(&topo.dead_queue, &topo.dead_queue)?,
            short(&topo.dead_exchange, &topo.dead_exchange)?,
            ShortString::from(""),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await;
    check(&topo.dead_queue, r)?;
    close(ch).await;
    Ok(())
}

/// A receipts queue (durable quorum, [`crate::receipts::receipts_queue_arguments`]).
pub(crate) async fn declare_receipts(
    conn: &Connection,
    queue: &str,
    t: Duration,
) -> Result<(), BusError> {
    let ch = open(conn, t).await?;
    let args = crate::receipts::receipts_queue_arguments()
        .into_iter()
        .map(|(k, v)| (k, ArgValue::Str(v)))
        .collect();
    let r = tokio::time::timeout(t, declare_queue(&ch, queue, args)).await;
    close(ch).await;
    match r {
        Ok(r) => r,
        Err(_) => Err(BusError::Timeout {
            op: "queue.declare",
            after: t,
        }),
    }
}

/// A receiver's inbox and its binding (the GLN is validated by the caller).
pub(crate) async fn declare_receiver(
    conn: &Connection,
    topo: &Topology,
    gln: &str,
    t: Duration,
) -> Result<(), BusError> {
    let ch = open(conn, t).await?;
    let q = topo.inbox_queue(gln);
    let work = async {
        declare_queue(&ch, &q, topo.inbox_arguments()).await?;
        let r = ch
            .queue_bind(
                short(&q, &q)?,
                short(&topo.route_exchange, &topo.route_exchange)?,
                short(&Topology::binding_key(gln), &q)?,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await;
        check(&q, r)
    };
    let r = tokio::time::timeout(t, work).await;
    close(ch).await;
    match r {
        Ok(r) => r,
        Err(_) => Err(BusError::Timeout {
            op: "queue.declare",
            after: t,
        }),
    }
}

async fn declare_queue(
    ch: &Channel,
    name: &str,
    args: Vec<(&'static str, ArgValue)>,
) -> Result<(), BusError> {
    let opts = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let r = ch
        .queue_declare(short(name, name)?, opts, field_table(args))
        .await;
    check(name, r.map(|_| ()))
}

/// Turn PRECONDITION_FAILED into a typed mismatch; everything else is a connection problem.
fn check<T>(name: &str, r: lapin::Result<T>) -> Result<T, BusError> {
    r.map_err(|e| {
        if let lapin::ErrorKind::ProtocolError(p) = e.kind() {
            if p.get_id() == 406 {
                return BusError::TopologyMismatch {
                    name: name.to_string(),
                    reason: p.get_message().to_string(),
                };
            }
        }
        amqp_err("declare", e)
    })
}

async fn close(ch: Channel) {
    // Best effort: the channel may already be closed by the broker.
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        ch.close(200, ShortString::from("declared")),
    )
    .await;
}
