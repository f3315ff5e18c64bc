//! Disk full at the HTTP level: the broker (store, outbox, embedded bus, relay, ingress, as `sammen serve`
//! wires them) runs with its data dir on a 16 MiB tmpfs. Once the disk is full, POST answers 507 (or 503)
//! with a reason and Retry-After, never 500; everything answered 202 before is still there (GET timeline,
//! and again after reopening the store); after space is freed, accepts succeed again. Per store backend.
//! Needs root for `mount`: it fails, not skips, when the mount fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use sammen_bus::{Bus, EmbeddedBus, Topology};
use sammen_bus_store::StoreQueueStore;
use sammen_ingress::{Ingress, IngressConfig, Receivers};
use sammen_outbox::{Outbox, OutboxConfig};
use sammen_relay::{Relay, RelayConfig, SharedOutbox};
use sammen_store::{FjallStore, SledStore, Store};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const GLN: &str = "5790001348120";
const HN: &str = "examples/hospitalnotification/Bundle-a5e5b880-c087-4055-b9ec-99108695f81d.xml";
const HN_MSG_ID: &str = "b9b4818e-02de-4cc4-b418-d20cbc7b5404";
const HN_BUNDLE_ID: &str = "a5e5b880-c087-4055-b9ec-99108695f81d";

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap().keep();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(
            st.success(),
            "mount -t tmpfs failed ({st}); this test needs root"
        );
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Write until ENOSPC.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0xa5u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    while f.write_all(&[1u8; 512]).is_ok() {}
    let _ = f.sync_all();
}

/// The HospitalNotification example with fresh message and Bundle ids: (message id, bytes).
fn message(base: &str, n: u64) -> (String, Vec<u8>) {
    let mid = format!("d15cf011-0000-4000-8000-{n:012x}");
    let bid = format!("d15cf022-0000-4000-8000-{n:012x}");
    let b = base.replace(HN_MSG_ID, &mid).replace(HN_BUNDLE_ID, &bid);
    (mid, b.into_bytes())
}

#[derive(Clone, Copy, Debug)]
enum Backend {
    Fjall,
    Sled,
}

struct Broker {
    router: Router,
    bus: Arc<dyn Bus>,
    stop: CancellationToken,
    relay: tokio::task::JoinHandle<()>,
}

fn open_store(b: Backend, dir: &Path) -> Arc<dyn Store> {
    let mut trees: Vec<&'static str> = sammen_outbox::trees::ALL.to_vec();
    trees.extend(sammen_bus_store::TREES);
    match b {
        Backend::Fjall => Arc::new(FjallStore::open(dir, &trees).unwrap()),
        Backend::Sled => Arc::new(SledStore::open(dir, &trees).unwrap()),
    }
}

/// What `sammen serve` wires, over the embedded bus, with its store in `dir`.
fn start(b: Backend, dir: &Path) -> Broker {
    let store = open_store(b, dir);
    let outbox: SharedOutbox =
        Arc::new(Outbox::open(store.clone(), OutboxConfig::default()).unwrap());
    let bus: Arc<dyn Bus> = Arc::new(
        EmbeddedBus::open(
            Topology::default(),
            Arc::new(StoreQueueStore::new(store).unwrap()),
        )
        .unwrap(),
    );
    let relay = Relay::new(
        outbox.clone(),
        bus.clone(),
        RelayConfig {
            receivers: vec![GLN.into()],
            ..RelayConfig::default()
        },
    );
    let ingress = Arc::new(Ingress::new(
        outbox,
        bus.clone(),
        Receivers::new([(GLN, Some("953741000016009"))]),
        IngressConfig::default(),
        relay.waker(),
    ));
    let stop = CancellationToken::new();
    let s = stop.child_token();
    // The relay also hits the full disk; it retries, which is what it should do.
    let relay = tokio::spawn(async move {
        let _ = relay.run(s).await;
    });
    Broker {
        router: sammen_ingress::router(ingress),
        bus,
        stop,
        relay,
    }
}

impl Broker {
    async fn send(&self, req: Request<Body>) -> (StatusCode, HeaderMap, serde_json::Value) {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let code = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (code, headers, v)
    }

    async fn post(&self, body: Vec<u8>) -> (StatusCode, HeaderMap, serde_json::Value) {
        let req = Request::post("/v1/messages")
            .header("content-type", "application/fhir+xml")
            .body(Body::from(body))
            .unwrap();
        self.send(req).await
    }

