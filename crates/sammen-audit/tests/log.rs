//! The durable log on real stores: staging with a state change, checkpoints, proofs, search, rotation,
//! rollback detection, tamper detection by `verify`, and no personal data anywhere.
#![allow(clippy::unwrap_used)]

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use std::path::{Path, PathBuf};

use sammen_audit::ops::{
    check_consistency, check_proof, consistency_store, prove_store, search_store, verify_store,
};
use sammen_audit::store::trees;
use sammen_audit::tree::node_hash;
use sammen_audit::{
    stored_leaves, AuditConfig, AuditError, AuditLog, Event, Finding, Hash, Leaf, LeafEvent,
    Outcome, PatientKey, Search, SignedCheckpoint, SigningKey,
};
use sammen_model::{AckCode, Family, Party, PatientId};
use sammen_store::{Batch, FjallStore, SledStore, Store};

const CPR: &str = "2512489996";
const NAME: &str = "Bent Testpatient";
const ORIGIN: &str = "sammen.test/audit";
const SENDER: &str = "5790001348120";
const RECEIVER: &str = "5790000209354";

fn config(export: &Path) -> AuditConfig {
    AuditConfig {
        origin: ORIGIN.into(),
        checkpoint_every: 8,
        checkpoint_interval_ms: 60_000,
        export_dir: Some(export.to_path_buf()),
        patient_key: PatientKey::new(b"0123456789abcdef0123456789abcdef").unwrap(),
    }
}

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn msg_id(i: u64) -> String {
    format!("a5e5b880-c087-4055-b9ec-{i:012}")
}

fn event(i: u64, ev: Event) -> LeafEvent<'static> {
    let mut e = LeafEvent::new(1_700_000_000_000 + i * 1000, ev, Outcome::Success);
    e.message_id = Some(msg_id(i).into());
    e.bundle_id = Some(format!("b-{i}").into());
    e.family = Some(Family::HospitalNotification);
    e.event_code = Some("admit-inpatient".into());
    e.sender = Some(std::borrow::Cow::Owned(Party {
        gln: Some(SENDER.into()),
        sor: Some("265161000016000".into()),
    }));
    e.receiver = Some(std::borrow::Cow::Owned(Party {
        gln: Some(RECEIVER.into()),
        sor: None,
    }));
    e.payload_sha256 = Some([i as u8; 32]);
    e.patient = Some(PatientId::new("urn:oid:1.2.208.176.1.2", CPR));
    e
}

struct Dirs {
    _tmp: tempfile::TempDir,
    store: PathBuf,
    export: PathBuf,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("data");
    let export = sammen_audit::export::default_export_dir(&store);
    Dirs {
        _tmp: tmp,
        store,
        export,
    }
}

/// Write `messages` messages, each: accepted (with its payload, same batch), published, acknowledged,
/// then an explicit checkpoint.
fn write_log<S: Store>(log: &AuditLog<S>, messages: u64) {
    write_messages(log, 0..messages);
    log.checkpoint_at(1_800_000_000_000).unwrap();
}

/// [`write_log`] without the closing explicit checkpoint: only the periodic ones.
fn write_messages<S: Store>(log: &AuditLog<S>, messages: std::ops::Range<u64>) {
    for i in messages {
        let mut batch = Batch::new();
        batch.put(
            trees::META,
            format!("payload-{i}").into_bytes(),
            vec![0u8; 16],
        );
        log.submit(batch, vec![event(i, Event::Accepted)])
            .unwrap()
            .wait()
            .unwrap();
        let mut batch = Batch::new();
        let staged = log.stage(&mut batch, event(i, Event::Published)).unwrap();
        log.store().commit(batch).unwrap();
        log.committed(staged).unwrap();
        log.submit(
            Batch::new(),
            vec![event(i, Event::Acknowledged { code: AckCode::Ok })],
        )
        .unwrap()
        .wait()
        .unwrap();
        log.maybe_checkpoint(1_700_000_000_000 + i * 1000).unwrap();
    }
}

fn fresh_fjall(d: &Dirs, messages: u64) {
    let store = FjallStore::open(&d.store, &trees::ALL).unwrap();
    let log = AuditLog::open(store, config(&d.export), key(1)).unwrap();
    write_log(&log, messages);
}

fn reopen(d: &Dirs) -> FjallStore {
    FjallStore::open(&d.store, &trees::ALL).unwrap()
}

fn exported(d: &Dirs) -> Option<SignedCheckpoint> {
    sammen_audit::export::read_exported(&d.export).unwrap()
}

