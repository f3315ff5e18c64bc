//! The overdue scanner with an injected clock: nothing is late before the timeout, a published message
//! without acknowledgement is overdue after it (counted), unpublished ones and acknowledgements are left
//! alone, nothing is resent, and the timer loop keeps scanning.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{accept_new, party, request};
use sammen_model::{AckCode, Family, ResponseRef};
use sammen_outbox::{
    AcceptAudit, AcceptRequest, AckAcceptOutcome, Outbox, OutboxConfig, RecordId, State,
};
use sammen_relay::{OverdueScanner, SharedOutbox};
use sammen_store::{FjallStore, Store};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

const HOSP: &str = "5790000209354";
const MUNI: &str = "5790001348120";
const T0: u64 = 1_700_000_000;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0 + secs)
}

fn req(family: Family, from: &str, to: &str, id: &str, received: u64) -> AcceptRequest {
    let mut r = request(id, party(from, None), party(to, None), at(received));
    r.meta.family = family;
    r
}

fn accept(ob: &SharedOutbox, id: &str, received: u64) -> RecordId {
    accept_new(
        ob,
        req(Family::HospitalNotification, HOSP, MUNI, id, received),
    )
}

fn state(ob: &SharedOutbox, id: RecordId) -> State {
    ob.status(id).unwrap().unwrap().state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overdue_after_the_timeout_only_and_never_resent() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(FjallStore::open(dir.path(), sammen_outbox::trees::ALL).unwrap());
    let now = Arc::new(AtomicU64::new(0));
    let n = now.clone();
    let clock: sammen_outbox::Clock = Arc::new(move || at(n.load(Ordering::SeqCst)));
    let ob: SharedOutbox = Arc::new(
        Outbox::open(store, OutboxConfig::default())
            .unwrap()
            .with_clock(clock.clone()),
    );
    let late = accept(&ob, "m1", 0);
    ob.mark_published(late).unwrap();
    ob.mark_delivered(late).unwrap();
    let unpublished = accept(&ob, "m2", 0);
    // An acknowledgement (uncorrelated here), delivered: acks never wait for an ack.
    let mut a = req(Family::Acknowledgement, MUNI, HOSP, "a1", 0);
    a.meta.event = "ok".into();
    let resp = ResponseRef {
        message_id: "elsewhere".into(),
        envelope_id: None,
        code: AckCode::Ok,
    };
    let AckAcceptOutcome::Accepted { id: ack, .. } = ob
        .accept_acknowledgement(a, AcceptAudit::default(), &resp)
        .unwrap()
    else {
        panic!()
    };
    ob.mark_published(ack).unwrap();
    ob.mark_delivered(ack).unwrap();

    let scanner = OverdueScanner::new(ob.clone(), Duration::from_secs(30 * 60)).with_clock(clock);
    let stats = scanner.stats();
    now.store(29 * 60, Ordering::SeqCst);
    assert_eq!(scanner.scan_once().await.unwrap().marked, 0);
    assert_eq!(state(&ob, late), State::Delivered);

    now.store(30 * 60 + 1, Ordering::SeqCst);
    let scan = scanner.scan_once().await.unwrap();
    assert_eq!((scan.marked, scan.unpublished), (1, 1));
    assert_eq!(state(&ob, late), State::Overdue);
    assert_eq!(state(&ob, unpublished), State::Accepted);
    assert_eq!(state(&ob, ack), State::Delivered);
    assert_eq!(stats.marked.load(Ordering::Relaxed), 1);
    assert_eq!(stats.unpublished.load(Ordering::Relaxed), 1);
    assert_eq!(stats.scans.load(Ordering::Relaxed), 2);
    // Nothing resent: still one record for m1, and only the unpublished m2 waits to be published.
    assert_eq!(ob.find("m1").unwrap(), vec![late]);
    let pending: Vec<RecordId> = ob
        .next_batch(None, 10)
        .unwrap()
        .iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(pending, vec![unpublished]);

    // The timer loop: m2 gets published and, on a later tick, becomes overdue too.
    ob.mark_published(unpublished).unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(
        scanner
            .clone()
            .run(Duration::from_millis(20), stop.child_token()),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stats.marked.load(Ordering::Relaxed) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the loop never marked m2"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    run.await.unwrap();
    assert_eq!(state(&ob, unpublished), State::Overdue);
}
