//! Shared state of the ingress.

use crate::inbox::{InboxConfig, InboxRegistry};
use crate::receivers::Receivers;
use sammen_adapters::Options;
use sammen_bus::Bus;
use std::sync::Arc;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// The outbox, backend chosen at run time.
pub type SharedOutbox = Arc<sammen_outbox::Outbox<Arc<dyn sammen_store::Store>>>;

/// Limits of the ingress.
#[derive(Debug, Clone)]
pub struct IngressConfig {
    /// Largest body (413 above, enforced while reading).
    pub max_body: usize,
    /// Outbox depth (rows waiting to be published) above which POST answers 503.
    pub max_depth: u64,
    /// Retry-After seconds on 503.
    pub retry_after_secs: u32,
    /// Bodies at least this large are validated on the blocking pool.
    pub blocking_validate_bytes: usize,
    /// Request bodies held at once, all POSTs together (see [`BodyBudget`]).
    pub body_memory_bytes: usize,
    /// How long a request waits for room in the body budget before it is answered 503.
    pub body_memory_wait: std::time::Duration,
    /// Validator options.
    pub validate: Options,
}

impl Default for IngressConfig {
    fn default() -> Self {
        IngressConfig {
            max_body: 10 * 1024 * 1024,
            max_depth: 100_000,
            retry_after_secs: 5,
            blocking_validate_bytes: 64 * 1024,
            body_memory_bytes: 256 * 1024 * 1024,
            body_memory_wait: std::time::Duration::from_secs(1),
            validate: Options::default(),
        }
    }
}

/// Bytes of request bodies held in memory at once, across all POSTs, counted in KiB units of a semaphore.
/// Why a byte budget and not a connection limit: a 10 MiB upload and a 4 KiB one hold the same connection
/// slot but not the same memory, and without any limit memory grew with the number of clients sending.
#[derive(Debug)]
pub(crate) struct BodyBudget {
    units: Arc<Semaphore>,
    total: u32,
}

impl BodyBudget {
    fn new(bytes: usize) -> Self {
        let total = Self::units(bytes);
        BodyBudget {
            units: Arc::new(Semaphore::new(total as usize)),
            total,
        }
    }

    fn units(bytes: usize) -> u32 {
        u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .max(1)
    }

    /// Room for `bytes`, held until the permit drops; `None` when none freed up within `wait`.
    pub(crate) async fn reserve(
        &self,
        bytes: usize,
        wait: std::time::Duration,
    ) -> Option<OwnedSemaphorePermit> {
        let n = Self::units(bytes).min(self.total);
        let acquire = Arc::clone(&self.units).acquire_many_owned(n);
        tokio::time::timeout(wait, acquire).await.ok()?.ok()
    }
}

/// Everything a handler needs.
pub struct Ingress {
    pub(crate) outbox: SharedOutbox,
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) receivers: Receivers,
    pub(crate) cfg: IngressConfig,
    pub(crate) wake: Arc<Notify>,
    pub(crate) inbox: Arc<InboxRegistry>,
    pub(crate) bodies: BodyBudget,
}

impl std::fmt::Debug for Ingress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingress").field("cfg", &self.cfg).finish()
    }
}

impl Ingress {
    /// State over an outbox and bus; `wake` is notified after every accept (the relay's waker).
    pub fn new(
        outbox: SharedOutbox,
        bus: Arc<dyn Bus>,
        receivers: Receivers,
        mut cfg: IngressConfig,
        wake: Arc<Notify>,
    ) -> Self {
        // The validator's own size limit must not be smaller than the body limit we enforce.
        cfg.validate.limits.max_bytes = cfg.validate.limits.max_bytes.max(cfg.max_body);
        let inbox = Arc::new(InboxRegistry::new(
            bus.clone(),
            outbox.clone(),
            InboxConfig::default(),
        ));
        // One largest message always fits, whatever the configuration says.
        let bodies = BodyBudget::new(cfg.body_memory_bytes.max(cfg.max_body));
        Ingress {
            outbox,
            bus,
            receivers,
            cfg,
            wake,
            inbox,
            bodies,
        }
    }

    /// The same state with inbox limits `cfg` (`GET /v1/inbox/{gln}`).
    pub fn with_inbox(mut self, cfg: InboxConfig) -> Self {
        self.inbox = Arc::new(InboxRegistry::new(
            self.bus.clone(),
            self.outbox.clone(),
            cfg,
        ));
        self
    }

    /// The outbox behind this door (the binary records operator actions, e.g. reloads, in its audit log).
    pub fn outbox(&self) -> &SharedOutbox {
        &self.outbox
    }

    /// The inbox registry (shut it down and close it when the server stops).
    pub fn inbox(&self) -> &Arc<InboxRegistry> {
        &self.inbox
    }
}
