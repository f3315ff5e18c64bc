//! Broker-generated acknowledgements: for a receiver configured with `auto_acknowledge = true` the broker is
//! the receiving system. Once a message to it is `delivered`, the broker builds the standard answer and
//! accepts it like a posted one ([`sammen_outbox::Outbox::accept_acknowledgement`]): the original becomes
//! `acknowledged(ok)` in the same batch and the answer is routed to the original's sender.
//!
//! - FHIR messages get a MedCom Acknowledgement (`ok`, [`sammen_fhir::build::acknowledgement`]); OIOXML
//!   letters (XDIS*, XBIN01, XREF01) get an XCTL03 positive receipt ([`sammen_oioxml::build`]) quoting
//!   the letter's id, envelope id and `Letter/VersionCode` (read from the stored payload). Both pass our
//!   own validator.
//! - The outbox tells an [`AckObserver`] about the transition (cheap: it only queues the record id); the
//!   work runs in [`AutoAcknowledger::run`], off the outbox's locks.
//! - Ids are derived from the acknowledged message id and the receiver (SHA-256; UUIDs for FHIR, 14
//!   letters/digits for OIOXML), so acknowledging the same message twice is a duplicate, never a second,
//!   different acknowledgement.
//! - Not acknowledged: acknowledgements and XCTL receipts (never acknowledged, MedCom KR2). Counted as
//!   failed and logged: a FHIR message whose sender has no SOR code (the acknowledgement's endpoint needs
//!   it; OIOXML addresses by EAN only), a letter whose VersionCode cannot be read (e.g. a letter stored
//!   inside a VANS/SBDH envelope; a version code is never invented), or ids that are not OIOXML
//!   identifiers.
//! - A crash between `delivered` and the acknowledgement's accept loses that acknowledgement (the sender's
//!   message then becomes overdue, which is visible).

use crate::{blocking, RelayError, SharedOutbox};
use sammen_fhir::build::{acknowledgement, derived_uuid, AckSpec, Org};
use sammen_model::{AckCode, Family, Party, ResponseRef};
use sammen_oioxml::build::{letter_version_code, positive_receipt, ReceiptSpec};
use sammen_outbox::{
    AcceptAudit, AcceptRequest, AckAcceptOutcome, MessageMeta, OutboxError, RecordId, State,
    Status, TransitionObserver,
};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Keeps the ids this module derives apart from those other builders derive from the same seed.
const ID_DOMAIN: &str = "sammen-auto-ack";

/// Counters (for metrics).
#[derive(Debug, Default)]
pub struct AutoAckStats {
    /// Acknowledgements generated and accepted.
    pub generated: AtomicU64,
    /// Messages that could not be acknowledged (no SOR, unreadable VersionCode, store failure).
    pub failed: AtomicU64,
}

/// Queues the ids of delivered messages to auto-acknowledged receivers. Register it on the outbox
/// ([`sammen_outbox::Outbox::with_observer`]).
pub struct AckObserver {
    glns: Arc<HashMap<String, String>>,
    tx: mpsc::UnboundedSender<RecordId>,
}

impl TransitionObserver for AckObserver {
    fn on_transition(&self, _from: State, s: &Status) {
        let wanted = s.state == State::Delivered
            && !s.meta.family.is_acknowledgement()
            && s.acknowledged_by.is_none()
            && s.meta
                .receiver
                .gln
                .as_ref()
                .is_some_and(|g| self.glns.contains_key(g));
        if wanted {
            // Unbounded: never blocks the outbox; one id per delivered message.
            let _ = self.tx.send(s.id);
        }
    }
}

/// Builds and accepts the acknowledgements.
pub struct AutoAcknowledger {
    outbox: SharedOutbox,
    glns: Arc<HashMap<String, String>>,
    rx: mpsc::UnboundedReceiver<RecordId>,
    wake: Arc<Notify>,
    stats: Arc<AutoAckStats>,
}