    async fn state(&self, id: &str) -> (StatusCode, serde_json::Value) {
        let req = Request::get(format!("/v1/messages/{id}"))
            .body(Body::empty())
            .unwrap();
        let (c, _, v) = self.send(req).await;
        (c, v)
    }

    async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.relay.await;
        self.bus.close().await;
    }
}

/// A refusal must be 507 or 503 with a code, a reason and Retry-After.
fn assert_clean_refusal(code: StatusCode, h: &HeaderMap, v: &serde_json::Value) {
    assert!(
        code == StatusCode::INSUFFICIENT_STORAGE || code == StatusCode::SERVICE_UNAVAILABLE,
        "disk full gave {code}: {v}"
    );
    assert!(
        v["error"].as_str().is_some_and(|s| !s.is_empty())
            && v["reason"].as_str().is_some_and(|s| !s.is_empty()),
        "no reason in {v}"
    );
    assert!(h.contains_key(header::RETRY_AFTER), "no Retry-After: {h:?}");
}

async fn already_there(b: &Broker, ids: &[String]) {
    for id in ids {
        let (c, v) = b.state(id).await;
        assert_eq!(c, StatusCode::OK, "{id} lost: {v}");
        let st = v["state"].as_str().unwrap_or_default();
        assert!(
            ["accepted", "published", "delivered"].contains(&st),
            "{id}: {v}"
        );
    }
}

/// While the disk is full the store may be closed for recovery: a GET is 200 or a clean 503, never 500.
async fn readable_or_refused(b: &Broker, ids: &[String]) {
    for id in ids {
        let (c, v) = b.state(id).await;
        assert!(
            c == StatusCode::OK || c == StatusCode::SERVICE_UNAVAILABLE,
            "{id}: {c} {v}"
        );
    }
}

async fn disk_full(backend: Backend) {
    let base = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../conformance")
            .join(HN),
    )
    .unwrap();
    let mnt = Tmpfs::mount("16m");
    let db = mnt.0.join("data");
    let filler = mnt.0.join("filler");
    let b = start(backend, &db);
    let mut n = 0u64;
    let mut kept = Vec::new();
    for _ in 0..20 {
        let (id, body) = message(&base, n);
        n += 1;
        let (c, _, v) = b.post(body).await;
        assert_eq!(c, StatusCode::ACCEPTED, "{v}");
        kept.push(id);
    }
    fill(&filler);
    // The engine may hold preallocated space: keep posting until it runs out.
    let mut refused = None;
    for _ in 0..5_000 {
        let (id, body) = message(&base, n);
        n += 1;
        let (c, h, v) = b.post(body).await;
        if c == StatusCode::ACCEPTED {
            kept.push(id);
        } else {
            assert_clean_refusal(c, &h, &v);
            refused = Some((c, v));
            break;
        }
    }
    let (code, v) = refused.expect("accepts never failed on a full disk");
    eprintln!("{backend:?}: {} accepted, then {code} {v}", kept.len());
    // Still full: every answer is a 202 or a clean refusal, never a 500.
    for _ in 0..10 {
        let (id, body) = message(&base, n);
        n += 1;
        let (c, h, v) = b.post(body).await;
        if c == StatusCode::ACCEPTED {
            kept.push(id);
        } else {
            assert_clean_refusal(c, &h, &v);
        }
    }
    readable_or_refused(&b, &kept).await;

    // Space returns: accepts succeed again (the engine may need a moment to notice).
    std::fs::remove_file(&filler).unwrap();
    let mut ok = false;
    let mut last = String::new();
    for _ in 0..200 {
        let (id, body) = message(&base, n);
        n += 1;
        let (c, h, v) = b.post(body).await;
        if c == StatusCode::ACCEPTED {
            kept.push(id);
            ok = true;
            break;
        }
        assert_clean_refusal(c, &h, &v);
        last = format!("{c} {v}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        ok,
        "{backend:?}: accepts did not recover within 20 s after space was freed; last answer {last}"
    );
    for _ in 0..5 {
        let (id, body) = message(&base, n);
        n += 1;
        let (c, _, v) = b.post(body).await;
        assert_eq!(c, StatusCode::ACCEPTED, "{v}");
        kept.push(id);
    }
    already_there(&b, &kept).await;
    b.shutdown().await;

    // Reopen: every 202 survived.
    let b = start(backend, &db);
    already_there(&b, &kept).await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_fjall() {
    disk_full(Backend::Fjall).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_sled() {
    disk_full(Backend::Sled).await;
}
