//! The XCTL03 builder (`sammen_oioxml::build`) answers every valid OIOXML example letter with a positive
//! receipt our own validator accepts without any issue, correlated to that letter and envelope, between
//! the letter's parties reversed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sammen_adapters::{validate, Options};
use sammen_model::{AckCode, Family};
use sammen_oioxml::build::{letter_version_code, positive_receipt, BuildError, ReceiptSpec};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

fn xml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            xml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "xml") {
            out.push(p);
        }
    }
}

/// The letter inside any VANS / SBDH envelopes (the broker stores what it was sent; this test wants every
/// example letter, enveloped or not).
fn innermost(bytes: Vec<u8>) -> Vec<u8> {
    let mut cur = bytes;
    for _ in 0..3 {
        let Ok(d) = sammen_xml::decode(&cur, true) else {
            return cur;
        };
        let Ok(doc) = sammen_xml::Document::parse(&d.text, &sammen_xml::Limits::default(), &[])
        else {
            return cur;
        };
        let root = doc.root();
        let mut scratch = sammen_model::Report::default();
        let inner = if sammen_envelope::is_vans_root(root) {
            sammen_envelope::open_vans(root, &mut scratch)
        } else if sammen_envelope::is_sbdh_root(root) {
            sammen_envelope::open_sbdh(root, &mut scratch)
        } else {
            return cur;
        };
        match inner {
            Some(p) => cur = p.bytes,
            None => return cur,
        }
    }
    cur
}

fn spec() -> ReceiptSpec {
    ReceiptSpec {
        envelope_id: "SE0123456789ab".into(),
        letter_id: "SL0123456789ab".into(),
        sender_ean: "5790000121441".into(),
        receiver_ean: "5790001382445".into(),
        original_envelope_id: "MEDBIN62529".into(),
        original_letter_id: "031120PWE62528".into(),
        original_version_code: "XB0131X".into(),
        time: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    }
}

#[test]
fn receipts_for_every_valid_example_letter_pass_the_validator() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conformance/examples");
    let mut files = Vec::new();
    xml_files(&root, &mut files);
    files.sort();
    let mut built = 0;
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let r = validate(&bytes, &Options::default());
        let Some(fam) = r.family else { continue };
        if fam.is_fhir() || fam.is_acknowledgement() || !r.is_valid() {
            continue;
        }
        let version = letter_version_code(&innermost(bytes))
            .unwrap_or_else(|| panic!("{}: no VersionCode read", f.display()));
        let s = ReceiptSpec {
            original_envelope_id: r.envelope_id.clone().unwrap(),
            original_letter_id: r.message_id.clone().unwrap(),
            original_version_code: version,
            sender_ean: r.receiver.gln.clone().unwrap(),
            receiver_ean: r.sender.gln.clone().unwrap(),
            ..spec()
        };
        let xml = positive_receipt(&s).unwrap();
        assert!(xml.starts_with(r#"<?xml version="1.0" encoding="ISO-8859-1"?>"#));
        let a = validate(xml.as_bytes(), &Options::default());
        assert!(a.issues.is_empty(), "{}: {:#?}", f.display(), a.issues);
        assert_eq!(a.family, Some(Family::Xctl03));
        assert_eq!(a.event.as_deref(), Some("positive"));
        assert_eq!(a.message_id.as_deref(), Some("SL0123456789ab"));
        assert_eq!(a.envelope_id.as_deref(), Some("SE0123456789ab"));
        assert_eq!(a.sender.gln, r.receiver.gln);
        assert_eq!(a.receiver.gln, r.sender.gln);
        let resp = a.response.unwrap();
        assert_eq!(Some(resp.message_id), r.message_id, "{}", f.display());
        assert_eq!(resp.envelope_id, r.envelope_id);
        assert_eq!(resp.code, AckCode::Ok);
        built += 1;
    }
    // Flow1/Flow3 XDIS91 and XBIN01 letters and the Region H XDIS17/18/20/21 letters (bare and enveloped).
    assert!(built >= 14, "only {built} example letters answered");
}

#[test]
fn the_built_receipt_has_the_shape_of_medcoms_sample() {
    let ours = positive_receipt(&spec()).unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../conformance/examples/oioxml/Flow2-XCTL03_Ex_from_FHIR_XBIN01.xml");
    let sample = std::fs::read_to_string(path).unwrap();
    // Same elements in the same order; only the receipt's own ids and the sent time differ.
    let norm = |s: &str| {
        s.replace("KuvertNr1287", "SE0123456789ab")
            .replace("BrevNr5612", "SL0123456789ab")
            .replace("2023-11-20", "2023-11-14")
            .replace("17:46", "22:13")
            .replace("\r\n", "\n")
            .trim()
            .to_owned()
    };
    assert_eq!(norm(&ours), norm(&sample));
}

#[test]
fn refuses_what_it_cannot_build() {
    let mut s = spec();
    s.original_letter_id = "x</OriginalLetterIdentifier><evil".into();
    assert_eq!(
        positive_receipt(&s),
        Err(BuildError::Identifier("the original letter identifier"))
    );
    s = spec();
    s.envelope_id = "ABCDEFGHIJKLMNO".into(); // 15 characters
    assert!(matches!(
        positive_receipt(&s),
        Err(BuildError::Identifier(_))
    ));
    s = spec();
    s.receiver_ean = "5790001382446".into(); // check digit off by one
    assert_eq!(positive_receipt(&s), Err(BuildError::Ean("the receiver")));
    s = spec();
    s.original_version_code = "XX9999X".into();
    assert_eq!(positive_receipt(&s), Err(BuildError::VersionCode));
}
