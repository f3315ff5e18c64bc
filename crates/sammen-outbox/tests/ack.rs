//! Acknowledgements in the outbox: correlation in the ack's own batch, uncorrelated acks, refusals
//! (second different ack, ack of an ack), resends answered with the stored ack, and the overdue scan
//! with an injected clock. Every test runs on both backends, with and without the audit log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use sammen_model::{AckCode, Family, ResponseRef};
use sammen_outbox::sammen_audit::ops::search_store;
use sammen_outbox::sammen_audit::Search;
use sammen_outbox::*;

const HOSP: &str = "5790000209354";
const MUNI: &str = "5790001348120";
const OTHER: &str = "5790002515200";

fn ack_req(sender: &str, receiver: &str, id: &str, bundle: &str) -> AcceptRequest {
    let mut r = req(sender, receiver, id, bundle, format!("ack {id}").as_bytes());
    r.meta.family = Family::Acknowledgement;
    r.meta.event = "ok".into();
    r
}

fn answers(id: &str, code: AckCode) -> ResponseRef {
    ResponseRef {
        message_id: id.into(),
        envelope_id: None,
        code,
    }
}

fn accepted<S: Store>(ob: &Outbox<S>, r: AcceptRequest) -> RecordId {
    match ob.accept(r).unwrap() {
        AcceptOutcome::Accepted { id } => id,
        o => panic!("{o:?}"),
    }
}

fn state<S: Store>(ob: &Outbox<S>, id: RecordId) -> State {
    ob.status(id).unwrap().unwrap().state
}

/// Leaf kinds recorded for a message id (empty without an audit log).
fn leaf_kinds<S: Store>(ob: &Outbox<S>, message_id: &str) -> Vec<String> {
    let Some(a) = ob.audit() else {
        return Vec::new();
    };
    search_store(a.store(), &Search::MessageId(message_id.into()))
        .unwrap()
        .into_iter()
        .map(|(_, l)| l.event.kind().to_owned())
        .collect()
}

fn correlates_in_the_acks_batch<B: Backend>() {
    let dir = tempfile::tempdir().unwrap();
    let ob = B::open(dir.path(), OutboxConfig::default());
    let orig = accepted(&ob, req(HOSP, MUNI, "m1", "b1", b"admit"));
    ob.mark_published(orig).unwrap();
    ob.mark_delivered(orig).unwrap();
    let out = ob
        .accept_acknowledgement(
            ack_req(MUNI, HOSP, "a1", "ab1"),
            AcceptAudit::default(),
            &answers("m1", AckCode::Ok),
        )
        .unwrap();
    let AckAcceptOutcome::Accepted {
        id: ack,
        resend_of: None,
        originals,
    } = out
    else {
        panic!("{out:?}")
    };
    assert_eq!(originals, vec![orig]);
    let s = ob.status(orig).unwrap().unwrap();
    assert_eq!(s.state, State::Acknowledged(AckCode::Ok));
    let link = s.acknowledged_by.unwrap();
    assert_eq!((link.record, link.message_id.as_str()), (ack, "a1"));
    assert!(s.finished_at.is_some());
    let a = ob.status(ack).unwrap().unwrap();
    assert_eq!(a.answers.unwrap().originals, vec![orig]);
    // The ack itself goes to the original's sender.
    let next = ob.next_batch(Some(&party(HOSP)), 10).unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].id, ack);
    if ob.audit().is_some() {
        assert!(leaf_kinds(&ob, "m1").contains(&"acknowledged".to_owned()));
        // Ack accepted and original acknowledged are adjacent leaves: one batch.
        let a = ob.audit().unwrap();
        let hits = |m: &str, k: &str| {
            search_store(a.store(), &Search::MessageId(m.into()))
                .unwrap()
                .into_iter()
                .find(|(_, l)| l.event.kind() == k)
                .unwrap()
                .0
                 .0
        };
        assert_eq!(hits("a1", "accepted") + 1, hits("m1", "acknowledged"));
    }
}

