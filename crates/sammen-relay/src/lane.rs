//! A lane: one receiver's publish queue, read in id order from a cursor.
//!
//! Reads the outbox's `queue` tree directly (layout documented in `sammen_outbox`: `u16 BE len ‖ party
//! key ‖ u64 BE id`), key only, so a lane with many rows in flight is not re-read payload by payload.

use sammen_backoff::Backoff;
use sammen_outbox::{trees, OutboxError, Pending, RecordId, State, Store};
use std::collections::HashSet;
use tokio::time::Instant;

use crate::SharedOutbox;

/// One receiver's publishing state.
#[derive(Debug)]
pub(crate) struct Lane {
    /// Key prefix of this receiver in the outbox's queue tree.
    prefix: Vec<u8>,
    /// Smallest id not yet dispatched in this pass.
    pub(crate) cursor: u64,
    /// Lane paused until then (after a failure).
    pub(crate) blocked_until: Option<Instant>,
    /// Delay growth for this lane's retries.
    pub(crate) backoff: Backoff,
    /// Publishes of this lane awaiting a confirm or a mark.
    pub(crate) in_flight: usize,
    /// The last scan found nothing new: skip until woken.
    pub(crate) idle: bool,
}

impl Lane {
    pub(crate) fn new(gln: &str, backoff: Backoff) -> Self {
        let key = sammen_outbox::party_key(&sammen_model::Party {
            gln: Some(gln.to_string()),
            sor: None,
        });
        let mut prefix = Vec::with_capacity(key.len() + 2);
        prefix.extend_from_slice(&(key.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
        prefix.extend_from_slice(key.as_bytes());
        Lane {
            prefix,
            cursor: 0,
            blocked_until: None,
            backoff,
            in_flight: 0,
            idle: false,
        }
    }

    /// Go back to `id` (a failed row) so it is published again before anything after it.
    pub(crate) fn rewind(&mut self, id: RecordId) {
        self.cursor = self.cursor.min(id.0);
        self.idle = false;
    }

    pub(crate) fn is_blocked(&self, now: Instant) -> bool {
        self.blocked_until.is_some_and(|t| t > now)
    }
}

/// Up to `limit` rows of the lane from `cursor` on, skipping rows already in flight; also returns the
/// cursor after the last key seen.
pub(crate) fn read(
    outbox: &SharedOutbox,
    prefix: Vec<u8>,
    cursor: u64,
    limit: usize,
    in_flight: &HashSet<RecordId>,
) -> Result<(Vec<Pending>, u64), OutboxError> {
    let store = outbox.store();
    let mut from = prefix.clone();
    from.extend_from_slice(&cursor.to_be_bytes());
    let end = sammen_store::prefix_end(&prefix);
    let mut out = Vec::new();
    let mut next = cursor;
    // Rows in flight are skipped without reading their payloads; bound the keys looked at.
    let keys = store.range(trees::QUEUE, &from, end.as_deref(), limit + in_flight.len())?;
    for (k, _) in keys {
        let Some(tail) = k.get(k.len().saturating_sub(8)..) else {
            continue;
        };
        let id = RecordId(u64::from_be_bytes(
            tail.try_into()
                .map_err(|_| OutboxError::Corrupt("short queue key".into()))?,
        ));
        next = id.0 + 1;
        if in_flight.contains(&id) {
            continue;
        }
        let (Some(status), Some(payload)) = (outbox.status(id)?, outbox.payload(id)?) else {
            continue;
        };
        if status.state != State::Accepted {
            continue;
        }
        out.push(Pending {
            id,
            resend: status.resend_of.is_some(),
            attempts: status.attempts,
            sha256: status.sha256,
            meta: status.meta,
            payload,
        });
        if out.len() >= limit {
            break;
        }
    }
    Ok((out, next))
}

impl Lane {
    pub(crate) fn prefix(&self) -> Vec<u8> {
        self.prefix.clone()
    }
}

/// Receivers with rows waiting (GLNs), found by walking the pending rows: lanes for receivers that are no
/// longer configured still drain after a restart.
pub(crate) fn pending_receivers(outbox: &SharedOutbox) -> Result<HashSet<String>, OutboxError> {
    let store = outbox.store();
    let mut found = HashSet::new();
    let mut from = Vec::new();
    loop {
        let page = store.range(trees::PENDING, &from, None, 4096)?;
        let Some((last, _)) = page.last() else { break };
        from = last.clone();
        from.push(0);
        for (k, _) in &page {
            let Ok(arr) = <[u8; 8]>::try_from(k.as_slice()) else {
                continue;
            };
            if let Some(s) = outbox.status(RecordId(u64::from_be_bytes(arr)))? {
                if let Some(g) = s.meta.receiver.gln {
                    found.insert(g);
                }
            }
        }
    }
    Ok(found)
}