#[test]
fn end_to_end_on_fjall_proofs_search_and_no_personal_data() {
    let d = dirs();
    fresh_fjall(&d, 10);
    let store = reopen(&d);
    let report = verify_store(&store, &key(1).verifying_key(), exported(&d).as_ref()).unwrap();
    assert_eq!(report.leaves, 31);
    assert!(report.checkpoints >= 4, "{report:?}");

    let doc = prove_store(&store, &msg_id(3)).unwrap();
    assert_eq!(doc.entries.len(), 3);
    let json = serde_json::to_string_pretty(&doc).unwrap();
    let back: sammen_audit::ProofDocument = serde_json::from_str(&json).unwrap();
    let leaves = check_proof(&back, &key(1).verifying_key()).unwrap();
    assert_eq!(leaves[2].1.event, Event::Acknowledged { code: AckCode::Ok });
    assert!(check_proof(&back, &key(2).verifying_key()).is_err());
    // The readable part says another event than the bytes: refused.
    let mut forged = back.clone();
    let decoded = forged.entries[0].decoded.as_mut().unwrap();
    assert_eq!(decoded.event, Event::Accepted);
    decoded.event = Event::Rejected { code: "x".into() };
    assert!(check_proof(&forged, &key(1).verifying_key()).is_err());
    // Other bytes (the outcome byte of the binary leaf), decoded part to match: the proof fails.
    let mut forged = back.clone();
    let mut bytes = B64.decode(&forged.entries[0].leaf).unwrap();
    bytes[9] = 8;
    forged.entries[0].leaf = B64.encode(&bytes);
    let mut leaf = Leaf::decode(&bytes).unwrap();
    assert_eq!(leaf.outcome, Outcome::SeriousFailure);
    forged.entries[0].decoded = Some(leaf.clone());
    assert!(check_proof(&forged, &key(1).verifying_key()).is_err());
    // Format 1 (leaf bytes as text) is still read; a binary leaf cannot be written that way.
    let mut v1 = back.clone();
    v1.format = "sammen-audit-proof/1".into();
    assert!(check_proof(&v1, &key(1).verifying_key()).is_err());
    leaf.v = 1;
    v1.entries[0].leaf = String::from_utf8(leaf.encode()).unwrap();
    assert!(check_proof(&v1, &key(1).verifying_key()).is_err());
    let mut moved = back.clone();
    moved.entries[0].index += 1;
    assert!(check_proof(&moved, &key(1).verifying_key()).is_err());

    let first = SignedCheckpoint::parse(
        &String::from_utf8(
            store
                .get(trees::CHECKPOINTS, &0u64.to_be_bytes())
                .unwrap()
                .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let c = consistency_store(&store, &first).unwrap();
    check_consistency(&c, &[key(1).verifying_key()]).unwrap();

    let by_gln = search_store(&store, &Search::Gln(RECEIVER.into())).unwrap();
    assert_eq!(by_gln.len(), 30);
    let by_cpr = search_store(
        &store,
        &Search::Cpr {
            cpr: CPR.into(),
            key: config(&d.export).patient_key,
        },
    )
    .unwrap();
    assert_eq!(by_cpr.len(), 30);
    let wrong_key = search_store(
        &store,
        &Search::Cpr {
            cpr: CPR.into(),
            key: PatientKey::new(b"another key of 16+ bytes").unwrap(),
        },
    )
    .unwrap();
    assert!(wrong_key.is_empty());
    let by_time = search_store(
        &store,
        &Search::TimeRange {
            from_ms: 1_700_000_002_000,
            to_ms: 1_700_000_004_000,
        },
    )
    .unwrap();
    assert_eq!(by_time.len(), 6);
    assert_eq!(
        search_store(&store, &Search::MessageId(msg_id(9)))
            .unwrap()
            .len(),
        3
    );

    // No personal data: neither through the store API nor in any file byte.
    for tree in trees::ALL {
        for (k, v) in store.range(tree, &[], None, usize::MAX).unwrap() {
            for bytes in [&k, &v] {
                let text = String::from_utf8_lossy(bytes);
                assert!(
                    !text.contains(CPR) && !text.contains("251248-9996") && !text.contains(NAME),
                    "{tree}"
                );
            }
        }
    }
    drop(store);
    assert_no_personal_data_in_files(d._tmp.path());
    assert!(!json.contains(CPR));
}

/// Replace the posting lists by the one-key-per-leaf index that logs written before them carry.
fn to_per_leaf_index(store: &FjallStore) {
    let mut b = Batch::new();
    for (k, _) in store.range(trees::INDEX, &[], None, usize::MAX).unwrap() {
        b.delete(trees::INDEX, k);
    }
    for (k, v) in store.range(trees::LEAVES, &[], None, usize::MAX).unwrap() {
        let leaf = Leaf::decode(&v).unwrap();
        let mut put = |tag: u8, val: &[u8]| {
            let len = (val.len() as u16).to_be_bytes();
            b.put(
                trees::INDEX,
                [&[tag][..], &len, val, &k].concat(),
                Vec::new(),
            );
        };
        if let Some(m) = &leaf.message_id {
            put(b'm', m.as_bytes());
        }
        for p in [&leaf.sender, &leaf.receiver].into_iter().flatten() {
            if let Some(g) = &p.gln {
                put(b'g', g.as_bytes());
            }
        }
        if let Some(p) = &leaf.patient {
            put(b'p', p.as_bytes());
        }
        b.put(
            trees::INDEX,
            [&b"t"[..], &leaf.time_ms.to_be_bytes(), &k].concat(),
            Vec::new(),
        );
    }
    store.commit(b).unwrap();
}

fn hits<S: Store>(store: &S, q: &Search) -> usize {
    search_store(store, q).unwrap().len()
}

#[test]
fn json_leaves_of_older_logs_keep_verifying_and_proving_beside_binary_ones() {
    let d = dirs();
    let store = FjallStore::open(&d.store, &trees::ALL).unwrap();
    let log = AuditLog::open(store, config(&d.export), key(1)).unwrap();
    let pk = config(&d.export).patient_key;
    // As version 1 wrote them: JSON.
    let old: Vec<Leaf> = [Event::Accepted, Event::Published]
        .into_iter()
        .map(|ev| Leaf {
            v: 1,
            ..event(1, ev).into_leaf(&pk)
        })
        .collect();
    // One key per leaf, as that version stored them.
    for l in &old {
        log.submit_leaves(Batch::new(), std::slice::from_ref(l))
            .unwrap()
            .wait()
            .unwrap();
    }
    log.checkpoint_at(1_800_000_000_000).unwrap();
    // Binary version 2 (ids as strings), a batch's leaves as one run.
    let v2: Vec<Leaf> = [Event::Delivered, Event::Overdue]
        .into_iter()
        .map(|ev| Leaf {
            v: 2,
            ..event(1, ev).into_leaf(&pk)
        })
        .collect();
    log.submit_leaves(Batch::new(), &v2)
        .unwrap()
        .wait()
        .unwrap();
    log.checkpoint_at(1_800_000_000_001).unwrap();
    // After the upgrade: version 3 (UUID ids in 16 bytes).
    let newer = vec![event(1, Event::Resend), event(1, Event::Dead)];
    log.submit(Batch::new(), newer).unwrap().wait().unwrap();
    log.checkpoint_at(1_800_000_000_001).unwrap();
    drop(log);
    let s = reopen(&d);
    assert!(s.get(trees::LEAVES, &1u64.to_be_bytes()).unwrap().is_some());
    assert!(s.get(trees::LEAVES, &3u64.to_be_bytes()).unwrap().is_none());
    let raw = stored_leaves(&s).unwrap();
    assert_eq!(
        raw.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4, 5, 6]
    );
    assert!(raw[1].1.starts_with(b"{\"v\":1,"));
    assert_eq!(raw[3].1[0], 2);
    assert_eq!(raw[5].1[0], 3);
    // The message id (a UUID) in 16 bytes instead of 36 and a length; the Bundle id (`b-1`, no UUID)
    // one byte longer for its form.
    assert_eq!(raw[5].1.len() + 20 - 1, raw[3].1.len());
    verify_store(&s, &key(1).verifying_key(), exported(&d).as_ref()).unwrap();
    assert_eq!(hits(&s, &Search::MessageId(msg_id(1))), 6);
    let doc = prove_store(&s, &msg_id(1)).unwrap();
    let leaves = check_proof(&doc, &key(1).verifying_key()).unwrap();
    let versions: Vec<u8> = leaves.iter().map(|(_, l)| l.v).collect();
    assert_eq!(versions, [1, 1, 2, 2, 3, 3]);
    assert!(leaves.iter().all(|(_, l)| l.message_id == Some(msg_id(1))));
    // A proof document of format 1 (leaves as JSON text), as the older version printed it, still checks.
    let mut v1 = doc.clone();
    v1.format = "sammen-audit-proof/1".into();
    v1.entries.truncate(2);
    for e in &mut v1.entries {
        e.leaf = String::from_utf8(B64.decode(&e.leaf).unwrap()).unwrap();
        e.decoded = None;
    }
    assert_eq!(check_proof(&v1, &key(1).verifying_key()).unwrap().len(), 2);
    // Reopened by the broker: the log takes both and grows.
    drop(s);
    let log = AuditLog::open(reopen(&d), config(&d.export), key(1)).unwrap();
    log.submit(
        Batch::new(),
        vec![event(1, Event::Acknowledged { code: AckCode::Ok })],
    )
    .unwrap()
    .wait()
    .unwrap();
    log.checkpoint_at(1_800_000_000_002).unwrap();
    verify_store(log.store(), &key(1).verifying_key(), exported(&d).as_ref()).unwrap();
}

#[test]
fn search_reads_posting_lists_per_leaf_keys_of_older_logs_and_the_unindexed_tail() {
    let d = dirs();
    fresh_fjall(&d, 4);
    to_per_leaf_index(&reopen(&d));
    let cpr = || Search::Cpr {
        cpr: CPR.into(),
        key: config(&d.export).patient_key,
    };
    let range = |from: u64| Search::TimeRange {
        from_ms: 1_700_000_000_000 + from * 1000,
        to_ms: 1_700_000_000_000 + (from + 1) * 1000,
    };
    let log = AuditLog::open(reopen(&d), config(&d.export), key(1)).unwrap();
    // A message after the last checkpoint: in no index yet.
    log.submit(Batch::new(), vec![event(7, Event::Accepted)])
        .unwrap()
        .wait()
        .unwrap();
    for indexed in [false, true] {
        let s = log.store();
        let lists = s.scan_prefix(trees::INDEX, b"}", usize::MAX).unwrap();
        assert_eq!(!lists.is_empty(), indexed);
        assert_eq!(hits(s, &Search::MessageId(msg_id(2))), 3);
        assert_eq!(hits(s, &Search::MessageId(msg_id(7))), 1);
        assert_eq!(hits(s, &Search::MessageId(msg_id(8))), 0);
        assert_eq!(hits(s, &Search::Gln(RECEIVER.into())), 13);
        assert_eq!(hits(s, &Search::Gln("5790000000000".into())), 0);
        assert_eq!(hits(s, &cpr()), 13);
        assert_eq!(hits(s, &range(2)), 3);
        assert_eq!(hits(s, &range(7)), 1);
        assert_eq!(hits(s, &range(5)), 0);
        let proof = prove_store(s, &msg_id(7)).unwrap();
        assert_eq!(proof.entries.len(), usize::from(indexed));
        // The checkpoint writes the tail's posting lists.
        log.checkpoint_at(1_800_000_000_001).unwrap();
    }
    verify_store(log.store(), &key(1).verifying_key(), exported(&d).as_ref()).unwrap();
    drop(log);
    // Reopened: the same answers.
    let s = reopen(&d);
    assert_eq!(hits(&s, &Search::MessageId(msg_id(7))), 1);
    assert_eq!(hits(&s, &Search::Gln(RECEIVER.into())), 13);
}

#[test]
fn periodic_checkpoints_leave_the_index_to_its_window_and_search_still_finds_every_leaf() {
    let d = dirs();
    let log = AuditLog::open(reopen(&d), config(&d.export), key(1)).unwrap();
    // 10 messages, 31 leaves: periodic checkpoints every 8 leaves, far below the index's window.
    write_messages(&log, 0..10);
    let index_size = |s: &FjallStore| {
        let v = s.get(trees::META, b"index_size").unwrap().unwrap();
        u64::from_be_bytes(v.try_into().unwrap())
    };
    let lists = |s: &FjallStore| s.scan_prefix(trees::INDEX, b"}", usize::MAX).unwrap();
    let answers = |s: &FjallStore| {
        [
            hits(s, &Search::MessageId(msg_id(2))),
            hits(s, &Search::MessageId(msg_id(9))),
            hits(s, &Search::Gln(RECEIVER.into())),
            hits(
                s,
                &Search::TimeRange {
                    from_ms: 1_700_000_002_000,
                    to_ms: 1_700_000_003_000,
                },
            ),
        ]
    };
    {
        let s = log.store();
        let signed = exported(&d).unwrap().checkpoint.size;
        assert!(signed >= 24, "periodic checkpoints were taken ({signed})");
        assert!(lists(s).is_empty(), "no posting lists yet");
        assert_eq!(index_size(s), 0);
        // Every message's three leaves, each receiver leaf, found from the leaves themselves.
        assert_eq!(answers(s), [3, 3, 30, 3]);
        assert_eq!(prove_store(s, &msg_id(2)).unwrap().entries.len(), 3);
    }
    drop(log);
    // Reopened, the signed but unindexed leaves wait again; an explicit checkpoint indexes them all.
    let log = AuditLog::open(reopen(&d), config(&d.export), key(1)).unwrap();
    assert_eq!(answers(log.store()), [3, 3, 30, 3]);
    // Every leaf is signed already: this checkpoint signs nothing new and still writes the lists.
    assert!(log.checkpoint_now().unwrap().is_none());
    let s = log.store();
    let size = exported(&d).unwrap().checkpoint.size;
    assert_eq!(index_size(s), size);
    // Message ids are hashed into buckets: message 2's bucket has one list (one window), no list is
    // keyed by a message id, and there are fewer lists than messages.
    let h = xxhash_rust::xxh3::xxh3_64(msg_id(2).as_bytes());
    let bucket = [b'}', b'M', h.to_be_bytes()[0]];
    assert_eq!(s.scan_prefix(trees::INDEX, &bucket, 1024).unwrap().len(), 1);
    assert!(lists(s).iter().all(|(k, _)| !k
        .windows(msg_id(2).len())
        .any(|w| w == msg_id(2).as_bytes())));
    assert!(s.scan_prefix(trees::INDEX, b"}M", 1024).unwrap().len() <= 10);
    assert_eq!(answers(s), [3, 3, 30, 3]);
    verify_store(s, &key(1).verifying_key(), exported(&d).as_ref()).unwrap();
}

/// Rewrite the hashed bucket lists (message ids, patients: `}M`, `}P`) as one gap list per value
/// (`}m`, `}p`), the way logs written before the buckets stored them. Returns how many buckets there were.
fn to_value_lists(store: &FjallStore) -> usize {
    let mut b = Batch::new();
    let mut buckets = 0;
    for tag in [b"}M", b"}P"] {
        for (k, _) in store.scan_prefix(trees::INDEX, tag, usize::MAX).unwrap() {
            b.delete(trees::INDEX, k);
            buckets += 1;
        }
    }
    let mut lists: std::collections::BTreeMap<Vec<u8>, Vec<u64>> = Default::default();
    for (i, bytes) in stored_leaves(store).unwrap() {
        let leaf = Leaf::decode(&bytes).unwrap();
        for (tag, value) in [(b'm', leaf.message_id), (b'p', leaf.patient)] {
            if let Some(v) = value {
                let len = (v.len() as u16).to_be_bytes();
                lists
                    .entry([&[tag][..], &len, v.as_bytes()].concat())
                    .or_default()
                    .push(i);
            }
        }
    }
    // One list per value, from its first leaf on (its first gap is 0).
    for (prefix, list) in lists {
        let first = list[0];
        let (mut gaps, mut at) = (Vec::new(), first);
        for i in list {
            leb128::write::unsigned(&mut gaps, i - at).unwrap();
            at = i;
        }
        b.put(
            trees::INDEX,
            [&b"}"[..], &prefix, &first.to_be_bytes()].concat(),
            gaps,
        );
    }
    store.commit(b).unwrap();
    buckets
}

/// Rewrite the value lists (`}`, LEB128 gaps) the way logs written before them stored them: `~` keys,
/// indices as u64 BE.
fn to_u64_lists(store: &FjallStore) -> usize {
    let mut b = Batch::new();
    let lists = store.scan_prefix(trees::INDEX, b"}", usize::MAX).unwrap();
    for (k, v) in &lists {
        let mut at = u64::from_be_bytes(k[k.len() - 8..].try_into().unwrap());
        let mut rest = &v[..];
        let mut old = Vec::new();
        while !rest.is_empty() {
            at += leb128::read::unsigned(&mut rest).unwrap();
            old.extend_from_slice(&at.to_be_bytes());
        }
        b.put(trees::INDEX, [&b"~"[..], &k[1..]].concat(), old);
        b.delete(trees::INDEX, k.clone());
    }
    store.commit(b).unwrap();
    lists.len()
}

#[test]
fn search_reads_the_value_lists_and_u64_lists_of_older_logs_beside_buckets() {
    let d = dirs();
    fresh_fjall(&d, 6);
    let cpr = || Search::Cpr {
        cpr: CPR.into(),
        key: config(&d.export).patient_key,
    };
    let queries = || {
        [
            Search::MessageId(msg_id(2)),
            Search::MessageId(msg_id(7)),
            Search::MessageId(msg_id(9)),
            Search::Gln(RECEIVER.into()),
            cpr(),
        ]
    };
    let answers = |s: &FjallStore| {
        queries()
            .iter()
            .map(|q| search_store(s, q).unwrap())
            .collect::<Vec<_>>()
    };
    let s = reopen(&d);
    let want = answers(&s);
    assert_eq!(
        want.iter().map(Vec::len).collect::<Vec<_>>(),
        [3, 0, 0, 18, 18]
    );
    assert!(to_value_lists(&s) > 0);
    assert!(s.scan_prefix(trees::INDEX, b"}M", 1).unwrap().is_empty());
    assert_eq!(
        answers(&s),
        want,
        "one list per message id gives the same leaves"
    );
    assert!(to_u64_lists(&s) > 3);
    let old = s.scan_prefix(trees::INDEX, b"~m", usize::MAX).unwrap();
    assert!(!old.is_empty() && old.iter().all(|(_, v)| v.len() % 8 == 0));
    assert_eq!(answers(&s), want, "older lists give the same leaves");
    drop(s);
    // New checkpoints write gap lists after the older ones; search reads both.
    let log = AuditLog::open(reopen(&d), config(&d.export), key(1)).unwrap();
    write_log(&log, 8);
    log.checkpoint_now().unwrap();
    drop(log);
    let s = reopen(&d);
    assert!(!s
        .scan_prefix(trees::INDEX, b"}", usize::MAX)
        .unwrap()
        .is_empty());
    let after = answers(&s);
    assert_eq!(
        after.iter().map(Vec::len).collect::<Vec<_>>(),
        [6, 3, 0, 42, 42],
        "messages 0..8 written again"
    );
    for (old, new) in want.iter().zip(&after) {
        assert!(
            new.starts_with(old),
            "the older leaves are still found first"
        );
    }
    verify_store(&s, &key(1).verifying_key(), exported(&d).as_ref()).unwrap();
}

fn assert_no_personal_data_in_files(root: &Path) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            let bytes = std::fs::read(&p).unwrap();
            for needle in [CPR.as_bytes(), NAME.as_bytes()] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "personal data in {}",
                    p.display()
                );
            }
        }
    }
}

