//! `deploy/rabbitmq/add-receiver.sh` against the local RabbitMQ node (rabbitmqctl on the PATH, node on
//! 127.0.0.1:5672; fails, never skips, without them), in a fresh vhost that is deleted afterwards with the
//! user: the receiver's user consumes its own inbox and is refused (ACCESS_REFUSED) on another receiver's
//! inbox, on publishing to the route exchange and on publishing through the default exchange.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use sammen_bus::{AmqpBus, AmqpConfig, Bus, BusMessage, Topology};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const MINE: &str = "5790001348120";
const OTHER: &str = "5790000121441";

fn rabbitmqctl(args: &[&str]) -> std::process::Output {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl must be on the PATH (RabbitMQ installed, see .ci/run)");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Deletes the vhost and the user however the test ends.
struct Cleanup {
    vhost: String,
    user: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for args in [
            vec!["delete_vhost", self.vhost.as_str()],
            vec!["delete_user", self.user.as_str()],
        ] {
            let _ = Command::new("rabbitmqctl")
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn message(receiver: &str, id: &str) -> BusMessage {
    BusMessage {
        message_id: id.into(),
        receiver_gln: receiver.into(),
        sender_gln: "5790000209354".into(),
        family: sammen_model::Family::HospitalNotification,
        event: "admit-inpatient".into(),
        content_type: "application/fhir+xml".into(),
        timestamp: 1_700_000_000,
        sha256: "0".repeat(64),
        resend: false,
        body: bytes::Bytes::from_static(b"<Bundle/>"),
    }
}

fn refused(e: &impl std::fmt::Display) -> bool {
    let s = e.to_string();
    s.contains("ACCESS_REFUSED")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_user_reads_only_its_own_inbox() {
    let tag = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        % 1_000_000_000_000;
    let vhost = format!("sammen-receiver-test-{tag}");
    let user = format!("sammen-receiver-{tag}");
    let password = format!("pw-{tag}");
    let _cleanup = Cleanup {
        vhost: vhost.clone(),
        user: user.clone(),
    };
    rabbitmqctl(&["add_vhost", &vhost]);
    rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);

    // Sammen's own topology in the fresh vhost (standard names), one message in each inbox.
    let admin_url = format!("amqp://guest:guest@127.0.0.1:5672/{vhost}");
    let mut c = AmqpConfig::new(admin_url);
    c.topology = Topology::default();
    c.receivers = vec![MINE.into(), OTHER.into()];
    let bus = AmqpBus::start(c);
    sammen_bus::wait_connected(&bus, Duration::from_secs(10))
        .await
        .expect("RabbitMQ must run on 127.0.0.1:5672");
    for (gln, id) in [(MINE, "m-1"), (OTHER, "o-1")] {
        bus.ensure_receiver(gln).await.unwrap();
        let outcome = bus.publish_confirmed(&message(gln, id)).await.unwrap();
        assert!(outcome.is_confirmed(), "{outcome:?}");
    }

    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rabbitmq/add-receiver.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(["-p", &vhost, MINE, &user])
        .env("RECEIVER_PASSWORD", &password)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "add-receiver.sh: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The password never reaches the script's output.
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&password));
    // Refuses a GLN with a wrong check digit.
    let bad = Command::new("bash")
        .arg(&script)
        .args(["-p", &vhost, "5790001348121", &user])
        .env("RECEIVER_PASSWORD", &password)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));

    let url = format!("amqp://{user}:{password}@127.0.0.1:5672/{vhost}");
    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("the receiver user must be able to connect");

    // Its own inbox: consume and ack.
    let ch = conn.create_channel().await.unwrap();
    let mine = Topology::default().inbox_queue(MINE);
    let mut consumer = ch
        .basic_consume(
            mine.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consuming its own inbox");
    let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("no message from its own inbox")
        .unwrap()
        .unwrap();
    assert_eq!(
        d.properties.message_id().as_ref().map(|s| s.as_str()),
        Some("m-1")
    );
    d.ack(BasicAckOptions::default()).await.unwrap();
    // A passive declare (does the queue exist?) needs no configure permission.
    ch.queue_declare(
        mine.as_str().into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("passive declare of its own inbox");

    // Another receiver's inbox: ACCESS_REFUSED.
    let ch2 = conn.create_channel().await.unwrap();
    let other = Topology::default().inbox_queue(OTHER);
    let e = ch2
        .basic_consume(
            other.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("consumed another receiver's inbox");
    assert!(refused(&e), "{e}");
    eprintln!("consume refused: {e}");

    // Publishing, to the route exchange or through the default exchange straight into a queue: refused.
    for (exchange, key) in [
        (
            Topology::default().route_exchange,
            format!("{OTHER}.HospitalNotification.x"),
        ),
        (String::new(), other.clone()),
    ] {
        let ch3 = conn.create_channel().await.unwrap();
        ch3.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let r = async {
            ch3.basic_publish(
                exchange.as_str().into(),
                key.as_str().into(),
                BasicPublishOptions::default(),
                b"forged",
                BasicProperties::default(),
            )
            .await?
            .await
        };
        let e = match tokio::time::timeout(Duration::from_secs(10), r).await {
            Ok(Err(e)) => e.to_string(),
            Ok(Ok(c)) => {
                // The broker closes the channel asynchronously; the next call shows why.
                let again = ch3
                    .basic_publish(
                        exchange.as_str().into(),
                        key.as_str().into(),
                        BasicPublishOptions::default(),
                        b"forged",
                        BasicProperties::default(),
                    )
                    .await;
                format!("{c:?} / {:?} / {:?}", again.err(), ch3.status())
            }
            Err(_) => panic!("publish to {exchange:?} neither confirmed nor refused"),
        };
        assert!(
            refused(&e),
            "publishing to {exchange:?} was not refused: {e}"
        );
        eprintln!("publish to {exchange:?} refused: {e}");
    }
    // Declaring (configure), even its own queue: refused.
    let ch4 = conn.create_channel().await.unwrap();
    let e = ch4
        .queue_declare(
            "sammen.inbox.mine-too".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("declared a queue");
    assert!(refused(&e), "{e}");
    let _ = conn.close(200, "done".into()).await;

    // Nothing was consumed from or added to the other inbox: its one message is still there, untouched.
    // Quorum queue counts in list_queues are statistics emitted every few seconds, so a fresh queue can
    // show 0 for a moment: wait for the count to settle (a consumed message would keep it at 0).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (count, text) = loop {
        let out = rabbitmqctl(&["list_queues", "-p", &vhost, "--quiet", "name", "messages"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let count = text
            .lines()
            .find_map(|l| {
                let mut it = l.split_whitespace();
                (it.next() == Some(other.as_str())).then(|| it.next().unwrap_or("").to_string())
            })
            .unwrap_or_default();
        if count == "1" || std::time::Instant::now() > deadline {
            break (count, text);
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    assert_eq!(count, "1", "{text}");
    bus.close().await;
}
