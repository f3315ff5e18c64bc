//! The MedCom conversation over real mutual TLS, in process, on the embedded bus and on RabbitMQ: a message
//! goes out, the receiver gets it from its queue, posts its acknowledgement, the sender's queue gets that,
//! and the original is `acknowledged(ok)` — for a HospitalNotification, a CareCommunication reply thread and
//! an OIOXML XDIS21 + XCTL03 pair. Plus the acknowledgement rules (resend answered with the same ack, a
//! second different ack refused, an ack of an ack refused, uncorrelated acks) and the audit leaves the
//! ingress writes (received, rejected, identity and certificate refusals, duplicate) with no CPR or name
//! anywhere in the audit data. RabbitMQ tests fail loudly when it is down.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use base64::Engine as _;
use http_body_util::BodyExt;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use sammen_bus::{
    AmqpBus, AmqpConfig, Bus, BusMessage, EmbeddedBus, Source, Subscription, Topology,
};
use sammen_bus_store::StoreQueueStore;
use sammen_identity::rustls::pki_types::ServerName;
use sammen_identity::{CertAuthority, ClientSpec, Issued, TlsFiles, TlsIdentity};
use sammen_ingress::tls::{serve_tls, tls_router, TlsServeConfig};
use sammen_ingress::{Ingress, IngressConfig, Receivers};
use sammen_outbox::sammen_audit::ops::search_store;
use sammen_outbox::sammen_audit::{
    stored_leaves, trees as audit_trees, AuditConfig, Leaf, PatientKey, Search,
};
use sammen_outbox::OutboxConfig;
use sammen_relay::{Relay, RelayConfig, SharedOutbox};
use sammen_store::{FjallStore, Store};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const HOSP: &str = "5790000209354";
const HOSP_SOR: &str = "265161000016000";
const MUNI: &str = "5790001348120";
const MUNI_SOR: &str = "953741000016009";
/// XDIS21 sample: a hospital (sender) and a municipality (receiver).
const X_HOSP: &str = "5790002515200";
const X_MUNI: &str = "5790002508226";

const HN: &str = "examples/hospitalnotification/Bundle-a5e5b880-c087-4055-b9ec-99108695f81d.xml";
const HN_MSG: &str = "b9b4818e-02de-4cc4-b418-d20cbc7b5404";
const HN_BUNDLE: &str = "a5e5b880-c087-4055-b9ec-99108695f81d";
const HN_CPR: &str = "2509479989";
const HN_NAME: &str = "Elmer";
const CC_NEW: &str = "examples/carecommunication/Bundle-add5e7e2-0c0f-4a4a-bfff-f6f984fa7e3c.xml";
const CC_NEW_MSG: &str = "42cb9200-f421-4d08-8391-7d51a2503cb4";
const CC_NEW_BUNDLE: &str = "add5e7e2-0c0f-4a4a-bfff-f6f984fa7e3c";
const CC_REPLY: &str = "examples/carecommunication/Bundle-b56549f7-ed10-422d-8088-f7222b686e46.xml";
const CC_REPLY_MSG: &str = "d5bd2111-2576-48d3-84d4-8be0297a038d";
const CC_REPLY_BUNDLE: &str = "b56549f7-ed10-422d-8088-f7222b686e46";
/// An ok Acknowledgement from the municipality to the hospital, answering `CC_NEW_MSG`.
const ACK_OK: &str = "examples/acknowledgement/Bundle-a8c041b8-c65a-4fde-a90f-962076918834.xml";
const ACK_OK_MSG: &str = "aba2d9bf-2c6c-47e8-bce4-7928bcd51019";
const ACK_OK_BUNDLE: &str = "a8c041b8-c65a-4fde-a90f-962076918834";
/// A fatal-error Acknowledgement (with its OperationOutcome), same parties.
const ACK_FATAL: &str = "examples/acknowledgement/Bundle-bc9535ef-ed94-4060-a928-7baddec7ee71.xml";
const ACK_FATAL_ANSWERS: &str = "53128d9b-cede-4c7f-8904-809eab322d7d";
const ACK_FATAL_MSG: &str = "b879c81e-0607-4ccb-b358-24a72208e30d";
const ACK_FATAL_BUNDLE: &str = "bc9535ef-ed94-4060-a928-7baddec7ee71";
const XDIS21_VANS: &str = "examples/oioxml-regionh/XDIS21_SBDH_Payload.xml";
const XCTL03: &str = "examples/oioxml/Flow2-XCTL03_Ex_from_FHIR_XDIS91.xml";

