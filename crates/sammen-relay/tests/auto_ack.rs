//! Broker-generated acknowledgements: a delivered FHIR message to an auto-acknowledged receiver gets a
//! valid `ok` Acknowledgement routed to its sender and becomes acknowledged(ok); repeats are duplicates;
//! other receivers, acknowledgements and FHIR senders without SOR get none. A delivered OIOXML letter gets
//! a valid XCTL03 positive receipt the same way (no SOR needed); never one with an invented VersionCode.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{accept_new, party, request};
use sammen_model::{AckCode, Family, Party};
use sammen_outbox::{
    AcceptOutcome, AcceptRequest, AckAcceptOutcome, MessageMeta, Outbox, OutboxConfig, RecordId,
    State,
};
use sammen_relay::{ack_channel, AutoAcknowledger, SharedOutbox};
use sammen_store::{FjallStore, Store};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

const HOSP: (&str, &str) = ("5790000209354", "265161000016000");
const MUNI: (&str, &str) = ("5790001348120", "953741000016009");
const OTHER: &str = "5790002515200";

fn accept(ob: &SharedOutbox, id: &str, from: Party, to: Party) -> RecordId {
    accept_new(ob, request(id, from, to, SystemTime::now()))
}

fn deliver(ob: &SharedOutbox, id: RecordId) {
    ob.mark_published(id).unwrap();
    ob.mark_delivered(id).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_messages_get_a_valid_ok_acknowledgement() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(FjallStore::open(dir.path(), sammen_outbox::trees::ALL).unwrap());
    let (obs, queue) = ack_channel([(MUNI.0.to_string(), MUNI.1.to_string())]);
    let ob: SharedOutbox = Arc::new(
        Outbox::open(store, OutboxConfig::default())
            .unwrap()
            .with_observer(obs),
    );
    let wake = Arc::new(tokio::sync::Notify::new());
    let auto = AutoAcknowledger::new(ob.clone(), queue, wake);
    let stats = auto.stats();
    let stop = CancellationToken::new();
    let task = tokio::spawn(auto.run(stop.child_token()));

    let to_muni = accept(&ob, "m1", party(HOSP.0, Some(HOSP.1)), party(MUNI.0, None));
    let to_other = accept(&ob, "m2", party(HOSP.0, Some(HOSP.1)), party(OTHER, None));
    let no_sor = accept(&ob, "m3", party(HOSP.0, None), party(MUNI.0, None));
    deliver(&ob, to_muni);
    deliver(&ob, to_other);
    deliver(&ob, no_sor);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stats.generated.load(Ordering::Relaxed) < 1 || stats.failed.load(Ordering::Relaxed) < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no acknowledgement generated"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = ob.status(to_muni).unwrap().unwrap();
    assert_eq!(s.state, State::Acknowledged(AckCode::Ok));
    let link = s.acknowledged_by.unwrap();
    // The acknowledgement waits for the hospital, and passes our own validator.
    let back = ob.next_batch(Some(&party(HOSP.0, None)), 10).unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].id, link.record);
    let r = sammen_adapters::validate(&back[0].payload, &sammen_adapters::Options::default());
    assert!(r.is_valid(), "{:#?}", r.issues);
    assert_eq!(r.family, Some(Family::Acknowledgement));
    assert_eq!(r.message_id.as_deref(), Some(link.message_id.as_str()));
    assert_eq!(r.sender.gln.as_deref(), Some(MUNI.0));
    assert_eq!(r.receiver.gln.as_deref(), Some(HOSP.0));
    assert_eq!(r.response.unwrap().message_id, "m1");
    // Other receivers are not acknowledged for; no SOR to answer to: counted as failed.
    assert_eq!(
        ob.status(to_other).unwrap().unwrap().state,
        State::Delivered
    );
    assert_eq!(ob.status(no_sor).unwrap().unwrap().state, State::Delivered);
    assert_eq!(stats.failed.load(Ordering::Relaxed), 1);
    // Acknowledging the same message again is a duplicate, never a second acknowledgement.
    let glns: HashMap<String, String> = [(MUNI.0.to_string(), MUNI.1.to_string())].into();
    let again = AutoAcknowledger::acknowledge(&ob, &glns, to_muni, SystemTime::now()).unwrap();
    assert!(
        matches!(again, Some(AckAcceptOutcome::Duplicate { .. })),
        "{again:?}"
    );
    // The acknowledgement itself, delivered, is not acknowledged.
    deliver(&ob, link.record);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(stats.generated.load(Ordering::Relaxed), 1);
    stop.cancel();
    task.await.unwrap();
}

