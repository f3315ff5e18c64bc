//! The outbox with its audit log: one leaf per event, in the same batch as the change, with the right
//! fields; nothing of a failed batch; no CPR anywhere in the store.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use sammen_model::{AckCode, Family, PatientId};
use sammen_outbox::sammen_audit::ops::{search_store, verify_store};
use sammen_outbox::sammen_audit::{
    stored_leaves, AuditLog, Event, Leaf, LeafEvent, LeafIndex, Outcome, PatientKey, Search,
};
use sammen_outbox::*;
use sammen_store::{Batch, KeyValue, Ticket};

const A: &str = "5790001348120";
const R1: &str = "5790002515200";
const CPR: &str = "0101011234";

fn patient() -> AcceptAudit {
    AcceptAudit::default()
        .patient(Some(PatientId::new("urn:oid:1.2.208.176.1.2", CPR)))
        .cert_fingerprint(Some("ab".repeat(32)))
}

fn pseudonym() -> String {
    PatientKey::new(PATIENT_KEY).unwrap().pseudonym(CPR)
}

/// Every leaf of the log after genesis, in order.
fn leaves<S: Store>(ob: &Outbox<S>) -> Vec<Leaf> {
    let a = ob.audit().unwrap();
    stored_leaves(a.store())
        .unwrap()
        .into_iter()
        .skip(1)
        .map(|(_, v)| Leaf::decode(&v).unwrap())
        .collect()
}

fn kinds(ls: &[Leaf]) -> Vec<&'static str> {
    ls.iter().map(|l| l.event.kind()).collect()
}

