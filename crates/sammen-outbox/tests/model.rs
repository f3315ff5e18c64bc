//! Model-based property test: random operation sequences against the outbox and a simple in-memory
//! model of the same rules; results, depth, queue order and every record's state must agree.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use proptest::prelude::*;
use sammen_model::AckCode;
use sammen_outbox::*;

const SENDERS: [&str; 2] = ["5790001348120", "5790000209354"];
const RECEIVERS: [&str; 2] = ["5790002515200", "5790000121441"];

#[derive(Debug, Clone)]
enum Op {
    /// Small id domains make duplicates, resends and conflicts frequent.
    Accept {
        sender: usize,
        receiver: usize,
        msg: u8,
        env: u8,
    },
    Publish(usize),
    Deliver(usize),
    Ack(usize, u8),
    Overdue(usize),
    Dead(usize),
    Attempt(usize),
    /// Operator replay (dead → accepted).
    Replay(usize),
    Advance(u64),
    Purge {
        payload_ttl: u64,
        meta_ttl: u64,
    },
    NextBatch(Option<usize>),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2usize, 0..2usize, 0..4u8, 0..5u8)
            .prop_map(|(sender, receiver, msg, env)| Op::Accept { sender, receiver, msg, env }),
        2 => any::<usize>().prop_map(Op::Publish),
        2 => any::<usize>().prop_map(Op::Deliver),
        2 => (any::<usize>(), 0..3u8).prop_map(|(i, c)| Op::Ack(i, c)),
        1 => any::<usize>().prop_map(Op::Overdue),
        1 => any::<usize>().prop_map(Op::Dead),
        1 => any::<usize>().prop_map(Op::Attempt),
        1 => any::<usize>().prop_map(Op::Replay),
        1 => (1..20u64).prop_map(Op::Advance),
        1 => (0..30u64, 0..60u64).prop_map(|(p, m)| Op::Purge { payload_ttl: p, meta_ttl: m }),
        1 => proptest::option::of(0..2usize).prop_map(Op::NextBatch),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Clone)]
struct Rec {
    id: RecordId,
    sender: usize,
    receiver: usize,
    msg: String,
    env: String,
    resend_of: Option<RecordId>,
    state: State,
    attempts: u32,
    finished_at: Option<u64>,
    payload_retained: bool,
    gone: bool,
}

#[derive(Default)]
struct Model {
    recs: Vec<Rec>,
    by_env: HashMap<(usize, String), RecordId>,
    by_msg: HashMap<(usize, String), RecordId>,
    next_id: u64,
}

const MAX_ATTEMPTS: u32 = 3;

impl Model {
    fn rec(&mut self, id: RecordId) -> &mut Rec {
        self.recs.iter_mut().find(|r| r.id == id).unwrap()
    }

    fn accept(
        &mut self,
        sender: usize,
        receiver: usize,
        msg: String,
        env: String,
    ) -> AcceptOutcome {
        if let Some(&id) = self.by_env.get(&(sender, env.clone())) {
            return if self.rec(id).msg == msg {
                AcceptOutcome::Duplicate { id }
            } else {
                AcceptOutcome::Conflict { existing: id }
            };
        }
        let id = RecordId(self.next_id);
        self.next_id += 1;
        let original = self.by_msg.get(&(sender, msg.clone())).copied();
        self.by_env.insert((sender, env.clone()), id);
        if original.is_none() {
            self.by_msg.insert((sender, msg.clone()), id);
        }
        self.recs.push(Rec {
            id,
            sender,
            receiver,
            msg,
            env,
            resend_of: original,
            state: State::Accepted,
            attempts: 0,
            finished_at: None,
            payload_retained: true,
            gone: false,
        });
        match original {
            Some(original) => AcceptOutcome::Resend { id, original },
            None => AcceptOutcome::Accepted { id },
        }
    }

