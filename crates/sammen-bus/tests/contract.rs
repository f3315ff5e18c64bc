//! The bus contract, run against both backends: the AMQP bus on the real RabbitMQ (127.0.0.1:5672 or
//! SAMMEN_TEST_AMQP_URL; a missing broker fails these tests) and the embedded bus.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use sammen_bus::Source;

// The scenarios live in `sammen_bus::contract` (feature `contract-tests`) so other crates' buses and
// embedded queue stores run exactly the same suite.
sammen_bus::contract_suite!(amqp, common::amqp);
sammen_bus::contract_suite!(embedded, common::embedded);
sammen_bus::contract_suite!(embedded_small_window, common::embedded_small_window);

/// Embedded only: a backlog stays in the store; memory holds at most the window (plus what a
/// subscriber's prefetch has unsettled), whatever the depth. Drained, it comes back complete, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_backlog_stays_in_the_store() {
    use sammen_bus::{Bus, EmbeddedBus, MemoryQueueStore, Topology, Window};
    use std::sync::Arc;
    let window = Window {
        messages: 16,
        bytes: 64 << 10,
    };
    let store = Arc::new(MemoryQueueStore::default());
    let topo = Topology::namespaced("backlog");
    let a = random_gln();
    let src = Source::Inbox(a.clone());
    let n = 3_000;
    {
        let bus = EmbeddedBus::open_with_window(topo.clone(), store.clone(), window).unwrap();
        bus.ensure_receiver(&a).await.unwrap();
        for i in 0..n {
            assert!(bus
                .publish_confirmed(&msg(&a, i))
                .await
                .unwrap()
                .is_confirmed());
        }
        assert_eq!(bus.depth(&src), Some((n, 0)));
        let (held, _) = bus.resident(&src).unwrap();
        assert!(held <= 16, "{held} messages in memory for a window of 16");
        // Half of them taken now (prefetch 8): never more than window + prefetch in memory.
        let mut sub = bus.subscribe(src.clone(), 8).await.unwrap();
        for want in 0..n / 2 {
            let d = next(&mut sub).await;
            assert_eq!(index_of(&d), want);
            assert!(!d.redelivered);
            d.ack().await.unwrap();
            let (held, _) = bus.resident(&src).unwrap();
            assert!(held <= 16 + 8, "{held} in memory at {want}");
        }
        // Returns go back in their place, ahead of what is still in the store: those the subscriber
        // held when it went away, then a nack.
        drop(sub);
        let mut sub = bus.subscribe(src.clone(), 1).await.unwrap();
        let d = next(&mut sub).await;
        assert_eq!(index_of(&d), n / 2);
        d.nack(true).await.unwrap();
        let d = next(&mut sub).await;
        assert_eq!(index_of(&d), n / 2);
        assert!(d.redelivered);
        d.ack().await.unwrap();
        drop(sub);
        bus.close().await;
    }
    // Reopened: nothing is read until a subscriber asks; the count is right at once.
    let bus = EmbeddedBus::open_with_window(topo, store, window).unwrap();
    let rest = n - n / 2 - 1;
    let held = bus.resident(&src).unwrap().0;
    assert_eq!(held, 0);
    let depth = bus.depth(&src).unwrap();
    assert_eq!(depth, (rest, 0));
    let mut sub = bus.subscribe(src.clone(), 8).await.unwrap();
    for want in n / 2 + 1..n {
        let d = next(&mut sub).await;
        assert_eq!(index_of(&d), want);
        assert!(d.redelivered, "stored before the restart");
        d.ack().await.unwrap();
    }
    assert!(next_within(&mut sub, std::time::Duration::from_millis(200))
        .await
        .is_none());
    assert_eq!(bus.depth(&src), Some((0, 0)));
    // Published after the restart: not a redelivery.
    assert!(bus
        .publish_confirmed(&msg(&a, 7))
        .await
        .unwrap()
        .is_confirmed());
    assert!(!next(&mut sub).await.redelivered);
}

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
