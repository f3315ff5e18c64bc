//! The HTTPS listener's handshake counts reach /metrics as counters that follow the cumulative snapshots.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sammen_telemetry::events::TlsSampled;
use sammen_telemetry::{Telemetry, TelemetryConfig};

fn value(exposition: &str, name: &str) -> u64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in the exposition"))
}

#[test]
fn handshake_counters_follow_the_listener_counts() {
    let t = Telemetry::new(&TelemetryConfig {
        glns: vec![],
        reason_codes: vec![],
    })
    .unwrap();
    let snap = |ok, refused, suppressed| TlsSampled {
        handshakes_ok: ok,
        handshakes_refused: refused,
        refusals_suppressed: suppressed,
    };
    let read = |t: &Telemetry| {
        let e = t.render().unwrap();
        (
            value(&e, "sammen_tls_handshakes_ok_total"),
            value(&e, "sammen_tls_handshakes_refused_total"),
            value(&e, "sammen_tls_certificate_refusals_suppressed_total"),
        )
    };
    t.emit(snap(3, 1, 0));
    assert_eq!(read(&t), (3, 1, 0));
    t.emit(snap(10, 4, 2));
    assert_eq!(read(&t), (10, 4, 2));
    // The same snapshot again, or a smaller one (a new listener), adds nothing: counters never go down.
    t.emit(snap(10, 4, 2));
    t.emit(snap(1, 0, 0));
    assert_eq!(read(&t), (10, 4, 2));
}
