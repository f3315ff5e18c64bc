//! Fuzz the audit leaf decoder (both encodings: version-1 JSON, version-2 binary): it must never panic,
//! and a leaf it accepts must re-encode to exactly the input (canonical: one byte string per event).
#![no_main]
use libfuzzer_sys::fuzz_target;
use sammen_audit::Leaf;

fuzz_target!(|data: &[u8]| {
    if let Ok(leaf) = Leaf::decode(data) {
        assert_eq!(leaf.encode(), data);
        let _ = leaf.hash();
    }
});
