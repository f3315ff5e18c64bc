//! Delivery receipts with two sammen nodes (issue #6): each node has its own outbox and relay, both
//! publish into one RabbitMQ topology (a fresh namespace), and one reference subscriber sends receipts.
//! Every message must reach `delivered` in the outbox of the node that accepted it, whichever node's
//! consumer RabbitMQ hands a receipt to: through each node's own receipts queue (`reply_to`), and for
//! messages published without `reply_to` (an older version) through the shared queue. A receipt no node
//! holds is dropped and counted, not lost silently nor kept forever. Needs RabbitMQ on 127.0.0.1:5672
//! (SAMMEN_TEST_AMQP_URL); fails, never skips, without it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{accept_new, party, request};
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use sammen_bus::contract::{random_gln, unique_ns};
use sammen_bus::receipts::{node_receipts_queue, receipts_queue, DeliveryReceipt, ReceiptOutcome};
use sammen_bus::{wait_connected, AmqpBus, AmqpConfig, Bus, Topology};
use sammen_outbox::{Outbox, OutboxConfig, State};
use sammen_relay::receipts::{AmqpReceipts, ReceiptStats, SHARED_REDELIVERIES};
use sammen_relay::{Relay, RelayConfig, SharedOutbox};
use sammen_store::{FjallStore, Store};
use sammen_subscriber::{AmqpReceiptSink, Config, ReceiptSink, Subscriber};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

const SENDER: &str = "5790000209354";
const PER_NODE: usize = 20;

fn amqp_url() -> String {
    std::env::var("SAMMEN_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Deletes what the test declared in RabbitMQ, also when it fails.
struct Cleanup {
    topo: Topology,
    queues: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let topo = self.topo.clone();
        let mut queues = self.queues.clone();
        queues.push(topo.dead_queue.clone());
        queues.push(receipts_queue(&topo));
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let Ok(conn) =
                    lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
                        .await
                else {
                    return;
                };
                let Ok(ch) = conn.create_channel().await else {
                    return;
                };
                for q in queues {
                    let _ = ch
                        .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                        .await;
                }
                for e in [&topo.route_exchange, &topo.dead_exchange] {
                    let _ = ch
                        .exchange_delete(e.as_str().into(), ExchangeDeleteOptions::default())
                        .await;
                }
                let _ = conn.close(200, "cleanup".into()).await;
            });
        })
        .join();
    }
}

/// One sammen node: its own data dir and outbox, relay and receipts consumer.
struct Node {
    outbox: SharedOutbox,
    wake: Arc<tokio::sync::Notify>,
    stats: Arc<ReceiptStats>,
    _dir: tempfile::TempDir,
}

/// Publishing with `reply_to` (this version) or without (a node of an older version, whose messages
/// are still in the inboxes after the upgrade).
#[derive(Clone, Copy, PartialEq)]
enum Publisher {
    ReplyTo,
    Legacy,
}

async fn start_node(
    name: &str,
    topo: &Topology,
    receiver: &str,
    publisher: Publisher,
    stop: &CancellationToken,
) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(FjallStore::open(dir.path(), sammen_outbox::trees::ALL).unwrap());
    let outbox: SharedOutbox = Arc::new(Outbox::open(store, OutboxConfig::default()).unwrap());
    let mut ac = AmqpConfig::new(amqp_url());
    ac.topology = topo.clone();
    ac.receivers = vec![receiver.to_string()];
    ac.connection_name = format!("sammen-relay-test-{name}");
    if publisher == Publisher::ReplyTo {
        ac.reply_to = Some(node_receipts_queue(topo, name).unwrap());
    }
    let bus = AmqpBus::start(ac);
    if let Err(e) = wait_connected(&bus, Duration::from_secs(15)).await {
        panic!(
            "RabbitMQ is not reachable at {} ({e}); start it with `service rabbitmq-server start`",
            amqp_url()
        );
    }
    let bus: Arc<dyn Bus> = Arc::new(bus);
    let relay = Relay::new(
        outbox.clone(),
        bus,
        RelayConfig {
            receivers: vec![receiver.to_string()],
            poll: Duration::from_millis(100),
            ..RelayConfig::default()
        },
    );
    let wake = relay.waker();
    tokio::spawn(relay.run(stop.child_token()));
    let receipts = AmqpReceipts::new(outbox.clone(), amqp_url(), topo.clone())
        .with_node(name)
        .unwrap();
    let stats = receipts.stats();
    tokio::spawn(receipts.run(stop.child_token()));
    Node {
        outbox,
        wake,
        stats,
        _dir: dir,
    }
}

fn accept(ob: &SharedOutbox, id: &str, receiver: &str) {
    let mut r = request(
        id,
        party(SENDER, None),
        party(receiver, None),
        SystemTime::now(),
    );
    r.bytes = format!("<Bundle><id value=\"{id}\"/></Bundle>").into_bytes();
    accept_new(ob, r);
}

/// Message ids of `ob` not (yet) delivered, with their state.
fn not_delivered(ob: &SharedOutbox, ids: &[String]) -> Vec<(String, Option<State>)> {
    ids.iter()
        .filter_map(|id| {
            let rec = ob.find(id).unwrap();
            let state = rec
                .first()
                .and_then(|r| ob.status(*r).unwrap())
                .map(|s| s.state);
            (state != Some(State::Delivered)).then(|| (id.clone(), state))
        })
        .collect()
}

