//! The AMQP door on a real RabbitMQ (fails loudly when it is down): an EHR publishes to `sammen.ingress`
//! as AMQP user `guest` (mapped to the hospital); a valid message reaches the municipality's queue; an
//! invalid one is answered with a fatal-error Acknowledgement (valid, with its OperationOutcome) in the
//! hospital's queue; a spoofed sender and a message without user-id are refused with their audit leaf.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use sammen_bus::{AmqpBus, AmqpConfig, Bus, EmbeddedBus, Source, Subscription, Topology};
use sammen_ingress::amqp::{ingress_queue, process, run_amqp_ingress, AmqpOutcome, AmqpUsers};
use sammen_ingress::{Ingress, IngressConfig, Receivers};
use sammen_model::{AckCode, Family, Party};
use sammen_outbox::sammen_audit::ops::search_store;
use sammen_outbox::sammen_audit::{AuditConfig, PatientKey, Search};
use sammen_outbox::OutboxConfig;
use sammen_relay::{Relay, RelayConfig, SharedOutbox};
use sammen_store::{FjallStore, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const HOSP: &str = "5790000209354";
const MUNI: &str = "5790001348120";
const HN: &str = "examples/hospitalnotification/Bundle-a5e5b880-c087-4055-b9ec-99108695f81d.xml";
const HN_MSG: &str = "b9b4818e-02de-4cc4-b418-d20cbc7b5404";
const HN_BUNDLE: &str = "a5e5b880-c087-4055-b9ec-99108695f81d";

fn url() -> String {
    std::env::var("SAMMEN_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
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

fn fresh_hn() -> (String, String) {
    let base = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../conformance")
            .join(HN),
    )
    .unwrap();
    let id = fresh_id();
    (
        id.clone(),
        base.replace(HN_MSG, &id).replace(HN_BUNDLE, &fresh_id()),
    )
}

async fn receive(sub: &mut Subscription, what: &str) -> sammen_bus::BusMessage {
    let d = tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing arrived"))
        .unwrap();
    let m = d.message.clone();
    d.ack().await.unwrap();
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_ingress_validates_answers_and_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(FjallStore::open(dir.path(), sammen_outbox::trees::AUDITED).unwrap());
    let audit = AuditConfig {
        origin: "sammen.test/amqp-ingress".into(),
        checkpoint_every: 64,
        checkpoint_interval_ms: 60_000,
        export_dir: None,
        patient_key: PatientKey::new(b"test-patient-hmac-key-0123456789").unwrap(),
    };
    let key = sammen_outbox::sammen_audit::SigningKey::from_bytes(&[9; 32]);
    let outbox: SharedOutbox =
        Arc::new(sammen_outbox::open_audited(store, OutboxConfig::default(), audit, key).unwrap());
    let topology = Topology::namespaced(&format!("amqpin{}", &fresh_id()[..8]));
    let glns = vec![HOSP.to_string(), MUNI.to_string()];
    let mut c = AmqpConfig::new(url());
    c.topology = topology.clone();
    c.receivers = glns.clone();
    let bus = AmqpBus::start(c);
    sammen_bus::wait_connected(&bus, Duration::from_secs(10))
        .await
        .expect("RabbitMQ must run on 127.0.0.1:5672 (rabbitmq-server -detached)");
    let bus: Arc<dyn Bus> = Arc::new(bus);
    let relay = Relay::new(
        outbox.clone(),
        bus.clone(),
        RelayConfig {
            receivers: glns,
            poll: Duration::from_millis(100),
            ..RelayConfig::default()
        },
    );
    let ing = Arc::new(Ingress::new(
        outbox.clone(),
        bus.clone(),
        Receivers::new([
            (HOSP, Some("265161000016000")),
            (MUNI, Some("953741000016009")),
        ]),
        IngressConfig::default(),
        relay.waker(),
    ));
    let stop = CancellationToken::new();
    let s = stop.child_token();
    tokio::spawn(async move { relay.run(s).await.unwrap() });
    let users = AmqpUsers::new([(
        "guest".to_string(),
        vec![Party {
            gln: Some(HOSP.into()),
            sor: None,
        }],
    )]);
    let queue = ingress_queue(&topology);
    tokio::spawn(run_amqp_ingress(
        ing,
        users,
        url(),
        queue.clone(),
        sammen_backoff::ExponentialBackoff::default(),
        stop.child_token(),
    ));
    for g in [HOSP, MUNI] {
        bus.ensure_receiver(g).await.unwrap();
    }
    let mut muni_q = bus.subscribe(Source::Inbox(MUNI.into()), 8).await.unwrap();
    let mut hosp_q = bus.subscribe(Source::Inbox(HOSP.into()), 8).await.unwrap();

    // The EHR's side: declare the queue as the broker does and publish with confirms, as user guest.
    let conn = Connection::connect(&url(), ConnectionProperties::default())
        .await
        .expect("RabbitMQ must run on 127.0.0.1:5672");
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
    let publish = |body: String, user: Option<&'static str>| {
        let ch = ch.clone();
        let q = queue.clone();
        async move {
            let mut props = BasicProperties::default().with_delivery_mode(2);
            if let Some(u) = user {
                props = props.with_user_id(ShortString::from(u));
            }
            ch.basic_publish(
                "".into(),
                q.as_str().into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                props,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        }
    };

    // Valid: stored and routed to the municipality.
    let (id, hn) = fresh_hn();
    publish(hn, Some("guest")).await;
    assert_eq!(receive(&mut muni_q, "valid message").await.message_id, id);

    // Invalid (activity outside the value set): a fatal-error Acknowledgement goes back to the hospital.
    let (bad_id, bad) = fresh_hn();
    publish(
        bad.replace(
            "<code value=\"admit-inpatient\"/>",
            "<code value=\"admit-nowhere\"/>",
        ),
        Some("guest"),
    )
    .await;
    let a = receive(&mut hosp_q, "fatal-error acknowledgement").await;
    assert_eq!(a.family, Family::Acknowledgement);
    let r = sammen_adapters::validate(&a.body, &sammen_adapters::Options::default());
    assert!(r.is_valid(), "{:#?}", r.issues);
    let resp = r.response.unwrap();
    assert_eq!(
        (resp.message_id.as_str(), resp.code),
        (bad_id.as_str(), AckCode::FatalError)
    );
    assert_eq!(r.sender.gln.as_deref(), Some(MUNI));
    assert_eq!(r.receiver.gln.as_deref(), Some(HOSP));
    let text = String::from_utf8_lossy(&a.body);
    assert!(
        text.contains("OperationOutcome") && text.contains("medcom-acknowledgement-error-codes"),
        "{text}"
    );

    // Spoofed sender (the municipality's message under the hospital's user) and no user-id: refused.
    let (spoof_id, spoof) = fresh_hn();
    let spoof = spoof
        .replace("5790000209354", "@H")
        .replace("5790001348120", "5790000209354")
        .replace("@H", "5790001348120")
        .replace("265161000016000", "@S")
        .replace("953741000016009", "265161000016000")
        .replace("@S", "953741000016009");
    publish(spoof, Some("guest")).await;
    let (anon_id, anon) = fresh_hn();
    publish(anon, None).await;
    // A last valid message proves the two above were consumed (one queue, in order) and went nowhere.
    let (last_id, last) = fresh_hn();
    publish(last, Some("guest")).await;
    assert_eq!(
        receive(&mut muni_q, "last message").await.message_id,
        last_id
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), hosp_q.next())
            .await
            .is_err()
    );
    let a = outbox.audit().unwrap();
    for (m, want) in [
        (&id, "accepted"),
        (&bad_id, "rejected"),
        (&spoof_id, "identity-refused"),
        (&anon_id, "identity-refused"),
    ] {
        let kinds: Vec<&str> = search_store(a.store(), &Search::MessageId(m.clone()))
            .unwrap()
            .iter()
            .map(|(_, l)| l.event.kind())
            .collect();
        assert!(
            kinds.contains(&"received") && kinds.contains(&want),
            "{m}: {kinds:?}"
        );
    }
    assert!(outbox.find(&spoof_id).unwrap().is_empty());
    assert!(outbox.find(&anon_id).unwrap().is_empty());
    stop.cancel();
    bus.close().await;
}

