//! Response bodies.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sammen_model::Report;
use serde::{Deserialize, Serialize};

/// Issue code for a receiver the broker does not serve.
pub const UNKNOWN_RECEIVER: &str = "MSG_Receiver_Identifier_UNKNOWN";

/// 202 / 200 body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// The message id (MessageHeader id / letter id): use it with `GET /v1/messages/{id}`.
    pub message_id: String,
    /// `accepted`, `duplicate`, or `acknowledged` (a resend of a message already acknowledged: the
    /// acknowledgement in `acknowledgement` is sent back to the sender again; nothing is forwarded).
    pub status: String,
    /// True when this was a resend of an earlier message (same message id, new envelope).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resend: bool,
    /// For an acknowledgement: the message id it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledges: Option<String>,
    /// For an acknowledgement: `correlated` (the answered message is known here and is now
    /// acknowledged) or `uncorrelated` (routed all the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<String>,
    /// With `status = "acknowledged"`: the acknowledgement already given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledgement: Option<AckInfo>,
}

/// An acknowledgement, as answers name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckInfo {
    /// The acknowledgement's message id.
    pub message_id: String,
    /// Its code: `ok`, `transient-error` or `fatal-error`.
    pub code: String,
}

/// Body of every non-2xx answer except 422 (which carries the [`Report`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code (`too-large`, `unsupported-media-type`, `conflict`, `backpressure`, `disk-full`, ...).
    pub error: String,
    /// What to do about it. Never echoes message content.
    pub reason: String,
}

pub(crate) fn error(status: StatusCode, code: &str, reason: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorBody {
            error: code.into(),
            reason: reason.into(),
        }),
    )
        .into_response()
}

pub(crate) fn retry_later(status: StatusCode, code: &str, reason: String, secs: u32) -> Response {
    let mut r = error(status, code, reason);
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

pub(crate) fn invalid(report: &Report) -> Response {
    (StatusCode::UNPROCESSABLE_ENTITY, Json(report)).into_response()
}
