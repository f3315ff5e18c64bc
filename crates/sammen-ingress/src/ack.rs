//! Answers for an acknowledgement posted to `POST /v1/messages` (MedCom reliable messaging, §5): it was
//! correlated with the message it answers and accepted in one batch by the outbox
//! ([`sammen_outbox::Outbox::accept_acknowledgement`]); here its outcome becomes the HTTP answer.

use crate::answer::{self, Accepted};
use crate::observe::Observe;
use crate::state::Ingress;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use sammen_model::{Issue, Report, ResponseRef};
use sammen_outbox::{AckAcceptOutcome, MessageMeta, ACK_OF_ACK_CODE, ALREADY_ACKNOWLEDGED_CODE};
use std::time::Duration;
use tracing::{debug, info};

/// The answer for `outcome` of the acknowledgement `meta` answering `response`.
pub(crate) fn answer(
    ing: &Ingress,
    obs: &Observe,
    outcome: AckAcceptOutcome,
    meta: &MessageMeta,
    response: &ResponseRef,
    took: Duration,
) -> Response {
    let message_id = meta.message_id.clone();
    match outcome {
        AckAcceptOutcome::Accepted {
            id,
            resend_of,
            originals,
        } => {
            ing.wake.notify_one();
            let correlated = !originals.is_empty();
            info!(record = %id, family = %meta.family, correlated, originals = originals.len(), "acknowledgement accepted");
            obs.accepted(meta, id.0, resend_of.is_some(), took);
            (
                StatusCode::ACCEPTED,
                Json(Accepted {
                    message_id,
                    status: "accepted".into(),
                    resend: resend_of.is_some(),
                    acknowledges: Some(response.message_id.clone()),
                    correlation: Some(
                        if correlated {
                            "correlated"
                        } else {
                            "uncorrelated"
                        }
                        .into(),
                    ),
                    acknowledgement: None,
                }),
            )
                .into_response()
        }
        AckAcceptOutcome::Duplicate { id } => {
            debug!(record = %id, "duplicate acknowledgement");
            obs.duplicate(&message_id, meta.family, id.0);
            (
                StatusCode::OK,
                Json(Accepted {
                    message_id,
                    status: "duplicate".into(),
                    acknowledges: Some(response.message_id.clone()),
                    ..Accepted::default()
                }),
            )
                .into_response()
        }
        AckAcceptOutcome::Conflict { existing } => {
            debug!(record = %existing, "conflict");
            let code = sammen_outbox::CONFLICT_CODE;
            obs.rejected(
                Some(&message_id),
                Some(meta.family),
                code,
                StatusCode::CONFLICT,
            );
            answer::error(
                StatusCode::CONFLICT,
                "conflict",
                "this envelope (Bundle) id was already used by this sender for another message id",
            )
        }
        AckAcceptOutcome::AlreadyAcknowledged { original, ack } => {
            debug!(original = %original, first = %ack.record, "second acknowledgement refused");
            let code = ALREADY_ACKNOWLEDGED_CODE;
            obs.rejected(
                Some(&message_id),
                Some(meta.family),
                code,
                StatusCode::CONFLICT,
            );
            answer::error(
                StatusCode::CONFLICT,
                code,
                "the message was already acknowledged by another acknowledgement; the first is kept (MedCom: never a different answer)",
            )
        }
        AckAcceptOutcome::AnswersAcknowledgement { original } => {
            debug!(original = %original, "acknowledgement of an acknowledgement refused");
            let mut r = Report::default();
            r.push(Issue::error(
                ACK_OF_ACK_CODE,
                "response",
                "it answers an acknowledgement, and an acknowledgement is never acknowledged (MedCom KR2)",
            ));
            obs.invalid(&r);
            answer::invalid(&r)
        }
    }
}
