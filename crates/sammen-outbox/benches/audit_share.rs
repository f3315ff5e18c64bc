//! Audit cost on the accept path: durable accepts from 16 concurrent writers with the audit log off and on
//! (the ingress's two leaves, `received` and `accepted`, in the same batch as the accept; patient HMAC,
//! certificate fingerprint, search index, a checkpointer signing every 1024 leaves), in alternating rounds
//! of the same run so disk and machine noise hit both alike. Two denominators, each its own pair of sides:
//! - `outbox`: the outbox's accept alone (4 KiB random payloads);
//! - `validated`: what the ingress does per message before it answers, without HTTP: validate a real
//!   HospitalNotification (conformance suite, 14.9 KB) with `sammen_adapters::validate`, then accept it
//!   (on the audited side also the report clone the ingress keeps for refusal leaves).
//!
//! `CARGO_TARGET_DIR=/work/target-audit2 cargo bench -p sammen-outbox --bench audit_share`
//! Env: `ROUNDS` (default 12), `PER_WRITER` (accepts per writer per round, default 150), `WRITERS`
//! (default 16), `LEAVES` (2: `received` and `accepted`, as the ingress writes; 1: `accepted` only),
//! `CHECKPOINT_EVERY` (leaves, default 1024),
//! `BACKEND` (`fjall` default, or `sled`), `ONLY` (`plain` or `audited`: run that side alone, for an
//! instruction count of each under `valgrind --tool=callgrind`; the share printed is then meaningless).

// A benchmark harness: a failed setup or accept should abort the run loudly.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sammen_model::{Family, Party, PatientId};
use sammen_outbox::sammen_audit::{AuditConfig, PatientKey, SigningKey};
use sammen_outbox::{AcceptAudit, AcceptRequest, MessageMeta, Outbox, OutboxConfig, Store};

const SIZE: usize = 4096;
static SEQ: AtomicU64 = AtomicU64::new(0);

type Shared = Arc<Outbox<Arc<dyn Store>>>;

fn request() -> AcceptRequest {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let mut bytes = vec![0u8; SIZE];
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in bytes.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let party = |g: &str| Party {
        gln: Some(g.to_owned()),
        sor: None,
    };
    AcceptRequest {
        bytes,
        meta: MessageMeta {
            message_id: format!("a5e5b880-c087-4055-b9ec-{n:012}"),
            envelope_id: format!("7b3e1c52-1f0e-4d7a-9a55-{n:012}"),
            family: Family::HospitalNotification,
            event: "admit-inpatient".into(),
            sender: party("5790001348120"),
            receiver: party(["5790002515200", "5790000121441"][(n % 2) as usize]),
            received: SystemTime::now(),
        },
    }
}

/// The conformance example the `validated` path validates and accepts.
const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../conformance/examples/hospitalnotification/Bundle-a5e5b880-c087-4055-b9ec-99108695f81d.xml"
);