fn ack_before_the_publish_mark_still_correlates<B: Backend>() {
    let dir = tempfile::tempdir().unwrap();
    let ob = B::open(dir.path(), OutboxConfig::default());
    let orig = accepted(&ob, req(HOSP, MUNI, "m1", "b1", b"admit"));
    assert_eq!(ob.depth(), 1);
    let out = ob
        .accept_acknowledgement(
            ack_req(MUNI, HOSP, "a1", "ab1"),
            AcceptAudit::default(),
            &answers("m1", AckCode::TransientError),
        )
        .unwrap();
    assert!(
        matches!(out, AckAcceptOutcome::Accepted { ref originals, .. } if originals == &[orig])
    );
    let s = ob.status(orig).unwrap().unwrap();
    let states: Vec<_> = s.timeline.iter().map(|st| st.state).collect();
    assert_eq!(
        states,
        [
            State::Accepted,
            State::Published,
            State::Acknowledged(AckCode::TransientError)
        ]
    );
    // Left the publish queue: only the ack waits now.
    assert_eq!(ob.depth(), 1);
    assert!(ob.next_batch(Some(&party(MUNI)), 10).unwrap().is_empty());
    // The relay's late confirm is an illegal transition it tolerates.
    assert!(matches!(
        ob.mark_published(orig),
        Err(OutboxError::IllegalTransition { .. })
    ));
}

fn uncorrelated_acks_are_stored_and_routed<B: Backend>() {
    let dir = tempfile::tempdir().unwrap();
    let ob = B::open(dir.path(), OutboxConfig::default());
    let orig = accepted(&ob, req(HOSP, MUNI, "m1", "b1", b"admit"));
    ob.mark_published(orig).unwrap();
    // Unknown message id; then the right id but from a party that was not its receiver.
    for (i, (from, answers_id)) in [(MUNI, "nope"), (OTHER, "m1")].into_iter().enumerate() {
        let out = ob
            .accept_acknowledgement(
                ack_req(from, HOSP, &format!("u{i}"), &format!("ub{i}")),
                AcceptAudit::default(),
                &answers(answers_id, AckCode::Ok),
            )
            .unwrap();
        let AckAcceptOutcome::Accepted { id, originals, .. } = out else {
            panic!("{out:?}")
        };
        assert!(originals.is_empty());
        let s = ob.status(id).unwrap().unwrap();
        assert!(s.answers.unwrap().originals.is_empty());
    }
    assert_eq!(state(&ob, orig), State::Published);
    assert_eq!(ob.next_batch(Some(&party(HOSP)), 10).unwrap().len(), 2);
}

fn first_ack_is_kept_and_acks_are_never_acknowledged<B: Backend>() {
    let dir = tempfile::tempdir().unwrap();
    let ob = B::open(dir.path(), OutboxConfig::default());
    let orig = accepted(&ob, req(HOSP, MUNI, "m1", "b1", b"admit"));
    ob.mark_published(orig).unwrap();
    let ack = |id: &str, bundle: &str, code| {
        ob.accept_acknowledgement(
            ack_req(MUNI, HOSP, id, bundle),
            AcceptAudit::default(),
            &answers("m1", code),
        )
        .unwrap()
    };
    let AckAcceptOutcome::Accepted { id: first, .. } = ack("a1", "ab1", AckCode::Ok) else {
        panic!()
    };
    // A different ack: refused, nothing stored, the first kept.
    let out = ack("a2", "ab2", AckCode::FatalError);
    assert!(
        matches!(&out, AckAcceptOutcome::AlreadyAcknowledged { original, ack } if *original == orig && ack.record == first),
        "{out:?}"
    );
    assert!(ob.find("a2").unwrap().is_empty());
    assert_eq!(state(&ob, orig), State::Acknowledged(AckCode::Ok));
    // The same ack resent (new Bundle id): accepted as a resend, still correlated, nothing changes.
    let out = ack("a1", "ab1-again", AckCode::Ok);
    assert!(
        matches!(&out, AckAcceptOutcome::Accepted { resend_of: Some(f), originals, .. } if *f == first && originals == &[orig]),
        "{out:?}"
    );
    // Exact repeat: duplicate.
    assert!(matches!(
        ack("a1", "ab1", AckCode::Ok),
        AckAcceptOutcome::Duplicate { .. }
    ));
    // An ack answering the ack (hospital → municipality, response = a1): refused.
    let out = ob
        .accept_acknowledgement(
            ack_req(HOSP, MUNI, "x1", "xb1"),
            AcceptAudit::default(),
            &answers("a1", AckCode::Ok),
        )
        .unwrap();
    assert!(
        matches!(out, AckAcceptOutcome::AnswersAcknowledgement { original } if original == first),
        "{out:?}"
    );
    assert!(ob.find("x1").unwrap().is_empty());
    if ob.audit().is_some() {
        assert!(leaf_kinds(&ob, "a2").contains(&"rejected".to_owned()));
        assert!(leaf_kinds(&ob, "x1").contains(&"rejected".to_owned()));
    }
}

