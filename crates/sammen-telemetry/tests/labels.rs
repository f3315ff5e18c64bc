//! Label sets are closed: the event list follows the schema tables, hostile input never reaches the
//! exposition, and every metric stays within its series bound.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use sammen_model::{AckCode, Family};
use sammen_telemetry::events::*;
use sammen_telemetry::labels::{self, EVENTS};
use sammen_telemetry::{Telemetry, TelemetryConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, SystemTime};

const RECEIVER: &str = "5790001348120";
const PARTNER: &str = "5790000121441";

fn telemetry() -> Telemetry {
    Telemetry::new(&TelemetryConfig {
        glns: vec![RECEIVER.into(), PARTNER.into()],
        reason_codes: vec!["ingress.test-code"],
    })
    .unwrap()
}

fn schema(rel: &str) -> toml::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../schemas")
        .join(rel);
    toml::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn strings(v: &toml::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn event_list_covers_the_schema_tables() {
    let fhir = schema("fhir/valuesets.toml");
    let oio = schema("oioxml/valuesets.toml");
    let mut expected: Vec<String> = strings(&fhir["valuesets"]["activity_all"]);
    expected.extend(strings(&fhir["valuesets"]["response_code"]));
    expected.extend(
        fhir["event"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["code"].as_str().unwrap().to_owned()),
    );
    expected.extend(strings(&oio["status_codes"]));
    for code in &expected {
        assert!(
            EVENTS.contains(&code.as_str()),
            "{code} is missing from labels::EVENTS"
        );
    }
    let set: BTreeSet<_> = EVENTS.iter().collect();
    assert_eq!(set.len(), EVENTS.len(), "duplicate in EVENTS");
}

#[test]
fn closed_sets_map_as_documented() {
    let t = telemetry();
    assert_eq!(
        labels::event(Some("admit-inpatient")).as_str(),
        "admit-inpatient"
    );
    assert_eq!(labels::event(Some("2512489996")).as_str(), "other");
    assert_eq!(labels::event(None).as_str(), "none");
    assert_eq!(labels::family(None).as_str(), "unknown");
    assert_eq!(labels::family(Some(Family::Xdis20)).as_str(), "XDIS20");
    let l = t.labels();
    assert_eq!(
        l.reason(Some("xml.doctype-forbidden")).as_str(),
        "xml.doctype-forbidden"
    );
    assert_eq!(
        l.reason(Some("ingress.test-code")).as_str(),
        "ingress.test-code"
    );
    assert_eq!(l.reason(Some("backpressure")).as_str(), "backpressure");
    assert_eq!(l.reason(Some("Jens Jensen")).as_str(), "other");
    assert_eq!(l.gln(Some(RECEIVER)).as_str(), RECEIVER);
    assert_eq!(l.gln(Some("5790000000005")).as_str(), "unregistered");
    assert_eq!(l.gln(Some("2512489996")).as_str(), "unregistered");
    assert_eq!(l.gln(None).as_str(), "unregistered");
}

#[test]
fn a_bad_gln_in_the_configuration_is_refused() {
    let err = Telemetry::new(&TelemetryConfig {
        glns: vec![RECEIVER.into(), "2512489996".into()],
        reason_codes: vec![],
    })
    .unwrap_err();
    assert!(err.to_string().contains("#1"), "{err}");
    assert!(!err.to_string().contains("2512489996"), "{err}");
}

/// Emit every event kind with `s` in every string position.
fn emit_all(t: &Telemetry, s: &str, n: u64) {
    let fam = Family::ALL[(n as usize) % Family::ALL.len()];
    let d = Duration::from_millis(n % 10_000);
    let now = SystemTime::now();
    t.emit(MessageReceived {
        message_id: Some(s),
        family: None,
        event: Some(s),
        bytes: 10,
    });
    t.emit(MessageAccepted {
        message_id: s,
        record: n,
        family: fam,
        event: Some(s),
        receiver: Some(s),
        latency: d,
    });
    t.emit(MessageRejected {
        message_id: Some(s),
        family: Some(fam),
        code: Some(s),
        status: 400,
    });
    t.emit(DuplicateDropped {
        message_id: s,
        family: fam,
        record: n,
    });
    t.emit(ResendForwarded {
        message_id: s,
        family: fam,
        record: n,
    });
    t.emit(PublishConfirmed {
        message_id: s,
        record: n,
        latency: d,
    });
    t.emit(PublishFailed {
        message_id: s,
        record: n,
        failure: PublishFailure::Timeout,
        latency: d,
        attempt: 2,
    });
    t.emit(MessageDelivered {
        message_id: s,
        family: fam,
        receiver: Some(s),
        since_accept: d,
    });
    t.emit(AckReceived {
        message_id: s,
        family: fam,
        code: AckCode::TransientError,
        since_accept: Some(d),
    });
    t.emit(MessageOverdue {
        message_id: s,
        family: fam,
        receiver: Some(s),
        since_accept: d,
    });
    t.emit(MessageDead {
        message_id: s,
        record: n,
        family: fam,
        reason: DeadReason::Ttl,
    });
    t.emit(InboxSampled {
        receiver: s,
        depth: n,
    });
    t.emit(CertificateObserved {
        owner: CertOwner::Partner(s),
        not_after: now + Duration::from_secs(86_400 * 10),
        now,
    });
    t.emit(BusStatusSampled {
        backend: BusBackend::from_kind(s),
        connected: n & 1 == 0,
        reconnects: n,
        connect_failures: n,
    });
}

/// Series per metric family in an exposition, plus the set of all label values.
fn series(exposition: &str) -> (BTreeMap<String, usize>, BTreeSet<String>) {
    let mut per = BTreeMap::new();
    let mut values = BTreeSet::new();
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let name_end = line.find(['{', ' ']).unwrap();
        let mut name = &line[..name_end];
        let mut histogram = false;
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if exposition.contains(&format!("# TYPE {base} histogram")) {
                    name = base;
                    histogram = true;
                }
            }
        }
        if let Some(rest) = line[name_end..].strip_prefix('{') {
            let labels = &rest[..rest.find('}').unwrap()];
            // Count each histogram series once, by its +Inf bucket.
            if !histogram || labels.contains("le=\"+Inf\"") {
                *per.entry(name.to_owned()).or_insert(0) += 1;
            }
            for kv in labels.split("\",") {
                let (k, v) = kv.split_once("=\"").unwrap();
                if k != "le" {
                    values.insert(v.trim_end_matches('"').to_owned());
                }
            }
        } else {
            *per.entry(name.to_owned()).or_insert(0) += 1;
        }
    }
    (per, values)
}

