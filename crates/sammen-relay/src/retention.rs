//! Retention purge on a timer.

use crate::SharedOutbox;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Every `interval`, drop payloads finished `payload_ttl` ago and records finished `meta_ttl` ago.
pub async fn run_retention(
    outbox: SharedOutbox,
    interval: Duration,
    payload_ttl: Duration,
    meta_ttl: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let ob = outbox.clone();
        match crate::blocking(move || ob.purge(SystemTime::now(), payload_ttl, meta_ttl)).await {
            Ok(s) if s.payloads + s.records > 0 => {
                info!(
                    payloads = s.payloads,
                    records = s.records,
                    "retention purge"
                )
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "retention purge failed; retrying next interval"),
        }
    }
}
