//! Test fixtures: a bus of either kind over a unique namespace, cleaned up afterwards.
#![allow(dead_code, clippy::unwrap_used, clippy::manual_is_multiple_of)] // MSRV 1.85 predates is_multiple_of

use bytes::Bytes;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use sammen_bus::{
    wait_connected, AmqpBus, AmqpConfig, Bus, BusMessage, Delivery, EmbeddedBus, Subscription,
    Topology,
};
use sammen_model::Family;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn amqp_url() -> String {
    std::env::var("SAMMEN_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn entropy() -> u64 {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let c = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut z = n ^ (u64::from(std::process::id()) << 32) ^ c.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z ^ (z >> 31)
}

/// A namespace unique to this test run and test.
pub fn unique_ns() -> String {
    format!("sammen-test-{:016x}", entropy())
}

/// A random GLN with a valid GS1 check digit.
pub fn random_gln() -> String {
    let mut x = entropy();
    let mut d: Vec<u8> = vec![5, 7, 9];
    for _ in 0..9 {
        d.push((x % 10) as u8);
        x /= 10;
    }
    let sum: u32 = d
        .iter()
        .enumerate()
        .map(|(i, c)| u32::from(*c) * if i % 2 == 0 { 1 } else { 3 })
        .sum();
    d.push(((10 - sum % 10) % 10) as u8);
    d.iter().map(|c| char::from(b'0' + c)).collect()
}

pub const SENDER: &str = "5790000121441";

/// Message number `i` to `receiver`; the id encodes the number.
pub fn msg(receiver: &str, i: usize) -> BusMessage {
    let body = format!("<Bundle><id value=\"{i}\"/></Bundle>");
    BusMessage {
        message_id: format!("{receiver}-{i:06}"),
        receiver_gln: receiver.into(),
        sender_gln: SENDER.into(),
        family: if i % 2 == 0 {
            Family::HospitalNotification
        } else {
            Family::Xdis20
        },
        event: if i % 3 == 0 {
            "admit-inpatient"
        } else {
            "discharge"
        }
        .into(),
        content_type: "application/fhir+xml".into(),
        timestamp: 1_700_000_000 + i as u64,
        sha256: format!("{:064x}", i),
        resend: i % 5 == 0,
        body: Bytes::from(body),
    }
}

pub fn index_of(d: &Delivery) -> usize {
    d.message.message_id[14..].parse().unwrap()
}

/// A bus plus what to clean up.
pub struct Fixture {
    pub bus: Box<dyn Bus>,
    pub amqp: bool,
    receivers: Mutex<Vec<String>>,
}

impl Deref for Fixture {
    type Target = dyn Bus;
    fn deref(&self) -> &(dyn Bus + 'static) {
        &*self.bus
    }
}

#[async_trait::async_trait]
impl sammen_bus::contract::Harness for Fixture {
    fn is_amqp(&self) -> bool {
        self.amqp
    }
    async fn ensure(&self, gln: &str) {
        Fixture::ensure(self, gln).await;
    }
}

impl Fixture {
    pub async fn ensure(&self, gln: &str) {
        self.receivers.lock().unwrap().push(gln.to_string());
        self.bus.ensure_receiver(gln).await.unwrap();
    }

    /// The AMQP bus behind this fixture (panics for the embedded one).
    pub fn topology(&self) -> Topology {
        self.bus.topology().clone()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if !self.amqp {
            return;
        }
        // Delete what the test declared, even after a panic: a thread with its own runtime.
        let topo = self.bus.topology().clone();
        let receivers = self.receivers.lock().map(|r| r.clone()).unwrap_or_default();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(delete_topology(&topo, &receivers));
        })
        .join();
    }
}

pub async fn delete_queue(name: &str) {
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_delete(name.into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    let _ = conn.close(200, "cleanup".into()).await;
}

pub async fn delete_topology(topo: &Topology, receivers: &[String]) {
    let Ok(conn) =
        lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await
    else {
        return;
    };
    let Ok(ch) = conn.create_channel().await else {
        return;
    };
    let mut queues: Vec<String> = receivers.iter().map(|g| topo.inbox_queue(g)).collect();
    queues.push(topo.dead_queue.clone());
    for q in queues {
        let _ = ch
            .queue_delete(q.into(), QueueDeleteOptions::default())
            .await;
    }
    for e in [&topo.route_exchange, &topo.dead_exchange] {
        let _ = ch
            .exchange_delete(e.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = conn.close(200, "cleanup".into()).await;
}

pub fn amqp_config(topo: Topology) -> AmqpConfig {
    let mut c = AmqpConfig::new(amqp_url());
    c.topology = topo;
    c.connection_name = format!("sammen-test-{}", entropy());
    c
}

/// An AMQP bus on a fresh namespace; fails loudly when RabbitMQ is not reachable.
pub async fn amqp(delivery_limit: u32) -> Fixture {
    let mut topo = Topology::namespaced(&unique_ns());
    topo.delivery_limit = delivery_limit;
    amqp_with(amqp_config(topo)).await
}

pub async fn amqp_with(config: AmqpConfig) -> Fixture {
    let url = config.url.clone();
    let bus = AmqpBus::start(config);
    if let Err(e) = wait_connected(&bus, Duration::from_secs(15)).await {
        panic!(
            "RabbitMQ is not reachable at {url} ({e}). These tests need a real broker: \
             start it with `rabbitmq-server -detached && rabbitmqctl await_startup`."
        );
    }
    Fixture {
        bus: Box::new(bus),
        amqp: true,
        receivers: Mutex::new(Vec::new()),
    }
}

/// An embedded bus (in-memory store) on a fresh namespace.
pub async fn embedded(delivery_limit: u32) -> Fixture {
    let mut topo = Topology::namespaced(&unique_ns());
    topo.delivery_limit = delivery_limit;
    Fixture {
        bus: Box::new(EmbeddedBus::in_memory(topo)),
        amqp: false,
        receivers: Mutex::new(Vec::new()),
    }
}

/// The next delivery within `t`, or `None`.
pub async fn next_within(sub: &mut Subscription, t: Duration) -> Option<Delivery> {
    tokio::time::timeout(t, sub.next()).await.ok().flatten()
}

/// The next delivery, failing the test after 10 s.
pub async fn next(sub: &mut Subscription) -> Delivery {
    next_within(sub, Duration::from_secs(10))
        .await
        .expect("expected a delivery within 10 s")
}
