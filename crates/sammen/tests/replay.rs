//! `sammen replay`: an operator sends a dead message again; the replay is a leaf of the audit log, which
//! still verifies. Data dir written through the audited outbox API (no `sammen serve` needed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use assert_cmd::Command;
use sammen_model::{AckCode, Family, Party};
use sammen_outbox::sammen_audit::{export, keys, AuditConfig, PatientKey};
use sammen_outbox::{AcceptOutcome, AcceptRequest, MessageMeta, Outbox, OutboxConfig, Store};

const PATIENT_SECRET: &str = "replay-test-patient-secret-0123456789";
const DEAD: &str = "b1e5b880-c087-4055-b9ec-000000000001";
const ACKED: &str = "b1e5b880-c087-4055-b9ec-000000000002";

fn sammen() -> Command {
    Command::cargo_bin("sammen").unwrap()
}

struct Env {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    keys: PathBuf,
    config: PathBuf,
}

impl Env {
    fn run(&self, args: &[&str]) -> std::process::Output {
        sammen().args(args).output().unwrap()
    }
    fn replay(&self, message_id: &str) -> std::process::Output {
        sammen()
            .args([
                "replay",
                "--message-id",
                message_id,
                "--note",
                "endpoint fixed",
            ])
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap()
    }
}

fn request(message_id: &str, envelope: &str) -> AcceptRequest {
    AcceptRequest {
        bytes: b"<Bundle>message</Bundle>".to_vec(),
        meta: MessageMeta {
            message_id: message_id.into(),
            envelope_id: envelope.into(),
            family: Family::HospitalNotification,
            event: "admit-inpatient".into(),
            sender: Party {
                gln: Some("5790001348120".into()),
                sor: None,
            },
            receiver: Party {
                gln: Some("5790000209354".into()),
                sor: None,
            },
            received: std::time::SystemTime::now(),
        },
    }
}

fn open(env: &Env) -> Outbox<Arc<dyn Store>> {
    let signing = keys::load_signing_key(&env.keys.join(keys::PRIVATE_KEY_FILE)).unwrap();
    let store = env.data.join("outbox");
    let cfg = AuditConfig {
        origin: "sammen.test/replay".into(),
        checkpoint_every: 4,
        checkpoint_interval_ms: 60_000,
        export_dir: Some(export::default_export_dir(&store)),
        patient_key: PatientKey::new(PATIENT_SECRET.as_bytes()).unwrap(),
    };
    sammen_outbox::open_fjall_audited(store, OutboxConfig::default(), cfg, signing).unwrap()
}

/// Keys, a config naming them, and a data dir with one dead and one acknowledged message.
fn setup() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let keys_dir = tmp.path().join("keys");
    sammen()
        .args(["keygen", "--out"])
        .arg(&keys_dir)
        .assert()
        .success();
    let patient_key_file = tmp.path().join("patient.key");
    std::fs::write(&patient_key_file, format!("{PATIENT_SECRET}\n")).unwrap();
    let config = tmp.path().join("sammen.toml");
    let toml = format!(
        "data_dir = {:?}\n[audit]\norigin = \"sammen.test/replay\"\nsigning_key = {:?}\npatient_key_file = {:?}\n",
        path_str(&data),
        path_str(&keys_dir.join(keys::PRIVATE_KEY_FILE)),
        path_str(&patient_key_file),
    );
    std::fs::write(&config, toml).unwrap();
    let env = Env {
        data,
        keys: keys_dir,
        config,
        _tmp: tmp,
    };
    let ob = open(&env);
    for (msg, env_id) in [(DEAD, "env-1"), (ACKED, "env-2")] {
        let AcceptOutcome::Accepted { id } = ob.accept(request(msg, env_id)).unwrap() else {
            panic!()
        };
        if msg == DEAD {
            ob.mark_dead(id, "receiver unknown at the bus").unwrap();
        } else {
            ob.mark_published(id).unwrap();
            ob.mark_acknowledged(id, AckCode::Ok).unwrap();
        }
    }
    ob.audit().unwrap().checkpoint_now().unwrap();
    env
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn replay_sends_a_dead_message_again_and_is_audited() {
    let env = setup();
    let data = path_str(&env.data);

    let out = env.replay(DEAD);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines,
        [serde_json::json!({"record": 1, "state": "accepted"})]
    );

    // Nothing dead any more: exit 1, nothing printed; a message that was never dead likewise.
    let again = env.replay(DEAD);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert!(stdout(&again).is_empty());
    assert_eq!(env.replay(ACKED).status.code(), Some(1));
    assert_eq!(env.replay("no-such-message").status.code(), Some(1));

    let hits = env.run(&["audit", "search", "--data-dir", data, "--message-id", DEAD]);
    assert_eq!(hits.status.code(), Some(0), "{}", stderr(&hits));
    let kinds: Vec<String> = stdout(&hits)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["leaf"]["event"]["kind"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(kinds, ["accepted", "dead", "replay"]);

    let pk = env.keys.join(keys::PUBLIC_KEY_FILE);
    let verify = env.run(&[
        "audit",
        "verify",
        "--data-dir",
        data,
        "--public-key",
        path_str(&pk),
    ]);
    assert_eq!(verify.status.code(), Some(0), "{}", stderr(&verify));

    // The record is back in the publish queue, as the relay will find it.
    let ob = open(&env);
    assert_eq!(ob.depth(), 1);
    let pending = ob.next_batch(None, 10).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].meta.message_id, DEAD);
}

#[test]
fn replay_refuses_a_store_held_by_another_process() {
    let env = setup();
    let held = open(&env);
    let out = env.replay(DEAD);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stderr(&out).contains("stop it first"), "{}", stderr(&out));
    drop(held);
    // Nothing changed while it was refused.
    let ob = open(&env);
    assert_eq!(ob.depth(), 0);
}