#[test]
fn data_dir_functions_on_sled() {
    let d = dirs();
    let keys = sammen_audit::keygen(&d._tmp.path().join("keys")).unwrap();
    let signer = sammen_audit::keys::load_signing_key(&keys.private_key).unwrap();
    assert!(
        sammen_audit::keygen(&d._tmp.path().join("keys")).is_err(),
        "no overwrite"
    );
    {
        let store = SledStore::open(&d.store, &trees::ALL).unwrap();
        let log = AuditLog::open(store, config(&d.export), signer).unwrap();
        write_log(&log, 3);
    }
    let r = sammen_audit::verify(&d.store, &keys.public_key).unwrap();
    assert_eq!(r.keys, vec![keys.fingerprint.clone()]);
    let doc = sammen_audit::prove(&d.store, &msg_id(1)).unwrap();
    let pk = sammen_audit::keys::load_public_key(&keys.public_key).unwrap();
    assert_eq!(check_proof(&doc, &pk).unwrap().len(), 3);
    assert_eq!(
        sammen_audit::search(&d.store, &Search::Gln(SENDER.into()))
            .unwrap()
            .len(),
        9
    );
    let old = d._tmp.path().join("old-checkpoint");
    std::fs::copy(d.export.join("checkpoint"), &old).unwrap();
    sammen_audit::consistency(&d.store, &old).unwrap();
    assert!(sammen_audit::verify(&d._tmp.path().join("nope"), &keys.public_key).is_err());
}

