//! The audit log's cost per accepted message in instructions, audit on against off, counted by
//! valgrind's callgrind: a share that does not move with the machine's speed.
//!
//! ```sh
//! cargo build --release -p sammen
//! cargo run --release --example audit_instructions -- [SAMMEN_BINARY] [--messages 2000,6000] [--keep DIR]
//! ```
//! Run it from the checkout (the load comes from `conformance/`); it needs `valgrind` and
//! `callgrind_annotate` (Debian's valgrind package) and takes a few minutes.
//!
//! Why: CPU time per accept moves by ±25% between rounds on a shared VM, so `sammen bench --audit-share`
//! needs 40 rounds to resolve ±3 points. Callgrind counts the broker's user-space instructions, which the
//! same binary and load reproduce to about 0.1%.
//!
//! How: for audit on and off (run side by side), a fresh broker under callgrind accepts N1 messages
//! (`sammen bench --url`, 16 clients, 4 KiB), another fresh one N2; instructions per message are
//! `(I(N2) − I(N1)) / (N2 − N1)`, which cancels start-up and shutdown.
//!
//! What it does not count, and where it differs from the native broker:
//! - the kernel's work (fsync, sockets), so the share is of part of the broker's CPU, and larger;
//! - SHA-256 runs its portable code under valgrind (no SHA-NI), several times the native instructions;
//!   its instructions are given apart, and the share is also given without them;
//! - callgrind runs one thread at a time at about 150 accepts/s, so checkpoints (once a second) come every
//!   hundred or so messages instead of every few thousand: their share (signature, node chunk, postings)
//!   is larger than at saturation, and group commits are smaller.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// One broker run under callgrind.
#[derive(Clone, Copy, Debug)]
struct Count {
    /// Every instruction of the process.
    total: u64,
    /// Of which in SHA-256 (functions or inlined code of the `sha2` crate).
    sha256: u64,
}

fn main() -> Result<()> {
    let mut sammen = PathBuf::from("target/release/sammen");
    let mut sizes = (2_000u64, 6_000u64);
    let mut keep: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--keep" {
            keep = Some(PathBuf::from(args.next().context("--keep DIR")?));
        } else if a == "--messages" {
            let v = args.next().context("--messages N1,N2")?;
            let (x, y) = v.split_once(',').context("--messages N1,N2")?;
            sizes = (x.parse()?, y.parse()?);
        } else {
            sammen = PathBuf::from(a);
        }
    }
    if sizes.1 <= sizes.0 {
        bail!("--messages N1,N2 needs N2 > N1");
    }
    let temp = tempfile::Builder::new()
        .prefix("sammen-audit-instr")
        .tempdir()?;
    // With --keep DIR, the runs' data dirs and callgrind outputs stay there for callgrind_annotate.
    let work = keep.unwrap_or_else(|| temp.path().to_path_buf());
    let mut counts = Vec::new();
    for n in [sizes.0, sizes.1] {
        // Both sides at once: one core each, and callgrind's counts do not depend on the timing.
        let on = {
            let (s, w) = (sammen.clone(), work.join(format!("on-{n}")));
            std::thread::spawn(move || run(&s, true, n, &w))
        };
        let off = run(&sammen, false, n, &work.join(format!("off-{n}")))?;
        let on = on
            .join()
            .map_err(|_| anyhow::anyhow!("the audit-on run panicked"))??;
        println!(
            "{n:>6} messages: audit on {} instructions ({} in SHA-256), off {} ({})",
            on.total, on.sha256, off.total, off.sha256
        );
        counts.push((on, off));
    }
    let per = |a: u64, b: u64| (b as f64 - a as f64) / (sizes.1 - sizes.0) as f64;
    let (on, off) = (
        (
            per(counts[0].0.total, counts[1].0.total),
            per(counts[0].0.sha256, counts[1].0.sha256),
        ),
        (
            per(counts[0].1.total, counts[1].1.total),
            per(counts[0].1.sha256, counts[1].1.sha256),
        ),
    );
    println!(
        "per accepted message: audit on {:.0} instructions ({:.0} in SHA-256), off {:.0} ({:.0})",
        on.0, on.1, off.0, off.1
    );
    println!(
        "audit share of the broker's user-space instructions per message: {:.1}%; without SHA-256: {:.1}% ({:.0} of {:.0})",
        (on.0 / off.0 - 1.0) * 100.0,
        ((on.0 - on.1) / (off.0 - off.1) - 1.0) * 100.0,
        (on.0 - on.1) - (off.0 - off.1),
        off.0 - off.1
    );
    Ok(())
}

