//! # sammen-subscriber: the reference municipal subscriber
//!
//! Why it exists: the broker's promise ends at the receiver's inbox queue; a municipality needs a
//! consumer that turns that queue into files without ever losing or doubling a message, and the broker
//! needs to learn when a message has arrived. This crate is that consumer, as a library (so `sammen serve`
//! can run it in-process with the embedded bus, and tests can drive it) and behind `sammen subscribe`.
//!
//! ## Invariants
//! - **Durable before ack.** A message is acked only after `DIR/<id>.xml` holds its exact body bytes on
//!   stable storage: written to a temporary file in `DIR`, the file fsynced, renamed into place, and `DIR`
//!   fsynced. A crash anywhere before the ack means a redelivery, never a loss.
//! - **At most one file per message id, never rewritten.** A delivery whose file already exists is a
//!   duplicate (a redelivery after a crash, or a resend): it is acked and counted in
//!   [`Stats::duplicates`], and the file is left alone (it is fsynced again, since the run that wrote it
//!   may have died before its directory sync). Different bytes under an existing id are kept out and
//!   counted in [`Stats::conflicts`] as well.
//! - **No path traversal.** A message id becomes a file name only through [`file_name_for`] (UUIDs and
//!   letter ids of `A-Za-z0-9._-`, starting with a letter or digit). Anything else is refused:
//!   `nack(requeue = false)` sends it to the dead-letter queue, nothing is written, [`Stats::refused`].
//! - **Receipts never over-claim.** With a [`ReceiptSink`] a [`DeliveryReceipt`] is sent after the file is
//!   durable and before the ack (see [`sammen_bus::receipts`] for why that order: at-least-once receipts,
//!   no loss window). A failed receipt is logged and counted, and the message is acked anyway: receipts are
//!   advisory, the file is what matters.
//! - **Survives the bus.** Subscribing is retried with jittered backoff until it works; the AMQP bus
//!   re-establishes a consumer after a lost connection by itself, and unsettled deliveries of a lost
//!   connection come back (and are deduped here). A local write failure (disk full) returns the message
//!   with `nack(requeue)` after a pause, so it is retried rather than acked.
//!
//! ## Throughput
//! Deliveries already waiting (up to the prefetch) are handled as one batch: each file is written and
//! fsynced, then one directory fsync covers all renames of the batch, then receipts and acks follow.
#![forbid(unsafe_code)]

mod file;
mod receipt;

pub use file::{file_name_for, UnsafeId, MAX_ID_LEN};
pub use receipt::{AmqpReceiptSink, ChannelReceiptSink, ReceiptSink};
pub use sammen_bus::receipts::{DeliveryReceipt, ReceiptOutcome};

use file::Stored;
use sammen_backoff::ExponentialBackoff;
use sammen_bus::{Bus, BusError, Delivery, Source};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Why the subscriber stopped or could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubscriberError {
    /// The receiver is not a valid GLN.
    #[error("receiver {0:?} is not a valid GLN")]
    Receiver(String),
    /// The output directory cannot be created, read or synced.
    #[error("output directory {path}: {source}")]
    OutDir {
        /// The directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A receipt could not be handed over.
    #[error("delivery receipt: {0}")]
    Receipt(String),
    /// The bus failed in a way retrying does not fix (closed, invalid configuration).
    #[error("bus: {0}")]
    Bus(#[from] BusError),
}

/// Hook called with the ids of a durable, not yet acked batch (see [`Config::before_ack`]).
pub type BeforeAck = Arc<dyn Fn(&[String]) + Send + Sync>;

/// Settings of one subscriber.
#[derive(Clone)]
pub struct Config {
    /// Whose inbox to consume (GLN).
    pub receiver_gln: String,
    /// Where `<message_id>.xml` files go (created if missing).
    pub out_dir: PathBuf,
    /// Unsettled deliveries at once, and the largest batch (default 64).
    pub prefetch: u16,
    /// Name in receipts (default `<hostname or "sammen-subscriber">/<pid>`).
    pub name: String,
    /// Pause after a local write failure before the message is returned (default 1 s).
    pub write_retry_pause: Duration,
    /// Backoff between subscribe attempts.
    pub backoff: ExponentialBackoff,
    /// Called with the ids of a batch that is durable (and receipted) but not yet acked. For fault
    /// injection in tests (e.g. to SIGKILL the process exactly there) and for metrics; `None` normally.
    pub before_ack: Option<BeforeAck>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("receiver_gln", &self.receiver_gln)
            .field("out_dir", &self.out_dir)
            .field("prefetch", &self.prefetch)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Defaults for a receiver and a directory.
    pub fn new(receiver_gln: impl Into<String>, out_dir: impl Into<PathBuf>) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "sammen-subscriber".into());
        Config {
            receiver_gln: receiver_gln.into(),
            out_dir: out_dir.into(),
            prefetch: 64,
            name: format!("{host}/{}", std::process::id()),
            write_retry_pause: Duration::from_secs(1),
            backoff: ExponentialBackoff::default(),
            before_ack: None,
        }
    }
}

