//! `sammen bench`: load generator against a running broker (or one it spawns).
//!
//! Posts the conformance suite's valid FHIR/OIOXML examples with fresh message and envelope ids from N
//! keep-alive clients (closed loop, or open loop at `--rate`), and prints accepted msgs/s, accept latency
//! percentiles, accept → subscriber latency (in-process subscriber on RabbitMQ with `--amqp-url`), the
//! broker's CPU and peak memory, and with `--baseline` raw lapin publishing of the same payloads in the same
//! run with the ratio. Absolute rates on a shared machine swing; the ratio is the figure to compare.

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sammen_bus::{AmqpBus, AmqpConfig, Bus, Source, Topology};
use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Store backend of a spawned broker.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum StoreArg {
    Fjall,
    Sled,
}

/// `sammen bench` flags.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Broker base URL: http://host:port, or https://host:port with --cert/--key/--ca (mutual TLS).
    /// Ignored with --spawn.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Concurrent HTTP clients (one keep-alive connection each).
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Messages to post (default 10000 unless --duration is given).
    #[arg(long, conflicts_with = "duration")]
    messages: Option<u64>,
    /// Post for this long instead (e.g. 30s, 2m).
    #[arg(long, value_parser = sammen_config::duration::parse)]
    duration: Option<Duration>,
    /// Open loop: offer this many msgs/s in total; latency counts from each message's scheduled time.
    #[arg(long)]
    rate: Option<f64>,
    /// Only examples up to this size, padded to exactly this size with an XML comment (e.g. 4096).
    #[arg(long)]
    size: Option<usize>,
    /// Conformance suite (manifests *.toml; valid cases with a family are used).
    #[arg(long, default_value = "conformance")]
    examples: PathBuf,
    /// RabbitMQ URL: run an in-process subscriber on the receivers' inboxes (and spawn the broker on it).
    #[arg(long)]
    amqp_url: Option<String>,
    /// Topology namespace of the broker under test (bus.namespace); --spawn picks a fresh one.
    #[arg(long, default_value = "")]
    namespace: String,
    /// Receiver GLNs whose inboxes the subscriber reads (default: the conformance examples' receivers).
    #[arg(long = "receiver")]
    receivers: Vec<String>,
    /// How long to wait for the subscriber to see every accepted message.
    #[arg(long, default_value = "120s", value_parser = sammen_config::duration::parse)]
    drain_timeout: Duration,
    /// Broker process id: report its CPU and peak memory.
    #[arg(long, conflicts_with = "spawn")]
    broker_pid: Option<u32>,
    /// Start `sammen serve` as a child on a temporary data dir (and stop it afterwards).
    #[arg(long)]
    spawn: bool,
    /// Store backend of the spawned broker.
    #[arg(long, value_enum, default_value_t = StoreArg::Fjall)]
    store: StoreArg,
    /// Parent directory for the spawned broker's temporary data dir (default: the system temp dir).
    #[arg(long)]
    spawn_dir: Option<PathBuf>,
    /// Also publish the same payloads with raw lapin (256 confirms in flight, quorum queue) and print ratios.
    #[arg(long)]
    baseline: bool,
    /// Messages in the baseline run (default: as many as were accepted, 10000..=50000).
    #[arg(long)]
    baseline_messages: Option<usize>,
    /// Only examples sent by these GLNs (with mutual TLS: the organisations the certificate may send as).
    #[arg(long = "sender")]
    senders: Vec<String>,
    /// Client certificate (PEM) for HTTPS with mutual TLS.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// CA bundle (PEM) the broker's certificate must chain to.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Write the message id of every 202 here, one per line (the scale-out check compares them with
    /// what subscribers received).
    #[arg(long)]
    accepted_ids: Option<PathBuf>,
    /// Audit cost on the real accept path: spawn two brokers, audit log on and off, and post --messages
    /// to each in this many alternating rounds; prints broker CPU per accepted message and the audit's share.
    /// With --rate each round posts --messages open loop at that rate (per broker), the load of a broker that
    /// is not saturated, as in production.
    #[arg(long, value_name = "ROUNDS", requires = "spawn", conflicts_with_all = ["duration", "baseline"])]
    audit_share: Option<u32>,
    /// With --audit-share: load both brokers at the same time in each round (--clients each) instead of
    /// one after the other, so a slow spell of the shared machine (disk, neighbours) hits both alike.
    #[arg(long, requires = "audit_share")]
    together: bool,
    /// Write each accepted message's send time (ms since the start) and accept latency (µs) here, one
    /// pair per line, to see whether slow answers cluster (stalls) or spread.
    #[arg(long)]
    latency_log: Option<PathBuf>,
}

const DEFAULT_AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const WINDOW: usize = 256;

pub fn main(args: BenchArgs) -> std::process::ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sammen bench: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sammen bench: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Messages with fresh ids.

enum Part {
    Lit(String),
    MessageId,
    EnvelopeId,
}

/// An example split at every occurrence of its message and envelope id.
struct Template {
    name: String,
    parts: Vec<Part>,
    message_id: String,
    envelope_id: Option<String>,
}

/// A fresh id of the same shape: UUID-shaped → random v4 UUID; otherwise each letter/digit replaced by a
/// random one of its class (keeps length and charset rules of OIOXML identifiers).
fn fresh_like(orig: &str, rng: &mut fastrand::Rng) -> String {
    let b = orig.as_bytes();
    let uuid_shaped = b.len() == 36 && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-');
    if uuid_shaped {
        let hex = |rng: &mut fastrand::Rng, n: usize| -> String {
            (0..n)
                .map(|_| char::from(b"0123456789abcdef"[rng.usize(..16)]))
                .collect()
        };
        let variant = char::from(b"89ab"[rng.usize(..4)]);
        return format!(
            "{}-{}-4{}-{variant}{}-{}",
            hex(rng, 8),
            hex(rng, 4),
            hex(rng, 3),
            hex(rng, 3),
            hex(rng, 12)
        );
    }
    orig.chars()
        .map(|c| {
            if c.is_ascii_digit() {
                rng.digit(10)
            } else if c.is_ascii_lowercase() {
                rng.lowercase()
            } else if c.is_ascii_uppercase() {
                rng.uppercase()
            } else {
                c
            }
        })
        .collect()
}

