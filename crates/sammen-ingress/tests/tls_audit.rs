//! Certificates refused in the TLS handshake leave `certificate-refused` audit leaves (issue #5): a
//! certificate from an unknown CA, no certificate, an expired one; repeats are rate-limited and counted;
//! the log still verifies. Real TLS, certificates generated here with rcgen.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use sammen_bus::{Bus, EmbeddedBus, Topology};
use sammen_identity::rustls::pki_types::ServerName;
use sammen_identity::{CertAuthority, ClientSpec, Issued, TlsFiles, TlsIdentity};
use sammen_ingress::tls::{
    serve_tls, tls_router, HandshakeAudit, HandshakeAuditLimits, TlsServeConfig, TlsStats,
};
use sammen_ingress::{Ingress, IngressConfig, Receivers, SharedOutbox};
use sammen_outbox::sammen_audit::ops::verify_store;
use sammen_outbox::sammen_audit::{
    stored_leaves, AuditConfig, Event, Leaf, PatientKey, SigningKey,
};
use sammen_outbox::OutboxConfig;
use sammen_store::{FjallStore, Store};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

type ClientConfig = Arc<sammen_identity::rustls::ClientConfig>;

struct Env {
    addr: SocketAddr,
    outbox: SharedOutbox,
    stats: Arc<TlsStats>,
    dir: tempfile::TempDir,
}

async fn start(ca: &CertAuthority, hospital: &Issued) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(FjallStore::open(dir.path().join("db"), sammen_outbox::trees::AUDITED).unwrap());
    let audit = AuditConfig {
        origin: "sammen.test/tls-audit".into(),
        checkpoint_every: 1024,
        checkpoint_interval_ms: 60_000,
        export_dir: Some(dir.path().join("export")),
        patient_key: PatientKey::new(b"test-patient-hmac-key-0123456789").unwrap(),
    };
    let key = SigningKey::from_bytes(&[9; 32]);
    let outbox: SharedOutbox =
        Arc::new(sammen_outbox::open_audited(store, OutboxConfig::default(), audit, key).unwrap());
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::in_memory(Topology::namespaced("tlsaudit")));
    let ingress = Arc::new(Ingress::new(
        outbox.clone(),
        bus,
        Receivers::new([("5790000209354", Some("265161000016000"))]),
        IngressConfig::default(),
        Arc::new(tokio::sync::Notify::new()),
    ));
    let server = ca.issue_server(&["localhost", "127.0.0.1"], 30).unwrap();
    let partners = format!(
        "[[partner]]\nname = \"hospital\"\nfingerprint = \"{}\"\nsend_as = [{{ gln = \"5790000209354\" }}]\n",
        sammen_identity::fingerprint(&hospital.cert_der)
    );
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let files = TlsFiles {
        cert: write("server.crt", &server.cert_pem),
        key: write("server.key", &server.key_pem),
        client_ca: vec![write("ca.crt", &ca.cert.cert_pem)],
        partners_file: Some(write("partners.toml", &partners)),
        partners: vec![],
    };
    let identity = Arc::new(TlsIdentity::load(files).unwrap());
    let cfg = TlsServeConfig {
        handshake_timeout: Duration::from_secs(5),
        handshake_audit: Some(Arc::new(HandshakeAudit::new(
            outbox.clone(),
            HandshakeAuditLimits::default(),
        ))),
        ..TlsServeConfig::default()
    };
    let stats = cfg.stats.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_tls(
        listener,
        identity,
        tls_router(ingress),
        cfg,
        std::future::pending(),
    ));
    Env {
        addr,
        outbox,
        stats,
        dir,
    }
}

fn roots(ca: &CertAuthority) -> sammen_identity::rustls::RootCertStore {
    let mut roots = sammen_identity::rustls::RootCertStore::empty();
    roots.add(ca.cert.cert_der.clone()).unwrap();
    roots
}

fn with_cert(server_ca: &CertAuthority, c: &Issued) -> ClientConfig {
    sammen_identity::client_config(
        vec![c.cert_der.clone()],
        c.key_der(),
        std::slice::from_ref(&server_ca.cert.cert_der),
    )
    .unwrap()
}

fn without_cert(server_ca: &CertAuthority) -> ClientConfig {
    Arc::new(
        sammen_identity::rustls::ClientConfig::builder_with_provider(sammen_identity::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots(server_ca))
            .with_no_client_auth(),
    )
}