fn finding(r: Result<sammen_audit::VerifyReport, AuditError>) -> Finding {
    match r {
        Err(AuditError::Tampered(f)) => f,
        other => panic!("expected tampering, got {other:?}"),
    }
}

fn verify_now(d: &Dirs) -> Result<sammen_audit::VerifyReport, AuditError> {
    let store = reopen(d);
    verify_store(&store, &key(1).verifying_key(), exported(d).as_ref())
}

fn leaf_bytes(store: &FjallStore, i: u64) -> Vec<u8> {
    store.get(trees::LEAVES, &i.to_be_bytes()).unwrap().unwrap()
}

fn put(store: &FjallStore, tree: &'static str, k: Vec<u8>, v: Vec<u8>) {
    let mut b = Batch::new();
    b.put(tree, k, v);
    store.commit(b).unwrap();
}

fn del(store: &FjallStore, tree: &'static str, k: Vec<u8>) {
    let mut b = Batch::new();
    b.delete(tree, k);
    store.commit(b).unwrap();
}

/// A log whose messages each put three leaves in one batch: genesis 0, then runs 1..=3, 4..=6, ...
fn fresh_fjall_runs(d: &Dirs, messages: u64) {
    let store = FjallStore::open(&d.store, &trees::ALL).unwrap();
    let log = AuditLog::open(store, config(&d.export), key(1)).unwrap();
    for i in 0..messages {
        let evs = [
            Event::Accepted,
            Event::Published,
            Event::Acknowledged { code: AckCode::Ok },
        ];
        let evs = evs.into_iter().map(|ev| event(i, ev)).collect();
        log.submit(Batch::new(), evs).unwrap().wait().unwrap();
    }
    log.checkpoint_at(1_800_000_000_000).unwrap();
}

/// The leaves of the run stored under `last`: (first index, leaves). Format: `0x80` ‖ first (u64 BE) ‖
/// (length (u32 BE) ‖ bytes)*.
fn read_run(store: &FjallStore, last: u64) -> (u64, Vec<Vec<u8>>) {
    let v = store
        .get(trees::LEAVES, &last.to_be_bytes())
        .unwrap()
        .unwrap();
    assert_eq!(v[0], 0x80);
    let first = u64::from_be_bytes(v[1..9].try_into().unwrap());
    let mut rest = &v[9..];
    let mut out = Vec::new();
    while !rest.is_empty() {
        let n = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        out.push(rest[4..4 + n].to_vec());
        rest = &rest[4 + n..];
    }
    (first, out)
}