/// Split `text` at occurrences of `id` that stand alone (not inside a longer word or id).
fn split_at_id(parts: Vec<Part>, id: &str, tag: fn() -> Part) -> Vec<Part> {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
    let mut out = Vec::new();
    for p in parts {
        let Part::Lit(s) = p else {
            out.push(p);
            continue;
        };
        let bytes = s.as_bytes();
        let mut last = 0;
        for (at, _) in s.match_indices(id) {
            let before_ok = at == 0 || !word(bytes[at - 1]);
            let end = at + id.len();
            let after_ok = end >= bytes.len() || !word(bytes[end]);
            if before_ok && after_ok {
                out.push(Part::Lit(s[last..at].to_string()));
                out.push(tag());
                last = end;
            }
        }
        out.push(Part::Lit(s[last..].to_string()));
    }
    out
}

impl Template {
    fn new(name: String, text: &str, message_id: &str, envelope_id: Option<&str>) -> Template {
        let mut parts = split_at_id(vec![Part::Lit(text.to_string())], message_id, || {
            Part::MessageId
        });
        let envelope_id = envelope_id.filter(|e| *e != message_id);
        if let Some(e) = envelope_id {
            parts = split_at_id(parts, e, || Part::EnvelopeId);
        }
        Template {
            name,
            parts,
            message_id: message_id.to_string(),
            envelope_id: envelope_id.map(str::to_string),
        }
    }

    /// (message id, body) with fresh ids.
    fn make(&self, rng: &mut fastrand::Rng, pad_to: Option<usize>) -> (String, Vec<u8>) {
        let mid = fresh_like(&self.message_id, rng);
        let eid = self.envelope_id.as_deref().map(|e| fresh_like(e, rng));
        let mut s = String::with_capacity(pad_to.unwrap_or(4096));
        for p in &self.parts {
            match p {
                Part::Lit(l) => s.push_str(l),
                Part::MessageId => s.push_str(&mid),
                Part::EnvelopeId => s.push_str(eid.as_deref().unwrap_or(&mid)),
            }
        }
        if let Some(n) = pad_to {
            // A comment after the root element: same message, exact size.
            let t = s.trim_end().len();
            s.truncate(t);
            if n >= s.len() + 8 {
                s.push_str("\n<!--");
                s.push_str(&"x".repeat(n - s.len() - 3));
                s.push_str("-->");
            }
        }
        (mid, s.into_bytes())
    }
}

/// Valid examples whose ids can be rewritten (checked by validating one fresh copy of each).
fn load_templates(
    dir: &Path,
    size: Option<usize>,
    senders: &[String],
) -> Result<(Vec<Template>, Vec<String>)> {
    let cases = sammen_adapters::conformance::load(dir)
        .with_context(|| format!("loading the conformance suite in {}", dir.display()))?;
    let opts = sammen_adapters::Options::default();
    let mut rng = fastrand::Rng::new();
    let (mut out, mut skipped) = (Vec::new(), Vec::new());
    let mut files: Vec<PathBuf> = cases
        .into_iter()
        .filter(|(_, c)| c.valid && c.family.is_some())
        .map(|(_, c)| c.file)
        .collect();
    files.sort();
    files.dedup();
    for f in files {
        let name = f.display().to_string();
        let Ok(text) = std::fs::read_to_string(dir.join(&f)) else {
            skipped.push(format!("{name}: unreadable or not UTF-8"));
            continue;
        };
        if size.is_some_and(|n| text.trim_end().len() + 8 > n) {
            continue;
        }
        let r = sammen_adapters::validate(text.as_bytes(), &opts);
        if !senders.is_empty() && !r.sender.gln.as_ref().is_some_and(|g| senders.contains(g)) {
            continue;
        }
        let Some(mid) = r.message_id.clone() else {
            skipped.push(format!("{name}: no message id"));
            continue;
        };
        let t = Template::new(name.clone(), &text, &mid, r.envelope_id.as_deref());
        let (fresh_mid, body) = t.make(&mut rng, size);
        let r2 = sammen_adapters::validate(&body, &opts);
        let eid_fresh = match (&r.envelope_id, &r2.envelope_id) {
            (Some(a), Some(b)) => a != b || a == &mid,
            (None, None) => true,
            _ => false,
        };
        if r2.is_valid() && r2.message_id.as_deref() == Some(fresh_mid.as_str()) && eid_fresh {
            out.push(t);
        } else {
            skipped.push(format!(
                "{name}: not valid with fresh ids (ids inside an encoded payload?)"
            ));
        }
    }
    if out.is_empty() {
        bail!(
            "no usable example in {}{}",
            dir.display(),
            size.map(|n| format!(" of at most {n} bytes"))
                .unwrap_or_default()
        );
    }
    Ok((out, skipped))
}

// ---------------------------------------------------------------------------------------------------
// HTTP/1.1 client: one keep-alive connection per client. The stream is boxed so an HTTPS connector
// (rustls with client certificate) only adds a `Connector` variant.

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

#[derive(Clone)]
enum Connector {
    Plain,
    /// HTTPS with a client certificate (mutual TLS), server verified against --ca.
    Tls(
        tokio_rustls::TlsConnector,
        sammen_identity::rustls::pki_types::ServerName<'static>,
    ),
}

impl Connector {
    async fn connect(&self, authority: &str) -> std::io::Result<Box<dyn Io>> {
        let s = TcpStream::connect(authority).await?;
        s.set_nodelay(true)?;
        match self {
            Connector::Plain => Ok(Box::new(s)),
            Connector::Tls(tls, name) => Ok(Box::new(tls.connect(name.clone(), s).await?)),
        }
    }
}

struct Target {
    connector: Connector,
    authority: String,
}

/// `http://host:port[/...]` → (connector, "host:port").
fn target(url: &str, a: &BenchArgs) -> Result<Target> {
    let (scheme, rest) = url
        .split_once("://")
        .with_context(|| format!("--url {url:?}: expected http://host:port"))?;
    let authority = rest.split('/').next().unwrap_or_default().to_string();
    if authority.is_empty() {
        bail!("--url {url:?}: no host");
    }
    let connector = match scheme {
        "http" => {
            if a.cert.is_some() || a.ca.is_some() {
                bail!("--cert/--key/--ca need an https:// URL");
            }
            Connector::Plain
        }
        "https" => {
            let (Some(cert), Some(key), Some(ca)) = (&a.cert, &a.key, &a.ca) else {
                bail!("https:// needs --cert, --key and --ca");
            };
            let cfg =
                sammen_identity::client_config_from_files(cert, key, std::slice::from_ref(ca))
                    .context("loading the client certificate, key and CA")?;
            let host = authority
                .rsplit_once(':')
                .map_or(authority.as_str(), |(h, _)| h)
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let name = sammen_identity::rustls::pki_types::ServerName::try_from(host)
                .context("--url: host is not a valid TLS server name")?;
            Connector::Tls(tokio_rustls::TlsConnector::from(cfg), name)
        }
        _ => bail!("--url {url:?}: scheme must be http or https"),
    };
    let authority = if authority.contains(':') {
        authority
    } else {
        format!("{authority}:{}", if scheme == "https" { 443 } else { 80 })
    };
    Ok(Target {
        connector,
        authority,
    })
}

