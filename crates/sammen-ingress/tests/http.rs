//! The HTTP status contract of `POST /v1/messages`, `GET /v1/messages/{id}`, `/healthz`, `/readyz`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use sammen_ingress::IngressConfig;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const FHIR: &str = "application/fhir+xml";

async fn embedded() -> Broker {
    start(BusChoice::Embedded, IngressConfig::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_then_timeline_shows_published() {
    let b = embedded().await;
    let (code, v) = b.post(FHIR, example(HN)).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["status"], "accepted");
    assert_eq!(v["message_id"], HN_MSG_ID);
    let mut state = String::new();
    for _ in 0..100 {
        let (code, v) = b.get(&format!("/v1/messages/{HN_MSG_ID}")).await;
        assert_eq!(code, StatusCode::OK);
        state = v["state"].as_str().unwrap().to_string();
        if state == "published" {
            let tl = &v["records"][0]["timeline"];
            assert_eq!(tl[0]["state"], "accepted");
            assert_eq!(tl[1]["state"], "published");
            // Ids, states and times only: no payload, no patient data.
            let text = v.to_string();
            assert!(
                !text.contains("Bundle>") && !text.contains("0108589995"),
                "{text}"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(state, "published");
    let (code, _) = b.get("/v1/messages/no-such-id").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_message_gets_422_with_report() {
    let b = embedded().await;
    let bytes =
        std::fs::read(conformance_dir().join("invalid/fhir/hn-destination-cc.xml")).unwrap();
    let (code, v) = b.post(FHIR, bytes).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let issues = v["issues"].as_array().unwrap();
    assert!(
        issues
            .iter()
            .any(|i| i["code"] == "medcom-hospitalNotification-5"),
        "{v}"
    );
    // Not XML at all, and an empty body: still a 422, never a 500.
    for body in [b"not xml".to_vec(), Vec::new(), vec![0xff; 100]] {
        let (code, v) = b.post("application/xml", body).await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    }
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_resend_and_conflict() {
    let b = embedded().await;
    assert_eq!(b.post(FHIR, example(HN)).await.0, StatusCode::ACCEPTED);
    let (code, v) = b.post(FHIR, example(HN)).await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "duplicate");
    // Same message id, new Bundle id: a resend, accepted and flagged.
    let resend = replace(&example(HN), HN_BUNDLE_ID, &uuid(7, 7));
    let (code, v) = b.post(FHIR, resend).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["resend"], true);
    // Bundle id reused with another MessageHeader id: 409.
    let conflict = replace(&example(HN), HN_MSG_ID, &uuid(8, 8));
    let (code, v) = b.post(FHIR, conflict).await;
    assert_eq!(code, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"], "conflict");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_receiver_gets_422_with_code() {
    let b = embedded().await;
    // 5790000000012: a valid GLN (check digit) that no receiver in the config has.
    let other = replace(&example(HN), "5790001348120", "5790000000012");
    let (code, v) = b.post(FHIR, other).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["issues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["code"] == sammen_ingress::UNKNOWN_RECEIVER),
        "{v}"
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_body_is_refused_while_streaming() {
    let limit = 64 * 1024;
    let b = start(
        BusChoice::Embedded,
        IngressConfig {
            max_body: limit,
            ..IngressConfig::default()
        },
    )
    .await;
    // 4 MiB in 16 KiB chunks, no Content-Length: the server must stop reading near the limit.
    let pulled = Arc::new(AtomicUsize::new(0));
    let p = pulled.clone();
    let chunk = vec![b'x'; 16 * 1024];
    let stream = futures_util::stream::iter((0..256).map(move |_| {
        p.fetch_add(chunk.len(), Ordering::SeqCst);
        Ok::<_, std::io::Error>(bytes::Bytes::from(chunk.clone()))
    }));
    let req = Request::post("/v1/messages")
        .header("content-type", FHIR)
        .body(Body::from_stream(stream))
        .unwrap();
    let (code, v) = b.send(req).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    let read = pulled.load(Ordering::SeqCst);
    assert!(
        read <= limit + 2 * 16 * 1024,
        "read {read} bytes of a 4 MiB body"
    );
    // Declared too large: refused before reading.
    let req = Request::post("/v1/messages")
        .header("content-type", FHIR)
        .header("content-length", "10000000")
        .body(Body::from(vec![b'x'; 10]))
        .unwrap();
    assert_eq!(b.send(req).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_in_memory_are_bounded_by_the_budget() {
    // Room for one largest body: while a request holds it, the next waits and then gets 503.
    let limit = 64 * 1024;
    let b = start(
        BusChoice::Embedded,
        IngressConfig {
            max_body: limit,
            body_memory_bytes: limit,
            body_memory_wait: Duration::from_millis(200),
            retry_after_secs: 3,
            ..IngressConfig::default()
        },
    )
    .await;
    // Declares the full limit, sends one byte, then stalls until `go`, then breaks off.
    let (go, stalled) = tokio::sync::oneshot::channel::<()>();
    let first = futures_util::stream::once(async {
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"<"))
    });
    let rest = futures_util::stream::once(async move {
        let _ = stalled.await;
        Err::<bytes::Bytes, _>(std::io::Error::other("client gone"))
    });
    let req = Request::post("/v1/messages")
        .header("content-type", FHIR)
        .header("content-length", limit.to_string())
        .body(Body::from_stream(futures_util::StreamExt::chain(
            first, rest,
        )))
        .unwrap();
    let router = b.router.clone();
    let slow = tokio::spawn(async move {
        tower::ServiceExt::oneshot(router, req)
            .await
            .unwrap()
            .status()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, body) = unique_hn(1, 1);
    let req = Request::post("/v1/messages")
        .header("content-type", FHIR)
        .body(Body::from(body.clone()))
        .unwrap();
    let (code, headers, v) = b.send_full(req).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"], "memory-budget");
    assert_eq!(headers["retry-after"], "3");
    // The stalled request is answered (its body broke off): its room is free again.
    go.send(()).unwrap();
    assert_eq!(slow.await.unwrap(), StatusCode::BAD_REQUEST);
    let (code, v) = b.post(FHIR, body).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{v}");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_content_type_is_415() {
    let b = embedded().await;
    for ct in ["application/json", "text/plain", ""] {
        let (code, v) = b.post(ct, example(HN)).await;
        assert_eq!(code, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct}: {v}");
    }
    let (code, _) = b.post("text/xml; charset=utf-8", example(HN)).await;
    assert_eq!(code, StatusCode::ACCEPTED);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_503_with_retry_after() {
    // No relay: nothing drains, so the depth only grows.
    let b = start(
        BusChoice::None,
        IngressConfig {
            max_depth: 2,
            retry_after_secs: 7,
            ..IngressConfig::default()
        },
    )
    .await;
    for n in 0..3 {
        let (_, body) = unique_hn(1, n);
        let (code, v) = b.post(FHIR, body).await;
        assert_eq!(code, StatusCode::ACCEPTED, "{n}: {v}");
    }
    let (_, body) = unique_hn(1, 99);
    let req = Request::post("/v1/messages")
        .header("content-type", FHIR)
        .body(Body::from(body))
        .unwrap();
    let (code, headers, v) = b.send_full(req).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(headers["retry-after"], "7");
    assert_eq!(v["error"], "backpressure");
    // Not ready either: the bus is fine but nothing drains and the outbox is over its limit? The
    // embedded bus is connected, so readiness holds (bus connected OR under the limit).
    let (code, v) = b.get("/readyz").await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["outbox_depth"], 3);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_readyz() {
    let b = embedded().await;
    let (code, v) = b.get("/healthz").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(v["status"], "ok");
    let (code, v) = b.get("/readyz").await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["ready"], true);
    assert_eq!(v["store_writable"], true);
    assert_eq!(v["bus_connected"], true);
    b.shutdown().await;
}
