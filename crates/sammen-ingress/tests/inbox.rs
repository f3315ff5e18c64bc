//! The HTTP inbox over real TLS (certificates by rcgen), with the relay running, once per bus: the embedded
//! bus and real RabbitMQ on 127.0.0.1:5672 (the AMQP tests fail, never skip, without it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use base64::Engine;
use common::{amqp_url, example, unique_hn, HN};
use http_body_util::BodyExt;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use sammen_bus::{AmqpBus, AmqpConfig, Bus, EmbeddedBus, Source, Topology};
use sammen_bus_store::StoreQueueStore;
use sammen_identity::rustls::pki_types::ServerName;
use sammen_identity::{CertAuthority, ClientSpec, Issued, TlsFiles, TlsIdentity};
use sammen_ingress::tls::{serve_tls, tls_router, TlsServeConfig};
use sammen_ingress::{InboxConfig, Ingress, IngressConfig, Receivers};
use sammen_outbox::{Outbox, OutboxConfig};
use sammen_relay::{Relay, RelayConfig, SharedOutbox};
use sammen_store::{FjallStore, Store};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const MUNI: &str = "5790001348120";
const HOSPITAL: &str = "5790000209354";
/// Valid check digit, allowed to the municipality's certificate, but not a receiver of this broker.
const UNSERVED: &str = "5790000000005";

#[derive(Clone, Copy, Debug)]
enum Kind {
    Embedded,
    Amqp,
}

type ClientCfg = Arc<sammen_identity::rustls::ClientConfig>;

struct Env {
    addr: SocketAddr,
    hospital: ClientCfg,
    muni: ClientCfg,
    ingress: Arc<Ingress>,
    bus: Arc<dyn Bus>,
    topology: Topology,
    stop: CancellationToken,
    kind: Kind,
    _dir: tempfile::TempDir,
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn unique_ns() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    format!("inbox{}", h.finish() % 1_000_000_000)
}

fn client_cfg(ca: &CertAuthority, c: &Issued) -> ClientCfg {
    sammen_identity::client_config(
        vec![c.cert_der.clone()],
        c.key_der(),
        std::slice::from_ref(&ca.cert.cert_der),
    )
    .unwrap()
}

