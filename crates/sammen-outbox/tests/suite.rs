//! The outbox's unit suite, run against both backends.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use sammen_model::{AckCode, Family};
use sammen_outbox::*;

const A: &str = "5790001348120";
const B: &str = "5790000209354";
const R1: &str = "5790002515200";
const R2: &str = "5790000121441";

fn dedupe_outcomes<B: Backend>() {
    let dir = tempfile::tempdir().unwrap();
    let ob = B::open(dir.path(), OutboxConfig::default());
    let id = match ob.accept(req(A, R1, "m1", "b1", b"one")).unwrap() {
        AcceptOutcome::Accepted { id } => id,
        o => panic!("{o:?}"),
    };
    // exact repeat: nothing new
    assert_eq!(
        ob.accept(req(A, R1, "m1", "b1", b"one")).unwrap(),
        AcceptOutcome::Duplicate { id }
    );
    assert_eq!(ob.depth(), 1);
    // same message id in a new envelope: a resend, queued and flagged
    let resend = match ob.accept(req(A, R1, "m1", "b2", b"one again")).unwrap() {
        AcceptOutcome::Resend { id: r, original } => {
            assert_eq!(original, id);
            r
        }
        o => panic!("{o:?}"),
    };
    assert_eq!(
        ob.accept(req(A, R1, "m1", "b2", b"x")).unwrap(),
        AcceptOutcome::Duplicate { id: resend }
    );
    // envelope reused with another message id: conflict, nothing written
    assert_eq!(
        ob.accept(req(A, R1, "m2", "b1", b"two")).unwrap(),
        AcceptOutcome::Conflict { existing: id }
    );
    assert!(ob.find("m2").unwrap().is_empty());
    // the key includes the sender: another sender may use the same ids
    assert!(matches!(
        ob.accept(req(B, R1, "m1", "b1", b"one")).unwrap(),
        AcceptOutcome::Accepted { .. }
    ));
    assert_eq!(ob.depth(), 3);
    let pending = ob.next_batch(None, 10).unwrap();
    assert_eq!(pending.len(), 3);
    assert!(!pending[0].resend);
    assert!(pending[1].resend);
    assert_eq!(pending[1].payload, b"one again");
    assert_eq!(ob.find("m1").unwrap().len(), 3);
    let st = ob.status(resend).unwrap().unwrap();
    assert_eq!(st.resend_of, Some(id));
    assert_eq!(st.size, 9);
    // sha256("one again")
    assert_eq!(st.sha256.len(), 64);
    assert!(matches!(
        ob.accept(req(A, R1, "", "b9", b"x")),
        Err(OutboxError::InvalidRequest(_))
    ));
}

fn concurrent_same_message_is_accepted_once<B: Backend>() {
    let dir = tempfile::tempdir().unwrap();
    let ob = Arc::new(B::open(dir.path(), OutboxConfig::default()));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let ob = Arc::clone(&ob);
            std::thread::spawn(move || ob.accept(req(A, R1, "same", "env", b"x")).unwrap())
        })
        .collect();
    let outcomes: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let accepted = outcomes
        .iter()
        .filter(|o| matches!(o, AcceptOutcome::Accepted { .. }))
        .count();
    let dup = outcomes
        .iter()
        .filter(|o| matches!(o, AcceptOutcome::Duplicate { .. }))
        .count();
    assert_eq!((accepted, dup), (1, 7), "{outcomes:?}");
    assert_eq!(ob.depth(), 1);
}