impl std::fmt::Debug for AutoAcknowledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutoAcknowledger")
            .field("receivers", &self.glns.len())
            .finish_non_exhaustive()
    }
}

/// An OIOXML identifier from `seed` and `n`: `prefix` + 12 upper-case hex digits (14 characters, the
/// OIOXML maximum).
fn derived_oioxml_id(prefix: &str, seed: &str, n: u32) -> String {
    let mut h = Sha256::new();
    h.update(b"sammen-auto-ack-oioxml\0");
    h.update(seed.as_bytes());
    h.update(n.to_be_bytes());
    let d = h.finalize();
    let hex: String = d.iter().take(6).map(|v| format!("{v:02X}")).collect();
    format!("{prefix}{hex}")
}

/// The receiving end of an [`AckObserver`]: hand it to [`AutoAcknowledger::new`].
#[derive(Debug)]
pub struct AckQueue {
    glns: Arc<HashMap<String, String>>,
    rx: mpsc::UnboundedReceiver<RecordId>,
}

/// The observer to register on the outbox (before it is shared) and its queue, for `receivers`
/// (GLN, SOR) that the broker acknowledges for.
pub fn ack_channel(
    receivers: impl IntoIterator<Item = (String, String)>,
) -> (Arc<AckObserver>, AckQueue) {
    let glns: Arc<HashMap<String, String>> = Arc::new(receivers.into_iter().collect());
    let (tx, rx) = mpsc::unbounded_channel();
    let obs = Arc::new(AckObserver {
        glns: glns.clone(),
        tx,
    });
    (obs, AckQueue { glns, rx })
}

