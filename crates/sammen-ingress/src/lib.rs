//! # sammen-ingress: the HTTP door of the broker
//!
//! Why it exists: a hospital system posting an admission alert needs one unambiguous answer — "we have it
//! and will deliver it" (202), "it is wrong, here is why" (4xx with the validation report), or "not now,
//! retry" (503/507). This crate turns a POST into exactly one of those, with the validator
//! (`sammen-adapters`) at the door and the durable outbox behind it.
//!
//! Invariants kept here:
//! - 202 is sent only after `Outbox::accept` returned, i.e. the message is fdatasync'd in the outbox.
//! - Bad input never yields a 500: every refusal is a 4xx with a machine-readable body; store trouble is
//!   503 (or 507 for a full disk) with a reason.
//! - The body is never buffered beyond `max_body` bytes: the limit is enforced while reading (413).
//! - No response body and no log line carries personal data or message content: refusals carry the
//!   validation [`Report`](sammen_model::Report) (whose issues never echo values; the patient id is never
//!   serialised), status carries ids, states and times only.
//! - Validation and the outbox's fsync wait run off the async workers (blocking pool) when they can take
//!   long.
//!
//! - Over HTTPS ([`tls`]) every request carries the verified peer ([`sammen_identity::PeerIdentity`]); a message
//!   whose sender is not one of the certificate's identities is refused with 403 and a reason, before it is
//!   stored. Plain HTTP ([`router`] on a loopback listener) has no peer and no such check.
//!
//! - Inbox ([`inbox`]): a receiver's messages go only to a certificate allowed to receive for its GLN
//!   (plain HTTP has no peer and reads no inbox); a delivery is acked on the bus only after its HTTP ack,
//!   and one not acked within the visibility timeout, or unacked when the process stops, goes back to its
//!   queue. Memory per receiver is bounded by `max_unsettled`, never by the backlog.
//!
//! - Acknowledgements (FHIR Acknowledgement, OIOXML XCTL; MedCom §5) are posted like any message and go
//!   through `Outbox::accept_acknowledgement`: the ack's 202 and the original's move to
//!   `acknowledged(code)` are one durable batch. The 202 says `correlated` or `uncorrelated` (routed all
//!   the same); a second, different ack answers 409 `ack.already-acknowledged` (the first is kept); an ack
//!   answering an ack 422 `ack.answers-acknowledgement`. A resend of an acknowledged message answers 200
//!   `acknowledged` with the first ack's id, and that ack is queued to the sender again (resend flag).
//! - Audit (issue #5), when the outbox has a log: every request that reached validation leaves `received`
//!   plus its outcome, durable before the answer — `accepted`/`resend`/`duplicate` from the outbox in the
//!   same batch as the change, `rejected` (first error code), `identity-refused` (403) and
//!   `certificate-refused` (unregistered certificate) as one batch of their own; a certificate refused in the
//!   TLS handshake (unknown CA, expired, none...) gets a rate-limited `certificate-refused` leaf with its
//!   reason code and fingerprint ([`tls::HandshakeAudit`]). Leaves hold ids, codes,
//!   hashes, GLN/SOR and the certificate fingerprint; ids of an invalid message only when they look like
//!   ids; the patient only as the log's keyed hash.
//!
//! - AMQP door ([`amqp`], `bus.amqp_ingress`): messages from the `sammen.ingress` queue get the same
//!   validation, dedupe, states and leaves; the sender must be one the AMQP user-id may send as. An invalid
//!   one is answered with a broker-built fatal-error Acknowledgement (valid by our own validator, ids
//!   derived from the message, so a redelivery answers the same); a delivery is acked only once its
//!   outcome is durable, and requeued when the store cannot take it.
//!
//! - Telemetry: with an `axum::Extension<sammen_telemetry::SharedTelemetry>` on the router, every answer
//!   of `POST /v1/messages` is counted once (received after validation; accepted, resend, duplicate, or
//!   rejected by family and code), with label values from closed sets only.
//!
//! Routes: `POST /v1/messages`, `GET /v1/messages/{id}`, `GET /v1/inbox/{gln}`,
//! `POST /v1/inbox/{gln}/{delivery_id}/ack`, `GET /healthz`, `GET /readyz` ([`router`];
//! [`tls::tls_router`] for HTTPS).
#![forbid(unsafe_code)]

mod accept;
mod ack;
pub mod amqp;
mod answer;
mod handshake;
pub mod inbox;
mod leaves;
mod observe;
mod receivers;
mod state;
mod status;
pub mod tls;

pub use answer::{Accepted, AckInfo, ErrorBody, UNKNOWN_RECEIVER};
pub use inbox::{InboxConfig, InboxRegistry};
pub use receivers::Receivers;
pub use state::{Ingress, IngressConfig, SharedOutbox};
pub use status::{status_view, RecordView, StatusView, StepView};

use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

/// The ingress routes over `state`.
pub fn router(state: Arc<Ingress>) -> Router {
    Router::new()
        .route("/v1/messages", post(accept::post_message))
        .route("/v1/messages/{id}", get(status::get_message))
        .route("/v1/inbox/{gln}", get(inbox::get_inbox))
        .route("/v1/inbox/{gln}/{delivery_id}/ack", post(inbox::post_ack))
        .with_state(state.clone())
        .merge(probes(state))
}

/// `GET /healthz` and `GET /readyz` alone, for the plain-HTTP operations listener beside `/metrics`:
/// orchestrator probes (kubelet, Docker) carry no client certificate, and these answers hold no personal
/// data (states and counts only).
pub fn probes(state: Arc<Ingress>) -> Router {
    Router::new()
        .route("/healthz", get(status::healthz))
        .route("/readyz", get(status::readyz))
        .with_state(state)
}
