//! Runs `conformance/fhir.toml` through sammen-xml + `validate_bundle` (the façade crate later runs all
//! manifests; this keeps the FHIR cases honest on their own).

use sammen_model::Report;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Deserialize)]
struct Manifest {
    case: Vec<Case>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Case {
    file: String,
    valid: bool,
    family: Option<String>,
    event: Option<String>,
    #[serde(default)]
    expect: Vec<String>,
    note: Option<String>,
    derived_from: Option<String>,
    change: Option<String>,
}

fn conformance_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../conformance")
}

/// Parse and validate one file the way the façade does.
pub fn run(bytes: &[u8]) -> Report {
    let mut report = Report::default();
    let decoded = match sammen_xml::decode(bytes, false) {
        Ok(d) => d,
        Err(e) => {
            report.push(sammen_model::Issue::error(
                e.code(),
                "document",
                e.to_string(),
            ));
            return report;
        }
    };
    let limits = sammen_xml::Limits::default();
    match sammen_xml::Document::parse(&decoded.text, &limits, &[sammen_xml::ns::XHTML]) {
        Ok(doc) => sammen_fhir::validate_bundle(doc.root(), &mut report),
        Err(e) => report.push(sammen_model::Issue::error(
            e.code(),
            e.location(&decoded.text),
            e.to_string(),
        )),
    }
    report
}

#[test]
fn fhir_manifest_cases_pass() {
    let dir = conformance_dir();
    let text = std::fs::read_to_string(dir.join("fhir.toml")).expect("conformance/fhir.toml");
    let m: Manifest = toml::from_str(&text).expect("manifest parses");
    let mut failures = Vec::new();
    let (mut valid, mut invalid) = (0, 0);
    for c in &m.case {
        if c.valid {
            valid += 1
        } else {
            invalid += 1
        }
        let bytes = std::fs::read(dir.join(&c.file)).unwrap_or_else(|e| panic!("{}: {e}", c.file));
        let r = run(&bytes);
        let codes: Vec<String> = r
            .issues
            .iter()
            .map(|i| format!("{}:{}@{}", i.severity.as_str(), i.code, i.location))
            .collect();
        let mut why = Vec::new();
        if r.is_valid() != c.valid {
            why.push(format!("valid={} expected {}", r.is_valid(), c.valid));
        }
        for e in &c.expect {
            if !r.has_code(e) {
                why.push(format!("missing code {e}"));
            }
        }
        if let Some(f) = &c.family {
            if r.family.map(|x| x.as_str()) != Some(f.as_str()) {
                why.push(format!("family {:?} expected {f}", r.family));
            }
        }
        if let Some(ev) = &c.event {
            if r.event.as_deref() != Some(ev.as_str()) {
                why.push(format!("event {:?} expected {ev}", r.event));
            }
        }
        if !why.is_empty() {
            failures.push(format!(
                "{}: {}\n    issues: {}",
                c.file,
                why.join("; "),
                codes.join("\n            ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        m.case.len(),
        failures.join("\n")
    );
    assert!(
        valid >= 28,
        "expected every FHIR example as a valid case, got {valid}"
    );
    assert!(
        invalid >= 45,
        "expected at least 45 invalid variants, got {invalid}"
    );
}
