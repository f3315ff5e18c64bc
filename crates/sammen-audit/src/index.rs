//! The search index's posting lists: a window of leaves' search keys as a few puts, and their reading.
//!
//! Why a module: the checkpoint writes what is built here and search reads it back ([`crate::ops`]); the
//! key layout is in [`crate::store`]'s table. The index is a convenience, not evidence: readers stop at
//! the first malformed byte and callers re-check every leaf an index names.
//!
//! Two shapes, by how many leaves a value has:
//! - **one list per value** (GLN, SOR: an organisation has thousands of leaves a window): `}` ‖ tag ‖
//!   len ‖ value ‖ first, indices as LEB128 gaps.
//! - **hashed buckets** (message id, patient: nearly every value is new, with two or three leaves): the
//!   value's XXH3-64 picks one of 256 lists a window, `}` ‖ `M`/`P` ‖ bucket ‖ first, holding
//!   each value's hash (32 bits) and indices. Why: one list per message id was one key per message in
//!   the store (a memtable insert, then flushes and compactions), about a sixth of the audit's
//!   instructions per message (`examples/audit_instructions`); 256 keys a window cost next to nothing.
//!   The price is on the read side: a lookup reads one list a window (~200 bytes), not one key.

use xxhash_rust::xxh3::xxh3_64;

use crate::leaf_bin::{HashField, View};

/// First byte of the time list's keys, and of the value lists of older logs (indices as u64 BE).
pub(crate) const POSTINGS: u8 = b'~';
/// First byte of the value lists' keys: indices as LEB128 gaps ([`encode_gaps`]).
pub(crate) const POSTINGS_GAPS: u8 = b'}';

/// A posting list's indices (ascending, at least `first`) as LEB128 gaps: the first from `first`, each
/// next from the one before. Why: a list's indices are close together (a message's three leaves, or
/// every leaf of one GLN), so most gaps take one or two bytes instead of eight; the GLN and patient lists
/// were most of the index's bytes.
fn encode_gaps(first: u64, indices: impl Iterator<Item = u64>, out: &mut Vec<u8>) {
    let mut prev = first;
    for i in indices {
        // `Vec`'s `Write` cannot fail.
        let _ = leb128::write::unsigned(out, i.saturating_sub(prev));
        prev = i;
    }
}

/// The indices of a list [`encode_gaps`] wrote; stops at the first malformed or overflowing gap (the
/// index is a convenience, not evidence: callers re-read every leaf it names).
pub(crate) fn decode_gaps(first: u64, mut v: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    let mut at = first;
    while !v.is_empty() {
        let Some(next) = leb128::read::unsigned(&mut v)
            .ok()
            .and_then(|gap| at.checked_add(gap))
        else {
            break;
        };
        out.push(next);
        at = next;
    }
    out
}

/// A leaf's search keys without the leaf index (which is only known under the lock): the
/// [`index_prefix`]es (hashed tags: the hash) (self-delimiting) back to back, and the leaf's time. Flat, so a leaf costs one
/// allocation here instead of one per key; the log keeps these for every leaf until the next checkpoint.
#[derive(Debug, Default)]
pub(crate) struct IndexKeys {
    flat: Vec<u8>,
    pub(crate) time_ms: Option<u64>,
}

impl IndexKeys {
    /// The keys of `leaf`, each value once.
    pub(crate) fn of(leaf: &View<'_>) -> Self {
        let mut keys = IndexKeys {
            flat: Vec::with_capacity(96),
            time_ms: Some(leaf.time_ms),
        };
        if let Some(m) = leaf.message_id {
            keys.add(b'm', m);
        }
        for p in [leaf.sender, leaf.receiver].into_iter().flatten() {
            if let Some(g) = &p.gln {
                keys.add(b'g', g);
            }
            if let Some(s) = &p.sor {
                keys.add(b's', s);
            }
        }
        match leaf.patient {
            Some(HashField::Text(p)) => keys.add(b'p', p),
            // Never written by Sammen (a pseudonym is text); indexed as the text it would be.
            Some(HashField::Raw(p)) => keys.add(b'p', &crate::leaf::hex(p)),
            None => {}
        }
        keys
    }

