//! The HTTP inbox with two sammen nodes on one RabbitMQ (issue #6): a receiver polls node B's inbox and
//! gets a message node A accepted and published (one inbox queue, fed by both nodes). Its ack must move
//! the message to `delivered` in node A's outbox, where the record is. Needs RabbitMQ on 127.0.0.1:5672;
//! fails, never skips, without it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::amqp_url;
use sammen_bus::receipts::{node_receipts_queue, receipts_queue};
use sammen_bus::{wait_connected, AmqpBus, AmqpConfig, Bus, Topology};
use sammen_ingress::{InboxConfig, InboxRegistry, SharedOutbox};
use sammen_model::{Family, Party};
use sammen_outbox::{AcceptOutcome, AcceptRequest, MessageMeta, Outbox, OutboxConfig, State};
use sammen_relay::receipts::AmqpReceipts;
use sammen_relay::{Relay, RelayConfig};
use sammen_store::{FjallStore, Store};
use sammen_subscriber::AmqpReceiptSink;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

const RECEIVER: &str = "5790001348120";
const SENDER: &str = "5790000209354";

struct Node {
    outbox: SharedOutbox,
    bus: Arc<dyn Bus>,
    _dir: tempfile::TempDir,
}

async fn node(name: &str, topo: &Topology) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(FjallStore::open(dir.path(), sammen_outbox::trees::ALL).unwrap());
    let outbox: SharedOutbox = Arc::new(Outbox::open(store, OutboxConfig::default()).unwrap());
    let mut c = AmqpConfig::new(amqp_url());
    c.topology = topo.clone();
    c.receivers = vec![RECEIVER.into()];
    c.connection_name = format!("sammen-inbox-nodes-{name}");
    c.reply_to = Some(node_receipts_queue(topo, name).unwrap());
    let bus = AmqpBus::start(c);
    wait_connected(&bus, Duration::from_secs(15))
        .await
        .expect("RabbitMQ must run on 127.0.0.1:5672 (service rabbitmq-server start)");
    Node {
        outbox,
        bus: Arc::new(bus),
        _dir: dir,
    }
}

async fn delete(topo: &Topology) {
    let nodes = [
        node_receipts_queue(topo, "a").unwrap(),
        node_receipts_queue(topo, "b").unwrap(),
    ];
    common::delete_topology(topo, &[RECEIVER.into()], &nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbox_ack_on_another_node_marks_the_message_delivered_where_it_was_accepted() {
    let topo = Topology::namespaced(&format!("inbox-nodes-{}", std::process::id()));
    let stop = CancellationToken::new();
    let a = node("a", &topo).await;
    let b = node("b", &topo).await;

    // Node A: accepts and publishes, consumes its receipts.
    let relay = Relay::new(
        a.outbox.clone(),
        a.bus.clone(),
        RelayConfig {
            receivers: vec![RECEIVER.into()],
            ..RelayConfig::default()
        },
    );
    let wake = relay.waker();
    tokio::spawn(relay.run(stop.child_token()));
    tokio::spawn(
        AmqpReceipts::new(a.outbox.clone(), amqp_url(), topo.clone())
            .with_node("a")
            .unwrap()
            .run(stop.child_token()),
    );
    let id = "a5e5b880-c087-4055-b9ec-0000000000a1";
    let accepted = a
        .outbox
        .accept(AcceptRequest {
            bytes: b"<Bundle/>".to_vec(),
            meta: MessageMeta {
                message_id: id.into(),
                envelope_id: "b-a1".into(),
                family: Family::HospitalNotification,
                event: "admit-inpatient".into(),
                sender: Party {
                    gln: Some(SENDER.into()),
                    sor: None,
                },
                receiver: Party {
                    gln: Some(RECEIVER.into()),
                    sor: None,
                },
                received: SystemTime::now(),
            },
        })
        .unwrap();
    let AcceptOutcome::Accepted { id: record } = accepted else {
        panic!("{accepted:?}")
    };
    wake.notify_one();

    // Node B's HTTP inbox hands it out and takes the ack.
    let inbox = InboxRegistry::new(b.bus.clone(), b.outbox.clone(), InboxConfig::default());
    inbox.forward_receipts(Arc::new(AmqpReceiptSink::new(
        amqp_url(),
        receipts_queue(&topo),
    )));
    let handed = inbox
        .poll(RECEIVER, Duration::from_secs(20), 1)
        .await
        .unwrap();
    assert_eq!(handed.len(), 1, "nothing handed out");
    assert_eq!(handed[0].message_id, id);
    assert_eq!(
        inbox.ack(RECEIVER, &handed[0].delivery_id).await.unwrap(),
        Some(id.to_string())
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let state = loop {
        let s = a.outbox.status(record).unwrap().unwrap().state;
        if s == State::Delivered || tokio::time::Instant::now() >= deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.cancel();
    inbox.close().await;
    a.bus.close().await;
    b.bus.close().await;
    delete(&topo).await;
    assert_eq!(
        state,
        State::Delivered,
        "node A's record after node B's inbox ack"
    );
}
