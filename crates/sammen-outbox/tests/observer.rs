//! `TransitionObserver`: told about every committed state change, once, with the state it came from;
//! never about a change that failed or a counted attempt that changed no state.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use sammen_model::AckCode;
use sammen_outbox::*;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Seen(Mutex<Vec<(State, State, u64)>>);

impl TransitionObserver for Seen {
    fn on_transition(&self, from: State, status: &Status) {
        self.0
            .lock()
            .unwrap()
            .push((from, status.state, status.id.0));
    }
}

#[test]
fn every_committed_change_is_observed_once() {
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(Seen::default());
    let cfg = OutboxConfig {
        max_attempts: 5,
        ..OutboxConfig::default()
    };
    let ob = open_fjall(dir.path(), cfg)
        .unwrap()
        .with_clock(manual_clock().1)
        .with_observer(seen.clone());
    let a = "5790001348120";
    let r = "5790000121441";
    let AcceptOutcome::Accepted { id: one } = ob.accept(req(a, r, "m1", "e1", b"x")).unwrap()
    else {
        panic!("not accepted");
    };
    let AcceptOutcome::Accepted { id: two } = ob.accept(req(a, r, "m2", "e2", b"y")).unwrap()
    else {
        panic!("not accepted");
    };
    // Accepting and a duplicate are the caller's to count: nothing observed.
    ob.accept(req(a, r, "m1", "e1", b"x")).unwrap();
    assert!(seen.0.lock().unwrap().is_empty());

    ob.mark_published(one).unwrap();
    ob.mark_delivered(one).unwrap();
    ob.mark_acknowledged(one, AckCode::Ok).unwrap();
    // A refused transition is not observed; an attempt that does not kill changes no state.
    assert!(ob.mark_delivered(one).is_err());
    ob.record_attempt(two, "timeout").unwrap();
    ob.mark_dead(two, "manual").unwrap();

    let got = seen.0.lock().unwrap().clone();
    assert_eq!(
        got,
        vec![
            (State::Accepted, State::Published, one.0),
            (State::Published, State::Delivered, one.0),
            (State::Delivered, State::Acknowledged(AckCode::Ok), one.0),
            (State::Accepted, State::Dead, two.0),
        ]
    );
}