/// Counters since the subscriber was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages written to a new file and acked.
    pub written: u64,
    /// Deliveries whose file already existed: acked, not rewritten (dropped duplicates).
    pub duplicates: u64,
    /// Of `duplicates`: the existing file has other bytes than the delivery (kept, logged).
    pub conflicts: u64,
    /// Deliveries refused for an unsafe message id (dead-lettered, nothing written).
    pub refused: u64,
    /// Local write failures (the message was returned for redelivery).
    pub write_failures: u64,
    /// Receipts that could not be handed over.
    pub receipt_failures: u64,
    /// Acks or nacks the bus did not take (the message will be redelivered and deduped).
    pub settle_failures: u64,
}

#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
    duplicates: AtomicU64,
    conflicts: AtomicU64,
    refused: AtomicU64,
    write_failures: AtomicU64,
    receipt_failures: AtomicU64,
    settle_failures: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What happened to one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Handled {
    /// Written now, then acked.
    Written,
    /// Already there: acked, not rewritten.
    Duplicate,
    /// Unsafe id: dead-lettered.
    Refused(UnsafeId),
    /// Local write failed: returned for redelivery.
    WriteFailed(String),
}

enum Plan {
    Refuse(UnsafeId),
    Store(String),
}

/// The subscriber. Cheap to share (`Arc`); [`Subscriber::stats`] may be read while [`Subscriber::run`]
/// runs.
pub struct Subscriber {
    config: Config,
    counters: Counters,
    receipts: Option<Arc<dyn ReceiptSink>>,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Subscriber {
    /// Check the receiver, create the output directory and remove temporary files a killed run left.
    pub fn new(config: Config) -> Result<Self, SubscriberError> {
        if sammen_model::ident::check_gln(&config.receiver_gln).is_some() {
            return Err(SubscriberError::Receiver(config.receiver_gln));
        }
        let dir_err = |source| SubscriberError::OutDir {
            path: config.out_dir.clone(),
            source,
        };
        std::fs::create_dir_all(&config.out_dir).map_err(dir_err)?;
        let stale = file::remove_stale_tmp(&config.out_dir).map_err(dir_err)?;
        if stale > 0 {
            info!(
                count = stale,
                "subscriber: removed temporary files of an interrupted run"
            );
        }
        Ok(Subscriber {
            config,
            counters: Counters::default(),
            receipts: None,
        })
    }

    /// Send a [`DeliveryReceipt`] per message to `sink`.
    pub fn with_receipts(mut self, sink: Arc<dyn ReceiptSink>) -> Self {
        self.receipts = Some(sink);
        self
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            written: g(&c.written),
            duplicates: g(&c.duplicates),
            conflicts: g(&c.conflicts),
            refused: g(&c.refused),
            write_failures: g(&c.write_failures),
            receipt_failures: g(&c.receipt_failures),
            settle_failures: g(&c.settle_failures),
        }
    }

    /// Consume the receiver's inbox until `stop` is cancelled or the bus is closed; returns the counters.
    /// Transient bus failures (broker down, lost connection) are waited out.
    pub async fn run(
        &self,
        bus: &dyn Bus,
        stop: CancellationToken,
    ) -> Result<Stats, SubscriberError> {
        let mut backoff = self.config.backoff.stream();
        let source = Source::Inbox(self.config.receiver_gln.clone());
        loop {
            let sub = tokio::select! {
                s = bus.subscribe(source.clone(), self.config.prefetch) => s,
                _ = stop.cancelled() => return Ok(self.stats()),
            };
            let mut sub = match sub {
                Ok(s) => {
                    backoff.reset();
                    s
                }
                Err(BusError::Closed) => return Ok(self.stats()),
                Err(e) if e.is_retryable() || matches!(e, BusError::TopologyMismatch { .. }) => {
                    // Not connected yet, or the inbox is not declared yet: the broker may create it.
                    warn!(error = %e, "subscriber: cannot subscribe yet, retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => continue,
                        _ = stop.cancelled() => return Ok(self.stats()),
                    }
                }
                Err(e) => return Err(e.into()),
            };
            loop {
                let first = tokio::select! {
                    d = sub.next() => d,
                    _ = stop.cancelled() => return Ok(self.stats()),
                };
                let Some(first) = first else { break };
                let mut batch = vec![first];
                while batch.len() < usize::from(self.config.prefetch.max(1)) {
                    // Subscription::next is cancel-safe: a zero timeout only takes what is already there.
                    match tokio::time::timeout(Duration::ZERO, sub.next()).await {
                        Ok(Some(d)) => batch.push(d),
                        _ => break,
                    }
                }
                self.handle_batch(batch).await;
            }
            // The subscription ended: the bus closed, or (a bus without its own reconnect) it was lost.
            if bus.status().state == sammen_bus::LinkState::Closed {
                return Ok(self.stats());
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                _ = stop.cancelled() => return Ok(self.stats()),
            }
        }
    }

    /// Handle one delivery (write, receipt, ack) — [`Subscriber::run`] does this in batches.
    pub async fn handle(&self, d: Delivery) -> Handled {
        self.handle_batch(vec![d])
            .await
            .pop()
            .unwrap_or(Handled::Duplicate)
    }

