//! `sammen keygen` and `sammen audit …` on a real data dir written through the audited outbox.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use assert_cmd::Command;
use sammen_model::{AckCode, Family, Party, PatientId};
use sammen_outbox::sammen_audit::{export, keys, AuditConfig, PatientKey};
use sammen_outbox::{AcceptAudit, AcceptOutcome, AcceptRequest, MessageMeta, OutboxConfig, Store};

const CPR: &str = "0101011234";
const NAME: &str = "Bent Testpatient";
const PATIENT_SECRET: &str = "cli-test-patient-secret-0123456789";
const SENDER: &str = "5790001348120";
const RECEIVER: &str = "5790000209354";

fn sammen() -> Command {
    Command::cargo_bin("sammen").unwrap()
}

struct Env {
    _tmp: tempfile::TempDir,
    /// The broker's data dir (holds `outbox/`).
    data: PathBuf,
    keys: PathBuf,
    patient_key_file: PathBuf,
}

impl Env {
    fn store(&self) -> PathBuf {
        self.data.join("outbox")
    }
    fn export(&self) -> PathBuf {
        export::default_export_dir(&self.store())
    }
    fn public_key(&self) -> PathBuf {
        self.keys.join(keys::PUBLIC_KEY_FILE)
    }
    fn run(&self, args: &[&str]) -> std::process::Output {
        sammen().args(args).output().unwrap()
    }
}

fn msg_id(i: u32) -> String {
    format!("a5e5b880-c087-4055-b9ec-{i:012}")
}

fn request(i: u32) -> AcceptRequest {
    AcceptRequest {
        // The payload itself would hold the CPR in real life (stored by design until retention);
        // here it does not, so the scan below sees only what the audit path writes.
        bytes: format!("<Bundle>message {i}</Bundle>").into_bytes(),
        meta: MessageMeta {
            message_id: msg_id(i),
            envelope_id: format!("env-{i}"),
            family: Family::HospitalNotification,
            event: "admit-inpatient".into(),
            sender: Party {
                gln: Some(SENDER.into()),
                sor: None,
            },
            receiver: Party {
                gln: Some(RECEIVER.into()),
                sor: None,
            },
            received: std::time::SystemTime::now(),
        },
    }
}

/// `sammen keygen`, then messages through the audited outbox: accepted, published, acknowledged,
/// with the patient from the "validation report"; a checkpoint exported at the end.
fn setup(messages: u32) -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let keys_dir = tmp.path().join("keys");
    let out = sammen()
        .args(["keygen", "--out"])
        .arg(&keys_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let fp = String::from_utf8(out.stdout).unwrap();
    assert!(fp.starts_with("SHA256:") && fp.trim().len() == 71, "{fp}");
    // Refuses to overwrite a key.
    sammen()
        .args(["keygen", "--out"])
        .arg(&keys_dir)
        .assert()
        .code(2);
    let patient_key_file = tmp.path().join("patient.key");
    std::fs::write(&patient_key_file, format!("{PATIENT_SECRET}\n")).unwrap();
    let env = Env {
        data,
        keys: keys_dir,
        patient_key_file,
        _tmp: tmp,
    };
    write(&env, 0..messages);
    env
}

fn open(env: &Env) -> sammen_outbox::Outbox<Arc<dyn Store>> {
    let signing = keys::load_signing_key(&env.keys.join(keys::PRIVATE_KEY_FILE)).unwrap();
    let cfg = AuditConfig {
        origin: "sammen.test/cli".into(),
        checkpoint_every: 4,
        checkpoint_interval_ms: 60_000,
        export_dir: Some(env.export()),
        patient_key: PatientKey::new(PATIENT_SECRET.as_bytes()).unwrap(),
    };
    sammen_outbox::open_fjall_audited(env.store(), OutboxConfig::default(), cfg, signing).unwrap()
}

