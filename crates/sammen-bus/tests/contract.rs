//! The bus contract, run against both backends: the AMQP bus on the real RabbitMQ (127.0.0.1:5672 or
//! SAMMEN_TEST_AMQP_URL; a missing broker fails these tests) and the embedded bus.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use sammen_bus::{BusError, PublishOutcome, Source};
use std::collections::HashSet;
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(400);

async fn routes_by_key_to_the_right_receiver(f: Fixture) {
    let (a, b) = (random_gln(), random_gln());
    f.ensure(&a).await;
    f.ensure(&b).await;
    let mut sent = Vec::new();
    for i in 0..6 {
        let to = if i % 3 == 0 { &b } else { &a };
        let m = msg(to, i);
        assert_eq!(
            f.publish_confirmed(&m).await.unwrap(),
            PublishOutcome::Confirmed
        );
        sent.push(m);
    }
    let mut sub_a = f.subscribe(Source::Inbox(a.clone()), 10).await.unwrap();
    for want in sent.iter().filter(|m| m.receiver_gln == a) {
        let d = next(&mut sub_a).await;
        // Every property and header survives the trip, bytes identical.
        assert_eq!(&d.message, want);
        assert_eq!(d.routing_key, want.routing_key().unwrap());
        assert!(!d.redelivered);
        assert_eq!(d.delivery_count, 0);
        d.ack().await.unwrap();
    }
    assert!(
        next_within(&mut sub_a, QUIET).await.is_none(),
        "A got B's message"
    );
    let mut sub_b = f.subscribe(Source::Inbox(b.clone()), 10).await.unwrap();
    let got: Vec<_> = [next(&mut sub_b).await, next(&mut sub_b).await].into();
    for d in got {
        assert_eq!(d.message.receiver_gln, b);
        d.ack().await.unwrap();
    }
    assert!(next_within(&mut sub_b, QUIET).await.is_none());
}

async fn unroutable_is_returned_not_lost(f: Fixture) {
    let nobody = random_gln();
    match f.publish_confirmed(&msg(&nobody, 1)).await.unwrap() {
        PublishOutcome::Returned { reply_code, .. } => assert_eq!(reply_code, 312),
        other => panic!("expected Returned, got {other:?}"),
    }
    // Declared, the same message goes through.
    f.ensure(&nobody).await;
    assert!(f
        .publish_confirmed(&msg(&nobody, 1))
        .await
        .unwrap()
        .is_confirmed());
}

async fn refuses_input_that_would_break_routing(f: Fixture) {
    let a = random_gln();
    f.ensure(&a).await;
    let mut m = msg(&a, 1);
    m.event = "x.#".into();
    assert!(matches!(f.publish(&m).await, Err(BusError::Invalid(_))));
    assert!(matches!(
        f.ensure_receiver("123").await,
        Err(BusError::Invalid(_))
    ));
    assert!(matches!(
        f.subscribe(Source::Inbox("#".into()), 1).await,
        Err(BusError::Invalid(_))
    ));
}

async fn nack_redelivers_and_ack_removes(f: Fixture) {
    let a = random_gln();
    f.ensure(&a).await;
    let m = msg(&a, 7);
    assert!(f.publish_confirmed(&m).await.unwrap().is_confirmed());
    let mut sub = f.subscribe(Source::Inbox(a.clone()), 5).await.unwrap();
    let d = next(&mut sub).await;
    assert!(!d.redelivered);
    d.nack(true).await.unwrap();
    let d = next(&mut sub).await;
    assert_eq!(d.message, m);
    assert!(d.redelivered);
    assert_eq!(d.delivery_count, 1);
    d.ack().await.unwrap();
    drop(sub);
    let mut sub = f.subscribe(Source::Inbox(a.clone()), 5).await.unwrap();
    assert!(
        next_within(&mut sub, QUIET).await.is_none(),
        "acked message came back"
    );
}

async fn unsettled_deliveries_return_when_the_subscriber_goes(f: Fixture) {
    let a = random_gln();
    f.ensure(&a).await;
    for i in 0..3 {
        assert!(f
            .publish_confirmed(&msg(&a, i))
            .await
            .unwrap()
            .is_confirmed());
    }
    let mut sub = f.subscribe(Source::Inbox(a.clone()), 5).await.unwrap();
    let first = next(&mut sub).await;
    first.ack().await.unwrap();
    let held = next(&mut sub).await; // never settled
    drop(sub);
    drop(held);
    let mut sub = f.subscribe(Source::Inbox(a.clone()), 5).await.unwrap();
    let mut again = Vec::new();
    for _ in 0..2 {
        let d = next(&mut sub).await;
        again.push((index_of(&d), d.redelivered));
        d.ack().await.unwrap();
    }
    again.sort();
    assert_eq!(again[0], (1, true));
    assert_eq!(again[1].0, 2);
}

async fn keeps_order_per_receiver(f: Fixture) {
    let a = random_gln();
    f.ensure(&a).await;
    const N: usize = 300;
    // Pipelined: all handed over in order, confirms awaited afterwards.
    let mut pending = Vec::new();
    for i in 0..N {
        pending.push(f.publish(&msg(&a, i)).await.unwrap());
    }
    for p in pending {
        assert_eq!(p.await, PublishOutcome::Confirmed);
    }
    let mut sub = f.subscribe(Source::Inbox(a.clone()), 64).await.unwrap();
    for i in 0..N {
        let d = next(&mut sub).await;
        assert_eq!(index_of(&d), i, "out of order");
        d.ack().await.unwrap();
    }
}