impl AutoAcknowledger {
    /// Acknowledges what `queue` reports on `outbox`; `wake` is the relay's waker.
    pub fn new(outbox: SharedOutbox, queue: AckQueue, wake: Arc<Notify>) -> Self {
        AutoAcknowledger {
            outbox,
            glns: queue.glns,
            rx: queue.rx,
            wake,
            stats: Arc::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> Arc<AutoAckStats> {
        self.stats.clone()
    }

    /// Acknowledge record `id` now (blocking: store reads and one durable accept). `None` when it is not
    /// one to acknowledge.
    pub fn acknowledge(
        outbox: &SharedOutbox,
        glns: &HashMap<String, String>,
        id: RecordId,
        now: SystemTime,
    ) -> Result<Option<AckAcceptOutcome>, OutboxError> {
        let Some(s) = outbox.status(id)? else {
            return Ok(None);
        };
        if s.meta.family.is_acknowledgement() {
            return Ok(None);
        }
        let Some((gln, sor)) = s
            .meta
            .receiver
            .gln
            .as_ref()
            .and_then(|g| glns.get(g).map(|sor| (g.clone(), sor.clone())))
        else {
            return Ok(None);
        };
        if !s.meta.family.is_fhir() {
            return Self::receipt(outbox, id, s, gln, now).map(Some);
        }
        let (Some(sgln), Some(ssor)) = (s.meta.sender.gln.clone(), s.meta.sender.sor.clone())
        else {
            return Err(OutboxError::InvalidRequest(
                "the sender has no SOR code to address an acknowledgement to",
            ));
        };
        let spec = AckSpec {
            original_message_id: s.meta.message_id.clone(),
            original_activity: s.meta.event.clone(),
            sender: Org {
                gln: gln.clone(),
                sor: sor.clone(),
            },
            receiver: Org {
                gln: sgln,
                sor: ssor,
            },
            code: AckCode::Ok,
            error_code: None,
            time: now,
        };
        let seed = format!("{}\0{gln}", s.meta.message_id);
        let (mid, bid) = (
            derived_uuid(ID_DOMAIN, &seed, 0),
            derived_uuid(ID_DOMAIN, &seed, 1),
        );
        let mut n = 1;
        let mut next = || {
            n += 1;
            derived_uuid(ID_DOMAIN, &seed, n)
        };
        let xml = acknowledgement(&spec, &mid, &bid, &mut next)
            .map_err(|_| OutboxError::InvalidRequest("the message's ids cannot be acknowledged"))?;
        let req = AcceptRequest {
            bytes: xml.into_bytes(),
            meta: MessageMeta {
                message_id: mid,
                envelope_id: bid,
                family: Family::Acknowledgement,
                event: AckCode::Ok.as_str().into(),
                sender: Party {
                    gln: Some(gln),
                    sor: Some(sor),
                },
                receiver: s.meta.sender.clone(),
                received: now,
            },
        };
        let response = ResponseRef {
            message_id: s.meta.message_id,
            envelope_id: None,
            code: AckCode::Ok,
        };
        outbox
            .accept_acknowledgement(req, AcceptAudit::default(), &response)
            .map(Some)
    }

    /// The XCTL03 positive receipt for OIOXML letter `id` (status `s`), sent as `gln`.
    fn receipt(
        outbox: &SharedOutbox,
        id: RecordId,
        s: Status,
        gln: String,
        now: SystemTime,
    ) -> Result<AckAcceptOutcome, OutboxError> {
        let Some(sender_gln) = s.meta.sender.gln.clone() else {
            return Err(OutboxError::InvalidRequest(
                "the letter's sender has no EAN to address a receipt to",
            ));
        };
        let payload = outbox.payload(id)?.ok_or(OutboxError::InvalidRequest(
            "the letter's payload is no longer stored",
        ))?;
        // The receipt must quote the letter's VersionCode; never guess one.
        let version = letter_version_code(&payload).ok_or(OutboxError::InvalidRequest(
            "the letter's VersionCode cannot be read (not a bare Emessage?)",
        ))?;
        let seed = format!("{}\0{gln}", s.meta.message_id);
        let spec = ReceiptSpec {
            envelope_id: derived_oioxml_id("SE", &seed, 0),
            letter_id: derived_oioxml_id("SL", &seed, 1),
            sender_ean: gln.clone(),
            receiver_ean: sender_gln,
            original_envelope_id: s.meta.envelope_id.clone(),
            original_letter_id: s.meta.message_id.clone(),
            original_version_code: version,
            time: now,
        };
        let xml = positive_receipt(&spec).map_err(|_| {
            OutboxError::InvalidRequest("the letter's ids or EANs cannot be quoted in a receipt")
        })?;
        let req = AcceptRequest {
            bytes: xml.into_bytes(),
            meta: MessageMeta {
                message_id: spec.letter_id,
                envelope_id: spec.envelope_id,
                family: Family::Xctl03,
                // As the validator reports an XCTL03.
                event: "positive".into(),
                sender: Party {
                    gln: Some(gln),
                    sor: None,
                },
                receiver: s.meta.sender.clone(),
                received: now,
            },
        };
        let response = ResponseRef {
            message_id: s.meta.message_id,
            envelope_id: Some(s.meta.envelope_id),
            code: AckCode::Ok,
        };
        outbox.accept_acknowledgement(req, AcceptAudit::default(), &response)
    }

    /// Acknowledge delivered messages as the observer reports them, until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let id = tokio::select! {
                _ = shutdown.cancelled() => return,
                id = self.rx.recv() => match id { Some(id) => id, None => return },
            };
            let (ob, glns) = (self.outbox.clone(), self.glns.clone());
            let r: Result<_, RelayError> =
                blocking(move || Self::acknowledge(&ob, &glns, id, SystemTime::now())).await;
            match r {
                Ok(Some(AckAcceptOutcome::Accepted { id: ack, .. })) => {
                    self.stats.generated.fetch_add(1, Ordering::Relaxed);
                    debug!(record = %id, ack = %ack, "acknowledged on the receiver's behalf");
                    self.wake.notify_one();
                }
                Ok(_) => {}
                Err(e) => {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    warn!(record = %id, error = %e, "could not acknowledge on the receiver's behalf");
                }
            }
        }
    }
}