    /// Appends in place and takes it back if the value is already there: no allocation per key, which
    /// showed in profiles of the accept path (three leaves a message, five keys each). A hashed tag's
    /// value is kept as its hash (`M`/`P` ‖ 8 ‖ hash): all its list needs.
    pub(crate) fn add(&mut self, tag: u8, value: &str) {
        let at = self.flat.len();
        match hashed_tag(tag) {
            Some(h) => {
                self.flat.push(h);
                self.flat.extend_from_slice(&8u16.to_be_bytes());
                self.flat
                    .extend_from_slice(&value_hash(value).to_be_bytes());
            }
            None => push_index_prefix(&mut self.flat, tag, value),
        }
        let (have, new) = self.flat.split_at(at);
        if Self::split(have).any(|k| k == new) {
            self.flat.truncate(at);
        }
    }

    /// Each `tag ‖ len ‖ value`.
    pub(crate) fn prefixes(&self) -> impl Iterator<Item = &[u8]> {
        Self::split(&self.flat)
    }

    fn split(mut rest: &[u8]) -> impl Iterator<Item = &[u8]> {
        std::iter::from_fn(move || {
            let len = usize::from(u16::from_be_bytes(rest.get(1..3)?.try_into().ok()?));
            let (k, tail) = rest.split_at_checked(3 + len)?;
            rest = tail;
            Some(k)
        })
    }
}

/// The tag a value tag's lists are kept under when its values are hashed into buckets: message ids and
/// patient pseudonyms, nearly unique per message.
pub(crate) fn hashed_tag(tag: u8) -> Option<u8> {
    match tag {
        b'm' => Some(b'M'),
        b'p' => Some(b'P'),
        _ => None,
    }
}

/// A value's hash for the bucket lists: XXH3-64, whose output is fixed by its specification (xxHash
/// 0.8), so lists written by one version are found by the next. Not a defence against anyone: a
/// collision only makes a lookup re-check one more leaf.
pub(crate) fn value_hash(value: &str) -> u64 {
    xxh3_64(value.as_bytes())
}

/// `}` ‖ hashed tag ‖ bucket: the keys of one bucket's lists, one a window (then `‖ first`). The
/// bucket is the hash's top byte: 256 lists a window at most.
pub(crate) fn bucket_prefix(hashed_tag: u8, hash: u64) -> [u8; 3] {
    [POSTINGS_GAPS, hashed_tag, hash.to_be_bytes()[0]]
}

/// The low half of a hash, as a bucket list holds it.
fn hash_tag(hash: u64) -> [u8; 4] {
    let b = hash.to_be_bytes();
    [b[4], b[5], b[6], b[7]]
}

/// The indices a bucket list (`first` from its key) holds for `hash`. The list is entries of
/// `hash (low 32 bits, BE) ‖ count (LEB128) ‖ that many indices as LEB128 gaps` (the first from
/// `first`); reading stops at the first malformed entry.
pub(crate) fn bucket_indices(first: u64, mut v: &[u8], hash: u64) -> Vec<u64> {
    let want = hash_tag(hash);
    let mut out = Vec::new();
    while let Some((tag, mut rest)) = v.split_first_chunk::<4>() {
        let Ok(n) = leb128::read::unsigned(&mut rest) else {
            break;
        };
        let mut at = first;
        for _ in 0..n {
            let Some(next) = leb128::read::unsigned(&mut rest)
                .ok()
                .and_then(|gap| at.checked_add(gap))
            else {
                return out;
            };
            if *tag == want {
                out.push(next);
            }
            at = next;
        }
        v = rest;
    }
    out
}

/// A hashed key's tag and hash (`M`/`P` ‖ 8 ‖ hash), or `None` for a value's own prefix.
fn hashed_key(k: &[u8]) -> Option<(u8, u64)> {
    match k {
        [t @ (b'M' | b'P'), 0, 8, h @ ..] => Some((*t, u64::from_be_bytes(h.try_into().ok()?))),
        _ => None,
    }
}

