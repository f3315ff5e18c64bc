//! An operator action leaves an audit leaf: SIGHUP to `sammen serve` reloads certificates and partners, and
//! `sammen audit search` then shows a `config-reload` leaf (and `audit verify` still passes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn serve(data: &Path) -> Serve {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sammen"))
        .args(["serve", "--data-dir"])
        .arg(data)
        .args([
            "--tls-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .env("SAMMEN_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let serve = Serve(child);
    for line in out.lines() {
        if line.unwrap().starts_with("sammen: listening on ") {
            return serve;
        }
    }
    panic!("serve ended without listening");
}

fn reload_leaves(data: &Path) -> usize {
    let out = Command::new(env!("CARGO_BIN_EXE_sammen"))
        .args(["audit", "search", "--from", "0", "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["leaf"]["event"]["kind"] == "config-reload"
        })
        .count()
}

#[test]
fn sighup_reload_is_an_audit_leaf() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let srv = serve(&data);
    drop(srv); // a start and stop alone: no reload leaf
    assert_eq!(reload_leaves(&data), 0);

    let srv = serve(&data);
    let pid = srv.0.id().to_string();
    // A SIGHUP before the reload task watches is ignored (not fatal, see the test below); wait for it.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    // The leaf is written off the request path; give it a moment before the graceful stop.
    std::thread::sleep(Duration::from_secs(2));
    drop(srv);
    assert_eq!(reload_leaves(&data), 1);

    // Zero-config serve generated its development signing key; the log with the new leaf verifies.
    let public = data
        .join("audit-dev-keys")
        .join("audit-signing-key.pub.pem");
    let out = Command::new(env!("CARGO_BIN_EXE_sammen"))
        .args(["audit", "verify", "--data-dir"])
        .arg(&data)
        .arg("--public-key")
        .arg(&public)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Signals that arrive right after the listening line, while the tasks that watch them are still
/// starting: SIGHUP must not end the broker (its default action would) and SIGTERM must still drain
/// gracefully (exit 0, not killed by the signal).
#[test]
fn signals_right_after_listening_are_handled() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = serve(&dir.path().join("hup"));
    let pid = srv.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        srv.0.try_wait().unwrap().is_none(),
        "a SIGHUP right after start-up ended sammen serve"
    );
    drop(srv);

    let mut srv = serve(&dir.path().join("term"));
    let pid = srv.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = srv.0.wait().unwrap();
    assert!(
        status.success(),
        "a SIGTERM right after start-up must drain and exit 0, got {status:?}"
    );
}
