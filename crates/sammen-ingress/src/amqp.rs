//! The AMQP door: EHR integrations that publish to the `sammen.ingress` queue instead of posting over
//! HTTPS. Same validation, dedupe, states and audit leaves as `POST /v1/messages`; the identity is the
//! message's AMQP `user-id` (RabbitMQ checks it equals the connection's user), mapped to the GLN/SOR
//! identities that user may send as ([`AmqpUsers`]).
//!
//! There is no HTTP answer to give, so a message that fails validation is answered the MedCom way: a
//! `fatal-error` Acknowledgement with an OperationOutcome, from the message's receiver to its sender, built
//! by the broker (`sammen_fhir::build`) and queued like any acknowledgement (ids derived from the message,
//! so a redelivery is a duplicate). A message whose sender cannot be trusted or addressed is dropped with
//! its audit leaf and a log line (ids only).
//!
//! AMQP deliveries are acked only once the outcome is durable (accepted, duplicate, answered, or refused
//! with its leaf); store trouble nacks with requeue, so nothing is lost.

use crate::leaves;
use crate::state::Ingress;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use sammen_bus::queue_consumer::{timed, QueueConsumer};
use sammen_bus::Topology;
use sammen_fhir::build::{acknowledgement, derived_uuid, AckSpec, Org};
use sammen_model::{AckCode, Family, Party, Report};
use sammen_outbox::sammen_audit::Event;
use sammen_outbox::{
    AcceptAudit, AcceptOutcome, AcceptRequest, AckAcceptOutcome, MessageMeta, OutboxError,
};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Keeps the ids this module derives apart from those other builders derive from the same seed.
const ID_DOMAIN: &str = "sammen-amqp-nack";

/// The ingress queue of a topology (`ns.sammen.ingress` beside `ns.sammen.inbox.*`).
pub fn ingress_queue(t: &Topology) -> String {
    match t.inbox_prefix.strip_suffix("inbox.") {
        Some(p) => format!("{p}ingress"),
        None => "sammen.ingress".into(),
    }
}

/// AMQP user → the organisations it may send as (GLN, and SOR when the entry names one).
#[derive(Debug, Clone, Default)]
pub struct AmqpUsers(HashMap<String, Vec<Party>>);

impl AmqpUsers {
    /// From `(user, send_as)` pairs.
    pub fn new(users: impl IntoIterator<Item = (String, Vec<Party>)>) -> Self {
        AmqpUsers(users.into_iter().collect())
    }

    fn may_send_as(&self, user: &str, sender: &Party) -> bool {
        self.0.get(user).is_some_and(|allowed| {
            allowed.iter().any(|a| {
                a.gln.is_some() && a.gln == sender.gln && (a.sor.is_none() || a.sor == sender.sor)
            })
        })
    }
}

/// What became of one AMQP message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AmqpOutcome {
    /// Stored (accepted, a resend, an acknowledgement, or a resend answered with its acknowledgement).
    Accepted {
        /// Its message id.
        message_id: String,
    },
    /// Already stored: nothing written.
    Duplicate,
    /// Invalid: answered with a fatal-error Acknowledgement to its sender.
    Answered {
        /// The acknowledgement's message id.
        ack_message_id: String,
        /// The validation error code it reports.
        code: String,
    },
    /// Refused without an answer (unknown user, sender not allowed, nobody to answer to); leaf written.
    Refused {
        /// Stable code.
        code: String,
    },
    /// The store could not take it now: requeue and retry.
    Retry,
}

/// The `medcom-acknowledgement-error-codes` code for a refused report.
fn ack_error_code(report: &Report) -> &'static str {
    let first = report.errors().next().map_or("", |i| i.code.as_str());
    if first == crate::answer::UNKNOWN_RECEIVER {
        "MSG_Receiver_Identifier_UNKNOWN"
    } else if first.starts_with("xml.") {
        "MSG_Damaged_durin_transport"
    } else if first.contains("valueset") {
        "MSG_VALUESET_VALUE_UNKNOWN"
    } else {
        "MSG_Datatype_Wrong"
    }
}