/// The posting lists for `leaves` (index, key prefixes), in index order: one put per value, one per
/// hashed bucket that has a value, one for time.
pub(crate) fn postings(leaves: &[(u64, IndexKeys)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let (Some((first, _)), Some((last, _))) = (leaves.first(), leaves.last()) else {
        return Vec::new();
    };
    // (prefix, index) pairs sorted by prefix: a stable sort keeps each value's indices in leaf order, so
    // each run of equal prefixes is one posting list. (A map of growing lists cost an allocation per
    // value and per growth, some 30,000 values a second under load.)
    let mut pairs: Vec<(&[u8], u64)> = Vec::with_capacity(leaves.len() * 3);
    // (tag, hash, index): sorted as integers, so each hash's indices ascend and a bucket is one run.
    let mut hashed: Vec<(u8, u64, u64)> = Vec::with_capacity(leaves.len() * 2);
    let (mut earliest, mut latest) = (u64::MAX, 0u64);
    for (i, keys) in leaves {
        if let Some(t) = keys.time_ms {
            earliest = earliest.min(t);
            latest = latest.max(t);
        }
        for k in keys.prefixes() {
            match hashed_key(k) {
                Some((tag, h)) => hashed.push((tag, h, *i)),
                None => pairs.push((k, *i)),
            }
        }
    }
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    hashed.sort_unstable();
    let mut out = Vec::new();
    for list in pairs.chunk_by(|a, b| a.0 == b.0) {
        let prefix = list[0].0;
        let mut key = Vec::with_capacity(1 + prefix.len() + 8);
        key.push(POSTINGS_GAPS);
        key.extend_from_slice(prefix);
        key.extend_from_slice(&first.to_be_bytes());
        let mut value = Vec::with_capacity(list.len() * 2);
        encode_gaps(*first, list.iter().map(|(_, i)| *i), &mut value);
        out.push((key, value));
    }
    for bucket in hashed.chunk_by(|a, b| bucket_prefix(a.0, a.1) == bucket_prefix(b.0, b.1)) {
        let (tag, h, _) = bucket[0];
        let key = [&bucket_prefix(tag, h)[..], &first.to_be_bytes()].concat();
        let mut value = Vec::with_capacity(bucket.len() * 4);
        for entry in bucket.chunk_by(|a, b| a.1 == b.1) {
            value.extend_from_slice(&hash_tag(entry[0].1));
            let _ = leb128::write::unsigned(&mut value, entry.len() as u64);
            encode_gaps(*first, entry.iter().map(|e| e.2), &mut value);
        }
        out.push((key, value));
    }
    if earliest <= latest {
        let key = [
            &[POSTINGS, b't'][..],
            &latest.to_be_bytes(),
            &first.to_be_bytes(),
        ]
        .concat();
        out.push((
            key,
            [earliest.to_be_bytes(), (last + 1).to_be_bytes()].concat(),
        ));
    }
    out
}

/// `prefix ‖ len ‖ value` (the search key without the leaf index).
pub(crate) fn index_prefix(tag: u8, value: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + value.len() + 8);
    push_index_prefix(&mut k, tag, value);
    k
}

