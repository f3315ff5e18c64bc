//! `sammen serve`: store, outbox, bus, relay and ingress wired together, with graceful shutdown.

use anyhow::{bail, Context, Result};
use sammen_bus::receipts::node_receipts_queue;
use sammen_bus::{AmqpBus, AmqpConfig, Bus, EmbeddedBus, Topology};
use sammen_bus_store::StoreQueueStore;
use sammen_config::{BusKind, Config, StoreBackend};
use sammen_ingress::{Ingress, IngressConfig, Receivers};
use sammen_outbox::{Outbox, OutboxConfig};
use sammen_relay::{receipts, run_retention, Relay, RelayConfig, SharedOutbox};
use sammen_store::{FjallStore, SledStore, Store};
use sammen_telemetry::SharedTelemetry;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Open the outbox's store (also holding the embedded bus's trees).
pub fn open_store(cfg: &Config) -> Result<Arc<dyn Store>> {
    let dir = cfg.outbox_dir();
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating data dir {}", dir.display()))?;
    let mut trees: Vec<&'static str> = crate::audit::store_trees(cfg).to_vec();
    trees.extend(sammen_bus_store::TREES);
    let store: Arc<dyn Store> = match cfg.store.backend {
        StoreBackend::Fjall => Arc::new(
            FjallStore::open(&dir, &trees)
                .with_context(|| format!("opening fjall store in {}", dir.display()))?,
        ),
        StoreBackend::Sled => Arc::new(
            SledStore::open(&dir, &trees)
                .with_context(|| format!("opening sled store in {}", dir.display()))?,
        ),
    };
    Ok(store)
}

/// The topology named by the config.
pub fn topology(cfg: &Config) -> Topology {
    if cfg.bus.namespace.is_empty() {
        Topology::default()
    } else {
        Topology::namespaced(&cfg.bus.namespace)
    }
}

/// File in the data dir holding the generated node name (`[bus] node` unset).
const NODE_FILE: &str = "node-id";