/// The same decisions without RabbitMQ: `process` on an embedded bus (the consumer loop only adds
/// ack/nack around it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_ingress_decisions_without_rabbitmq() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(FjallStore::open(dir.path(), sammen_outbox::trees::AUDITED).unwrap());
    let audit = AuditConfig {
        origin: "sammen.test/amqp-ingress".into(),
        checkpoint_every: 64,
        checkpoint_interval_ms: 60_000,
        export_dir: None,
        patient_key: PatientKey::new(b"test-patient-hmac-key-0123456789").unwrap(),
    };
    let key = sammen_outbox::sammen_audit::SigningKey::from_bytes(&[9; 32]);
    let outbox: SharedOutbox =
        Arc::new(sammen_outbox::open_audited(store, OutboxConfig::default(), audit, key).unwrap());
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::in_memory(Topology::namespaced("amqpin")));
    let ing = Arc::new(Ingress::new(
        outbox.clone(),
        bus,
        Receivers::new([
            (HOSP, Some("265161000016000")),
            (MUNI, Some("953741000016009")),
        ]),
        IngressConfig::default(),
        Arc::new(tokio::sync::Notify::new()),
    ));
    let users = AmqpUsers::new([(
        "ehr".to_string(),
        vec![Party {
            gln: Some(HOSP.into()),
            sor: None,
        }],
    )]);
    let (id, hn) = fresh_hn();
    let o = process(&ing, &users, Some("ehr"), hn.as_bytes()).await;
    assert_eq!(
        o,
        AmqpOutcome::Accepted {
            message_id: id.clone()
        }
    );
    // Redelivery: a duplicate, nothing new.
    assert_eq!(
        process(&ing, &users, Some("ehr"), hn.as_bytes()).await,
        AmqpOutcome::Duplicate
    );
    // Invalid: answered with a fatal-error ack queued for the hospital; a redelivery answers the same.
    let (bad_id, bad) = fresh_hn();
    let bad = bad.replace(
        "<code value=\"admit-inpatient\"/>",
        "<code value=\"admit-nowhere\"/>",
    );
    let AmqpOutcome::Answered {
        ack_message_id,
        code,
    } = process(&ing, &users, Some("ehr"), bad.as_bytes()).await
    else {
        panic!()
    };
    assert!(!code.is_empty());
    let again = process(&ing, &users, Some("ehr"), bad.as_bytes()).await;
    assert!(
        matches!(&again, AmqpOutcome::Answered { ack_message_id: a, .. } if a == &ack_message_id),
        "{again:?}"
    );
    let queued = outbox
        .next_batch(
            Some(&Party {
                gln: Some(HOSP.into()),
                sor: None,
            }),
            10,
        )
        .unwrap();
    assert_eq!(
        queued.len(),
        1,
        "one answer, however often it is redelivered"
    );
    let r = sammen_adapters::validate(&queued[0].payload, &sammen_adapters::Options::default());
    assert!(r.is_valid(), "{:#?}", r.issues);
    assert_eq!(r.response.unwrap().message_id, bad_id);
    // Unknown user, no user, and a sender the user may not send as: refused, nothing stored.
    let (x, m) = fresh_hn();
    for user in [Some("stranger"), None] {
        assert!(matches!(
            process(&ing, &users, user, m.as_bytes()).await,
            AmqpOutcome::Refused { .. }
        ));
    }
    assert!(outbox.find(&x).unwrap().is_empty());
    assert_eq!(outbox.find(&id).unwrap().len(), 1);
}
