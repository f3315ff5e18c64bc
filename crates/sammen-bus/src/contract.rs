//! The bus contract as reusable scenarios, so every [`Bus`] implementation — and every
//! [`EmbeddedQueueStore`](crate::EmbeddedQueueStore) under an [`EmbeddedBus`](crate::EmbeddedBus) — runs the
//! *same* suite (this crate's `tests/contract.rs` runs it against RabbitMQ and the in-memory embedded bus;
//! `sammen-bus-store` runs it over its sled and fjall stores).
//!
//! Only compiled with the `contract-tests` feature (enable it in `[dev-dependencies]`). The scenarios panic
//! on a broken contract: they are test code, not library code.
//!
//! Use: implement [`Harness`] for a fixture that owns a bus (and whatever must be cleaned up when it drops),
//! write `async fn make(delivery_limit: u32) -> YourFixture`, then
//! `sammen_bus::contract_suite!(my_backend, make);` generates one `#[tokio::test]` per scenario in a module
//! `my_backend` (the calling crate needs `tokio` with `macros` and `rt-multi-thread`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::manual_is_multiple_of
)]

use crate::{BusError, BusMessage, Delivery, PublishOutcome, Source, Subscription};
use bytes::Bytes;
use sammen_model::Family;
use std::collections::HashSet;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use crate::Bus;

/// A bus under test. Dereferences to the bus; `ensure` declares a receiver (and remembers it for cleanup).
#[async_trait::async_trait]
pub trait Harness: Deref<Target = dyn Bus> + Send + Sync {
    /// True for the RabbitMQ bus (its status kind is `amqp`, otherwise `embedded`).
    fn is_amqp(&self) -> bool;
    /// Declare `gln`'s inbox; panics on failure.
    async fn ensure(&self, gln: &str);
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn entropy() -> u64 {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
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

/// Sender GLN of [`msg`].
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

/// The number [`msg`] encoded in a delivery's id.
pub fn index_of(d: &Delivery) -> usize {
    d.message.message_id[14..].parse().unwrap()
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

/// One `#[tokio::test]` per contract scenario, in module `$module`, each on a fresh fixture from
/// `$factory(delivery_limit).await` (a path visible from the calling module).
#[macro_export]
macro_rules! contract_suite {
    ($module:ident, $factory:path) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::contract_suite!(@t $factory, routes_by_key_to_the_right_receiver, 20);
            $crate::contract_suite!(@t $factory, unroutable_is_returned_not_lost, 20);
            $crate::contract_suite!(@t $factory, refuses_input_that_would_break_routing, 20);
            $crate::contract_suite!(@t $factory, nack_redelivers_and_ack_removes, 20);
            $crate::contract_suite!(@t $factory, unsettled_deliveries_return_when_the_subscriber_goes, 20);
            $crate::contract_suite!(@t $factory, keeps_order_per_receiver, 20);
            $crate::contract_suite!(@t $factory, prefetch_bounds_unsettled_deliveries, 20);
            $crate::contract_suite!(@t $factory, dead_letters_after_the_delivery_limit, 2);
            $crate::contract_suite!(@t $factory, status_reports_connected, 20);
        }
    };
    (@t $factory:path, $name:ident, $limit:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            $crate::contract::$name($factory($limit).await).await;
        }
    };
}

// ---- the scenarios ----

const QUIET: Duration = Duration::from_millis(400);

/// Routing by key: each receiver gets exactly its own messages, every field intact.
pub async fn routes_by_key_to_the_right_receiver<H: Harness>(f: H) {
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

/// A message for an undeclared receiver is `Returned` (312), not dropped.
pub async fn unroutable_is_returned_not_lost<H: Harness>(f: H) {
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

/// Input that would re-route or break the client is refused before sending.
pub async fn refuses_input_that_would_break_routing<H: Harness>(f: H) {
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

/// `nack(requeue)` redelivers (flagged, counted); `ack` removes for good.
pub async fn nack_redelivers_and_ack_removes<H: Harness>(f: H) {
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

/// Unsettled deliveries come back when their subscription goes away.
pub async fn unsettled_deliveries_return_when_the_subscriber_goes<H: Harness>(f: H) {
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

/// Pipelined publishes are delivered in publish order.
pub async fn keeps_order_per_receiver<H: Harness>(f: H) {
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

/// No more than `prefetch` unsettled deliveries at once.
pub async fn prefetch_bounds_unsettled_deliveries<H: Harness>(f: H) {
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

/// After `delivery_limit` returns, or one `nack(false)`, a message goes to the dead-letter queue.
pub async fn dead_letters_after_the_delivery_limit<H: Harness>(f: H) {
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

/// Status is connected until `close`, then closed, and publishing fails.
pub async fn status_reports_connected<H: Harness>(f: H) {
    let s = f.status();
    assert_eq!(s.state, crate::LinkState::Connected);
    assert_eq!(s.reconnects, 0);
    assert_eq!(s.kind, if f.is_amqp() { "amqp" } else { "embedded" });
    f.close().await;
    assert_eq!(f.status().state, crate::LinkState::Closed);
    assert!(matches!(
        f.publish(&msg(&random_gln(), 1)).await,
        Err(BusError::Closed | BusError::NotConnected(_))
    ));
}