struct Http {
    target: Arc<Target>,
    conn: Option<BufReader<Box<dyn Io>>>,
}

impl Http {
    fn new(target: Arc<Target>) -> Self {
        Http { target, conn: None }
    }

    /// (status, body); drops the connection on any error so the next call reconnects.
    async fn post(&mut self, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        let r = self.try_post(path, body).await;
        if r.is_err() {
            self.conn = None;
        }
        r
    }

    async fn try_post(&mut self, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        let c = match &mut self.conn {
            Some(c) => c,
            None => {
                let s = tokio::time::timeout(
                    Duration::from_secs(5),
                    self.target.connector.connect(&self.target.authority),
                )
                .await
                .map_err(|_| std::io::Error::other("connect timeout"))??;
                self.conn.insert(BufReader::new(s))
            }
        };
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/xml\r\ncontent-length: {}\r\n\r\n",
            self.target.authority,
            body.len()
        );
        let fut = async {
            c.get_mut().write_all(head.as_bytes()).await?;
            c.get_mut().write_all(body).await?;
            c.get_mut().flush().await?;
            let mut line = String::new();
            c.read_line(&mut line).await?;
            let code: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
            let mut len = 0usize;
            let mut close = false;
            loop {
                let mut h = String::new();
                if c.read_line(&mut h).await? == 0 {
                    return Err(std::io::Error::other("eof in headers"));
                }
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    let v = v.trim();
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.parse().map_err(std::io::Error::other)?;
                    } else if k.eq_ignore_ascii_case("transfer-encoding") {
                        return Err(std::io::Error::other("chunked responses are not supported"));
                    } else if k.eq_ignore_ascii_case("connection")
                        && v.eq_ignore_ascii_case("close")
                    {
                        close = true;
                    }
                }
            }
            let mut buf = vec![0; len.min(1 << 20)];
            c.read_exact(&mut buf).await?;
            Ok((code, buf, close))
        };
        let (code, buf, close) = tokio::time::timeout(Duration::from_secs(60), fut)
            .await
            .map_err(|_| std::io::Error::other("response timeout"))??;
        if close {
            self.conn = None;
        }
        Ok((code, buf))
    }
}

// ---------------------------------------------------------------------------------------------------
// Broker process: spawn, CPU and memory from /proc.

