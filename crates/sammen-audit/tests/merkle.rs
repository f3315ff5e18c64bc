//! RFC 6962 vectors, an independent naive implementation, and the transparency-dev proof-corruption table.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use sammen_audit::leaf::{hex, unhex};
use sammen_audit::proof::{verify_consistency, verify_inclusion};
use sammen_audit::tree::{
    consistency_proof, empty_root, inclusion_proof, leaf_hash, node_hash, root_from_leaf_hashes,
    CompactRange, MemoryTree,
};
use sammen_audit::Hash;
use sha2::{Digest, Sha256};

/// certificate-transparency `merkle_tree_test.cc` inputs (also transparency-dev/merkle testdata).
const LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];
/// Roots of the first 1..=8 leaves.
const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];
const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// (leaf index, tree size, path) from the same sources.
const INCLUSION: [(u64, u64, &[&str]); 5] = [
    (0, 1, &[]),
    (
        0,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        3,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        1,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];
/// (old size, new size, proof).
const CONSISTENCY: [(u64, u64, &[&str]); 5] = [
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

fn h(s: &str) -> Hash {
    unhex(s).unwrap().try_into().unwrap()
}

fn hs(v: &[&str]) -> Vec<Hash> {
    v.iter().map(|s| h(s)).collect()
}

fn vector_tree() -> MemoryTree {
    MemoryTree::new(
        LEAVES
            .iter()
            .map(|l| leaf_hash(&unhex(l).unwrap()))
            .collect(),
    )
}

/// Independent naive MTH straight from RFC 6962 §2.1, hashing with its own SHA-256 calls.
fn naive_mth(d: &[Vec<u8>]) -> Hash {
    match d.len() {
        0 => Sha256::digest([]).into(),
        1 => Sha256::digest([&[0u8][..], &d[0]].concat()).into(),
        n => {
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            let (l, r) = (naive_mth(&d[..k]), naive_mth(&d[k..]));
            Sha256::digest([&[1u8][..], &l, &r].concat()).into()
        }
    }
}

fn data(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("leaf {i}").into_bytes()).collect()
}

fn tree_of(n: usize) -> MemoryTree {
    MemoryTree::new(data(n).iter().map(|d| leaf_hash(d)).collect())
}

#[test]
fn empty_tree_and_prefix_hashes() {
    assert_eq!(hex(&empty_root()), EMPTY);
    assert_eq!(hex(&root_from_leaf_hashes(&[])), EMPTY);
    assert_eq!(
        hex(&leaf_hash(b"")),
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    );
    let (l, r) = (leaf_hash(b""), leaf_hash(&[0]));
    assert_eq!(hex(&node_hash(&l, &r)), ROOTS[1]);
}

#[test]
fn roots_match_rfc6962_vectors() {
    let t = vector_tree();
    let raw: Vec<Vec<u8>> = LEAVES.iter().map(|l| unhex(l).unwrap()).collect();
    for n in 1..=8 {
        assert_eq!(hex(&t.root_at(n)), ROOTS[n as usize - 1], "root of {n}");
        assert_eq!(hex(&naive_mth(&raw[..n as usize])), ROOTS[n as usize - 1]);
    }
}

#[test]
fn compact_range_matches_naive_for_many_sizes() {
    for n in 0..130 {
        let d = data(n);
        let mut edge = CompactRange::default();
        for x in &d {
            edge.push(leaf_hash(x), |_, _, _| {});
        }
        assert_eq!(edge.root(), naive_mth(&d), "n={n}");
    }
}

#[test]
fn published_inclusion_proofs() {
    let t = vector_tree();
    for (index, size, path) in INCLUSION {
        let want = hs(path);
        assert_eq!(
            inclusion_proof(&t, index, size).unwrap(),
            want,
            "{index}/{size}"
        );
        let leaf = leaf_hash(&unhex(LEAVES[index as usize]).unwrap());
        verify_inclusion(&leaf, index, size, &want, &h(ROOTS[size as usize - 1])).unwrap();
    }
}

#[test]
fn published_consistency_proofs() {
    let t = vector_tree();
    for (old, new, path) in CONSISTENCY {
        let want = hs(path);
        assert_eq!(
            consistency_proof(&t, old, new).unwrap(),
            want,
            "{old}->{new}"
        );
        verify_consistency(
            old,
            new,
            &h(ROOTS[old as usize - 1]),
            &h(ROOTS[new as usize - 1]),
            &want,
        )
        .unwrap();
    }
}

/// RFC 9162 inclusion walk, returning the computed root (independent copy for the equivalence check).
fn walk_inclusion(leaf: Hash, index: u64, size: u64, proof: &[Hash]) -> Option<Hash> {
    if index >= size {
        return None;
    }
    let (mut f, mut s, mut r) = (index, size - 1, leaf);
    for p in proof {
        if s == 0 {
            return None;
        }
        if f % 2 == 1 || f == s {
            r = node_hash(p, &r);
            while f % 2 == 0 && f != 0 {
                f /= 2;
                s /= 2;
            }
        } else {
            r = node_hash(&r, p);
        }
        f /= 2;
        s /= 2;
    }
    (s == 0).then_some(r)
}

/// A size ±1 mutation is undetectable by construction when the verifier hashes the very same way for
/// both sizes (e.g. leaf 0 of 3 vs of 4): RFC 6962 proofs do not bind the size on their own, the signed
/// checkpoint does. Such mutations are skipped; every other one must fail.
fn same_walk(index: u64, size: u64, other_index: u64, other_size: u64, len: usize) -> bool {
    let q: Vec<Hash> = (0..len)
        .map(|i| leaf_hash(format!("random {i}").as_bytes()))
        .collect();
    let leaf = leaf_hash(b"x");
    let a = walk_inclusion(leaf, index, size, &q);
    a.is_some() && a == walk_inclusion(leaf, other_index, other_size, &q)
}

/// Every mutation transparency-dev/merkle's `corruptInclusionProof` makes must fail.
fn inclusion_mutations(
    index: u64,
    size: u64,
    proof: &[Hash],
    root: Hash,
    leaf: Hash,
) -> Vec<(String, u64, u64, Vec<Hash>, Hash, Hash)> {
    let some: Hash = h("abacaba000000000000000000000000000000000000000000060061e00123456");
    let p = proof.to_vec();
    let mut m = vec![
        (
            "index-1".to_owned(),
            index.wrapping_sub(1),
            size,
            p.clone(),
            root,
            leaf,
        ),
        ("index+1".into(), index + 1, size, p.clone(), root, leaf),
        ("index^2".into(), index ^ 2, size, p.clone(), root, leaf),
        ("size*2".into(), index, size * 2, p.clone(), root, leaf),
        ("size/2".into(), index, size / 2, p.clone(), root, leaf),
        ("size+1".into(), index, size + 1, p.clone(), root, leaf),
        ("size-1".into(), index, size - 1, p.clone(), root, leaf),
        (
            "wrong leaf".into(),
            index,
            size,
            p.clone(),
            root,
            leaf_hash(b"WrongLeaf"),
        ),
        (
            "empty root".into(),
            index,
            size,
            p.clone(),
            empty_root(),
            leaf,
        ),
        ("random root".into(), index, size, p.clone(), some, leaf),
        (
            "trailing zero".into(),
            index,
            size,
            [&p[..], &[[0u8; 32]]].concat(),
            root,
            leaf,
        ),
        (
            "trailing root".into(),
            index,
            size,
            [&p[..], &[root]].concat(),
            root,
            leaf,
        ),
        (
            "preceding zero".into(),
            index,
            size,
            [&[[0u8; 32]], &p[..]].concat(),
            root,
            leaf,
        ),
        (
            "preceding root".into(),
            index,
            size,
            [&[root], &p[..]].concat(),
            root,
            leaf,
        ),
    ];
    for i in 0..p.len() {
        let mut q = p.clone();
        q[i][0] ^= 8;
        m.push((format!("flip proof[{i}]"), index, size, q, root, leaf));
    }
    if !p.is_empty() {
        m.push((
            "removed last".into(),
            index,
            size,
            p[..p.len() - 1].to_vec(),
            root,
            leaf,
        ));
    }
    if p.len() > 1 {
        let q = [&[p[0], some], &p[1..]].concat();
        m.push(("inserted".into(), index, size, q, root, leaf));
    }
    // Mutations that happen to describe the same valid statement are not corruptions.
    m.retain(|(_, i, s, q, r, l)| {
        !(*i == index && *s == size && q == &p && *r == root && *l == leaf)
    });
    m
}

#[test]
fn inclusion_corruption_table() {
    let mut checked = 0;
    for size in 1..=40u64 {
        let t = tree_of(size as usize);
        let root = t.root_at(size);
        for index in 0..size {
            let proof = inclusion_proof(&t, index, size).unwrap();
            let leaf = leaf_hash(format!("leaf {index}").as_bytes());
            verify_inclusion(&leaf, index, size, &proof, &root).unwrap();
            for (what, i, s, q, r, l) in inclusion_mutations(index, size, &proof, root, leaf) {
                if q == proof && r == root && l == leaf && same_walk(index, size, i, s, proof.len())
                {
                    continue;
                }
                assert!(
                    verify_inclusion(&l, i, s, &q, &r).is_err(),
                    "{what} verified for index {index} size {size}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 10_000, "{checked}");
}

#[test]
fn consistency_corruption_table() {
    let some: Hash = h("abacaba000000000000000000000000000000000000000000060061e00123456");
    let mut checked = 0;
    for new in 2..=36u64 {
        let t = tree_of(new as usize);
        let r2 = t.root_at(new);
        for old in 1..new {
            let r1 = t.root_at(old);
            let p = consistency_proof(&t, old, new).unwrap();
            verify_consistency(old, new, &r1, &r2, &p).unwrap();
            let mut m: Vec<(String, u64, u64, Hash, Hash, Vec<Hash>)> = vec![
                ("old-1".into(), old - 1, new, r1, r2, p.clone()),
                ("old+1".into(), old + 1, new, r1, r2, p.clone()),
                ("old^2".into(), old ^ 2, new, r1, r2, p.clone()),
                ("new*2".into(), old, new * 2, r1, r2, p.clone()),
                ("new/2".into(), old, new / 2, r1, r2, p.clone()),
                ("new+1".into(), old, new + 1, r1, r2, p.clone()),
                ("new-1".into(), old, new - 1, r1, r2, p.clone()),
                ("wrong root1".into(), old, new, some, r2, p.clone()),
                ("wrong root2".into(), old, new, r1, some, p.clone()),
                ("swapped roots".into(), old, new, r2, r1, p.clone()),
                ("empty proof".into(), old, new, r1, r2, vec![]),
                (
                    "trailing zero".into(),
                    old,
                    new,
                    r1,
                    r2,
                    [&p[..], &[[0u8; 32]]].concat(),
                ),
                (
                    "trailing root1".into(),
                    old,
                    new,
                    r1,
                    r2,
                    [&p[..], &[r1]].concat(),
                ),
                (
                    "trailing root2".into(),
                    old,
                    new,
                    r1,
                    r2,
                    [&p[..], &[r2]].concat(),
                ),
                (
                    "preceding zero".into(),
                    old,
                    new,
                    r1,
                    r2,
                    [&[[0u8; 32]], &p[..]].concat(),
                ),
                (
                    "preceding root1".into(),
                    old,
                    new,
                    r1,
                    r2,
                    [&[r1], &p[..]].concat(),
                ),
                (
                    "preceding root2".into(),
                    old,
                    new,
                    r1,
                    r2,
                    [&[r2], &p[..]].concat(),
                ),
                (
                    "preceding p0".into(),
                    old,
                    new,
                    r1,
                    r2,
                    [&[p[0]], &p[..]].concat(),
                ),
                (
                    "truncated".into(),
                    old,
                    new,
                    r1,
                    r2,
                    p[..p.len() - 1].to_vec(),
                ),
            ];
            for i in 0..p.len() {
                let mut q = p.clone();
                q[i][0] ^= 16;
                m.push((format!("flip proof[{i}]"), old, new, r1, r2, q));
            }
            for (what, o, n, a, b, q) in m {
                if o == old && n == new && a == r1 && b == r2 && q == p {
                    continue;
                }
                // new±1 with an unchanged proof: undetectable exactly when new and new±1 share every
                // level the walk visits (the sizes only differ below the proof's reach).
                if q == p && a == r1 && b == r2 && o == old && same_consistency_walk(old, new, n) {
                    continue;
                }
                assert!(
                    verify_consistency(o, n, &a, &b, &q).is_err(),
                    "{what} verified for {old}->{new}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 10_000, "{checked}");
}

/// Whether the RFC 9162 consistency walk takes the same steps for (old, new) and (old, other).
fn same_consistency_walk(old: u64, new: u64, other: u64) -> bool {
    fn steps(old: u64, new: u64) -> Option<Vec<u8>> {
        if old == 0 || old >= new {
            return None;
        }
        let (mut f, mut s) = (old - 1, new - 1);
        while f % 2 == 1 {
            f /= 2;
            s /= 2;
        }
        let mut out = Vec::new();
        while s != 0 {
            if f % 2 == 1 || f == s {
                out.push(1);
                while f % 2 == 0 && f != 0 {
                    f /= 2;
                    s /= 2;
                }
            } else {
                out.push(0);
            }
            f /= 2;
            s /= 2;
        }
        Some(out)
    }
    steps(old, new).is_some() && steps(old, new) == steps(old, other)
}

#[test]
fn consistency_edge_cases() {
    let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
    assert!(verify_consistency(0, 0, &a, &a, &[]).is_ok());
    assert!(verify_consistency(1, 1, &a, &a, &[]).is_ok());
    assert!(verify_consistency(0, 0, &a, &b, &[]).is_err());
    assert!(verify_consistency(1, 1, &a, &a, &[a]).is_err());
    assert!(verify_consistency(0, 1, &a, &b, &[]).is_err());
    assert!(verify_consistency(2, 1, &a, &b, &[]).is_err());
    assert!(verify_consistency(1, 2, &a, &b, &[]).is_err());
    assert!(verify_inclusion(&a, 0, 0, &[], &a).is_err());
    assert!(verify_inclusion(&a, 2, 1, &[], &a).is_err());
    assert!(verify_inclusion(&a, 0, 1, &[], &a).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_valid_proofs_verify(size in 1u64..300, a in any::<u64>(), b in any::<u64>()) {
        let t = tree_of(size as usize);
        let root = t.root_at(size);
        let index = a % size;
        let proof = inclusion_proof(&t, index, size).unwrap();
        let leaf = leaf_hash(format!("leaf {index}").as_bytes());
        prop_assert!(verify_inclusion(&leaf, index, size, &proof, &root).is_ok());
        let old = 1 + b % size;
        let cp = consistency_proof(&t, old, size).unwrap();
        prop_assert!(verify_consistency(old, size, &t.root_at(old), &root, &cp).is_ok());
    }
}