/// Start `sammen serve` under callgrind on a fresh data dir in `dir`, load `n` messages, stop it.
fn run(sammen: &Path, audit: bool, n: u64, dir: &Path) -> Result<Count> {
    std::fs::create_dir_all(dir)?;
    let mut cfg = format!(
        "data_dir = {:?}\n[store]\nbackend = \"fjall\"\n[limits]\noutbox_max_depth = 100000000\n",
        dir.join("data").display().to_string()
    );
    if !audit {
        cfg.push_str("[audit]\nenabled = false\n");
    }
    let (cfg_path, out, log) = (
        dir.join("sammen.toml"),
        dir.join("callgrind.out"),
        dir.join("valgrind.log"),
    );
    std::fs::write(&cfg_path, cfg)?;
    let mut child = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(sammen)
        .args(["serve", "--config"])
        .arg(&cfg_path)
        .args(["--listen", "127.0.0.1:0"])
        .env("SAMMEN_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting valgrind (is it installed?)")?;
    let pid = child.id();
    let mut url = None;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().take(20) {
            let line = line?;
            if let Some(u) = line.strip_prefix("sammen: listening on ") {
                url = Some(u.trim().to_string());
                break;
            }
        }
    }
    let Some(url) = url else {
        let _ = child.kill();
        bail!(
            "sammen serve did not start:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    };
    let bench = Command::new(sammen)
        .args(["bench", "--url", &url, "--size", "4096", "--clients", "16"])
        .args(["--messages", &n.to_string()])
        .output()
        .context("running sammen bench")?;
    let text = String::from_utf8_lossy(&bench.stdout);
    if !bench.status.success() || !text.contains(&format!("202 accepted {n},")) {
        let _ = child.kill();
        bail!("the load did not get {n} accepts:\n{text}");
    }
    // The relay publishes after the 202s: wait until the broker is idle, then stop it gracefully.
    wait_idle(pid);
    let int = rustix::process::Pid::from_raw(i32::try_from(pid)?).context("broker pid")?;
    rustix::process::kill_process(int, rustix::process::Signal::INT)?;
    child.wait()?;
    let text = std::fs::read_to_string(&log)?;
    let total = text
        .lines()
        .find_map(|l| {
            l.split_once("Collected :")
                .map(|(_, n)| n.trim().to_string())
        })
        .context("callgrind printed no total")?
        .parse()?;
    Ok(Count {
        total,
        sha256: sha256_instructions(&out)?,
    })
}

/// Instructions in the `sha2` crate's code (its functions, and its code inlined into callers).
fn sha256_instructions(out: &Path) -> Result<u64> {
    let flat = Command::new("callgrind_annotate")
        .args(["--auto=no", "--threshold=100"])
        .arg(out)
        .output()
        .context("running callgrind_annotate")?;
    let text = String::from_utf8_lossy(&flat.stdout);
    // Lines `1,234 (0.01%)  FILE:FUNCTION [OBJECT]`, one per file and function.
    Ok(text
        .lines()
        .filter(|l| l.contains("sha2::") || l.contains("/sha2-"))
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|n| n.replace(',', "").parse::<u64>().ok())
        .sum())
}

/// Until the process's CPU time grows by at most a tick and a half in 300 ms (two minutes at most).
fn wait_idle(pid: u32) {
    let cpu = || -> Option<f64> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let f: Vec<&str> = s.get(s.rfind(')')? + 2..)?.split_whitespace().collect();
        Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = cpu();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        let now = cpu();
        match (last, now) {
            (Some(a), Some(b)) if b - a <= 0.015 => return,
            (_, None) => return,
            _ => last = now,
        }
    }
}
