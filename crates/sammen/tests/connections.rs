//! 1,000 concurrent mutual-TLS connections to a `sammen serve` child (dev PKI): half post a message each,
//! half sit idle, all at the same time. The server keeps serving: a fresh connection still gets 202 while
//! all 1,000 are open, every idle connection is still answered afterwards, and every accepted message is
//! still there after a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use axum::body::Body;
use http_body_util::BodyExt;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use sammen_identity::rustls::pki_types::ServerName;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use support::Gen;
use tokio::sync::Barrier;

const CONNECTIONS: usize = 1000;
/// Each connection needs one descriptor here and one in the server (plus files, sockets, threads).
const NOFILE_WANTED: u64 = 4096;

type ClientCfg = Arc<sammen_identity::rustls::ClientConfig>;
type Sender = http1::SendRequest<Body>;

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// Raise the soft limit on open files towards [`NOFILE_WANTED`] (the child inherits it); fail loudly when
/// the hard limit is too low for the test.
fn raise_nofile() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let cur = getrlimit(Resource::Nofile);
    let soft = cur.current.unwrap_or(u64::MAX);
    if soft < NOFILE_WANTED {
        let want = cur.maximum.map_or(NOFILE_WANTED, |h| h.min(NOFILE_WANTED));
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(want),
                maximum: cur.maximum,
            },
        )
        .expect("raising the open-file soft limit");
    }
    let now = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    assert!(
        now >= (2 * CONNECTIONS + 500) as u64,
        "open-file limit {now} is too low for {CONNECTIONS} connections (raise the hard limit: ulimit -Hn)"
    );
    now
}

fn serve(dir: &Path) -> (Serve, SocketAddr) {
    let data = dir.join("data");
    let cfg = dir.join("sammen.toml");
    // Idle connections wait for request headers: give them longer than the test holds them.
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\n[tls]\nlisten = \"127.0.0.1:0\"\nhandshake_timeout = \"60s\"\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sammen"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("SAMMEN_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let serve = Serve(child);
    let mut lines = Vec::new();
    for line in out.lines() {
        let line = line.unwrap();
        lines.push(line.clone());
        if let Some(a) = line.strip_prefix("sammen: listening on https://") {
            return (serve, a.parse().unwrap());
        }
    }
    panic!("serve ended without listening: {lines:?}");
}

async fn connect(addr: SocketAddr, tls: ClientCfg) -> Result<Sender, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let s = tokio_rustls::TlsConnector::from(tls)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (send, conn) = http1::handshake(TokioIo::new(s))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(conn);
    Ok(send)
}

async fn send(s: &mut Sender, req: hyper::Request<Body>) -> Result<(u16, Vec<u8>), String> {
    s.ready().await.map_err(|e| format!("ready: {e}"))?;
    let resp = s
        .send_request(req)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((status, body.to_vec()))
}

fn post(body: Vec<u8>) -> hyper::Request<Body> {
    hyper::Request::post("/v1/messages")
        .header("host", "localhost")
        .header("content-type", "application/fhir+xml")
        .body(Body::from(body))
        .unwrap()
}

fn get(path: &str) -> hyper::Request<Body> {
    hyper::Request::get(path)
        .header("host", "localhost")
        .body(Body::empty())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_mtls_connections() {
    let limit = raise_nofile();
    eprintln!("open-file soft limit {limit}");
    let dir = tempfile::tempdir().unwrap();
    let (srv, addr) = serve(dir.path());
    let pki = dir.path().join("data/pki");
    let tls = sammen_identity::client_config_from_files(
        &pki.join("hospital.crt"),
        &pki.join("hospital.key"),
        &[pki.join("ca.crt")],
    )
    .unwrap();
    let gen = Arc::new(Gen::new());

    // Every connection is open (handshake done) before anyone posts; idle ones stay open until the end.
    let opened = Arc::new(Barrier::new(CONNECTIONS + 1));
    let go = Arc::new(Barrier::new(CONNECTIONS + 1));
    let release = Arc::new(Barrier::new(CONNECTIONS + 1));
    let mut tasks = Vec::with_capacity(CONNECTIONS);
    for i in 0..CONNECTIONS {
        let (tls, gen) = (tls.clone(), gen.clone());
        let (opened, go, release) = (opened.clone(), go.clone(), release.clone());
        tasks.push(tokio::spawn(async move {
            let c = connect(addr, tls).await;
            opened.wait().await;
            go.wait().await;
            let mut s = match c {
                Ok(s) => s,
                Err(e) => {
                    release.wait().await;
                    return Err(format!("connection {i}: {e}"));
                }
            };
            let posted = if i % 2 == 0 {
                let (id, body) = gen.message(0xc0ffee, i as u64);
                match send(&mut s, post(body)).await {
                    Ok((202, _)) => Some(id),
                    Ok((st, b)) => {
                        release.wait().await;
                        return Err(format!(
                            "connection {i}: {st} {}",
                            String::from_utf8_lossy(&b)
                        ));
                    }
                    Err(e) => {
                        release.wait().await;
                        return Err(format!("connection {i}: {e}"));
                    }
                }
            } else {
                None
            };
            release.wait().await;
            // Idle until now: the server still answers on it.
            if posted.is_none() {
                match send(&mut s, get("/healthz")).await {
                    Ok((200, _)) => {}
                    other => return Err(format!("idle connection {i}: {other:?}")),
                }
            }
            Ok(posted)
        }));
    }
    tokio::time::timeout(Duration::from_secs(120), opened.wait())
        .await
        .expect("1,000 connections did not open");

    // All 1,000 are open: a new connection is still served.
    let mut extra = connect(addr, tls.clone()).await.expect("a new connection");
    let (extra_id, body) = gen.message(0xc0ffef, 0);
    let (st, b) = send(&mut extra, post(body)).await.unwrap();
    assert_eq!(st, 202, "{}", String::from_utf8_lossy(&b));

    go.wait().await;
    tokio::time::timeout(Duration::from_secs(120), release.wait())
        .await
        .expect("the posts did not finish");
    let mut accepted = vec![extra_id];
    let mut errors = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(Some(id)) => accepted.push(id),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    assert!(
        errors.is_empty(),
        "{} of {CONNECTIONS} connections failed, e.g. {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert_eq!(accepted.len(), CONNECTIONS / 2 + 1);

    // Afterwards: a normal post gets 202.
    let (id, body) = gen.message(0xc0fff0, 0);
    let (st, _) = send(&mut extra, post(body)).await.unwrap();
    assert_eq!(st, 202);
    accepted.push(id);
    drop(extra);
    drop(srv);

    // Nothing accepted is lost: after a restart every accepted message is there.
    let (_srv, addr) = serve(dir.path());
    let mut c = connect(addr, tls).await.unwrap();
    for id in &accepted {
        let (st, b) = send(&mut c, get(&format!("/v1/messages/{id}")))
            .await
            .unwrap();
        assert_eq!(st, 200, "{id}: {}", String::from_utf8_lossy(&b));
    }
}