struct Spawned {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl Spawned {
    fn stop(mut self) {
        // SIGTERM for a graceful stop; std has only SIGKILL.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_broker(a: &BenchArgs, audit: bool) -> Result<(Spawned, String)> {
    let dir = match &a.spawn_dir {
        Some(p) => tempfile::Builder::new()
            .prefix("sammen-bench")
            .tempdir_in(p),
        None => tempfile::Builder::new().prefix("sammen-bench").tempdir(),
    }
    .context("creating the temporary data dir")?;
    let store = match a.store {
        StoreArg::Fjall => "fjall",
        StoreArg::Sled => "sled",
    };
    let mut cfg = format!(
        "data_dir = {:?}\n[store]\nbackend = \"{store}\"\n[limits]\noutbox_max_depth = 100000000\n",
        dir.path().join("data").display().to_string()
    );
    if !audit {
        cfg.push_str("[audit]\nenabled = false\n");
    }
    if let Some(url) = &a.amqp_url {
        cfg.push_str(&format!(
            "[bus]\nkind = \"amqp\"\nurl = {url:?}\nnamespace = {:?}\nnode = {SPAWNED_NODE:?}\n",
            a.namespace
        ));
    }
    let cfg_path = dir.path().join("sammen.toml");
    std::fs::write(&cfg_path, cfg).context("writing the broker config")?;
    let log = dir.path().join("serve.log");
    let exe = std::env::current_exe().context("locating the sammen binary")?;
    let mut child = std::process::Command::new(exe)
        .args(["serve", "--config"])
        .arg(&cfg_path)
        .args(["--listen", "127.0.0.1:0"])
        .env("SAMMEN_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).context("creating the broker log")?)
        .spawn()
        .context("starting sammen serve")?;
    // serve may print a few lines (e.g. a generated dev PKI) before the one with the address.
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let mut r = std::io::BufReader::new(out);
        for _ in 0..20 {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 || line.contains("listening on") {
                break;
            }
        }
    }
    let spawned = Spawned {
        child,
        _dir: dir,
        log,
    };
    let Some(url) = line
        .trim()
        .strip_prefix("sammen: listening on ")
        .map(str::to_string)
    else {
        let text = std::fs::read_to_string(&spawned.log).unwrap_or_default();
        spawned.stop();
        bail!("sammen serve did not start: {line:?}\n{text}");
    };
    Ok((spawned, url))
}

/// Clock ticks per second of /proc/<pid>/stat (USER_HZ: 100 on every Linux architecture we run on).
const CLK_TCK: f64 = 100.0;

/// utime + stime of `pid`, in seconds.
fn cpu_secs(pid: u32) -> Option<f64> {
    stat_cpu_secs(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// User + system CPU seconds of a `/proc/.../stat` line.
fn stat_cpu_secs(s: &str) -> Option<f64> {
    // Fields after the command name, which may contain spaces, start after the last ')'.
    let f: Vec<&str> = s.get(s.rfind(')')? + 2..)?.split_whitespace().collect();
    // utime is field 14 overall, i.e. index 11 after pid and comm.
    let ut: f64 = f.get(11)?.parse().ok()?;
    let st: f64 = f.get(12)?.parse().ok()?;
    Some((ut + st) / CLK_TCK)
}

/// Busy CPU seconds of the whole machine (every process: broker, RabbitMQ, this load generator, anything
/// else), from the first line of /proc/stat: user + nice + system + irq + softirq (not idle, iowait or
/// steal). Why: on a machine that the broker, RabbitMQ and the load generator share, the end-to-end rate
/// is bounded by the CPU all of them spend per message, which no per-process figure shows.
fn machine_busy_secs() -> Option<f64> {
    stat_busy_secs(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn stat_busy_secs(s: &str) -> Option<f64> {
    let f: Vec<f64> = s
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal ...
    let busy = f.get(..3)?.iter().sum::<f64>() + f.get(5..7)?.iter().sum::<f64>();
    Some(busy / CLK_TCK)
}

/// A `kB` field of /proc/<pid>/status (VmRSS, VmHWM), in bytes.
fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

// ---------------------------------------------------------------------------------------------------
// Subscriber: timestamps each first receipt by message id.

#[derive(Default)]
struct Received {
    at: HashMap<String, Instant>,
    duplicates: u64,
}

async fn start_subscriber(
    url: &str,
    topo: Topology,
    glns: &[String],
) -> Result<(AmqpBus, Arc<Mutex<Received>>)> {
    let mut c = AmqpConfig::new(url.to_string());
    c.topology = topo;
    c.receivers = glns.to_vec();
    c.connection_name = "sammen-bench-subscriber".into();
    let bus = AmqpBus::start(c);
    sammen_bus::wait_connected(&bus, Duration::from_secs(15))
        .await
        .context("connecting the subscriber to RabbitMQ")?;
    let seen = Arc::new(Mutex::new(Received::default()));
    for g in glns {
        bus.ensure_receiver(g).await?;
        let mut sub = bus.subscribe(Source::Inbox(g.clone()), 256).await?;
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(d) = sub.next().await {
                let now = Instant::now();
                if let Ok(mut g) = seen.lock() {
                    match g.at.entry(d.message.message_id.clone()) {
                        std::collections::hash_map::Entry::Occupied(_) => g.duplicates += 1,
                        std::collections::hash_map::Entry::Vacant(v) => {
                            v.insert(now);
                        }
                    }
                }
                let _ = d.ack().await;
            }
        });
    }
    Ok((bus, seen))
}

// ---------------------------------------------------------------------------------------------------
// The run.

#[derive(Default)]
struct ClientOut {
    /// Accept latencies (µs) of 202 answers.
    lat_us: Vec<u64>,
    /// (send time in ms since the start, latency in µs), with `--latency-log`.
    timeline: Vec<(u64, u64)>,
    /// message id → when its POST was sent (only with a subscriber).
    sent: Vec<(String, Instant)>,
    accepted: u64,
    duplicate: u64,
    busy: u64,
    other: u64,
    errors: u64,
    first_problem: Option<String>,
}

struct Load {
    templates: Arc<Vec<Template>>,
    pad_to: Option<usize>,
    next: AtomicU64,
    limit: Option<u64>,
    end: Option<Instant>,
    rate: Option<f64>,
    t0: Instant,
    track: bool,
    timeline: bool,
    answered: AtomicU64,
    stop: AtomicBool,
}

async fn client(load: Arc<Load>, target: Arc<Target>) -> ClientOut {
    let mut out = ClientOut::default();
    let mut http = Http::new(target);
    let mut rng = fastrand::Rng::new();
    loop {
        if load.stop.load(Ordering::Relaxed) {
            break;
        }
        let i = load.next.fetch_add(1, Ordering::Relaxed);
        if load.limit.is_some_and(|n| i >= n) {
            break;
        }
        let scheduled = match load.rate {
            Some(r) => {
                let at = load.t0 + Duration::from_secs_f64(i as f64 / r);
                tokio::time::sleep_until(at.into()).await;
                Some(at)
            }
            None => None,
        };
        if load.end.is_some_and(|e| Instant::now() >= e) {
            break;
        }
        let t = &load.templates[(i % load.templates.len() as u64) as usize];
        let (mid, body) = t.make(&mut rng, load.pad_to);
        let sent = Instant::now();
        let from = scheduled.unwrap_or(sent);
        let r = http.post("/v1/messages", &body).await;
        load.answered.fetch_add(1, Ordering::Relaxed);
        match r {
            Ok((202, _)) => {
                let lat = from.elapsed().as_micros() as u64;
                out.lat_us.push(lat);
                if load.timeline {
                    let at = from.saturating_duration_since(load.t0).as_millis() as u64;
                    out.timeline.push((at, lat));
                }
                out.accepted += 1;
                if load.track {
                    out.sent.push((mid, sent));
                }
            }
            Ok((200, _)) => out.duplicate += 1,
            Ok((503 | 507, _)) => out.busy += 1,
            Ok((code, b)) => {
                out.other += 1;
                if out.first_problem.is_none() {
                    let text = String::from_utf8_lossy(&b);
                    out.first_problem = Some(format!(
                        "{}: HTTP {code}: {}",
                        t.name,
                        text.chars().take(300).collect::<String>()
                    ));
                }
            }
            Err(e) => {
                out.errors += 1;
                if out.first_problem.is_none() {
                    out.first_problem = Some(format!("connection: {e}"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    out
}

/// Percentile `p` (0..=100) of sorted `v`.
fn pct(v: &[u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let i = ((p / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

async fn run(mut a: BenchArgs) -> Result<()> {
    if a.clients == 0 {
        bail!("--clients must be at least 1");
    }
    if a.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        bail!("--rate must be positive");
    }
    let (templates, skipped) = load_templates(&a.examples, a.size, &a.senders)?;
    if !skipped.is_empty() {
        // Envelopes carry the inner message base64-encoded: its ids cannot be rewritten in place.
        eprintln!(
            "using {} examples; skipped {} whose ids cannot be rewritten (SAMMEN_LOG=debug lists them)",
            templates.len(),
            skipped.len()
        );
        if std::env::var("SAMMEN_LOG").is_ok_and(|v| v.contains("debug")) {
            for s in &skipped {
                eprintln!("  skipped {s}");
            }
        }
    }
    if let Some(rounds) = a.audit_share {
        return audit_share(&a, templates, rounds).await;
    }
    let mut spawned = None;
    if a.spawn {
        if a.amqp_url.is_some() && a.namespace.is_empty() {
            a.namespace = format!("bench{}x{}", std::process::id(), fastrand::u32(..));
        }
        let (s, url) = spawn_broker(&a, true)?;
        a.url = url;
        spawned = Some(s);
    }
    let r = measure(&a, templates, spawned.as_ref().map(|s| s.child.id())).await;
    if let Some(s) = spawned {
        let log = s.log.clone();
        if r.is_err() {
            eprintln!(
                "broker log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        s.stop();
        if let Some(url) = &a.amqp_url {
            if !a.namespace.is_empty() {
                cleanup_namespace(url, &a.namespace, &receivers(&a)).await;
            }
        }
    }
    r
}

// ---------------------------------------------------------------------------------------------------
// `--audit-share`: the audit log's cost on the real accept path.

/// One spawned broker of an audit-share run and what its rounds measured.
struct ShareSide {
    name: &'static str,
    broker: Spawned,
    target: Arc<Target>,
    /// Per round: (accepted, broker CPU seconds, wall seconds).
    rounds: Vec<(u64, f64, f64)>,
    /// Per round: CPU seconds of the store engine's background threads (flushes, compactions), part
    /// of the round's CPU. Reported apart because they are the lumpy part: a compaction lands in
    /// whichever round it happens to.
    background: Vec<f64>,
}

/// Two spawned brokers, audit log on and off, same config otherwise; `rounds` alternating rounds of
/// `--messages` closed-loop posts each (the side going first alternates too), so drift of a shared machine
/// hits both alike. The broker's CPU per accepted message counts everything it does for the message:
/// TLS-less HTTP, validation, the durable accept and the relay's publish into the embedded bus (with the
/// audit on: the `received`, `accepted` and `published` leaves and amortised checkpoint signing).
/// With `--together` both sides are loaded at once in each round: the machine's slow spells then fall on
/// both, at the price of the two brokers sharing the cores (each process's CPU is still its own).
async fn audit_share(a: &BenchArgs, templates: Vec<Template>, rounds: u32) -> Result<()> {
    if a.amqp_url.is_some() {
        bail!("--audit-share runs two spawned brokers on the embedded bus; drop --amqp-url");
    }
    if rounds == 0 {
        bail!("--audit-share needs at least one round");
    }
    let n = a.messages.unwrap_or(4_000);
    let templates = Arc::new(templates);
    let mut sides = Vec::new();
    for (name, audit) in [("audit on", true), ("audit off", false)] {
        let (broker, url) = spawn_broker(a, audit)?;
        let target = Arc::new(target(&url, a)?);
        sides.push(ShareSide {
            name,
            broker,
            target,
            rounds: Vec::new(),
            background: Vec::new(),
        });
    }
    println!(
        "sammen bench --audit-share: {rounds} rounds of {n} messages per side, {} clients{}, {} examples, two spawned brokers (store {:?}, embedded bus), {}",
        a.clients,
        a.rate
            .map(|r| format!(", open loop at {r} msg/s"))
            .unwrap_or_else(|| ", closed loop".into()),
        templates.len(),
        a.store,
        if a.together { "loaded together" } else { "loaded in turn" }
    );
    let mut result = Ok(());
    'rounds: for r in 0..rounds {
        let order: [usize; 2] = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        // Per side, in `order`; in turn, a failed side ends the round (the other is not run).
        let mut measured = [None, None];
        if a.together {
            let (x, y) = tokio::join!(
                share_round(&sides[0], &templates, a, n),
                share_round(&sides[1], &templates, a, n)
            );
            measured = [Some(x), Some(y)];
        } else {
            for i in order {
                let m = share_round(&sides[i], &templates, a, n).await;
                let failed = m.is_err();
                measured[i] = Some(m);
                if failed {
                    break;
                }
            }
        }
        for i in order {
            let Some(m) = measured[i].take() else {
                continue;
            };
            match m {
                Ok((m, bg)) => {
                    sides[i].rounds.push(m);
                    sides[i].background.push(bg);
                }
                Err(e) => {
                    result = Err(e.context(format!("round {} ({})", r + 1, sides[i].name)));
                    break 'rounds;
                }
            }
        }
        let (on, off) = (&sides[0].rounds[r as usize], &sides[1].rounds[r as usize]);
        let fg = |i: usize, m| foreground_us(m, sides[i].background[r as usize]);
        // Each round's foreground share too, so runs can be pooled afterwards (README "Audit cost").
        println!(
            "round {:>2}: audit on {:>4.0} us CPU/accept ({:>5.0} accepts/s), off {:>4.0} us ({:>5.0} accepts/s): share {:>5.1}%, foreground {:>5.1}%",
            r + 1,
            per_accept_us(on),
            on.0 as f64 / on.2,
            per_accept_us(off),
            off.0 as f64 / off.2,
            (per_accept_us(on) / per_accept_us(off) - 1.0) * 100.0,
            (fg(0, on) / fg(1, off) - 1.0) * 100.0
        );
    }
    if result.is_ok() {
        let total = |s: &ShareSide| {
            s.rounds
                .iter()
                .fold((0, 0.0, 0.0), |t, m| (t.0 + m.0, t.1 + m.1, t.2 + m.2))
        };
        let (on, off) = (total(&sides[0]), total(&sides[1]));
        let mut shares: Vec<f64> = sides[0]
            .rounds
            .iter()
            .zip(&sides[1].rounds)
            .map(|(x, y)| per_accept_us(x) / per_accept_us(y) - 1.0)
            .collect();
        let (mean, half) = mean_and_ci95(&shares);
        shares.sort_by(f64::total_cmp);
        println!(
            "paired rounds: mean audit share {:.1}% +- {:.1}% (95% confidence interval of the mean over {} rounds)",
            mean * 100.0,
            half * 100.0,
            shares.len()
        );
        // The same without the engine's background threads, whose flushes and compactions land in
        // whichever round crosses a memtable or level threshold: most of the round-to-round spread.
        let fg_shares: Vec<f64> = (0..sides[0].rounds.len().min(sides[1].rounds.len()))
            .map(|r| {
                let on = foreground_us(&sides[0].rounds[r], sides[0].background[r]);
                let off = foreground_us(&sides[1].rounds[r], sides[1].background[r]);
                on / off - 1.0
            })
            .collect();
        let (fg_mean, fg_half) = mean_and_ci95(&fg_shares);
        println!(
            "paired rounds without the engine's background threads: mean audit share {:.1}% +- {:.1}%",
            fg_mean * 100.0,
            fg_half * 100.0
        );
        println!(
            "broker CPU per accepted message: audit on {:.0} us, off {:.0} us: audit share of CPU {:.1}% overall, {:.1}% median round (min {:.1}%, max {:.1}%); wall: {:.0} vs {:.0} accepts/s ({:.1}%)",
            per_accept_us(&on),
            per_accept_us(&off),
            (per_accept_us(&on) / per_accept_us(&off) - 1.0) * 100.0,
            shares[shares.len() / 2] * 100.0,
            shares[0] * 100.0,
            shares[shares.len() - 1] * 100.0,
            on.0 as f64 / on.2,
            off.0 as f64 / off.2,
            ((off.0 as f64 / off.2) / (on.0 as f64 / on.2) - 1.0) * 100.0
        );
        let bg = |s: &ShareSide, accepted: u64| {
            s.background.iter().sum::<f64>() * 1e6 / accepted.max(1) as f64
        };
        let (bg_on, bg_off) = (bg(&sides[0], on.0), bg(&sides[1], off.0));
        let (fg_on, fg_off) = (per_accept_us(&on) - bg_on, per_accept_us(&off) - bg_off);
        println!(
            "of which the store engine's background threads (flushes, compactions): on {bg_on:.0} us, off {bg_off:.0} us; the rest: on {fg_on:.0} us, off {fg_off:.0} us, audit share {:.1}%",
            (fg_on / fg_off - 1.0) * 100.0
        );
    }
    for s in sides {
        if result.is_err() {
            eprintln!(
                "{} broker log:\n{}",
                s.name,
                std::fs::read_to_string(&s.broker.log).unwrap_or_default()
            );
        }
        s.broker.stop();
    }
    result
}

/// Mean of `xs` and the half-width of its 95% confidence interval (Student's t; rounds are paired and
/// alternate, so each share is one independent sample of the difference). Half-width 0 for one sample.
fn mean_and_ci95(xs: &[f64]) -> (f64, f64) {
    let n = xs.len();
    if n == 0 {
        return (0.0, 0.0);
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, 0.0);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    // Two-sided 97.5% quantiles of Student's t for 1..=30 degrees of freedom, then the normal's.
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    let t = T.get(n - 2).copied().unwrap_or(1.96);
    (mean, t * (var / n as f64).sqrt())
}

fn per_accept_us(m: &(u64, f64, f64)) -> f64 {
    m.1 * 1e6 / (m.0.max(1) as f64)
}

/// [`per_accept_us`] without the store engine's background threads (`bg` CPU seconds in the round).
fn foreground_us(m: &(u64, f64, f64), bg: f64) -> f64 {
    (m.1 - bg) * 1e6 / (m.0.max(1) as f64)
}

/// One closed-loop round against one broker: (accepted, broker CPU seconds until idle again, wall
/// seconds), and the CPU seconds of the store engine's background threads in that time.
async fn share_round(
    side: &ShareSide,
    templates: &Arc<Vec<Template>>,
    a: &BenchArgs,
    n: u64,
) -> Result<((u64, f64, f64), f64)> {
    let pid = side.broker.child.id();
    let c0 = idle_cpu(pid).await?;
    let b0 = background_cpu_secs(pid);
    let t0 = Instant::now();
    let load = Arc::new(Load {
        templates: templates.clone(),
        pad_to: a.size,
        next: AtomicU64::new(0),
        limit: Some(n),
        end: None,
        rate: a.rate,
        t0,
        track: false,
        timeline: false,
        answered: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let tasks: Vec<_> = (0..a.clients)
        .map(|_| tokio::spawn(client(load.clone(), side.target.clone())))
        .collect();
    let (mut accepted, mut problem) = (0, None);
    for t in tasks {
        let o = t.await.context("a client task panicked")?;
        accepted += o.accepted;
        problem = problem.or(o.first_problem);
    }
    let wall = t0.elapsed().as_secs_f64();
    if accepted < n {
        bail!(
            "{accepted} of {n} accepted: {}",
            problem.unwrap_or_else(|| "busy or duplicate answers".into())
        );
    }
    // The relay publishes after the 202: its work is part of the message's cost, so wait for it.
    let c1 = idle_cpu(pid).await?;
    Ok(((accepted, c1 - c0, wall), background_cpu_secs(pid) - b0))
}

/// CPU seconds of the broker's store-engine worker threads (fjall names them `fjall:worker`). They live
/// as long as the store, so their sum only grows.
fn background_cpu_secs(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter(|s| {
            s.split_once('(')
                .is_some_and(|(_, c)| c.starts_with("fjall:worker"))
        })
        .filter_map(|s| stat_cpu_secs(&s))
        .sum()
}

/// The broker's CPU seconds once it is idle (at most one clock tick in 300 ms; 60 s at most).
async fn idle_cpu(pid: u32) -> Result<f64> {
    let read = || cpu_secs(pid).context("the broker's /proc/PID/stat is not readable");
    let mut last = read()?;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = read()?;
        if now - last <= 1.5 / CLK_TCK {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

fn receivers(a: &BenchArgs) -> Vec<String> {
    if a.receivers.is_empty() {
        sammen_config::defaults::example_receivers()
            .into_iter()
            .map(|r| r.gln)
            .collect()
    } else {
        a.receivers.clone()
    }
}

/// `[bus] node` of a spawned broker (its namespace is fresh), so its receipts queue can be deleted after.
const SPAWNED_NODE: &str = "bench";

/// Delete a spawned broker's namespaced queues and exchanges (best effort).
async fn cleanup_namespace(url: &str, ns: &str, glns: &[String]) {
    use lapin::options::QueueDeleteOptions;
    let topo = Topology::namespaced(ns);
    let Ok(conn) = sammen_bus::amqp_connect(
        url,
        lapin::ConnectionProperties::default(),
        Duration::from_secs(10),
    )
    .await
    else {
        return;
    };
    let mut queues: Vec<String> = glns.iter().map(|g| topo.inbox_queue(g)).collect();
    queues.push(topo.dead_queue.clone());
    queues.push(sammen_bus::receipts::receipts_queue(&topo));
    if let Ok(q) = sammen_bus::receipts::node_receipts_queue(&topo, SPAWNED_NODE) {
        queues.push(q);
    }
    for q in queues {
        // A failed delete closes the channel: one channel per delete.
        if let Ok(ch) = conn.create_channel().await {
            let _ = ch
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
    }
    for e in [&topo.route_exchange, &topo.dead_exchange] {
        if let Ok(ch) = conn.create_channel().await {
            let _ = ch
                .exchange_delete(e.as_str().into(), Default::default())
                .await;
        }
    }
    let _ = conn.close(200, "bench done".into()).await;
}

async fn measure(a: &BenchArgs, templates: Vec<Template>, spawned_pid: Option<u32>) -> Result<()> {
    let target = Arc::new(target(&a.url, a)?);
    let broker_pid = a.broker_pid.or(spawned_pid);
    let topo = if a.namespace.is_empty() {
        Topology::default()
    } else {
        Topology::namespaced(&a.namespace)
    };
    let glns = receivers(a);
    let sub = match &a.amqp_url {
        Some(url) => Some(start_subscriber(url, topo, &glns).await?),
        None => None,
    };
    let sizes: Vec<usize> = {
        let mut rng = fastrand::Rng::new();
        templates
            .iter()
            .map(|t| t.make(&mut rng, a.size).1.len())
            .collect()
    };
    let mean_size = sizes.iter().sum::<usize>() / sizes.len().max(1);
    let limit = match (a.messages, a.duration) {
        (Some(n), _) => Some(n),
        (None, None) => Some(10_000),
        (None, Some(_)) => None,
    };
    println!(
        "sammen bench: {} → {} clients, {}{}, {} examples (mean {} B){}",
        a.url,
        a.clients,
        match (limit, a.duration) {
            (Some(n), _) => format!("{n} messages"),
            (None, Some(d)) => sammen_config::duration::render(d),
            _ => String::new(),
        },
        a.rate
            .map(|r| format!(", open loop at {r} msg/s"))
            .unwrap_or_else(|| ", closed loop".into()),
        templates.len(),
        mean_size,
        if a.spawn {
            format!(
                ", spawned broker (store {:?}, {} bus)",
                a.store,
                if a.amqp_url.is_some() {
                    "RabbitMQ"
                } else {
                    "embedded"
                }
            )
        } else {
            String::new()
        }
    );

    // Broker resources: CPU at start/end, RSS sampled.
    let cpu0 = broker_pid.and_then(cpu_secs);
    let machine0 = machine_busy_secs();
    let peak_rss = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = broker_pid.map(|pid| {
        let (peak, on) = (peak_rss.clone(), sampling.clone());
        tokio::spawn(async move {
            while on.load(Ordering::Relaxed) {
                if let Some(r) = status_kb(pid, "VmRSS:") {
                    peak.fetch_max(r, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });

    let t0 = Instant::now();
    let load = Arc::new(Load {
        templates: Arc::new(templates),
        pad_to: a.size,
        next: AtomicU64::new(0),
        limit,
        end: a.duration.map(|d| t0 + d),
        rate: a.rate,
        t0,
        track: sub.is_some() || a.accepted_ids.is_some(),
        timeline: a.latency_log.is_some(),
        answered: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let bar = match (limit, a.duration) {
        (Some(n), _) => ProgressBar::new(n),
        (None, Some(d)) => ProgressBar::new(d.as_secs().max(1)),
        _ => ProgressBar::hidden(),
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{wide_bar}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let tasks: Vec<_> = (0..a.clients)
        .map(|_| tokio::spawn(client(load.clone(), target.clone())))
        .collect();
    let ticker = {
        let (load, bar) = (load.clone(), bar.clone());
        let by_time = limit.is_none();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let n = load.answered.load(Ordering::Relaxed);
                let secs = load.t0.elapsed().as_secs_f64();
                if by_time {
                    bar.set_position(secs as u64);
                } else {
                    bar.set_position(n);
                }
                bar.set_message(format!("{:.0} answers/s", n as f64 / secs.max(1e-3)));
            }
        })
    };
    let mut all = ClientOut::default();
    for t in tasks {
        let o = t.await.context("a client task panicked")?;
        all.lat_us.extend(o.lat_us);
        all.timeline.extend(o.timeline);
        all.sent.extend(o.sent);
        all.accepted += o.accepted;
        all.duplicate += o.duplicate;
        all.busy += o.busy;
        all.other += o.other;
        all.errors += o.errors;
        if all.first_problem.is_none() {
            all.first_problem = o.first_problem;
        }
    }
    let load_time = t0.elapsed();
    ticker.abort();
    bar.finish_and_clear();
    let cpu_load = broker_pid.and_then(cpu_secs);

    all.lat_us.sort_unstable();
    let answered = all.accepted + all.duplicate + all.busy + all.other + all.errors;
    let accepted_rate = all.accepted as f64 / load_time.as_secs_f64();
    println!(
        "answers: {answered} in {:.2} s — 202 accepted {}, 200 duplicate {}, 503/507 busy {}, other {}, connection errors {}",
        load_time.as_secs_f64(),
        all.accepted,
        all.duplicate,
        all.busy,
        all.other,
        all.errors
    );
    if let Some(p) = &all.first_problem {
        println!("first problem: {p}");
    }
    if let Some(path) = &a.latency_log {
        all.timeline.sort_unstable();
        let mut text = String::with_capacity(all.timeline.len() * 16);
        for (at, lat) in &all.timeline {
            text.push_str(&format!("{at} {lat}\n"));
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &a.accepted_ids {
        let mut text = String::with_capacity(all.sent.len() * 40);
        for (id, _) in &all.sent {
            text.push_str(id);
            text.push('\n');
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("accepted: {accepted_rate:.0} msgs/s");
    println!(
        "accept latency{}: p50 {} p95 {} p99 {} max {}",
        if a.rate.is_some() {
            " (from scheduled send)"
        } else {
            ""
        },
        ms(pct(&all.lat_us, 50.0)),
        ms(pct(&all.lat_us, 95.0)),
        ms(pct(&all.lat_us, 99.0)),
        ms(all.lat_us.last().copied().unwrap_or(0)),
    );

    let mut e2e_rate = None;
    // (µs of machine CPU per message end to end, the broker's part of it)
    let mut e2e_cpu: Option<(f64, Option<f64>)> = None;
    if let Some((bus, seen)) = &sub {
        let deadline = Instant::now() + a.drain_timeout;
        let want = all.sent.len();
        loop {
            let got = {
                let g = seen
                    .lock()
                    .map_err(|_| anyhow::anyhow!("subscriber panicked"))?;
                all.sent
                    .iter()
                    .filter(|(id, _)| g.at.contains_key(id))
                    .count()
            };
            if got == want || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A block, so the guard is gone before the next await (clippy cannot see a drop() call).
        {
            let g = seen
                .lock()
                .map_err(|_| anyhow::anyhow!("subscriber panicked"))?;
            let mut lat: Vec<u64> = Vec::with_capacity(want);
            let mut last = t0;
            for (id, sent) in &all.sent {
                if let Some(r) = g.at.get(id) {
                    lat.push(r.saturating_duration_since(*sent).as_micros() as u64);
                    last = last.max(*r);
                }
            }
            lat.sort_unstable();
            let span = last.saturating_duration_since(t0).as_secs_f64();
            let rate = lat.len() as f64 / span.max(1e-9);
            e2e_rate = Some(rate);
            if let (Some(m0), Some(m1), false) = (machine0, machine_busy_secs(), lat.is_empty()) {
                let per = |secs: f64| secs * 1e6 / lat.len() as f64;
                let broker = match (cpu0, broker_pid.and_then(cpu_secs)) {
                    (Some(c0), Some(c1)) => Some(per(c1 - c0)),
                    _ => None,
                };
                e2e_cpu = Some((per(m1 - m0), broker));
            }
            println!(
            "end to end: {} of {want} accepted messages reached the subscriber{}; {rate:.0} msgs/s (first POST → last receipt {span:.2} s); {} duplicate deliveries",
            lat.len(),
            if lat.len() < want {
                format!(
                    " (gave up after {})",
                    sammen_config::duration::render(a.drain_timeout)
                )
            } else {
                String::new()
            },
            g.duplicates
        );
            println!(
                "accept → subscriber (POST sent → receipt): p50 {} p95 {} p99 {} max {}",
                ms(pct(&lat, 50.0)),
                ms(pct(&lat, 95.0)),
                ms(pct(&lat, 99.0)),
                ms(lat.last().copied().unwrap_or(0)),
            );
        }
        bus.close().await;
    }
    sampling.store(false, Ordering::Relaxed);
    if let Some(s) = sampler {
        let _ = s.await;
    }
    if let Some(pid) = broker_pid {
        let cpu_end = cpu_secs(pid);
        let wall = t0.elapsed().as_secs_f64();
        match (cpu0, cpu_load, cpu_end) {
            (Some(c0), Some(cl), Some(ce)) => println!(
                "broker pid {pid}: CPU {:.1} s while loading ({:.0}% of one core), {:.1} s until drained ({:.0}%); RSS peak {:.0} MiB sampled, VmHWM {:.0} MiB",
                cl - c0,
                100.0 * (cl - c0) / load_time.as_secs_f64(),
                ce - c0,
                100.0 * (ce - c0) / wall,
                peak_rss.load(Ordering::Relaxed) as f64 / 1048576.0,
                status_kb(pid, "VmHWM:").unwrap_or(0) as f64 / 1048576.0
            ),
            _ => println!("broker pid {pid}: /proc not readable (not running, or another user's)"),
        }
    }

    if a.baseline {
        let url = a.amqp_url.as_deref().unwrap_or(DEFAULT_AMQP);
        let n = a
            .baseline_messages
            .unwrap_or((all.accepted as usize).clamp(10_000, 50_000));
        let mut rng = fastrand::Rng::new();
        let payloads: Vec<Vec<u8>> = (0..1024)
            .map(|i| {
                load.templates[i % load.templates.len()]
                    .make(&mut rng, a.size)
                    .1
            })
            .collect();
        let q = format!(
            "sammen-bench-raw-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        );
        let m0 = machine_busy_secs();
        let b = sammen_bus::baseline::raw_publish(url, &q, false, n, WINDOW, &payloads)
            .await
            .context("baseline: raw lapin publish")?;
        let m1 = machine_busy_secs();
        let raw = b.rate();
        println!(
            "baseline: raw lapin, {n} of the same payloads, persistent, {WINDOW} confirms in flight, quorum queue: {raw:.0} msgs/s ({:.1} MB/s)",
            b.bytes as f64 / b.elapsed.as_secs_f64() / 1e6
        );
        if let (Some(m0), Some(m1), Some((e2e_us, broker_us))) = (m0, m1, e2e_cpu) {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            let raw_us = (m1 - m0) * 1e6 / n as f64;
            // What the whole machine may spend per message for end to end to reach half the raw rate.
            let budget = cores * 1e6 / (0.5 * raw);
            println!(
                "machine CPU per message (all processes, {cores:.0} cores): end to end {e2e_us:.0} us{}; raw {raw_us:.0} us. End to end / raw = 0.5 leaves the machine {budget:.0} us per message",
                match broker_us {
                    Some(b) => format!(" (broker {b:.0} us, the rest {:.0} us)", e2e_us - b),
                    None => String::new(),
                },
            );
        }
        match e2e_rate {
            Some(e) => println!(
                "ratio: end to end / raw = {:.2}; accepted / raw = {:.2}",
                e / raw,
                accepted_rate / raw
            ),
            None => println!("ratio: accepted / raw = {:.2}", accepted_rate / raw),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_busy_time_counts_user_nice_system_irq_softirq() {
        let stat = "cpu  100 20 300 5000 70 8 9 40 0 0\ncpu0 50 10 150 2500 35 4 4 20 0 0\n";
        // 100 + 20 + 300 + 8 + 9 ticks; idle, iowait and steal are not busy.
        assert_eq!(stat_busy_secs(stat), Some(4.37));
        assert_eq!(stat_busy_secs("cpu0 1 2 3\n"), None);
        assert_eq!(stat_busy_secs("cpu  1 2\n"), None);
        assert!(machine_busy_secs().is_some_and(|s| s > 0.0));
    }

    #[test]
    fn confidence_interval_of_paired_shares() {
        assert_eq!(mean_and_ci95(&[]), (0.0, 0.0));
        assert_eq!(mean_and_ci95(&[0.1]), (0.1, 0.0));
        // mean 0.1, sample sd 0.02 (n = 4): half-width t(3) * 0.02 / 2 = 0.03182.
        let (m, h) = mean_and_ci95(&[0.08, 0.12, 0.08, 0.12]);
        assert!((m - 0.1).abs() < 1e-12, "{m}");
        let sd = (4.0 * 0.02f64.powi(2) / 3.0).sqrt();
        assert!((h - 3.182 * sd / 2.0).abs() < 1e-9, "{h}");
        // Many rounds: the normal quantile.
        let xs: Vec<f64> = (0..40)
            .map(|i| if i % 2 == 0 { 0.0 } else { 0.2 })
            .collect();
        let (m, h) = mean_and_ci95(&xs);
        let sd = (40.0 * 0.01 / 39.0f64).sqrt();
        assert!((m - 0.1).abs() < 1e-12 && (h - 1.96 * sd / 40f64.sqrt()).abs() < 1e-9);
    }

    #[test]
    fn fresh_ids_keep_their_shape() {
        let mut rng = fastrand::Rng::with_seed(1);
        let u = fresh_like("a5e5b880-c087-4055-b9ec-99108695f81d", &mut rng);
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        let l = fresh_like("Brevt23400929", &mut rng);
        assert_eq!(l.len(), 13);
        assert!(l[..1].chars().all(|c| c.is_ascii_uppercase()));
        assert!(l[5..].chars().all(|c| c.is_ascii_digit()));
    }

    #[test]
    fn ids_are_replaced_only_where_they_stand_alone() {
        let t = Template::new(
            "t".into(),
            "<id value=\"abc\"/><x>abcd</x><r>Bundle/abc</r><e>E1</e>",
            "abc",
            Some("E1"),
        );
        let mut rng = fastrand::Rng::with_seed(2);
        let (mid, body) = t.make(&mut rng, None);
        let s = String::from_utf8(body).unwrap();
        assert_eq!(s.matches(&mid).count(), 2, "{s}");
        assert!(s.contains("<x>abcd</x>"), "{s}");
        assert!(!s.contains("<e>E1</e>"), "{s}");
    }

    #[test]
    fn padding_gives_the_exact_size() {
        let t = Template::new("t".into(), "<a><id>x1</id></a>\n", "x1", None);
        let (_, b) = t.make(&mut fastrand::Rng::with_seed(3), Some(4096));
        assert_eq!(b.len(), 4096);
        assert!(b.ends_with(b"-->"));
    }

    #[test]
    fn every_valid_example_family_is_usable() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conformance");
        let (t, _) = load_templates(&dir, None, &[]).unwrap();
        assert!(t.len() >= 20, "{}", t.len());
        let (t4, _) = load_templates(&dir, Some(4096), &[]).unwrap();
        assert!(!t4.is_empty());
    }
}