/// The fatal-error acknowledgement answering the invalid `report` (bytes `body`), or why there is none.
fn fatal_ack(ing: &Ingress, report: &Report, body: &[u8]) -> Result<AcceptRequest, &'static str> {
    let message_id = report.message_id.clone().ok_or("no message id")?;
    let to = &report.sender;
    let from = &report.receiver;
    let (Some(to_gln), Some(to_sor), Some(from_gln), Some(from_sor)) = (
        to.gln.clone(),
        to.sor.clone(),
        from.gln.clone(),
        from.sor.clone(),
    ) else {
        return Err("sender or receiver lacks a GLN or SOR code");
    };
    // The answer goes to the sender's queue: it must be one the broker serves.
    let routed = ing
        .receivers
        .route(to)
        .ok_or("the sender is not served here")?;
    let seed = format!("{message_id}\0{}", hex32(&Sha256::digest(body).into()));
    let (mid, bid) = (
        derived_uuid(ID_DOMAIN, &seed, 0),
        derived_uuid(ID_DOMAIN, &seed, 1),
    );
    let mut n = 1;
    let mut next = || {
        n += 1;
        derived_uuid(ID_DOMAIN, &seed, n)
    };
    let mut spec = AckSpec {
        original_message_id: message_id,
        original_activity: report.event.clone().unwrap_or_else(|| "new-message".into()),
        sender: Org {
            gln: from_gln,
            sor: from_sor,
        },
        receiver: Org {
            gln: to_gln,
            sor: to_sor,
        },
        code: AckCode::FatalError,
        error_code: Some(ack_error_code(report).into()),
        time: SystemTime::now(),
    };
    let mut xml = acknowledgement(&spec, &mid, &bid, &mut next)
        .map_err(|_| "the message's ids cannot be acknowledged")?;
    // The answer must pass our own validator; an invalid message's activity code may be the very thing
    // that is wrong, so fall back to a generic one.
    if !sammen_adapters::validate(xml.as_bytes(), &ing.cfg.validate).is_valid() {
        spec.original_activity = "new-message".into();
        xml = acknowledgement(&spec, &mid, &bid, &mut next)
            .map_err(|_| "the message's ids cannot be acknowledged")?;
        if !sammen_adapters::validate(xml.as_bytes(), &ing.cfg.validate).is_valid() {
            return Err("no valid acknowledgement could be built");
        }
    }
    Ok(AcceptRequest {
        bytes: xml.into_bytes(),
        meta: MessageMeta {
            message_id: mid,
            envelope_id: bid,
            family: Family::Acknowledgement,
            event: AckCode::FatalError.as_str().into(),
            sender: from.clone(),
            receiver: Party {
                gln: Some(routed),
                sor: to.sor.clone(),
            },
            received: SystemTime::now(),
        },
    })
}

fn hex32(b: &[u8; 32]) -> String {
    b.iter().map(|v| format!("{v:02x}")).collect()
}

fn store_outcome(r: Result<AmqpOutcome, OutboxError>) -> AmqpOutcome {
    match r {
        Ok(o) => o,
        Err(OutboxError::InvalidRequest(_)) => AmqpOutcome::Refused {
            code: "ingress.identifier-size".into(),
        },
        Err(e) => {
            warn!(error = %e, "amqp ingress: store unavailable; requeueing");
            AmqpOutcome::Retry
        }
    }
}

/// Validate, authorise and store one AMQP message published by `user`.
pub async fn process(
    ing: &Arc<Ingress>,
    users: &AmqpUsers,
    user: Option<&str>,
    body: &[u8],
) -> AmqpOutcome {
    let opts = ing.cfg.validate.clone();
    let b = body.to_vec();
    let Ok(report) =
        tokio::task::spawn_blocking(move || sammen_adapters::validate(&b, &opts)).await
    else {
        return AmqpOutcome::Retry;
    };
    let user = user.unwrap_or_default();
    let allowed = users.may_send_as(user, &report.sender);
    if !allowed {
        // Refused before anything is stored; an untrusted sender gets no answer in its name.
        leaves::refused(ing, Some(&report), body, None, Event::IdentityRefused).await;
        debug!(family = ?report.family, "amqp ingress: sender not allowed for this AMQP user");
        return AmqpOutcome::Refused {
            code: "identity.sender-not-allowed".into(),
        };
    }
    let report = if report.is_valid() {
        match crate::accept::to_request(ing, report.clone(), body.to_vec()) {
            Ok(req) => return store_valid(ing, &report, req).await,
            Err(refused) => *refused,
        }
    } else {
        report
    };
    // Invalid: leaves, then the MedCom answer.
    let code = report
        .errors()
        .next()
        .map_or_else(|| "invalid".to_owned(), |i| i.code.clone());
    leaves::refused(ing, Some(&report), body, None, leaves::rejected(&report)).await;
    let req = match fatal_ack(ing, &report, body) {
        Ok(r) => r,
        Err(why) => {
            warn!(
                why,
                "amqp ingress: invalid message dropped without an answer"
            );
            return AmqpOutcome::Refused { code };
        }
    };
    let ack_message_id = req.meta.message_id.clone();
    let ob = ing.outbox.clone();
    let r = tokio::task::spawn_blocking(move || ob.accept_with(req, AcceptAudit::default()))
        .await
        .unwrap_or_else(|_| Err(OutboxError::Corrupt("accept task aborted".into())));
    store_outcome(r.map(|o| {
        if matches!(o, AcceptOutcome::Accepted { .. }) {
            ing.wake.notify_one();
        }
        AmqpOutcome::Answered {
            ack_message_id,
            code,
        }
    }))
}