fn example(rel: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../conformance")
            .join(rel),
    )
    .unwrap()
}

/// Byte-wise replace (OIOXML samples are ISO-8859-1, not UTF-8).
fn replace(hay: &[u8], from: &str, to: &str) -> Vec<u8> {
    let (from, to) = (from.as_bytes(), to.as_bytes());
    assert!(
        hay.windows(from.len()).any(|w| w == from),
        "{} not in template",
        String::from_utf8_lossy(from)
    );
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

fn fresh_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let n = N.fetch_add(1, Ordering::SeqCst);
    format!(
        "{:08x}-{:04x}-4000-8000-{:012x}",
        (t >> 16) as u32,
        n & 0xffff,
        t & 0xffff_ffff_ffff
    )
}

/// A FHIR message from a template with a fresh MessageHeader id and Bundle id: (message id, bytes).
fn fresh_fhir(rel: &str, msg: &str, bundle: &str) -> (String, Vec<u8>) {
    let id = fresh_id();
    let b = replace(&example(rel), msg, &id);
    (id, replace(&b, bundle, &fresh_id()))
}

/// The same message again in a new Bundle (a MedCom resend).
fn resend_of(bytes: &[u8], bundle_now: &str) -> Vec<u8> {
    replace(bytes, bundle_now, &fresh_id())
}

fn bundle_id(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let start = s.find("<id value=\"").unwrap() + 11;
    s[start..start + 36].to_string()
}

/// Swap the two dev organisations (GLN and SOR) in a FHIR message.
fn swap_parties(bytes: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for (from, to) in [
        (MUNI, "@M"),
        (MUNI_SOR, "@m"),
        (HOSP, MUNI),
        (HOSP_SOR, MUNI_SOR),
        ("@M", HOSP),
        ("@m", HOSP_SOR),
    ] {
        if b.windows(from.len()).any(|w| w == from.as_bytes()) {
            b = replace(&b, from, to);
        }
    }
    b
}

/// A valid MedCom Acknowledgement answering `original` (a MessageHeader id), sent from the municipality to
/// the hospital (or the other way with `from_hospital`): (its message id, bytes).
fn fhir_ack(original: &str, fatal: bool, from_hospital: bool) -> (String, Vec<u8>) {
    let (rel, answers, msg, bundle) = if fatal {
        (
            ACK_FATAL,
            ACK_FATAL_ANSWERS,
            ACK_FATAL_MSG,
            ACK_FATAL_BUNDLE,
        )
    } else {
        (ACK_OK, CC_NEW_MSG, ACK_OK_MSG, ACK_OK_BUNDLE)
    };
    let b = replace(&example(rel), answers, original);
    let id = fresh_id();
    let b = replace(&b, msg, &id);
    let b = replace(&b, bundle, &fresh_id());
    (id, if from_hospital { swap_parties(&b) } else { b })
}

/// The XDIS21 sample's letter (unwrapped from its VANS envelope) with a fresh envelope and letter id:
/// (letter id, envelope id, bytes).
fn fresh_xdis21() -> (String, String, Vec<u8>) {
    let vans = String::from_utf8(example(XDIS21_VANS)).unwrap();
    let data = vans
        .split("<Data>")
        .nth(1)
        .unwrap()
        .split("</Data>")
        .next()
        .unwrap();
    let inner = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .unwrap();
    let (env, letter) = (
        format!("ENV{}", &fresh_id()[..8]),
        format!("LET{}", &fresh_id()[24..]),
    );
    let mut b = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\r\n".to_vec();
    b.extend(replace(
        &replace(
            &inner,
            "<ns1:Identifier>EPIC394310891</ns1:Identifier>",
            &format!("<ns1:Identifier>{env}</ns1:Identifier>"),
        ),
        "<Identifier>EPIC394310891</Identifier>",
        &format!("<Identifier>{letter}</Identifier>"),
    ));
    (letter, env, b)
}

