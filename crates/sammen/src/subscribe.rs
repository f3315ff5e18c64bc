//! `sammen subscribe`: the reference municipal subscriber (crate `sammen-subscriber`) on the configured bus.
//!
//! RabbitMQ (`--amqp-url` or `bus.kind = "amqp"`): consumes `sammen.inbox.<gln>` and publishes a delivery
//! receipt per message to the receipts queue, which `sammen serve`'s relay turns into `delivered`.
//! Embedded bus: opens the data dir's store itself (the embedded queues live next to the outbox), so it
//! runs while `sammen serve` is stopped (the store is locked by one process at a time); receipts are then
//! applied to the outbox directly.

use crate::serve;
use anyhow::{Context, Result};
use sammen_bus::receipts::{receipts_queue, DeliveryReceipt};
use sammen_bus::{AmqpBus, AmqpConfig, Bus, EmbeddedBus};
use sammen_bus_store::StoreQueueStore;
use sammen_config::{BusKind, Config};
use sammen_outbox::{Outbox, OutboxConfig};
use sammen_relay::SharedOutbox;
use sammen_subscriber::{AmqpReceiptSink, ReceiptSink, Stats, Subscriber, SubscriberError};
use std::path::Path;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Receipts applied straight to the local outbox (embedded bus, same data dir).
struct OutboxReceipts(SharedOutbox);

#[async_trait::async_trait]
impl ReceiptSink for OutboxReceipts {
    async fn send(&self, r: &DeliveryReceipt) -> Result<(), SubscriberError> {
        sammen_relay::receipts::apply(&self.0, r)
            .await
            .map(|_| ())
            .map_err(|e| SubscriberError::Receipt(e.to_string()))
    }
}

/// Consume `receiver`'s inbox into `out` until ctrl-c / SIGTERM; prints the counts on exit.
pub async fn run(cfg: Config, receiver: &str, out: &Path) -> Result<Stats> {
    let topo = serve::topology(&cfg);
    let config = sammen_subscriber::Config::new(receiver, out);
    let (bus, sink): (Arc<dyn Bus>, Arc<dyn ReceiptSink>) = match cfg.bus.kind {
        BusKind::Amqp => {
            let url = cfg
                .bus
                .url
                .clone()
                .context("bus.url: required when bus.kind = \"amqp\"")?;
            let mut ac = AmqpConfig::new(url.clone());
            ac.topology = topo.clone();
            ac.receivers = vec![receiver.to_string()];
            ac.connection_name = format!("sammen-subscribe-{receiver}");
            let sink = Arc::new(AmqpReceiptSink::new(url, receipts_queue(&topo)));
            (Arc::new(AmqpBus::start(ac)), sink)
        }
        BusKind::Embedded => {
            let store = serve::open_store(&cfg)
                .context("opening the data dir (is `sammen serve` running on it?)")?;
            let outbox: SharedOutbox = Arc::new(Outbox::open(
                store.clone(),
                OutboxConfig {
                    max_attempts: cfg.limits.max_attempts,
                    ttl: cfg.limits.message_ttl,
                },
            )?);
            let qs = StoreQueueStore::new(store).context("opening embedded bus queues")?;
            let bus = EmbeddedBus::open(topo.clone(), Arc::new(qs))?;
            (Arc::new(bus), Arc::new(OutboxReceipts(outbox)))
        }
    };
    let sub = Subscriber::new(config)?.with_receipts(sink);
    let stop = CancellationToken::new();
    let on_signal = {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            stop.cancel();
        })
    };
    eprintln!(
        "sammen subscribe: {receiver} → {} ({:?} bus); ctrl-c to stop",
        out.display(),
        cfg.bus.kind
    );
    let r = sub.run(&*bus, stop).await;
    on_signal.abort();
    bus.close().await;
    let s = sub.stats();
    println!(
        "written {} duplicates_dropped {} (conflicting {}) refused {} write_failures {} receipt_failures {}",
        s.written, s.duplicates, s.conflicts, s.refused, s.write_failures, s.receipt_failures
    );
    r?;
    Ok(s)
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
