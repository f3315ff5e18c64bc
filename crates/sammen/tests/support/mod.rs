//! Helpers for tests that run `sammen serve` as a child process: a tiny HTTP/1.1 client, message
//! generation, the broker process and an AMQP subscriber.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use sammen_bus::{AmqpBus, AmqpConfig, Bus, Source, Topology};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as TokioBufReader};
use tokio::net::TcpStream;

pub const GLN: &str = "5790001348120";
pub const HN: &str =
    "examples/hospitalnotification/Bundle-a5e5b880-c087-4055-b9ec-99108695f81d.xml";
pub const HN_MSG_ID: &str = "b9b4818e-02de-4cc4-b418-d20cbc7b5404";
pub const HN_BUNDLE_ID: &str = "a5e5b880-c087-4055-b9ec-99108695f81d";

pub fn amqp_url() -> String {
    std::env::var("SAMMEN_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Message generator: the HospitalNotification example with unique ids.
pub struct Gen {
    base: String,
}

impl Gen {
    pub fn new() -> Self {
        Gen {
            base: std::fs::read_to_string(repo().join("conformance").join(HN)).unwrap(),
        }
    }

    pub fn uuid(tag: u32, n: u64) -> String {
        format!("{tag:08x}-0000-4000-8000-{n:012x}")
    }

    /// (message id, bytes).
    pub fn message(&self, tag: u32, n: u64) -> (String, Vec<u8>) {
        let mid = Self::uuid(tag, n);
        let b = self
            .base
            .replace(HN_MSG_ID, &mid)
            .replace(HN_BUNDLE_ID, &Self::uuid(tag ^ 0xffff_ffff, n));
        (mid, b.into_bytes())
    }
}

/// A keep-alive HTTP/1.1 connection; just enough for POST/GET with Content-Length.
pub struct Http {
    addr: String,
    conn: Option<TokioBufReader<TcpStream>>,
}

impl Http {
    pub fn new(addr: &str) -> Self {
        Http {
            addr: addr.to_string(),
            conn: None,
        }
    }

    /// (status, body); `Err` on any connection problem (the caller retries).
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let r = self.try_request(method, path, body).await;
        if r.is_err() {
            self.conn = None;
        }
        r
    }

    async fn try_request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        if self.conn.is_none() {
            let s = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&self.addr))
                .await
                .map_err(|_| std::io::Error::other("connect timeout"))??;
            s.set_nodelay(true)?;
            self.conn = Some(TokioBufReader::new(s));
        }
        let c = self.conn.as_mut().unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/fhir+xml\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        c.get_mut().write_all(head.as_bytes()).await?;
        c.get_mut().write_all(body).await?;
        let fut = async {
            let mut line = String::new();
            c.read_line(&mut line).await?;
            let code: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
            let mut len = 0usize;
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
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut buf = vec![0; len];
            c.read_exact(&mut buf).await?;
            Ok((code, buf))
        };
        tokio::time::timeout(Duration::from_secs(30), fut)
            .await
            .map_err(|_| std::io::Error::other("response timeout"))?
    }
}

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `sammen serve` as a child process.
pub struct Serve {
    pub child: Child,
    pub addr: String,
}

impl Serve {
    pub fn start(config: &Path, port: u16) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sammen"))
            .args(["serve", "--config"])
            .arg(config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("SAMMEN_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).unwrap();
        assert!(line.contains("listening on"), "sammen serve said {line:?}");
        Serve {
            child,
            addr: format!("127.0.0.1:{port}"),
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait (graceful shutdown).
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().unwrap();
    }
}

/// A config file for a test broker on RabbitMQ, namespaced so tests do not share queues.
pub fn write_config(dir: &Path, ns: &str, extra: &str) -> PathBuf {
    let p = dir.join("sammen.toml");
    let text = format!(
        "data_dir = {:?}\n[bus]\nkind = \"amqp\"\nurl = {:?}\nnamespace = {ns:?}\nconfirm_timeout = \"5s\"\n{extra}\n",
        dir.join("data").display().to_string(),
        amqp_url(),
    );
    std::fs::write(&p, text).unwrap();
    p
}

/// What the subscriber saw.
#[derive(Default, Debug)]
pub struct Seen {
    pub ids: HashMap<String, u32>,
    pub duplicates: u64,
    pub bytes_ok: bool,
}

/// Subscribe to the inbox of `GLN` in namespace `ns`; dedupe by message id like `sammen subscribe`.
pub async fn subscriber(ns: &str) -> (Arc<Mutex<Seen>>, AmqpBus) {
    let mut c = AmqpConfig::new(amqp_url());
    c.topology = Topology::namespaced(ns);
    c.receivers = vec![GLN.into()];
    c.connection_name = "sammen-test-subscriber".into();
    let bus = AmqpBus::start(c);
    sammen_bus::wait_connected(&bus, Duration::from_secs(10))
        .await
        .expect("RabbitMQ must run on 127.0.0.1:5672 (rabbitmq-server -detached)");
    bus.ensure_receiver(GLN).await.unwrap();
    let mut sub = bus.subscribe(Source::Inbox(GLN.into()), 256).await.unwrap();
    let seen = Arc::new(Mutex::new(Seen {
        bytes_ok: true,
        ..Seen::default()
    }));
    let s = seen.clone();
    tokio::spawn(async move {
        while let Some(d) = sub.next().await {
            {
                let mut g = s.lock().unwrap();
                let n = g.ids.entry(d.message.message_id.clone()).or_insert(0);
                *n += 1;
                if *n > 1 {
                    g.duplicates += 1;
                }
                if !d
                    .message
                    .body
                    .windows(HN_MSG_ID.len())
                    .any(|w| w == HN_MSG_ID.as_bytes())
                    && !d
                        .message
                        .body
                        .windows(d.message.message_id.len())
                        .any(|w| w == d.message.message_id.as_bytes())
                {
                    g.bytes_ok = false;
                }
            }
            let _ = d.ack().await;
        }
    });
    (seen, bus)
}
