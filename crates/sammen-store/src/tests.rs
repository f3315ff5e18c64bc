use super::*;
use std::sync::Arc;

const TREES: &[&str] = &["a", "b"];

fn roundtrip<S: Store>(open: impl Fn(&std::path::Path) -> S) {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        let mut b = Batch::new();
        b.put("a", b"k1".to_vec(), b"v1".to_vec());
        b.put("a", b"k2".to_vec(), b"v2".to_vec());
        b.put("b", b"x".to_vec(), b"y".to_vec());
        s.commit(b).unwrap();
        let mut b = Batch::new();
        b.delete("a", b"k1".to_vec());
        b.put("a", b"k3".to_vec(), b"v3".to_vec());
        s.commit(b).unwrap();
        assert_eq!(s.get("a", b"k2").unwrap(), Some(b"v2".to_vec()));
        assert_eq!(s.get("a", b"k1").unwrap(), None);
        assert!(matches!(
            s.get("nope", b"k"),
            Err(StoreError::UnknownTree(_))
        ));
        let mut bad = Batch::new();
        bad.put("nope", b"k".to_vec(), b"v".to_vec());
        assert!(matches!(s.submit(bad), Err(StoreError::UnknownTree(_))));
    }
    let s = open(dir.path());
    let all = s.scan_prefix("a", b"k", 10).unwrap();
    assert_eq!(
        all,
        vec![
            (b"k2".to_vec(), b"v2".to_vec()),
            (b"k3".to_vec(), b"v3".to_vec())
        ]
    );
    assert_eq!(s.range("a", b"k2", Some(b"k3"), 10).unwrap().len(), 1);
    assert_eq!(s.last("a").unwrap().unwrap().0, b"k3".to_vec());
    assert_eq!(s.get("b", b"x").unwrap(), Some(b"y".to_vec()));
    assert_eq!(s.last("b").unwrap().unwrap().1, b"y".to_vec());
}

fn group_commit<S: Store>(s: S) {
    let s = Arc::new(s);
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for i in 0..50u32 {
                    let mut b = Batch::new();
                    b.put("a", format!("{t:02}/{i:04}").into_bytes(), vec![7u8; 4096]);
                    s.commit(b).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(s.scan_prefix("a", b"", 10_000).unwrap().len(), 800);
}

#[test]
fn sled_roundtrip_and_reopen() {
    roundtrip(|p| SledStore::open(p, TREES).unwrap());
}

#[test]
fn fjall_roundtrip_and_reopen() {
    roundtrip(|p| FjallStore::open(p, TREES).unwrap());
}

#[test]
fn sled_group_commit_serves_many_writers_per_sync() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(dir.path(), TREES).unwrap();
    group_commit(s);
}

#[test]
fn fjall_group_commit_serves_many_writers_per_sync() {
    let dir = tempfile::tempdir().unwrap();
    let s = FjallStore::open(dir.path(), TREES).unwrap();
    group_commit(s);
}

#[test]
fn large_values_are_durable_blobs_in_sled() {
    // > 128 KiB goes to a sled blob file, which our sync must fdatasync too.
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path(), TREES).unwrap();
        let mut b = Batch::new();
        b.put("a", b"big".to_vec(), vec![3u8; 600 << 10]);
        s.commit(b).unwrap();
    }
    let s = SledStore::open(dir.path(), TREES).unwrap();
    assert_eq!(s.get("a", b"big").unwrap().unwrap().len(), 600 << 10);
}

#[test]
fn prefix_end_handles_ff() {
    assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
    assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
    assert_eq!(prefix_end(&[0xff, 0xff]), None);
}

#[test]
fn disk_full_classified() {
    let e = std::io::Error::from_raw_os_error(28);
    assert!(StoreError::from_io(&e).is_disk_full());
    let e = std::io::Error::from_raw_os_error(5);
    assert!(matches!(StoreError::from_io(&e), StoreError::Io(_)));
}

/// Closing and at once reopening the same store must work: the outbox does it after a failed commit and
/// tests do it all the time. sled releases its file lock from a background thread shortly after the last
/// handle is dropped, so an immediate reopen could see `WouldBlock`.
fn reopen_at_once<S: Store>(open: impl Fn(&std::path::Path) -> Result<S, StoreError>) {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..200u32 {
        let s = open(dir.path()).unwrap_or_else(|e| panic!("reopen {i}: {e}"));
        let mut b = Batch::new();
        b.put("a", i.to_be_bytes().to_vec(), vec![1; 64]);
        s.commit(b).unwrap();
        drop(s);
    }
}

#[test]
fn sled_reopens_at_once_after_close() {
    reopen_at_once(|p| SledStore::open(p, TREES));
}

#[test]
fn fjall_reopens_at_once_after_close() {
    reopen_at_once(|p| FjallStore::open(p, TREES));
}

/// A reader racing the committer sees a group entirely or not at all, across trees: the relay reads a
/// queue key in one tree and the message's state in another, and skipped the row for good when it saw the
/// key without the state (a message accepted, then never published until a restart).
fn readers_never_see_half_a_group<S: Store>(s: S) {
    let s = Arc::new(s);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (s, stop) = (Arc::clone(&s), Arc::clone(&stop));
        std::thread::spawn(move || {
            let (mut seen, mut torn) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (k, _) in s.range("a", b"m", None, 1_000).unwrap() {
                    seen += 1;
                    // Written in the same batch as `k` in "a", after 2,000 other keys of "b".
                    if s.get("b", &k).unwrap().is_none() {
                        torn += 1;
                    }
                }
            }
            (seen, torn)
        })
    };
    for i in 0..80u32 {
        let mark = format!("m{i:05}").into_bytes();
        let mut b = Batch::new();
        b.put("a", mark.clone(), vec![1]);
        for j in 0..2_000u32 {
            b.put("b", format!("f{i:05}/{j:05}").into_bytes(), vec![0; 16]);
        }
        b.put("b", mark, vec![1]);
        s.commit(b).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (seen, torn) = reader.join().unwrap();
    assert!(seen > 0, "the reader never ran");
    assert_eq!(torn, 0, "{torn} of {seen} reads saw half a group");
}

#[test]
fn sled_readers_never_see_half_a_group() {
    let dir = tempfile::tempdir().unwrap();
    readers_never_see_half_a_group(SledStore::open(dir.path(), TREES).unwrap());
}

#[test]
fn fjall_readers_never_see_half_a_group() {
    let dir = tempfile::tempdir().unwrap();
    readers_never_see_half_a_group(FjallStore::open(dir.path(), TREES).unwrap());
}

#[test]
fn an_appended_batch_keeps_both_batches_writes_in_order() {
    let mut a = Batch::new();
    a.put("a", b"k".to_vec(), b"1".to_vec());
    let mut b = Batch::new();
    b.delete("b", b"x".to_vec());
    b.put("a", b"k".to_vec(), b"2".to_vec());
    let (na, nb) = (a.size_bytes(), b.size_bytes());
    a.append(b);
    assert_eq!(a.len(), 3);
    assert_eq!(a.size_bytes(), na + nb);
    assert!(matches!(&a.ops()[1], Op::Delete { tree: "b", .. }));
    assert!(matches!(&a.ops()[2], Op::Put { value, .. } if value == b"2"));
}
