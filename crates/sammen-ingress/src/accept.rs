//! `POST /v1/messages`.

use crate::answer::{self, Accepted, AckInfo, UNKNOWN_RECEIVER};
use crate::leaves;
use crate::observe::Observe;
use crate::state::Ingress;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::{BodyExt, Limited};
use sammen_model::{Issue, Report};
use sammen_outbox::sammen_audit::Event;
use sammen_outbox::{
    AcceptAudit, AcceptOutcome, AcceptRequest, AckAcceptOutcome, MessageMeta, OutboxError,
};
use std::sync::Arc;
use std::time::SystemTime;
use tracing::{debug, info, warn, Instrument};

const MEDIA_TYPES: [&str; 3] = ["application/fhir+xml", "application/xml", "text/xml"];

fn media_type_ok(headers: &HeaderMap) -> bool {
    let Some(v) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = v.split(';').next().unwrap_or_default().trim();
    MEDIA_TYPES.iter().any(|m| m.eq_ignore_ascii_case(essence))
}

/// Read at most `limit` bytes; `None` when the body is larger (or broke off).
async fn read_limited(body: Body, limit: usize) -> Result<Bytes, Response> {
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if crate::tls::is_body_timeout(&*e) => Err(answer::error(
            StatusCode::REQUEST_TIMEOUT,
            "body-timeout",
            "the request body did not arrive in time",
        )),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(answer::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("the body exceeds {limit} bytes"),
        )),
        Err(_) => Err(answer::error(
            StatusCode::BAD_REQUEST,
            "body-read",
            "the request body could not be read to its end",
        )),
    }
}

