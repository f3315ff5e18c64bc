//! Test fixtures: a bus of either kind over a unique namespace, cleaned up afterwards.
#![allow(dead_code, clippy::unwrap_used, clippy::manual_is_multiple_of)] // MSRV 1.85 predates is_multiple_of

use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use sammen_bus::{wait_connected, AmqpBus, AmqpConfig, Bus, EmbeddedBus, Topology};
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub fn amqp_url() -> String {
    std::env::var("SAMMEN_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

// Ids, GLNs, messages and receive helpers are the contract suite's own (one definition).
#[allow(unused_imports)] // each test file uses a different subset
pub use sammen_bus::contract::{index_of, msg, next, next_within, random_gln, unique_ns, SENDER};

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
    c.connection_name = unique_ns();
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

/// An embedded bus whose queues hold at most two ready messages in memory: every scenario then runs
/// with most of its messages read back from the store.
pub async fn embedded_small_window(delivery_limit: u32) -> Fixture {
    use sammen_bus::{MemoryQueueStore, Window};
    let mut topo = Topology::namespaced(&unique_ns());
    topo.delivery_limit = delivery_limit;
    let window = Window {
        messages: 2,
        bytes: 1 << 20,
    };
    let bus =
        EmbeddedBus::open_with_window(topo, Arc::new(MemoryQueueStore::default()), window).unwrap();
    Fixture {
        bus: Box::new(bus),
        amqp: false,
        receivers: Mutex::new(Vec::new()),
    }
}
