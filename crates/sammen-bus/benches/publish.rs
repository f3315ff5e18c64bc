//! Baseline: raw lapin publishing vs the same load through `Bus::publish`, in one run.
//!
//! Workload (as in shared/research/limits.md Q2): 4 KiB persistent messages (delivery mode 2) to a durable
//! quorum queue, publisher confirms with 256 in flight, one connection, loopback RabbitMQ.
//! Runs raw / bus / raw / bus and prints msgs/s of each and the bus/raw ratio.
//!
//! `cargo bench -p sammen-bus --bench publish` (SAMMEN_BENCH_N messages per run, default 20000;
//! SAMMEN_TEST_AMQP_URL, default amqp://guest:guest@127.0.0.1:5672/%2f). Fails if RabbitMQ is down.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use lapin::options::QueueDeleteOptions;
use lapin::{Connection, ConnectionProperties};
use sammen_bus::{
    wait_connected, AmqpBus, AmqpConfig, Bus, BusMessage, PendingConfirm, PublishOutcome, Topology,
};
use sammen_model::Family;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

const WINDOW: usize = 256;
const SIZE: usize = 4096;
const GLN: &str = "5790001348120";

fn url() -> String {
    std::env::var("SAMMEN_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn body() -> Vec<u8> {
    // Incompressible-ish filler; RabbitMQ does not compress anyway.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..SIZE)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Raw lapin (`sammen_bus::baseline`). `routed`: publish what the Bus publishes (topic exchange,
/// mandatory, same properties and headers) to separate client overhead from broker-side routing cost.
async fn raw(n: usize, queue: &str, routed: bool) -> f64 {
    sammen_bus::baseline::raw_publish(&url(), queue, routed, n, WINDOW, &[body()])
        .await
        .expect("RabbitMQ reachable, every publish confirmed")
        .rate()
}

async fn through_bus(n: usize, ns: &str) -> f64 {
    let mut cfg = AmqpConfig::new(url());
    cfg.topology = Topology::namespaced(ns);
    cfg.window = WINDOW;
    let topo = cfg.topology.clone();
    let bus = AmqpBus::start(cfg);
    wait_connected(&bus, Duration::from_secs(15))
        .await
        .expect("RabbitMQ reachable");
    bus.ensure_receiver(GLN).await.unwrap();
    let payload = Bytes::from(body());
    let mut m = BusMessage {
        message_id: String::new(),
        receiver_gln: GLN.into(),
        sender_gln: "5790000121441".into(),
        family: Family::HospitalNotification,
        event: "admit-inpatient".into(),
        content_type: "application/fhir+xml".into(),
        timestamp: 1_700_000_000,
        sha256: "0".repeat(64),
        resend: false,
        body: payload,
    };
    let mut inflight: VecDeque<PendingConfirm> = VecDeque::with_capacity(WINDOW);
    let t0 = Instant::now();
    for i in 0..n {
        if inflight.len() == WINDOW {
            assert_eq!(
                inflight.pop_front().unwrap().await,
                PublishOutcome::Confirmed
            );
        }
        m.message_id = format!("bench-{i}");
        inflight.push_back(bus.publish(&m).await.unwrap());
    }
    for p in inflight {
        assert_eq!(p.await, PublishOutcome::Confirmed);
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    bus.close().await;
    // Clean up the namespaced topology.
    let conn = Connection::connect(&url(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    for q in [topo.inbox_queue(GLN), topo.dead_queue.clone()] {
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    }
    for e in [&topo.route_exchange, &topo.dead_exchange] {
        ch.exchange_delete(e.as_str().into(), Default::default())
            .await
            .unwrap();
    }
    conn.close(200, "bench done".into()).await.unwrap();
    rate
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing special: run a tiny smoke.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let n: usize = if smoke {
        500
    } else {
        std::env::var("SAMMEN_BENCH_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20_000)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pid = std::process::id();
        let (mut raws, mut routed, mut buses) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..2 {
            let r = raw(n, &format!("sammen-bench-raw-{pid}-{round}"), false).await;
            let rr = raw(n, &format!("sammen-bench-routed-{pid}-{round}"), true).await;
            let b = through_bus(n, &format!("sammen-bench-{pid}-{round}")).await;
            println!(
                "round {round}: raw lapin {r:>7.0} msg/s | raw lapin, routed like the bus {rr:>7.0} msg/s | Bus API {b:>7.0} msg/s | Bus/raw {:.2} | Bus/routed {:.2}",
                b / r,
                b / rr
            );
            raws.push(r);
            routed.push(rr);
            buses.push(b);
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (r, rr, b) = (mean(&raws), mean(&routed), mean(&buses));
        println!(
            "mean ({n} x {SIZE} B persistent, quorum queue, {WINDOW} confirms in flight): raw {r:.0} msg/s ({:.1} MB/s), \
             raw routed {rr:.0} msg/s, Bus {b:.0} msg/s; Bus/raw {:.2}, Bus/raw-routed {:.2}",
            r * SIZE as f64 / 1e6,
            b / r,
            b / rr
        );
    });
}
