//! Telemetry of `sammen serve` run as a process: `/metrics` counters move with the right labels as messages
//! go through (RabbitMQ, with the reference subscriber sending delivery receipts), and the logs of an
//! end-to-end run (every conformance example, the invalid variants, a spoofing attempt) carry no test CPR
//! number or name.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/pd.rs"]
mod pd;
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// A child stopped with SIGTERM on drop (also when the test fails).
struct Stop(Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// `sammen serve` child: stopped with SIGTERM on drop.
struct Broker {
    child: Child,
    http: String,
    metrics: String,
    https: Option<String>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Start serve with `args`, logs (JSON, `level`) to `stderr_to`; wait for the listening and metrics lines.
fn start(args: &[&str], level: &str, stderr_to: &Path) -> Broker {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sammen"))
        .arg("serve")
        .args(args)
        .args(["--metrics-listen", "127.0.0.1:0"])
        .env("SAMMEN_LOG", level)
        .env("SAMMEN_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(stderr_to).unwrap())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let (mut http, mut https, mut metrics) = (None, None, None);
    let mut lines = Vec::new();
    let mut it = out.lines();
    while metrics.is_none() {
        let Some(line) = it.next() else {
            panic!(
                "serve ended early: {lines:?}; stderr in {}",
                stderr_to.display()
            );
        };
        let line = line.unwrap();
        if let Some(a) = line.strip_prefix("sammen: listening on http://") {
            http = Some(a.to_string());
        } else if let Some(a) = line.strip_prefix("sammen: listening on ") {
            https = Some(a.to_string());
        } else if let Some(a) = line.strip_prefix("sammen: metrics on http://") {
            metrics = Some(a.trim_end_matches("/metrics").to_string());
        }
        lines.push(line);
    }
    // Keep reading stdout so the broker never writes into a closed pipe.
    std::thread::spawn(move || for _ in it {});
    Broker {
        child,
        http: http.expect("plain HTTP listener"),
        metrics: metrics.unwrap(),
        https,
    }
}

/// The exposition as `series → value` (`name{labels}` exactly as rendered).
async fn scrape(addr: &str) -> (String, BTreeMap<String, f64>) {
    let (code, body) = Http::new(addr)
        .request("GET", "/metrics", b"")
        .await
        .unwrap();
    assert_eq!(code, 200);
    let text = String::from_utf8(body).unwrap();
    let map = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect();
    (text, map)
}

fn get(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

/// Poll until `ok` holds for the scraped metrics, or fail naming what was last seen.
async fn wait_for(
    addr: &str,
    what: &str,
    ok: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (text, m) = scrape(addr).await;
        if ok(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

const HN_FAMILY: &str = "family=\"HospitalNotification\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_messages() {
    let dir = tempfile::tempdir().unwrap();
    let ns = format!("telemetry-{}", std::process::id());
    let cfg = dir.path().join("sammen.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\n[http]\nlisten = \"127.0.0.1:{}\"\nplain = true\n[bus]\nkind = \"amqp\"\nurl = {:?}\nnamespace = {ns:?}\nconfirm_timeout = \"5s\"\n",
            dir.path().join("data").display().to_string(),
            free_port(),
            amqp_url(),
        ),
    )
    .unwrap();
    let broker = start(
        &["--config", cfg.to_str().unwrap()],
        "info",
        &dir.path().join("serve.log"),
    );
    let mut http = Http::new(&broker.http);
    let gen = Gen::new();
    let tag = std::process::id();
    let (mid, first) = gen.message(tag, 1);
    let bundle = Gen::uuid(tag ^ 0xffff_ffff, 1);
    let mut send = async |body: &[u8]| http.request("POST", "/v1/messages", body).await.unwrap();

    assert_eq!(send(&first).await.0, 202);
    assert_eq!(send(&first).await.0, 200, "exact repeat: duplicate");
    // Same message id in a new envelope: a resend.
    let resend = String::from_utf8(first.clone())
        .unwrap()
        .replace(&bundle, &Gen::uuid(tag ^ 0xffff_ffff, 99));
    assert_eq!(send(resend.as_bytes()).await.0, 202);
    // Another message id in the first envelope id: conflict.
    let (_, other) = gen.message(tag, 2);
    let conflict = String::from_utf8(other)
        .unwrap()
        .replace(&Gen::uuid(tag ^ 0xffff_ffff, 2), &bundle);
    assert_eq!(send(conflict.as_bytes()).await.0, 409);
    // An invalid variant: 422, counted under its first error's code.
    let invalid =
        std::fs::read(repo().join("conformance/invalid/fhir/hn-class-unknown.xml")).unwrap();
    let (code, body) = send(&invalid).await;
    assert_eq!(code, 422);
    let report: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let first_error = report["issues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["severity"] == "error")
        .expect("an error")["code"]
        .as_str()
        .unwrap()
        .to_string();

    // A CareCommunication, to be acknowledged below once it is published.
    let cc = std::fs::read(repo().join(
        "conformance/examples/carecommunication/Bundle-add5e7e2-0c0f-4a4a-bfff-f6f984fa7e3c.xml",
    ))
    .unwrap();
    assert_eq!(send(&cc).await.0, 202);

    // The reference subscriber takes the messages and sends delivery receipts.
    let out = dir.path().join("inbox");
    let sub = Command::new(env!("CARGO_BIN_EXE_sammen"))
        .args(["subscribe", "--config", cfg.to_str().unwrap()])
        .args(["--receiver", GLN, "--out"])
        .arg(&out)
        .env("SAMMEN_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let sub = Stop(sub);
    let delivered = format!("sammen_messages_delivered_total{{{HN_FAMILY},receiver=\"{GLN}\"}}");
    let confirmed = "sammen_publish_confirm_duration_seconds_count{outcome=\"ack\"}";
    // Gauges are sampled every few seconds: the bus shows up as connected on a later sample.
    let connected = "sammen_bus_connected{backend=\"amqp\"}";
    let m = wait_for(
        &broker.metrics,
        "confirms, a delivery receipt, bus up",
        |m| get(m, confirmed) >= 3.0 && get(m, &delivered) >= 1.0 && get(m, connected) == 1.0,
    )
    .await;
    // The municipality's ok acknowledgement of that CareCommunication: counted by the original's family
    // and the code, with accept → acknowledged observed.
    let ack = std::fs::read(repo().join(
        "conformance/examples/acknowledgement/Bundle-a8c041b8-c65a-4fde-a90f-962076918834.xml",
    ))
    .unwrap();
    assert_eq!(send(&ack).await.0, 202);
    let cc_ok = "{code=\"ok\",family=\"CareCommunication\"}";
    let acked = wait_for(&broker.metrics, "the acknowledgement counted", |m| {
        get(m, &format!("sammen_acknowledgements_total{cc_ok}")) == 1.0
    })
    .await;
    assert_eq!(
        get(
            &acked,
            &format!("sammen_accept_to_acknowledged_seconds_count{cc_ok}")
        ),
        1.0
    );
    // Nobody reads the hospital's inbox, where the acknowledgement went: its depth shows (sampled with a
    // passive declare on RabbitMQ).
    wait_for(&broker.metrics, "the hospital's inbox depth", |m| {
        get(m, "sammen_inbox_depth{receiver=\"5790000209354\"}") >= 1.0
    })
    .await;
    drop(sub);

    let ev = "event=\"admit-inpatient\"";
    assert_eq!(
        get(
            &m,
            &format!("sammen_messages_accepted_total{{{ev},{HN_FAMILY}}}")
        ),
        2.0,
        "original and resend"
    );
    assert!(
        get(
            &m,
            &format!("sammen_messages_received_total{{{ev},{HN_FAMILY}}}")
        ) >= 4.0
    );
    assert_eq!(
        get(&m, &format!("sammen_duplicates_total{{{HN_FAMILY}}}")),
        1.0
    );
    assert_eq!(
        get(&m, &format!("sammen_resends_total{{{HN_FAMILY}}}")),
        1.0
    );
    assert_eq!(
        get(
            &m,
            &format!(
                "sammen_messages_rejected_total{{code=\"outbox.envelope-id-conflict\",{HN_FAMILY}}}"
            )
        ),
        1.0
    );
    let invalid_series = m
        .iter()
        .filter(|(k, _)| k.starts_with("sammen_messages_rejected_total{"))
        .filter(|(k, _)| k.contains(&format!("code=\"{first_error}\"")))
        .map(|(_, v)| *v)
        .sum::<f64>();
    assert_eq!(invalid_series, 1.0, "rejected under {first_error}");
    assert!(
        get(
            &m,
            &format!("sammen_accept_to_delivered_seconds_count{{{HN_FAMILY}}}")
        ) >= 1.0
    );
    assert_eq!(get(&m, "sammen_log_personal_data_suspected_total"), 0.0);
    assert!(m.keys().any(|k| k.starts_with("sammen_build_info{")));
    assert!(m.keys().any(|k| k.starts_with("sammen_audit_leaves")));
    let (text, _) = scrape(&broker.metrics).await;
    // Ids are never label values; only closed sets are.
    assert!(!text.contains(&mid), "a message id in the exposition");
    assert!(!sammen_telemetry::labels::looks_like_cpr(&text));
    // The plain-HTTP (loopback) listener serves the same exposition.
    let (code, _) = Http::new(&broker.http)
        .request("GET", "/metrics", b"")
        .await
        .unwrap();
    assert_eq!(code, 200);
    // The operations listener also answers orchestrator probes (which carry no client certificate).
    for path in ["/healthz", "/readyz"] {
        let (code, body) = Http::new(&broker.metrics)
            .request("GET", path, b"")
            .await
            .unwrap();
        assert_eq!(code, 200, "{path}: {}", String::from_utf8_lossy(&body));
    }
    let (_, body) = Http::new(&broker.metrics)
        .request("GET", "/readyz", b"")
        .await
        .unwrap();
    let ready: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(ready["store_writable"], true, "{ready}");
}

fn xml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "xml") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Every example and invalid variant through serve (plain HTTP), a spoofing attempt over HTTPS; all
/// log output at trace level must hold no test CPR number or name, and the tripwire must not have fired
/// (it drops CPR-shaped lines, so the capture alone could miss them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_an_end_to_end_run_carry_no_personal_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("serve.log");
    let port = free_port().to_string();
    let broker = start(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--tls-listen",
            "127.0.0.1:0",
        ],
        "trace",
        &log,
    );
    let mut http = Http::new(&broker.http);
    let mut codes: BTreeMap<u16, usize> = BTreeMap::new();
    let conformance = repo().join("conformance");
    for f in xml_files(&conformance.join("examples"))
        .into_iter()
        .chain(xml_files(&conformance.join("invalid")))
    {
        let (code, _) = http
            .request("POST", "/v1/messages", &std::fs::read(&f).unwrap())
            .await
            .unwrap();
        *codes.entry(code).or_default() += 1;
    }
    assert!(codes.get(&202).copied().unwrap_or(0) >= 10, "{codes:?}");
    assert!(codes.get(&422).copied().unwrap_or(0) >= 50, "{codes:?}");

    // Spoofing: the municipality's certificate sending the hospital's message.
    let pki = data.join("pki");
    let out = Command::new(env!("CARGO_BIN_EXE_sammen"))
        .args(["send", "--url", broker.https.as_deref().unwrap(), "--cert"])
        .arg(pki.join("municipality.crt"))
        .arg("--key")
        .arg(pki.join("municipality.key"))
        .arg("--ca")
        .arg(pki.join("ca.crt"))
        .arg(repo().join("conformance").join(HN))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("identity.sender-not-allowed"));

    let m = wait_for(&broker.metrics, "the relay to publish everything", |m| {
        get(m, "sammen_outbox_depth") == 0.0
            && get(
                m,
                "sammen_messages_rejected_total{code=\"identity.sender-not-allowed\",family=\"unknown\"}",
            ) == 1.0
    })
    .await;
    assert_eq!(get(&m, "sammen_log_personal_data_suspected_total"), 0.0);
    drop(broker);

    let text = std::fs::read_to_string(&log).unwrap();
    let capture = sammen_telemetry::testing::capture_from_text(text);
    let lines = capture.lines();
    assert!(lines.len() > 100, "only {} log lines", lines.len());
    assert!(lines.iter().any(|l| l.contains("message_accepted")));
    assert!(lines.iter().any(|l| l.contains("message_rejected")));
    // Relay and delivery lines run inside the message's span (JSON `"span":{"message_id":…,"name":"message"}`).
    assert!(lines
        .iter()
        .any(|l| l.contains("publish_confirmed") && l.contains("\"name\":\"message\"")));
    let pd = pd::conformance_personal_data(&conformance);
    let needles: Vec<&str> = pd.iter().map(String::as_str).collect();
    capture.assert_no_personal_data(&needles);
}
