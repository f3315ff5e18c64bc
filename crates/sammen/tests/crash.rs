//! Crash and outage tests against a `sammen serve` child process on real RabbitMQ.
//!
//! - `kill9_under_load`: SAMMEN_CRASH_N messages (default 5,000) from SAMMEN_CRASH_CLIENTS concurrent
//!   clients (default 8); the broker is SIGKILLed at a random point and restarted; every message that got a
//!   202 must reach the subscriber; duplicates the subscriber dropped are reported.
//! - `rabbitmq_outage_under_load`: `rabbitmqctl stop_app` for SAMMEN_OUTAGE_SECS (default 30) while
//!   clients post; accepts continue; after `start_app` the outbox drains.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

/// Post messages `[from, to)` split over `clients` connections; every message is retried until it gets
/// 202 or 200 (the broker may be down meanwhile). Returns the ids answered 202.
async fn load(
    addr: Arc<Mutex<String>>,
    tag: u32,
    from: u64,
    to: u64,
    clients: u64,
    progress: Arc<AtomicU64>,
) -> (HashSet<String>, u64) {
    let gen = Arc::new(Gen::new());
    let mut tasks = Vec::new();
    let dup = Arc::new(AtomicU64::new(0));
    for c in 0..clients {
        let (gen, addr, progress, dup) = (gen.clone(), addr.clone(), progress.clone(), dup.clone());
        tasks.push(tokio::spawn(async move {
            let mut accepted = HashSet::new();
            let mut http = Http::new(&addr.lock().unwrap().clone());
            let mut n = from + c;
            while n < to {
                let (id, body) = gen.message(tag, n);
                loop {
                    match http.request("POST", "/v1/messages", &body).await {
                        Ok((202, _)) => {
                            accepted.insert(id.clone());
                            break;
                        }
                        Ok((200, _)) => {
                            dup.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Ok((503, _)) | Ok((507, _)) | Err(_) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            http = Http::new(&addr.lock().unwrap().clone());
                        }
                        Ok((code, b)) => panic!("{code}: {}", String::from_utf8_lossy(&b)),
                    }
                }
                progress.fetch_add(1, Ordering::Relaxed);
                n += clients;
            }
            accepted
        }));
    }
    let mut all = HashSet::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    (all, dup.load(Ordering::Relaxed))
}

async fn wait_delivered(seen: &Arc<Mutex<Seen>>, want: &HashSet<String>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let missing = {
            let g = seen.lock().unwrap();
            want.iter().filter(|id| !g.ids.contains_key(*id)).count()
        };
        if missing == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} messages that got a 202 never reached the subscriber",
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The outage test stops RabbitMQ for everyone: the two tests of this file must not overlap.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_load() {
    let _serial = SERIAL.lock().await;
    let n = env_usize("SAMMEN_CRASH_N", 5_000) as u64;
    let clients = env_usize("SAMMEN_CRASH_CLIENTS", 8) as u64;
    let dir = tempfile::tempdir().unwrap();
    let ns = format!("crash{}", fastrand::u32(..));
    let cfg = write_config(dir.path(), &ns, "");
    let (seen, sub_bus) = subscriber(&ns).await;
    let port = free_port();
    let serve = Serve::start(&cfg, port);
    let addr = Arc::new(Mutex::new(serve.addr.clone()));
    let progress = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let load_task = tokio::spawn(load(addr, 1, 0, n, clients, progress.clone()));
    let kill_at = fastrand::u64(n / 5..n * 4 / 5);
    while progress.load(Ordering::Relaxed) < kill_at {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    serve.kill9();
    eprintln!(
        "killed -9 after {} answered messages",
        progress.load(Ordering::Relaxed)
    );
    tokio::time::sleep(Duration::from_millis(fastrand::u64(100..1000))).await;
    let serve = Serve::start(&cfg, port);
    let (accepted, dups) = load_task.await.unwrap();
    let elapsed = t0.elapsed();
    wait_delivered(&seen, &accepted, Duration::from_secs(120)).await;
    let (bytes_ok, distinct, dropped) = {
        let g = seen.lock().unwrap();
        (g.bytes_ok, g.ids.len(), g.duplicates)
    };
    assert!(
        bytes_ok,
        "a delivered body did not carry its own message id"
    );
    eprintln!(
        "crash: {n} messages, {clients} clients, {} got 202, {dups} answered duplicate after the restart, \
         {} distinct delivered, subscriber dropped {} duplicates; load took {elapsed:?}",
        accepted.len(),
        distinct,
        dropped
    );
    assert_eq!(accepted.len() as u64 + dups, n);
    serve.stop();
    sammen_bus::Bus::close(&sub_bus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_outage_under_load() {
    let _serial = SERIAL.lock().await;
    let outage = Duration::from_secs(env_usize("SAMMEN_OUTAGE_SECS", 30) as u64);
    let dir = tempfile::tempdir().unwrap();
    let ns = format!("outage{}", fastrand::u32(..));
    let cfg = write_config(dir.path(), &ns, "");
    let (seen, sub_bus) = subscriber(&ns).await;
    let serve = Serve::start(&cfg, free_port());
    let addr = Arc::new(Mutex::new(serve.addr.clone()));
    let progress = Arc::new(AtomicU64::new(0));
    // Post steadily during the whole outage.
    let stop_posting = Arc::new(AtomicUsize::new(0));
    let posted = {
        let (addr, progress, stop) = (addr.clone(), progress.clone(), stop_posting.clone());
        tokio::spawn(async move {
            let mut all = HashSet::new();
            let mut batch = 0u64;
            while stop.load(Ordering::Relaxed) == 0 {
                let (a, _) = load(
                    addr.clone(),
                    2,
                    batch * 100,
                    batch * 100 + 100,
                    4,
                    progress.clone(),
                )
                .await;
                all.extend(a);
                batch += 1;
            }
            all
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ctl = |what: &str| {
        let s = std::process::Command::new("rabbitmqctl")
            .arg(what)
            .output()
            .unwrap();
        assert!(
            s.status.success(),
            "rabbitmqctl {what}: {}",
            String::from_utf8_lossy(&s.stderr)
        );
    };
    ctl("stop_app");
    let before = progress.load(Ordering::Relaxed);
    tokio::time::sleep(outage).await;
    let during = progress.load(Ordering::Relaxed) - before;
    ctl("start_app");
    stop_posting.store(1, Ordering::Relaxed);
    let accepted = posted.await.unwrap();
    eprintln!("outage: {during} messages accepted while RabbitMQ was stopped for {outage:?}");
    assert!(during > 100, "accepts stalled during the outage: {during}");
    wait_delivered(&seen, &accepted, Duration::from_secs(120)).await;
    // The outbox drained: nothing waits to be published.
    let mut http = Http::new(&addr.lock().unwrap().clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = http.request("GET", "/readyz", b"").await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if v["outbox_depth"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "outbox did not drain: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "outage: {} accepted in total, all delivered; subscriber dropped {} duplicates",
        accepted.len(),
        seen.lock().unwrap().duplicates
    );
    serve.stop();
    sammen_bus::Bus::close(&sub_bus).await;
}
