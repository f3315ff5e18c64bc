//! The shared bus contract (`sammen_bus::contract`) against `EmbeddedBus` over this crate's durable store,
//! on both engines, plus: a reopen test (queued and unsettled messages survive closing and reopening the
//! data dir) and a SIGKILL crash test (every publish confirmed before `kill -9` is there after restart).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sammen_bus::contract::{self, msg, next, random_gln, unique_ns, Harness};
use sammen_bus::{Bus, EmbeddedBus, EmbeddedQueueStore, Source, Topology, Window};
use sammen_bus_store::{Backend, StoreQueueStore};
use std::io::{BufRead, BufReader, Write};
use std::ops::Deref;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An embedded bus over a fresh data dir (deleted on drop).
struct Durable {
    bus: Box<dyn Bus>,
    _dir: tempfile::TempDir,
}

impl Deref for Durable {
    type Target = dyn Bus;
    fn deref(&self) -> &(dyn Bus + 'static) {
        &*self.bus
    }
}

#[async_trait::async_trait]
impl Harness for Durable {
    fn is_amqp(&self) -> bool {
        false
    }
    async fn ensure(&self, gln: &str) {
        self.bus.ensure_receiver(gln).await.unwrap();
    }
}

fn open_bus(path: &std::path::Path, backend: Backend, topo: Topology) -> EmbeddedBus {
    open_bus_with(path, backend, topo, Window::default())
}

fn open_bus_with(
    path: &std::path::Path,
    backend: Backend,
    topo: Topology,
    window: Window,
) -> EmbeddedBus {
    let store = StoreQueueStore::open(path, backend).unwrap();
    EmbeddedBus::open_with_window(topo, Arc::new(store), window).unwrap()
}

/// Reopen once the previous bus's tasks have dropped the store (the engine holds a file lock until then).
async fn reopen(path: &std::path::Path, backend: Backend, topo: Topology) -> EmbeddedBus {
    reopen_with(path, backend, topo, Window::default()).await
}

async fn reopen_with(
    path: &std::path::Path,
    backend: Backend,
    topo: Topology,
    window: Window,
) -> EmbeddedBus {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match StoreQueueStore::open(path, backend) {
            Ok(store) => {
                return EmbeddedBus::open_with_window(topo, Arc::new(store), window).unwrap()
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("data dir still locked after close: {e}"),
        }
    }
}

async fn durable(backend: Backend, delivery_limit: u32) -> Durable {
    durable_with(backend, delivery_limit, Window::default()).await
}

async fn durable_with(backend: Backend, delivery_limit: u32, window: Window) -> Durable {
    let dir = tempfile::tempdir().unwrap();
    let mut topo = Topology::namespaced(&unique_ns());
    topo.delivery_limit = delivery_limit;
    Durable {
        bus: Box::new(open_bus_with(dir.path(), backend, topo, window)),
        _dir: dir,
    }
}

/// Two ready messages per queue in memory: the scenarios then read most messages back from the store.
const SMALL: Window = Window {
    messages: 2,
    bytes: 1 << 20,
};

async fn sled_small_window(limit: u32) -> Durable {
    durable_with(Backend::Sled, limit, SMALL).await
}

async fn fjall_small_window(limit: u32) -> Durable {
    durable_with(Backend::Fjall, limit, SMALL).await
}

async fn sled(limit: u32) -> Durable {
    durable(Backend::Sled, limit).await
}

async fn fjall(limit: u32) -> Durable {
    durable(Backend::Fjall, limit).await
}

sammen_bus::contract_suite!(on_sled, sled);
sammen_bus::contract_suite!(on_fjall, fjall);
sammen_bus::contract_suite!(on_sled_small_window, sled_small_window);
sammen_bus::contract_suite!(on_fjall_small_window, fjall_small_window);

