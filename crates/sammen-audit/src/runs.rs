//! Leaf runs: the leaves of one batch stored under one key.
//!
//! Why: each store key is a memtable insert and a journal item on the store's committer thread, the one
//! thread every accept waits for. A message's accept carries two leaves (`received`, `accepted`) and a
//! group of publish or delivery marks up to 256: one key per leaf wrote up to 256 keys where one does.
//! The leaves and their hashes are unchanged: runs are a storage layout, the Merkle tree never sees them.
//!
//! Layout in `audit_leaves`:
//! - a single leaf: key = its index (u64 BE), value = the leaf's bytes (a binary leaf starts with its
//!   version byte `0x02`, a JSON leaf of older logs with `{`);
//! - a run of `n ≥ 2` leaves `first..=last`: key = `last` (u64 BE), value = [`RUN`] ‖ `first` (u64 BE) ‖
//!   `n` × (length (u32 BE) ‖ leaf bytes), nothing after.
//!
//! Batches whose group commit is shared are stored as one run ([`Joiner`], a [`sammen_store::Coalesce`]
//! registered by [`crate::AuditLog::open`]): the accepts of one group write one key, not one each. The
//! group is one atomic write, so a joined run lands or fails exactly as its parts would have.
//!
//! Keying a run by its **last** index means the first key `≥ i` is the entry holding leaf `i`, so a
//! lookup is one forward seek, and `last(audit_leaves)` still names the log's last leaf. Invariant: the
//! entries' index ranges are disjoint and, in an intact log, tile `0..size` in key order; anything else
//! (a malformed run, a count that disagrees with its key, a gap, an overlap) is reported by index.

use sammen_store::{Batch, Coalesce, KeyValue, Store};

use crate::error::{AuditError, Finding};
use crate::store::{decode_u64, trees, u64_key};

/// First byte of a run's value (neither a binary leaf's version byte nor JSON's `{`).
pub const RUN: u8 = 0x80;

/// Why a stored entry does not hold the leaves its key says.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntryError {
    /// The key is not a u64.
    Key,
    /// A run's value is cut short or has bytes left over, or its first index is not before its key.
    Malformed,
}

impl EntryError {
    /// What is wrong, for reports.
    pub fn reason(&self) -> &'static str {
        match self {
            EntryError::Key => "malformed leaf key",
            EntryError::Malformed => "malformed leaf run",
        }
    }
}

/// Put `leaves` (indices `first..first + n`) into `batch`: one key for one leaf, one run for more.
pub(crate) fn put(batch: &mut Batch, first: u64, leaves: Vec<Vec<u8>>) {
    if let Some((key, value)) = encode(first, leaves) {
        batch.put(trees::LEAVES, key, value);
    }
}

/// The key and value storing `leaves` (indices `first..first + n`); `None` for no leaves.
pub fn encode(first: u64, leaves: Vec<Vec<u8>>) -> Option<(Vec<u8>, Vec<u8>)> {
    let n = leaves.len() as u64;
    let last = first.checked_add(n.checked_sub(1)?)?;
    let key = u64_key(last).to_vec();
    if n == 1 {
        return leaves.into_iter().next().map(|one| (key, one));
    }
    let size = 9 + leaves.iter().map(|l| 4 + l.len()).sum::<usize>();
    let mut v = Vec::with_capacity(size);
    v.push(RUN);
    v.extend_from_slice(&first.to_be_bytes());
    for l in &leaves {
        // A leaf is a few hundred bytes (ids are bounded at accept); u32 cannot overflow.
        v.extend_from_slice(&u32::try_from(l.len()).unwrap_or(u32::MAX).to_be_bytes());
        v.extend_from_slice(l);
    }
    Some((key, v))
}

/// The leaves a stored entry holds, as (index, bytes), in index order.
pub fn entries<'a>(key: &[u8], value: &'a [u8]) -> Result<Vec<(u64, &'a [u8])>, EntryError> {
    let mut out = Vec::new();
    walk(key, value, |i, leaf| out.push((i, leaf)))?;
    Ok(out)
}