    /// Ok(()) or the error kind the outbox must give.
    fn go(&mut self, id: RecordId, to: State, now: u64) -> Result<(), &'static str> {
        let r = self.rec(id);
        if r.gone {
            return Err("not-found");
        }
        if !r.state.can_go_to(to) {
            return Err("illegal");
        }
        r.state = to;
        if r.finished_at.is_none() && matches!(to, State::Acknowledged(_) | State::Dead) {
            r.finished_at = Some(now);
        }
        Ok(())
    }

    fn attempt(&mut self, id: RecordId, now: u64) -> Result<AttemptOutcome, &'static str> {
        let r = self.rec(id);
        if r.gone {
            return Err("not-found");
        }
        if matches!(r.state, State::Acknowledged(_) | State::Dead) {
            return Err("illegal");
        }
        r.attempts += 1;
        let attempts = r.attempts;
        if attempts >= MAX_ATTEMPTS {
            self.go(id, State::Dead, now)?;
            return Ok(AttemptOutcome::Dead { attempts });
        }
        Ok(AttemptOutcome::Retry { attempts })
    }

    /// Only a dead record with its payload goes back to accepted, as new: no attempts, not finished.
    fn replay(&mut self, id: RecordId) -> Result<State, &'static str> {
        let r = self.rec(id);
        if r.gone {
            return Err("not-found");
        }
        if r.state != State::Dead {
            return Err("not-dead");
        }
        if !r.payload_retained {
            return Err("payload-purged");
        }
        r.state = State::Accepted;
        r.attempts = 0;
        r.finished_at = None;
        Ok(State::Accepted)
    }

    fn purge(&mut self, now: u64, pttl: u64, mttl: u64) -> PurgeStats {
        let mut stats = PurgeStats::default();
        for r in self.recs.iter_mut().filter(|r| !r.gone) {
            let Some(f) = r.finished_at else { continue };
            if f + mttl <= now {
                r.gone = true;
                stats.records += 1;
                if self.by_env.get(&(r.sender, r.env.clone())) == Some(&r.id) {
                    self.by_env.remove(&(r.sender, r.env.clone()));
                }
                if self.by_msg.get(&(r.sender, r.msg.clone())) == Some(&r.id) {
                    self.by_msg.remove(&(r.sender, r.msg.clone()));
                }
            }
        }
        for r in self.recs.iter_mut().filter(|r| !r.gone) {
            let Some(f) = r.finished_at else { continue };
            if f + pttl <= now && r.payload_retained {
                r.payload_retained = false;
                stats.payloads += 1;
            }
        }
        stats
    }

    fn pending(&self, receiver: Option<usize>) -> Vec<RecordId> {
        self.recs
            .iter()
            .filter(|r| {
                !r.gone && r.state == State::Accepted && receiver.is_none_or(|x| x == r.receiver)
            })
            .map(|r| r.id)
            .collect()
    }
}

fn kind(e: &OutboxError) -> &'static str {
    match e {
        OutboxError::NotFound(_) => "not-found",
        OutboxError::IllegalTransition { .. } => "illegal",
        OutboxError::NotDead { .. } => "not-dead",
        OutboxError::PayloadPurged(_) => "payload-purged",
        other => panic!("unexpected error {other:?}"),
    }
}