fn hostile_inputs() -> Vec<String> {
    let mut v: Vec<String> = vec![
        "2512489996".into(),
        "251248-9996".into(),
        "0101011234".into(),
        "Bruno Test Elmer".into(),
        "Hjertestop, indlagt akut".into(),
        "x\"} 1\nsammen_fake_total 99".into(),
        "\u{0000}\u{ffff}æøå".into(),
        "5790000000005".into(),
        "a".repeat(10_000),
    ];
    for i in 0..300u64 {
        // CPR-like numbers with varying dates and sequence numbers.
        v.push(format!(
            "{:02}{:02}{:02}{:04}",
            i % 28 + 1,
            i % 12 + 1,
            i % 100,
            i * 37 % 10_000
        ));
        v.push(format!("random-{i}-{}", i * 7919));
    }
    v
}

fn check_bounded(t: &Telemetry, inputs: &[String]) {
    let text = t.render().unwrap();
    let (per, values) = series(&text);
    for (name, n) in &per {
        let bound = t
            .metrics()
            .series_bound(name, t.labels())
            .unwrap_or_else(|| panic!("{name} is not a registered metric"));
        assert!(*n <= bound, "{name}: {n} series > bound {bound}");
    }
    let closed: BTreeSet<&str> = labels::EVENTS
        .iter()
        .copied()
        .chain(labels::documented_codes().iter().copied())
        .chain(labels::BROKER_CODES.iter().copied())
        .chain(Family::ALL.iter().map(|f| f.as_str()))
        .chain([
            "other",
            "none",
            "unknown",
            "unregistered",
            "server",
            RECEIVER,
            PARTNER,
            "ingress.test-code",
        ])
        .chain(sammen_telemetry::metrics::PUBLISH_OUTCOMES.iter().copied())
        .chain(sammen_telemetry::metrics::DEAD_REASONS.iter().copied())
        .chain(sammen_telemetry::metrics::BUS_BACKENDS.iter().copied())
        .chain(sammen_telemetry::metrics::ACK_CODES.iter().copied())
        .collect();
    let build = sammen_telemetry::BuildInfo::current();
    for v in &values {
        assert!(
            closed.contains(v.as_str())
                || [build.version, build.git_sha, build.rustc].contains(&v.as_str()),
            "label value {v:?} is outside the closed sets"
        );
    }
    for input in inputs {
        if input.len() >= 6 && !closed.contains(input.as_str()) {
            assert!(!text.contains(input.as_str()), "input leaked into /metrics");
        }
    }
}