/// Accept MedCom's XDIS91 example letter as the ingress would (meta from our validator).
fn accept_letter(ob: &SharedOutbox) -> (RecordId, sammen_model::Report) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../conformance/examples/oioxml/Flow1-XDIS91_Ex_to_FHIR.xml");
    let bytes = std::fs::read(path).unwrap();
    let r = sammen_adapters::validate(&bytes, &sammen_adapters::Options::default());
    assert!(r.is_valid(), "{:#?}", r.issues);
    assert_eq!(r.family, Some(Family::Xdis91));
    let req = AcceptRequest {
        bytes,
        meta: MessageMeta {
            message_id: r.message_id.clone().unwrap(),
            envelope_id: r.envelope_id.clone().unwrap(),
            family: Family::Xdis91,
            event: r.event.clone().unwrap(),
            sender: r.sender.clone(),
            receiver: r.receiver.clone(),
            received: SystemTime::now(),
        },
    };
    match ob.accept(req).unwrap() {
        AcceptOutcome::Accepted { id } => (id, r),
        o => panic!("{o:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_oioxml_letters_get_a_valid_xctl03_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(FjallStore::open(dir.path(), sammen_outbox::trees::ALL).unwrap());
    let probe = {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../conformance/examples/oioxml/Flow1-XDIS91_Ex_to_FHIR.xml");
        sammen_adapters::validate(
            &std::fs::read(path).unwrap(),
            &sammen_adapters::Options::default(),
        )
    };
    let receiver = probe.receiver.gln.clone().unwrap();
    // The receiver's SOR is only used for FHIR acknowledgements.
    let acked: HashMap<String, String> = [(receiver.clone(), MUNI.1.to_string())].into();
    let (obs, queue) = ack_channel(acked.clone());
    let ob: SharedOutbox = Arc::new(
        Outbox::open(store, OutboxConfig::default())
            .unwrap()
            .with_observer(obs),
    );
    let wake = Arc::new(tokio::sync::Notify::new());
    let auto = AutoAcknowledger::new(ob.clone(), queue, wake);
    let stats = auto.stats();
    let stop = CancellationToken::new();
    let task = tokio::spawn(auto.run(stop.child_token()));

    let (letter, r) = accept_letter(&ob);
    // An OIOXML sender has no SOR, and needs none.
    assert_eq!(r.sender.sor, None);
    deliver(&ob, letter);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stats.generated.load(Ordering::Relaxed) < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no receipt generated (failed: {})",
            stats.failed.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = ob.status(letter).unwrap().unwrap();
    assert_eq!(s.state, State::Acknowledged(AckCode::Ok));
    let link = s.acknowledged_by.unwrap();
    // The receipt waits for the letter's sender and passes our own validator, answering that letter.
    let sender = r.sender.gln.clone().unwrap();
    let back = ob.next_batch(Some(&party(&sender, None)), 10).unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].id, link.record);
    let a = sammen_adapters::validate(&back[0].payload, &sammen_adapters::Options::default());
    assert!(a.issues.is_empty(), "{:#?}", a.issues);
    assert_eq!(a.family, Some(Family::Xctl03));
    assert_eq!(a.event.as_deref(), Some("positive"));
    assert_eq!(a.message_id.as_deref(), Some(link.message_id.as_str()));
    assert!(a.message_id.as_ref().unwrap().len() <= 14);
    assert!(a.envelope_id.as_ref().unwrap().len() <= 14);
    assert_eq!(a.sender.gln.as_deref(), Some(receiver.as_str()));
    assert_eq!(a.receiver.gln.as_deref(), Some(sender.as_str()));
    let resp = a.response.unwrap();
    assert_eq!(Some(resp.message_id), r.message_id);
    assert_eq!(resp.envelope_id, r.envelope_id);
    assert_eq!(resp.code, AckCode::Ok);
    assert_eq!(stats.failed.load(Ordering::Relaxed), 0);
    // A second delivery notification for the letter is a duplicate, never a second receipt.
    let again = AutoAcknowledger::acknowledge(&ob, &acked, letter, SystemTime::now()).unwrap();
    assert!(
        matches!(again, Some(AckAcceptOutcome::Duplicate { .. })),
        "{again:?}"
    );
    // The receipt itself, delivered, is not acknowledged.
    deliver(&ob, link.record);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(stats.generated.load(Ordering::Relaxed), 1);
    assert!(ob
        .next_batch(Some(&party(&sender, None)), 10)
        .unwrap()
        .is_empty());
    stop.cancel();
    task.await.unwrap();
}

/// A letter whose VersionCode cannot be read (here: the stored bytes are no Emessage) gets no receipt
/// with an invented version code: it is counted as failed and stays delivered.
#[test]
fn a_letter_without_a_readable_version_code_is_not_receipted() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(FjallStore::open(dir.path(), sammen_outbox::trees::ALL).unwrap());
    let ob: SharedOutbox = Arc::new(Outbox::open(store, OutboxConfig::default()).unwrap());
    let req = AcceptRequest {
        bytes: b"<Emessage/>".to_vec(),
        meta: MessageMeta {
            message_id: "BrevNr1".into(),
            envelope_id: "KuvertNr1".into(),
            family: Family::Xdis91,
            event: "nytbrev".into(),
            sender: party(HOSP.0, None),
            receiver: party(MUNI.0, None),
            received: SystemTime::now(),
        },
    };
    let AcceptOutcome::Accepted { id } = ob.accept(req).unwrap() else {
        panic!("not accepted")
    };
    deliver(&ob, id);
    let acked: HashMap<String, String> = [(MUNI.0.to_string(), MUNI.1.to_string())].into();
    assert!(AutoAcknowledger::acknowledge(&ob, &acked, id, SystemTime::now()).is_err());
    assert_eq!(ob.status(id).unwrap().unwrap().state, State::Delivered);
}