fn resend_of_an_acknowledged_message_gets_the_same_ack<B: Backend>() {
    let dir = tempfile::tempdir().unwrap();
    let ob = B::open(dir.path(), OutboxConfig::default());
    let orig = accepted(&ob, req(HOSP, MUNI, "m1", "b1", b"admit"));
    ob.mark_published(orig).unwrap();
    let AckAcceptOutcome::Accepted { id: ack, .. } = ob
        .accept_acknowledgement(
            ack_req(MUNI, HOSP, "a1", "ab1"),
            AcceptAudit::default(),
            &answers("m1", AckCode::Ok),
        )
        .unwrap()
    else {
        panic!()
    };
    // The relay publishes the ack once.
    ob.mark_published(ack).unwrap();
    assert!(ob.next_batch(None, 10).unwrap().is_empty());

    let out = ob.accept(req(HOSP, MUNI, "m1", "b2", b"admit")).unwrap();
    let AcceptOutcome::AlreadyAcknowledged {
        id,
        original,
        ack: link,
        reroute,
    } = out
    else {
        panic!("{out:?}")
    };
    assert_eq!(
        (original, link.record, link.message_id.as_str()),
        (orig, ack, "a1")
    );
    assert_eq!(link.code, AckCode::Ok);
    // The resend is answered, not forwarded; the stored ack goes back to the hospital as a resend.
    assert_eq!(state(&ob, id), State::Acknowledged(AckCode::Ok));
    assert!(ob.next_batch(Some(&party(MUNI)), 10).unwrap().is_empty());
    let back = ob.next_batch(Some(&party(HOSP)), 10).unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].id, reroute);
    assert!(back[0].resend);
    assert_eq!(back[0].meta.message_id, "a1");
    assert_eq!(back[0].payload, ob.payload(ack).unwrap().unwrap());
    assert_eq!(ob.depth(), 1);
    // A resend of a message nobody acknowledged yet is forwarded, flagged.
    let o2 = accepted(&ob, req(HOSP, MUNI, "m2", "c1", b"x"));
    let out = ob.accept(req(HOSP, MUNI, "m2", "c2", b"x")).unwrap();
    assert!(matches!(out, AcceptOutcome::Resend { original, .. } if original == o2));
    let fwd = ob.next_batch(Some(&party(MUNI)), 10).unwrap();
    assert_eq!(fwd.len(), 2);
    assert!(fwd[1].resend);
}

