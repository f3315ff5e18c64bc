//! What `validate_bundle` reports about real messages (identity fields, privacy), the HomeCareObservation
//! message inside the EHMI SBDH sample, and a cheap mutation sweep that must never panic.

use sammen_model::{AckCode, Family, Report};
use std::path::PathBuf;

fn ex(rel: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../conformance/examples")
        .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn run(bytes: &[u8]) -> Report {
    let mut report = Report::default();
    let Ok(text) = sammen_xml::decode(bytes, false) else {
        return report;
    };
    let limits = sammen_xml::Limits::default();
    if let Ok(doc) = sammen_xml::Document::parse(&text.text, &limits, &[sammen_xml::ns::XHTML]) {
        sammen_fhir::validate_bundle(doc.root(), &mut report);
    }
    report
}

const STIN: &str = "hospitalnotification/Bundle-a5e5b880-c087-4055-b9ec-99108695f81d.xml";

#[test]
fn hospital_notification_identity() {
    let r = run(&ex(STIN));
    assert!(r.is_valid(), "{:#?}", r.issues);
    assert_eq!(r.family, Some(Family::HospitalNotification));
    assert_eq!(r.event.as_deref(), Some("admit-inpatient"));
    assert_eq!(
        r.message_id.as_deref(),
        Some("b9b4818e-02de-4cc4-b418-d20cbc7b5404")
    );
    assert_eq!(
        r.envelope_id.as_deref(),
        Some("a5e5b880-c087-4055-b9ec-99108695f81d")
    );
    assert_eq!(r.sender.gln.as_deref(), Some("5790000209354"));
    assert_eq!(r.sender.sor.as_deref(), Some("265161000016000"));
    assert_eq!(r.receiver.gln.as_deref(), Some("5790001348120"));
    assert_eq!(r.receiver.sor.as_deref(), Some("953741000016009"));
    let p = r.patient.as_ref().expect("patient");
    assert_eq!(p.system(), "urn:oid:1.2.208.176.1.2");
    assert_eq!(p.expose(), "2509479989");
    // The test CPR fails modulus 11: a warning, never a value in the output.
    assert!(r.has_code("id.cpr.modulus-11"));
    for i in &r.issues {
        assert!(!i.text.contains("2509479989") && !i.location.contains("2509479989"));
    }
}

#[test]
fn no_issue_echoes_personal_data_in_invalid_variants() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../conformance/invalid/fhir");
    for e in std::fs::read_dir(dir).expect("invalid/fhir") {
        let path = e.expect("entry").path();
        if path.extension().and_then(|x| x.to_str()) != Some("xml") {
            continue;
        }
        let r = run(&std::fs::read(&path).expect("read"));
        for i in &r.issues {
            for secret in ["2509479989", "3209479989", "0703921", "Elmer", "Herlev"] {
                assert!(
                    !i.text.contains(secret) && !i.location.contains(secret),
                    "{}: {} echoes a value",
                    path.display(),
                    i.code
                );
            }
        }
    }
}

#[test]
fn acknowledgement_response() {
    let r = run(&ex(
        "acknowledgement/Bundle-bc9535ef-ed94-4060-a928-7baddec7ee71.xml",
    ));
    assert!(r.is_valid(), "{:#?}", r.issues);
    assert_eq!(r.family, Some(Family::Acknowledgement));
    let resp = r.response.expect("response");
    assert_eq!(resp.message_id, "53128d9b-cede-4c7f-8904-809eab322d7d");
    assert_eq!(resp.code, AckCode::FatalError);
    assert_eq!(r.event.as_deref(), Some("fatal-error"));
}

fn b64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[test]
fn home_care_observation_in_sbdh_sample() {
    let sbdh = String::from_utf8(ex("sbdh/ehmisbdh_fullsample.xml")).expect("utf8");
    let start = sbdh.find("<BinaryContent").expect("BinaryContent");
    let body = &sbdh[start..];
    let open = body.find('>').expect(">") + 1;
    let close = body.find("</BinaryContent>").expect("close");
    let r = run(&b64(&body[open..close]));
    assert_eq!(r.family, Some(Family::HomeCareObservation));
    assert_eq!(r.event.as_deref(), Some("homecareobservation-message"));
    assert_eq!(r.sender.gln.as_deref(), Some("5790000123117"));
    // The sample's DiagnosticReport.performer names a PractitionerRole that is not in the bundle: a real
    // violation of "all references are bundled", reported as such.
    let errors: Vec<_> = r.errors().map(|i| i.code.as_str()).collect();
    assert_eq!(errors, ["fhir.reference.unresolved"], "{:#?}", r.issues);
}

#[test]
fn empty_message_uses_generic_rules() {
    let r = run(&ex(
        "acknowledgement/Bundle-eb26be85-fdb7-454d-a980-95cba6d1745b.xml",
    ));
    assert!(r.is_valid(), "{:#?}", r.issues);
    assert_eq!(r.family, Some(Family::EmptyMessage));
    assert_eq!(r.event.as_deref(), Some("empty-message"));
}

/// Delete each line (and cut each file short at each line): the validator returns a report, never panics.
#[test]
fn line_deletions_never_panic() {
    for rel in [
        STIN,
        "hospitalnotification/Bundle-d3128d9b-cede-4c7f-8904-809eab322d7d.xml",
        "carecommunication/Bundle-gfd00bc2-9c26-4174-934e-f6e4360845de.xml",
        "acknowledgement/Bundle-c9c2b2f6-0807-11ed-861d-0242ac120002.xml",
    ] {
        let text = String::from_utf8(ex(rel)).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        for i in 0..lines.len() {
            let mut v = lines.clone();
            v.remove(i);
            let _ = run(v.join("\n").as_bytes());
            let _ = run(lines[..i].join("\n").as_bytes());
        }
    }
}

/// Rough cost of validation next to building the tree (`cargo test --release -- --ignored speed`).
#[test]
#[ignore]
fn speed() {
    let bytes = ex("carecommunication/Bundle-d11968f5-4bdf-4b50-b146-a8e1cc890fc3.xml");
    let text = String::from_utf8(bytes).expect("utf8");
    let limits = sammen_xml::Limits::default();
    let n = 2000;
    let t0 = std::time::Instant::now();
    for _ in 0..n {
        let doc =
            sammen_xml::Document::parse(&text, &limits, &[sammen_xml::ns::XHTML]).expect("parse");
        std::hint::black_box(doc.len());
    }
    let parse = t0.elapsed();
    let doc = sammen_xml::Document::parse(&text, &limits, &[sammen_xml::ns::XHTML]).expect("parse");
    let t1 = std::time::Instant::now();
    for _ in 0..n {
        let mut r = Report::default();
        sammen_fhir::validate_bundle(doc.root(), &mut r);
        std::hint::black_box(r.issues.len());
    }
    let validate = t1.elapsed();
    eprintln!(
        "{} bytes: tree {:?}/msg, validate {:?}/msg",
        text.len(),
        parse / n,
        validate / n
    );
}
