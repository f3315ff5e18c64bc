//! Durable accepts/s for 4 KiB messages with 1, 16 and 64 concurrent writers per backend, and the raw
//! disk baseline (append 4 KiB + fdatasync, one writer) in the same run. Prints ratios at the end.
//!
//! `CARGO_TARGET_DIR=/work/target-store cargo bench -p sammen-outbox --bench accept`
//! (add `-- --measurement-time 2 --warm-up-time 1` for a short run).

// A benchmark harness: a failed setup or accept should abort the run loudly.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sammen_model::{Family, Party};
use sammen_outbox::{AcceptRequest, MessageMeta, Outbox, OutboxConfig, Store};

const SIZE: usize = 4096;
static SEQ: AtomicU64 = AtomicU64::new(0);
/// name → (operations, elapsed) over every measured sample.
static TOTALS: Mutex<BTreeMap<String, (u64, Duration)>> = Mutex::new(BTreeMap::new());

fn record(name: &str, ops: u64, took: Duration) {
    let mut t = TOTALS.lock().unwrap();
    let e = t.entry(name.to_owned()).or_default();
    e.0 += ops;
    e.1 += took;
}

fn request() -> AcceptRequest {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let mut bytes = vec![0u8; SIZE];
    // Incompressible-ish payload so compression does not flatter an engine.
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
            message_id: format!("msg-{n}"),
            envelope_id: format!("env-{n}"),
            family: Family::HospitalNotification,
            event: "hospital-notification-message".into(),
            sender: party("5790001348120"),
            receiver: party(["5790002515200", "5790000121441"][(n % 2) as usize]),
            received: SystemTime::now(),
        },
    }
}

fn run_writers<S: Store>(ob: &Arc<Outbox<S>>, writers: u64, iters: u64) -> Duration {
    let per = iters.div_ceil(writers);
    let start = Instant::now();
    let hs: Vec<_> = (0..writers)
        .map(|_| {
            let ob = Arc::clone(ob);
            std::thread::spawn(move || {
                for _ in 0..per {
                    ob.accept(request()).unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    start.elapsed()
}

fn bench_backend<S: Store>(c: &mut Criterion, name: &str, ob: Outbox<S>) {
    let ob = Arc::new(ob);
    let mut g = c.benchmark_group(format!("accept_4k/{name}"));
    g.throughput(Throughput::Elements(1));
    for writers in [1u64, 16, 64] {
        g.bench_with_input(BenchmarkId::from_parameter(writers), &writers, |b, &w| {
            b.iter_custom(|iters| {
                let per = iters.div_ceil(w);
                let took = run_writers(&ob, w, iters);
                record(&format!("{name} x{w}"), per * w, took);
                took
            })
        });
    }
    g.finish();
}

fn baseline(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut f = std::fs::File::create(dir.path().join("append.log")).unwrap();
    let block = vec![0x5au8; SIZE];
    let mut g = c.benchmark_group("raw_fdatasync_append_4k");
    g.throughput(Throughput::Elements(1));
    g.bench_function("1", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                f.write_all(&block).unwrap();
                f.sync_data().unwrap();
            }
            let took = start.elapsed();
            record("raw fdatasync append", iters, took);
            took
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    baseline(c);
    let sled_dir = tempfile::tempdir().unwrap();
    bench_backend(
        c,
        "sled",
        sammen_outbox::open_sled(sled_dir.path(), OutboxConfig::default()).unwrap(),
    );
    let fjall_dir = tempfile::tempdir().unwrap();
    bench_backend(
        c,
        "fjall",
        sammen_outbox::open_fjall(fjall_dir.path(), OutboxConfig::default()).unwrap(),
    );

    let t = TOTALS.lock().unwrap();
    let rate = |k: &str| t.get(k).map(|(n, d)| *n as f64 / d.as_secs_f64());
    let Some(base) = rate("raw fdatasync append") else {
        return;
    };
    println!(
        "\n== durable accepts/s (4 KiB), all measured samples; ratio = / raw fdatasync append =="
    );
    println!("{:<24} {:>12} {:>8}", "workload", "ops/s", "ratio");
    println!("{:<24} {:>12.0} {:>8.2}", "raw fdatasync append", base, 1.0);
    for be in ["sled", "fjall"] {
        for w in [1, 16, 64] {
            let k = format!("{be} x{w}");
            if let Some(r) = rate(&k) {
                println!("{k:<24} {r:>12.0} {:>8.2}", r / base);
            }
        }
    }
}

criterion_group!(accept, benches);
criterion_main!(accept);