/// No byte sequence of the CPR (with or without the dash) in any file under `dir`.
fn assert_no_cpr(dir: &Path) {
    let dashed = format!("{}-{}", &CPR[..6], &CPR[6..]);
    for entry in walk(dir) {
        let bytes = std::fs::read(&entry).unwrap();
        for needle in [CPR.as_bytes(), dashed.as_bytes()] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "CPR found in {}",
                entry.display()
            );
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn every_event_gets_one_leaf<B: Backend>() {
    let dir = tempfile::tempdir().unwrap();
    let (secs, clock) = manual_clock();
    let ob = B::open(dir.path(), OutboxConfig::default()).with_clock(clock);
    if ob.audit().is_none() {
        return; // plain backends: nothing to check
    }
    let mut expect: Vec<&str> = Vec::new();
    let mut check = |ob: &Outbox<B::S>, add: &[&'static str]| {
        expect.extend_from_slice(add);
        assert_eq!(kinds(&leaves(ob)), expect, "{}", B::NAME);
    };
    let AcceptOutcome::Accepted { id } = ob
        .accept_with(req(A, R1, "m1", "b1", b"one"), patient())
        .unwrap()
    else {
        panic!()
    };
    check(&ob, &["accepted"]);
    assert_eq!(
        ob.accept_with(req(A, R1, "m1", "b1", b"one"), patient())
            .unwrap(),
        AcceptOutcome::Duplicate { id }
    );
    check(&ob, &["duplicate"]);
    let AcceptOutcome::Resend { id: resend, .. } = ob
        .accept_with(req(A, R1, "m1", "b2", b"one"), patient())
        .unwrap()
    else {
        panic!()
    };
    check(&ob, &["resend"]);
    assert!(matches!(
        ob.accept(req(A, R1, "m2", "b1", b"two")).unwrap(),
        AcceptOutcome::Conflict { .. }
    ));
    check(&ob, &["rejected"]);
    secs.store(10, Ordering::SeqCst);
    ob.mark_published(id).unwrap();
    check(&ob, &["published"]);
    ob.mark_delivered(id).unwrap();
    check(&ob, &["delivered"]);
    ob.mark_overdue(id).unwrap();
    check(&ob, &["overdue"]);
    ob.mark_acknowledged(id, AckCode::TransientError).unwrap();
    check(&ob, &["acknowledged"]);
    // A refused transition writes nothing.
    assert!(ob.mark_published(id).is_err());
    check(&ob, &[]);
    // An attempt that does not kill enters no state and writes no leaf.
    assert!(matches!(
        ob.record_attempt(resend, "nack").unwrap(),
        AttemptOutcome::Retry { .. }
    ));
    check(&ob, &[]);
    ob.mark_dead(resend, "gave up").unwrap();
    check(&ob, &["dead"]);
    // Retention: payloads, then whole records, each a leaf.
    let s = ob
        .purge(at(100), Duration::from_secs(1), Duration::from_secs(1_000))
        .unwrap();
    assert_eq!(s.payloads, 2);
    check(&ob, &["payload-purged", "payload-purged"]);
    let s = ob
        .purge(
            at(2_000),
            Duration::from_secs(1),
            Duration::from_secs(1_000),
        )
        .unwrap();
    assert_eq!(s.records, 2);
    check(&ob, &["purged", "purged"]);
    // Events from outside the outbox.
    let mut ev = LeafEvent::new(
        1_700_000_000_000,
        Event::Rejected {
            code: "id.gln.check-digit".into(),
        },
        Outcome::SeriousFailure,
    );
    ev.message_id = Some("m9".into());
    ev.patient = Some(PatientId::new("urn:oid:1.2.208.176.1.2", CPR));
    let idx = ob.record(ev).unwrap().unwrap();
    check(&ob, &["rejected"]);
    assert_eq!(idx, LeafIndex(ob.audit().unwrap().size() - 1));

    // Fields.
    let ls = leaves(&ob);
    let sha_one = "7692c3ad3540bb803c020b3aee66cd8887123234ea0c6e7143c0add73ff431ed";
    let acc = &ls[0];
    assert_eq!(acc.message_id.as_deref(), Some("m1"));
    assert_eq!(acc.bundle_id.as_deref(), Some("b1"));
    assert_eq!(acc.family, Some(Family::CareCommunication));
    assert_eq!(
        acc.event_code.as_deref(),
        Some("care-communication-message")
    );
    assert_eq!(acc.sender.as_ref().unwrap().gln.as_deref(), Some(A));
    assert_eq!(acc.receiver.as_ref().unwrap().gln.as_deref(), Some(R1));
    assert_eq!(acc.payload_sha256.as_deref(), Some(sha_one));
    assert_eq!(acc.cert_fingerprint, Some("ab".repeat(32)));
    assert_eq!(acc.outcome, Outcome::Success);
    assert_eq!(acc.time_ms, 1_700_000_000_000);
    assert_eq!(ls[2].bundle_id.as_deref(), Some("b2"));
    let conflict = &ls[3];
    assert_eq!(
        conflict.event,
        Event::Rejected {
            code: CONFLICT_CODE.into()
        }
    );
    assert_eq!(conflict.outcome, Outcome::SeriousFailure);
    assert_eq!(conflict.patient, None);
    assert_eq!(ls[4].time_ms, 1_700_000_010_000);
    assert_eq!(
        ls[7].event,
        Event::Acknowledged {
            code: AckCode::TransientError
        }
    );
    assert_eq!(ls[7].outcome, Outcome::MinorFailure);
    assert_eq!(ls[8].outcome, Outcome::MajorFailure);
    // The patient's pseudonym on every leaf of m1 (also after the accept), the CPR nowhere.
    for l in ls.iter().filter(|l| l.message_id.as_deref() == Some("m1")) {
        assert_eq!(l.patient, Some(pseudonym()), "{:?}", l.event);
    }
    let a = ob.audit().unwrap();
    let by_cpr = search_store(
        a.store(),
        &Search::Cpr {
            cpr: CPR.into(),
            key: PatientKey::new(PATIENT_KEY).unwrap(),
        },
    )
    .unwrap();
    assert_eq!(by_cpr.len(), 13, "{:?}", kinds(&leaves(&ob)));
    a.checkpoint_now().unwrap();
    verify_store(a.store(), &a.public_key(), None).unwrap();
    // The pseudonym row went with the record.
    assert!(a
        .store()
        .range(trees::AUDIT_PATIENT, &[], None, 10)
        .unwrap()
        .is_empty());
    drop(ob);
    assert_no_cpr(dir.path());
}

fn plain_outbox_records_nothing<B: Backend>() {
    let dir = tempfile::tempdir().unwrap();
    let ob = B::open(dir.path(), OutboxConfig::default());
    if ob.audit().is_some() {
        return;
    }
    let ev = LeafEvent::new(1, Event::Received, Outcome::Success);
    assert_eq!(ob.record(ev).unwrap(), None);
    // The patient is accepted and ignored.
    assert!(matches!(
        ob.accept_with(req(A, R1, "m1", "b1", b"one"), patient())
            .unwrap(),
        AcceptOutcome::Accepted { .. }
    ));
}

/// The pseudonym lives in the record's metadata (no key of its own, not in the status views); a record
/// of an older data dir, with the pseudonym under `audit_patient` and none in its metadata, still gets
/// it on its later leaves, and the purge removes that key.
fn pseudonym_in_the_record_and_under_the_older_key<B: Backend>() {
    let dir = tempfile::tempdir().unwrap();
    let (secs, clock) = manual_clock();
    let ob = B::open(dir.path(), OutboxConfig::default()).with_clock(clock);
    let Some(a) = ob.audit() else {
        return;
    };
    let accept =
        |m: &str, b: &str| match ob.accept_with(req(A, R1, m, b, b"one"), patient()).unwrap() {
            AcceptOutcome::Accepted { id } => id,
            other => panic!("{other:?}"),
        };
    let new = accept("m1", "b1");
    let old = accept("m2", "b2");
    let patient_rows = || {
        a.store()
            .range(trees::AUDIT_PATIENT, &[], None, 10)
            .unwrap()
    };
    assert!(patient_rows().is_empty(), "accept wrote the older key");
    assert_eq!(ob.status(new).unwrap().unwrap().patient, Some(pseudonym()));
    // Make `old` look as an older version wrote it.
    let key = old.0.to_be_bytes();
    let mut meta: serde_json::Value =
        serde_json::from_slice(&a.store().get(trees::META, &key).unwrap().unwrap()).unwrap();
    meta.as_object_mut().unwrap().remove("patient").unwrap();
    let mut b = Batch::new();
    b.put(
        trees::META,
        key.to_vec(),
        serde_json::to_vec(&meta).unwrap(),
    );
    b.put(trees::AUDIT_PATIENT, key.to_vec(), pseudonym().into_bytes());
    a.store().commit(b).unwrap();
    assert_eq!(ob.status(old).unwrap().unwrap().patient, None);
    for id in [new, old] {
        ob.mark_published(id).unwrap();
        ob.mark_dead(id, "test").unwrap();
    }
    let ls = leaves(&ob);
    let published: Vec<_> = ls.iter().filter(|l| l.event == Event::Published).collect();
    assert_eq!(published.len(), 2);
    for l in published {
        assert_eq!(l.patient, Some(pseudonym()), "{:?}", l.message_id);
    }
    assert_eq!(patient_rows().len(), 1);
    secs.store(100, Ordering::SeqCst);
    let one = Duration::from_secs(1);
    ob.purge(at(100), one, one).unwrap();
    assert!(patient_rows().is_empty(), "purge left the older key");
    let purged = leaves(&ob)
        .into_iter()
        .filter(|l| l.event == Event::Purged)
        .count();
    assert_eq!(purged, 2);
}

per_backend!(
    every_event_gets_one_leaf,
    plain_outbox_records_nothing,
    pseudonym_in_the_record_and_under_the_older_key
);

/// A store whose writes can be made to fail, to show a failed batch leaves neither change nor leaf.
struct Flaky {
    inner: Arc<dyn Store>,
    fail: AtomicBool,
}

impl Store for Flaky {
    fn backend_name(&self) -> &'static str {
        "flaky"
    }
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(tree, key)
    }
    fn range(
        &self,
        tree: &str,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        self.inner.range(tree, from, to, limit)
    }
    fn last(&self, tree: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.last(tree)
    }
    fn submit(&self, batch: Batch) -> Result<Ticket, StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::DiskFull("test".into()));
        }
        self.inner.submit(batch)
    }
}