fn event_ok(e: &str) -> bool {
    !e.is_empty()
        && e.len() <= 64
        && e.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Build the outbox request from a valid report, or the report to refuse it with (422).
pub(crate) fn to_request(
    ing: &Ingress,
    mut report: Report,
    bytes: Vec<u8>,
) -> Result<AcceptRequest, Box<Report>> {
    let refuse = |mut report: Report, code: &str, location: &str, text: &str| {
        report.push(Issue::error(code, location, text));
        Err(Box::new(report))
    };
    let Some(family) = report.family else {
        return refuse(
            report,
            "ingress.family-unsupported",
            "document",
            "the message family is not one the broker forwards (envelope receipts are answered, not forwarded)",
        );
    };
    let (Some(message_id), Some(envelope_id)) =
        (report.message_id.clone(), report.envelope_id.clone())
    else {
        return refuse(
            report,
            "ingress.identifiers-missing",
            "document",
            "a message id and an envelope id are required",
        );
    };
    let Some(gln) = ing.receivers.route(&report.receiver) else {
        return refuse(
            report,
            UNKNOWN_RECEIVER,
            "receiver",
            "the receiver is not served by this broker",
        );
    };
    if report.sender.gln.is_none() {
        return refuse(
            report,
            "ingress.sender-gln-missing",
            "sender",
            "the sender must be identified by GLN",
        );
    }
    let event = report
        .event
        .clone()
        .unwrap_or_else(|| "message".to_string());
    if !event_ok(&event) {
        return refuse(
            report,
            "ingress.event-unroutable",
            "event",
            "the event code cannot be used in a routing key",
        );
    }
    report.receiver.gln = Some(gln);
    Ok(AcceptRequest {
        bytes,
        meta: MessageMeta {
            message_id,
            envelope_id,
            family,
            event,
            sender: report.sender,
            receiver: report.receiver,
            received: SystemTime::now(),
        },
    })
}

/// What the outbox answered: a plain message's outcome, or an acknowledgement's.
enum Stored {
    Plain(AcceptOutcome),
    Ack(AckAcceptOutcome),
}

/// `POST /v1/messages`.
pub(crate) async fn post_message(
    State(ing): State<Arc<Ingress>>,
    peer: Option<axum::Extension<sammen_identity::PeerIdentity>>,
    tel: Option<axum::Extension<sammen_telemetry::SharedTelemetry>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (obs, started) = (Observe(tel.map(|e| e.0)), std::time::Instant::now());
    if !media_type_ok(&headers) {
        obs.rejected(
            None,
            None,
            "unsupported-media-type",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        );
        return answer::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Content-Type must be application/fhir+xml, application/xml or text/xml",
        );
    }
    let limit = ing.cfg.max_body;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        obs.rejected(None, None, "too-large", StatusCode::PAYLOAD_TOO_LARGE);
        return answer::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("the body exceeds {limit} bytes"),
        );
    }
    // Over a configured limit: 503 + Retry-After, counted under `code`.
    let busy = |code: &'static str, text: String| {
        obs.rejected(None, None, code, StatusCode::SERVICE_UNAVAILABLE);
        answer::retry_later(
            StatusCode::SERVICE_UNAVAILABLE,
            code,
            text,
            ing.cfg.retry_after_secs,
        )
    };
    let depth = ing.outbox.depth();
    if depth > ing.cfg.max_depth {
        return busy(
            "backpressure",
            format!(
                "{depth} messages wait to be published (limit {}); retry later",
                ing.cfg.max_depth
            ),
        );
    }
    // Held until this request is answered: its bytes live through validation and the accept.
    let want = declared.map_or(limit, |n| usize::try_from(n).unwrap_or(limit).min(limit));
    let Some(_room) = ing.bodies.reserve(want, ing.cfg.body_memory_wait).await else {
        return busy(
            "memory-budget",
            format!(
                "request bodies in memory are at their limit ({} bytes); retry later",
                ing.cfg.body_memory_bytes.max(limit)
            ),
        );
    };
    let bytes = match read_limited(body, limit).await {
        Ok(b) => b,
        Err(r) => {
            obs.body_refused(&r);
            return r;
        }
    };

    let opts = ing.cfg.validate.clone();
    let report = if bytes.len() >= ing.cfg.blocking_validate_bytes {
        let b = bytes.clone();
        match tokio::task::spawn_blocking(move || sammen_adapters::validate(&b, &opts)).await {
            Ok(r) => r,
            Err(_) => {
                obs.rejected(
                    None,
                    None,
                    "validation-aborted",
                    StatusCode::UNPROCESSABLE_ENTITY,
                );
                return answer::error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "validation-aborted",
                    "the validator could not finish this message",
                );
            }
        }
    } else {
        sammen_adapters::validate(&bytes, &opts)
    };
    obs.received(&report, bytes.len());
    let fingerprint = peer
        .as_ref()
        .map(|axum::Extension(p)| p.cert.fingerprint.clone());
    let fp = fingerprint.as_deref();
    // Over HTTPS: the sender must be one of the certificate's identities (an invalid message without any
    // sender gets its 422 below instead).
    if let Some(axum::Extension(peer)) = &peer {
        match sammen_identity::authorize_sender(peer, &report) {
            Err(sammen_identity::Refusal::Sender(sammen_identity::SenderRefusal::Missing))
                if !report.is_valid() => {}
            Err(r) => {
                let ev = Event::IdentityRefused;
                leaves::refused(&ing, Some(&report), &bytes, fp, ev).await;
                return crate::tls::refused(&r);
            }
            Ok(()) => {}
        }
    }
    if !report.is_valid() {
        debug!(family = ?report.family, errors = report.errors().count(), "refused: invalid");
        obs.invalid(&report);
        let ev = leaves::rejected(&report);
        leaves::refused(&ing, Some(&report), &bytes, fp, ev).await;
        return answer::invalid(&report);
    }
    // An acknowledgement is correlated with what it answers (acks only; MedCom §5).
    let response = report
        .family
        .filter(|f| f.is_acknowledgement())
        .map(|_| report.response.clone());
    if let Some(None) = response {
        let mut report = report;
        report.push(Issue::error(
            "ack.response-missing",
            "response",
            "an acknowledgement must name the message it answers",
        ));
        obs.invalid(&report);
        let ev = leaves::rejected(&report);
        leaves::refused(&ing, Some(&report), &bytes, fp, ev).await;
        return answer::invalid(&report);
    }
    let response = response.flatten();
    // For the audit leaf: the patient is only ever stored as a keyed hash, the certificate by fingerprint.
    let audit = AcceptAudit::default()
        .patient(report.patient.clone())
        .cert_fingerprint(fingerprint.clone())
        .received(true);
    let req = match to_request(&ing, report, bytes.to_vec()) {
        Ok(r) => r,
        // The report comes back as it was, plus the refusal: its ids and parties make the leaves. (It
        // was cloned for every accept, in case of this, while the audit was on.)
        Err(report) => {
            obs.invalid(&report);
            let ev = leaves::rejected(&report);
            leaves::refused(&ing, Some(&report), &bytes, fp, ev).await;
            return answer::invalid(&report);
        }
    };
    let message_id = req.meta.message_id.clone();
    // From here on every log line carries the message id (the relay and delivery use the same span).
    let span = sammen_telemetry::message_span(&message_id);
    async move {
        let family = req.meta.family;
        let meta = req.meta.clone();
        let ob = ing.outbox.clone();
        let answers = response.clone();
        let outcome = match tokio::task::spawn_blocking(move || match answers {
            Some(r) => ob.accept_acknowledgement(req, audit, &r).map(Stored::Ack),
            None => ob.accept_with(req, audit).map(Stored::Plain),
        })
        .await
        {
            Ok(r) => r,
            Err(_) => Err(OutboxError::Corrupt("accept task aborted".into())),
        };
        // An acknowledgement's own outcomes; the plain ones below.
        let outcome = match (outcome, &response) {
            (Ok(Stored::Ack(o)), Some(r)) => {
                let (msg, took) = (&meta, started.elapsed());
                return crate::ack::answer(&ing, &obs, o, msg, r, took);
            }
            (Ok(Stored::Ack(_)), None) => Err(OutboxError::Corrupt("unreachable".into())),
            (Ok(Stored::Plain(o)), _) => Ok(o),
            (Err(e), _) => Err(e),
        };
        match outcome {
            Ok(AcceptOutcome::Accepted { id }) | Ok(AcceptOutcome::Resend { id, .. }) => {
                let resend = matches!(outcome, Ok(AcceptOutcome::Resend { .. }));
                ing.wake.notify_one();
                info!(record = %id, family = %family, resend, "accepted");
                obs.accepted(&meta, id.0, resend, started.elapsed());
                (
                    StatusCode::ACCEPTED,
                    Json(Accepted {
                        message_id,
                        status: "accepted".into(),
                        resend,
                        ..Accepted::default()
                    }),
                )
                    .into_response()
            }
            Ok(AcceptOutcome::AlreadyAcknowledged {
                id, ack, reroute, ..
            }) => {
                // MedCom: a resend of an acknowledged message gets the same acknowledgement back.
                ing.wake.notify_one();
                info!(record = %id, reroute = %reroute, family = %family, "resend answered with its acknowledgement");
                obs.duplicate(&message_id, family, id.0);
                (
                    StatusCode::OK,
                    Json(Accepted {
                        message_id,
                        status: "acknowledged".into(),
                        resend: true,
                        acknowledgement: Some(AckInfo {
                            message_id: ack.message_id,
                            code: ack.code.as_str().into(),
                        }),
                        ..Accepted::default()
                    }),
                )
                    .into_response()
            }
            Ok(AcceptOutcome::Duplicate { id }) => {
                debug!(record = %id, "duplicate");
                obs.duplicate(&message_id, family, id.0);
                (
                    StatusCode::OK,
                    Json(Accepted {
                        message_id,
                        status: "duplicate".into(),
                        ..Accepted::default()
                    }),
                )
                    .into_response()
            }
            Ok(AcceptOutcome::Conflict { existing }) => {
                debug!(record = %existing, "conflict");
                obs.rejected(
                    Some(&message_id),
                    Some(family),
                    sammen_outbox::CONFLICT_CODE,
                    StatusCode::CONFLICT,
                );
                answer::error(
                    StatusCode::CONFLICT,
                    "conflict",
                    "this envelope (Bundle) id was already used by this sender for another message id",
                )
            }
            Err(OutboxError::InvalidRequest(why)) => {
                let mut r = Report::default();
                r.push(Issue::error("ingress.identifier-size", "document", why));
                obs.invalid(&r);
                answer::invalid(&r)
            }
            Err(e) if e.is_disk_full() => {
                warn!("accept refused: disk full");
                obs.rejected(
                    Some(&message_id),
                    Some(family),
                    "disk-full",
                    StatusCode::INSUFFICIENT_STORAGE,
                );
                answer::retry_later(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "disk-full",
                    "the broker's disk is full; nothing was stored; retry later".into(),
                    ing.cfg.retry_after_secs,
                )
            }
            Err(e) => {
                warn!(error = %e, "accept failed");
                obs.rejected(
                    Some(&message_id),
                    Some(family),
                    "store-unavailable",
                    StatusCode::SERVICE_UNAVAILABLE,
                );
                answer::retry_later(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store-unavailable",
                    "the outbox could not store the message; nothing was promised; retry later".into(),
                    ing.cfg.retry_after_secs,
                )
            }
        }
    }
    .instrument(span)
    .await
}