/// Handshake and one GET; `true` when a response came back. (With TLS 1.3 the client may finish its
/// side of the handshake before the server has refused its certificate, so a request is needed to see
/// the refusal.)
async fn get_status(addr: SocketAddr, cfg: ClientConfig) -> bool {
    let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let name = ServerName::try_from("localhost").unwrap();
    let Ok(tls) = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
    else {
        return false;
    };
    let Ok((mut send, conn)) = http1::handshake(TokioIo::new(tls)).await else {
        return false;
    };
    tokio::spawn(conn);
    let req = hyper::Request::get("/v1/messages/x")
        .header("host", "localhost")
        .body(Body::empty())
        .unwrap();
    send.send_request(req).await.is_ok()
}

/// Wait until the listener has written (or suppressed) `n` handshake-refusal leaves in all.
async fn settled(stats: &TlsStats, recorded: u64, suppressed: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = stats.certificate_refusals_recorded.load(Ordering::SeqCst);
        let s = stats.certificate_refusals_suppressed.load(Ordering::SeqCst);
        if (r, s) == (recorded, suppressed) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "recorded {r}, suppressed {s}; expected {recorded}, {suppressed}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn leaves(outbox: &SharedOutbox) -> Vec<(Vec<u8>, Leaf)> {
    let store = outbox.audit().unwrap().store();
    stored_leaves(store)
        .unwrap()
        .into_iter()
        .map(|(_, v)| {
            let leaf = Leaf::decode(&v).unwrap();
            (v, leaf)
        })
        .collect()
}

/// (code, fingerprint, suppressed) of every handshake-refusal leaf, in log order.
fn refusals(outbox: &SharedOutbox) -> Vec<(String, Option<String>, Option<u64>)> {
    leaves(outbox)
        .into_iter()
        .filter_map(|(_, l)| match l.event {
            Event::CertificateRefused {
                code: Some(code),
                suppressed,
            } => Some((code, l.cert_fingerprint, suppressed)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_refusals_leave_rate_limited_leaves_and_the_log_verifies() {
    let ca = CertAuthority::new("Test CA").unwrap();
    let hospital = ca.issue_client(&ClientSpec::new("hospital", 30)).unwrap();
    let rogue_ca = CertAuthority::new("Rogue CA").unwrap();
    let rogue = rogue_ca
        .issue_client(&ClientSpec::new("hospital", 30))
        .unwrap();
    let expired = ca
        .issue_client(&ClientSpec {
            valid_from_days: -30,
            valid_until_days: -1,
            ..ClientSpec::new("expired", 30)
        })
        .unwrap();
    let env = start(&ca, &hospital).await;

    // The partner's certificate gets through and writes no such leaf.
    assert!(get_status(env.addr, with_cert(&ca, &hospital)).await);

    assert!(!get_status(env.addr, with_cert(&ca, &rogue)).await);
    settled(&env.stats, 1, 0).await;
    assert!(!get_status(env.addr, without_cert(&ca)).await);
    settled(&env.stats, 2, 0).await;
    assert!(!get_status(env.addr, with_cert(&ca, &expired)).await);
    settled(&env.stats, 3, 0).await;
    let rogue_fp = sammen_identity::fingerprint(&rogue.cert_der);
    let expired_fp = sammen_identity::fingerprint(&expired.cert_der);
    assert_eq!(
        refusals(&env.outbox),
        vec![
            ("unknown-ca".to_owned(), Some(rogue_fp.clone()), None),
            ("no-certificate".to_owned(), None, None),
            ("expired".to_owned(), Some(expired_fp), None),
        ]
    );

    // The same certificate refused again within the interval: counted, not written.
    for n in 1..=3 {
        assert!(!get_status(env.addr, with_cert(&ca, &rogue)).await);
        settled(&env.stats, 3, n).await;
    }
    assert!(!get_status(env.addr, without_cert(&ca)).await);
    settled(&env.stats, 3, 4).await;
    assert_eq!(refusals(&env.outbox).len(), 3);

    // Fingerprints and codes only: no peer address, no certificate names.
    for (bytes, _) in leaves(&env.outbox) {
        for needle in [&b"127.0.0.1"[..], b"Rogue"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }

    // `sammen audit verify` checks exactly this: every leaf, node and checkpoint, and the exported one.
    let log = env.outbox.audit().unwrap();
    let cp = log.checkpoint_now().unwrap().unwrap();
    let exported =
        sammen_outbox::sammen_audit::export::read_exported(&env.dir.path().join("export"))
            .unwrap()
            .unwrap();
    assert_eq!(exported, cp);
    let report = verify_store(log.store(), &log.public_key(), Some(&exported)).unwrap();
    assert_eq!(report.leaves, log.size());
    assert_eq!(rogue_fp.len(), 64);
}
