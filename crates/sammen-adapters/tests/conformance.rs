//! The whole conformance suite: every real example and every invalid variant gets its expected outcome.
use sammen_adapters::{conformance, Options};
use std::collections::BTreeSet;
use std::path::Path;

fn suite_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conformance")
}

#[test]
fn every_case_matches_its_expected_outcome() {
    let outcomes = conformance::run(&suite_dir(), &Options::default()).expect("suite loads");
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.passed())
        .map(|o| {
            format!(
                "{}: {} (reported: {})",
                o.case.file.display(),
                o.mismatches.join("; "),
                o.codes.join(", ")
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} cases failed:\n{}",
        failed.len(),
        outcomes.len(),
        failed.join("\n")
    );
}

#[test]
fn suite_covers_every_example_and_enough_invalid_variants() {
    let dir = suite_dir();
    let cases = conformance::load(&dir).expect("suite loads");
    let listed: BTreeSet<String> = cases
        .iter()
        .map(|(_, c)| c.file.display().to_string())
        .collect();
    let mut missing = Vec::new();
    let mut stack = vec![dir.join("examples")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("examples dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "xml") {
                let rel = p
                    .strip_prefix(&dir)
                    .expect("under suite")
                    .display()
                    .to_string();
                if !listed.contains(&rel) {
                    missing.push(rel);
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "examples not in any manifest: {missing:?}"
    );
    let invalid = cases
        .iter()
        .filter(|(_, c)| !c.valid && c.derived_from.is_some())
        .count();
    assert!(invalid >= 60, "only {invalid} invalid variants");
    for (_, c) in &cases {
        assert!(
            dir.join(&c.file).is_file(),
            "case file missing: {}",
            c.file.display()
        );
        if !c.valid {
            assert!(
                !c.expect.is_empty(),
                "invalid case without expected code: {}",
                c.file.display()
            );
        }
    }
}