#[test]
fn hostile_input_stays_out_of_the_exposition() {
    let t = telemetry();
    let inputs = hostile_inputs();
    for (n, s) in inputs.iter().enumerate() {
        emit_all(&t, s, n as u64);
    }
    check_bounded(&t, &inputs);
    // The cardinality is the same after thousands of distinct inputs as after one.
    let (per, _) = series(&t.render().unwrap());
    assert!(per["sammen_messages_rejected_total"] <= Family::ALL.len() + 1);
    assert!(per["sammen_messages_received_total"] <= 1 + 1);
    assert_eq!(per.get("sammen_inbox_depth"), None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_strings_never_leak(inputs in proptest::collection::vec("\\PC{0,40}|[0-9]{10}|[0-9]{6}-[0-9]{4}", 1..40)) {
        let t = telemetry();
        for (n, s) in inputs.iter().enumerate() {
            emit_all(&t, s, n as u64);
        }
        check_bounded(&t, &inputs);
    }
}

#[test]
fn known_values_are_counted_under_their_own_labels() {
    let t = telemetry();
    t.emit(MessageAccepted {
        message_id: "c9a0b728-0807-11ed-861d-0242ac120002",
        record: 1,
        family: Family::HospitalNotification,
        event: Some("admit-inpatient"),
        receiver: Some(RECEIVER),
        latency: Duration::from_millis(3),
    });
    t.emit(InboxSampled {
        receiver: RECEIVER,
        depth: 7,
    });
    t.emit(CertificateObserved {
        owner: CertOwner::Server,
        not_after: SystemTime::now() + Duration::from_secs(86_400 * 45),
        now: SystemTime::now(),
    });
    let text = t.render().unwrap();
    assert!(text.contains(
        "sammen_messages_accepted_total{event=\"admit-inpatient\",family=\"HospitalNotification\"} 1"
    ), "{text}");
    assert!(text.contains(&format!("sammen_inbox_depth{{receiver=\"{RECEIVER}\"}} 7")));
    assert!(text.contains("sammen_certificate_expiry_days{partner=\"server\"} 4"));
    assert!(text.contains("sammen_build_info{"));
    assert!(!text.contains("c9a0b728"), "message ids are never labels");
}

#[test]
fn bus_counters_follow_cumulative_samples() {
    let t = telemetry();
    for (connected, reconnects) in [(true, 0), (false, 0), (true, 1), (true, 1), (true, 3)] {
        t.emit(BusStatusSampled {
            backend: BusBackend::Amqp,
            connected,
            reconnects,
            connect_failures: reconnects * 2,
        });
    }
    let text = t.render().unwrap();
    assert!(
        text.contains("sammen_bus_reconnects_total{backend=\"amqp\"} 3"),
        "{text}"
    );
    assert!(text.contains("sammen_bus_connect_failures_total{backend=\"amqp\"} 6"));
    assert!(text.contains("sammen_bus_connected{backend=\"amqp\"} 1"));
}

#[test]
fn every_metric_is_named_by_convention() {
    let t = telemetry();
    let names: Vec<_> = t.metrics().names().collect();
    assert!(names.len() >= 25, "{names:?}");
    for n in &names {
        assert!(n.starts_with("sammen_"), "{n}");
        assert!(
            n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{n}"
        );
    }
    // Counters end in _total; histograms and durations carry the unit.
    let text = t.render().unwrap();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut parts = line.split_whitespace().skip(2);
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        match kind {
            "counter" => assert!(name.ends_with("_total"), "{name}"),
            "histogram" => assert!(name.ends_with("_seconds"), "{name}"),
            _ => {}
        }
    }
}