fn state_machine<B: Backend>() {
    let dir = tempfile::tempdir().unwrap();
    let (t, clock) = manual_clock();
    let ob = B::open(dir.path(), OutboxConfig::default()).with_clock(clock);
    let AcceptOutcome::Accepted { id } = ob.accept(req(A, R1, "m1", "b1", b"x")).unwrap() else {
        panic!()
    };
    // illegal: skipping published
    assert_eq!(
        ob.mark_delivered(id).unwrap_err(),
        OutboxError::IllegalTransition {
            id,
            from: State::Accepted,
            to: State::Delivered
        }
    );
    t.store(5, Ordering::SeqCst);
    ob.mark_published(id).unwrap();
    assert_eq!(ob.depth(), 0);
    assert!(ob.next_batch(None, 10).unwrap().is_empty());
    assert!(matches!(
        ob.mark_published(id),
        Err(OutboxError::IllegalTransition { .. })
    ));
    t.store(6, Ordering::SeqCst);
    ob.mark_delivered(id).unwrap();
    t.store(7, Ordering::SeqCst);
    let st = ob.mark_acknowledged(id, AckCode::Ok).unwrap();
    assert!(st.is_finished());
    assert_eq!(st.finished_at, Some(at(7)));
    let states: Vec<_> = st.timeline.iter().map(|s| (s.state, s.at)).collect();
    assert_eq!(
        states,
        vec![
            (State::Accepted, at(0)),
            (State::Published, at(5)),
            (State::Delivered, at(6)),
            (State::Acknowledged(AckCode::Ok), at(7)),
        ]
    );
    assert!(matches!(
        ob.mark_dead(id, "late"),
        Err(OutboxError::IllegalTransition { .. })
    ));
    assert!(matches!(
        ob.mark_published(RecordId(999)),
        Err(OutboxError::NotFound(_))
    ));
    // overdue then a late acknowledgement
    let AcceptOutcome::Accepted { id: id2 } = ob.accept(req(A, R1, "m2", "b2", b"x")).unwrap()
    else {
        panic!()
    };
    ob.mark_published(id2).unwrap();
    ob.mark_delivered(id2).unwrap();
    ob.mark_overdue(id2).unwrap();
    assert_eq!(
        ob.mark_acknowledged(id2, AckCode::FatalError)
            .unwrap()
            .state,
        State::Acknowledged(AckCode::FatalError)
    );
    // dead from accepted leaves the queue
    let AcceptOutcome::Accepted { id: id3 } = ob.accept(req(A, R1, "m3", "b3", b"x")).unwrap()
    else {
        panic!()
    };
    assert_eq!(ob.depth(), 1);
    let st = ob.mark_dead(id3, "receiver unknown").unwrap();
    assert_eq!(st.last_error.as_deref(), Some("receiver unknown"));
    assert_eq!(ob.depth(), 0);
    // a receipt is finished once delivered (never acknowledged itself)
    let mut r = req(A, R1, "m4", "b4", b"x");
    r.meta.family = Family::Acknowledgement;
    let AcceptOutcome::Accepted { id: id4 } = ob.accept(r).unwrap() else {
        panic!()
    };
    ob.mark_published(id4).unwrap();
    assert!(ob.mark_delivered(id4).unwrap().is_finished());
}

fn attempts_and_ttl<B: Backend>() {
    let dir = tempfile::tempdir().unwrap();
    let (t, clock) = manual_clock();
    let cfg = OutboxConfig {
        max_attempts: 3,
        ttl: Duration::from_secs(100),
    };
    let ob = B::open(dir.path(), cfg).with_clock(clock);
    let AcceptOutcome::Accepted { id } = ob.accept(req(A, R1, "m1", "b1", b"x")).unwrap() else {
        panic!()
    };
    assert_eq!(
        ob.record_attempt(id, "nack").unwrap(),
        AttemptOutcome::Retry { attempts: 1 }
    );
    assert_eq!(ob.next_batch(None, 1).unwrap()[0].attempts, 1);
    assert_eq!(
        ob.record_attempt(id, "nack").unwrap(),
        AttemptOutcome::Retry { attempts: 2 }
    );
    assert_eq!(
        ob.record_attempt(id, "timeout").unwrap(),
        AttemptOutcome::Dead { attempts: 3 }
    );
    assert_eq!(ob.status(id).unwrap().unwrap().state, State::Dead);
    assert!(ob.record_attempt(id, "again").is_err());
    let AcceptOutcome::Accepted { id: id2 } = ob.accept(req(A, R1, "m2", "b2", b"x")).unwrap()
    else {
        panic!()
    };
    t.store(101, Ordering::SeqCst);
    assert_eq!(
        ob.record_attempt(id2, "nack").unwrap(),
        AttemptOutcome::Dead { attempts: 1 }
    );
    assert_eq!(ob.depth(), 0);
}

