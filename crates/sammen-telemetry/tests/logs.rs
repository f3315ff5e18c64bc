//! Logs: events carry ids and labels, never personal data; the message span carries the id; the capture
//! utility finds personal data; the tripwire drops and counts a CPR-shaped value.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sammen_model::{AckCode, Family};
use sammen_telemetry::events::*;
use sammen_telemetry::logging::PersonalDataTripwire;
use sammen_telemetry::testing::capture_logs;
use sammen_telemetry::{message_span, Telemetry, TelemetryConfig};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;

const CPR: &str = "2512489996";
const NAME: &str = "Bruno Test Elmer";
const ID: &str = "c9a0b728-0807-11ed-861d-0242ac120002";

fn telemetry() -> Telemetry {
    Telemetry::new(&TelemetryConfig {
        glns: vec!["5790001348120".into()],
        reason_codes: vec![],
    })
    .unwrap()
}

#[test]
fn events_log_ids_and_labels_but_no_personal_data() {
    let logs = capture_logs();
    let t = telemetry();
    let span = message_span(ID);
    {
        let _g = span.enter();
        t.emit(MessageAccepted {
            message_id: ID,
            record: 42,
            family: Family::HospitalNotification,
            event: Some("admit-inpatient"),
            receiver: Some("5790001348120"),
            latency: Duration::from_millis(4),
        });
        // A sender put a CPR number and a name where ids and codes belong.
        t.emit(MessageRejected {
            message_id: Some(CPR),
            family: None,
            code: Some(NAME),
            status: 400,
        });
        t.emit(MessageAccepted {
            message_id: NAME,
            record: 43,
            family: Family::Xdis20,
            event: Some(CPR),
            receiver: Some(CPR),
            latency: Duration::ZERO,
        });
        t.emit(AckReceived {
            message_id: ID,
            family: Family::HospitalNotification,
            code: AckCode::Ok,
            since_accept: Some(Duration::from_secs(3)),
        });
    }
    logs.assert_no_personal_data(&[CPR, NAME]);
    let lines = logs.lines();
    assert_eq!(lines.len(), 4, "{lines:#?}");
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["fields"]["event"], "message_accepted");
    assert_eq!(first["fields"]["message_id"], ID);
    assert_eq!(first["fields"]["family"], "HospitalNotification");
    assert_eq!(first["fields"]["receiver"], "5790001348120");
    assert_eq!(first["span"]["message_id"], ID);
    assert_eq!(first["span"]["name"], "message");
    let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(second["fields"]["message_id"], "<withheld>");
    assert_eq!(second["fields"]["code"], "other");
}

#[test]
fn the_capture_finds_personal_data() {
    let logs = capture_logs();
    tracing::info!(patient = CPR, "oops");
    tracing::info!("patient {} admitted", NAME.to_uppercase());
    let found = logs.personal_data(&[NAME]);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].what, "cpr-shaped");
    assert_eq!(found[1].what, "needle #0");
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        logs.assert_no_personal_data(&[NAME])
    }));
    let msg = *panic.unwrap_err().downcast::<String>().unwrap();
    assert!(!msg.contains(CPR) && !msg.contains("Bruno"), "{msg}");
}

#[test]
fn the_tripwire_drops_and_counts() {
    let t = telemetry();
    let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
    let w = buf.clone();
    let subscriber = tracing_subscriber::registry()
        .with(PersonalDataTripwire::new(Some(t.tripwire_counter())))
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(move || Writer(w.clone())),
        );
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(message_id = ID, "kept");
        tracing::info!(patient = CPR, "dropped");
        tracing::info!("dropped too: {}", "251248-9996");
        tracing::info!(note = ?Some(CPR), "dropped as well");
        tracing::info!(gln = 5790001348120_u64, "kept: a GLN is not a CPR");
    });
    let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(!text.contains(CPR) && !text.contains("251248"));
    assert!(t
        .render()
        .unwrap()
        .contains("sammen_log_personal_data_suspected_total 3"));
}

struct Writer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Writer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn log_format_parses() {
    assert_eq!(
        "json".parse::<sammen_telemetry::LogFormat>().unwrap(),
        sammen_telemetry::LogFormat::Json
    );
    assert!("yaml".parse::<sammen_telemetry::LogFormat>().is_err());
}
