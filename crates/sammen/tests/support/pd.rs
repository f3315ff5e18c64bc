//! Personal data of the conformance examples (CPR numbers and names), for tests that check output and
//! logs never carry any. Shared by `cli.rs` (validate output) and `telemetry.rs` (serve's logs).
#![allow(dead_code, clippy::expect_used)]

use std::path::Path;

/// Personal data in one example: CPR numbers and names, found by their element names.
pub fn personal_data(xml: &str) -> Vec<String> {
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

/// Every CPR number and name in the `*.xml` files under `conformance` (plus the test CPR numbers the
/// examples carry in forms the element scan misses), sorted and deduplicated; at least five, or the
/// checks using it would prove nothing.
pub fn conformance_personal_data(conformance: &Path) -> Vec<String> {
    let mut pd = vec![
        "2512489996".to_owned(),
        "2509479989".to_owned(),
        "0101010227".to_owned(),
    ];
    let mut stack = vec![conformance.to_path_buf()];
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
    pd
}