/// Store + outbox + bus + relay + ingress behind the HTTPS listener. Partners: the hospital (sends as
/// and receives for its GLN), the municipality (receives for its GLN and for [`UNSERVED`]).
async fn start(kind: Kind, inbox: InboxConfig) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut trees: Vec<&'static str> = sammen_outbox::trees::ALL.to_vec();
    trees.extend(sammen_bus_store::TREES);
    let store: Arc<dyn Store> = Arc::new(FjallStore::open(dir.path().join("db"), &trees).unwrap());
    let outbox: SharedOutbox =
        Arc::new(Outbox::open(store.clone(), OutboxConfig::default()).unwrap());
    let topology = Topology::namespaced(&unique_ns());
    let glns = vec![MUNI.to_string(), HOSPITAL.to_string()];
    let bus: Arc<dyn Bus> = match kind {
        Kind::Embedded => Arc::new(
            EmbeddedBus::open(
                topology.clone(),
                Arc::new(StoreQueueStore::new(store.clone()).unwrap()),
            )
            .unwrap(),
        ),
        Kind::Amqp => {
            let mut c = AmqpConfig::new(amqp_url());
            c.topology = topology.clone();
            c.receivers = glns.clone();
            let b = AmqpBus::start(c);
            sammen_bus::wait_connected(&b, Duration::from_secs(10))
                .await
                .expect("RabbitMQ must run on 127.0.0.1:5672 (rabbitmq-server -detached)");
            Arc::new(b)
        }
    };
    let relay = Relay::new(
        outbox.clone(),
        bus.clone(),
        RelayConfig {
            receivers: glns,
            ..RelayConfig::default()
        },
    );
    let ingress = Arc::new(
        Ingress::new(
            outbox,
            bus.clone(),
            Receivers::new([
                (MUNI, Some("953741000016009")),
                (HOSPITAL, Some("265161000016000")),
            ]),
            IngressConfig::default(),
            relay.waker(),
        )
        .with_inbox(inbox),
    );
    let stop = CancellationToken::new();
    let s = stop.child_token();
    tokio::spawn(async move { relay.run(s).await.unwrap() });

    let ca = CertAuthority::new("Inbox test CA").unwrap();
    let hospital = ca.issue_client(&ClientSpec::new("hospital", 30)).unwrap();
    let muni = ca
        .issue_client(&ClientSpec {
            serial_number: Some("CVR:29189870-UID:2".into()),
            ..ClientSpec::new("muni", 30)
        })
        .unwrap();
    let server = ca.issue_server(&["localhost", "127.0.0.1"], 30).unwrap();
    let partners = format!(
        r#"
        [[partner]]
        name = "hospital"
        fingerprint = "{}"
        send_as = [{{ gln = "{HOSPITAL}", sor = "265161000016000" }}]
        [[partner]]
        name = "municipality"
        issuer = "{}"
        serial_number = "CVR:29189870-UID:2"
        send_as = [{{ gln = "{MUNI}" }}]
        receive_for = ["{MUNI}", "{UNSERVED}"]
        "#,
        sammen_identity::fingerprint(&hospital.cert_der),
        ca.issuer_dn().unwrap()
    );
    let files = TlsFiles {
        cert: write(dir.path(), "server.crt", &server.cert_pem),
        key: write(dir.path(), "server.key", &server.key_pem),
        client_ca: vec![write(dir.path(), "ca.crt", &ca.cert.cert_pem)],
        partners_file: Some(write(dir.path(), "partners.toml", &partners)),
        partners: vec![],
    };
    let identity = Arc::new(TlsIdentity::load(files).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let st = stop.clone();
    tokio::spawn(serve_tls(
        listener,
        identity,
        tls_router(ingress.clone()),
        TlsServeConfig::default(),
        async move { st.cancelled().await },
    ));
    Env {
        addr,
        hospital: client_cfg(&ca, &hospital),
        muni: client_cfg(&ca, &muni),
        ingress,
        bus,
        topology,
        stop,
        kind,
        _dir: dir,
    }
}

struct Answer {
    status: u16,
    headers: hyper::HeaderMap,
    body: bytes::Bytes,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
            .to_string()
    }
}

impl Env {
    async fn request(&self, cfg: &ClientCfg, req: hyper::Request<Body>) -> Answer {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(cfg.clone())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (mut send, conn) = http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        let resp = send.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, cfg: &ClientCfg, path: &str) -> Answer {
        let req = hyper::Request::get(path)
            .header("host", "localhost")
            .body(Body::empty())
            .unwrap();
        self.request(cfg, req).await
    }

    async fn post_ack(&self, cfg: &ClientCfg, path: &str) -> Answer {
        let req = hyper::Request::post(path)
            .header("host", "localhost")
            .body(Body::empty())
            .unwrap();
        self.request(cfg, req).await
    }

    /// The hospital posts a fresh HospitalNotification to the municipality; its message id and bytes.
    async fn send_hn(&self, n: u64) -> (String, Vec<u8>) {
        let (id, bytes) = unique_hn(0x1b0c, n);
        let req = hyper::Request::post("/v1/messages")
            .header("host", "localhost")
            .header("content-type", "application/fhir+xml")
            .body(Body::from(bytes.clone()))
            .unwrap();
        let a = self.request(&self.hospital, req).await;
        assert_eq!(a.status, 202, "{:?}", a.json());
        (id, bytes)
    }

    async fn state(&self, id: &str) -> String {
        let a = self
            .get(&self.hospital, &format!("/v1/messages/{id}"))
            .await;
        a.json()["state"].as_str().unwrap_or_default().to_string()
    }

