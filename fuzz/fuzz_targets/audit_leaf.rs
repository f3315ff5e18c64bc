//! Fuzz the audit leaf decoder (both encodings: version-1 JSON, version-2 binary): it must never panic,
//! and a leaf it accepts must re-encode to exactly the input (canonical: one byte string per event).
//! Also the stored-entry parser (`runs`: a batch's leaves under one key), with the first 8 bytes as the
//! key: never a panic, and an entry it reads must encode back to the same key and value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sammen_audit::{runs, Leaf};

fuzz_target!(|data: &[u8]| {
    if let Ok(leaf) = Leaf::decode(data) {
        assert_eq!(leaf.encode(), data);
        let _ = leaf.hash();
    }
    if let (Some(key), Some(value)) = (data.get(..8), data.get(8..)) {
        if let Ok(found) = runs::entries(key, value) {
            let first = found.first().map(|(i, _)| *i).unwrap_or(0);
            let leaves = found.iter().map(|(_, b)| b.to_vec()).collect();
            assert_eq!(
                runs::encode(first, leaves),
                Some((key.to_vec(), value.to_vec()))
            );
        }
    }
});
