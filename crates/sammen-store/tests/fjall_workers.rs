//! fjall's background workers must not spin while one of them compacts.
//!
//! fjall 3.1.13 keeps its first worker free for flushes: a compaction request it receives goes back into
//! the workers' shared mailbox. With nothing else queued it took that request straight back, again and
//! again, for as long as the other worker was busy: about one core burned for the length of every
//! compaction (under load, 40% of the store engine's background CPU). Sammen builds a patched copy
//! (`vendor/fjall`, see `vendor/README.md`). This test runs fjall as the store opens it and compares the
//! workers' CPU time with the wall time during which a compaction, and nothing else, was running: one
//! core at most when they behave, about two with the hot loop.
//!
//! Alone in this file because it reads the CPU time of every `fjall:worker` thread of the process.

use std::time::{Duration, Instant};

use fjall::{Database, KeyspaceCreateOptions};
use sammen_store::{fjall_worker_threads, FJALL_MEMTABLE};

/// CPU seconds that every `fjall:worker` thread of this process has used so far (`/proc/self/task`).
fn workers_cpu() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        panic!("this test reads /proc/self/task (Linux)");
    };
    let mut ticks = 0u64;
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != "fjall:worker" {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // utime and stime are fields 14 and 15; the command name before them may hold spaces.
        let after = stat.rfind(')').map_or("", |i| &stat[i + 2..]);
        let f: Vec<u64> = after
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        ticks += f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    }
    // USER_HZ is 100 on every Linux architecture.
    ticks as f64 / 100.0
}

/// A cheap pseudo-random sequence, so keys overlap across flushed segments and compaction must merge.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 11
    }
}

#[test]
fn an_idle_worker_does_not_spin_while_another_compacts() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::builder(dir.path())
        .manual_journal_persist(true)
        .worker_threads(fjall_worker_threads())
        .open()
        .unwrap();
    let ks = db
        .keyspace("t", || {
            KeyspaceCreateOptions::default().max_memtable_size(FJALL_MEMTABLE)
        })
        .unwrap();
    let mut rng = Lcg(7);
    let value = vec![0x5a_u8; 1024];
    // Wall time and workers' CPU summed over the moments when a compaction, and no flush, was running.
    let (mut wall, mut cpu) = (0.0f64, 0.0f64);
    for round in 0..12 {
        // Four flushed segments in level 0 make the leveled strategy compact them into level 1.
        for _ in 0..4 {
            for _ in 0..6_000 {
                ks.insert(rng.next().to_be_bytes(), &value).unwrap();
            }
            ks.rotate_memtable_and_wait().unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = (Instant::now(), workers_cpu());
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let now = (Instant::now(), workers_cpu());
            if db.active_compactions() > 0 && db.outstanding_flushes() == 0 {
                wall += (now.0 - last.0).as_secs_f64();
                cpu += now.1 - last.1;
            }
            last = now;
            if db.active_compactions() == 0 && db.outstanding_flushes() == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "compaction did not finish");
        }
        // Clock ticks are 10 ms: judge only once a few hundred of them were counted.
        if wall >= 2.0 || (round >= 3 && wall >= 0.5) {
            break;
        }
    }
    assert!(
        wall >= 0.5,
        "too little compaction to judge ({wall:.2} s of it)"
    );
    let cores = cpu / wall;
    println!("fjall's workers: {cpu:.2} s of CPU in {wall:.2} s of compaction ({cores:.2} cores)");
    assert!(
        cores < 1.4,
        "fjall's workers used {cpu:.2} s of CPU in {wall:.2} s of compaction ({cores:.2} cores): one of them spins"
    );
}
