//! The subscriber on both buses: the embedded bus and RabbitMQ (127.0.0.1:5672 or SAMMEN_TEST_AMQP_URL;
//! these tests fail loudly without a broker). Files hold identical bytes; redeliveries and resends are
//! not rewritten and are counted; unsafe ids are dead-lettered, never written; a subscriber SIGKILLed
//! between its durable write and its ack loses nothing and the redelivery is deduped; receipts arrive;
//! the AMQP subscriber survives its connection being closed by the server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use lapin::options::{BasicGetOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use sammen_bus::contract::{random_gln, unique_ns};
use sammen_bus::receipts::{receipts_queue, DeliveryReceipt, ReceiptOutcome};
use sammen_bus::{
    wait_connected, AmqpBus, AmqpConfig, Bus, BusMessage, EmbeddedBus, Source, Topology,
};
use sammen_bus_store::{Backend, StoreQueueStore};
use sammen_model::Family;
use sammen_subscriber::{
    AmqpReceiptSink, ChannelReceiptSink, Config, ReceiptSink, Stats, Subscriber,
};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn amqp_url() -> String {
    std::env::var("SAMMEN_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A UUID-shaped id from a number.
fn uuid(n: u64) -> String {
    format!("a5e5b880-c087-4055-b9ec-{n:012x}")
}

fn message(receiver: &str, id: &str, body: &[u8]) -> BusMessage {
    BusMessage {
        message_id: id.into(),
        receiver_gln: receiver.into(),
        sender_gln: "5790000121441".into(),
        family: Family::HospitalNotification,
        event: "admit-inpatient".into(),
        content_type: "application/fhir+xml".into(),
        timestamp: 1_700_000_000,
        sha256: "0".repeat(64),
        resend: false,
        body: Bytes::copy_from_slice(body),
    }
}

fn body(n: u64) -> Vec<u8> {
    // Not only ASCII: bytes must survive exactly.
    let mut b =
        format!("<Bundle xmlns=\"http://hl7.org/fhir\"><id value=\"{n}\"/>æøå</Bundle>\r\n")
            .into_bytes();
    b.extend([0xEF, 0xBB, 0xBF, 0x00, 0xFF]);
    b
}

struct Fx {
    bus: Arc<dyn Bus>,
    topo: Topology,
    amqp: bool,
    receivers: Vec<String>,
    conn_name: String,
}

impl Fx {
    async fn embedded() -> Fx {
        let topo = Topology::namespaced(&unique_ns());
        Fx {
            bus: Arc::new(EmbeddedBus::in_memory(topo.clone())),
            topo,
            amqp: false,
            receivers: Vec::new(),
            conn_name: String::new(),
        }
    }

    async fn amqp() -> Fx {
        let topo = Topology::namespaced(&unique_ns());
        let bus = start_amqp(&topo).await;
        Fx {
            conn_name: bus.1,
            bus: Arc::new(bus.0),
            topo,
            amqp: true,
            receivers: Vec::new(),
        }
    }

    async fn receiver(&mut self) -> String {
        let gln = random_gln();
        self.bus.ensure_receiver(&gln).await.unwrap();
        self.receivers.push(gln.clone());
        gln
    }

    async fn publish(&self, m: &BusMessage) {
        assert!(self.bus.publish_confirmed(m).await.unwrap().is_confirmed());
    }

    /// Receipts to this fixture's RabbitMQ receipts queue.
    fn receipts(&self) -> Arc<dyn ReceiptSink> {
        assert!(self.amqp);
        Arc::new(AmqpReceiptSink::new(amqp_url(), receipts_queue(&self.topo)))
    }
}

async fn start_amqp(topo: &Topology) -> (AmqpBus, String) {
    let mut c = AmqpConfig::new(amqp_url());
    c.topology = topo.clone();
    c.connection_name = format!("sammen-sub-test-{}", unique_ns());
    let name = c.connection_name.clone();
    let bus = AmqpBus::start(c);
    if let Err(e) = wait_connected(&bus, Duration::from_secs(15)).await {
        panic!(
            "RabbitMQ is not reachable at {} ({e}). These tests need a real broker: \
             start it with `rabbitmq-server -detached && rabbitmqctl await_startup`.",
            amqp_url()
        );
    }
    (bus, name)
}

impl Drop for Fx {
    fn drop(&mut self) {
        if !self.amqp {
            return;
        }
        let topo = self.topo.clone();
        let receivers = self.receivers.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let Ok(conn) =
                    lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
                        .await
                else {
                    return;
                };
                let Ok(ch) = conn.create_channel().await else {
                    return;
                };
                let mut queues: Vec<String> =
                    receivers.iter().map(|g| topo.inbox_queue(g)).collect();
                queues.push(topo.dead_queue.clone());
                queues.push(receipts_queue(&topo));
                for q in queues {
                    let _ = ch
                        .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                        .await;
                }
                for e in [&topo.route_exchange, &topo.dead_exchange] {
                    let _ = ch
                        .exchange_delete(e.as_str().into(), ExchangeDeleteOptions::default())
                        .await;
                }
                let _ = conn.close(200, "cleanup".into()).await;
            });
        })
        .join();
    }
}