    async fn wait_state(&self, id: &str, want: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.state(id).await;
            if s == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id}: state {s}, want {want}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn shutdown(self) {
        self.ingress.inbox().shutdown();
        self.ingress.inbox().close().await;
        self.stop.cancel();
        self.bus.close().await;
        if matches!(self.kind, Kind::Amqp) {
            common::delete_topology(&self.topology, &[MUNI.into(), HOSPITAL.into()], &[]).await;
        }
    }
}

fn inbox(gln: &str, query: &str) -> String {
    format!("/v1/inbox/{gln}?{query}")
}

/// The municipality reads its message with every header, acks it, and the outbox says `delivered`.
async fn reads_and_acks(kind: Kind) {
    let env = start(kind, InboxConfig::default()).await;
    let (id, bytes) = env.send_hn(1).await;
    let a = env.get(&env.muni, &inbox(MUNI, "wait=20")).await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    assert_eq!(a.body.as_ref(), bytes.as_slice(), "payload changed");
    assert_eq!(a.header("content-type"), "application/fhir+xml");
    assert_eq!(a.header("sammen-message-id"), id);
    assert_eq!(a.header("sammen-family"), "HospitalNotification");
    assert_eq!(a.header("sammen-event"), "admit-inpatient");
    assert_eq!(a.header("sammen-sender-gln"), HOSPITAL);
    assert_eq!(a.header("sammen-resend"), "false");
    assert_eq!(a.header("sammen-redelivered"), "false");
    let did = a.header("sammen-delivery-id");
    let ack = a.header("sammen-ack");
    assert_eq!(ack, format!("/v1/inbox/{MUNI}/{did}/ack"));
    assert_eq!(env.ingress.inbox().unsettled(MUNI), 1);
    env.wait_state(&id, "published").await;

    let r = env.post_ack(&env.muni, &ack).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(r.json()["message_id"], id.as_str());
    env.wait_state(&id, "delivered").await;
    assert_eq!(env.ingress.inbox().unsettled(MUNI), 0);

    // Twice, or a made-up id: 404 with a code.
    let r = env.post_ack(&env.muni, &ack).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "inbox.unknown-delivery");
    let r = env
        .post_ack(&env.muni, &format!("/v1/inbox/{MUNI}/nonsense/ack"))
        .await;
    assert_eq!(r.status, 404);
    // Nothing else is there.
    let a = env.get(&env.muni, &inbox(MUNI, "wait=0")).await;
    assert_eq!(a.status, 204);
    env.shutdown().await;
}

/// Another organisation's inbox: 403 with a code, and the message stays for its receiver untouched.
async fn other_gln_refused(kind: Kind) {
    let env = start(kind, InboxConfig::default()).await;
    let (id, _) = env.send_hn(2).await;
    env.wait_state(&id, "published").await;
    let a = env.get(&env.hospital, &inbox(MUNI, "wait=1")).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.json()["error"], "identity.receiver-not-allowed");
    let r = env
        .post_ack(
            &env.hospital,
            &format!("/v1/inbox/{MUNI}/{}/ack", "0".repeat(32)),
        )
        .await;
    assert_eq!(r.status, 403);
    // Ill-formed and unserved GLNs.
    let a = env.get(&env.muni, &inbox("5790001348121", "")).await;
    assert_eq!(a.status, 422);
    assert_eq!(a.json()["error"], "inbox.gln-invalid");
    let a = env.get(&env.muni, &inbox(UNSERVED, "")).await;
    assert_eq!(a.status, 404);
    assert_eq!(a.json()["error"], "inbox.unknown-receiver");
    let a = env.get(&env.muni, &inbox(MUNI, "wait=x")).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["error"], "inbox.bad-query");
    // Nothing was consumed: the first read is a first delivery.
    let a = env.get(&env.muni, &inbox(MUNI, "wait=20")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("sammen-message-id"), id);
    assert_eq!(a.header("sammen-redelivered"), "false");
    assert_eq!(a.header("sammen-delivery-count"), "0");
    env.shutdown().await;
}

