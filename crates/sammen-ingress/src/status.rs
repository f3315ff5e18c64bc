//! `GET /v1/messages/{id}`, `/healthz`, `/readyz`.

use crate::answer;
use crate::state::{Ingress, SharedOutbox};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use sammen_bus::LinkState;
use sammen_outbox::{OutboxError, Status};
use sammen_store::Batch;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// One state entered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepView {
    /// State name (`accepted`, `published`, `delivered`, ...).
    pub state: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// One record (the original, or a resend) of a message id. No payload, no personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordView {
    /// Outbox record id.
    pub record: u64,
    /// Envelope (Bundle) id.
    pub envelope_id: String,
    /// Family.
    pub family: String,
    /// Event.
    pub event: String,
    /// Sender GLN.
    pub sender_gln: Option<String>,
    /// Receiver GLN.
    pub receiver_gln: Option<String>,
    /// SHA-256 of the payload.
    pub sha256: String,
    /// Payload size.
    pub size: u64,
    /// Resend of this record.
    pub resend_of: Option<u64>,
    /// Current state.
    pub state: String,
    /// Every state entered.
    pub timeline: Vec<StepView>,
    /// Failed publish attempts.
    pub attempts: u32,
    /// Last publish error (broker-side reason; no message content).
    pub last_error: Option<String>,
    /// False once retention dropped the payload.
    pub payload_retained: bool,
    /// The acknowledgement that answered this record (its message id and code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_by: Option<crate::AckInfo>,
    /// For an acknowledgement: the message id it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledges: Option<String>,
    /// For an acknowledgement: `correlated` or `uncorrelated` (nothing here matched what it answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<String>,
}

/// `GET /v1/messages/{id}` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusView {
    /// The message id asked about.
    pub message_id: String,
    /// State of the newest record.
    pub state: String,
    /// Every record with this id, oldest first.
    pub records: Vec<RecordView>,
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn record_view(s: Status) -> RecordView {
    RecordView {
        record: s.id.0,
        envelope_id: s.meta.envelope_id,
        family: s.meta.family.as_str().into(),
        event: s.meta.event,
        sender_gln: s.meta.sender.gln,
        receiver_gln: s.meta.receiver.gln,
        sha256: s.sha256,
        size: s.size,
        resend_of: s.resend_of.map(|r| r.0),
        state: s.state.as_str().into(),
        timeline: s
            .timeline
            .iter()
            .map(|st| StepView {
                state: st.state.as_str().into(),
                at_ms: ms(st.at),
            })
            .collect(),
        attempts: s.attempts,
        last_error: s.last_error,
        payload_retained: s.payload_retained,
        acknowledged_by: s.acknowledged_by.map(|l| crate::AckInfo {
            message_id: l.message_id,
            code: l.code.as_str().into(),
        }),
        correlation: s.answers.as_ref().map(|a| {
            if a.originals.is_empty() {
                "uncorrelated".into()
            } else {
                "correlated".into()
            }
        }),
        acknowledges: s.answers.map(|a| a.message_id),
    }
}

/// State and timeline of every record with `message_id`; `None` if there is none. Blocking (store reads).
pub fn status_view(
    outbox: &SharedOutbox,
    message_id: &str,
) -> Result<Option<StatusView>, OutboxError> {
    let mut records = Vec::new();
    for id in outbox.find(message_id)? {
        if let Some(s) = outbox.status(id)? {
            records.push(record_view(s));
        }
    }
    let Some(last) = records.last() else {
        return Ok(None);
    };
    Ok(Some(StatusView {
        message_id: message_id.to_string(),
        state: last.state.clone(),
        records,
    }))
}

pub(crate) async fn get_message(
    State(ing): State<Arc<Ingress>>,
    Path(id): Path<String>,
) -> Response {
    if id.is_empty() || id.len() > sammen_outbox::MAX_ID_LEN {
        return answer::error(StatusCode::NOT_FOUND, "not-found", "no such message");
    }
    let ob = ing.outbox.clone();
    match tokio::task::spawn_blocking(move || status_view(&ob, &id)).await {
        Ok(Ok(Some(v))) => Json(v).into_response(),
        Ok(Ok(None)) => answer::error(StatusCode::NOT_FOUND, "not-found", "no such message"),
        _ => answer::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            "the outbox could not be read; retry later",
        ),
    }
}

pub(crate) async fn healthz() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

/// Ready: the store takes a durable write, and the bus is connected or the outbox is under its limit.
pub(crate) async fn readyz(State(ing): State<Arc<Ingress>>) -> Response {
    let ob = ing.outbox.clone();
    let store_ok = tokio::task::spawn_blocking(move || {
        // An empty batch still goes through the group committer (a real sync): the store is writable.
        ob.store().commit(Batch::new()).is_ok()
    })
    .await
    .unwrap_or(false);
    let bus = ing.bus.status();
    let bus_ok = bus.state == LinkState::Connected;
    let depth = ing.outbox.depth();
    let under = depth <= ing.cfg.max_depth;
    let ready = store_ok && (bus_ok || under);
    let body = serde_json::json!({
        "ready": ready,
        "store_writable": store_ok,
        "bus": bus.kind,
        "bus_connected": bus_ok,
        "bus_reconnects": bus.reconnects,
        "outbox_depth": depth,
        "outbox_max_depth": ing.cfg.max_depth,
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}
