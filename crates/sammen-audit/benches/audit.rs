//! Audit cost per accepted message vs the accept path's durable commit, measured in the same run.
//!
//! - `plain_commit_4k`: one durable fjall batch with a 4 KiB message (the outbox accept write).
//! - `audited_commit_4k`: the same batch carrying its audit leaf (`AuditLog::submit` + wait), plus
//!   `maybe_checkpoint` (a signed checkpoint, with its own durable batch, every 256 leaves).
//! - `audit_cpu_per_leaf`: stage + fold of one leaf without the store commit, to isolate CPU cost.
//! - `checkpoint_sign`: one Ed25519 checkpoint signature (amortised over `checkpoint_every` leaves).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use sammen_audit::store::trees;
use sammen_audit::{AuditConfig, AuditLog, Checkpoint, Event, LeafEvent, Outcome, PatientKey};
use sammen_model::{Family, Party, PatientId};
use sammen_store::{Batch, FjallStore, Store};

const MSG: &str = "message";

fn trees_with_msg() -> Vec<&'static str> {
    let mut t = trees::ALL.to_vec();
    t.push(MSG);
    t
}

fn event(i: u64) -> LeafEvent<'static> {
    let mut e = LeafEvent::new(1_700_000_000_000 + i, Event::Accepted, Outcome::Success);
    e.message_id = Some(format!("a5e5b880-c087-4055-b9ec-{i:012}").into());
    e.bundle_id = Some(format!("7b3e1c52-1f0e-4d7a-9a55-{i:012}").into());
    e.family = Some(Family::CareCommunication);
    e.event_code = Some("new-message".into());
    e.sender = Some(std::borrow::Cow::Owned(Party {
        gln: Some("5790001348120".into()),
        sor: Some("265161000016000".into()),
    }));
    e.receiver = Some(std::borrow::Cow::Owned(Party {
        gln: Some("5790000209354".into()),
        sor: None,
    }));
    e.cert_fingerprint = Some("ab".repeat(32).into());
    e.payload_sha256 = Some([7; 32]);
    e.patient = Some(PatientId::new("urn:oid:1.2.208.176.1.2", "2512489996"));
    e
}

fn config() -> AuditConfig {
    AuditConfig {
        origin: "sammen.bench/audit".into(),
        checkpoint_every: 256,
        checkpoint_interval_ms: 10_000,
        export_dir: None,
        patient_key: PatientKey::new(&[5u8; 32]).unwrap(),
    }
}

fn payload(i: u64) -> Vec<u8> {
    let mut p = vec![0u8; 4096];
    for (j, b) in p.iter_mut().enumerate() {
        *b = (i as usize).wrapping_mul(31).wrapping_add(j * 7) as u8;
    }
    p
}

fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let trees = trees_with_msg();
    let store = FjallStore::open(tmp.path().join("data"), &trees).unwrap();
    let log = AuditLog::open(
        store,
        config(),
        sammen_audit::SigningKey::from_bytes(&[1; 32]),
    )
    .unwrap();
    let mut g = c.benchmark_group("accept_4k");
    g.sample_size(30).measurement_time(Duration::from_secs(8));
    let mut i = 0u64;
    g.bench_function("plain_commit_4k", |b| {
        b.iter(|| {
            i += 1;
            let mut batch = Batch::new();
            batch.put(MSG, i.to_be_bytes().to_vec(), payload(i));
            log.store().commit(batch).unwrap();
        })
    });
    g.bench_function("audited_commit_4k", |b| {
        b.iter(|| {
            i += 1;
            let mut batch = Batch::new();
            batch.put(MSG, i.to_be_bytes().to_vec(), payload(i));
            log.submit(batch, vec![event(i)]).unwrap().wait().unwrap();
            log.maybe_checkpoint(1_700_000_000_000 + i).unwrap();
        })
    });
    g.finish();

    let tmp2 = tempfile::tempdir().unwrap();
    let store2 = FjallStore::open(tmp2.path().join("data"), &trees).unwrap();
    let cpu_log = AuditLog::open(
        store2,
        config(),
        sammen_audit::SigningKey::from_bytes(&[1; 32]),
    )
    .unwrap();
    let mut g = c.benchmark_group("audit_cpu");
    let mut j = 0u64;
    g.bench_function("audit_cpu_per_leaf", |b| {
        b.iter(|| {
            j += 1;
            let mut batch = Batch::new();
            let staged = cpu_log.stage(&mut batch, event(j)).unwrap();
            cpu_log.committed(staged).unwrap();
            batch
        })
    });
    let key = sammen_audit::SigningKey::from_bytes(&[1; 32]);
    let cp = Checkpoint {
        origin: "sammen.bench/audit".into(),
        size: 123_456,
        root: [9; 32],
        time_ms: 1_700_000_000_000,
    };
    g.bench_function("checkpoint_sign", |b| b.iter(|| cp.sign(&key)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
