//! HTTPS ingress: the verified peer reaches the handler; spoofed senders get 403; big and slow bodies are
//! refused while the listener keeps serving. Certificates are generated here (rcgen), over real TLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use http_body_util::BodyExt;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use sammen_bus::{Bus, EmbeddedBus, Topology};
use sammen_identity::rustls::pki_types::ServerName;
use sammen_identity::{CertAuthority, ClientSpec, Issued, Refusal, TlsFiles, TlsIdentity};
use sammen_ingress::tls::{serve_tls, tls_router, TlsServeConfig};
use sammen_ingress::{Ingress, IngressConfig, Receivers};
use sammen_outbox::{Outbox, OutboxConfig};
use sammen_store::{FjallStore, Store};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const HN: &str = "examples/hospitalnotification/Bundle-a5e5b880-c087-4055-b9ec-99108695f81d.xml";

fn example(rel: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../conformance")
            .join(rel),
    )
    .unwrap()
}

struct Env {
    addr: SocketAddr,
    ca: CertAuthority,
    refusals: Arc<AtomicUsize>,
    cfg: TlsServeConfig,
    _dir: tempfile::TempDir,
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Broker state (outbox + embedded bus, no relay) behind the HTTPS listener. Partners: the hospital by
/// fingerprint, the municipality by issuer + serialNumber.
async fn start(hospital: &Issued, ca: CertAuthority, request_timeout: Duration) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(FjallStore::open(dir.path().join("db"), sammen_outbox::trees::ALL).unwrap());
    let outbox = Arc::new(Outbox::open(store, OutboxConfig::default()).unwrap());
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::in_memory(Topology::namespaced("tls")));
    let ingress = Arc::new(Ingress::new(
        outbox,
        bus,
        Receivers::new([
            ("5790001348120", Some("953741000016009")),
            ("5790000209354", Some("265161000016000")),
        ]),
        IngressConfig::default(),
        Arc::new(tokio::sync::Notify::new()),
    ));
    let server = ca.issue_server(&["localhost", "127.0.0.1"], 30).unwrap();
    let partners = format!(
        r#"
        [[partner]]
        name = "hospital"
        fingerprint = "{}"
        send_as = [{{ gln = "5790000209354", sor = "265161000016000" }}]
        [[partner]]
        name = "municipality"
        issuer = "{}"
        serial_number = "CVR:29189870-UID:2"
        send_as = [{{ gln = "5790001348120" }}]
        "#,
        sammen_identity::fingerprint(&hospital.cert_der),
        ca.issuer_dn().unwrap()
    );
    let files = TlsFiles {
        cert: write(dir.path(), "server.crt", &server.cert_pem),
        key: write(dir.path(), "server.key", &server.key_pem),
        client_ca: vec![write(dir.path(), "ca.crt", &ca.cert.cert_pem)],
        partners_file: Some(write(dir.path(), "partners.toml", &partners)),
        partners: vec![],
    };
    let identity = Arc::new(TlsIdentity::load(files).unwrap());
    let refusals = Arc::new(AtomicUsize::new(0));
    let r2 = refusals.clone();
    let cfg = TlsServeConfig {
        handshake_timeout: Duration::from_secs(5),
        request_timeout,
        on_refusal: Some(Arc::new(move |_: &Refusal| {
            r2.fetch_add(1, Ordering::SeqCst);
        })),
        ..TlsServeConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_tls(
        listener,
        identity,
        tls_router(ingress),
        cfg.clone(),
        std::future::pending(),
    ));
    Env {
        addr,
        ca,
        refusals,
        cfg,
        _dir: dir,
    }
}

