//! Fuzz the audit leaf decoder (every encoding: version-1 JSON, version-2 and version-3 binary): it must
//! never panic, and a leaf it accepts must re-encode to exactly the input (canonical: one byte string per
//! event).
//! Also the stored-entry parser (`runs`: a batch's leaves under one key), with the first 8 bytes as the
//! key: never a panic, and an entry it reads must encode back to the same key and value. And the group
//! commit's joiner (`runs::Joiner`): an entry joins with the leaf after it exactly when `entries` reads
//! it, into a run of its leaves and that one.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sammen_audit::{runs, Leaf};
use sammen_store::Coalesce as _;

fuzz_target!(|data: &[u8]| {
    if let Ok(leaf) = Leaf::decode(data) {
        assert_eq!(leaf.encode(), data);
        let _ = leaf.hash();
    }
    if let (Some(key), Some(value)) = (data.get(..8), data.get(8..)) {
        let read = runs::entries(key, value);
        if let Ok(found) = &read {
            let first = found.first().map(|(i, _)| *i).unwrap_or(0);
            let leaves = found.iter().map(|(_, b)| b.to_vec()).collect();
            assert_eq!(
                runs::encode(first, leaves),
                Some((key.to_vec(), value.to_vec()))
            );
        }
        let last = u64::from_be_bytes(key.try_into().unwrap_or([0; 8]));
        if let Some(next) = last.checked_add(1) {
            let next_key = next.to_be_bytes();
            let parts = [(key, value), (&next_key[..], &b"\x02z"[..])];
            let joined = runs::Joiner.join(&parts);
            match (&read, &joined) {
                (Ok(found), Some((k, v))) => {
                    let got = runs::entries(k, v).expect("a joined run reads");
                    assert_eq!(got.len(), found.len() + 1);
                    assert_eq!(&got[..found.len()], &found[..]);
                    assert_eq!(got[found.len()], (next, &b"\x02z"[..]));
                }
                (Err(_), None) => {}
                (r, j) => panic!("entries {r:?} but join {j:?}"),
            }
        }
    }
});