/// Checks a stored entry and hands `f` each (index, leaf bytes) in order; the indices `(first, last)`
/// it holds. The one reader of the layout: [`entries`] collects, [`Joiner`] only checks.
fn walk<'a>(
    key: &[u8],
    value: &'a [u8],
    mut f: impl FnMut(u64, &'a [u8]),
) -> Result<(u64, u64), EntryError> {
    let last = decode_u64(key).ok_or(EntryError::Key)?;
    if value.first() != Some(&RUN) {
        f(last, value);
        return Ok((last, last));
    }
    let first = value
        .get(1..9)
        .and_then(decode_u64)
        .ok_or(EntryError::Malformed)?;
    if first >= last {
        return Err(EntryError::Malformed);
    }
    let mut rest = &value[9..];
    let mut i = first;
    loop {
        let len = rest
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .ok_or(EntryError::Malformed)? as usize;
        let leaf = rest.get(4..4 + len).ok_or(EntryError::Malformed)?;
        f(i, leaf);
        rest = &rest[4 + len..];
        if i == last {
            break;
        }
        // i < last: no overflow, even for a key of u64::MAX.
        i += 1;
    }
    if !rest.is_empty() {
        return Err(EntryError::Malformed);
    }
    Ok((first, last))
}

/// Joins the entries of batches that share a group commit into one run ([`Coalesce`] for
/// `audit_leaves`): an entry continues the one before when its first index follows that one's key.
#[derive(Debug, Clone, Copy, Default)]
pub struct Joiner;

/// First index of a stored entry, without reading its leaves.
fn first_index(key: &[u8], value: &[u8]) -> Option<u64> {
    if value.first() == Some(&RUN) {
        value.get(1..9).and_then(decode_u64)
    } else {
        decode_u64(key)
    }
}

impl Coalesce for Joiner {
    fn continues(&self, prev: (&[u8], &[u8]), next: (&[u8], &[u8])) -> bool {
        let last = decode_u64(prev.0).and_then(|l| l.checked_add(1));
        last.is_some() && last == first_index(next.0, next.1)
    }

    /// Every part's framing is checked first: an entry that does not parse is written as it was given,
    /// never hidden inside a run. Runs are concatenated as they are (no leaf is decoded or copied twice):
    /// this runs on the committer thread, which every writer waits for.
    fn join(&self, parts: &[(&[u8], &[u8])]) -> Option<KeyValue> {
        if parts.len() < 2 {
            return None;
        }
        let (mut start, mut prev_last): (Option<u64>, Option<u64>) = (None, None);
        let mut size = 9;
        for (k, v) in parts {
            let (first, last) = walk(k, v, |_, _| {}).ok()?;
            if prev_last.is_some_and(|l| l.checked_add(1) != Some(first)) {
                return None;
            }
            start.get_or_insert(first);
            prev_last = Some(last);
            size += if v.first() == Some(&RUN) {
                v.len() - 9
            } else {
                4 + v.len()
            };
        }
        let ((last_key, _), first) = (parts.last()?, start?);
        let mut out = Vec::with_capacity(size);
        out.push(RUN);
        out.extend_from_slice(&first.to_be_bytes());
        for (_, v) in parts {
            if v.first() == Some(&RUN) {
                out.extend_from_slice(&v[9..]);
            } else {
                // A leaf is a few hundred bytes (ids are bounded at accept); u32 cannot overflow.
                out.extend_from_slice(&u32::try_from(v.len()).unwrap_or(u32::MAX).to_be_bytes());
                out.extend_from_slice(v);
            }
        }
        Some((last_key.to_vec(), out))
    }
}

/// The error for an entry that cannot be read where leaf `index` should be.
pub(crate) fn damaged(index: u64, e: EntryError) -> AuditError {
    AuditError::Tampered(Finding::BadLeaf {
        index,
        problem: e.reason().into(),
    })
}