fn write_run(store: &FjallStore, first: u64, leaves: &[Vec<u8>]) {
    let mut v = vec![0x80];
    v.extend_from_slice(&first.to_be_bytes());
    for l in leaves {
        v.extend_from_slice(&(l.len() as u32).to_be_bytes());
        v.extend_from_slice(l);
    }
    let last = first + leaves.len() as u64 - 1;
    put(store, trees::LEAVES, last.to_be_bytes().to_vec(), v);
}

#[test]
fn verify_names_each_tampering_inside_leaf_runs() {
    let bad_leaf = |d: &Dirs| match finding(verify_now(d)) {
        Finding::BadLeaf { index, problem } => (index, problem),
        other => panic!("{other:?}"),
    };
    let d = dirs();
    fresh_fjall_runs(&d, 6);
    {
        let s = reopen(&d);
        assert!(s.get(trees::LEAVES, &5u64.to_be_bytes()).unwrap().is_none());
        assert_eq!(
            read_run(&s, 6),
            (
                4,
                stored_leaves(&s).unwrap()[4..7]
                    .iter()
                    .map(|(_, b)| b.clone())
                    .collect()
            )
        );
    }
    assert_eq!(verify_now(&d).unwrap().leaves, 19);

    // A flipped byte in the middle leaf of a run.
    let d = dirs();
    fresh_fjall_runs(&d, 6);
    {
        let s = reopen(&d);
        let (first, mut ls) = read_run(&s, 6);
        let pos = ls[1].iter().position(|b| *b == b'1').unwrap();
        ls[1][pos] = b'2';
        write_run(&s, first, &ls);
    }
    assert_eq!(bad_leaf(&d).0, 5);

    // A length field that no longer fits the run.
    let d = dirs();
    fresh_fjall_runs(&d, 6);
    {
        let s = reopen(&d);
        let mut v = s.get(trees::LEAVES, &6u64.to_be_bytes()).unwrap().unwrap();
        v[12] ^= 0x01;
        put(&s, trees::LEAVES, 6u64.to_be_bytes().to_vec(), v);
    }
    assert_eq!(bad_leaf(&d), (4, "malformed leaf run".into()));

    // A deleted run.
    let d = dirs();
    fresh_fjall_runs(&d, 6);
    del(&reopen(&d), trees::LEAVES, 9u64.to_be_bytes().to_vec());
    assert_eq!(bad_leaf(&d).0, 7);

    // Two leaves of a run swapped.
    let d = dirs();
    fresh_fjall_runs(&d, 6);
    {
        let s = reopen(&d);
        let (first, mut ls) = read_run(&s, 6);
        ls.swap(0, 1);
        write_run(&s, first, &ls);
    }
    assert_eq!(bad_leaf(&d).0, 4);

    // A run cut short by its last leaf, stored under its new last index.
    let d = dirs();
    fresh_fjall_runs(&d, 6);
    {
        let s = reopen(&d);
        let (first, ls) = read_run(&s, 12);
        del(&s, trees::LEAVES, 12u64.to_be_bytes().to_vec());
        write_run(&s, first, &ls[..2]);
    }
    assert_eq!(bad_leaf(&d).0, 12);

    // A damaged run in the unsigned tail: search by time lists every leaf it can read, no error.
    let d = dirs();
    fresh_fjall_runs(&d, 2);
    {
        let log = AuditLog::open(reopen(&d), config(&d.export), key(1)).unwrap();
        for i in 2..4 {
            let evs = vec![event(i, Event::Accepted), event(i, Event::Published)];
            log.submit(Batch::new(), evs).unwrap().wait().unwrap();
        }
    }
    {
        let s = reopen(&d);
        let mut v = s.get(trees::LEAVES, &10u64.to_be_bytes()).unwrap().unwrap();
        v.pop();
        put(&s, trees::LEAVES, 10u64.to_be_bytes().to_vec(), v);
    }
    let all = Search::TimeRange {
        from_ms: 0,
        to_ms: u64::MAX,
    };
    assert_eq!(hits(&reopen(&d), &all), 9);
    assert_eq!(bad_leaf(&d), (9, "malformed leaf run".into()));

    // The last run of the log removed: the log ends below its checkpoint.
    let d = dirs();
    fresh_fjall_runs(&d, 6);
    del(&reopen(&d), trees::LEAVES, 18u64.to_be_bytes().to_vec());
    assert_eq!(bad_leaf(&d).0, 16);
    assert!(matches!(
        AuditLog::open(reopen(&d), config(&d.export), key(1)),
        Err(AuditError::Rollback { .. })
    ));
}

