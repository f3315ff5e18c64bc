//! `sammen send` end to end against a zero-config `sammen serve` child (HTTPS with the dev PKI it
//! generates in its data dir).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const HN: &str = "../../conformance/examples/hospitalnotification/Bundle-a5e5b880-c087-4055-b9ec-99108695f81d.xml";

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// Start serve with no config; return it, its HTTPS URL and its stdout lines up to the listening line.
fn serve(data: &Path) -> (Serve, String, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sammen"))
        .args(["serve", "--data-dir"])
        .arg(data)
        .args(["--tls-listen", "127.0.0.1:0"])
        .env("SAMMEN_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let serve = Serve(child);
    let mut lines = Vec::new();
    for line in out.lines() {
        let line = line.unwrap();
        lines.push(line.clone());
        if let Some(addr) = line.strip_prefix("sammen: listening on ") {
            assert!(addr.starts_with("https://"), "{lines:?}");
            return (serve, addr.to_string(), lines);
        }
    }
    panic!("serve ended without listening: {lines:?}");
}

fn send(url: &str, pki: &Path, who: &str, file: &str) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_sammen"))
        .args(["send", "--url", url, "--cert"])
        .arg(pki.join(format!("{who}.crt")))
        .arg("--key")
        .arg(pki.join(format!("{who}.key")))
        .arg("--ca")
        .arg(pki.join("ca.crt"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    (
        out.status.code().unwrap(),
        serde_json::from_str(text.trim()).unwrap(),
    )
}

#[test]
fn zero_config_serve_then_send_with_the_dev_pki() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (srv, url, lines) = serve(&data);
    let pki = data.join("pki");
    assert!(
        lines.iter().any(|l| l.contains("generated dev PKI in")),
        "{lines:?}"
    );
    assert!(pki.join("hospital.key").exists());

    let (code, v) = send(&url, &pki, "hospital", HN);
    assert_eq!((code, v["status"].as_u64()), (0, Some(202)), "{v}");
    assert_eq!(v["answer"]["status"], "accepted");
    let (code, v) = send(&url, &pki, "hospital", HN);
    assert_eq!(
        (code, v["answer"]["status"].as_str()),
        (0, Some("duplicate")),
        "{v}"
    );
    // The municipality sending the hospital's message: 403 with a reason, exit 1.
    let (code, v) = send(&url, &pki, "municipality", HN);
    assert_eq!((code, v["status"].as_u64()), (1, Some(403)), "{v}");
    assert_eq!(v["answer"]["error"], "identity.sender-not-allowed");
    drop(srv);

    // Restart: the dev PKI is reused, not regenerated; a stopped broker is a transport error (exit 2).
    let before = std::fs::read(pki.join("ca.crt")).unwrap();
    let (srv, url2, lines) = serve(&data);
    assert!(
        lines.iter().any(|l| l.contains("using dev PKI in")),
        "{lines:?}"
    );
    assert_eq!(std::fs::read(pki.join("ca.crt")).unwrap(), before);
    let (code, _) = send(&url2, &pki, "hospital", HN);
    assert_eq!(code, 0);
    drop(srv);
    let (code, v) = send(&url2, &pki, "hospital", HN);
    assert_eq!(code, 2, "{v}");
    assert!(v["error"].as_str().unwrap().contains("connecting"), "{v}");
}
