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