#[test]
fn verify_names_each_tampering() {
    // flipped byte in a stored leaf
    let d = dirs();
    fresh_fjall(&d, 6);
    verify_now(&d).unwrap();
    {
        let s = reopen(&d);
        let mut v = leaf_bytes(&s, 5);
        let pos = v.iter().position(|b| *b == b'5').unwrap();
        v[pos] = b'6';
        put(&s, trees::LEAVES, 5u64.to_be_bytes().to_vec(), v);
    }
    assert!(matches!(
        finding(verify_now(&d)),
        Finding::BadLeaf { index: 5, .. }
    ));

    // deleted middle entry
    let d = dirs();
    fresh_fjall(&d, 6);
    del(&reopen(&d), trees::LEAVES, 7u64.to_be_bytes().to_vec());
    assert!(matches!(
        finding(verify_now(&d)),
        Finding::BadLeaf { index: 7, .. }
    ));

    // truncated log
    let d = dirs();
    fresh_fjall(&d, 6);
    {
        let s = reopen(&d);
        for i in 12..19u64 {
            del(&s, trees::LEAVES, i.to_be_bytes().to_vec());
        }
    }
    assert!(matches!(
        finding(verify_now(&d)),
        Finding::BadLeaf { index: 12, .. }
    ));

    // reordered entries
    let d = dirs();
    fresh_fjall(&d, 6);
    {
        let s = reopen(&d);
        let (a, b) = (leaf_bytes(&s, 3), leaf_bytes(&s, 4));
        let mut batch = Batch::new();
        batch.put(trees::LEAVES, 3u64.to_be_bytes().to_vec(), b);
        batch.put(trees::LEAVES, 4u64.to_be_bytes().to_vec(), a);
        s.commit(batch).unwrap();
    }
    assert!(matches!(
        finding(verify_now(&d)),
        Finding::BadLeaf { index: 3, .. }
    ));

    // replayed old checkpoint: checkpoint 0's note stored again as the newest
    let d = dirs();
    fresh_fjall(&d, 6);
    {
        let s = reopen(&d);
        let (k, _) = s.last(trees::CHECKPOINTS).unwrap().unwrap();
        let old = s
            .get(trees::CHECKPOINTS, &0u64.to_be_bytes())
            .unwrap()
            .unwrap();
        put(&s, trees::CHECKPOINTS, k, old);
    }
    assert!(matches!(
        finding(verify_now(&d)),
        Finding::BadCheckpoint { problem, .. } if problem.contains("does not grow")
    ));

    // checkpoint signed by another key
    let d = dirs();
    fresh_fjall(&d, 6);
    {
        let s = reopen(&d);
        let (k, v) = s.last(trees::CHECKPOINTS).unwrap().unwrap();
        let cp = SignedCheckpoint::parse(&String::from_utf8(v).unwrap()).unwrap();
        let forged = cp.checkpoint.sign(&key(9));
        put(&s, trees::CHECKPOINTS, k, forged.text.into_bytes());
    }
    assert!(matches!(
        finding(verify_now(&d)),
        Finding::BadCheckpoint { problem, .. } if problem.contains("signed")
    ));

    // a stray key for a node the chunks hold (left out and recomputed, or stored): the key is read
    // first, so it is refused, also where the node is only read as a left-out node's child
    for (level, index) in [(2u8, 1u64), (1, 0), (3, 0), (0, 2)] {
        let d = dirs();
        fresh_fjall(&d, 6);
        put(
            &reopen(&d),
            trees::NODES,
            [&[level][..], &index.to_be_bytes()].concat(),
            vec![0; 32],
        );
        let f = finding(verify_now(&d));
        if level == 0 {
            assert!(matches!(f, Finding::BadLeaf { index: 2, .. }), "{f:?}");
        } else {
            assert_eq!(f, Finding::BadNode { level, index });
        }
    }

    // a hash inside a stored node chunk changed: a leaf hash (level 0) names the leaf, an interior one
    // the node
    for (level, index) in [(0u8, 3u64), (4, 0)] {
        let d = dirs();
        fresh_fjall(&d, 6);
        let s = reopen(&d);
        let chunks = node_chunks(&s);
        assert!(!chunks.is_empty(), "no node chunks written");
        let (k, mut v, at) = chunks
            .into_iter()
            .find_map(|c| {
                let at = c.place(level, index)?;
                Some((c.key, c.value, at))
            })
            .expect("the node is in a chunk");
        v[at + 20] ^= 1;
        put(&s, trees::NODES, k, v);
        drop(s);
        let f = finding(verify_now(&d));
        if level == 0 {
            assert!(matches!(f, Finding::BadLeaf { index: 3, .. }), "{f:?}");
        } else {
            assert_eq!(f, Finding::BadNode { level: 4, index: 0 });
        }
    }

    // a node chunk deleted
    let d = dirs();
    fresh_fjall(&d, 6);
    let s = reopen(&d);
    let (k, _) = s.range(trees::NODES, &[0xfe], None, 1).unwrap().remove(0);
    del(&s, trees::NODES, k);
    drop(s);
    assert!(matches!(
        finding(verify_now(&d)),
        Finding::BadLeaf { .. } | Finding::BadNode { .. }
    ));

    // the whole log under another key: the trusted key is not in the chain
    let d = dirs();
    fresh_fjall(&d, 2);
    let s = reopen(&d);
    assert_eq!(
        finding(verify_store(&s, &key(9).verifying_key(), None)),
        Finding::UntrustedKey
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), t).unwrap();
        }
    }
}

#[test]
fn open_refuses_rollback_and_fork() {
    let d = dirs();
    fresh_fjall(&d, 3);
    let snapshot = d._tmp.path().join("snapshot");
    copy_dir(&d.store, &snapshot);
    {
        let log = AuditLog::open(reopen(&d), config(&d.export), key(1)).unwrap();
        write_log(&log, 3);
    }
    // Restore the old copy of the data dir: shorter than the exported checkpoint.
    std::fs::remove_dir_all(&d.store).unwrap();
    copy_dir(&snapshot, &d.store);
    let err = AuditLog::open(reopen(&d), config(&d.export), key(1)).unwrap_err();
    assert!(
        matches!(
            err,
            AuditError::Rollback {
                source_name: "exported",
                ..
            }
        ),
        "{err:?}"
    );

    // Grow the old copy differently (export disabled) past the exported size: a fork.
    {
        let mut cfg = config(&d.export);
        cfg.export_dir = None;
        let log = AuditLog::open(reopen(&d), cfg, key(1)).unwrap();
        for i in 100..120 {
            log.submit(Batch::new(), vec![event(i, Event::Received)])
                .unwrap()
                .wait()
                .unwrap();
        }
        log.checkpoint_now().unwrap();
    }
    let err = AuditLog::open(reopen(&d), config(&d.export), key(1)).unwrap_err();
    assert!(matches!(err, AuditError::Inconsistent { .. }), "{err:?}");
    // verify also flags the exported checkpoint.
    assert!(matches!(
        finding(verify_now(&d)),
        Finding::BadExportedCheckpoint { .. }
    ));
}

#[test]
fn open_refuses_gap_and_wrong_key() {
    let d = dirs();
    fresh_fjall(&d, 3);
    {
        let log = AuditLog::open(reopen(&d), config(&d.export), key(1)).unwrap();
        log.submit(Batch::new(), vec![event(50, Event::Received)])
            .unwrap()
            .wait()
            .unwrap();
        log.submit(Batch::new(), vec![event(51, Event::Received)])
            .unwrap()
            .wait()
            .unwrap();
    }
    let err = AuditLog::open(reopen(&d), config(&d.export), key(2)).unwrap_err();
    assert!(matches!(err, AuditError::WrongSigningKey { .. }), "{err:?}");
    del(&reopen(&d), trees::LEAVES, 10u64.to_be_bytes().to_vec());
    let err = AuditLog::open(reopen(&d), config(&d.export), key(1)).unwrap_err();
    assert!(matches!(err, AuditError::Gap(10)), "{err:?}");
}

#[test]
fn key_rotation_is_a_leaf_and_verify_follows_the_chain() {
    let d = dirs();
    {
        let log = AuditLog::open(reopen(&d), config(&d.export), key(1)).unwrap();
        write_log(&log, 2);
        let handover = log.rotate_key(key(2), 1_800_000_000_001).unwrap();
        handover.verify(&key(1).verifying_key()).unwrap();
        write_log(&log, 2);
        let latest = log.latest_checkpoint().unwrap();
        latest.verify(&key(2).verifying_key()).unwrap();
    }
    let s = reopen(&d);
    let r = verify_store(&s, &key(1).verifying_key(), exported(&d).as_ref()).unwrap();
    assert_eq!(r.keys.len(), 2);
    verify_store(&s, &key(2).verifying_key(), None).unwrap();
    drop(s);
    // Reopening needs the new key now.
    assert!(AuditLog::open(reopen(&d), config(&d.export), key(1)).is_err());
    drop(AuditLog::open(reopen(&d), config(&d.export), key(2)).unwrap());
    // A checkpoint after the handover signed by the old key is refused.
    let s = reopen(&d);
    let (k, v) = s.last(trees::CHECKPOINTS).unwrap().unwrap();
    let cp = SignedCheckpoint::parse(&String::from_utf8(v).unwrap()).unwrap();
    put(
        &s,
        trees::CHECKPOINTS,
        k,
        cp.checkpoint.sign(&key(1)).text.into_bytes(),
    );
    assert!(matches!(
        finding(verify_store(&s, &key(1).verifying_key(), None)),
        Finding::BadCheckpoint { .. }
    ));
}