/// This node's name (its receipts queue is `sammen.receipts.<node>`): `[bus] node`, or an id generated
/// on the first start and kept in the data dir, so receipts for messages published before a restart
/// still find their queue.
pub fn node_name(cfg: &Config) -> Result<String> {
    if let Some(n) = &cfg.bus.node {
        return Ok(n.clone());
    }
    let path = cfg.data_dir.join(NODE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let n = s.trim().to_string();
            sammen_bus::receipts::check_node_name(&n)
                .with_context(|| format!("{}: not a node name", path.display()))?;
            return Ok(n);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let n = format!("node-{:016x}", fastrand::u64(..));
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
    // Durable before any message is published with it as reply_to.
    let tmp = cfg.data_dir.join(format!("{NODE_FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, format!("{n}\n").as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&cfg.data_dir)?.sync_all()
    };
    write().with_context(|| format!("writing {}", path.display()))?;
    Ok(n)
}

/// How often gauges (outbox, bus, inboxes, audit, certificates) are sampled.
const SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Run the broker until SIGTERM or ctrl-c.
pub async fn serve(cfg: Config, telemetry: SharedTelemetry) -> Result<()> {
    // Handlers first, before anything is announced: without one, SIGHUP's default action ends the process
    // and SIGTERM skips the drain. tokio keeps a handler installed for the rest of the process once one
    // exists; the reload task's own SIGHUP stream sees every signal after it starts (one that came earlier
    // finds the certificates just loaded anyway).
    #[cfg(unix)]
    let (_hup, term) = (
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok(),
    );
    #[cfg(not(unix))]
    let term = None;
    let store = open_store(&cfg)?;
    let outbox_cfg = OutboxConfig {
        max_attempts: cfg.limits.max_attempts,
        ttl: cfg.limits.message_ttl,
    };
    // Refuses to start on a rolled-back or altered audit log.
    let audit_log = crate::audit::open_for_serve(&cfg, store.clone())?;
    let observer = crate::telemetry::OutboxObserver::new(telemetry.clone(), cfg.limits.message_ttl);
    // Receivers the broker acknowledges for (`[[receiver]] auto_acknowledge`, which requires a SOR code).
    let (ack_observer, ack_queue) = sammen_relay::ack_channel(
        cfg.receivers
            .iter()
            .filter(|r| r.auto_acknowledge)
            .filter_map(|r| r.sor.clone().map(|sor| (r.gln.clone(), sor))),
    );
    let outbox: SharedOutbox = Arc::new(
        match &audit_log {
            Some(log) => Outbox::open_with_audit(log.clone(), outbox_cfg)?,
            None => Outbox::open(store.clone(), outbox_cfg)?,
        }
        .with_observer(observer)
        .with_observer(ack_observer),
    );
    let topo = topology(&cfg);
    let node = match cfg.bus.kind {
        BusKind::Amqp => Some(node_name(&cfg)?),
        BusKind::Embedded => None,
    };
    let glns: Vec<String> = cfg.receivers.iter().map(|r| r.gln.clone()).collect();
    // Kept apart for the sampler: only the embedded bus can tell its inbox depths.
    let mut embedded = None;
    let bus: Arc<dyn Bus> = match cfg.bus.kind {
        BusKind::Embedded => {
            let qs = StoreQueueStore::new(store.clone()).context("opening embedded bus queues")?;
            let e = Arc::new(EmbeddedBus::open(topo.clone(), Arc::new(qs))?);
            embedded = Some(e.clone());
            e
        }
        BusKind::Amqp => {
            let Some(url) = cfg.bus.url.clone() else {
                bail!("bus.url: required when bus.kind = \"amqp\"");
            };
            let mut ac = AmqpConfig::new(url);
            ac.topology = topo.clone();
            // Receipts for what this node publishes come back to this node (several nodes, issue #6).
            ac.reply_to = match &node {
                Some(n) => Some(node_receipts_queue(&topo, n).context("bus.node")?),
                None => None,
            };
            ac.receivers = glns.clone();
            ac.window = cfg.limits.in_flight;
            ac.confirm_timeout = cfg.bus.confirm_timeout;
            ac.connection_name = "sammen-serve".into();
            Arc::new(AmqpBus::start(ac))
        }
    };
    let relay = Relay::new(
        outbox.clone(),
        bus.clone(),
        RelayConfig {
            window: cfg.limits.in_flight,
            max_returns: cfg.limits.max_returns,
            receivers: glns.clone(),
            ..RelayConfig::default()
        },
    )
    .with_telemetry(telemetry.clone());
    let receivers = Receivers::new(
        cfg.receivers
            .iter()
            .map(|r| (r.gln.as_str(), r.sor.as_deref())),
    );
    let ingress = Arc::new(
        Ingress::new(
            outbox.clone(),
            bus.clone(),
            receivers,
            IngressConfig {
                max_body: cfg.limits.max_message_bytes,
                max_depth: cfg.limits.outbox_max_depth,
                retry_after_secs: cfg.limits.retry_after_secs,
                blocking_validate_bytes: cfg.limits.blocking_validate_bytes,
                body_memory_bytes: cfg.limits.body_memory_bytes,
                ..IngressConfig::default()
            },
            relay.waker(),
        )
        .with_inbox(sammen_ingress::InboxConfig {
            max_wait: cfg.inbox.max_wait,
            visibility_timeout: cfg.inbox.visibility_timeout,
            max_unsettled: cfg.inbox.max_unsettled,
            max_batch: cfg.inbox.max_batch,
        }),
    );

    let inbox_registry = ingress.inbox().clone();
    // An inbox ack for a message another node published goes to that node's receipts queue.
    if let (BusKind::Amqp, Some(url)) = (&cfg.bus.kind, &cfg.bus.url) {
        inbox_registry.forward_receipts(Arc::new(sammen_subscriber::AmqpReceiptSink::new(
            url.clone(),
            sammen_bus::receipts::receipts_queue(&topo),
        )));
    }

    // HTTPS (dev PKI when none is configured) and/or plain HTTP on loopback when asked for.
    let front = crate::serve_tls::bind(&cfg, &telemetry).await?;
    let metrics_listener = crate::telemetry::bind_metrics(&cfg).await?;
    let stop = CancellationToken::new();
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    let metrics_task = metrics_listener.map(|l| {
        tokio::spawn(crate::telemetry::serve_metrics(
            l,
            telemetry.clone(),
            sammen_ingress::probes(ingress.clone()),
            stop.child_token(),
        ))
    });
    let sampler_task = tokio::spawn(crate::telemetry::run_sampler(
        telemetry.clone(),
        crate::telemetry::Sampled {
            outbox: outbox.clone(),
            bus: bus.clone(),
            embedded,
            amqp: match (&cfg.bus.kind, &cfg.bus.url) {
                (BusKind::Amqp, Some(url)) => {
                    Some(crate::telemetry::AmqpDepths::new(url.clone(), topo.clone()))
                }
                _ => None,
            },
            receivers: glns,
            audit: audit_log.clone(),
            identity: front.identity(),
            tls: front.tls_stats(),
        },
        SAMPLE_EVERY,
        stop.child_token(),
    ));
    let auto_ack = sammen_relay::AutoAcknowledger::new(outbox.clone(), ack_queue, relay.waker());
    let auto_ack_task = tokio::spawn(auto_ack.run(stop.child_token()));
    let relay_task = tokio::spawn(relay.run(stop.child_token()));
    let checkpoint_task = audit_log.clone().map(|log| {
        let every = cfg.audit.checkpoint_interval;
        tokio::spawn(crate::audit::run_checkpointer(
            log,
            every,
            stop.child_token(),
        ))
    });
    let retention_task = tokio::spawn(run_retention(
        outbox.clone(),
        cfg.retention.purge_interval,
        cfg.retention.payload_ttl,
        cfg.retention.metadata_ttl,
        stop.child_token(),
    ));
    // No acknowledgement in time -> overdue (counted via the outbox's transition observer; never resent).
    let acks = &cfg.acknowledgements;
    let overdue_task = tokio::spawn(
        sammen_relay::OverdueScanner::new(
            outbox.clone(),
            std::time::Duration::from_secs(acks.timeout_secs),
        )
        .run(
            std::time::Duration::from_secs(acks.scan_interval_secs),
            stop.child_token(),
        ),
    );
    // EHR integrations publishing to sammen.ingress; identity = AMQP user-id -> [[partner]] amqp_user.
    let amqp_ingress_task = match (&cfg.bus.kind, &cfg.bus.url) {
        (BusKind::Amqp, Some(url)) if cfg.bus.amqp_ingress => {
            let users = sammen_ingress::amqp::AmqpUsers::new(cfg.partners.iter().filter_map(|p| {
                let send_as = p.send_as.iter().map(|s| sammen_model::Party {
                    gln: Some(s.gln.clone()),
                    sor: s.sor.clone(),
                });
                p.amqp_user.clone().map(|u| (u, send_as.collect()))
            }));
            Some(tokio::spawn(sammen_ingress::amqp::run_amqp_ingress(
                ingress.clone(),
                users,
                url.clone(),
                sammen_ingress::amqp::ingress_queue(&topo),
                sammen_backoff::ExponentialBackoff::default(),
                stop.child_token(),
            )))
        }
        _ => None,
    };
    // This node's receipts queue and the shared one (receipts for messages published without reply_to).
    let receipts_task = match (&cfg.bus.url, &node) {
        (Some(url), Some(node)) => {
            let r = receipts::AmqpReceipts::new(outbox.clone(), url.clone(), topo.clone())
                .with_node(node)
                .context("bus.node")?
                .with_telemetry(telemetry.clone());
            Some(tokio::spawn(r.run(stop.child_token())))
        }
        _ => None,
    };
    info!(
        listen = %front.describe(),
        bus = bus.status().kind,
        node = node.as_deref().unwrap_or("-"),
        store = store.backend_name(),
        data_dir = %cfg.data_dir.display(),
        receivers = cfg.receivers.len(),
        depth = outbox.depth(),
        "sammen serving"
    );
    // One machine-readable line on stdout (tests and scripts read the bound port from it).
    front.announce();
    if let Some(a) = metrics_addr {
        // After the listening line, which is all many readers wait for before closing the pipe: a failed
        // write must not take the broker down (println! would panic on EPIPE).
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), "sammen: metrics on http://{a}/metrics");
    }

    // Open inbox long polls answer 204 as soon as shutdown starts, so they do not hold up the drain.
    let inbox = inbox_registry.clone();
    front
        .run(ingress, async move {
            shutdown_signal(term).await;
            inbox.shutdown();
        })
        .await?;
    info!("shutting down: stopping relay");
    stop.cancel();
    if let Ok(Err(e)) = relay_task.await {
        warn!(error = %e, "relay ended with an error");
    }
    let _ = retention_task.await;
    let _ = overdue_task.await;
    let _ = auto_ack_task.await;
    if let Some(t) = checkpoint_task {
        let _ = t.await;
    }
    if let Some(log) = &audit_log {
        crate::audit::final_checkpoint(log);
    }
    if let Some(t) = amqp_ingress_task {
        let _ = t.await;
    }
    if let Some(t) = receipts_task {
        let _ = t.await;
    }
    let _ = sampler_task.await;
    if let Some(t) = metrics_task {
        if let Ok(Err(e)) = t.await {
            warn!(error = %e, "metrics listener ended with an error");
        }
    }
    // Unacked inbox deliveries go back to their queues before the bus closes.
    inbox_registry.close().await;
    bus.close().await;
    info!("stopped");
    Ok(())
}

#[cfg(unix)]
type TermSignal = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type TermSignal = Option<()>;

async fn shutdown_signal(term: TermSignal) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match term {
            Some(mut s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = {
        let _ = term;
        std::future::pending::<()>()
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_node_name_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        let first = node_name(&cfg).unwrap();
        sammen_bus::receipts::check_node_name(&first).unwrap();
        assert_eq!(node_name(&cfg).unwrap(), first, "same data dir, same name");
        assert_ne!(
            node_name(&Config {
                data_dir: dir.path().join("other"),
                ..Config::default()
            })
            .unwrap(),
            first
        );
        // A configured name wins; a damaged file is refused rather than replaced (the queue would change).
        cfg.bus.node = Some("sammen-a".into());
        assert_eq!(node_name(&cfg).unwrap(), "sammen-a");
        cfg.bus.node = None;
        std::fs::write(cfg.data_dir.join(NODE_FILE), "not a name\n").unwrap();
        assert!(node_name(&cfg).is_err());
    }
}