fn run_model<B: Backend>(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let (clock_secs, clock) = manual_clock();
    let cfg = OutboxConfig {
        max_attempts: MAX_ATTEMPTS,
        ttl: Duration::from_secs(1_000_000),
    };
    let open = || B::open(dir.path(), cfg).with_clock(clock.clone());
    let mut ob = Some(open());
    let mut m = Model {
        next_id: 1,
        ..Model::default()
    };
    for op in ops {
        let o = ob.as_ref().unwrap();
        let now = clock_secs.load(Ordering::SeqCst);
        let pick = |i: usize| (!m.recs.is_empty()).then(|| m.recs[i % m.recs.len()].id);
        match op {
            Op::Accept {
                sender,
                receiver,
                msg,
                env,
            } => {
                let (msg, env) = (format!("msg-{msg}"), format!("env-{env}"));
                let mut r = req(
                    SENDERS[sender],
                    RECEIVERS[receiver],
                    &msg,
                    &env,
                    msg.as_bytes(),
                );
                r.meta.received = at(now);
                let got = o.accept(r).unwrap();
                assert_eq!(got, m.accept(sender, receiver, msg, env));
            }
            Op::Publish(i) | Op::Deliver(i) | Op::Ack(i, _) | Op::Overdue(i) | Op::Dead(i) => {
                let Some(id) = pick(i) else { continue };
                let (to, got) = match op {
                    Op::Publish(_) => (State::Published, o.mark_published(id)),
                    Op::Deliver(_) => (State::Delivered, o.mark_delivered(id)),
                    Op::Ack(_, c) => {
                        let code = [AckCode::Ok, AckCode::TransientError, AckCode::FatalError]
                            [usize::from(c)];
                        (State::Acknowledged(code), o.mark_acknowledged(id, code))
                    }
                    Op::Overdue(_) => (State::Overdue, o.mark_overdue(id)),
                    _ => (State::Dead, o.mark_dead(id, "test")),
                };
                assert_eq!(
                    got.map(|s| s.state).map_err(|e| kind(&e)),
                    m.go(id, to, now).map(|()| to)
                );
            }
            Op::Attempt(i) => {
                let Some(id) = pick(i) else { continue };
                let got = o.record_attempt(id, "nack").map_err(|e| kind(&e));
                assert_eq!(got, m.attempt(id, now));
            }
            Op::Replay(i) => {
                let Some(id) = pick(i) else { continue };
                let got = o.replay(id, "operator").map(|s| s.state);
                assert_eq!(got.map_err(|e| kind(&e)), m.replay(id));
            }
            Op::Advance(s) => {
                clock_secs.fetch_add(s, Ordering::SeqCst);
            }
            Op::Purge {
                payload_ttl,
                meta_ttl,
            } => {
                let got = o
                    .purge(
                        at(now),
                        Duration::from_secs(payload_ttl),
                        Duration::from_secs(meta_ttl),
                    )
                    .unwrap();
                assert_eq!(got, m.purge(now, payload_ttl, meta_ttl));
            }
            Op::NextBatch(r) => {
                let party_r = r.map(|r| party(RECEIVERS[r]));
                let got: Vec<_> = o
                    .next_batch(party_r.as_ref(), 1000)
                    .unwrap()
                    .into_iter()
                    .map(|p| p.id)
                    .collect();
                assert_eq!(got, m.pending(r));
            }
            Op::Reopen => {
                drop(ob.take());
                ob = Some(open());
            }
        }
        assert_eq!(ob.as_ref().unwrap().depth(), m.pending(None).len() as u64);
    }
    // Final comparison of every record the model knows.
    let o = ob.as_ref().unwrap();
    for r in &m.recs {
        let st = o.status(r.id).unwrap();
        if r.gone {
            assert_eq!(st, None, "{:?}", r.id);
            continue;
        }
        let st = st.unwrap();
        assert_eq!(st.state, r.state);
        assert_eq!(st.resend_of, r.resend_of);
        assert_eq!(st.attempts, r.attempts);
        assert_eq!(st.payload_retained, r.payload_retained);
        assert_eq!(o.payload(r.id).unwrap().is_some(), r.payload_retained);
        assert_eq!(st.finished_at, r.finished_at.map(at));
        assert_eq!(st.timeline.last().map(|s| s.state), Some(r.state));
    }
    // With audit on, whatever happened (reopens, purges, refused transitions), the log verifies.
    if let Some(a) = o.audit() {
        a.checkpoint_now().unwrap();
        sammen_outbox::sammen_audit::ops::verify_store(a.store(), &a.public_key(), None).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn sled_outbox_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        run_model::<Sled>(ops);
    }

    #[test]
    fn fjall_outbox_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        run_model::<Fjall>(ops);
    }

    #[test]
    fn fjall_audited_outbox_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        run_model::<AuditedFjall>(ops);
    }
}