/// A store whose next `submit` fails, to drive the failed-batch path.
struct Flaky {
    inner: FjallStore,
    fail_next: std::sync::atomic::AtomicBool,
}

impl Store for Flaky {
    fn backend_name(&self) -> &'static str {
        "flaky"
    }
    fn get(&self, t: &str, k: &[u8]) -> Result<Option<Vec<u8>>, sammen_store::StoreError> {
        self.inner.get(t, k)
    }
    fn range(
        &self,
        t: &str,
        f: &[u8],
        to: Option<&[u8]>,
        l: usize,
    ) -> Result<Vec<sammen_store::KeyValue>, sammen_store::StoreError> {
        self.inner.range(t, f, to, l)
    }
    fn last(&self, t: &str) -> Result<Option<sammen_store::KeyValue>, sammen_store::StoreError> {
        self.inner.last(t)
    }
    fn submit(&self, b: Batch) -> Result<sammen_store::Ticket, sammen_store::StoreError> {
        if self
            .fail_next
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(sammen_store::StoreError::DiskFull("test".into()));
        }
        self.inner.submit(b)
    }
}

#[test]
fn commits_reported_out_of_order_fold_in_index_order() {
    // Group commit wakes waiters in any order: the tree grows only over a settled prefix, and its root
    // is the one of the stored leaves in index order (the checkpoint it signs passes `verify`).
    let d = dirs();
    let log = AuditLog::open(
        SledStore::open(&d.store, &trees::ALL).unwrap(),
        config(&d.export),
        key(1),
    )
    .unwrap();
    // A fresh log already holds its `log-created` leaf.
    let base = log.size();
    let mut staged: Vec<_> = (0..4u64)
        .map(|i| {
            let mut batch = Batch::new();
            let staged = log.stage(&mut batch, event(i, Event::Accepted)).unwrap();
            log.store().commit(batch).unwrap();
            Some(staged)
        })
        .collect();
    assert_eq!(log.size(), base);
    // Report 2, then 0 (prefix 0 settles), then 3, then 1 (all settle).
    for (k, grown) in [(2, 0), (0, 1), (3, 1), (1, 4)] {
        log.committed(staged[k].take().unwrap()).unwrap();
        assert_eq!(log.size(), base + grown, "after reporting leaf {k}");
    }
    log.checkpoint_now().unwrap();
    let report = verify_store(log.store(), &key(1).verifying_key(), exported(&d).as_ref()).unwrap();
    assert_eq!(report.leaves, base + 4);
    let ids: Vec<Option<String>> = stored_leaves(log.store())
        .unwrap()
        .into_iter()
        .skip(base as usize)
        .map(|(_, b)| Leaf::decode(&b).unwrap().message_id)
        .collect();
    assert_eq!(ids, (0..4).map(|i| Some(msg_id(i))).collect::<Vec<_>>());
}

#[test]
fn failed_batch_becomes_a_lost_write_leaf_and_the_log_stays_contiguous() {
    let d = dirs();
    let flaky = Flaky {
        inner: reopen(&d),
        fail_next: false.into(),
    };
    let log = AuditLog::open(flaky, config(&d.export), key(1)).unwrap();
    log.store()
        .fail_next
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let mut change = Batch::new();
    change.put(trees::META, b"state-change".to_vec(), b"x".to_vec());
    assert!(log.submit(change, vec![event(1, Event::Accepted)]).is_err());
    assert_eq!(log.store().get(trees::META, b"state-change").unwrap(), None);
    log.submit(Batch::new(), vec![event(2, Event::Accepted)])
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(log.size(), 3);
    log.checkpoint_now().unwrap();
    drop(log);
    let s = reopen(&d);
    let lost = search_store(
        &s,
        &Search::TimeRange {
            from_ms: 0,
            to_ms: u64::MAX,
        },
    )
    .unwrap();
    assert_eq!(lost[1].1.event, Event::LostWrite);
    verify_store(&s, &key(1).verifying_key(), exported(&d).as_ref()).unwrap();
}

/// A version-2 node chunk as stored (key `0xfe ‖ end`, value `start ‖ hashes`), read by the layout
/// documented in `sammen_audit::store`, independently of the code that writes it.
struct NodeChunk {
    key: Vec<u8>,
    value: Vec<u8>,
    start: u64,
    end: u64,
}

impl NodeChunk {
    /// Byte offset of node `(level, index)`'s hash in the value, if this chunk stores it.
    fn place(&self, level: u8, index: u64) -> Option<usize> {
        let mut at = 8;
        for l in 0..64u8 {
            let (lo, hi) = (self.start >> l, self.end >> l);
            if l == 0 || l > 3 {
                if l == level {
                    return (lo..hi)
                        .contains(&index)
                        .then(|| at + 32 * (index - lo) as usize);
                }
                at += 32 * hi.saturating_sub(lo) as usize;
            }
        }
        None
    }
}

fn node_chunks<S: Store>(s: &S) -> Vec<NodeChunk> {
    s.range(trees::NODES, &[0xfe], Some(&[0xff]), usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(key, value)| NodeChunk {
            start: u64::from_be_bytes(value[..8].try_into().unwrap()),
            end: u64::from_be_bytes(key[1..9].try_into().unwrap()),
            key,
            value,
        })
        .collect()
}

/// A node: level, index, hash.
type Node = (u8, u64, Hash);

/// Every node the version-2 chunks stand for, per chunk, sorted by (level, index): the stored ones and
/// levels 1–3 recomputed from level 0 (children may lie in an earlier chunk).
fn chunk_nodes<S: Store>(s: &S) -> Vec<(NodeChunk, Vec<Node>)> {
    let chunks = node_chunks(s);
    let mut all = std::collections::BTreeMap::new();
    for c in &chunks {
        for i in c.start..c.end {
            let at = c.place(0, i).unwrap();
            all.insert((0u8, i), <Hash>::try_from(&c.value[at..at + 32]).unwrap());
        }
    }
    for l in 1..=3u8 {
        for c in &chunks {
            for i in c.start >> l..c.end >> l {
                let h = node_hash(&all[&(l - 1, 2 * i)], &all[&(l - 1, 2 * i + 1)]);
                all.insert((l, i), h);
            }
        }
    }
    chunks
        .into_iter()
        .map(|c| {
            let mut nodes = Vec::new();
            for l in 0..64u8 {
                for i in c.start >> l..c.end >> l {
                    let h = match c.place(l, i) {
                        Some(at) => <Hash>::try_from(&c.value[at..at + 32]).unwrap(),
                        None => all[&(l, i)],
                    };
                    nodes.push((l, i, h));
                }
            }
            (c, nodes)
        })
        .collect()
}

