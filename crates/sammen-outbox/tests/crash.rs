//! Crash test: a child process accepts from several threads and prints each id only after `accept`
//! returned; the parent SIGKILLs it at a random point, reopens the store and checks every printed id.
//! Repeated until at least 5,000 acknowledged messages across the runs, per backend.
//!
//! SIGKILL tests the process-crash half of durability (everything the engine wrote before the answer
//! survives in the page cache and its recovery finds it). The power-loss half rests on the fdatasync /
//! fsync each group commit does, which a process kill cannot exercise.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use sammen_outbox::sammen_audit::ops::{search_store, verify_store};
use sammen_outbox::sammen_audit::Search;
use sammen_outbox::*;

const CHILD_ENV: &str = "SAMMEN_OUTBOX_CRASH_CHILD";
const THREADS: usize = 8;
const TOTAL: usize = 5_000;

fn payload(message_id: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(4096);
    while p.len() < 4096 {
        p.extend_from_slice(message_id.as_bytes());
        p.push(b'|');
    }
    p.truncate(4096);
    p
}

fn child<B: Backend>(dir: &Path, run: usize) {
    let ob = Arc::new(B::open(dir, OutboxConfig::default()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut handles = Vec::new();
    for t in 0..THREADS {
        let ob = Arc::clone(&ob);
        handles.push(std::thread::spawn(move || {
            let mut n = 0;
            while Instant::now() < deadline {
                let id = format!("r{run}-t{t}-{n}");
                let mut r = req(
                    "5790001348120",
                    "5790002515200",
                    &id,
                    &format!("env-{id}"),
                    &[],
                );
                r.bytes = payload(&id);
                if let AcceptOutcome::Accepted { .. } = ob.accept(r).unwrap() {
                    println!("ACK {id}");
                }
                n += 1;
            }
        }));
    }
    // With audit on, checkpoints are signed while accepts run (and may be cut by the kill).
    if let Some(a) = ob.audit() {
        let a = Arc::clone(a);
        handles.push(std::thread::spawn(move || {
            while Instant::now() < deadline {
                a.checkpoint_now().unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
        }));
    }
    // A relay-like thread: publishes and reports each id only after the transition returned.
    let relay = Arc::clone(&ob);
    handles.push(std::thread::spawn(move || {
        while Instant::now() < deadline {
            for p in relay.next_batch(None, 16).unwrap() {
                relay.mark_published(p.id).unwrap();
                println!("PUB {}", p.meta.message_id);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }));
    for h in handles {
        let _ = h.join();
    }
}

/// Child entry point: does nothing unless the parent set the environment variable.
#[test]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.splitn(3, '|');
    let (backend, run, dir) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let run: usize = run.parse().unwrap();
    match backend {
        "sled" => child::<Sled>(Path::new(dir), run),
        "fjall" => child::<Fjall>(Path::new(dir), run),
        "sled+audit" => child::<AuditedSled>(Path::new(dir), run),
        "fjall+audit" => child::<AuditedFjall>(Path::new(dir), run),
        other => panic!("unknown backend {other}"),
    }
}

fn crash_run<B: Backend>() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // message id → published?
    let mut acked: HashMap<String, bool> = HashMap::new();
    let mut run = 0;
    while acked.len() < TOTAL || run < 3 {
        let target = fastrand::usize(200..2_500);
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(
                CHILD_ENV,
                format!("{}|{run}|{}", B::NAME, dir.path().display()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut this_run = 0;
        let mut killed = false;
        let mut line = String::new();
        loop {
            line.clear();
            if out.read_line(&mut line).unwrap() == 0 {
                break;
            }
            // A line cut by the kill has no newline: it was never fully printed.
            let Some(l) = line.strip_suffix('\n') else {
                break;
            };
            if let Some(id) = l.strip_prefix("ACK ") {
                acked.insert(id.to_owned(), false);
                this_run += 1;
            } else if let Some(id) = l.strip_prefix("PUB ") {
                acked.insert(id.to_owned(), true);
            }
            if !killed && this_run >= target {
                child.kill().unwrap(); // SIGKILL; keep reading what it printed before dying
                killed = true;
            }
        }
        let status = child.wait().unwrap();
        assert!(killed, "child ended by itself: {status:?}");
        run += 1;

        let ob = B::open(dir.path(), OutboxConfig::default());
        for (id, published) in &acked {
            let recs = ob.find(id).unwrap();
            assert_eq!(
                recs.len(),
                1,
                "{} run {run}: {id} has {} records",
                B::NAME,
                recs.len()
            );
            let st = ob.status(recs[0]).unwrap().unwrap();
            let want = if *published {
                State::Published
            } else {
                st.state
            };
            assert!(
                matches!(st.state, State::Accepted | State::Published),
                "{id}: {:?}",
                st.state
            );
            assert_eq!(st.state, want, "{id}");
            assert_eq!(ob.payload(recs[0]).unwrap().unwrap(), payload(id), "{id}");
            if let Some(a) = ob.audit() {
                let leaves = search_store(a.store(), &Search::MessageId(id.clone())).unwrap();
                let kinds: Vec<_> = leaves.iter().map(|(_, l)| l.event.kind()).collect();
                let want: &[&str] = if *published {
                    &["accepted", "published"]
                } else {
                    &kinds[..]
                };
                assert!(
                    kinds.first() == Some(&"accepted") && kinds == want,
                    "{id}: {kinds:?}"
                );
                assert!(kinds.len() <= 2, "{id}: {kinds:?}");
            }
        }
        if let Some(a) = ob.audit() {
            // The log opened (no gap, consistent with its checkpoints) and verifies end to end.
            a.checkpoint_now().unwrap();
            let report = verify_store(a.store(), &a.public_key(), None).unwrap();
            assert!(report.leaves as usize > acked.len(), "{report:?}");
        }
        eprintln!(
            "{} run {run}: killed after {this_run} acks, {} verified in total",
            B::NAME,
            acked.len()
        );
    }
}

#[test]
fn sled_survives_sigkill() {
    crash_run::<Sled>();
}

#[test]
fn fjall_survives_sigkill() {
    crash_run::<Fjall>();
}

#[test]
fn sled_audited_survives_sigkill() {
    crash_run::<AuditedSled>();
}

#[test]
fn fjall_audited_survives_sigkill() {
    crash_run::<AuditedFjall>();
}
