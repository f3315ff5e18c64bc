//! Real TLS handshakes against the server config, with certificates generated here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rustls::pki_types::ServerName;
use sammen_identity::rustls;
use sammen_identity::{
    authorize_receiver, authorize_sender, generate_dev_pki, CertAuthority, CertSummary, ClientSpec,
    Refusal, ReloadOutcome, SenderField, SenderRefusal, TlsFiles, TlsIdentity,
};
use sammen_model::{Party, Report, Transport, TransportKind};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A TLS echo server on the identity layer: each handshake's outcome (peer fingerprint or error) is
/// reported on the channel; a fresh snapshot is taken per connection, as the ingress does.
async fn server(
    id: Arc<TlsIdentity>,
) -> (
    std::net::SocketAddr,
    mpsc::UnboundedReceiver<Result<String, String>>,
) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = l.accept().await.unwrap();
            let snap = id.snapshot();
            let acceptor = tokio_rustls::TlsAcceptor::from(snap.server_config.clone());
            let tx = tx.clone();
            let id = id.clone();
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(mut s) => {
                        let peer = id
                            .identify(&snap, s.get_ref().1.peer_certificates().unwrap_or_default())
                            .map(|p| p.cert.fingerprint.clone())
                            .unwrap_or_default();
                        let _ = tx.send(Ok(peer));
                        let mut b = [0u8; 1];
                        if s.read_exact(&mut b).await.is_ok() {
                            let _ = s.write_all(&b).await;
                            let _ = s.flush().await;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// Connect and exchange one byte; Ok(server certificate fingerprint) when it worked end to end.
async fn roundtrip(
    addr: std::net::SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<String, String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let c = tokio_rustls::TlsConnector::from(cfg);
    let mut s = c
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let server_fp =
        sammen_identity::fingerprint(s.get_ref().1.peer_certificates().unwrap()[0].as_ref());
    s.write_all(b"x").await.map_err(|e| e.to_string())?;
    s.flush().await.map_err(|e| e.to_string())?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.map_err(|e| e.to_string())?;
    Ok(server_fp)
}

struct Pki {
    dir: tempfile::TempDir,
    ca: CertAuthority,
    files: TlsFiles,
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn pki(partners: &str) -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertAuthority::new("Test CA").unwrap();
    let server = ca.issue_server(&["localhost", "127.0.0.1"], 30).unwrap();
    let files = TlsFiles {
        cert: write(dir.path(), "server.crt", &server.cert_pem),
        key: write(dir.path(), "server.key", &server.key_pem),
        client_ca: vec![write(dir.path(), "ca.crt", &ca.cert.cert_pem)],
        partners_file: Some(write(dir.path(), "partners.toml", partners)),
        partners: vec![],
    };
    Pki { dir, ca, files }
}

fn client(
    ca: &CertAuthority,
    trust: &CertAuthority,
    spec: &ClientSpec,
) -> Arc<rustls::ClientConfig> {
    let c = ca.issue_client(spec).unwrap();
    sammen_identity::client_config(
        vec![c.cert_der.clone()],
        c.key_der(),
        std::slice::from_ref(&trust.cert.cert_der),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_client_certificates_fail_the_handshake_and_the_server_keeps_serving() {
    let p = pki("");
    let id = Arc::new(TlsIdentity::load(p.files.clone()).unwrap());
    let (addr, mut rx) = server(id).await;
    let good = ClientSpec::new("good", 30);

    // No client certificate at all.
    let no_cert = Arc::new(
        rustls::ClientConfig::builder_with_provider(sammen_identity::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates({
                let mut r = rustls::RootCertStore::empty();
                r.add(p.ca.cert.cert_der.clone()).unwrap();
                r
            })
            .with_no_client_auth(),
    );
    let other_ca = CertAuthority::new("Other CA").unwrap();
    let cases: Vec<(&str, Arc<rustls::ClientConfig>)> = vec![
        ("no client certificate", no_cert),
        ("unknown CA", client(&other_ca, &p.ca, &good)),
        (
            "expired",
            client(
                &p.ca,
                &p.ca,
                &ClientSpec {
                    valid_from_days: -30,
                    valid_until_days: -1,
                    ..good.clone()
                },
            ),
        ),
        (
            "not yet valid",
            client(
                &p.ca,
                &p.ca,
                &ClientSpec {
                    valid_from_days: 2,
                    valid_until_days: 30,
                    ..good.clone()
                },
            ),
        ),
        (
            "no clientAuth EKU",
            client(
                &p.ca,
                &p.ca,
                &ClientSpec {
                    client_auth: false,
                    ..good.clone()
                },
            ),
        ),
    ];
    for (what, cfg) in cases {
        assert!(
            roundtrip(addr, cfg).await.is_err(),
            "{what}: the client got through"
        );
        let server_side = rx.recv().await.unwrap();
        assert!(
            server_side.is_err(),
            "{what}: server accepted the handshake"
        );
    }
    // Still serving: a good certificate, over TLS 1.3 and over TLS 1.2.
    roundtrip(addr, client(&p.ca, &p.ca, &good)).await.unwrap();
    assert!(rx.recv().await.unwrap().is_ok());
    let c = p.ca.issue_client(&good).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(p.ca.cert.cert_der.clone()).unwrap();
    let tls12 = rustls::ClientConfig::builder_with_provider(sammen_identity::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![c.cert_der.clone()], c.key_der())
        .unwrap();
    roundtrip(addr, Arc::new(tls12)).await.unwrap();
    assert!(rx.recv().await.unwrap().is_ok());
}

fn report(sender: (&str, Option<&str>)) -> Report {
    Report {
        sender: Party {
            gln: Some(sender.0.into()),
            sor: sender.1.map(str::to_string),
        },
        ..Report::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_maps_by_fingerprint_and_by_issuer_and_subject() {
    let ca = CertAuthority::new("Test CA").unwrap();
    let hospital = ca
        .issue_client(&ClientSpec {
            serial_number: Some("CVR:29190623-UID:1".into()),
            ..ClientSpec::new("h", 30)
        })
        .unwrap();
    let muni = ca
        .issue_client(&ClientSpec {
            serial_number: Some("CVR:29189870-UID:2".into()),
            organization_identifier: Some("NTRDK-29189870".into()),
            ..ClientSpec::new("m", 30)
        })
        .unwrap();
    let stranger = ca.issue_client(&ClientSpec::new("s", 30)).unwrap();
    let issuer = ca.issuer_dn().unwrap();
    // Written with other spacing and case: the issuer comparison normalises both.
    let issuer_cfg = issuer.replace(", ", ",").replace("CN=", "cn=");
    let text = format!(
        r#"
        [[partner]]
        name = "hospital"
        fingerprint = "{fp}"
        send_as = [{{ gln = "5790000209354", sor = "265161000016000" }}]
        [[partner]]
        name = "municipality by serialNumber"
        issuer = "{issuer_cfg}"
        serial_number = "CVR:29189870-UID:2"
        send_as = [{{ gln = "5790001348120" }}]
        [[partner]]
        name = "municipality by organizationIdentifier"
        issuer = "{issuer_cfg}"
        organization_identifier = "NTRDK-29189870"
        send_as = [{{ gln = "5790001348120" }}]
        "#,
        fp = sammen_identity::fingerprint(&hospital.cert_der).to_uppercase(),
    );
    let reg = sammen_identity::PartnerRegistry::new(&sammen_config::parse_partners(&text).unwrap())
        .unwrap();
    let id = |der: &[u8]| {
        let cert = CertSummary::parse(der).unwrap();
        sammen_identity::PeerIdentity {
            partner: reg.identify(&cert),
            cert: Arc::new(cert),
        }
    };
    let h = id(&hospital.cert_der);
    assert_eq!(h.partner.as_ref().unwrap().name, "hospital");
    let m = id(&muni.cert_der);
    assert_eq!(
        m.partner.as_ref().unwrap().name,
        "municipality by serialNumber"
    );
    assert_eq!(
        m.cert.organization_identifier.as_deref(),
        Some("NTRDK-29189870")
    );
    let s = id(&stranger.cert_der);
    assert!(s.partner.is_none());

    // A partner known only by its AMQP user is never matched to a certificate, whatever its issuer.
    let amqp_only = sammen_config::parse_partners(
        "[[partner]]\nname = \"ehr\"\namqp_user = \"ehr-1\"\nsend_as = [{ gln = \"5790000209354\" }]\n",
    )
    .unwrap();
    let reg2 = sammen_identity::PartnerRegistry::new(&amqp_only).unwrap();
    for der in [&hospital.cert_der, &muni.cert_der, &stranger.cert_der] {
        let mut cert = CertSummary::parse(der).unwrap();
        assert!(reg2.identify(&cert).is_none());
        cert.issuer = String::new();
        cert.serial_number = None;
        cert.organization_identifier = None;
        assert!(reg2.identify(&cert).is_none(), "empty subject matched");
    }

    // Sender checks.
    authorize_sender(&h, &report(("5790000209354", Some("265161000016000")))).unwrap();
    authorize_sender(&m, &report(("5790001348120", Some("953741000016009")))).unwrap();
    let spoof =
        authorize_sender(&m, &report(("5790000209354", Some("265161000016000")))).unwrap_err();
    assert_eq!(
        spoof,
        Refusal::Sender(SenderRefusal::NotAllowed(SenderField::Message))
    );
    assert_eq!(spoof.code(), "identity.sender-not-allowed");
    // Right GLN, another SOR than the one the hospital is limited to.
    assert!(authorize_sender(&h, &report(("5790000209354", Some("953741000016009")))).is_err());
    assert_eq!(
        authorize_sender(&s, &report(("5790000209354", None)))
            .unwrap_err()
            .code(),
        "identity.certificate-unregistered"
    );
    assert_eq!(
        authorize_sender(&h, &Report::default()).unwrap_err().code(),
        "identity.sender-missing"
    );
    // Envelope sender spoofing.
    let mut r = report(("5790000209354", None));
    r.transport = Some(Transport {
        kind: TransportKind::Vans,
        id: None,
        message_id: None,
        sender: Party {
            gln: Some("5790001348120".into()),
            sor: None,
        },
        receiver: Party::default(),
    });
    assert_eq!(
        authorize_sender(&h, &r).unwrap_err().code(),
        "identity.envelope-sender-not-allowed"
    );
    // Inbox: receive_for defaults to the send_as GLNs.
    authorize_receiver(&m, "5790001348120").unwrap();
    assert_eq!(
        authorize_receiver(&m, "5790000209354").unwrap_err().code(),
        "identity.receiver-not-allowed"
    );
    assert!(sammen_identity::REFUSAL_CODES.contains(&spoof.code()));
    assert!(
        !spoof.to_string().contains("579"),
        "reason echoes a value: {spoof}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_server_certificate_and_partners_for_new_handshakes() {
    let p = pki("");
    let id = Arc::new(TlsIdentity::load(p.files.clone()).unwrap());
    let (addr, mut rx) = server(id.clone()).await;
    let good = client(&p.ca, &p.ca, &ClientSpec::new("good", 30));
    let fp1 = roundtrip(addr, good.clone()).await.unwrap();
    rx.recv().await.unwrap().unwrap();
    assert!(id.snapshot().registry.is_empty());
    assert_eq!(id.reload_if_changed().unwrap(), ReloadOutcome::Unchanged);

    // New server certificate (and a partner) on disk.
    let server2 = p.ca.issue_server(&["localhost"], 60).unwrap();
    std::fs::write(&p.files.cert, &server2.cert_pem).unwrap();
    std::fs::write(&p.files.key, &server2.key_pem).unwrap();
    let hosp = p.ca.issue_client(&ClientSpec::new("h", 30)).unwrap();
    std::fs::write(
        p.files.partners_file.as_ref().unwrap(),
        format!(
            "[[partner]]\nname = \"hospital\"\nfingerprint = \"{}\"\nsend_as = [{{ gln = \"5790000209354\" }}]\n",
            sammen_identity::fingerprint(&hosp.cert_der)
        ),
    )
    .unwrap();
    assert!(matches!(
        id.reload_if_changed().unwrap(),
        ReloadOutcome::Reloaded { generation: 1 }
    ));
    let fp2 = roundtrip(addr, good).await.unwrap();
    rx.recv().await.unwrap().unwrap();
    assert_ne!(fp1, fp2);
    assert_eq!(fp2, sammen_identity::fingerprint(&server2.cert_der));
    let hcfg = sammen_identity::client_config(
        vec![hosp.cert_der.clone()],
        hosp.key_der(),
        std::slice::from_ref(&p.ca.cert.cert_der),
    )
    .unwrap();
    roundtrip(addr, hcfg).await.unwrap();
    assert_eq!(
        rx.recv().await.unwrap().unwrap(),
        sammen_identity::fingerprint(&hosp.cert_der)
    );
    // Expiry data: the server (~60 days) and the hospital seen in the handshake (~30 days).
    let ex = id.expiries(std::time::SystemTime::now());
    assert_eq!(ex.len(), 2);
    assert!((58.0..61.0).contains(&ex[0].days), "{ex:?}");
    assert!((28.0..31.0).contains(&ex[1].days), "{ex:?}");

    // A broken file: reload fails, the previous generation stays in use.
    std::fs::write(&p.files.cert, "not pem").unwrap();
    assert!(id.reload().is_err());
    assert_eq!(id.snapshot().generation, 1);
    let good = client(&p.ca, &p.ca, &ClientSpec::new("good", 30));
    assert_eq!(roundtrip(addr, good).await.unwrap(), fp2);
    drop(p.dir);
}

#[test]
fn dev_pki_is_complete_private_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    let pki = generate_dev_pki(&pki_dir).unwrap();
    assert!(pki.created);
    #[cfg(unix)]
    for key in [
        &pki.ca_key,
        &pki.server_key,
        &pki.hospital_key,
        &pki.municipality_key,
    ] {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(key).unwrap().permissions().mode() & 0o777,
            0o600,
            "{key:?}"
        );
    }
    let before = std::fs::read(&pki.server_cert).unwrap();
    let again = generate_dev_pki(&pki_dir).unwrap();
    assert!(!again.created);
    assert_eq!(std::fs::read(&pki.server_cert).unwrap(), before);
    // Partial: refused, nothing written.
    std::fs::remove_file(&pki.hospital_cert).unwrap();
    assert!(matches!(
        generate_dev_pki(&pki_dir),
        Err(sammen_identity::IdentityError::PartialDevPki(_))
    ));
    assert!(!pki.hospital_cert.exists());

    // The snippet maps the hospital (by fingerprint) and the municipality (by issuer + organizationIdentifier).
    let pki_dir = dir.path().join("pki2");
    let pki = generate_dev_pki(&pki_dir).unwrap();
    let files = TlsFiles::from_config(&sammen_config::TlsConfig::default(), &[], &pki_dir);
    let id = TlsIdentity::load(files).unwrap();
    let snap = id.snapshot();
    for (cert, gln) in [
        (&pki.hospital_cert, "5790000209354"),
        (&pki.municipality_cert, "5790001348120"),
    ] {
        let der = sammen_identity::load_certs(cert).unwrap();
        let peer = id.identify(&snap, &der).unwrap();
        assert_eq!(peer.partner.unwrap().primary_gln(), Some(gln));
    }
}