/// A positive XCTL03 receipt from the XDIS21's receiver to its sender, answering `letter` in `envelope`.
fn xctl03(letter: &str, envelope: &str) -> (String, Vec<u8>) {
    let id = format!("ACK{}", &fresh_id()[24..]);
    let mut b = example(XCTL03);
    for (from, to) in [
        ("KuvertNr1256", format!("KENV{}", &fresh_id()[24..])),
        ("BrevNr5698", id.clone()),
        ("5790000121441", X_MUNI.to_string()),
        ("5790001382445", X_HOSP.to_string()),
        ("KuvNrerwerwe99", envelope.to_string()),
        ("Brevt23400929", letter.to_string()),
        ("XD9134L", "XD2134C".to_string()),
    ] {
        b = replace(&b, from, &to);
    }
    (id, b)
}

#[derive(Clone, Copy)]
enum BusKind {
    Embedded,
    Amqp,
}

struct Env {
    addr: SocketAddr,
    hospital: Arc<sammen_identity::rustls::ClientConfig>,
    muni: Arc<sammen_identity::rustls::ClientConfig>,
    stranger: Arc<sammen_identity::rustls::ClientConfig>,
    outbox: SharedOutbox,
    bus: Arc<dyn Bus>,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn client(ca: &CertAuthority, c: &Issued) -> Arc<sammen_identity::rustls::ClientConfig> {
    sammen_identity::client_config(
        vec![c.cert_der.clone()],
        c.key_der(),
        std::slice::from_ref(&ca.cert.cert_der),
    )
    .unwrap()
}

/// The broker as `sammen serve` wires it: audited outbox, bus, relay, HTTPS ingress with two partners.
async fn start(kind: BusKind) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut trees: Vec<&'static str> = sammen_outbox::trees::AUDITED.to_vec();
    trees.extend(sammen_bus_store::TREES);
    let store: Arc<dyn Store> = Arc::new(FjallStore::open(dir.path().join("db"), &trees).unwrap());
    let audit = AuditConfig {
        origin: "sammen.test/ack".into(),
        checkpoint_every: 64,
        checkpoint_interval_ms: 60_000,
        export_dir: None,
        patient_key: PatientKey::new(b"test-patient-hmac-key-0123456789").unwrap(),
    };
    let key = sammen_outbox::sammen_audit::SigningKey::from_bytes(&[7; 32]);
    let outbox: SharedOutbox = Arc::new(
        sammen_outbox::open_audited(store.clone(), OutboxConfig::default(), audit, key).unwrap(),
    );
    let ns = format!("ack{}", &fresh_id()[..8]);
    let topology = Topology::namespaced(&ns);
    let glns: Vec<String> = [HOSP, MUNI, X_HOSP, X_MUNI].map(String::from).to_vec();
    let bus: Arc<dyn Bus> = match kind {
        BusKind::Embedded => Arc::new(
            EmbeddedBus::open(
                topology.clone(),
                Arc::new(StoreQueueStore::new(store.clone()).unwrap()),
            )
            .unwrap(),
        ),
        BusKind::Amqp => {
            let url = std::env::var("SAMMEN_TEST_AMQP_URL")
                .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
            let mut c = AmqpConfig::new(url);
            c.topology = topology.clone();
            c.receivers = glns.clone();
            let b = AmqpBus::start(c);
            sammen_bus::wait_connected(&b, Duration::from_secs(10))
                .await
                .expect("RabbitMQ must run on 127.0.0.1:5672 (rabbitmq-server -detached)");
            Arc::new(b)
        }
    };
    let relay = Relay::new(
        outbox.clone(),
        bus.clone(),
        RelayConfig {
            receivers: glns,
            poll: Duration::from_millis(100),
            ..RelayConfig::default()
        },
    );
    let ingress = Arc::new(Ingress::new(
        outbox.clone(),
        bus.clone(),
        Receivers::new([
            (HOSP, Some(HOSP_SOR)),
            (MUNI, Some(MUNI_SOR)),
            (X_HOSP, None),
            (X_MUNI, None),
        ]),
        IngressConfig::default(),
        relay.waker(),
    ));
    let stop = CancellationToken::new();
    let s = stop.child_token();
    tokio::spawn(async move { relay.run(s).await.unwrap() });

