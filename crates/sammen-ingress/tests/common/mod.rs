//! In-process broker for tests: store + outbox + bus + relay + ingress router, like `sammen serve`.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use sammen_bus::{AmqpBus, AmqpConfig, Bus, EmbeddedBus, Topology};
use sammen_bus_store::StoreQueueStore;
use sammen_ingress::{Ingress, IngressConfig, Receivers};
use sammen_outbox::{Outbox, OutboxConfig};
use sammen_relay::{Relay, RelayConfig, SharedOutbox};
use sammen_store::{FjallStore, Store};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub const AMQP_URL_DEFAULT: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

pub fn amqp_url() -> String {
    std::env::var("SAMMEN_TEST_AMQP_URL").unwrap_or_else(|_| AMQP_URL_DEFAULT.into())
}

pub fn conformance_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conformance")
}

pub fn example(rel: &str) -> Vec<u8> {
    std::fs::read(conformance_dir().join(rel)).unwrap()
}

pub const HN: &str =
    "examples/hospitalnotification/Bundle-a5e5b880-c087-4055-b9ec-99108695f81d.xml";

pub enum BusChoice {
    Embedded,
    Amqp,
    /// A bus that has no inbox for anyone and is never drained (backpressure tests): embedded, relay off.
    None,
}

pub struct Broker {
    pub outbox: SharedOutbox,
    pub bus: Arc<dyn Bus>,
    pub router: Router,
    pub topology: Topology,
    pub stop: CancellationToken,
    pub relay: Option<tokio::task::JoinHandle<()>>,
    /// On RabbitMQ: its namespaced queues are deleted at shutdown.
    pub amqp: bool,
    pub _dir: tempfile::TempDir,
}

pub fn receivers() -> Vec<(String, Option<String>)> {
    sammen_config_receivers()
}

fn sammen_config_receivers() -> Vec<(String, Option<String>)> {
    // Same list `sammen serve` registers without a config (the conformance examples' receivers).
    [
        ("5790001348120", Some("953741000016009")),
        ("5790000209354", Some("265161000016000")),
        ("5790000121441", Some("328051000016008")),
        ("5790001382445", Some("359001000016000")),
        ("5790002508226", None),
        ("5790000201389", Some("263001000016001")),
        ("5790000127092", Some("52581000016005")),
        ("5790000121526", Some("8851000016006")),
        ("5790000123117", Some("1144561000016002")),
    ]
    .iter()
    .map(|(g, s)| (g.to_string(), s.map(str::to_string)))
    .collect()
}

pub async fn start(bus: BusChoice, cfg: IngressConfig) -> Broker {
    let dir = tempfile::tempdir().unwrap();
    let mut trees: Vec<&'static str> = sammen_outbox::trees::ALL.to_vec();
    trees.extend(sammen_bus_store::TREES);
    let store: Arc<dyn Store> = Arc::new(FjallStore::open(dir.path(), &trees).unwrap());
    let outbox: SharedOutbox =
        Arc::new(Outbox::open(store.clone(), OutboxConfig::default()).unwrap());
    let ns = format!("t{}", fastrand_u64());
    let topology = Topology::namespaced(&ns);
    let glns: Vec<String> = receivers().into_iter().map(|r| r.0).collect();
    let run_relay = !matches!(bus, BusChoice::None);
    let amqp = matches!(bus, BusChoice::Amqp);
    let bus: Arc<dyn Bus> = match bus {
        BusChoice::Embedded | BusChoice::None => Arc::new(
            EmbeddedBus::open(
                topology.clone(),
                Arc::new(StoreQueueStore::new(store.clone()).unwrap()),
            )
            .unwrap(),
        ),
        BusChoice::Amqp => {
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
    let rs = receivers();
    let ingress = Arc::new(Ingress::new(
        outbox.clone(),
        bus.clone(),
        Receivers::new(rs.iter().map(|(g, s)| (g.as_str(), s.as_deref()))),
        cfg,
        relay.waker(),
    ));
    let stop = CancellationToken::new();
    let relay = if run_relay {
        let s = stop.child_token();
        Some(tokio::spawn(async move {
            relay.run(s).await.unwrap();
        }))
    } else {
        None
    };
    Broker {
        outbox,
        bus,
        router: sammen_ingress::router(ingress),
        topology,
        stop,
        relay,
        amqp,
        _dir: dir,
    }
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish() % 1_000_000_000
}

impl Broker {
    pub async fn post(&self, ct: &str, body: Vec<u8>) -> (StatusCode, serde_json::Value) {
        let req = Request::post("/v1/messages")
            .header("content-type", ct)
            .body(Body::from(body))
            .unwrap();
        self.send(req).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, serde_json::Value) {
        self.send(Request::get(path).body(Body::empty()).unwrap())
            .await
    }

    pub async fn send(&self, req: Request<Body>) -> (StatusCode, serde_json::Value) {
        let (code, _, v) = self.send_full(req).await;
        (code, v)
    }

    pub async fn send_full(
        &self,
        req: Request<Body>,
    ) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let code = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (code, headers, v)
    }

    pub async fn shutdown(self) {
        self.stop.cancel();
        if let Some(r) = self.relay {
            let _ = r.await;
        }
        self.bus.close().await;
        if self.amqp {
            let glns: Vec<String> = receivers().into_iter().map(|r| r.0).collect();
            delete_topology(&self.topology, &glns, &[]).await;
        }
    }
}

/// Remove a test namespace's queues (the inboxes of `glns`, dead letters, shared receipts and `extra`)
/// and exchanges from RabbitMQ (every test run used to leave its quorum queues behind; hundreds of them
/// exhausted the node's file descriptors).
pub async fn delete_topology(t: &Topology, glns: &[String], extra: &[String]) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut queues: Vec<String> = glns.iter().map(|g| t.inbox_queue(g)).collect();
    queues.push(t.dead_queue.clone());
    queues.push(sammen_bus::receipts::receipts_queue(t));
    queues.extend_from_slice(extra);
    for q in queues {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for e in [&t.route_exchange, &t.dead_exchange] {
        let _ = ch
            .exchange_delete(e.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = conn.close(200, "done".into()).await;
}

pub const HN_MSG_ID: &str = "b9b4818e-02de-4cc4-b418-d20cbc7b5404";
pub const HN_BUNDLE_ID: &str = "a5e5b880-c087-4055-b9ec-99108695f81d";

/// Replace every occurrence of `from` with `to` (ids appear in fullUrls, references and narrative).
pub fn replace(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .replace(from, to)
        .into_bytes()
}

/// A UUID-shaped id unique per `(tag, n)`.
pub fn uuid(tag: u32, n: u64) -> String {
    format!("{tag:08x}-0000-4000-8000-{n:012x}")
}

/// The HospitalNotification example with a fresh message id and Bundle id.
pub fn unique_hn(tag: u32, n: u64) -> (String, Vec<u8>) {
    let base = example(HN);
    let mid = uuid(tag, n);
    let b = replace(&base, HN_MSG_ID, &mid);
    let b = replace(&b, HN_BUNDLE_ID, &uuid(tag ^ 0xffff_ffff, n));
    (mid, b)
}