fn client_cfg(env_ca: &CertAuthority, c: &Issued) -> Arc<sammen_identity::rustls::ClientConfig> {
    sammen_identity::client_config(
        vec![c.cert_der.clone()],
        c.key_der(),
        std::slice::from_ref(&env_ca.cert.cert_der),
    )
    .unwrap()
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn tls(
    addr: SocketAddr,
    cfg: Arc<sammen_identity::rustls::ClientConfig>,
) -> std::io::Result<Tls> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(cfg)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// One request on a fresh connection; the status and JSON body.
async fn request(
    addr: SocketAddr,
    cfg: Arc<sammen_identity::rustls::ClientConfig>,
    req: hyper::Request<Body>,
) -> Result<(u16, serde_json::Value), String> {
    let s = tls(addr, cfg).await.map_err(|e| e.to_string())?;
    let (mut send, conn) = http1::handshake(TokioIo::new(s))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let code = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((
        code,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    ))
}

fn post(body: impl Into<Body>) -> hyper::Request<Body> {
    hyper::Request::post("/v1/messages")
        .header("host", "localhost")
        .header("content-type", "application/fhir+xml")
        .body(body.into())
        .unwrap()
}

fn get(path: &str) -> hyper::Request<Body> {
    hyper::Request::get(path)
        .header("host", "localhost")
        .body(Body::empty())
        .unwrap()
}

fn parties() -> (CertAuthority, Issued, Issued, Issued) {
    let ca = CertAuthority::new("Test CA").unwrap();
    let hospital = ca.issue_client(&ClientSpec::new("hospital", 30)).unwrap();
    let muni = ca
        .issue_client(&ClientSpec {
            serial_number: Some("CVR:29189870-UID:2".into()),
            ..ClientSpec::new("muni", 30)
        })
        .unwrap();
    let stranger = ca.issue_client(&ClientSpec::new("stranger", 30)).unwrap();
    (ca, hospital, muni, stranger)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_must_be_one_of_the_certificates_identities() {
    let (ca, hospital, muni, stranger) = parties();
    let env = start(&hospital, ca, Duration::from_secs(30)).await;
    let (h, m, s) = (
        client_cfg(&env.ca, &hospital),
        client_cfg(&env.ca, &muni),
        client_cfg(&env.ca, &stranger),
    );

    // The municipality (mapped by issuer + serialNumber) posting the hospital's message: spoofing.
    let (code, v) = request(env.addr, m.clone(), post(example(HN)))
        .await
        .unwrap();
    assert_eq!(code, 403, "{v}");
    assert_eq!(v["error"], "identity.sender-not-allowed", "{v}");
    assert!(v["reason"].as_str().unwrap().contains("may send as"), "{v}");
    // A trusted but unregistered certificate: refused before anything is read; health stays open.
    let (code, v) = request(env.addr, s.clone(), post(example(HN)))
        .await
        .unwrap();
    assert_eq!(
        (code, v["error"].as_str()),
        (403, Some("identity.certificate-unregistered"))
    );
    let (code, _) = request(
        env.addr,
        s.clone(),
        get("/v1/messages/b9b4818e-02de-4cc4-b418-d20cbc7b5404"),
    )
    .await
    .unwrap();
    assert_eq!(code, 403);
    assert_eq!(request(env.addr, s, get("/healthz")).await.unwrap().0, 200);
    // Nothing was stored by the refusals.
    assert_eq!(
        request(
            env.addr,
            h.clone(),
            get("/v1/messages/b9b4818e-02de-4cc4-b418-d20cbc7b5404")
        )
        .await
        .unwrap()
        .0,
        404
    );

    // The hospital (mapped by fingerprint) sending as itself.
    let (code, v) = request(env.addr, h.clone(), post(example(HN)))
        .await
        .unwrap();
    assert_eq!(code, 202, "{v}");
    assert_eq!(v["status"], "accepted");
    let (code, v) = request(env.addr, h.clone(), post(example(HN)))
        .await
        .unwrap();
    assert_eq!((code, v["status"].as_str()), (200, Some("duplicate")));
    // An invalid message from the hospital is still a 422 with the report.
    let (code, _) = request(env.addr, h, post(b"<Bundle/>".to_vec()))
        .await
        .unwrap();
    assert_eq!(code, 422);

    assert_eq!(env.refusals.load(Ordering::SeqCst), 3);
    assert_eq!(env.cfg.stats.requests_refused.load(Ordering::SeqCst), 3);

    // No client certificate: the handshake fails, the listener keeps serving.
    let no_cert = Arc::new(
        sammen_identity::rustls::ClientConfig::builder_with_provider(sammen_identity::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates({
                let mut r = sammen_identity::rustls::RootCertStore::empty();
                r.add(env.ca.cert.cert_der.clone()).unwrap();
                r
            })
            .with_no_client_auth(),
    );
    assert!(request(env.addr, no_cert, get("/healthz")).await.is_err());
    assert_eq!(request(env.addr, m, get("/healthz")).await.unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_slow_bodies_are_refused_and_the_server_keeps_serving() {
    let (ca, hospital, _, _) = parties();
    let env = start(&hospital, ca, Duration::from_secs(2)).await;
    let h = client_cfg(&env.ca, &hospital);

    // 100 MiB declared: 413 before reading.
    let mut req = post(Body::empty());
    req.headers_mut()
        .insert("content-length", (100u64 << 20).into());
    let s = tls(env.addr, h.clone()).await.unwrap();
    let (mut send, conn) = http1::handshake::<_, Body>(TokioIo::new(s)).await.unwrap();
    tokio::spawn(conn);
    let code = send.send_request(req).await.map(|r| r.status().as_u16());
    assert_eq!(code.unwrap(), 413);

    // 100 MiB streamed (chunked): 413 once 10 MiB were read. Raw TLS, because the server answers and
    // closes while the client is still writing: an HTTP client library then reports its write error
    // instead of the answer that already arrived (CI saw exactly that race).
    let s = tls(env.addr, h.clone()).await.unwrap();
    let (mut rd, mut wr) = tokio::io::split(s);
    let writer = tokio::spawn(async move {
        let head = b"POST /v1/messages HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/fhir+xml\r\ntransfer-encoding: chunked\r\n\r\n";
        wr.write_all(head).await?;
        let chunk = vec![b' '; 1 << 20];
        for _ in 0..100 {
            wr.write_all(b"100000\r\n").await?;
            wr.write_all(&chunk).await?;
            wr.write_all(b"\r\n").await?;
        }
        wr.write_all(b"0\r\n\r\n").await?;
        wr.flush().await
    });
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 16 << 10];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, tokio::io::AsyncReadExt::read(&mut rd, &mut buf))
            .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the streamed oversize request was never answered"),
        }
    }
    // The writer stops on the closed connection well before 100 MiB.
    assert!(writer.await.unwrap().is_err(), "server read all 100 MiB");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("\"too-large\""), "{text}");

    // A slow body: headers promise 1000 bytes, 10 arrive, then nothing: 408 after the request timeout.
    let mut s = tls(env.addr, h.clone()).await.unwrap();
    s.write_all(
        b"POST /v1/messages HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/fhir+xml\r\ncontent-length: 1000\r\n\r\n<Bundle x",
    )
    .await
    .unwrap();
    s.flush().await.unwrap();
    let mut buf = Vec::new();
    let t0 = std::time::Instant::now();
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut s, &mut buf),
    )
    .await;
    assert!(read.is_ok(), "the slow request was never answered");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(t0.elapsed() < Duration::from_secs(5));

    // Still serving, and the message goes through.
    let (code, v) = request(env.addr, h, post(example(HN))).await.unwrap();
    assert_eq!(code, 202, "{v}");
}
