//! `sammen inbox` against a zero-config `sammen serve` child: the dev PKI's municipality reads its own
//! inbox, the hospital may not; an unacked message survives a restart; an acked one ends `delivered`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const HN: &str = "../../conformance/examples/hospitalnotification/Bundle-a5e5b880-c087-4055-b9ec-99108695f81d.xml";
const HN_MSG_ID: &str = "b9b4818e-02de-4cc4-b418-d20cbc7b5404";
const MUNI: &str = "5790001348120";
const HOSPITAL: &str = "5790000209354";

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// Start serve with no config; return it and its HTTPS URL.
fn serve(data: &Path) -> (Serve, String) {
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
            return (serve, addr.to_string());
        }
    }
    panic!("serve ended without listening: {lines:?}");
}

fn sammen(args: &[&str], pki: &Path, who: &str) -> (i32, Vec<serde_json::Value>) {
    let out = Command::new(env!("CARGO_BIN_EXE_sammen"))
        .args(&args[..1])
        .arg("--cert")
        .arg(pki.join(format!("{who}.crt")))
        .arg("--key")
        .arg(pki.join(format!("{who}.key")))
        .arg("--ca")
        .arg(pki.join("ca.crt"))
        .args(&args[1..])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    (out.status.code().unwrap(), lines)
}

#[test]
fn dev_pki_municipality_reads_and_acks_its_inbox() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let pki = data.join("pki");
    let (srv, url) = serve(&data);
    let hn = Path::new(env!("CARGO_MANIFEST_DIR")).join(HN);
    let (code, v) = sammen(
        &["send", "--url", &url, hn.to_str().unwrap()],
        &pki,
        "hospital",
    );
    assert_eq!(code, 0, "{v:?}");

    // The hospital may read its own (empty) inbox, not the municipality's.
    let (code, v) = sammen(&["inbox", "--url", &url, HOSPITAL], &pki, "hospital");
    assert_eq!((code, v[0]["status"].as_u64()), (0, Some(204)), "{v:?}");
    let (code, v) = sammen(&["inbox", "--url", &url, MUNI], &pki, "hospital");
    assert_eq!((code, v[0]["status"].as_u64()), (1, Some(403)), "{v:?}");
    assert_eq!(v[0]["answer"]["error"], "identity.receiver-not-allowed");

    // Read without ack, then stop the broker: the message is still there after a restart.
    let (code, v) = sammen(
        &["inbox", "--url", &url, "--wait", "20", MUNI],
        &pki,
        "municipality",
    );
    assert_eq!(code, 0, "{v:?}");
    assert_eq!(v[0]["message_id"], HN_MSG_ID);
    assert_eq!(v[0]["redelivered"], false);
    drop(srv);
    let (srv, url) = serve(&data);
    let out = dir.path().join("inbox");
    let (code, v) = sammen(
        &[
            "inbox",
            "--url",
            &url,
            "--wait",
            "20",
            "--ack",
            "--out",
            out.to_str().unwrap(),
            MUNI,
        ],
        &pki,
        "municipality",
    );
    assert_eq!(code, 0, "{v:?}");
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(v[0]["message_id"], HN_MSG_ID);
    assert_eq!(v[0]["redelivered"], true, "{v:?}");
    assert_eq!(v[0]["acked"], true);
    assert_eq!(v[1]["status"], 204);
    assert_eq!(
        std::fs::read(out.join(format!("{HN_MSG_ID}.xml"))).unwrap(),
        std::fs::read(&hn).unwrap()
    );
    drop(srv);

    // The ack reached the outbox through the delivery receipt.
    let st = Command::new(env!("CARGO_BIN_EXE_sammen"))
        .args(["status", HN_MSG_ID, "--json", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&st.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&st.stdout)));
    assert_eq!(v["state"], "delivered", "{v}");
}