/// A data dir of the earlier layout (one key per node, no chunks) still opens, verifies and proves; new
/// checkpoints then add chunks beside the old keys.
#[test]
fn logs_with_one_key_per_node_keep_working() {
    let d = dirs();
    fresh_fjall(&d, 6);
    {
        let s = reopen(&d);
        let chunks = chunk_nodes(&s);
        assert!(chunks.len() > 1, "several checkpoints, several chunks");
        let mut b = Batch::new();
        for (c, nodes) in chunks {
            for (l, i, h) in nodes {
                b.put(
                    trees::NODES,
                    [&[l][..], &i.to_be_bytes()].concat(),
                    h.to_vec(),
                );
            }
            b.delete(trees::NODES, c.key);
        }
        s.commit(b).unwrap();
        assert!(s.range(trees::NODES, &[0xfe], None, 1).unwrap().is_empty());
    }
    verify_now(&d).unwrap();
    {
        let s = reopen(&d);
        let doc = prove_store(&s, &msg_id(2)).unwrap();
        check_proof(&doc, &key(1).verifying_key()).unwrap();
    }
    let log = AuditLog::open(reopen(&d), config(&d.export), key(1)).unwrap();
    write_log(&log, 3);
    drop(log);
    verify_now(&d).unwrap();
    let s = reopen(&d);
    assert!(!node_chunks(&s).is_empty());
    let doc = prove_store(&s, &msg_id(1)).unwrap();
    check_proof(&doc, &key(1).verifying_key()).unwrap();
}

/// A data dir whose chunks name every node (`0xff ‖ end`: start, then `level ‖ index ‖ hash` entries,
/// written before version 2) still opens, verifies, proves and detects damage; new checkpoints then
/// add version-2 chunks after them, and lookups find each node in whichever holds it.
#[test]
fn logs_with_named_node_chunks_keep_working() {
    let d = dirs();
    fresh_fjall(&d, 6);
    let named = |s: &FjallStore| s.range(trees::NODES, &[0xff], None, usize::MAX).unwrap();
    {
        let s = reopen(&d);
        let chunks = chunk_nodes(&s);
        assert!(chunks.len() > 1, "several checkpoints, several chunks");
        let mut b = Batch::new();
        for (c, nodes) in chunks {
            let mut v = c.start.to_be_bytes().to_vec();
            for (l, i, h) in nodes {
                v.push(l);
                v.extend_from_slice(&i.to_be_bytes());
                v.extend_from_slice(&h);
            }
            b.put(
                trees::NODES,
                [&[0xff][..], &c.end.to_be_bytes()].concat(),
                v,
            );
            b.delete(trees::NODES, c.key);
        }
        s.commit(b).unwrap();
        assert!(node_chunks(&s).is_empty());
    }
    verify_now(&d).unwrap();
    let log = AuditLog::open(reopen(&d), config(&d.export), key(1)).unwrap();
    write_log(&log, 5);
    drop(log);
    verify_now(&d).unwrap();
    let s = reopen(&d);
    assert!(
        !node_chunks(&s).is_empty(),
        "new checkpoints write version 2"
    );
    for m in [1, 2, 4] {
        let doc = prove_store(&s, &msg_id(m)).unwrap();
        check_proof(&doc, &key(1).verifying_key()).unwrap();
    }
    // An interior node inside a named chunk changed is still named.
    let (k, mut v) = named(&s)
        .into_iter()
        .find(|(_, v)| {
            v[8..]
                .chunks(41)
                .any(|e| e[0] == 2 && e[1..9] == 1u64.to_be_bytes())
        })
        .expect("node (2, 1) in a named chunk");
    let at = 8 + v[8..]
        .chunks(41)
        .position(|e| e[0] == 2 && e[1..9] == 1u64.to_be_bytes())
        .unwrap()
        * 41;
    v[at + 20] ^= 1;
    put(&s, trees::NODES, k, v);
    drop(s);
    assert_eq!(
        finding(verify_now(&d)),
        Finding::BadNode { level: 2, index: 1 }
    );
}

#[test]
fn runs_of_batches_sharing_a_group_commit_are_stored_as_one_and_verify() {
    // Writers submitting at once share group commits; their runs are then joined into one key per
    // group (`runs::Joiner`). The log reads, verifies and proves exactly as with one key per batch.
    let d = dirs();
    let log = AuditLog::open(
        FjallStore::open(&d.store, &trees::ALL).unwrap(),
        config(&d.export),
        key(1),
    )
    .unwrap();
    let base = log.size();
    let (writers, each) = (8u64, 40u64);
    std::thread::scope(|s| {
        for w in 0..writers {
            let log = &log;
            s.spawn(move || {
                for j in 0..each {
                    let i = w * each + j;
                    let mut batch = Batch::new();
                    batch.put(trees::META, format!("state-{i}").into_bytes(), vec![1]);
                    let evs = vec![event(i, Event::Received), event(i, Event::Accepted)];
                    let idx = log.submit(batch, evs).unwrap().wait().unwrap();
                    assert_eq!(idx.len(), 2);
                    assert_eq!(idx[1].0, idx[0].0 + 1, "a batch's leaves are contiguous");
                }
            });
        }
    });
    log.checkpoint_now().unwrap();
    let leaves = writers * each * 2;
    assert_eq!(log.size(), base + leaves);
    let report = verify_store(log.store(), &key(1).verifying_key(), exported(&d).as_ref()).unwrap();
    assert_eq!(report.leaves, base + leaves);
    // Every leaf once, in index order, each message's two leaves side by side.
    let stored = stored_leaves(log.store()).unwrap();
    assert_eq!(
        stored.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        (0..base + leaves).collect::<Vec<_>>()
    );
    for i in 0..writers * each {
        let at: Vec<u64> = stored
            .iter()
            .filter(|(_, b)| Leaf::decode(b).unwrap().message_id == Some(msg_id(i)))
            .map(|(j, _)| *j)
            .collect();
        assert_eq!(at.len(), 2, "message {i}");
        assert_eq!(at[1], at[0] + 1, "message {i}");
    }
    // Fewer keys than batches: some groups carried several writers' runs.
    let keys = log
        .store()
        .keys(trees::LEAVES, &[], None, usize::MAX)
        .unwrap();
    let batches = writers * each + base;
    assert!(
        (keys.len() as u64) < batches,
        "{} keys for {batches} batches",
        keys.len()
    );
    // A message's proof from a joined run checks.
    let doc = prove_store(log.store(), &msg_id(writers * each / 2)).unwrap();
    check_proof(&doc, &key(1).verifying_key()).unwrap();
    drop(log);
    // Tampering inside a joined run is named at its leaf.
    let store = reopen(&d);
    let (last, first, run) = store
        .range(trees::LEAVES, &[], None, usize::MAX)
        .unwrap()
        .into_iter()
        .filter(|(_, v)| v[0] == 0x80)
        .map(|(k, _)| {
            let last = u64::from_be_bytes(k.try_into().unwrap());
            let (first, run) = read_run(&store, last);
            (last, first, run)
        })
        .find(|(_, _, run)| run.len() > 2)
        .expect("a joined run");
    let mut run = run;
    let n = run[2].len();
    run[2][n - 1] ^= 1;
    write_run(&store, first, &run);
    assert_eq!(first + run.len() as u64 - 1, last);
    drop(store);
    match finding(verify_now(&d)) {
        Finding::BadLeaf { index, .. } => assert_eq!(index, first + 2),
        other => panic!("{other:?}"),
    }
}
