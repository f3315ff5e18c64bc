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
    /// A queued row whose state could not be read, and how many scans in a row stopped at it.
    pub(crate) unreadable: Option<(RecordId, u32)>,
}

/// Scans in a row that may stop at a queued row whose state or payload cannot be read before the lane
/// gives up on it (logged as an error): a read racing the store's commit sees it at the next scan, a
/// row damaged on disk must not hold up the receiver's other messages for ever.
pub(crate) const MAX_UNREADABLE_SCANS: u32 = 20;

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
            unreadable: None,
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

/// What a scan of a lane found.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Rows to publish, in id order.
    pub(crate) rows: Vec<Pending>,
    /// Where the next scan starts.
    pub(crate) next: u64,
    /// The scan stopped at this queued row: its state or payload could not be read (yet).
    pub(crate) unreadable: Option<RecordId>,
}

/// Up to `limit` rows of the lane from `cursor` on, skipping rows already in flight; the next scan
/// starts after the last key seen, or **at** a queued row whose state or payload is not readable: a
/// queue key is never passed over on the strength of a read that may have raced its commit, or the row
/// would wait for a restart (it did, when fjall showed one tree's part of a batch before another's;
/// `sammen-store` now keeps reads to whole groups, this keeps the relay safe whatever the store does).
pub(crate) fn read(
    outbox: &SharedOutbox,
    prefix: Vec<u8>,
    cursor: u64,
    limit: usize,
    in_flight: &HashSet<RecordId>,
) -> Result<Scan, OutboxError> {
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
        if in_flight.contains(&id) {
            next = id.0 + 1;
            continue;
        }
        let Some(status) = outbox.status(id)? else {
            return Ok(Scan {
                rows: out,
                next: id.0,
                unreadable: Some(id),
            });
        };
        next = id.0 + 1;
        if status.state != State::Accepted {
            continue;
        }
        let Some(payload) = outbox.payload(id)? else {
            return Ok(Scan {
                rows: out,
                next: id.0,
                unreadable: Some(id),
            });
        };
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
    Ok(Scan {
        rows: out,
        next,
        unreadable: None,
    })
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sammen_model::{Family, Party};
    use sammen_outbox::{AcceptRequest, MessageMeta, Outbox, OutboxConfig};
    use std::sync::Arc;

    const TO: &str = "5790001348120";

    fn accept(ob: &SharedOutbox, id: &str) -> RecordId {
        let party = |g: &str| Party {
            gln: Some(g.into()),
            sor: None,
        };
        let outcome = ob
            .accept(AcceptRequest {
                bytes: id.as_bytes().to_vec(),
                meta: MessageMeta {
                    message_id: id.into(),
                    envelope_id: format!("b-{id}"),
                    family: Family::HospitalNotification,
                    event: "admit-inpatient".into(),
                    sender: party("5790000209354"),
                    receiver: party(TO),
                    received: std::time::SystemTime::now(),
                },
            })
            .unwrap();
        match outcome {
            sammen_outbox::AcceptOutcome::Accepted { id } => id,
            other => panic!("{other:?}"),
        }
    }

    /// The bug: a queue key seen without its state was passed over, and the message waited for a
    /// restart. Now the scan stops there and the next one finds it.
    #[test]
    fn a_queued_row_without_readable_state_is_not_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn sammen_store::Store> = Arc::new(
            sammen_store::FjallStore::open(dir.path(), sammen_outbox::trees::ALL).unwrap(),
        );
        let ob: SharedOutbox = Arc::new(Outbox::open(store, OutboxConfig::default()).unwrap());
        let a = accept(&ob, "m-1");
        let orphan = accept(&ob, "m-2");
        let c = accept(&ob, "m-3");
        // Its queue key without its state, as a torn read shows it.
        let meta = ob
            .store()
            .get(trees::META, &orphan.0.to_be_bytes())
            .unwrap();
        assert!(
            meta.is_some(),
            "state key layout: u64 BE id in the meta tree"
        );
        let mut b = sammen_store::Batch::new();
        b.delete(trees::META, orphan.0.to_be_bytes().to_vec());
        ob.store().commit(b).unwrap();
        let lane = Lane::new(TO, sammen_backoff::ExponentialBackoff::default().stream());
        let scan = read(&ob, lane.prefix(), 0, 10, &HashSet::new()).unwrap();
        let ids: Vec<u64> = scan.rows.iter().map(|p| p.id.0).collect();
        assert_eq!(ids, vec![a.0]);
        assert_eq!(
            scan.next, orphan.0,
            "the next scan starts at the unreadable row"
        );
        assert_eq!(scan.unreadable, Some(orphan));
        // Once its state is readable, the scan goes on from it, in order.
        let mut b = sammen_store::Batch::new();
        b.put(trees::META, orphan.0.to_be_bytes().to_vec(), meta.unwrap());
        ob.store().commit(b).unwrap();
        let scan = read(&ob, lane.prefix(), scan.next, 10, &HashSet::new()).unwrap();
        let ids: Vec<u64> = scan.rows.iter().map(|p| p.id.0).collect();
        assert_eq!(ids, vec![orphan.0, c.0]);
        assert_eq!(scan.unreadable, None);
    }
}
