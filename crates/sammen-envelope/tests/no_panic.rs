//! Mutated real envelopes and letters never panic the readers; a report always comes back.

mod harness;

use proptest::prelude::*;

const FILES: [&str; 5] = [
    "examples/oioxml-regionh/XDIS21_SBDH_Payload.xml",
    "examples/oioxml-regionh/XDIS20_SBDH.xml",
    "examples/oioxml/Flow2-XCTL03_Ex_from_FHIR_XDIS91.xml",
    "examples/oioxml-regionh/XDIS18_SBDH_Payload_VANS.xml",
    "examples/sbdh/ehmiSBDH_9a6ff822-08de-5a6f-9670-9fa4b9d2f0dc_ReceiptAcknowledgement_full.xml",
];

fn load(i: usize) -> Vec<u8> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../conformance/");
    std::fs::read(format!("{root}{}", FILES[i % FILES.len()])).expect("example")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn mutations_never_panic(file in 0usize..5, edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
        let mut b = load(file);
        for (pos, byte) in edits {
            let len = b.len();
            if len > 0 {
                b[pos % len] = byte;
            }
        }
        let keep = if b.is_empty() { 0 } else { b.len() - cut % (b.len() / 4 + 1) };
        b.truncate(keep);
        let _ = harness::validate(&b);
    }
}
