// Shared by the fuzz targets: validate and check the report's own invariants.
use sammen_adapters::{validate, Options};

pub fn check(bytes: &[u8]) {
    let opts = Options::default();
    let report = validate(bytes, &opts);
    for issue in &report.issues {
        assert!(!issue.code.is_empty() && !issue.text.is_empty() && !issue.location.is_empty());
    }
    if report.is_valid() {
        let receipt = report.event.as_deref() == Some(sammen_adapters::RECEIPT_EVENT);
        assert!(report.family.is_some() || receipt, "a valid message has a family");
    }
}
