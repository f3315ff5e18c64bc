//! Unit tests: codec round trip and corruption, store semantics on both backends.
#![allow(clippy::unwrap_used)]

use super::*;
use sammen_bus::BusMessage;
use sammen_model::Family;

fn sample(seq: u64) -> StoredMessage {
    StoredMessage {
        seq,
        delivery_count: 0,
        routing_key: "5790001348120.HospitalNotification.admit-inpatient".into(),
        message: BusMessage {
            message_id: format!("a5e5b880-c087-4055-b9ec-{seq:012}"),
            receiver_gln: "5790001348120".into(),
            sender_gln: "5790000121441".into(),
            family: Family::HospitalNotification,
            event: "admit-inpatient".into(),
            content_type: "application/fhir+xml".into(),
            timestamp: 1_700_000_000 + seq,
            sha256: "ab".repeat(32),
            resend: seq % 2 == 1,
            body: bytes::Bytes::from(format!("<Bundle>æøå {seq}</Bundle>")),
        },
    }
}

#[test]
fn codec_round_trips_and_refuses_garbage() {
    let m = sample(7);
    let v = codec::encode(&m);
    assert_eq!(codec::decode(7, &v).unwrap(), m);
    for cut in 0..v.len() {
        assert!(codec::decode(7, &v[..cut]).is_err(), "prefix {cut} decoded");
    }
    let mut extra = v.clone();
    extra.push(0);
    assert!(codec::decode(7, &extra).is_err());
    let mut bad_version = v;
    bad_version[0] = 9;
    assert!(codec::decode(7, &bad_version).is_err());
    // Keys of different queues never share a prefix.
    let a = codec::message_key("q", 1).unwrap();
    let b = codec::message_key("qq", 1).unwrap();
    assert!(!b.starts_with(&codec::queue_prefix("q").unwrap()));
    assert!(!a.starts_with(&codec::queue_prefix("qq").unwrap()));
}

fn semantics(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = StoreQueueStore::open(dir.path(), backend).unwrap();
        s.declare_queue("empty").unwrap();
        s.declare_queue("empty").unwrap();
        for seq in [3, 1, 2, 300] {
            s.append("in", &sample(seq)).unwrap();
        }
        s.append("other", &sample(5)).unwrap();
        s.set_delivery_count("in", 2, 4).unwrap();
        s.remove("in", 3).unwrap();
        s.remove("in", 99).unwrap(); // absent: fine
        let q = s.load().unwrap();
        assert_eq!(q["empty"], vec![]);
        let seqs: Vec<_> = q["in"].iter().map(|m| (m.seq, m.delivery_count)).collect();
        assert_eq!(seqs, vec![(1, 0), (2, 4), (300, 0)]);
        assert_eq!(q["other"], vec![sample(5)]);
    }
    // Reopened from disk: the same.
    let s = StoreQueueStore::open(dir.path(), backend).unwrap();
    let q = s.load().unwrap();
    assert_eq!(q.len(), 3);
    assert_eq!(q["in"][1].delivery_count, 4);
    assert_eq!(q["in"][2], sample(300));
    // A count that was set survives a re-append at count 0 only as 0 (append resets it).
    s.append("in", &sample(2)).unwrap();
    assert_eq!(s.load().unwrap()["in"][1].delivery_count, 0);
}

#[test]
fn semantics_sled() {
    semantics(Backend::Sled);
}

#[test]
fn semantics_fjall() {
    semantics(Backend::Fjall);
}

#[test]
fn new_refuses_a_store_without_the_bus_trees() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FjallStore::open(dir.path(), &["outbox"]).unwrap());
    assert!(StoreQueueStore::new(store).is_err());
}

#[test]
fn shares_a_store_with_other_trees() {
    let dir = tempfile::tempdir().unwrap();
    let mut trees = vec!["outbox"];
    trees.extend(TREES);
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), &trees).unwrap());
    let s = StoreQueueStore::new(store.clone()).unwrap();
    s.append("in", &sample(1)).unwrap();
    let mut b = Batch::new();
    b.put("outbox", b"k".to_vec(), b"v".to_vec());
    store.commit(b).unwrap();
    assert_eq!(s.load().unwrap()["in"], vec![sample(1)]);
}