/// Queued and unsettled messages, delivery counts and declared receivers survive closing and reopening.
async fn survives_reopen(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let topo = Topology::namespaced("reopen");
    let (a, empty) = (random_gln(), random_gln());
    {
        let bus = open_bus(dir.path(), backend, topo.clone());
        bus.ensure_receiver(&a).await.unwrap();
        bus.ensure_receiver(&empty).await.unwrap();
        for i in 0..5 {
            assert!(bus
                .publish_confirmed(&msg(&a, i))
                .await
                .unwrap()
                .is_confirmed());
        }
        let mut sub = bus.subscribe(Source::Inbox(a.clone()), 5).await.unwrap();
        next(&mut sub).await.ack().await.unwrap(); // 0 acked: gone
        let d = next(&mut sub).await; // 1 returned once: count 1
        d.nack(true).await.unwrap();
        let _unsettled = next(&mut sub).await; // 2 unsettled at close (or 1 again)
        bus.close().await;
    } // bus dropped; its subscription task lets go of the store a moment later
    let bus = reopen(dir.path(), backend, topo.clone()).await;
    let mut sub = bus.subscribe(Source::Inbox(a.clone()), 10).await.unwrap();
    let mut got = Vec::new();
    for _ in 1..5 {
        let d = next(&mut sub).await;
        assert!(d.redelivered);
        assert_eq!(d.message, msg(&a, contract::index_of(&d)), "bytes changed");
        got.push((contract::index_of(&d), d.delivery_count));
        d.ack().await.unwrap();
    }
    got.sort_unstable();
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert!(got[0].1 >= 1, "delivery count of the returned message lost");
    assert!(contract::next_within(&mut sub, Duration::from_millis(300))
        .await
        .is_none());
    // Both receivers still routable without a new ensure_receiver.
    for r in [&a, &empty] {
        assert!(bus
            .publish_confirmed(&msg(r, 9))
            .await
            .unwrap()
            .is_confirmed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_reopen_sled() {
    survives_reopen(Backend::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_reopen_fjall() {
    survives_reopen(Backend::Fjall).await;
}

/// A backlog of 4 KiB messages stays on disk: memory holds the window's bytes, the count survives a
/// reopen without reading the messages, and they drain complete and in order.
async fn backlog_stays_on_disk(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let topo = Topology::namespaced("backlog");
    let window = Window {
        messages: 1_000,
        bytes: 64 << 10,
    };
    let a = random_gln();
    let src = Source::Inbox(a.clone());
    let big = |i: usize| {
        let mut m = msg(&a, i);
        m.body = vec![b'x'; 4096].into();
        m
    };
    let n = 1_500;
    {
        let bus = open_bus_with(dir.path(), backend, topo.clone(), window);
        bus.ensure_receiver(&a).await.unwrap();
        for i in 0..n {
            assert!(bus.publish_confirmed(&big(i)).await.unwrap().is_confirmed());
        }
        let (held, bytes) = bus.resident(&src).unwrap();
        assert!(
            bytes <= 64 << 10,
            "{held} messages, {bytes} bytes in memory"
        );
        bus.close().await;
    }
    let bus = Arc::new(reopen_with(dir.path(), backend, topo, window).await);
    assert_eq!(bus.depth(&src), Some((n, 0)));
    assert_eq!(bus.resident(&src), Some((0, 0)));
    let mut sub = bus.subscribe(src.clone(), 4).await.unwrap();
    for want in 0..n {
        let d = next(&mut sub).await;
        assert_eq!(contract::index_of(&d), want);
        assert_eq!(d.message, big(want), "bytes changed");
        d.ack().await.unwrap();
        let (_, bytes) = bus.resident(&src).unwrap();
        assert!(
            bytes <= (64 << 10) + 4 * 4200,
            "{bytes} bytes in memory at {want}"
        );
    }
    assert_eq!(bus.depth(&src), Some((0, 0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_stays_on_disk_sled() {
    backlog_stays_on_disk(Backend::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_stays_on_disk_fjall() {
    backlog_stays_on_disk(Backend::Fjall).await;
}

const CHILD_ENV: &str = "SAMMEN_BUS_STORE_CRASH_CHILD";
const CRASH_GLN: &str = "5790001348120";

/// Child half of the crash test (does nothing unless the parent set `CHILD_ENV`): publish forever from
/// two tasks, printing each message index once its publish is confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (backend, path) = spec.split_once(':').unwrap();
    let backend = if backend == "sled" {
        Backend::Sled
    } else {
        Backend::Fjall
    };
    let bus = Arc::new(open_bus(
        std::path::Path::new(path),
        backend,
        Topology::default(),
    ));
    bus.ensure_receiver(CRASH_GLN).await.unwrap();
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let mut tasks = Vec::new();
    for t in 0..2usize {
        let (bus, out) = (bus.clone(), out.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0.. {
                let i = n * 2 + t;
                let ok = bus
                    .publish_confirmed(&msg(CRASH_GLN, i))
                    .await
                    .unwrap()
                    .is_confirmed();
                assert!(ok);
                let mut o = out.lock().unwrap();
                writeln!(o, "CONFIRMED {i}").unwrap();
                o.flush().unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn crash(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut confirmed = std::collections::BTreeSet::new();
    // Two crashes into the same data dir: the second run also recovers the first's leftovers.
    for round in 0..2 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(
                CHILD_ENV,
                format!("{}:{}", backend.as_str(), dir.path().display()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        // Kill at a point that varies per run: after 150..450 confirms.
        let kill_after = 150 + (std::process::id() as usize * 7 + round * 113) % 300;
        let started = Instant::now();
        let mut seen = 0;
        while seen < kill_after {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "child too slow"
            );
            let line = lines.next().expect("child exited early").unwrap();
            if let Some(i) = line.strip_prefix("CONFIRMED ") {
                confirmed.insert(i.parse::<usize>().unwrap());
                seen += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL
                               // Lines the child printed before it died are confirmed too.
        for line in lines.map_while(Result::ok) {
            if let Some(i) = line.strip_prefix("CONFIRMED ") {
                confirmed.insert(i.parse::<usize>().unwrap());
            }
        }
        child.wait().unwrap();

        let store = StoreQueueStore::open(dir.path(), backend).unwrap();
        let queues = store.load().unwrap();
        let inbox = Topology::default().inbox_queue(CRASH_GLN);
        let stored: std::collections::BTreeMap<usize, _> = queues[&inbox]
            .iter()
            .map(|m| (m.message.message_id[14..].parse::<usize>().unwrap(), m))
            .collect();
        let lost: Vec<_> = confirmed
            .iter()
            .filter(|i| !stored.contains_key(i))
            .collect();
        assert!(
            lost.is_empty(),
            "round {round}: {} confirmed messages lost after kill -9: {lost:?}",
            lost.len()
        );
        for (i, m) in &stored {
            assert_eq!(m.message, msg(CRASH_GLN, *i), "message {i} corrupted");
        }
        // Re-publishes in round 2 restart at index 0 under new seqs: ids repeat, that is fine here.
    }
}

#[test]
fn sigkill_loses_no_confirmed_append_sled() {
    crash(Backend::Sled);
}

#[test]
fn sigkill_loses_no_confirmed_append_fjall() {
    crash(Backend::Fjall);
}
