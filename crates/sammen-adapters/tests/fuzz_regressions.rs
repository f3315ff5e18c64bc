//! Every input a fuzzer found a fault with (fuzz/regressions/) keeps passing the fuzz targets' checks.
use sammen_adapters::{validate, Options};
use std::path::Path;

#[test]
fn fuzz_findings_stay_fixed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("fuzz/regressions exists") {
        let path = e.expect("entry").path();
        let bytes = std::fs::read(&path).expect("read");
        let report = validate(&bytes, &Options::default());
        for issue in &report.issues {
            assert!(
                !issue.code.is_empty() && !issue.text.is_empty() && !issue.location.is_empty(),
                "{}: issue {:?} has an empty field",
                path.display(),
                issue.code
            );
        }
        let receipt = report.event.as_deref() == Some(sammen_adapters::RECEIPT_EVENT);
        assert!(
            !report.is_valid() || report.family.is_some() || receipt,
            "{}",
            path.display()
        );
        n += 1;
    }
    assert!(n >= 2, "regression inputs missing");
}
