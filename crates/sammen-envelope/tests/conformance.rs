//! Runs conformance/oioxml.toml and conformance/envelope.toml through a stand-in façade (tests/harness),
//! until sammen-adapters runs the whole suite. FHIR payloads are only parsed here.

mod harness;

use serde::Deserialize;

#[derive(Deserialize)]
struct Manifest {
    case: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    file: String,
    valid: bool,
    family: Option<String>,
    event: Option<String>,
    #[serde(default)]
    expect: Vec<String>,
    derived_from: Option<String>,
    change: Option<String>,
}

fn run(manifest: &str) -> (usize, Vec<String>) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../conformance/");
    let text = std::fs::read_to_string(format!("{root}{manifest}")).expect("manifest");
    let m: Manifest = toml::from_str(&text).expect("manifest parses");
    let mut failures = Vec::new();
    for c in &m.case {
        // A FHIR inner message needs sammen-fhir, which this crate does not depend on: those cases are
        // checked by the full suite (crates/sammen-adapters/tests/conformance.rs).
        let fhir = c
            .family
            .as_deref()
            .and_then(|f| f.parse::<sammen_model::Family>().ok())
            .is_some_and(|f| f.is_fhir());
        if fhir {
            continue;
        }
        let bytes = std::fs::read(format!("{root}{}", c.file)).expect("case file");
        let r = harness::validate(&bytes);
        let mut why = Vec::new();
        if r.is_valid() != c.valid {
            why.push(format!("valid={} expected {}", r.is_valid(), c.valid));
        }
        for code in &c.expect {
            if !r.has_code(code) {
                why.push(format!("missing code {code}"));
            }
        }
        if let Some(f) = &c.family {
            if r.family.map(|x| x.as_str()) != Some(f.as_str()) {
                why.push(format!("family {:?} expected {f}", r.family));
            }
        }
        if let Some(e) = &c.event {
            if r.event.as_deref() != Some(e.as_str()) {
                why.push(format!("event {:?} expected {e}", r.event));
            }
        }
        if c.file.starts_with("invalid/") && (c.derived_from.is_none() || c.change.is_none()) {
            why.push("invalid variant without derived_from/change".into());
        }
        if !why.is_empty() {
            let codes: Vec<_> = r.issues.iter().map(|i| i.code.as_str()).collect();
            failures.push(format!("{}: {} (got {codes:?})", c.file, why.join("; ")));
        }
    }
    (m.case.len(), failures)
}

#[test]
fn oioxml_manifest() {
    let (n, failures) = run("oioxml.toml");
    assert!(n >= 30, "cases: {n}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn envelope_manifest() {
    let (n, failures) = run("envelope.toml");
    assert!(n >= 30, "cases: {n}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn texts_never_echo_personal_values() {
    // The CPRs, names and free text of the examples must never appear in an issue.
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../conformance/");
    for f in [
        "examples/oioxml/Flow1-XDIS91_Ex_to_FHIR.xml",
        "invalid/oioxml/xdis20-cpr-date.xml",
        "examples/sbdh/20250429_ehmisbdh_sample.xml",
    ] {
        let r = harness::validate(&std::fs::read(format!("{root}{f}")).expect("file"));
        let json = format!("{:?}", r.issues);
        for secret in [
            "2512489996",
            "3213111111",
            "2509479989",
            "0101010227",
            "Berggren",
            "Elmer",
        ] {
            assert!(!json.contains(secret), "{f} echoes a value");
        }
        assert!(format!("{r:?}").find("2512489996").is_none());
    }
}