#[test]
fn failed_batch_leaves_neither_change_nor_leaf() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn Store> =
        Arc::new(sammen_store::FjallStore::open(dir.path(), trees::AUDITED).unwrap());
    let flaky = Arc::new(Flaky {
        inner,
        fail: AtomicBool::new(false),
    });
    let log = AuditLog::open(Arc::clone(&flaky), audit_config(None), audit_key()).unwrap();
    let ob = Outbox::open_with_audit(Arc::new(log), OutboxConfig::default()).unwrap();
    let AcceptOutcome::Accepted { id } = ob.accept(req(A, R1, "m1", "b1", b"one")).unwrap() else {
        panic!()
    };
    flaky.fail.store(true, Ordering::SeqCst);
    let e = ob.mark_published(id).unwrap_err();
    assert!(e.is_disk_full(), "{e:?}");
    let e = ob.accept(req(A, R1, "m2", "b2", b"two")).unwrap_err();
    assert!(e.is_disk_full(), "{e:?}");
    assert!(ob
        .accept(req(A, R1, "m1", "b1", b"one"))
        .unwrap_err()
        .is_disk_full());
    let a = ob.audit().unwrap();
    // Not poisoned: the hole waits for the store to take writes again.
    assert_eq!(a.size(), 2);
    flaky.fail.store(false, Ordering::SeqCst);
    // Neither change ...
    assert_eq!(ob.status(id).unwrap().unwrap().state, State::Accepted);
    assert!(ob.find("m2").unwrap().is_empty());
    assert_eq!(kinds(&leaves(&ob)), ["accepted"]);
    // ... nor leaf: once writes work, the next commit fills the indices handed out with `lost-write`
    // leaves (which record nothing), and the outbox carries on.
    ob.mark_published(id).unwrap();
    assert_eq!(
        kinds(&leaves(&ob)),
        [
            "accepted",
            "lost-write",
            "lost-write",
            "lost-write",
            "published"
        ]
    );
    assert_eq!(a.size(), 6);
    a.checkpoint_now().unwrap();
    verify_store(a.store(), &a.public_key(), None).unwrap();
}

