mod harness;

#[test]
#[ignore]
fn dump_examples() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../conformance/");
    let files = std::env::var("DUMP").unwrap_or_default();
    for f in files.split_whitespace() {
        let bytes = std::fs::read(format!("{root}{f}")).expect("read example");
        let r = harness::validate(&bytes);
        println!("== {f}: valid={} family={:?} event={:?} msg={:?} env={:?} s={:?} r={:?} resp={:?} t={:?}",
            r.is_valid(), r.family, r.event, r.message_id, r.envelope_id, r.sender, r.receiver, r.response, r.transport);
        for i in &r.issues {
            println!(
                "   {:?} {} @ {} : {}",
                i.severity, i.code, i.location, i.text
            );
        }
    }
}
