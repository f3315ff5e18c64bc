//! Receipts applied as a group (what the AMQP consumer does with the receipts that arrived together):
//! each receipt's outcome is that of applying it alone, in order, and the published rows move in one
//! commit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{accept_new, party, request};
use sammen_bus::receipts::{DeliveryReceipt, ReceiptOutcome};
use sammen_outbox::{Outbox, OutboxConfig, RecordId, State};
use sammen_relay::receipts::{apply_receipts, Applied};
use sammen_relay::SharedOutbox;
use sammen_store::{FjallStore, Store};
use std::sync::Arc;
use std::time::SystemTime;

const HOSP: &str = "5790000209354";
const MUNI: &str = "5790001348120";

fn accept(ob: &SharedOutbox, id: &str) -> RecordId {
    let req = request(id, party(HOSP, None), party(MUNI, None), SystemTime::now());
    accept_new(ob, req)
}

fn receipt(ob: &SharedOutbox, id: RecordId) -> DeliveryReceipt {
    let s = ob.status(id).unwrap().unwrap();
    DeliveryReceipt {
        message_id: s.meta.message_id,
        receiver_gln: MUNI.into(),
        sha256: s.sha256,
        outcome: ReceiptOutcome::Written,
        delivered_at: 0,
        subscriber: "test".into(),
    }
}

fn state(ob: &SharedOutbox, id: RecordId) -> State {
    ob.status(id).unwrap().unwrap().state
}

#[tokio::test]
async fn a_group_of_receipts_applies_each_as_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(FjallStore::open(dir.path(), sammen_outbox::trees::ALL).unwrap());
    let ob: SharedOutbox = Arc::new(Outbox::open(store, OutboxConfig::default()).unwrap());
    let published: Vec<RecordId> = (0..3).map(|n| accept(&ob, &format!("p{n}"))).collect();
    for id in &published {
        ob.mark_published(*id).unwrap();
    }
    // A receipt that overtook the relay's confirm: still accepted.
    let early = accept(&ob, "early");
    // Already delivered: a second receipt changes nothing.
    let done = accept(&ob, "done");
    ob.mark_published(done).unwrap();
    ob.mark_delivered(done).unwrap();
    let mut unknown = receipt(&ob, published[0]);
    unknown.message_id = "nobody-sent-this".into();
    let mut wrong_sha = receipt(&ob, published[1]);
    wrong_sha.sha256 = "00".repeat(32);

    let group = vec![
        receipt(&ob, published[0]),
        receipt(&ob, early),
        unknown,
        receipt(&ob, published[1]),
        receipt(&ob, published[0]), // the same receipt twice in one group
        receipt(&ob, done),
        wrong_sha,
        receipt(&ob, published[2]),
    ];
    let applied = apply_receipts(&ob, group).await.unwrap();
    let a = |changed, held| Applied { changed, held };
    assert_eq!(
        applied,
        vec![
            a(1, true),
            a(1, true),
            a(0, false),
            a(1, true),
            a(0, true), // as applied alone after the first: already delivered
            a(0, true),
            a(0, false),
            a(1, true),
        ]
    );
    for id in published.iter().chain([&early, &done]) {
        assert_eq!(state(&ob, *id), State::Delivered);
    }
    // Applying the same receipts again changes nothing.
    let again = apply_receipts(&ob, vec![receipt(&ob, published[2])])
        .await
        .unwrap();
    assert_eq!(again, vec![a(0, true)]);
    assert!(apply_receipts(&ob, Vec::new()).await.unwrap().is_empty());
}