/// A long poll that started before the message was posted returns it.
async fn long_poll_wakes(kind: Kind) {
    let env = Arc::new(start(kind, InboxConfig::default()).await);
    let e2 = env.clone();
    let poll = tokio::spawn(async move {
        let a = e2.get(&e2.muni, &inbox(MUNI, "wait=30")).await;
        (a.status, a.headers.get("sammen-message-id").cloned())
    });
    // Let the poll start waiting first (not a speed assertion: a late start still passes).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !poll.is_finished(),
        "the long poll returned before any message"
    );
    let (id, _) = env.send_hn(3).await;
    let (status, got) = tokio::time::timeout(Duration::from_secs(40), poll)
        .await
        .expect("long poll never returned")
        .unwrap();
    assert_eq!(status, 200, "woke without the message");
    assert_eq!(got.unwrap().to_str().unwrap(), id);
    // Empty inbox, short wait: 204.
    let a = env.get(&env.muni, &inbox(MUNI, "wait=1")).await;
    assert_eq!(a.status, 204);
    Arc::try_unwrap(env).ok().unwrap().shutdown().await;
}

/// Not acked within the visibility timeout: handed out again under a new id, flagged redelivered; the old
/// id is refused.
async fn visibility_timeout(kind: Kind) {
    let env = start(
        kind,
        InboxConfig {
            visibility_timeout: Duration::from_secs(1),
            ..InboxConfig::default()
        },
    )
    .await;
    let (id, bytes) = env.send_hn(4).await;
    let a = env.get(&env.muni, &inbox(MUNI, "wait=20")).await;
    assert_eq!(a.status, 200);
    let first = a.header("sammen-delivery-id");
    let b = env.get(&env.muni, &inbox(MUNI, "wait=20")).await;
    assert_eq!(b.status, 200, "the unacked message did not come back");
    assert_eq!(b.header("sammen-message-id"), id);
    assert_eq!(b.body.as_ref(), bytes.as_slice());
    assert_eq!(b.header("sammen-redelivered"), "true");
    let second = b.header("sammen-delivery-id");
    assert_ne!(first, second);
    let r = env.post_ack(&env.muni, &a.header("sammen-ack")).await;
    assert_eq!(r.status, 404, "an expired delivery id must not ack");
    let r = env.post_ack(&env.muni, &b.header("sammen-ack")).await;
    assert_eq!(r.status, 200);
    env.wait_state(&id, "delivered").await;
    assert!(
        env.ingress
            .inbox()
            .stats()
            .expired
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    env.shutdown().await;
}

/// Two pollers on one inbox (one single, one batched) together get every message exactly once.
async fn two_pollers(kind: Kind) {
    let env = Arc::new(start(kind, InboxConfig::default()).await);
    let mut sent = BTreeSet::new();
    for n in 0..12 {
        sent.insert(env.send_hn(100 + n).await.0);
    }
    let mut tasks = Vec::new();
    for batch in [false, true] {
        let e = env.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let q = if batch { "wait=2&max=3" } else { "wait=2" };
                let a = e.get(&e.muni, &inbox(MUNI, q)).await;
                match a.status {
                    204 => return got,
                    200 if batch => {
                        assert_eq!(a.header("content-type"), "application/json");
                        let v = a.json();
                        let msgs = v["messages"].as_array().unwrap().clone();
                        assert!((1..=3).contains(&msgs.len()), "{}", msgs.len());
                        for m in msgs {
                            let body = base64::engine::general_purpose::STANDARD
                                .decode(m["body_base64"].as_str().unwrap())
                                .unwrap();
                            assert!(body.starts_with(b"<?xml") || body.starts_with(b"<Bundle"));
                            assert_eq!(m["family"], "HospitalNotification");
                            let r = e.post_ack(&e.muni, m["ack"].as_str().unwrap()).await;
                            assert_eq!(r.status, 200);
                            got.push(m["message_id"].as_str().unwrap().to_string());
                        }
                    }
                    200 => {
                        let r = e.post_ack(&e.muni, &a.header("sammen-ack")).await;
                        assert_eq!(r.status, 200);
                        got.push(a.header("sammen-message-id"));
                    }
                    s => panic!("status {s}"),
                }
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let uniq: BTreeSet<String> = all.iter().cloned().collect();
    assert_eq!(uniq.len(), all.len(), "a delivery went to both pollers");
    assert_eq!(uniq, sent);
    Arc::try_unwrap(env).ok().unwrap().shutdown().await;
}

/// Closing the inbox (process stop) returns an unacked delivery to its queue.
async fn close_returns_unacked(kind: Kind) {
    let env = start(kind, InboxConfig::default()).await;
    let (id, _) = env.send_hn(5).await;
    let a = env.get(&env.muni, &inbox(MUNI, "wait=20")).await;
    assert_eq!(a.status, 200);
    env.ingress.inbox().shutdown();
    env.ingress.inbox().close().await;
    let mut sub = env
        .bus
        .subscribe(Source::Inbox(MUNI.into()), 4)
        .await
        .unwrap();
    let d = tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .expect("the unacked message was lost")
        .unwrap();
    assert_eq!(d.message.message_id, id);
    assert!(d.redelivered || d.delivery_count > 0);
    d.ack().await.unwrap();
    drop(sub);
    env.shutdown().await;
}

/// A backlog larger than `max_unsettled`: the inbox holds at most that many, and hands out the next one only
/// after an ack.
async fn unsettled_is_bounded(kind: Kind) {
    let env = start(
        kind,
        InboxConfig {
            max_unsettled: 3,
            max_batch: 3,
            ..InboxConfig::default()
        },
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..8 {
        let (id, _) = env.send_hn(200 + n).await;
        ids.push(id);
    }
    for id in &ids {
        env.wait_state(id, "published").await;
    }
    let a = env.get(&env.muni, &inbox(MUNI, "wait=20&max=3")).await;
    assert_eq!(a.status, 200);
    let msgs = a.json()["messages"].as_array().unwrap().clone();
    let mut got = msgs.len();
    let mut acks: Vec<String> = msgs
        .iter()
        .map(|m| m["ack"].as_str().unwrap().to_string())
        .collect();
    // Top up to the bound (a batch takes only what is already there).
    while got < 3 {
        let a = env.get(&env.muni, &inbox(MUNI, "wait=20")).await;
        assert_eq!(a.status, 200);
        acks.push(a.header("sammen-ack"));
        got += 1;
    }
    assert_eq!(env.ingress.inbox().unsettled(MUNI), 3);
    // Five more wait in the queue, but none is handed out while three are unacked.
    let a = env.get(&env.muni, &inbox(MUNI, "wait=1")).await;
    assert_eq!(a.status, 204, "more than max_unsettled handed out");
    let r = env.post_ack(&env.muni, &acks[0]).await;
    assert_eq!(r.status, 200);
    let a = env.get(&env.muni, &inbox(MUNI, "wait=20")).await;
    assert_eq!(a.status, 200, "nothing handed out after an ack");
    assert_eq!(env.ingress.inbox().unsettled(MUNI), 3);
    env.shutdown().await;
}

/// The plain-HTTP router has no peer: no inbox.
#[tokio::test]
async fn plain_http_reads_no_inbox() {
    use tower::ServiceExt;
    let b = common::start(common::BusChoice::Embedded, IngressConfig::default()).await;
    let _ = example(HN);
    let req = axum::http::Request::get(format!("/v1/inbox/{MUNI}"))
        .body(Body::empty())
        .unwrap();
    let resp = b.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 403);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"], "inbox.client-certificate-required");
    b.shutdown().await;
}

macro_rules! both {
    ($($name:ident),*) => {
        mod embedded {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Kind::Embedded).await })*
        }
        mod amqp {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Kind::Amqp).await })*
        }
    };
}

both!(
    reads_and_acks,
    other_gln_refused,
    long_poll_wakes,
    visibility_timeout,
    two_pollers,
    close_returns_unacked,
    unsettled_is_bounded
);
