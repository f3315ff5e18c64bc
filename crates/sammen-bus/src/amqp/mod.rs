//! AMQP 0-9-1 backend (RabbitMQ) on lapin, with Sammen's own reconnect instead of lapin's auto-recovery.
//!
//! - [`link`]: the supervisor that owns the publishing connection and rebuilds it after any failure.
//! - [`publish`]: properties, the in-flight window and the confirm outcome of each message.
//! - [`consume`]: subscriptions, each on its own connection with its own reconnect loop.
//! - [`declare`]: idempotent topology.

pub(crate) mod connect;
pub(crate) mod consume;
pub(crate) mod declare;
pub(crate) mod link;
pub(crate) mod publish;

use crate::bus::{Bus, BusStatus, PendingConfirm, Source, StatusCell, Subscription};
use crate::error::BusError;
use crate::message::{check_receiver, BusMessage};
use crate::topology::Topology;
use link::Link;
use sammen_backoff::ExponentialBackoff;
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;

/// How to reach and use RabbitMQ.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// `amqp://user:pass@host:port/vhost`.
    pub url: String,
    /// Names and delivery limit.
    pub topology: Topology,
    /// Receivers whose inboxes are declared on every (re)connect.
    pub receivers: Vec<String>,
    /// Most messages awaiting a confirm at once.
    pub window: usize,
    /// Longest wait for one confirm; after it the message is `TimedOut` and the link is rebuilt.
    pub confirm_timeout: Duration,
    /// Longest wait for TCP + AMQP handshake (lapin #468: a connect can hang).
    pub connect_timeout: Duration,
    /// Longest wait for any other broker call (declare, publish hand-off, ack).
    pub op_timeout: Duration,
    /// How long `publish` waits for a connection before failing with `NotConnected`.
    pub publish_wait: Duration,
    /// Delay between reconnect attempts.
    pub backoff: ExponentialBackoff,
    /// Shown in `rabbitmqctl list_connections client_properties`.
    pub connection_name: String,
    /// This node's receipts queue ([`crate::receipts::node_receipts_queue`]): set as the AMQP `reply_to`
    /// of every published message and declared (durable quorum) on every connect, before anything is
    /// published, so a receipt never finds it missing. `None`: no `reply_to` (receipts then go to the
    /// shared queue, as before several nodes were possible).
    pub reply_to: Option<String>,
}

impl AmqpConfig {
    /// Defaults for a URL: window 256, 10 s timeouts, 100 ms → 10 s backoff.
    pub fn new(url: impl Into<String>) -> Self {
        AmqpConfig {
            url: url.into(),
            topology: Topology::default(),
            receivers: Vec::new(),
            window: 256,
            confirm_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            op_timeout: Duration::from_secs(10),
            publish_wait: Duration::from_secs(1),
            backoff: ExponentialBackoff::default(),
            connection_name: "sammen".into(),
            reply_to: None,
        }
    }
}

pub(crate) struct Shared {
    pub(crate) config: AmqpConfig,
    pub(crate) status: StatusCell,
    /// The live link, `None` while reconnecting.
    pub(crate) current: watch::Sender<Option<Arc<Link>>>,
    pub(crate) window: Arc<Semaphore>,
    pub(crate) receivers: Mutex<BTreeSet<String>>,
    pub(crate) shutdown: CancellationToken,
}

impl Shared {
    pub(crate) fn receivers(&self) -> Vec<String> {
        match self.receivers.lock() {
            Ok(r) => r.iter().cloned().collect(),
            Err(p) => p.into_inner().iter().cloned().collect(),
        }
    }
}

/// The RabbitMQ bus. Cheap to share behind an `Arc`; one publishing connection, one connection per
/// subscription.
pub struct AmqpBus {
    shared: Arc<Shared>,
}

impl AmqpBus {
    /// Start the bus: returns at once and connects in the background (so a broker that is down at start
    /// does not stop the process). Use [`crate::wait_connected`] to wait for the first connection.
    /// Must be called inside a tokio runtime.
    pub fn start(config: AmqpConfig) -> Self {
        let receivers = config
            .receivers
            .iter()
            .filter(|g| check_receiver(g).is_ok())
            .cloned()
            .collect();
        let (current, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            window: Arc::new(Semaphore::new(config.window.max(1))),
            config,
            status: StatusCell::default(),
            current,
            receivers: Mutex::new(receivers),
            shutdown: CancellationToken::new(),
        });
        tokio::spawn(link::supervise(shared.clone()));
        AmqpBus { shared }
    }

    /// The live link, waiting up to `publish_wait` for one.
    async fn link(&self) -> Result<Arc<Link>, BusError> {
        if self.shared.shutdown.is_cancelled() {
            return Err(BusError::Closed);
        }
        let mut rx = self.shared.current.subscribe();
        let wait = self.shared.config.publish_wait;
        let found = tokio::time::timeout(wait, rx.wait_for(|l| l.is_some())).await;
        match found {
            Ok(Ok(l)) => l.clone().ok_or(BusError::NotConnected(wait)),
            Ok(Err(_)) => Err(BusError::Closed),
            Err(_) => Err(BusError::NotConnected(wait)),
        }
    }

    /// Force the current connection to be rebuilt (tests; an operator's "reconnect" button).
    pub fn force_reconnect(&self) {
        if let Some(l) = self.shared.current.borrow().as_ref() {
            l.lost.cancel();
        }
    }
}

impl Drop for AmqpBus {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

#[async_trait::async_trait]
impl Bus for AmqpBus {
    fn status(&self) -> BusStatus {
        self.shared.status.snapshot("amqp")
    }

    fn topology(&self) -> &Topology {
        &self.shared.config.topology
    }

    async fn ensure_receiver(&self, gln: &str) -> Result<(), BusError> {
        check_receiver(gln)?;
        if let Ok(mut r) = self.shared.receivers.lock() {
            r.insert(gln.to_string());
        }
        let link = self.link().await?;
        let r = declare::declare_receiver(
            &link.conn,
            &self.shared.config.topology,
            gln,
            self.shared.config.op_timeout,
        )
        .await;
        if matches!(r, Err(BusError::Timeout { .. } | BusError::Amqp { .. })) {
            link.lost.cancel();
        }
        r
    }

    async fn publish(&self, msg: &BusMessage) -> Result<PendingConfirm, BusError> {
        publish::publish(self, msg).await
    }

    async fn subscribe(&self, source: Source, prefetch: u16) -> Result<Subscription, BusError> {
        let queue = source.queue_name(&self.shared.config.topology)?;
        consume::subscribe(self.shared.clone(), queue, prefetch).await
    }

    async fn close(&self) {
        self.shared.shutdown.cancel();
        let link = self.shared.current.send_replace(None);
        self.shared.status.set_closed();
        if let Some(l) = link {
            l.close().await;
        }
    }
}

pub(crate) fn amqp_err(op: &'static str, source: lapin::Error) -> BusError {
    BusError::Amqp { op, source }
}

/// Run a lapin call with a deadline: no broker call may hang forever (lapin #245).
pub(crate) async fn with_timeout<T>(
    op: &'static str,
    after: Duration,
    f: impl Future<Output = lapin::Result<T>>,
) -> Result<T, BusError> {
    match tokio::time::timeout(after, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(amqp_err(op, e)),
        Err(_) => Err(BusError::Timeout { op, after }),
    }
}

pub(crate) fn connection_properties(name: &str) -> lapin::ConnectionProperties {
    // No enable_auto_recover(): our supervisor rebuilds connections (lapin #468, #389, #245).
    lapin::ConnectionProperties::default().with_connection_name(name.into())
}