/// Append [`index_prefix`] to `out` (a value longer than `u16::MAX` is cut there).
pub(crate) fn push_index_prefix(out: &mut Vec<u8>, tag: u8, value: &str) {
    let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
    out.push(tag);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&value.as_bytes()[..usize::from(len)]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leaf::{Event, LeafEvent, Outcome};
    use std::collections::BTreeMap;

    /// Leaves 10..400 with values repeating at different strides: message ids (three leaves each), GLNs
    /// (seven values), patients (eleven values, every fifth leaf).
    fn window() -> Vec<(u64, IndexKeys)> {
        (10..400u64)
            .map(|i| {
                let mut k = IndexKeys {
                    time_ms: Some(1_000 + (i * 7919) % 500),
                    ..IndexKeys::default()
                };
                k.add(b'm', &format!("msg-{}", i / 3));
                k.add(b'g', &format!("{}", 5_790_000_000_000 + i % 7));
                if i % 5 == 0 {
                    k.add(b'p', &format!("{:064}", i % 11));
                }
                (i, k)
            })
            .collect()
    }

    /// What each value's list must give: (tag, value) -> its indices in leaf order.
    fn expected(leaves: &[(u64, IndexKeys)]) -> BTreeMap<(u8, String), Vec<u64>> {
        let mut map: BTreeMap<(u8, String), Vec<u64>> = BTreeMap::new();
        for &(i, _) in leaves {
            map.entry((b'm', format!("msg-{}", i / 3)))
                .or_default()
                .push(i);
            map.entry((b'g', format!("{}", 5_790_000_000_000 + i % 7)))
                .or_default()
                .push(i);
            if i % 5 == 0 {
                map.entry((b'p', format!("{:064}", i % 11)))
                    .or_default()
                    .push(i);
            }
        }
        map
    }

    #[test]
    fn posting_lists_give_each_values_indices_from_value_lists_and_hashed_buckets() {
        let leaves = window();
        let want = expected(&leaves);
        let got = postings(&leaves);
        let (lists, last) = got.split_at(got.len() - 1);
        // GLNs: one list per value, sorted by value, indices as gaps from `first` (10).
        let gln: Vec<_> = lists.iter().filter(|(k, _)| k[1] == b'g').collect();
        assert_eq!(gln.len(), 7);
        for ((tag, value), list) in want.iter().filter(|e| e.0 .0 == b'g') {
            let key = [
                &[POSTINGS_GAPS][..],
                &index_prefix(*tag, value),
                &10u64.to_be_bytes(),
            ]
            .concat();
            let (_, v) = gln.iter().find(|(k, _)| *k == key).expect("a list per GLN");
            let mut gaps = Vec::new();
            for (at, i) in list.iter().enumerate() {
                let gap = i - if at == 0 { 10 } else { list[at - 1] };
                leb128::write::unsigned(&mut gaps, gap).unwrap();
            }
            assert_eq!(v, &gaps);
            assert_eq!(&decode_gaps(10, v), list);
        }
        // Message ids and patients: one list per bucket that has a value, each value found in its own.
        let hashed: Vec<_> = lists.iter().filter(|(k, _)| k[1] != b'g').collect();
        assert_eq!(gln.len() + hashed.len(), lists.len());
        let mut buckets = std::collections::BTreeSet::new();
        for ((tag, value), list) in want.iter().filter(|e| e.0 .0 != b'g') {
            let h = value_hash(value);
            let key = [
                &bucket_prefix(hashed_tag(*tag).unwrap(), h)[..],
                &10u64.to_be_bytes(),
            ]
            .concat();
            let (_, v) = hashed.iter().find(|(k, _)| *k == key).expect("its bucket");
            assert_eq!(&bucket_indices(10, v, h), list, "{value}");
            buckets.insert(key);
            // Another value's hash in the same bucket finds none of these.
            assert!(bucket_indices(10, v, h ^ 1)
                .iter()
                .all(|i| !list.contains(i)));
        }
        assert_eq!(buckets.len(), hashed.len(), "no list without a value");
        assert!(hashed.len() < want.len(), "130 message ids share buckets");
        let earliest = leaves.iter().filter_map(|l| l.1.time_ms).min().unwrap();
        let latest = leaves.iter().filter_map(|l| l.1.time_ms).max().unwrap();
        let time = [
            &[POSTINGS, b't'][..],
            &latest.to_be_bytes(),
            &10u64.to_be_bytes(),
        ]
        .concat();
        assert_eq!(
            last[0],
            (
                time,
                [earliest.to_be_bytes(), 400u64.to_be_bytes()].concat()
            )
        );
        assert!(postings(&[]).is_empty());
    }

    #[test]
    fn a_window_of_distinct_message_ids_costs_at_most_256_keys() {
        // 16,384 leaves of 5,462 messages: one key per message before the buckets.
        let leaves: Vec<_> = (0..16_384u64)
            .map(|i| {
                let mut k = IndexKeys::default();
                k.add(
                    b'm',
                    &format!("{:08x}-7f1c-4c8e-9a41-2b6f0c3d{:04x}", i / 3, i % 7),
                );
                (i, k)
            })
            .collect();
        let lists = postings(&leaves);
        assert!(lists.len() <= 256, "{}", lists.len());
        let bytes: usize = lists.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(
            bytes < 16_384 * 12,
            "about 11 bytes a message, not a key: {bytes}"
        );
    }

    #[test]
    fn bucket_lists_stop_at_damage_and_never_make_up_an_index() {
        let leaves = window();
        let lists = postings(&leaves);
        let (k, v) = lists.iter().find(|(k, _)| k[1] == b'M').unwrap();
        let first = u64::from_be_bytes(k[3..11].try_into().unwrap());
        // Every hash the list holds, read from its entries.
        let all: Vec<u64> = leaves.iter().map(|l| l.0).collect();
        for cut in 0..v.len() {
            for h in [0, u64::MAX, value_hash("msg-3")] {
                let got = bucket_indices(first, &v[..cut], h);
                assert!(got.iter().all(|i| all.contains(i)), "cut {cut}");
            }
        }
        // A count far beyond the bytes: reading stops, no panic, no allocation of the count.
        let mut bad = vec![1, 2, 3, 4];
        leb128::write::unsigned(&mut bad, u64::MAX).unwrap();
        bad.push(5);
        let h = u64::from_be_bytes([0, 0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(bucket_indices(7, &bad, h), [12]);
        assert!(bucket_indices(7, &[1, 2], h).is_empty());
    }

    proptest::proptest! {
        /// Any ascending list reads back; any bytes read as at most one index per byte, ascending,
        /// without panicking (the index is read from a store that may be damaged).
        #[test]
        fn gap_lists_round_trip_and_any_bytes_read_safely(
            first in proptest::prelude::any::<u64>(),
            gaps in proptest::collection::vec(0u64..1 << 20, 0..50),
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let mut list = Vec::new();
            let mut at = first;
            for g in gaps {
                let Some(next) = at.checked_add(g) else { break };
                list.push(next);
                at = next;
            }
            let mut v = Vec::new();
            encode_gaps(first, list.iter().copied(), &mut v);
            proptest::prop_assert_eq!(decode_gaps(first, &v), list);
            let got = decode_gaps(first, &junk);
            proptest::prop_assert!(got.len() <= junk.len());
            let got = bucket_indices(first, &junk, u64::from(junk.len() as u32));
            proptest::prop_assert!(got.len() <= junk.len() && got.iter().all(|&i| i >= first));
            proptest::prop_assert!(got.windows(2).all(|w| w[0] <= w[1]) && got.iter().all(|&i| i >= first));
        }
    }

    #[test]
    fn gap_lists_read_back_and_stop_at_damage() {
        let cases: [(u64, &[u64]); 5] = [
            (0, &[]),
            (0, &[0, 1, 2, 3]),
            (7, &[7, 200, 201, 70_000, 1 << 40]),
            (u64::MAX - 3, &[u64::MAX - 2, u64::MAX]),
            (5, &[6, 300_000, 300_001]),
        ];
        for (first, list) in cases {
            let mut v = Vec::new();
            encode_gaps(first, list.iter().copied(), &mut v);
            assert_eq!(decode_gaps(first, &v), list);
            // Cut inside the last gap: the indices before it, nothing made up.
            if let Some(cut) = v.len().checked_sub(1).filter(|_| list.len() > 1) {
                let got = decode_gaps(first, &v[..cut]);
                assert!(list.starts_with(&got) && got.len() < list.len(), "{got:?}");
            }
        }
        // Most gaps in a busy GLN's list take one byte.
        let mut v = Vec::new();
        encode_gaps(1_000_000, (1_000_000..1_001_000).step_by(3), &mut v);
        assert_eq!(v.len(), 334);
        // A gap past u64 ends the list.
        let mut v = Vec::new();
        leb128::write::unsigned(&mut v, 5).unwrap();
        leb128::write::unsigned(&mut v, u64::MAX).unwrap();
        leb128::write::unsigned(&mut v, 1).unwrap();
        assert_eq!(decode_gaps(0, &v), [5]);
        assert_eq!(decode_gaps(0, &[0x80; 11]), Vec::<u64>::new());
    }

    #[test]
    fn index_keys_hold_each_value_once_and_parse_back() {
        let leaf = LeafEvent {
            message_id: Some("m-1".into()),
            sender: Some(std::borrow::Cow::Owned(sammen_model::Party {
                gln: Some("5790000209354".into()),
                sor: Some("123".into()),
            })),
            receiver: Some(std::borrow::Cow::Owned(sammen_model::Party {
                gln: Some("5790000209354".into()),
                sor: None,
            })),
            ..LeafEvent::new(7, Event::Accepted, Outcome::Success)
        }
        .into_leaf(&crate::leaf::PatientKey::new(b"0123456789abcdef0123").unwrap());
        let keys = IndexKeys::of(&leaf.view());
        let got: Vec<&[u8]> = keys.prefixes().collect();
        assert_eq!(
            got,
            vec![
                [&b"M\0\x08"[..], &value_hash("m-1").to_be_bytes()]
                    .concat()
                    .as_slice(),
                index_prefix(b'g', "5790000209354").as_slice(),
                index_prefix(b's', "123").as_slice(),
            ]
        );
        assert_eq!(keys.time_ms, Some(7));
    }
}