/// Leaf `i`'s bytes, if stored. A malformed entry where `i` should be is [`damaged`].
pub(crate) fn get<S: Store + ?Sized>(store: &S, i: u64) -> Result<Option<Vec<u8>>, AuditError> {
    let rows = store.range(trees::LEAVES, &u64_key(i), None, 1)?;
    let Some((k, v)) = rows.first() else {
        return Ok(None);
    };
    let found = entries(k, v).map_err(|e| damaged(i, e))?;
    Ok(found
        .into_iter()
        .find(|(j, _)| *j == i)
        .map(|(_, b)| b.to_vec()))
}

/// Every stored leaf from index `from` on, in key order, a page of entries at a time: `f(index, bytes)`
/// for each, or `f`'s or the entry's error. Indices come as stored; callers check contiguity.
pub(crate) fn for_each<S: Store + ?Sized>(
    store: &S,
    from: u64,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), AuditError>,
    mut bad: impl FnMut(u64, EntryError) -> AuditError,
) -> Result<(), AuditError> {
    let mut next_key = u64_key(from).to_vec();
    // The index to name when an entry cannot be read: the one after the last leaf seen.
    let mut expect = from;
    loop {
        let rows = store.range(trees::LEAVES, &next_key, None, 1024)?;
        let Some((last, _)) = rows.last() else {
            return Ok(());
        };
        next_key = last.clone();
        next_key.push(0);
        for (k, v) in &rows {
            for (i, leaf) in entries(k, v).map_err(|e| bad(expect, e))? {
                if i < from {
                    continue;
                }
                f(i, leaf)?;
                expect = i.saturating_add(1);
            }
        }
    }
}

