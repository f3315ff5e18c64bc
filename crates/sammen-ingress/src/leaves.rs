//! Audit leaves the ingress writes itself (issue #5): `received` plus `rejected` (validation code),
//! `identity-refused` (403) and `certificate-refused`. Accepts, resends and duplicates get their
//! `received` leaf from the outbox, in the same batch as the change ([`sammen_outbox::AcceptAudit::received`]).
//!
//! No personal data: identifiers of messages and organisations, codes, hashes; the patient only as the
//! log's keyed hash. Ids read from a message that failed validation are kept only when they look like
//! identifiers ([`plain_id`]), since such a message's "id" could hold anything.

use crate::state::Ingress;
use sammen_model::{Party, Report};
use sammen_outbox::sammen_audit::{Event, LeafEvent, Outcome};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::warn;

/// Unix milliseconds.
pub(crate) fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `s` when it looks like an identifier (1..=128 characters of `[A-Za-z0-9.:_-]`).
fn plain_id(s: Option<&String>) -> Option<String> {
    s.filter(|v| {
        !v.is_empty()
            && v.len() <= 128
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'))
    })
    .cloned()
}

fn plain_party(p: &Party) -> Option<Party> {
    let q = Party {
        gln: plain_id(p.gln.as_ref()),
        sor: plain_id(p.sor.as_ref()),
    };
    (!q.is_empty()).then_some(q)
}

/// A leaf about the message `report` describes (when there is one) received over `fingerprint`.
pub(crate) fn leaf(
    report: Option<&Report>,
    body: &[u8],
    fingerprint: Option<&str>,
    event: Event,
    outcome: Outcome,
    at: SystemTime,
) -> LeafEvent<'static> {
    let mut e = LeafEvent::new(millis(at), event, outcome);
    if let Some(r) = report {
        e.message_id = plain_id(r.message_id.as_ref()).map(Into::into);
        e.bundle_id = plain_id(r.envelope_id.as_ref()).map(Into::into);
        e.family = r.family;
        e.event_code = plain_id(r.event.as_ref()).map(Into::into);
        e.sender = plain_party(&r.sender).map(Cow::Owned);
        e.receiver = plain_party(&r.receiver).map(Cow::Owned);
        // Hashed with the log's key by the audit log; never stored as is.
        e.patient = r.patient.clone();
    }
    if !body.is_empty() {
        e.payload_sha256 = Some(Sha256::digest(body).into());
    }
    e.cert_fingerprint = fingerprint.map(|f| Cow::Owned(f.to_owned()));
    e
}

/// `received` then the refusal `event`, in one durable batch. Answered only after it is durable; a failing
/// audit log is logged and does not change the answer (the request is refused either way).
pub(crate) async fn refused(
    ing: &Ingress,
    report: Option<&Report>,
    body: &[u8],
    fingerprint: Option<&str>,
    event: Event,
) {
    if ing.outbox.audit().is_none() {
        return;
    }
    let now = SystemTime::now();
    let outcome = Outcome::SeriousFailure;
    let mut leaves = Vec::with_capacity(2);
    if report.is_some() {
        let ok = Outcome::Success;
        leaves.push(leaf(report, body, fingerprint, Event::Received, ok, now));
    }
    leaves.push(leaf(report, body, fingerprint, event, outcome, now));
    let ob = ing.outbox.clone();
    match tokio::task::spawn_blocking(move || ob.record_all(leaves)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => warn!(error = %e, "audit: recording a refusal failed"),
        Err(_) => warn!("audit: recording a refusal was aborted"),
    }
}

/// The `rejected` event for an invalid report: its first error's code.
pub(crate) fn rejected(report: &Report) -> Event {
    let code = report
        .errors()
        .next()
        .map_or_else(|| "invalid".to_owned(), |i| i.code.clone());
    Event::Rejected { code }
}