/// This process's CPU time (user + system, all threads: writers, committer, fjall's workers,
/// checkpointer), from /proc/self/stat in clock ticks of 10 ms.
fn cpu() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.get(s.rfind(')')? + 2..)?.to_owned();
            let f: Vec<u64> = rest
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|v| v.parse().ok())
                .collect();
            Some(f.iter().sum::<u64>())
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// One round: wall time and process CPU time.
fn round<S: Store>(
    ob: &Arc<Outbox<S>>,
    per: u64,
    example: Option<&Arc<Vec<u8>>>,
) -> (Duration, Duration) {
    let audited = ob.audit().is_some();
    let (start, cpu0) = (Instant::now(), cpu());
    let hs: Vec<_> = (0..writers())
        .map(|_| {
            let ob = Arc::clone(ob);
            let example = example.cloned();
            std::thread::spawn(move || {
                let opts = sammen_adapters::Options::default();
                let fp = Some("9f".repeat(32));
                for _ in 0..per {
                    let mut req = request();
                    let patient = match &example {
                        Some(bytes) => {
                            let report = sammen_adapters::validate(bytes, &opts);
                            assert!(report.is_valid());
                            if audited {
                                std::hint::black_box(report.clone());
                            }
                            req.bytes = bytes.to_vec();
                            report.patient
                        }
                        None => Some(PatientId::new("urn:oid:1.2.208.176.1.2", "0101011234")),
                    };
                    let audit = AcceptAudit::default()
                        .patient(patient)
                        .cert_fingerprint(fp.clone())
                        .received(env("LEAVES", 2) > 1);
                    ob.accept_with(req, audit).unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    (start.elapsed(), cpu().saturating_sub(cpu0))
}

/// Concurrent writers (`WRITERS`, default 16).
fn writers() -> u64 {
    env("WRITERS", 16)
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let rounds = env("ROUNDS", 12);
    let per = env("PER_WRITER", 150);
    let sled = std::env::var("BACKEND").is_ok_and(|b| b == "sled");
    let dir = tempfile::tempdir().unwrap();
    let audit_cfg = AuditConfig {
        origin: "sammen.bench/audit".into(),
        checkpoint_every: env("CHECKPOINT_EVERY", 1024),
        checkpoint_interval_ms: 10_000,
        export_dir: Some(dir.path().join("export")),
        patient_key: PatientKey::new(&[5u8; 32]).unwrap(),
    };
    let key = SigningKey::from_bytes(&[1; 32]);
    let (plain, audited): (Shared, Shared) = if sled {
        let p: Arc<dyn Store> = Arc::new(
            sammen_outbox::SledStore::open(dir.path().join("plain"), sammen_outbox::trees::ALL)
                .unwrap(),
        );
        (
            Arc::new(Outbox::open(p, OutboxConfig::default()).unwrap()),
            Arc::new(
                sammen_outbox::open_sled_audited(
                    dir.path().join("audited"),
                    OutboxConfig::default(),
                    audit_cfg,
                    key,
                )
                .unwrap(),
            ),
        )
    } else {
        let p: Arc<dyn Store> = Arc::new(
            sammen_outbox::FjallStore::open(dir.path().join("plain"), sammen_outbox::trees::ALL)
                .unwrap(),
        );
        (
            Arc::new(Outbox::open(p, OutboxConfig::default()).unwrap()),
            Arc::new(
                sammen_outbox::open_fjall_audited(
                    dir.path().join("audited"),
                    OutboxConfig::default(),
                    audit_cfg,
                    key,
                )
                .unwrap(),
            ),
        )
    };
    // The broker's checkpointer: checks every 10 ms, signs every 1024 leaves.
    let stop = Arc::new(AtomicBool::new(false));
    let cp = {
        let log = Arc::clone(audited.audit().unwrap());
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                log.maybe_checkpoint(now).unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    // `ONLY`: the other side runs no accepts at all.
    let only = std::env::var("ONLY").unwrap_or_default();
    let (per_plain, per_audit) = match only.as_str() {
        "plain" => (per, 0),
        "audited" => (0, per),
        _ => (per, per),
    };
    let example = Arc::new(std::fs::read(EXAMPLE).unwrap());
    println!(
        "backend {}, {} writers, {rounds} rounds x {} accepts per side and path",
        if sled { "sled" } else { "fjall" },
        writers(),
        per * writers()
    );
    for (path, example) in [("outbox", None), ("validated", Some(&example))] {
        // Warm-up, then alternate which goes first so neither always follows the other.
        round(&plain, per_plain / 4, example);
        round(&audited, per_audit / 4, example);
        let (mut t_plain, mut t_audit) = (Duration::ZERO, Duration::ZERO);
        let (mut c_plain, mut c_audit) = (Duration::ZERO, Duration::ZERO);
        let mut shares = Vec::new();
        for r in 0..rounds {
            let (a, b) = if r % 2 == 0 {
                let a = round(&plain, per_plain, example);
                (a, round(&audited, per_audit, example))
            } else {
                let b = round(&audited, per_audit, example);
                (round(&plain, per_plain, example), b)
            };
            t_plain += a.0;
            t_audit += b.0;
            c_plain += a.1;
            c_audit += b.1;
            shares.push(b.0.as_secs_f64() / a.0.as_secs_f64() - 1.0);
        }
        let n = (rounds * per * writers()) as f64;
        let (rp, ra) = (n / t_plain.as_secs_f64(), n / t_audit.as_secs_f64());
        shares.sort_by(f64::total_cmp);
        let median = shares[shares.len() / 2];
        let us = |c: Duration| c.as_secs_f64() * 1e6 / n;
        println!(
            "path {path}: audit off {rp:>6.0} accepts/s {:>6.0} us CPU/accept; audit on {ra:>6.0} accepts/s {:>6.0} us CPU/accept",
            us(c_plain),
            us(c_audit)
        );
        println!(
            "path {path}: audit share of CPU {:.1}%; of wall time {:.1}% overall, {:.1}% median round (min {:.1}%, max {:.1}%)",
            (c_audit.as_secs_f64() / c_plain.as_secs_f64() - 1.0) * 100.0,
            (t_audit.as_secs_f64() / t_plain.as_secs_f64() - 1.0) * 100.0,
            median * 100.0,
            shares[0] * 100.0,
            shares[shares.len() - 1] * 100.0
        );
    }
    stop.store(true, Ordering::Relaxed);
    cp.join().unwrap();
    let log = audited.audit().unwrap();
    println!(
        "{} leaves, latest checkpoint size {}",
        log.size(),
        log.latest_checkpoint().map_or(0, |c| c.checkpoint.size)
    );
}