fn ordering_per_receiver<B: Backend>() {
    let dir = tempfile::tempdir().unwrap();
    let ob = B::open(dir.path(), OutboxConfig::default());
    let mut ids = Vec::new();
    for i in 0..40 {
        let r = if i % 3 == 0 { R2 } else { R1 };
        let o = ob
            .accept(req(
                A,
                r,
                &format!("m{i}"),
                &format!("b{i}"),
                format!("{i}").as_bytes(),
            ))
            .unwrap();
        let AcceptOutcome::Accepted { id } = o else {
            panic!()
        };
        ids.push((r, id));
    }
    let r1: Vec<_> = ob
        .next_batch(Some(&party(R1)), 100)
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    let want: Vec<_> = ids
        .iter()
        .filter(|(r, _)| *r == R1)
        .map(|(_, id)| *id)
        .collect();
    assert_eq!(r1, want);
    let all: Vec<_> = ob
        .next_batch(None, 100)
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(all, ids.iter().map(|(_, id)| *id).collect::<Vec<_>>());
    // limit and progress: publishing the head reveals the next one
    let head = ob.next_batch(Some(&party(R2)), 2).unwrap();
    assert_eq!(head.len(), 2);
    assert_eq!(head[0].meta.receiver, party(R2));
    ob.mark_published(head[0].id).unwrap();
    assert_eq!(
        ob.next_batch(Some(&party(R2)), 1).unwrap()[0].id,
        head[1].id
    );
    // concurrent accepts still come out in id order per receiver
    let ob = Arc::new(ob);
    let hs: Vec<_> = (0..8)
        .map(|t| {
            let ob = Arc::clone(&ob);
            std::thread::spawn(move || {
                for i in 0..25 {
                    ob.accept(req(A, R1, &format!("c{t}-{i}"), &format!("e{t}-{i}"), b"x"))
                        .unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let q: Vec<_> = ob
        .next_batch(Some(&party(R1)), 1000)
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(q.len(), 26 + 200);
    assert!(q.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(ob.depth(), 26 + 13 + 200);
}

fn retention<B: Backend>() {
    let dir = tempfile::tempdir().unwrap();
    let (t, clock) = manual_clock();
    let ob = B::open(dir.path(), OutboxConfig::default()).with_clock(clock);
    let AcceptOutcome::Accepted { id: done } = ob.accept(req(A, R1, "m1", "b1", b"x")).unwrap()
    else {
        panic!()
    };
    let AcceptOutcome::Accepted { id: open } = ob.accept(req(A, R1, "m2", "b2", b"y")).unwrap()
    else {
        panic!()
    };
    t.store(10, Ordering::SeqCst);
    ob.mark_published(done).unwrap();
    ob.mark_delivered(done).unwrap();
    ob.mark_acknowledged(done, AckCode::Ok).unwrap();
    let (pttl, mttl) = (Duration::from_secs(100), Duration::from_secs(1000));
    assert_eq!(ob.purge(at(50), pttl, mttl).unwrap(), PurgeStats::default());
    assert_eq!(
        ob.purge(at(110), pttl, mttl).unwrap(),
        PurgeStats {
            payloads: 1,
            records: 0
        }
    );
    let st = ob.status(done).unwrap().unwrap();
    assert!(!st.payload_retained);
    assert_eq!(ob.payload(done).unwrap(), None);
    assert_eq!(ob.payload(open).unwrap().as_deref(), Some(&b"y"[..]));
    // still deduped while metadata is kept
    assert_eq!(
        ob.accept(req(A, R1, "m1", "b1", b"x")).unwrap(),
        AcceptOutcome::Duplicate { id: done }
    );
    assert_eq!(
        ob.purge(at(2000), pttl, mttl).unwrap(),
        PurgeStats {
            payloads: 0,
            records: 1
        }
    );
    assert_eq!(ob.status(done).unwrap(), None);
    assert!(ob.find("m1").unwrap().is_empty());
    // the unfinished record is untouched, whatever its age
    assert!(ob.status(open).unwrap().unwrap().payload_retained);
    // after the metadata is gone the ids are free again, and record ids are not reused
    let o = ob.accept(req(A, R1, "m1", "b1", b"x")).unwrap();
    assert!(
        matches!(o, AcceptOutcome::Accepted { id } if id > open),
        "{o:?}"
    );
}

fn restart_sees_everything<B: Backend>() {
    let dir = tempfile::tempdir().unwrap();
    let (first, published, acked);
    {
        let ob = B::open(dir.path(), OutboxConfig::default());
        let AcceptOutcome::Accepted { id } = ob.accept(req(A, R1, "m1", "b1", b"one")).unwrap()
        else {
            panic!()
        };
        first = id;
        let AcceptOutcome::Accepted { id } = ob.accept(req(A, R2, "m2", "b2", b"two")).unwrap()
        else {
            panic!()
        };
        published = id;
        ob.mark_published(id).unwrap();
        let AcceptOutcome::Accepted { id } = ob.accept(req(B, R2, "m3", "b3", b"three")).unwrap()
        else {
            panic!()
        };
        acked = id;
        ob.mark_published(id).unwrap();
        ob.mark_delivered(id).unwrap();
        ob.mark_acknowledged(id, AckCode::TransientError).unwrap();
    }
    let ob = B::open(dir.path(), OutboxConfig::default());
    assert_eq!(ob.depth(), 1);
    let p = ob.next_batch(None, 10).unwrap();
    assert_eq!(
        (p.len(), p[0].id, p[0].payload.as_slice()),
        (1, first, &b"one"[..])
    );
    assert_eq!(
        ob.status(published).unwrap().unwrap().state,
        State::Published
    );
    assert_eq!(
        ob.status(acked).unwrap().unwrap().state,
        State::Acknowledged(AckCode::TransientError)
    );
    assert_eq!(ob.status(acked).unwrap().unwrap().timeline.len(), 4);
    assert_eq!(
        ob.accept(req(A, R1, "m1", "b1", b"one")).unwrap(),
        AcceptOutcome::Duplicate { id: first }
    );
    let AcceptOutcome::Accepted { id } = ob.accept(req(A, R1, "m9", "b9", b"nine")).unwrap() else {
        panic!()
    };
    assert!(id > acked);
    assert!(ob.oldest_pending_age(at(30)).unwrap() == Some(Duration::from_secs(30)));
}

/// The relay's group marks: one commit for every record that may move; the others say why not, in
/// the order asked, and change nothing.
fn published_in_groups<B: Backend>() {
    let dir = tempfile::tempdir().unwrap();
    let ob = B::open(dir.path(), OutboxConfig::default());
    let mut ids = Vec::new();
    for n in 0..3 {
        let AcceptOutcome::Accepted { id } = ob
            .accept(req(A, R1, &format!("m{n}"), &format!("b{n}"), b"x"))
            .unwrap()
        else {
            panic!()
        };
        ids.push(id);
    }
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    ob.mark_published(b).unwrap();
    assert_eq!(ob.depth(), 2);
    let leaves = || ob.audit().map(|l| l.size());
    let before = leaves();
    let missing = RecordId(c.0 + 100);
    let out = ob.mark_published_many(&[a, b, missing, c, a]).unwrap();
    assert_eq!(out.len(), 5);
    assert_eq!(out[0].as_ref().unwrap().state, State::Published);
    assert_eq!(
        out[1].as_ref().unwrap_err(),
        &OutboxError::IllegalTransition {
            id: b,
            from: State::Published,
            to: State::Published
        }
    );
    assert_eq!(
        out[2].as_ref().unwrap_err(),
        &OutboxError::NotFound(missing)
    );
    assert_eq!(out[3].as_ref().unwrap().state, State::Published);
    assert!(matches!(
        out[4],
        Err(OutboxError::IllegalTransition { id, .. }) if id == a
    ));
    for id in [a, b, c] {
        assert_eq!(ob.status(id).unwrap().unwrap().state, State::Published);
    }
    assert_eq!(ob.depth(), 0);
    assert!(ob.next_batch(None, 10).unwrap().is_empty());
    // One `published` leaf per record moved, none for the refusals.
    assert_eq!(leaves(), before.map(|n| n + 2), "{}", B::NAME);
    // A group where nothing may move commits nothing.
    let out = ob.mark_published_many(&[a, c]).unwrap();
    assert!(out.iter().all(Result::is_err));
    assert_eq!(leaves(), before.map(|n| n + 2), "{}", B::NAME);
    // Durable: a reopen sees the same.
    drop(ob);
    let ob = B::open(dir.path(), OutboxConfig::default());
    for id in [a, b, c] {
        assert_eq!(ob.status(id).unwrap().unwrap().state, State::Published);
    }
}

per_backend!(
    published_in_groups,
    dedupe_outcomes,
    concurrent_same_message_is_accepted_once,
    state_machine,
    attempts_and_ttl,
    ordering_per_receiver,
    retention,
    restart_sees_everything,
);
