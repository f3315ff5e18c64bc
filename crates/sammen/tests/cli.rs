//! `sammen validate` and `sammen conformance` as a user runs them: exit codes, JSON shape, no personal data.
use assert_cmd::Command;
use std::path::{Path, PathBuf};

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

/// Personal data in the examples: CPR numbers and names, found by their element names.
fn personal_data(xml: &str) -> Vec<String> {
    let mut found = Vec::new();
    let grab = |open: &str, close: &str, found: &mut Vec<String>| {
        let mut rest = xml;
        while let Some(i) = rest.find(open) {
            rest = &rest[i + open.len()..];
            if let Some(j) = rest.find(close) {
                let v = rest[..j].trim();
                if v.len() >= 4 && !v.contains('<') {
                    found.push(v.to_owned());
                }
            }
        }
    };
    grab("<CivilRegistrationNumber>", "<", &mut found);
    grab("<PersonSurnameName>", "<", &mut found);
    grab("<PersonGivenName>", "<", &mut found);
    grab("<family value=\"", "\"", &mut found);
    // FHIR CPR: the identifier value that follows the CPR system.
    let mut rest = xml;
    while let Some(i) = rest.find("urn:oid:1.2.208.176.1.2\"") {
        rest = &rest[i..];
        if let Some(j) = rest.find("<value value=\"") {
            let v = &rest[j + 14..];
            if let Some(k) = v.find('"') {
                found.push(v[..k].to_owned());
            }
        }
        rest = &rest[1..];
    }
    found
}

#[test]
fn output_never_contains_cpr_numbers_or_names() {
    let dir = root().join("conformance");
    let mut pd = vec![
        "2512489996".to_owned(),
        "2509479989".to_owned(),
        "0101010227".to_owned(),
    ];
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "xml") {
                pd.extend(personal_data(&String::from_utf8_lossy(
                    &std::fs::read(&p).expect("read"),
                )));
            }
        }
    }
    pd.sort();
    pd.dedup();
    assert!(
        pd.len() >= 5,
        "found too little personal data to make the test meaningful: {pd:?}"
    );
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
