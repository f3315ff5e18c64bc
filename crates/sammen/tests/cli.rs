//! `sammen validate` and `sammen conformance` as a user runs them: exit codes, JSON shape, no personal data.
use assert_cmd::Command;
use std::path::{Path, PathBuf};

#[path = "support/pd.rs"]
mod pd;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sammen() -> Command {
    let mut c = Command::cargo_bin("sammen").expect("binary built");
    c.current_dir(root());
    c
}

#[test]
fn exit_codes_follow_the_contract() {
    let ok =
        "conformance/examples/hospitalnotification/Bundle-a5e5b880-c087-4055-b9ec-99108695f81d.xml";
    sammen().args(["validate", ok]).assert().code(0);
    sammen()
        .args([
            "validate",
            "conformance/examples/oioxml-regionh/invalid-sbdh.xml",
        ])
        .assert()
        .code(1);
    sammen()
        .args(["validate", "no/such/file.xml"])
        .assert()
        .code(2);
    sammen().args(["validate"]).assert().code(2);
    sammen()
        .args(["validate", "--format", "yaml", ok])
        .assert()
        .code(2);
}

#[test]
fn json_lines_have_the_documented_shape() {
    let out = sammen()
        .args([
            "validate",
            "--format",
            "json",
            "conformance/examples/hospitalnotification",
        ])
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 12, "one line per file, got {}", lines.len());
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).expect("each line is JSON");
        let keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        for k in [
            "file",
            "valid",
            "family",
            "event",
            "message_id",
            "envelope_id",
            "sender",
            "receiver",
            "issues",
        ] {
            assert!(keys.contains(&k), "missing {k} in {l}");
        }
        assert_eq!(v["family"], "HospitalNotification");
        assert!(
            v["sender"]["gln"].is_string() && v["receiver"]["sor"].is_string(),
            "{l}"
        );
    }
}

#[test]
fn output_never_contains_cpr_numbers_or_names() {
    let pd = pd::conformance_personal_data(&root().join("conformance"));
    for format in ["text", "json"] {
        let out = sammen()
            .args(["validate", "--format", format, "conformance"])
            .output()
            .expect("runs");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        for v in &pd {
            assert!(
                !text.contains(v.as_str()),
                "{format} output contains personal data ({} chars)",
                v.len()
            );
        }
    }
}

#[test]
fn conformance_command_passes_on_the_suite() {
    let out = sammen()
        .args(["conformance", "--quiet", "conformance"])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains(" 0 failed"), "{text}");
}