    let ca = CertAuthority::new("Ack Test CA").unwrap();
    let hospital = ca.issue_client(&ClientSpec::new("hospital", 30)).unwrap();
    let muni = ca.issue_client(&ClientSpec::new("muni", 30)).unwrap();
    let stranger = ca.issue_client(&ClientSpec::new("stranger", 30)).unwrap();
    let server = ca.issue_server(&["localhost", "127.0.0.1"], 30).unwrap();
    let partners = format!(
        r#"
        [[partner]]
        name = "hospital"
        fingerprint = "{}"
        send_as = [{{ gln = "{HOSP}", sor = "{HOSP_SOR}" }}, {{ gln = "{X_HOSP}" }}]
        [[partner]]
        name = "municipality"
        fingerprint = "{}"
        send_as = [{{ gln = "{MUNI}" }}, {{ gln = "{X_MUNI}" }}]
        "#,
        sammen_identity::fingerprint(&hospital.cert_der),
        sammen_identity::fingerprint(&muni.cert_der),
    );
    let files = TlsFiles {
        cert: write(dir.path(), "server.crt", &server.cert_pem),
        key: write(dir.path(), "server.key", &server.key_pem),
        client_ca: vec![write(dir.path(), "ca.crt", &ca.cert.cert_pem)],
        partners_file: Some(write(dir.path(), "partners.toml", &partners)),
        partners: vec![],
    };
    let identity = Arc::new(TlsIdentity::load(files).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s = stop.child_token();
    tokio::spawn(serve_tls(
        listener,
        identity,
        tls_router(ingress),
        TlsServeConfig::default(),
        async move { s.cancelled().await },
    ));
    Env {
        addr,
        hospital: client(&ca, &hospital),
        muni: client(&ca, &muni),
        stranger: client(&ca, &stranger),
        outbox,
        bus,
        stop,
        _dir: dir,
    }
}

impl Env {
    async fn request(
        &self,
        cfg: &Arc<sammen_identity::rustls::ClientConfig>,
        req: hyper::Request<Body>,
    ) -> (u16, serde_json::Value) {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(cfg.clone())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (mut send, conn) = http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        let resp = send.send_request(req).await.unwrap();
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            code,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    async fn post(
        &self,
        cfg: &Arc<sammen_identity::rustls::ClientConfig>,
        body: Vec<u8>,
    ) -> (u16, serde_json::Value) {
        let req = hyper::Request::post("/v1/messages")
            .header("host", "localhost")
            .header("content-type", "application/xml")
            .body(Body::from(body))
            .unwrap();
        self.request(cfg, req).await
    }

    async fn status(&self, id: &str) -> serde_json::Value {
        let req = hyper::Request::get(format!("/v1/messages/{id}"))
            .header("host", "localhost")
            .body(Body::empty())
            .unwrap();
        let (code, v) = self.request(&self.hospital, req).await;
        assert_eq!(code, 200, "{v}");
        v
    }

    async fn shutdown(self) {
        self.stop.cancel();
        self.bus.close().await;
    }
}

/// The next message in `gln`'s queue (acked), within 20 s.
async fn receive(sub: &mut Subscription, what: &str) -> BusMessage {
    let d = tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing arrived"))
        .unwrap_or_else(|| panic!("{what}: subscription ended"));
    let m = d.message.clone();
    d.ack().await.unwrap();
    m
}

/// One exchange: `from` posts `original` (message id `id`), the receiver gets it from its queue, posts
/// `ack` (message id `ack_id`), the sender's queue gets that, and the original is acknowledged(ok).
#[allow(clippy::too_many_arguments)]
async fn exchange(
    env: &Env,
    from: &Arc<sammen_identity::rustls::ClientConfig>,
    to: &Arc<sammen_identity::rustls::ClientConfig>,
    (to_sub, from_sub): (&mut Subscription, &mut Subscription),
    id: &str,
    original: Vec<u8>,
    ack_id: &str,
    ack: Vec<u8>,
) {
    let (code, v) = env.post(from, original.clone()).await;
    assert_eq!((code, v["status"].as_str()), (202, Some("accepted")), "{v}");
    let m = receive(to_sub, "original").await;
    assert_eq!(m.message_id, id);
    assert_eq!(m.body.as_ref(), original.as_slice());
    assert!(!m.resend);
    let (code, v) = env.post(to, ack).await;
    assert_eq!(code, 202, "{v}");
    assert_eq!(v["correlation"], "correlated", "{v}");
    assert_eq!(v["acknowledges"], id, "{v}");
    let a = receive(from_sub, "acknowledgement").await;
    assert_eq!(a.message_id, ack_id);
    assert!(a.family.is_acknowledgement());
    let st = env.status(id).await;
    assert_eq!(st["state"], "acknowledged-ok", "{st}");
    assert_eq!(
        st["records"][0]["acknowledged_by"]["message_id"], ack_id,
        "{st}"
    );
    assert_eq!(st["records"][0]["acknowledged_by"]["code"], "ok", "{st}");
    let st = env.status(ack_id).await;
    assert_eq!(st["records"][0]["correlation"], "correlated", "{st}");
}

async fn subscribe(env: &Env, gln: &str) -> Subscription {
    // Do not race the relay, which declares inboxes as it starts.
    env.bus.ensure_receiver(gln).await.unwrap();
    env.bus
        .subscribe(Source::Inbox(gln.into()), 8)
        .await
        .unwrap()
}

async fn hospital_notification_conversation(kind: BusKind) {
    let env = start(kind).await;
    let mut muni_q = subscribe(&env, MUNI).await;
    let mut hosp_q = subscribe(&env, HOSP).await;
    let (id, hn) = fresh_fhir(HN, HN_MSG, HN_BUNDLE);
    let (ack_id, ack) = fhir_ack(&id, false, false);
    let (h, m) = (env.hospital.clone(), env.muni.clone());
    exchange(
        &env,
        &h,
        &m,
        (&mut muni_q, &mut hosp_q),
        &id,
        hn.clone(),
        &ack_id,
        ack,
    )
    .await;

    // A resend (new Bundle id) of the acknowledged message: the same acknowledgement comes back, flagged
    // as a resend; nothing goes to the municipality.
    let (code, v) = env.post(&h, resend_of(&hn, &bundle_id(&hn))).await;
    assert_eq!(
        (code, v["status"].as_str()),
        (200, Some("acknowledged")),
        "{v}"
    );
    assert_eq!(v["acknowledgement"]["message_id"], ack_id.as_str(), "{v}");
    assert_eq!(v["acknowledgement"]["code"], "ok", "{v}");
    let again = receive(&mut hosp_q, "acknowledgement again").await;
    assert_eq!(again.message_id, ack_id);
    assert!(again.resend, "re-routed ack must carry the resend flag");

    // A second, different acknowledgement: refused, the first kept.
    let (_, fatal) = fhir_ack(&id, true, false);
    let (code, v) = env.post(&m, fatal).await;
    assert_eq!(
        (code, v["error"].as_str()),
        (409, Some("ack.already-acknowledged")),
        "{v}"
    );
    assert_eq!(
        env.status(&id).await["records"][0]["state"],
        "acknowledged-ok"
    );

    // An acknowledgement of the acknowledgement: refused with a code.
    let (_, ack_of_ack) = fhir_ack(&ack_id, false, true);
    let (code, v) = env.post(&h, ack_of_ack).await;
    assert_eq!(code, 422, "{v}");
    assert!(
        v["issues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["code"] == "ack.answers-acknowledgement"),
        "{v}"
    );

    // An acknowledgement of a message the broker never saw: routed, marked uncorrelated.
    let (lone_id, lone) = fhir_ack(&fresh_id(), false, false);
    let (code, v) = env.post(&m, lone).await;
    assert_eq!(
        (code, v["correlation"].as_str()),
        (202, Some("uncorrelated")),
        "{v}"
    );
    assert_eq!(
        receive(&mut hosp_q, "uncorrelated ack").await.message_id,
        lone_id
    );
    assert_eq!(
        env.status(&lone_id).await["records"][0]["correlation"],
        "uncorrelated"
    );

    // A resend of an unacknowledged message is forwarded, flagged.
    let (id2, hn2) = fresh_fhir(HN, HN_MSG, HN_BUNDLE);
    assert_eq!(env.post(&h, hn2.clone()).await.0, 202);
    assert!(!receive(&mut muni_q, "second").await.resend);
    let (code, v) = env.post(&h, resend_of(&hn2, &bundle_id(&hn2))).await;
    assert_eq!((code, v["resend"].as_bool()), (202, Some(true)), "{v}");
    let r = receive(&mut muni_q, "resend").await;
    assert_eq!(r.message_id, id2);
    assert!(r.resend);
    env.shutdown().await;
}

async fn care_communication_reply_thread(kind: BusKind) {
    let env = start(kind).await;
    let mut muni_q = subscribe(&env, MUNI).await;
    let mut hosp_q = subscribe(&env, HOSP).await;
    let (h, m) = (env.hospital.clone(), env.muni.clone());
    // Hospital → municipality (new-message), acknowledged by the municipality.
    let (id, msg) = fresh_fhir(CC_NEW, CC_NEW_MSG, CC_NEW_BUNDLE);
    let (ack_id, ack) = fhir_ack(&id, false, false);
    exchange(
        &env,
        &h,
        &m,
        (&mut muni_q, &mut hosp_q),
        &id,
        msg,
        &ack_id,
        ack,
    )
    .await;
    // Municipality → hospital (reply-message), acknowledged by the hospital.
    let (rid, reply) = fresh_fhir(CC_REPLY, CC_REPLY_MSG, CC_REPLY_BUNDLE);
    let (rack_id, rack) = fhir_ack(&rid, false, true);
    exchange(
        &env,
        &m,
        &h,
        (&mut hosp_q, &mut muni_q),
        &rid,
        reply,
        &rack_id,
        rack,
    )
    .await;
    env.shutdown().await;
}

async fn oioxml_xdis21_and_xctl03(kind: BusKind) {
    let env = start(kind).await;
    let mut to_q = subscribe(&env, X_MUNI).await;
    let mut from_q = subscribe(&env, X_HOSP).await;
    let (h, m) = (env.hospital.clone(), env.muni.clone());
    let (letter, envelope, xdis21) = fresh_xdis21();
    let (ack_id, ack) = xctl03(&letter, &envelope);
    exchange(
        &env,
        &h,
        &m,
        (&mut to_q, &mut from_q),
        &letter,
        xdis21,
        &ack_id,
        ack,
    )
    .await;
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_hospital_notification_embedded() {
    hospital_notification_conversation(BusKind::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_hospital_notification_rabbitmq() {
    hospital_notification_conversation(BusKind::Amqp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_care_communication_reply_thread_embedded() {
    care_communication_reply_thread(BusKind::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_care_communication_reply_thread_rabbitmq() {
    care_communication_reply_thread(BusKind::Amqp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_oioxml_xdis21_xctl03_embedded() {
    oioxml_xdis21_and_xctl03(BusKind::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_oioxml_xdis21_xctl03_rabbitmq() {
    oioxml_xdis21_and_xctl03(BusKind::Amqp).await;
}

impl Env {
    /// `GET /v1/inbox/{gln}?wait=20` as `cfg`: status, the `Sammen-*` headers and the raw body.
    async fn inbox(
        &self,
        cfg: &Arc<sammen_identity::rustls::ClientConfig>,
        gln: &str,
    ) -> (u16, hyper::HeaderMap, Vec<u8>) {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(cfg.clone())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (mut send, conn) = http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::get(format!("/v1/inbox/{gln}?wait=20"))
            .header("host", "localhost")
            .body(Body::empty())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        let (code, headers) = (resp.status().as_u16(), resp.headers().clone());
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (code, headers, body)
    }

    /// Read the next message of `gln`'s inbox as `cfg` and ack it over HTTPS; its message id and bytes.
    async fn read_inbox(
        &self,
        cfg: &Arc<sammen_identity::rustls::ClientConfig>,
        gln: &str,
    ) -> (String, Vec<u8>) {
        let (code, h, body) = self.inbox(cfg, gln).await;
        assert_eq!(code, 200, "{gln}: {}", String::from_utf8_lossy(&body));
        let header = |k: &str| h.get(k).unwrap().to_str().unwrap().to_string();
        let ack = hyper::Request::post(header("sammen-ack"))
            .header("host", "localhost")
            .body(Body::empty())
            .unwrap();
        let (code, v) = self.request(cfg, ack).await;
        assert_eq!((code, v["status"].as_str()), (200, Some("acked")), "{v}");
        (header("sammen-message-id"), body)
    }
}

/// The conversation without AMQP on the receivers' side: the municipality reads the admission from its
/// HTTP inbox and acks the delivery, answers with an ok Acknowledgement, and the hospital reads that from
/// its own inbox; the original ends acknowledged(ok). The municipality cannot read the hospital's inbox.
async fn conversation_over_the_inbox(kind: BusKind) {
    let env = start(kind).await;
    let (h, m) = (env.hospital.clone(), env.muni.clone());
    let (id, hn) = fresh_fhir(HN, HN_MSG, HN_BUNDLE);
    let (code, v) = env.post(&h, hn.clone()).await;
    assert_eq!((code, v["status"].as_str()), (202, Some("accepted")), "{v}");

    let (got_id, body) = env.read_inbox(&m, MUNI).await;
    assert_eq!(
        (got_id.as_str(), body.as_slice()),
        (id.as_str(), hn.as_slice())
    );
    let st = env.status(&id).await;
    assert_eq!(st["state"], "delivered", "{st}");

    let (ack_id, ack) = fhir_ack(&id, false, false);
    let (code, v) = env.post(&m, ack.clone()).await;
    assert_eq!(
        (code, v["correlation"].as_str()),
        (202, Some("correlated")),
        "{v}"
    );
    // Not the municipality's to read.
    let (code, _, _) = env.inbox(&m, HOSP).await;
    assert_eq!(code, 403);
    let (got_ack, body) = env.read_inbox(&h, HOSP).await;
    assert_eq!(
        (got_ack.as_str(), body.as_slice()),
        (ack_id.as_str(), ack.as_slice())
    );

    let st = env.status(&id).await;
    assert_eq!(st["state"], "acknowledged-ok", "{st}");
    assert_eq!(
        st["records"][0]["acknowledged_by"]["message_id"],
        ack_id.as_str(),
        "{st}"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_over_the_inbox_embedded() {
    conversation_over_the_inbox(BusKind::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_over_the_inbox_rabbitmq() {
    conversation_over_the_inbox(BusKind::Amqp).await;
}

/// Every leaf of the log, decoded, and the raw bytes of the audit trees.
fn audit_data(env: &Env) -> (Vec<Leaf>, Vec<u8>) {
    let a = env.outbox.audit().unwrap();
    let mut raw = Vec::new();
    for tree in [
        audit_trees::LEAVES,
        audit_trees::NODES,
        audit_trees::CHECKPOINTS,
        audit_trees::INDEX,
        audit_trees::META,
    ] {
        for (k, v) in a.store().range(tree, &[], None, usize::MAX).unwrap() {
            raw.extend_from_slice(&k);
            raw.extend_from_slice(&v);
        }
    }
    let leaves = stored_leaves(a.store())
        .unwrap()
        .into_iter()
        .map(|(_, v)| Leaf::decode(&v).unwrap())
        .collect();
    (leaves, raw)
}

fn kinds_for(env: &Env, message_id: &str) -> Vec<String> {
    let a = env.outbox.audit().unwrap();
    search_store(a.store(), &Search::MessageId(message_id.into()))
        .unwrap()
        .into_iter()
        // What the relay does meanwhile is not the ingress's.
        .filter(|(_, l)| !matches!(l.event.kind(), "published" | "delivered"))
        .map(|(_, l)| match &l.event {
            sammen_outbox::sammen_audit::Event::Rejected { code } => format!("rejected:{code}"),
            e => e.kind().to_owned(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_events_leave_audit_leaves_without_personal_data() {
    let env = start(BusKind::Embedded).await;
    let (h, m, s) = (env.hospital.clone(), env.muni.clone(), env.stranger.clone());
    // Accepted, then the exact repeat (duplicate).
    let (id, hn) = fresh_fhir(HN, HN_MSG, HN_BUNDLE);
    assert_eq!(env.post(&h, hn.clone()).await.0, 202);
    assert_eq!(env.post(&h, hn.clone()).await.0, 200);
    // Sender spoofing: the municipality's certificate posting the hospital's message (403).
    let (spoof_id, spoof) = fresh_fhir(HN, HN_MSG, HN_BUNDLE);
    let (code, v) = env.post(&m, spoof).await;
    assert_eq!(
        (code, v["error"].as_str()),
        (403, Some("identity.sender-not-allowed"))
    );
    // Invalid: an activity code outside the value set (422).
    let (bad_id, bad) = fresh_fhir(HN, HN_MSG, HN_BUNDLE);
    let bad = replace(
        &bad,
        "<code value=\"admit-inpatient\"/>",
        "<code value=\"admit-nowhere\"/>",
    );
    let (code, v) = env.post(&h, bad).await;
    assert_eq!(code, 422, "{v}");
    let first_code = v["issues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["severity"] == "error")
        .unwrap()["code"]
        .as_str()
        .unwrap()
        .to_owned();
    // Valid, but for a receiver this broker does not serve: refused after validation (422).
    let (unrouted_id, unrouted) = fresh_fhir(HN, HN_MSG, HN_BUNDLE);
    let unrouted = replace(&unrouted, MUNI, "5790000000012");
    let (code, v) = env.post(&h, unrouted).await;
    assert_eq!(code, 422, "{v}");
    // An unregistered certificate (403 before anything is read).
    let (code, v) = env.post(&s, hn.clone()).await;
    assert_eq!(
        (code, v["error"].as_str()),
        (403, Some("identity.certificate-unregistered"))
    );

    assert_eq!(
        kinds_for(&env, &id),
        ["received", "accepted", "received", "duplicate"]
    );
    assert_eq!(kinds_for(&env, &spoof_id), ["received", "identity-refused"]);
    assert_eq!(
        kinds_for(&env, &bad_id),
        ["received".to_owned(), format!("rejected:{first_code}")]
    );
    assert_eq!(
        kinds_for(&env, &unrouted_id),
        [
            "received".to_owned(),
            format!("rejected:{}", sammen_ingress::UNKNOWN_RECEIVER)
        ]
    );
    let (leaves, raw) = audit_data(&env);
    let cert_refusals: Vec<&Leaf> = leaves
        .iter()
        .filter(|l| l.event.kind() == "certificate-refused")
        .collect();
    assert_eq!(cert_refusals.len(), 1);
    assert!(cert_refusals[0].cert_fingerprint.is_some());
    assert!(cert_refusals[0].message_id.is_none());
    // Each message leaf names sender, receiver, family, payload hash and (over mTLS) the certificate.
    let accepted = leaves
        .iter()
        .find(|l| l.message_id.as_deref() == Some(id.as_str()) && l.event.kind() == "accepted")
        .unwrap();
    assert_eq!(accepted.sender.as_ref().unwrap().gln.as_deref(), Some(HOSP));
    assert_eq!(
        accepted.receiver.as_ref().unwrap().gln.as_deref(),
        Some(MUNI)
    );
    assert!(accepted.family.is_some() && accepted.payload_sha256.is_some());
    assert!(accepted.cert_fingerprint.is_some() && accepted.patient.is_some());
    // No CPR (with or without dash) and no name anywhere in the audit data.
    let dashed = format!("{}-{}", &HN_CPR[..6], &HN_CPR[6..]);
    for needle in [HN_CPR, dashed.as_str(), HN_NAME] {
        assert!(
            !raw.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{needle} found in the audit data"
        );
    }
    // The patient is findable by the keyed hash only.
    let key = PatientKey::new(b"test-patient-hmac-key-0123456789").unwrap();
    let a = env.outbox.audit().unwrap();
    let by_cpr = search_store(
        a.store(),
        &Search::Cpr {
            cpr: HN_CPR.into(),
            key,
        },
    )
    .unwrap();
    assert!(by_cpr.len() >= 4, "{}", by_cpr.len());
    env.shutdown().await;
}