async fn store_valid(ing: &Arc<Ingress>, report: &Report, req: AcceptRequest) -> AmqpOutcome {
    let message_id = req.meta.message_id.clone();
    let audit = AcceptAudit::default()
        .patient(report.patient.clone())
        .received(true);
    let response = report
        .family
        .filter(|f| f.is_acknowledgement())
        .and(report.response.clone());
    let ob = ing.outbox.clone();
    let r = tokio::task::spawn_blocking(move || match response {
        Some(resp) => ob
            .accept_acknowledgement(req, audit, &resp)
            .map(|o| match o {
                AckAcceptOutcome::Accepted { .. } => None,
                AckAcceptOutcome::Duplicate { .. } => Some(AmqpOutcome::Duplicate),
                AckAcceptOutcome::Conflict { .. } => Some(AmqpOutcome::Refused {
                    code: sammen_outbox::CONFLICT_CODE.into(),
                }),
                AckAcceptOutcome::AlreadyAcknowledged { .. } => Some(AmqpOutcome::Refused {
                    code: sammen_outbox::ALREADY_ACKNOWLEDGED_CODE.into(),
                }),
                AckAcceptOutcome::AnswersAcknowledgement { .. } => Some(AmqpOutcome::Refused {
                    code: sammen_outbox::ACK_OF_ACK_CODE.into(),
                }),
            }),
        None => ob.accept_with(req, audit).map(|o| match o {
            AcceptOutcome::Duplicate { .. } => Some(AmqpOutcome::Duplicate),
            AcceptOutcome::Conflict { .. } => Some(AmqpOutcome::Refused {
                code: sammen_outbox::CONFLICT_CODE.into(),
            }),
            _ => None,
        }),
    })
    .await
    .unwrap_or_else(|_| Err(OutboxError::Corrupt("accept task aborted".into())));
    store_outcome(r.map(|o| {
        o.unwrap_or_else(|| {
            ing.wake.notify_one();
            AmqpOutcome::Accepted { message_id }
        })
    }))
}

/// Consume `queue` on RabbitMQ at `url` until `shutdown`, reconnecting (with `backoff`) after any failure.
pub async fn run_amqp_ingress(
    ing: Arc<Ingress>,
    users: AmqpUsers,
    url: String,
    queue: String,
    backoff: sammen_backoff::ExponentialBackoff,
    shutdown: CancellationToken,
) {
    let mut delays = backoff.stream();
    loop {
        match consume(&ing, &users, &url, &queue, &shutdown).await {
            Ok(()) => return,
            Err(e) => {
                warn!(queue = %queue, error = %e, "amqp ingress: consumer failed, reconnecting")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delays.next_delay()) => {}
        }
    }
}

async fn consume(
    ing: &Arc<Ingress>,
    users: &AmqpUsers,
    url: &str,
    queue: &str,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let mut qc = QueueConsumer::open(url, queue, 16, "sammen-ingress").await?;
    info!(queue = %queue, "amqp ingress: consuming");
    let r = async {
        loop {
            let d = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                d = qc.next() => d?,
            };
            let user = d.properties.user_id().as_ref().map(|u| u.to_string());
            match process(ing, users, user.as_deref(), &d.data).await {
                AmqpOutcome::Retry => {
                    let requeue = BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    };
                    timed("basic.nack", d.acker.nack(requeue)).await?;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                o => {
                    debug!(outcome = ?o, "amqp ingress: done");
                    timed("basic.ack", d.acker.ack(BasicAckOptions::default())).await?;
                }
            }
        }
    }
    .await;
    qc.close("sammen ingress stopping").await;
    r
}
