//! `sammen bench --audit-share` as an operator runs it: two spawned brokers, audit on and off, every
//! round measured on both, in turn or together, closed or open loop. Small loads: this checks that the
//! measurement runs and reports, not what it measures (figures are never asserted; README "Audit cost").
use assert_cmd::Command;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn audit_share(extra: &[&str]) -> String {
    let out = Command::cargo_bin("sammen")
        .expect("binary built")
        .current_dir(root())
        .args([
            "bench",
            "--spawn",
            "--clients",
            "4",
            "--messages",
            "60",
            "--audit-share",
            "2",
        ])
        .args(extra)
        .timeout(std::time::Duration::from_secs(300))
        .output()
        .expect("sammen bench runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{text}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Each round line has a CPU figure for both sides, and the summary lines follow.
fn check_report(text: &str, mode: &str) {
    let rounds: Vec<&str> = text.lines().filter(|l| l.starts_with("round ")).collect();
    assert_eq!(rounds.len(), 2, "{text}");
    for r in rounds {
        assert!(
            r.contains("audit on") && r.contains("off") && r.contains("share"),
            "{r}"
        );
    }
    assert!(
        text.lines().next().is_some_and(|l| l.contains(mode)),
        "{text}"
    );
    assert!(text.contains("paired rounds: mean audit share"), "{text}");
    assert!(
        text.contains("without the engine's background threads"),
        "{text}"
    );
}

#[test]
fn audit_share_in_turn_closed_loop() {
    check_report(&audit_share(&[]), "loaded in turn");
}

#[test]
fn audit_share_together_open_loop() {
    let text = audit_share(&["--together", "--rate", "200"]);
    check_report(&text, "loaded together");
    assert!(text.contains("open loop at 200 msg/s"), "{text}");
}

#[test]
fn together_needs_audit_share() {
    Command::cargo_bin("sammen")
        .expect("binary built")
        .args(["bench", "--spawn", "--together"])
        .assert()
        .code(2);
}