fn write(env: &Env, range: std::ops::Range<u32>) {
    let ob = open(env);
    for i in range {
        let patient = PatientId::new("urn:oid:1.2.208.176.1.2", CPR);
        let AcceptOutcome::Accepted { id } = ob
            .accept_with(request(i), AcceptAudit::default().patient(Some(patient)))
            .unwrap()
        else {
            panic!()
        };
        ob.mark_published(id).unwrap();
        ob.mark_acknowledged(id, AckCode::Ok).unwrap();
        ob.audit().unwrap().maybe_checkpoint(0).unwrap();
    }
    ob.audit().unwrap().checkpoint_now().unwrap();
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn assert_no_personal_data(dir: &Path) {
    let dashed = format!("{}-{}", &CPR[..6], &CPR[6..]);
    let needles = [CPR, dashed.as_str(), NAME];
    let all = files(dir);
    assert!(!all.is_empty());
    for f in all {
        let bytes = std::fs::read(&f).unwrap();
        for n in needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == n.as_bytes()),
                "{n:?} found in {}",
                f.display()
            );
        }
    }
}

#[test]
fn verify_prove_check_proof_and_tamper() {
    let env = setup(6);
    let data = env.data.to_str().unwrap();
    let pk = env.public_key();
    let pk = pk.to_str().unwrap();
    let ok = env.run(&["audit", "verify", "--data-dir", data, "--public-key", pk]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    // 1 genesis + 6 × (accepted, published, acknowledged)
    assert!(stdout(&ok).starts_with("ok: 19 leaves"), "{}", stdout(&ok));

    // prove → check-proof
    let m = msg_id(2);
    let proof = env.run(&["audit", "prove", "--data-dir", data, "--message-id", &m]);
    assert_eq!(proof.status.code(), Some(0), "{}", stderr(&proof));
    let doc: serde_json::Value = serde_json::from_slice(&proof.stdout).unwrap();
    assert_eq!(doc["entries"].as_array().unwrap().len(), 3);
    let proof_file = env.data.parent().unwrap().join("proof.json");
    std::fs::write(&proof_file, &proof.stdout).unwrap();
    let pf = proof_file.to_str().unwrap();
    let checked = env.run(&["audit", "check-proof", pf, "--public-key", pk]);
    assert_eq!(checked.status.code(), Some(0), "{}", stderr(&checked));
    assert!(
        stdout(&checked).contains("3 leaves"),
        "{}",
        stdout(&checked)
    );
    // A tampered proof fails: another outcome in a leaf, or a flipped hash.
    let text = String::from_utf8(proof.stdout.clone()).unwrap();
    let tampered = [
        // The readable, decoded part of a leaf says another event than its bytes.
        text.replacen("\"acknowledged\"", "\"delivered\"", 1),
        {
            let h = doc["entries"][0]["proof"][0].as_str().unwrap();
            let mut flipped = h.to_owned();
            flipped.replace_range(0..1, if h.starts_with('0') { "1" } else { "0" });
            text.replacen(h, &flipped, 1)
        },
    ];
    for t in tampered {
        assert_ne!(t, text);
        std::fs::write(&proof_file, &t).unwrap();
        let bad = env.run(&["audit", "check-proof", pf, "--public-key", pk]);
        assert_eq!(bad.status.code(), Some(1), "{}", stdout(&bad));
    }
    // Unknown message: exit 1; missing data dir: exit 2.
    let none = env.run(&["audit", "prove", "--data-dir", data, "--message-id", "nope"]);
    assert_eq!(none.status.code(), Some(1));
    let missing = env.run(&[
        "audit",
        "verify",
        "--data-dir",
        "/no/such",
        "--public-key",
        pk,
    ]);
    assert_eq!(missing.status.code(), Some(2));

    // Flip a byte in a stored leaf (through the engine, as someone with write access would).
    {
        let store =
            sammen_store::FjallStore::open(env.store(), sammen_outbox::trees::AUDITED).unwrap();
        let key = 5u64.to_be_bytes();
        let mut leaf = store
            .get(sammen_outbox::sammen_audit::trees::LEAVES, &key)
            .unwrap()
            .unwrap();
        // The outcome byte of the binary leaf: still a well-formed leaf, another one.
        assert_eq!(leaf[0], 3);
        leaf[9] = 12;
        let mut b = sammen_store::Batch::new();
        b.put(
            sammen_outbox::sammen_audit::trees::LEAVES,
            key.to_vec(),
            leaf,
        );
        store.commit(b).unwrap();
    }
    let bad = env.run(&["audit", "verify", "--data-dir", data, "--public-key", pk]);
    assert_eq!(bad.status.code(), Some(1), "{}", stdout(&bad));
    assert!(stderr(&bad).contains("leaf 5"), "{}", stderr(&bad));
    // Another key is not trusted.
    let other = env.data.parent().unwrap().join("other");
    sammen()
        .args(["keygen", "--out"])
        .arg(&other)
        .assert()
        .code(0);
    let other_pk = other.join(keys::PUBLIC_KEY_FILE);
    let bad = env.run(&[
        "audit",
        "verify",
        "--data-dir",
        data,
        "--public-key",
        other_pk.to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(1));
}

#[test]
fn search_consistency_and_no_personal_data() {
    let env = setup(3);
    let data = env.data.to_str().unwrap();
    let pk = env.public_key();
    let pk = pk.to_str().unwrap();
    let old = env.data.parent().unwrap().join("old-checkpoint");
    std::fs::copy(env.export().join(export::CHECKPOINT_FILE), &old).unwrap();
    write(&env, 3..5);

    let m = msg_id(1);
    let hits = env.run(&["audit", "search", "--data-dir", data, "--message-id", &m]);
    assert_eq!(hits.status.code(), Some(0), "{}", stderr(&hits));
    let lines: Vec<serde_json::Value> = stdout(&hits)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = lines
        .iter()
        .map(|l| l["leaf"]["event"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["accepted", "published", "acknowledged"]);

    let kf = env.patient_key_file.to_str().unwrap();
    let by_cpr = env.run(&[
        "audit",
        "search",
        "--data-dir",
        data,
        "--cpr",
        CPR,
        "--patient-key-file",
        kf,
    ]);
    assert_eq!(by_cpr.status.code(), Some(0), "{}", stderr(&by_cpr));
    let out = stdout(&by_cpr);
    assert_eq!(out.lines().count(), 15);
    assert!(!out.contains(CPR) && !stderr(&by_cpr).contains(CPR));
    let pseudonym = PatientKey::new(PATIENT_SECRET.as_bytes())
        .unwrap()
        .pseudonym(CPR);
    assert!(out.lines().all(|l| l.contains(&pseudonym)));
    // Another CPR number: nothing. Without a key: usage error.
    let other = env.run(&[
        "audit",
        "search",
        "--data-dir",
        data,
        "--cpr",
        "0202021234",
        "--patient-key-file",
        kf,
    ]);
    assert_eq!(stdout(&other), "");
    let nokey = env.run(&["audit", "search", "--data-dir", data, "--cpr", CPR]);
    assert_eq!(nokey.status.code(), Some(2));
    assert!(!stderr(&nokey).contains(CPR));
    let by_gln = env.run(&["audit", "search", "--data-dir", data, "--gln", RECEIVER]);
    assert_eq!(stdout(&by_gln).lines().count(), 15);
    let by_time = env.run(&[
        "audit",
        "search",
        "--data-dir",
        data,
        "--from",
        "2000-01-01",
    ]);
    assert_eq!(stdout(&by_time).lines().count(), 16);

    // The log only grew since the old checkpoint.
    let old_s = old.to_str().unwrap();
    let cons = env.run(&[
        "audit",
        "consistency",
        "--data-dir",
        data,
        old_s,
        "--public-key",
        pk,
    ]);
    assert_eq!(cons.status.code(), Some(0), "{}", stderr(&cons));
    let doc: serde_json::Value = serde_json::from_slice(&cons.stdout).unwrap();
    assert_eq!(doc["format"], "sammen-audit-consistency/1");

    assert_no_personal_data(&env.data);
    assert_no_personal_data(&env.export());
}
