//! Scale-out (issue #6): `deploy/scale-out/run.sh` with this build — a three-node RabbitMQ cluster on
//! loopback (its own node names, ports, data dirs and cookie; the node on 5672 is not touched), two
//! `sammen serve` nodes, load from both, one RabbitMQ node stopped and restarted mid-run; every message
//! answered 202 must reach a subscriber, and reach `delivered` in the outbox of the node that answered the
//! 202 (its receipt must come back to that node, not to the other one). About 2–3 minutes; needs RabbitMQ
//! installed (not running).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn every_accepted_message_is_delivered_on_its_node_across_a_rabbitmq_node_restart() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("bash")
        .arg(root.join("deploy/scale-out/run.sh"))
        .env("SAMMEN", env!("CARGO_BIN_EXE_sammen"))
        .env("DURATION", "30")
        .env("STOP_AT", "10")
        .env("DOWN", "10")
        .env("CLIENTS", "2")
        .output()
        .expect("bash runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scale-out run failed:\n{text}");
    assert!(text.contains("PASS"), "{text}");
    // The load must have crossed the outage, or the run proves nothing about it.
    assert!(text.contains("missing 0"), "{text}");
    assert!(
        text.contains("not delivered on the accepting node 0"),
        "{text}"
    );
    // Both nodes reported, each with nothing left short of `delivered`.
    assert_eq!(
        text.matches("not delivered in its outbox 0").count(),
        2,
        "{text}"
    );
    let answered: u64 = text
        .lines()
        .find_map(|l| l.split("202 answers ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("summary line");
    assert!(
        answered >= 100,
        "only {answered} messages accepted:\n{text}"
    );
}