/// (applied, returned, unmatched) of one node's receipts consumer.
fn stats(s: &ReceiptStats) -> (u64, u64, u64) {
    (
        s.applied.load(Ordering::Relaxed),
        s.returned.load(Ordering::Relaxed),
        s.unmatched.load(Ordering::Relaxed),
    )
}

/// Two nodes publishing the way `publisher` says, one subscriber: every message ends `delivered` on the
/// node that accepted it.
async fn two_nodes(publisher: Publisher) -> [Node; 2] {
    let topo = Topology::namespaced(&unique_ns());
    let receiver = random_gln();
    let _cleanup = Cleanup {
        topo: topo.clone(),
        queues: vec![
            topo.inbox_queue(&receiver),
            node_receipts_queue(&topo, "a").unwrap(),
            node_receipts_queue(&topo, "b").unwrap(),
        ],
    };
    let stop = CancellationToken::new();
    let nodes = [
        start_node("a", &topo, &receiver, publisher, &stop).await,
        start_node("b", &topo, &receiver, publisher, &stop).await,
    ];
    // One reference subscriber on the receiver's inbox, receipts to RabbitMQ.
    let out = tempfile::tempdir().unwrap();
    let sub_bus = {
        let mut ac = AmqpConfig::new(amqp_url());
        ac.topology = topo.clone();
        ac.connection_name = "sammen-relay-test-subscriber".into();
        Arc::new(AmqpBus::start(ac))
    };
    let sub = Arc::new(
        Subscriber::new(Config::new(&receiver, out.path()))
            .unwrap()
            .with_receipts(Arc::new(AmqpReceiptSink::new(
                amqp_url(),
                receipts_queue(&topo),
            ))),
    );
    let sub_task = {
        let (sub, bus, stop) = (sub.clone(), sub_bus.clone(), stop.child_token());
        tokio::spawn(async move { sub.run(&*bus, stop).await })
    };

    let mut ids: Vec<Vec<String>> = vec![Vec::new(), Vec::new()];
    for i in 0..PER_NODE {
        for (n, node) in nodes.iter().enumerate() {
            let id = format!("a5e5b880-c087-4055-b9ec-{n:04x}{i:08x}");
            accept(&node.outbox, &id, &receiver);
            ids[n].push(id);
        }
    }
    for node in &nodes {
        node.wake.notify_one();
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while (sub.stats().written as usize) < 2 * PER_NODE {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the subscriber got only {:?}",
            sub.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Receipts are sent before the subscriber's ack; give them a moment to be applied.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let missing = loop {
        let missing: Vec<_> = nodes
            .iter()
            .zip(&ids)
            .map(|(node, ids)| not_delivered(&node.outbox, ids))
            .collect();
        if missing.iter().all(Vec::is_empty) || tokio::time::Instant::now() >= deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // A receipt for a message neither node holds: returned between the nodes for a while, then dropped
    // and counted by exactly one of them.
    let stray = DeliveryReceipt {
        message_id: "a5e5b880-c087-4055-b9ec-ffffffffffff".into(),
        receiver_gln: receiver.clone(),
        sha256: "0".repeat(64),
        outcome: ReceiptOutcome::Written,
        delivered_at: 0,
        subscriber: "test".into(),
    };
    AmqpReceiptSink::new(amqp_url(), receipts_queue(&topo))
        .send(&stray)
        .await
        .unwrap();
    let unmatched = |nodes: &[Node; 2]| -> u64 {
        nodes
            .iter()
            .map(|n| n.stats.unmatched.load(Ordering::Relaxed))
            .sum()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while unmatched(&nodes) < 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    let _ = sub_task.await;
    sub_bus.close().await;
    assert!(
        missing.iter().all(Vec::is_empty),
        "not delivered on the node that accepted them (node a: {} of {PER_NODE}, node b: {} of \
         {PER_NODE}): {missing:?}; receipts per node (applied, returned, unmatched): {:?}; \
         subscriber: {:?}",
        missing[0].len(),
        missing[1].len(),
        nodes.iter().map(|n| stats(&n.stats)).collect::<Vec<_>>(),
        sub.stats()
    );
    assert_eq!(sub.stats().receipt_failures, 0);
    assert_eq!(unmatched(&nodes), 1, "the stray receipt is dropped once");
    let returned: u64 = nodes
        .iter()
        .map(|n| n.stats.returned.load(Ordering::Relaxed))
        .sum();
    assert!(
        returned >= u64::from(SHARED_REDELIVERIES),
        "{returned}: the stray receipt was returned for the other node first"
    );
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_is_delivered_on_the_node_that_accepted_it() {
    let nodes = two_nodes(Publisher::ReplyTo).await;
    // Each node's receipts came on its own queue: nothing of theirs went round the shared one.
    for n in &nodes {
        assert_eq!(n.stats.applied.load(Ordering::Relaxed), PER_NODE as u64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_for_messages_without_reply_to_reach_their_node_through_the_shared_queue() {
    let nodes = two_nodes(Publisher::Legacy).await;
    for n in &nodes {
        assert_eq!(n.stats.applied.load(Ordering::Relaxed), PER_NODE as u64);
    }
}
