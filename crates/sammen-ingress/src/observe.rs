//! What `POST /v1/messages` tells the telemetry: one call per outcome, through the closed label sets of
//! `sammen-telemetry` (a code or event outside them becomes `other`, a GLN not configured `unregistered`).
//!
//! The registry arrives as a request extension (`axum::Extension<SharedTelemetry>`, added by the server
//! that owns it); without one, nothing is recorded. Identity refusals (403) are counted by the HTTPS
//! listener's refusal hook, not here.

use axum::http::StatusCode;
use axum::response::Response;
use sammen_model::{Family, Report};
use sammen_outbox::MessageMeta;
use sammen_telemetry::events::{
    DuplicateDropped, MessageAccepted, MessageReceived, MessageRejected, ResendForwarded,
};
use sammen_telemetry::SharedTelemetry;
use std::time::Duration;

/// The request's telemetry handle (maybe none).
pub(crate) struct Observe(pub(crate) Option<SharedTelemetry>);

impl Observe {
    /// Validated: family and event are known (or not).
    pub(crate) fn received(&self, report: &Report, bytes: usize) {
        if let Some(t) = &self.0 {
            t.emit(MessageReceived {
                message_id: report.message_id.as_deref(),
                family: report.family,
                event: report.event.as_deref(),
                bytes,
            });
        }
    }

    /// Refused with a code of the broker's own (`too-large`, `backpressure`, `conflict`, ...).
    pub(crate) fn rejected(
        &self,
        message_id: Option<&str>,
        family: Option<Family>,
        code: &str,
        status: StatusCode,
    ) {
        if let Some(t) = &self.0 {
            t.emit(MessageRejected {
                message_id,
                family,
                code: Some(code),
                status: status.as_u16(),
            });
        }
    }

    /// Refused with the report (422): labelled by the first error's code.
    pub(crate) fn invalid(&self, report: &Report) {
        if let Some(t) = &self.0 {
            t.emit(MessageRejected {
                message_id: report.message_id.as_deref(),
                family: report.family,
                code: report.errors().next().map(|i| i.code.as_str()),
                status: 422,
            });
        }
    }

    /// A refusal while reading the body: the code follows from the status `read_limited` chose.
    pub(crate) fn body_refused(&self, r: &Response) {
        let code = match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => "too-large",
            StatusCode::REQUEST_TIMEOUT => "body-timeout",
            _ => "body-read",
        };
        self.rejected(None, None, code, r.status());
    }

    /// 202: accepted (or a resend forwarded).
    pub(crate) fn accepted(&self, meta: &MessageMeta, record: u64, resend: bool, took: Duration) {
        if let Some(t) = &self.0 {
            t.emit(MessageAccepted {
                message_id: &meta.message_id,
                record,
                family: meta.family,
                event: Some(&meta.event),
                receiver: meta.receiver.gln.as_deref(),
                latency: took,
            });
            if resend {
                t.emit(ResendForwarded {
                    message_id: &meta.message_id,
                    family: meta.family,
                    record,
                });
            }
        }
    }

    /// 200: an exact repeat.
    pub(crate) fn duplicate(&self, message_id: &str, family: Family, record: u64) {
        if let Some(t) = &self.0 {
            t.emit(DuplicateDropped {
                message_id,
                family,
                record,
            });
        }
    }
}
