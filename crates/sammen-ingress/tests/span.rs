//! Log lines of an accept run inside the message's span (issue 6: one span per message id from the
//! ingress through outbox, relay and delivery). Its own test binary: log capture is per thread, and tracing
//! caches per-callsite interest, so other tests running in the same process would make this flaky.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::StatusCode;
use common::*;
use sammen_ingress::IngressConfig;

const FHIR: &str = "application/fhir+xml";

async fn embedded() -> Broker {
    start(BusChoice::Embedded, IngressConfig::default()).await
}

/// Issue 6: one span per message id from the ingress on. The accept's log lines carry the message id from
/// the span (current-thread runtime: the capture is per thread, and the handler runs on this one).
#[tokio::test(flavor = "current_thread")]
async fn accept_logs_run_in_the_message_span() {
    let logs = sammen_telemetry::testing::capture_logs();
    let b = embedded().await;
    let (code, v) = b.post(FHIR, example(HN)).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{v}");
    b.shutdown().await;
    let accepted: Vec<serde_json::Value> = logs
        .lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.to_string().contains("\"accepted\""))
        .collect();
    assert!(!accepted.is_empty(), "no accept log line: {}", logs.text());
    for line in &accepted {
        let text = line.to_string();
        assert!(
            text.contains(HN_MSG_ID) && text.contains("\"message\""),
            "accept line outside the message span: {text}"
        );
    }
}
