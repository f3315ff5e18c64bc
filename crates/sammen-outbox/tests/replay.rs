//! Operator replay: a dead record goes back to `accepted` (queue, pending, depth, timeline) with a
//! `replay` leaf in the same batch; other states and purged payloads are refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use sammen_outbox::sammen_audit::ops::{search_store, verify_store};
use sammen_outbox::sammen_audit::{Event, Outcome, Search};
use sammen_outbox::*;

const A: &str = "5790001348120";
const R1: &str = "5790002515200";

fn accepted<S: Store>(ob: &Outbox<S>, msg: &str, env: &str) -> RecordId {
    match ob.accept(req(A, R1, msg, env, b"<Bundle/>")).unwrap() {
        AcceptOutcome::Accepted { id } => id,
        other => panic!("{other:?}"),
    }
}

fn pending_ids<S: Store>(ob: &Outbox<S>) -> Vec<RecordId> {
    ob.next_batch(None, 100)
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect()
}

fn dead_record_is_replayed<B: Backend>() {
    let dir = tempfile::tempdir().unwrap();
    let (secs, clock) = manual_clock();
    let cfg = OutboxConfig {
        max_attempts: 2,
        ..OutboxConfig::default()
    };
    let ob = B::open(dir.path(), cfg).with_clock(clock);
    let id = accepted(&ob, "m1", "e1");
    assert_eq!(
        ob.record_attempt(id, "nack").unwrap(),
        AttemptOutcome::Retry { attempts: 1 }
    );
    assert_eq!(
        ob.record_attempt(id, "nack").unwrap(),
        AttemptOutcome::Dead { attempts: 2 }
    );
    assert_eq!(ob.depth(), 0);
    assert!(pending_ids(&ob).is_empty());
    secs.store(5, std::sync::atomic::Ordering::SeqCst);

    let s = ob.replay(id, "receiver fixed its endpoint").unwrap();
    assert_eq!(s.state, State::Accepted);
    assert_eq!(s.attempts, 0);
    assert_eq!(s.finished_at, None);
    let states: Vec<_> = s.timeline.iter().map(|t| t.state).collect();
    assert_eq!(states, [State::Accepted, State::Dead, State::Accepted]);
    assert_eq!(s.timeline.last().unwrap().at, at(5));
    assert_eq!(ob.depth(), 1);
    assert_eq!(pending_ids(&ob), [id]);
    assert_eq!(
        ob.next_batch(Some(&party(R1)), 10).unwrap().len(),
        1,
        "in the receiver's queue too"
    );
    // Retention no longer counts it as finished: a purge far in the future keeps it whole.
    let stats = ob
        .purge(at(10_000_000), Duration::ZERO, Duration::ZERO)
        .unwrap();
    assert_eq!(stats, PurgeStats::default());
    assert!(ob.payload(id).unwrap().is_some());
    // Durable: after reopen the same state and depth, and the relay can take it from there.
    drop(ob);
    let ob = B::open(dir.path(), cfg);
    assert_eq!(ob.status(id).unwrap().unwrap().state, State::Accepted);
    assert_eq!(ob.depth(), 1);
    assert_eq!(pending_ids(&ob), [id]);
    assert_eq!(ob.mark_published(id).unwrap().state, State::Published);
    assert_eq!(ob.depth(), 0);

    if let Some(a) = ob.audit() {
        let hits = search_store(a.store(), &Search::MessageId("m1".into())).unwrap();
        let kinds: Vec<_> = hits.iter().map(|(_, l)| l.event.kind()).collect();
        assert_eq!(kinds, ["accepted", "dead", "replay", "published"]);
        let (_, replay) = &hits[2];
        assert_eq!(replay.event, Event::Replay);
        assert_eq!(replay.outcome, Outcome::Success);
        assert_eq!(replay.bundle_id.as_deref(), Some("e1"));
        assert_eq!(replay.family, Some(sammen_model::Family::CareCommunication));
        assert_eq!(replay.sender, Some(party(A)));
        assert_eq!(replay.receiver, Some(party(R1)));
        assert_eq!(replay.time_ms, 1_700_000_005_000);
        a.checkpoint_now().unwrap();
        verify_store(a.store(), &a.public_key(), None).unwrap();
    }
}

fn replay_of_a_live_record_is_refused<B: Backend>() {
    let dir = tempfile::tempdir().unwrap();
    let ob = B::open(dir.path(), OutboxConfig::default());
    let id = accepted(&ob, "m1", "e1");
    let refused = |ob: &Outbox<B::S>, state: State| {
        assert_eq!(
            ob.replay(id, "note").unwrap_err(),
            OutboxError::NotDead { id, state }
        );
    };
    refused(&ob, State::Accepted);
    assert_eq!(ob.depth(), 1, "nothing changed");
    ob.mark_published(id).unwrap();
    refused(&ob, State::Published);
    ob.mark_acknowledged(id, sammen_model::AckCode::Ok).unwrap();
    refused(&ob, State::Acknowledged(sammen_model::AckCode::Ok));
    assert_eq!(ob.depth(), 0);
    assert!(pending_ids(&ob).is_empty());
    assert_eq!(
        ob.replay(RecordId(999), "note").unwrap_err(),
        OutboxError::NotFound(RecordId(999))
    );
    if let Some(a) = ob.audit() {
        let hits = search_store(a.store(), &Search::MessageId("m1".into())).unwrap();
        assert!(hits.iter().all(|(_, l)| l.event != Event::Replay));
    }
}

fn replay_after_payload_purge_is_refused<B: Backend>() {
    let dir = tempfile::tempdir().unwrap();
    let (secs, clock) = manual_clock();
    let ob = B::open(dir.path(), OutboxConfig::default()).with_clock(clock);
    let id = accepted(&ob, "m1", "e1");
    ob.mark_dead(id, "gave up").unwrap();
    secs.store(100, std::sync::atomic::Ordering::SeqCst);
    let stats = ob
        .purge(at(100), Duration::from_secs(10), Duration::from_secs(1000))
        .unwrap();
    assert_eq!(stats.payloads, 1);
    assert_eq!(
        ob.replay(id, "too late").unwrap_err(),
        OutboxError::PayloadPurged(id)
    );
    let s = ob.status(id).unwrap().unwrap();
    assert_eq!(s.state, State::Dead);
    assert_eq!(ob.depth(), 0);
    assert!(pending_ids(&ob).is_empty());
}

per_backend!(
    dead_record_is_replayed,
    replay_of_a_live_record_is_refused,
    replay_after_payload_purge_is_refused,
);