    async fn handle_batch(&self, batch: Vec<Delivery>) -> Vec<Handled> {
        let plans: Vec<Plan> = batch
            .iter()
            .map(|d| match file_name_for(&d.message.message_id) {
                Ok(name) => Plan::Store(name),
                Err(why) => Plan::Refuse(why),
            })
            .collect();
        let jobs: Vec<(usize, String, bytes::Bytes)> = plans
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p {
                Plan::Store(name) => Some((i, name.clone(), batch[i].message.body.clone())),
                Plan::Refuse(_) => None,
            })
            .collect();
        let dir = self.config.out_dir.clone();
        let results = tokio::task::spawn_blocking(move || write_all(&dir, jobs))
            .await
            .unwrap_or_else(|e| {
                let why = format!("writer task failed: {e}");
                vec![(usize::MAX, Err(why))]
            });
        let mut outcome: Vec<Option<Result<Stored, String>>> = vec![None; batch.len()];
        let mut all_failed = None;
        for (i, r) in results {
            match outcome.get_mut(i) {
                Some(slot) => *slot = Some(r),
                None => all_failed = r.err(),
            }
        }

        // Receipts for everything durable, then the hook, then settle.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut durable_ids = Vec::new();
        for (d, o) in batch.iter().zip(&outcome) {
            let kind = match (o, &all_failed) {
                (Some(Ok(Stored::Written)), None) => ReceiptOutcome::Written,
                (Some(Ok(Stored::Duplicate | Stored::Conflict)), None) => ReceiptOutcome::Duplicate,
                _ => continue,
            };
            durable_ids.push(d.message.message_id.clone());
            if let Some(sink) = &self.receipts {
                let r = DeliveryReceipt {
                    message_id: d.message.message_id.clone(),
                    receiver_gln: self.config.receiver_gln.clone(),
                    sha256: d.message.sha256.clone(),
                    outcome: kind,
                    delivered_at: now,
                    subscriber: self.config.name.clone(),
                };
                if let Err(e) = sink.send_reply(&r, d.reply_to.as_deref()).await {
                    bump(&self.counters.receipt_failures);
                    warn!(message_id = %r.message_id, error = %e, "subscriber: receipt not sent");
                }
            }
        }
        if let Some(hook) = &self.config.before_ack {
            if !durable_ids.is_empty() {
                hook(&durable_ids);
            }
        }

        let mut handled = Vec::with_capacity(batch.len());
        let mut paused = false;
        for ((d, plan), o) in batch.into_iter().zip(plans).zip(outcome) {
            let id = d.message.message_id.clone();
            let h = match (plan, o, &all_failed) {
                (Plan::Refuse(why), _, _) => {
                    warn!(message_id = %id.escape_debug(), reason = %why, "subscriber: unsafe message id, dead-lettering");
                    bump(&self.counters.refused);
                    self.settle(d.nack(false).await);
                    Handled::Refused(why)
                }
                (Plan::Store(_), Some(Ok(s)), None) => {
                    let ok = self.settle(d.ack().await);
                    match s {
                        Stored::Written => {
                            if ok {
                                bump(&self.counters.written);
                            }
                            Handled::Written
                        }
                        Stored::Duplicate | Stored::Conflict => {
                            if s == Stored::Conflict {
                                warn!(message_id = %id, "subscriber: id already on disk with other bytes; kept the existing file");
                                bump(&self.counters.conflicts);
                            }
                            if ok {
                                bump(&self.counters.duplicates);
                            }
                            Handled::Duplicate
                        }
                    }
                }
                (Plan::Store(_), o, all) => {
                    let why = match (o, all) {
                        (_, Some(e)) => e.clone(),
                        (Some(Err(e)), None) => e,
                        _ => "not written".to_string(),
                    };
                    warn!(message_id = %id, error = %why, "subscriber: write failed, returning the message");
                    bump(&self.counters.write_failures);
                    if !paused {
                        paused = true;
                        tokio::time::sleep(self.config.write_retry_pause).await;
                    }
                    self.settle(d.nack(true).await);
                    Handled::WriteFailed(why)
                }
            };
            handled.push(h);
        }
        handled
    }

    fn settle(&self, r: Result<(), BusError>) -> bool {
        match r {
            Ok(()) => true,
            Err(e) => {
                bump(&self.counters.settle_failures);
                warn!(error = %e, "subscriber: settle failed; the bus will redeliver");
                false
            }
        }
    }
}

/// Write every job's file, then sync the directory once. Index = position in the batch; a directory
/// sync failure fails all (`usize::MAX`).
fn write_all(
    dir: &Path,
    jobs: Vec<(usize, String, bytes::Bytes)>,
) -> Vec<(usize, Result<Stored, String>)> {
    let mut out: Vec<(usize, Result<Stored, String>)> = jobs
        .into_iter()
        .map(|(i, name, body)| (i, file::store(dir, &name, &body).map_err(|e| e.to_string())))
        .collect();
    if out.iter().any(|(_, r)| r.is_ok()) {
        if let Err(e) = file::sync_dir(dir) {
            out.push((usize::MAX, Err(format!("directory sync: {e}"))));
        }
    }
    out
}
