//! Broker-generated acknowledgements: a delivered FHIR message to an auto-acknowledged receiver gets a
//! valid `ok` Acknowledgement routed to its sender and becomes acknowledged(ok); repeats are duplicates;
//! other receivers, acknowledgements and senders without SOR get none.
#![allow(clippy::unwrap_used, clippy::expect_used)]

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

fn party(gln: &str, sor: Option<&str>) -> Party {
    Party {
        gln: Some(gln.into()),
        sor: sor.map(str::to_owned),
    }
}

fn accept(ob: &SharedOutbox, id: &str, from: Party, to: Party) -> RecordId {
    let r = AcceptRequest {
        bytes: id.as_bytes().to_vec(),
        meta: MessageMeta {
            message_id: id.into(),
            envelope_id: format!("b-{id}"),
            family: Family::HospitalNotification,
            event: "admit-inpatient".into(),
            sender: from,
            receiver: to,
            received: SystemTime::now(),
        },
    };
    match ob.accept(r).unwrap() {
        AcceptOutcome::Accepted { id } => id,
        o => panic!("{o:?}"),
    }
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
