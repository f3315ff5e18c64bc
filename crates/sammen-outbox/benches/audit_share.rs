//! Audit cost on the real accept path: durable 4 KiB accepts from 16 concurrent writers with the audit log
//! off and on (leaf in the same batch, patient HMAC, search index, a checkpointer signing every 1024
//! leaves), in alternating rounds of the same run so disk and machine noise hit both alike.
//!
//! `CARGO_TARGET_DIR=/work/target-audit2 cargo bench -p sammen-outbox --bench audit_share`
//! Env: `ROUNDS` (default 12), `PER_WRITER` (accepts per writer per round, default 150),
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
const WRITERS: u64 = 16;
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

fn round<S: Store>(ob: &Arc<Outbox<S>>, per: u64) -> Duration {
    let start = Instant::now();
    let hs: Vec<_> = (0..WRITERS)
        .map(|_| {
            let ob = Arc::clone(ob);
            std::thread::spawn(move || {
                for _ in 0..per {
                    let p = PatientId::new("urn:oid:1.2.208.176.1.2", "0101011234");
                    ob.accept_with(request(), AcceptAudit::default().patient(Some(p)))
                        .unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    start.elapsed()
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
        checkpoint_every: 1024,
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
    // Warm-up, then alternate which goes first so neither always follows the other.
    round(&plain, per_plain / 4);
    round(&audited, per_audit / 4);
    let (mut t_plain, mut t_audit) = (Duration::ZERO, Duration::ZERO);
    let mut shares = Vec::new();
    for r in 0..rounds {
        let (a, b) = if r % 2 == 0 {
            let a = round(&plain, per_plain);
            (a, round(&audited, per_audit))
        } else {
            let b = round(&audited, per_audit);
            (round(&plain, per_plain), b)
        };
        t_plain += a;
        t_audit += b;
        shares.push(b.as_secs_f64() / a.as_secs_f64() - 1.0);
    }
    stop.store(true, Ordering::Relaxed);
    cp.join().unwrap();
    let n = (rounds * per * WRITERS) as f64;
    let (rp, ra) = (n / t_plain.as_secs_f64(), n / t_audit.as_secs_f64());
    shares.sort_by(f64::total_cmp);
    let median = shares[shares.len() / 2];
    let log = audited.audit().unwrap();
    println!(
        "backend {}, {WRITERS} writers, {rounds} rounds x {} accepts each side",
        if sled { "sled" } else { "fjall" },
        per * WRITERS
    );
    println!("audit off: {rp:>8.0} accepts/s");
    println!(
        "audit on:  {ra:>8.0} accepts/s  ({} leaves, latest checkpoint size {})",
        log.size(),
        log.latest_checkpoint().map_or(0, |c| c.checkpoint.size)
    );
    println!(
        "audit share of the accept path: {:.1}% overall, {:.1}% median round (min {:.1}%, max {:.1}%)",
        (t_audit.as_secs_f64() / t_plain.as_secs_f64() - 1.0) * 100.0,
        median * 100.0,
        shares[0] * 100.0,
        shares[shares.len() - 1] * 100.0
    );
}
