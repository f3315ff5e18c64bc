//! The overdue scanner: a message not acknowledged within the configured time becomes `overdue`
//! (MedCom reliable messaging: the *sender* may then resend; the broker never resends anything itself).
//!
//! The outbox keeps the index of records waiting for an acknowledgement and makes each change durable with
//! its audit leaf ([`sammen_outbox::Outbox::mark_overdue_before`]); this module runs it on a timer with an
//! injectable clock, and keeps [`OverdueStats`] for metrics.

use crate::{blocking, RelayError, SharedOutbox};
use sammen_outbox::{Clock, OverdueScan};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// What the scanner counted (read by the metrics sampler).
#[derive(Debug, Default)]
pub struct OverdueStats {
    /// Records marked overdue since start (counter).
    pub marked: AtomicU64,
    /// Completed scans (counter).
    pub scans: AtomicU64,
    /// Failed scans (counter).
    pub failures: AtomicU64,
    /// Past the deadline but not yet published at the last scan (gauge): owed to a receiver that is
    /// not taking messages.
    pub unpublished: AtomicU64,
}

/// Marks records overdue `timeout` after their acceptance.
#[derive(Clone)]
pub struct OverdueScanner {
    outbox: SharedOutbox,
    timeout: Duration,
    clock: Clock,
    stats: Arc<OverdueStats>,
}

impl std::fmt::Debug for OverdueScanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OverdueScanner")
            .field("timeout", &self.timeout)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl OverdueScanner {
    /// A scanner over `outbox` with the wall clock.
    pub fn new(outbox: SharedOutbox, timeout: Duration) -> Self {
        OverdueScanner {
            outbox,
            timeout,
            clock: Arc::new(SystemTime::now),
            stats: Arc::default(),
        }
    }

    /// Use `clock` for "now" (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The counters (share them with the metrics sampler).
    pub fn stats(&self) -> Arc<OverdueStats> {
        self.stats.clone()
    }

    /// One scan: everything accepted more than `timeout` before now and still unacknowledged.
    pub async fn scan_once(&self) -> Result<OverdueScan, RelayError> {
        let cutoff = (self.clock)()
            .checked_sub(self.timeout)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let ob = self.outbox.clone();
        let r = blocking(move || ob.mark_overdue_before(cutoff)).await;
        match &r {
            Ok(scan) => {
                self.stats.scans.fetch_add(1, Ordering::Relaxed);
                self.stats.marked.fetch_add(scan.marked, Ordering::Relaxed);
                self.stats
                    .unpublished
                    .store(scan.unpublished, Ordering::Relaxed);
            }
            Err(_) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        r
    }

    /// Scan every `interval` until `shutdown`.
    pub async fn run(self, interval: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.scan_once().await {
                Ok(s) if s.marked > 0 => {
                    info!(
                        marked = s.marked,
                        unpublished = s.unpublished,
                        "overdue: no acknowledgement in time"
                    )
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "overdue scan failed; retrying next interval"),
            }
        }
    }
}