fn config(gln: &str, dir: &Path) -> Config {
    let mut c = Config::new(gln, dir);
    c.write_retry_pause = Duration::from_millis(50);
    c
}

/// Run `sub` in the background until `done(stats)` holds (or 20 s pass), then stop it.
async fn run_until(
    sub: Arc<Subscriber>,
    bus: Arc<dyn Bus>,
    done: impl Fn(&Stats) -> bool,
) -> Stats {
    let stop = CancellationToken::new();
    let task = {
        let (sub, bus, stop) = (sub.clone(), bus.clone(), stop.clone());
        tokio::spawn(async move { sub.run(&*bus, stop).await })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done(&sub.stats()) {
        assert!(
            Instant::now() < deadline,
            "subscriber stuck at {:?}",
            sub.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    task.await.unwrap().unwrap()
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

async fn amqp_receipts(topo: &Topology) -> Vec<DeliveryReceipt> {
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut out = Vec::new();
    let q = receipts_queue(topo);
    while let Some(m) = ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        out.push(DeliveryReceipt::from_json(&m.delivery.data).unwrap());
    }
    let _ = conn.close(200, "done".into()).await;
    out
}

// ---- scenarios ----

async fn writes_identical_bytes_and_drops_duplicates(mut f: Fx) {
    let gln = f.receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let sink: Arc<dyn ReceiptSink> = if f.amqp {
        f.receipts()
    } else {
        Arc::new(ChannelReceiptSink(tx))
    };
    let sub = Arc::new(
        Subscriber::new(config(&gln, dir.path()))
            .unwrap()
            .with_receipts(sink),
    );
    for n in 0..5 {
        f.publish(&message(&gln, &uuid(n), &body(n))).await;
    }
    let s = run_until(sub.clone(), f.bus.clone(), |s| s.written == 5).await;
    assert_eq!((s.written, s.duplicates, s.refused), (5, 0, 0));
    for n in 0..5 {
        let got = std::fs::read(dir.path().join(format!("{}.xml", uuid(n)))).unwrap();
        assert_eq!(got, body(n), "bytes differ for message {n}");
    }
    let before = std::fs::metadata(dir.path().join(format!("{}.xml", uuid(1)))).unwrap();

    // A redelivery (same id, same bytes), a resend, and a conflicting body under a known id.
    f.publish(&message(&gln, &uuid(1), &body(1))).await;
    let mut resend = message(&gln, &uuid(2), &body(2));
    resend.resend = true;
    f.publish(&resend).await;
    f.publish(&message(&gln, &uuid(3), b"<other/>")).await;
    let s = run_until(sub.clone(), f.bus.clone(), |s| s.duplicates == 3).await;
    assert_eq!((s.written, s.duplicates, s.conflicts), (5, 3, 1));
    let after = std::fs::metadata(dir.path().join(format!("{}.xml", uuid(1)))).unwrap();
    assert_eq!(
        before.modified().unwrap(),
        after.modified().unwrap(),
        "rewritten"
    );
    assert_eq!(
        std::fs::read(dir.path().join(format!("{}.xml", uuid(3)))).unwrap(),
        body(3)
    );
    assert_eq!(files(dir.path()).len(), 5, "no temporary files left");
    // Nothing left in the inbox: everything was acked.
    let mut s2 = f
        .bus
        .subscribe(Source::Inbox(gln.clone()), 5)
        .await
        .unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(400), s2.next())
        .await
        .ok()
        .flatten()
        .is_none());

    // One receipt per handled delivery: 5 written, 3 duplicates.
    let receipts = if f.amqp {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = amqp_receipts(&f.topo).await;
            if r.len() >= 8 || Instant::now() > deadline {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    } else {
        let mut v = Vec::new();
        while let Ok(r) = rx.try_recv() {
            v.push(r);
        }
        v
    };
    assert_eq!(receipts.len(), 8);
    let dups = receipts
        .iter()
        .filter(|r| r.outcome == ReceiptOutcome::Duplicate)
        .count();
    assert_eq!(dups, 3);
    assert!(receipts.iter().all(|r| r.receiver_gln == gln));
}

async fn unsafe_ids_are_dead_lettered_not_written(mut f: Fx) {
    let gln = f.receiver().await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("out");
    let sub = Arc::new(Subscriber::new(config(&gln, &dir)).unwrap());
    let bad = ["../escape", ".hidden", "a/b", "/etc/x", "..", "x y", "æ"];
    for id in bad {
        f.publish(&message(&gln, id, b"<evil/>")).await;
    }
    f.publish(&message(&gln, &uuid(42), &body(42))).await;
    let s = run_until(sub, f.bus.clone(), |s| s.refused == 7 && s.written == 1).await;
    assert_eq!((s.refused, s.written, s.duplicates), (7, 1, 0));
    assert_eq!(files(&dir), vec![format!("{}.xml", uuid(42))]);
    assert_eq!(
        files(root.path()),
        vec!["out".to_string()],
        "wrote outside DIR"
    );
    // They are in the dead-letter queue.
    let mut dead = f.bus.subscribe(Source::DeadLetters, 20).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..bad.len() {
        let d = tokio::time::timeout(Duration::from_secs(10), dead.next())
            .await
            .unwrap()
            .unwrap();
        ids.push(d.message.message_id.clone());
        d.ack().await.unwrap();
    }
    ids.sort();
    let mut want: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(ids, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_writes_identical_bytes_and_drops_duplicates() {
    writes_identical_bytes_and_drops_duplicates(Fx::embedded().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_writes_identical_bytes_and_drops_duplicates() {
    writes_identical_bytes_and_drops_duplicates(Fx::amqp().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_unsafe_ids_are_dead_lettered_not_written() {
    unsafe_ids_are_dead_lettered_not_written(Fx::embedded().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_unsafe_ids_are_dead_lettered_not_written() {
    unsafe_ids_are_dead_lettered_not_written(Fx::amqp().await).await;
}

#[test]
fn refuses_a_bad_receiver() {
    let d = tempfile::tempdir().unwrap();
    assert!(Subscriber::new(config("123", d.path())).is_err());
}

// ---- SIGKILL between durable write and ack ----

const CHILD_ENV: &str = "SAMMEN_SUBSCRIBER_KILL_CHILD";
const N: u64 = 20;

/// Child half (no-op unless `CHILD_ENV` is set): subscribe; when the first batch is durable but not yet
/// acked, print its ids and hang there until the parent's SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.splitn(4, '|').collect();
    let (kind, where_, gln, out) = (parts[0], parts[1], parts[2], parts[3]);
    let bus: Arc<dyn Bus> = if kind == "amqp" {
        Arc::new(start_amqp(&Topology::namespaced(where_)).await.0)
    } else {
        let store = StoreQueueStore::open(where_, Backend::Fjall).unwrap();
        Arc::new(EmbeddedBus::open(Topology::namespaced("kill"), Arc::new(store)).unwrap())
    };
    let mut c = config(gln, Path::new(out));
    c.prefetch = 5;
    c.before_ack = Some(Arc::new(|ids: &[String]| {
        let mut o = std::io::stdout();
        writeln!(o, "DURABLE {}", ids.join(",")).unwrap();
        o.flush().unwrap();
        std::thread::sleep(Duration::from_secs(3600));
    }));
    let sub = Subscriber::new(c).unwrap();
    let _ = sub.run(&*bus, CancellationToken::new()).await;
}

/// Start the child, wait for its first durable-but-unacked batch, SIGKILL it; returns that batch's ids.
fn kill_between_write_and_ack(kind: &str, where_: &str, gln: &str, out: &Path) -> Vec<String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "kill_child", "--nocapture", "--test-threads=1"])
        .env(
            CHILD_ENV,
            format!("{kind}|{where_}|{gln}|{}", out.display()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ids = loop {
        let line = lines.next().expect("child exited early").unwrap();
        // libtest may print "test kill_child ... " on the same line first.
        if let Some(at) = line.find("DURABLE ") {
            let ids = &line[at + "DURABLE ".len()..];
            break ids.split(',').map(str::to_string).collect::<Vec<_>>();
        }
    };
    child.kill().unwrap(); // SIGKILL, between the durable write and the ack
    child.wait().unwrap();
    ids
}

async fn check_after_kill(f: &Fx, gln: &str, out: &Path, durable: &[String]) {
    assert!(!durable.is_empty());
    for id in durable {
        let n = u64::from_str_radix(&id[24..], 16).unwrap();
        assert_eq!(
            std::fs::read(out.join(format!("{id}.xml"))).unwrap(),
            body(n),
            "durable file {id} missing or different after SIGKILL"
        );
    }
    let sub = Arc::new(Subscriber::new(config(gln, out)).unwrap());
    let s = run_until(sub, f.bus.clone(), |s| s.written + s.duplicates == N).await;
    assert_eq!(
        s.duplicates,
        durable.len() as u64,
        "the redelivered batch must be deduped"
    );
    assert_eq!(s.written, N - durable.len() as u64);
    assert_eq!(files(out).len(), N as usize);
    for n in 0..N {
        assert_eq!(
            std::fs::read(out.join(format!("{}.xml", uuid(n)))).unwrap(),
            body(n)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_sigkill_between_write_and_ack_is_deduped() {
    let ns = unique_ns();
    let topo = Topology::namespaced(&ns);
    let (bus, name) = start_amqp(&topo).await;
    let mut f = Fx {
        bus: Arc::new(bus),
        topo,
        amqp: true,
        receivers: Vec::new(),
        conn_name: name,
    };
    let gln = f.receiver().await;
    for n in 0..N {
        f.publish(&message(&gln, &uuid(n), &body(n))).await;
    }
    let out = tempfile::tempdir().unwrap();
    let durable = kill_between_write_and_ack("amqp", &ns, &gln, out.path());
    check_after_kill(&f, &gln, out.path(), &durable).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_sigkill_between_write_and_ack_is_deduped() {
    let data = tempfile::tempdir().unwrap();
    let topo = Topology::namespaced("kill");
    let gln = random_gln();
    {
        let store = StoreQueueStore::open(data.path(), Backend::Fjall).unwrap();
        let bus = EmbeddedBus::open(topo.clone(), Arc::new(store)).unwrap();
        bus.ensure_receiver(&gln).await.unwrap();
        for n in 0..N {
            assert!(bus
                .publish_confirmed(&message(&gln, &uuid(n), &body(n)))
                .await
                .unwrap()
                .is_confirmed());
        }
    }
    let out = tempfile::tempdir().unwrap();
    let durable = kill_between_write_and_ack(
        "embedded",
        &data.path().display().to_string(),
        &gln,
        out.path(),
    );
    // The child's unacked deliveries are still in the durable embedded queue.
    let store = StoreQueueStore::open(data.path(), Backend::Fjall).unwrap();
    let f = Fx {
        bus: Arc::new(EmbeddedBus::open(topo.clone(), Arc::new(store)).unwrap()),
        topo,
        amqp: false,
        receivers: Vec::new(),
        conn_name: String::new(),
    };
    check_after_kill(&f, &gln, out.path(), &durable).await;
}

// ---- reconnect ----

/// Close, from the server side, every connection whose client name contains `name`.
fn close_connections(name: &str) -> usize {
    let out = Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "pid", "client_properties"])
        .output()
        .expect("rabbitmqctl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let pids: Vec<String> = text
        .lines()
        .filter(|l| l.contains(name))
        .filter_map(|l| l.split('\t').next().map(str::to_string))
        .collect();
    for pid in &pids {
        let st = Command::new("rabbitmqctl")
            .args(["-q", "close_connection", pid, "sammen test: forced close"])
            .status()
            .unwrap();
        assert!(st.success());
    }
    pids.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_subscriber_survives_a_lost_connection() {
    let mut f = Fx::amqp().await;
    let gln = f.receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let sub = Arc::new(
        Subscriber::new(config(&gln, dir.path()))
            .unwrap()
            .with_receipts(f.receipts()),
    );
    let stop = CancellationToken::new();
    let task = {
        let (sub, bus, stop) = (sub.clone(), f.bus.clone(), stop.clone());
        tokio::spawn(async move { sub.run(&*bus, stop).await })
    };
    let wait = |want: u64| {
        let sub = sub.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while sub.stats().written < want {
                assert!(Instant::now() < deadline, "stuck at {:?}", sub.stats());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    for n in 0..5 {
        f.publish(&message(&gln, &uuid(n), &body(n))).await;
    }
    wait(5).await;
    // Kill every connection of this test: the bus's consumer and publisher, and the receipts link.
    let name = f.conn_name.clone();
    let closed = tokio::task::spawn_blocking(move || {
        close_connections(&name) + close_connections("sammen-subscriber-receipts")
    })
    .await
    .unwrap();
    assert!(closed >= 1, "no connection closed");
    for n in 5..10 {
        // The publisher reconnects by itself; retry while it does.
        let m = message(&gln, &uuid(n), &body(n));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match f.bus.publish_confirmed(&m).await {
                Ok(o) if o.is_confirmed() => break,
                _ if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => panic!("publish after reconnect failed: {other:?}"),
            }
        }
    }
    wait(10).await;
    stop.cancel();
    let s = task.await.unwrap().unwrap();
    assert_eq!(s.written, 10);
    assert_eq!(files(dir.path()).len(), 10);
}