#[test]
fn open_with_audit_refuses_a_store_without_its_trees() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = trees::ALL.to_vec();
    t.extend(sammen_outbox::sammen_audit::trees::ALL);
    let store: Arc<dyn Store> = Arc::new(sammen_store::FjallStore::open(dir.path(), &t).unwrap());
    let log = AuditLog::open(store, audit_config(None), audit_key()).unwrap();
    assert!(Outbox::open_with_audit(Arc::new(log), OutboxConfig::default()).is_err());
}

#[test]
fn concurrent_accepts_and_transitions_keep_the_log_whole() {
    let dir = tempfile::tempdir().unwrap();
    let ob = Arc::new(AuditedFjall::open(dir.path(), OutboxConfig::default()));
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let ob = Arc::clone(&ob);
            std::thread::spawn(move || {
                for i in 0..40 {
                    let m = format!("t{t}-{i}");
                    let AcceptOutcome::Accepted { id } =
                        ob.accept(req(A, R1, &m, &m, b"x")).unwrap()
                    else {
                        panic!()
                    };
                    if i % 2 == 0 {
                        ob.mark_published(id).unwrap();
                    }
                    // a duplicate now and then
                    if i % 5 == 0 {
                        ob.accept(req(A, R1, &m, &m, b"x")).unwrap();
                    }
                    if i % 10 == 0 {
                        ob.audit().unwrap().checkpoint_now().unwrap();
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let ls = leaves(&ob);
    let k = kinds(&ls);
    assert_eq!(k.iter().filter(|k| **k == "accepted").count(), 320);
    assert_eq!(k.iter().filter(|k| **k == "published").count(), 160);
    assert_eq!(k.iter().filter(|k| **k == "duplicate").count(), 64);
    let a = ob.audit().unwrap();
    assert_eq!(a.size(), 1 + 320 + 160 + 64);
    a.checkpoint_now().unwrap();
    verify_store(a.store(), &a.public_key(), None).unwrap();
    // Accept order = id order = leaf order.
    let ids: Vec<u64> = ls
        .iter()
        .filter(|l| l.event == Event::Accepted)
        .map(|l| ob.find(l.message_id.as_deref().unwrap()).unwrap()[0].0)
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}