fn overdue_scan_with_an_injected_clock<B: Backend>() {
    let dir = tempfile::tempdir().unwrap();
    let (t, clock) = manual_clock();
    let ob = B::open(dir.path(), OutboxConfig::default()).with_clock(clock);
    let timeout = Duration::from_secs(30 * 60);
    let cutoff = |secs: u64| at(secs) - timeout;
    let published = accepted(&ob, req(HOSP, MUNI, "m1", "b1", b"x"));
    ob.mark_published(published).unwrap();
    let unpublished = accepted(&ob, req(HOSP, MUNI, "m2", "b2", b"x"));
    let answered = accepted(&ob, req(HOSP, MUNI, "m3", "b3", b"x"));
    ob.mark_published(answered).unwrap();
    ob.accept_acknowledgement(
        ack_req(MUNI, HOSP, "a3", "ab3"),
        AcceptAudit::default(),
        &answers("m3", AckCode::Ok),
    )
    .unwrap();
    // An uncorrelated ack, delivered: acks never wait for an ack.
    let AckAcceptOutcome::Accepted { id: lone, .. } = ob
        .accept_acknowledgement(
            ack_req(MUNI, HOSP, "a9", "ab9"),
            AcceptAudit::default(),
            &answers("zz", AckCode::Ok),
        )
        .unwrap()
    else {
        panic!()
    };
    ob.mark_published(lone).unwrap();

    // 29 minutes: nothing is late yet.
    t.store(29 * 60, Ordering::SeqCst);
    assert_eq!(
        ob.mark_overdue_before(cutoff(29 * 60)).unwrap(),
        OverdueScan::default()
    );
    // 31 minutes: the published one is overdue; the unpublished one is still owed to its receiver.
    t.store(31 * 60, Ordering::SeqCst);
    let scan = ob.mark_overdue_before(cutoff(31 * 60)).unwrap();
    assert_eq!(
        scan,
        OverdueScan {
            marked: 1,
            unpublished: 1
        }
    );
    assert_eq!(state(&ob, published), State::Overdue);
    assert_eq!(ob.overdue_count().unwrap(), 1, "the overdue gauge");
    assert_eq!(state(&ob, unpublished), State::Accepted);
    assert_eq!(state(&ob, answered), State::Acknowledged(AckCode::Ok));
    assert_eq!(state(&ob, lone), State::Published);
    // Nothing was resent: no new record, and the overdue one left no queue entry behind.
    assert_eq!(ob.find("m1").unwrap(), vec![published]);
    // Idempotent: a second scan marks nothing new.
    assert_eq!(ob.mark_overdue_before(cutoff(40 * 60)).unwrap().marked, 0);
    // A late ack still lands.
    ob.accept_acknowledgement(
        ack_req(MUNI, HOSP, "a1", "ab1"),
        AcceptAudit::default(),
        &answers("m1", AckCode::Ok),
    )
    .unwrap();
    assert_eq!(state(&ob, published), State::Acknowledged(AckCode::Ok));
    assert_eq!(
        ob.overdue_count().unwrap(),
        0,
        "acknowledged is no longer overdue"
    );
    if ob.audit().is_some() {
        assert!(leaf_kinds(&ob, "m1").contains(&"overdue".to_owned()));
    }
    // Survives a reopen: the index is durable.
    drop(ob);
    let ob = B::open(dir.path(), OutboxConfig::default());
    ob.mark_published(unpublished).unwrap();
    assert_eq!(ob.mark_overdue_before(cutoff(60 * 60)).unwrap().marked, 1);
    assert_eq!(state(&ob, unpublished), State::Overdue);
    assert_eq!(ob.overdue_count().unwrap(), 1);
    ob.mark_dead(unpublished, "operator gave up").unwrap();
    assert_eq!(ob.overdue_count().unwrap(), 0, "dead is no longer overdue");
}

per_backend!(
    correlates_in_the_acks_batch,
    ack_before_the_publish_mark_still_correlates,
    uncorrelated_acks_are_stored_and_routed,
    first_ack_is_kept_and_acks_are_never_acknowledged,
    resend_of_an_acknowledged_message_gets_the_same_ack,
    overdue_scan_with_an_injected_clock,
);