/// Every stored leaf as (index, bytes), in index order: for tests and tools that read the raw log.
pub fn stored_leaves<S: Store + ?Sized>(store: &S) -> Result<Vec<(u64, Vec<u8>)>, AuditError> {
    let mut out = Vec::new();
    for_each(
        store,
        0,
        |i, b| {
            out.push((i, b.to_vec()));
            Ok(())
        },
        damaged,
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn stored(first: u64, leaves: &[&[u8]]) -> (Vec<u8>, Vec<u8>) {
        let mut b = Batch::new();
        put(&mut b, first, leaves.iter().map(|l| l.to_vec()).collect());
        assert_eq!(b.len(), 1);
        match &b.ops()[0] {
            sammen_store::Op::Put { key, value, .. } => (key.clone(), value.clone()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_leaf_is_stored_as_it_is() {
        let (k, v) = stored(7, &[b"\x02abc"]);
        assert_eq!(k, 7u64.to_be_bytes());
        assert_eq!(v, b"\x02abc");
        assert_eq!(entries(&k, &v).unwrap(), vec![(7, &b"\x02abc"[..])]);
    }

    #[test]
    fn a_run_is_keyed_by_its_last_index_and_reads_back() {
        let (k, v) = stored(5, &[b"\x02a", b"{\"v\":1}", b""]);
        assert_eq!(k, 7u64.to_be_bytes());
        assert_eq!(v[0], RUN);
        let got = entries(&k, &v).unwrap();
        assert_eq!(
            got,
            vec![(5, &b"\x02a"[..]), (6, &b"{\"v\":1}"[..]), (7, &b""[..])]
        );
    }

    #[test]
    fn joined_entries_are_one_run_of_the_same_leaves() {
        let a = stored(3, &[b"\x02a"]);
        let b = stored(4, &[b"\x02b", b"\x02c"]);
        let c = stored(6, &[b"\x02d"]);
        let parts = [
            (&a.0[..], &a.1[..]),
            (&b.0[..], &b.1[..]),
            (&c.0[..], &c.1[..]),
        ];
        assert!(Joiner.continues(parts[0], parts[1]));
        assert!(Joiner.continues(parts[1], parts[2]));
        assert!(!Joiner.continues(parts[0], parts[2]));
        assert!(!Joiner.continues(parts[2], parts[0]));
        let (k, v) = Joiner.join(&parts).unwrap();
        assert_eq!(
            (k.clone(), v.clone()),
            stored(3, &[b"\x02a", b"\x02b", b"\x02c", b"\x02d"])
        );
        assert_eq!(entries(&k, &v).unwrap().len(), 4);
        // Runs and single leaves in any order join to the run of all their leaves.
        let (k2, v2) = Joiner.join(&[parts[1], parts[2]]).unwrap();
        assert_eq!((k2, v2), stored(4, &[b"\x02b", b"\x02c", b"\x02d"]));
        // One part is not a join (a run holds two leaves or more).
        assert_eq!(Joiner.join(&parts[..1]), None);
        // A damaged part or a gap is not joined: cut short, a byte too many, a count off by one.
        let bad = (&b.0[..], &b.1[..b.1.len() - 1]);
        assert_eq!(Joiner.join(&[parts[0], bad]), None);
        let long = [&b.1[..], b"x"].concat();
        assert_eq!(Joiner.join(&[parts[0], (&b.0[..], &long[..])]), None);
        let short_key = 4u64.to_be_bytes();
        assert_eq!(Joiner.join(&[parts[0], (&short_key[..], &b.1[..])]), None);
        assert_eq!(Joiner.join(&[parts[0], parts[2]]), None);
        // The greatest index has no successor.
        let top = stored(u64::MAX, &[b"\x02z"]);
        assert!(!Joiner.continues((&top.0, &top.1), parts[0]));
    }

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        /// The joiner's framing check agrees with `entries` on any bytes: an entry joins with the leaf
        /// after it exactly when it reads, into a run of its leaves and that one (fuzz target
        /// `audit_leaf` does the same unboundedly).
        #[test]
        fn joining_agrees_with_reading(
            last in proptest::prop_oneof![0u64..8, proptest::num::u64::ANY],
            value in proptest::prop_oneof![
                proptest::collection::vec(proptest::num::u8::ANY, 0..40),
                (0u64..8, proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..5), 1..4))
                    .prop_map(|(first, ls)| encode(first, ls).map(|kv| kv.1).unwrap_or_default()),
            ],
        ) {
            let key = last.to_be_bytes();
            let read = entries(&key, &value);
            if let Some(next) = last.checked_add(1) {
                let nk = next.to_be_bytes();
                let joined = Joiner.join(&[(&key[..], &value[..]), (&nk[..], &b"\x02z"[..])]);
                match (&read, &joined) {
                    (Ok(found), Some((k, v))) => {
                        let got = entries(k, v).unwrap();
                        proptest::prop_assert_eq!(&got[..found.len()], &found[..]);
                        proptest::prop_assert_eq!(got[found.len()], (next, &b"\x02z"[..]));
                    }
                    (Err(_), None) => {}
                    (r, j) => proptest::prop_assert!(false, "entries {:?} but join {:?}", r, j),
                }
            }
        }
    }

    #[test]
    fn damaged_runs_are_refused() {
        let (k, v) = stored(5, &[b"\x02a", b"\x02bc"]);
        // Cut short, one byte too many, a length pointing past the end.
        for bad in [&v[..v.len() - 1], &[&v[..], b"x"].concat(), &v[..10]] {
            assert_eq!(entries(&k, bad), Err(EntryError::Malformed), "{bad:?}");
        }
        // A count that disagrees with the key, either way.
        assert_eq!(entries(&7u64.to_be_bytes(), &v), Err(EntryError::Malformed));
        assert_eq!(entries(&5u64.to_be_bytes(), &v), Err(EntryError::Malformed));
        assert_eq!(entries(b"short", &v), Err(EntryError::Key));
        // A run ending at the greatest index reads without overflowing.
        let (k, v) = stored(u64::MAX - 1, &[b"\x02a", b"\x02b"]);
        assert_eq!(k, u64::MAX.to_be_bytes());
        assert_eq!(entries(&k, &v).unwrap().len(), 2);
        let (k, v) = stored(5, &[b"\x02a", b"\x02bc"]);
        let mut lied = v.clone();
        lied[9..13].copy_from_slice(&100u32.to_be_bytes());
        assert_eq!(entries(&k, &lied), Err(EntryError::Malformed));
    }
}