async fn prefetch_bounds_unsettled_deliveries(f: Fixture) {
    let a = random_gln();
    f.ensure(&a).await;
    for i in 0..10 {
        assert!(f
            .publish_confirmed(&msg(&a, i))
            .await
            .unwrap()
            .is_confirmed());
    }
    let mut sub = f.subscribe(Source::Inbox(a.clone()), 3).await.unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(next(&mut sub).await);
    }
    assert!(
        next_within(&mut sub, QUIET).await.is_none(),
        "prefetch exceeded"
    );
    held.remove(0).ack().await.unwrap();
    let d = next(&mut sub).await;
    assert_eq!(index_of(&d), 3);
}

async fn dead_letters_after_the_delivery_limit(f: Fixture) {
    let limit = f.topology().delivery_limit;
    let a = random_gln();
    f.ensure(&a).await;
    let m = msg(&a, 1);
    let rejected = msg(&a, 2);
    assert!(f.publish_confirmed(&m).await.unwrap().is_confirmed());
    let mut sub = f.subscribe(Source::Inbox(a.clone()), 1).await.unwrap();
    let mut deliveries = 0;
    while let Some(d) = next_within(&mut sub, Duration::from_secs(2)).await {
        deliveries += 1;
        assert!(deliveries <= limit + 5, "never dead-lettered");
        d.nack(true).await.unwrap();
    }
    assert_eq!(deliveries, limit + 1, "delivered once plus `limit` returns");
    // Rejected without requeue: dead at once.
    assert!(f.publish_confirmed(&rejected).await.unwrap().is_confirmed());
    let d = next(&mut sub).await;
    assert_eq!(d.message, rejected);
    d.nack(false).await.unwrap();

    let mut dead = f.subscribe(Source::DeadLetters, 10).await.unwrap();
    let mut ids = HashSet::new();
    for _ in 0..2 {
        let d = next(&mut dead).await;
        assert_eq!(d.message.receiver_gln, a);
        ids.insert(d.message.message_id.clone());
        d.ack().await.unwrap();
    }
    assert_eq!(ids, HashSet::from([m.message_id, rejected.message_id]));
    assert!(next_within(&mut sub, QUIET).await.is_none());
}

async fn status_reports_connected(f: Fixture) {
    let s = f.status();
    assert_eq!(s.state, sammen_bus::LinkState::Connected);
    assert_eq!(s.reconnects, 0);
    assert_eq!(s.kind, if f.amqp { "amqp" } else { "embedded" });
    f.close().await;
    assert_eq!(f.status().state, sammen_bus::LinkState::Closed);
    assert!(matches!(
        f.publish(&msg(&random_gln(), 1)).await,
        Err(BusError::Closed | BusError::NotConnected(_))
    ));
}

macro_rules! contract {
    ($backend:ident) => {
        mod $backend {
            use super::*;
            contract!(@t $backend, routes_by_key_to_the_right_receiver, 20);
            contract!(@t $backend, unroutable_is_returned_not_lost, 20);
            contract!(@t $backend, refuses_input_that_would_break_routing, 20);
            contract!(@t $backend, nack_redelivers_and_ack_removes, 20);
            contract!(@t $backend, unsettled_deliveries_return_when_the_subscriber_goes, 20);
            contract!(@t $backend, keeps_order_per_receiver, 20);
            contract!(@t $backend, prefetch_bounds_unsettled_deliveries, 20);
            contract!(@t $backend, dead_letters_after_the_delivery_limit, 2);
            contract!(@t $backend, status_reports_connected, 20);
        }
    };
    (@t $backend:ident, $name:ident, $limit:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            super::$name(common::$backend($limit).await).await;
        }
    };
}

contract!(amqp);
contract!(embedded);

/// Embedded only: a bus reopened over the same store finds its receivers and unsettled messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_bus_recovers_from_its_store() {
    use sammen_bus::{Bus, EmbeddedBus, EmbeddedQueueStore, MemoryQueueStore, Topology};
    use std::sync::Arc;
    let store = Arc::new(MemoryQueueStore::default());
    let topo = Topology::namespaced("restart");
    let a = random_gln();
    {
        let bus = EmbeddedBus::open(topo.clone(), store.clone()).unwrap();
        bus.ensure_receiver(&a).await.unwrap();
        for i in 0..3 {
            assert!(bus
                .publish_confirmed(&msg(&a, i))
                .await
                .unwrap()
                .is_confirmed());
        }
        let mut sub = bus.subscribe(Source::Inbox(a.clone()), 5).await.unwrap();
        next(&mut sub).await.ack().await.unwrap();
        let _unsettled = next(&mut sub).await;
        bus.close().await;
    }
    assert_eq!(store.load().unwrap()[&topo.inbox_queue(&a)].len(), 2);
    let bus = EmbeddedBus::open(topo.clone(), store.clone()).unwrap();
    let mut sub = bus.subscribe(Source::Inbox(a.clone()), 5).await.unwrap();
    for want in 1..3 {
        let d = next(&mut sub).await;
        assert_eq!(index_of(&d), want);
        assert!(d.redelivered);
        d.ack().await.unwrap();
    }
    // Routing survived too: the receiver's inbox exists without a new ensure_receiver.
    assert!(bus
        .publish_confirmed(&msg(&a, 9))
        .await
        .unwrap()
        .is_confirmed());
}
