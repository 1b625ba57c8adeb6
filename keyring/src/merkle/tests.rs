//! Tests of `merkle`.

use super::*;
use proptest::prelude::*;

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn unhex32(s: &str) -> Hash {
    unhex(s).try_into().unwrap()
}

/// The RFC 6962 definition read literally, over raw entries rather than leaf hashes.
fn naive_mth(entries: &[Vec<u8>]) -> Hash {
    match entries.len() {
        0 => Sha256::digest(b"").into(),
        1 => {
            let mut h = Sha256::new();
            h.update([0u8]);
            h.update(&entries[0]);
            h.finalize().into()
        }
        n => {
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            let mut h = Sha256::new();
            h.update([1u8]);
            h.update(naive_mth(&entries[..k]));
            h.update(naive_mth(&entries[k..]));
            h.finalize().into()
        }
    }
}

fn entries(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| (i as u32).to_be_bytes().to_vec()).collect()
}

// Known answers from the Certificate Transparency reference implementation:
// google/certificate-transparency, cpp/merkletree/merkle_tree_test.cc (the "leaf inputs" and
// "root hashes" tables), carried over as transparency-dev/merkle testonly/constants.go
// (LeafInputs, RootHashes, EmptyRootHash).
const CT_LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];
const CT_ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

#[test]
fn ct_known_answers() {
    let leaves: Vec<Hash> = CT_LEAVES.iter().map(|l| leaf_hash(&unhex(l))).collect();
    for n in 0..=8 {
        let want = unhex32(CT_ROOTS[n]);
        assert_eq!(root(&leaves[..n]), want, "root of {n} leaves");
        let mut b = RootBuilder::new();
        leaves[..n].iter().for_each(|l| b.push(*l));
        assert_eq!(b.finish(), want, "streamed root of {n} leaves");
    }
}

#[test]
fn ct_known_inclusion_path() {
    // Same source: the audit path of leaf 0 in the 8-leaf tree.
    let leaves: Vec<Hash> = CT_LEAVES.iter().map(|l| leaf_hash(&unhex(l))).collect();
    let want = [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]
    .concat();
    let proof = InclusionProof::generate(&leaves, 0).unwrap();
    assert_eq!(hex::encode(proof.as_bytes()), want);
    proof
        .verify(&leaves[0], 0, 8, &unhex32(CT_ROOTS[8]))
        .unwrap();
}

#[test]
fn generate_rejects_out_of_range() {
    assert!(matches!(
        InclusionProof::generate(&[], 0),
        Err(Error::IndexOutOfRange { index: 0, size: 0 })
    ));
    let leaves = [leaf_hash(b"a")];
    assert!(InclusionProof::generate(&leaves, 1).is_err());
    let p = InclusionProof::generate(&leaves, 0).unwrap();
    assert!(p.is_empty());
    assert_eq!(p.verify(&leaves[0], 0, 1, &leaves[0]), Ok(()));
    assert_eq!(
        p.verify(&leaves[0], 1, 1, &leaves[0]),
        Err(Error::InvalidProof)
    );
    assert_eq!(
        p.verify(&leaves[0], 0, 0, &leaves[0]),
        Err(Error::InvalidProof)
    );
}

#[test]
fn proof_bytes() {
    assert!(InclusionProof::from_bytes(&[0u8; 31]).is_err());
    assert!(InclusionProof::from_bytes(&[0u8; 65 * 32]).is_err());
    let p = InclusionProof::from_bytes(&[7u8; 64]).unwrap();
    assert_eq!(p.len(), 2);
    assert_eq!(p.as_bytes(), &[7u8; 64][..]);
}

proptest! {
    #[test]
    fn builder_matches_root_and_naive(n in 0usize..300) {
        let e = entries(n);
        let leaves: Vec<Hash> = e.iter().map(|d| leaf_hash(d)).collect();
        let mut b = RootBuilder::new();
        leaves.iter().for_each(|l| b.push(*l));
        prop_assert_eq!(b.len(), n as u64);
        let want = naive_mth(&e);
        prop_assert_eq!(root(&leaves), want);
        prop_assert_eq!(b.finish(), want);
    }
}

proptest! {
    // Each case checks every index of its tree, O(n²) hashing; fewer cases keep it quick.
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn inclusion_proofs(n in 1usize..300, salt in any::<u8>()) {
        let leaves: Vec<Hash> = entries(n).iter().map(|d| leaf_hash(&[d.as_slice(), &[salt]].concat())).collect();
        let r = root(&leaves);
        let size = n as u64;
        for i in 0..size {
            let p = InclusionProof::generate(&leaves, i).unwrap();
            let leaf = leaves[i as usize];
            prop_assert_eq!(p.verify(&leaf, i, size, &r), Ok(()));
            let p = InclusionProof::from_bytes(p.as_bytes()).unwrap();
            prop_assert_eq!(p.verify(&leaf, i, size, &r), Ok(()));
            // Wrong leaf, index or root. (A wrong size alone may verify: the root is what binds the
            // size, as in RFC 9162.)
            prop_assert!(p.verify(&leaf_hash(b"other"), i, size, &r).is_err());
            if n > 1 {
                prop_assert!(p.verify(&leaf, (i + 1) % size, size, &r).is_err());
            }
            let mut bad_root = r;
            bad_root[0] ^= 1;
            prop_assert!(p.verify(&leaf, i, size, &bad_root).is_err());
            // Truncated or extended path.
            if !p.is_empty() {
                let cut = InclusionProof::from_bytes(&p.as_bytes()[32..]).unwrap();
                prop_assert!(cut.verify(&leaf, i, size, &r).is_err());
            }
            let longer = InclusionProof::from_bytes(&[p.as_bytes(), &[0u8; 32]].concat()).unwrap();
            prop_assert!(longer.verify(&leaf, i, size, &r).is_err());
        }
    }
}

/// RFC 6962 §2.1.1 `PATH(m, D[n])` read literally, over raw entries.
fn naive_path(m: usize, d: &[Vec<u8>]) -> Vec<Hash> {
    if d.len() <= 1 {
        return Vec::new();
    }
    let k = naive_split(d.len());
    let (mut p, sibling) = if m < k {
        (naive_path(m, &d[..k]), naive_mth(&d[k..]))
    } else {
        (naive_path(m - k, &d[k..]), naive_mth(&d[..k]))
    };
    p.push(sibling);
    p
}

/// RFC 6962 §2.1.2 `SUBPROOF(m, D[n], b)` read literally, over raw entries.
fn naive_subproof(m: usize, d: &[Vec<u8>], b: bool) -> Vec<Hash> {
    let n = d.len();
    if m == n {
        return if b { Vec::new() } else { vec![naive_mth(d)] };
    }
    let k = naive_split(n);
    let (mut p, sibling) = if m <= k {
        (naive_subproof(m, &d[..k], b), naive_mth(&d[k..]))
    } else {
        (naive_subproof(m - k, &d[k..], false), naive_mth(&d[..k]))
    };
    p.push(sibling);
    p
}

fn naive_split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

fn concat(hashes: &[Hash]) -> Vec<u8> {
    hashes.concat()
}

struct Vectors {
    leaves: Vec<Hash>,
    roots: Vec<Hash>,
    nodes: Vec<(u8, u64, Hash)>,
    inclusion: Vec<(u64, u64, Vec<Hash>)>,
    consistency: Vec<(u64, u64, Vec<Hash>)>,
}

fn proof_field(s: &str) -> Vec<Hash> {
    if s == "-" {
        return Vec::new();
    }
    s.split(',').map(unhex32).collect()
}

fn vectors() -> Vectors {
    let text = include_str!("../../testdata/tlog/rfc6962_vectors.txt");
    let mut v = Vectors {
        leaves: Vec::new(),
        roots: Vec::new(),
        nodes: Vec::new(),
        inclusion: Vec::new(),
        consistency: Vec::new(),
    };
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let f: Vec<&str> = line.split(' ').collect();
        match f[0] {
            "leaf" => v.leaves.push(leaf_hash(&unhex(f[1].trim_matches('-')))),
            "root" => {
                assert_eq!(f[1].parse::<usize>().unwrap(), v.roots.len());
                v.roots.push(unhex32(f[2]));
            }
            "node" => v
                .nodes
                .push((f[1].parse().unwrap(), f[2].parse().unwrap(), unhex32(f[3]))),
            "inclusion" => v.inclusion.push((
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                proof_field(f[3]),
            )),
            "consistency" => v.consistency.push((
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                proof_field(f[3]),
            )),
            other => panic!("unknown vector line kind {other}"),
        }
    }
    v
}

#[test]
fn rfc6962_vector_roots_and_nodes() {
    let v = vectors();
    assert_eq!((v.leaves.len(), v.roots.len()), (8, 9));
    for (n, want) in v.roots.iter().enumerate() {
        assert_eq!(&root(&v.leaves[..n]), want, "root of {n}");
        assert_eq!(&subtree_root(&v.leaves[..], 0, n as u64).unwrap(), want);
    }
    for (level, index, want) in &v.nodes {
        let src: &[Hash] = &v.leaves;
        assert_eq!(&src.perfect_root(*level, *index).unwrap(), want);
        let start = index << level;
        assert_eq!(
            &subtree_root(src, start, start + (1 << level)).unwrap(),
            want
        );
        let default = LeafFn(|i| src.leaf(i));
        assert_eq!(&default.perfect_root(*level, *index).unwrap(), want);
    }
}

/// What a probe changed, index, size, proof bytes, root, leaf.
type InclusionProbe = (&'static str, u64, u64, Vec<u8>, Hash, Hash);

/// What a probe changed, old size, new size, old root, new root, proof bytes.
type ConsistencyProbe = (&'static str, u64, u64, Hash, Hash, Vec<u8>);

/// Mutations of a good inclusion proof, after transparency-dev/merkle's
/// `corruptInclusionProof`; every one must fail.
fn inclusion_probes(
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
    leaf: &Hash,
) -> Vec<InclusionProbe> {
    let some: Hash = unhex32("abacaba000000000000000000000000000000000000000000060061e00123456");
    let p = concat(proof);
    let mut out = vec![
        (
            "index - 1",
            index.wrapping_sub(1),
            size,
            p.clone(),
            *root,
            *leaf,
        ),
        ("index + 1", index + 1, size, p.clone(), *root, *leaf),
        ("index ^ 2", index ^ 2, size, p.clone(), *root, *leaf),
        ("size * 2", index, size * 2, p.clone(), *root, *leaf),
        ("size / 2", index, size / 2, p.clone(), *root, *leaf),
        (
            "wrong leaf",
            index,
            size,
            p.clone(),
            *root,
            leaf_hash(b"WrongLeaf"),
        ),
        ("empty root", index, size, p.clone(), empty_root(), *leaf),
        ("random root", index, size, p.clone(), some, *leaf),
        (
            "trailing zero hash",
            index,
            size,
            [p.as_slice(), &[0; 32]].concat(),
            *root,
            *leaf,
        ),
        (
            "trailing root",
            index,
            size,
            [p.as_slice(), root].concat(),
            *root,
            *leaf,
        ),
        (
            "preceding root",
            index,
            size,
            [root.as_slice(), &p].concat(),
            *root,
            *leaf,
        ),
    ];
    for i in 0..proof.len() {
        let mut q = p.clone();
        q[i * 32] ^= 8;
        out.push(("modified bit", index, size, q, *root, *leaf));
    }
    if !proof.is_empty() {
        out.push((
            "removed component",
            index,
            size,
            p[..p.len() - 32].to_vec(),
            *root,
            *leaf,
        ));
    }
    if proof.len() > 1 {
        let q = [&p[..32], some.as_slice(), &p[32..]].concat();
        out.push(("inserted component", index, size, q, *root, *leaf));
    }
    out
}

#[test]
fn rfc6962_vector_inclusion_proofs() {
    let v = vectors();
    for (index, size, want) in &v.inclusion {
        let got = InclusionProof::generate_from(&v.leaves[..], *index, *size).unwrap();
        assert_eq!(got.as_bytes(), concat(want), "PATH({index}, {size})");
        let (leaf, r) = (v.leaves[*index as usize], v.roots[*size as usize]);
        got.verify(&leaf, *index, *size, &r).unwrap();
        for (what, i, n, p, r, l) in inclusion_probes(*index, *size, want, &r, &leaf) {
            let p = InclusionProof::from_bytes(&p).unwrap();
            assert_eq!(
                p.verify(&l, i, n, &r),
                Err(Error::InvalidProof),
                "{what}: PATH({index}, {size})"
            );
        }
    }
    // Upstream's {0, 0} case: no proof exists for an empty tree.
    assert!(InclusionProof::generate_from(&v.leaves[..], 0, 0).is_err());
    let empty = InclusionProof::from_bytes(&[]).unwrap();
    assert!(empty.verify(&v.leaves[0], 0, 0, &empty_root()).is_err());
}

/// Mutations of a good consistency proof, after transparency-dev/merkle's
/// `corruptConsistencyProof`; every one must fail.
fn consistency_probes(
    m: u64,
    n: u64,
    r1: &Hash,
    r2: &Hash,
    proof: &[Hash],
) -> Vec<ConsistencyProbe> {
    let p = concat(proof);
    let wrong = leaf_hash(b"WrongRoot");
    let mut out = vec![
        ("old - 1", m - 1, n, *r1, *r2, p.clone()),
        ("old + 1", m + 1, n, *r1, *r2, p.clone()),
        ("old ^ 2", m ^ 2, n, *r1, *r2, p.clone()),
        ("new * 2", m, n * 2, *r1, *r2, p.clone()),
        ("new / 2", m, n / 2, *r1, *r2, p.clone()),
        ("wrong old root", m, n, wrong, *r2, p.clone()),
        ("wrong new root", m, n, *r1, wrong, p.clone()),
        ("swapped roots", m, n, *r2, *r1, p.clone()),
        ("empty proof", m, n, *r1, *r2, Vec::new()),
        (
            "trailing zero hash",
            m,
            n,
            *r1,
            *r2,
            [p.as_slice(), &[0; 32]].concat(),
        ),
        (
            "trailing old root",
            m,
            n,
            *r1,
            *r2,
            [p.as_slice(), r1].concat(),
        ),
        (
            "trailing new root",
            m,
            n,
            *r1,
            *r2,
            [p.as_slice(), r2].concat(),
        ),
        (
            "preceding old root",
            m,
            n,
            *r1,
            *r2,
            [r1.as_slice(), &p].concat(),
        ),
        (
            "preceding new root",
            m,
            n,
            *r1,
            *r2,
            [r2.as_slice(), &p].concat(),
        ),
        (
            "preceding proof[0]",
            m,
            n,
            *r1,
            *r2,
            [&p[..32], &p].concat(),
        ),
        ("truncated", m, n, *r1, *r2, p[..p.len() - 32].to_vec()),
    ];
    for i in 0..proof.len() {
        let mut q = p.clone();
        q[i * 32] ^= 16;
        out.push(("modified bit", m, n, *r1, *r2, q));
    }
    out
}

#[test]
fn rfc6962_vector_consistency_proofs() {
    let v = vectors();
    for (m, n, want) in &v.consistency {
        let got = ConsistencyProof::generate(&v.leaves, *m, *n).unwrap();
        assert_eq!(got.as_bytes(), concat(want), "PROOF({m}, {n})");
        let (r1, r2) = (v.roots[*m as usize], v.roots[*n as usize]);
        got.verify(*m, *n, &r1, &r2).unwrap();
        if want.is_empty() {
            continue;
        }
        for (what, a, b, x, y, p) in consistency_probes(*m, *n, &r1, &r2, want) {
            let p = ConsistencyProof::from_bytes(&p).unwrap();
            assert_eq!(
                p.verify(a, b, &x, &y),
                Err(Error::InvalidProof),
                "{what}: PROOF({m}, {n})"
            );
        }
    }
}

#[test]
fn consistency_edge_cases() {
    // After transparency-dev/merkle's TestVerifyConsistency table, with the empty-tree
    // root required for size 0.
    let (a, b) = (leaf_hash(b"1"), leaf_hash(b"2"));
    let none = ConsistencyProof::from_bytes(&[]).unwrap();
    let one = ConsistencyProof::from_bytes(&empty_root()).unwrap();
    let e = empty_root();
    assert!(none.verify(0, 0, &a, &b).is_err());
    assert!(none.verify(1, 1, &a, &b).is_err());
    assert!(none.verify(0, 0, &e, &e).is_ok());
    assert!(none.verify(0, 1, &e, &b).is_ok());
    assert!(
        none.verify(0, 1, &a, &b).is_err(),
        "size 0 needs the empty root"
    );
    assert!(none.verify(1, 1, &b, &b).is_ok());
    assert!(none.verify(1, 0, &a, &b).is_err());
    assert!(none.verify(2, 1, &a, &b).is_err());
    assert!(none.verify(1, 2, &a, &b).is_err());
    assert!(one.verify(0, 0, &e, &e).is_err());
    assert!(one.verify(0, 1, &e, &e).is_err());
    assert!(one.verify(1, 1, &e, &e).is_err());
    assert!(ConsistencyProof::generate(&[a, b], 2, 1).is_err());
    assert!(ConsistencyProof::generate(&[a, b], 1, 3).is_err());
    assert!(ConsistencyProof::generate(&[a, b], 0, 2)
        .unwrap()
        .is_empty());
    assert!(ConsistencyProof::generate(&[a, b], 2, 2)
        .unwrap()
        .is_empty());
    assert!(ConsistencyProof::from_bytes(&[0; 33]).is_err());
    assert!(ConsistencyProof::from_bytes(&[0; 66 * 32]).is_err());
    assert_eq!(
        ConsistencyProof::from_bytes(&[0; 65 * 32]).unwrap().len(),
        65
    );
}

#[test]
fn sources_and_subtree_roots() {
    let leaves: Vec<Hash> = entries(37).iter().map(|e| leaf_hash(e)).collect();
    // A closure source with its own error type, and a fallible read.
    #[derive(Debug, PartialEq)]
    enum StoreError {
        Gone,
        Keyring(Error),
    }
    impl From<Error> for StoreError {
        fn from(e: Error) -> StoreError {
            StoreError::Keyring(e)
        }
    }
    let store = LeafFn(|i: u64| leaves.get(i as usize).copied().ok_or(StoreError::Gone));
    for i in 0..37 {
        assert_eq!(
            InclusionProof::generate_from(&store, i, 37).unwrap(),
            InclusionProof::generate(&leaves, i).unwrap()
        );
    }
    assert_eq!(
        ConsistencyProof::generate_from(&store, 5, 37).unwrap(),
        ConsistencyProof::generate(&leaves, 5, 37).unwrap()
    );
    assert_eq!(
        InclusionProof::generate_from(&store, 3, 38),
        Err(StoreError::Gone)
    );
    assert_eq!(
        InclusionProof::generate_from(&store, 38, 38),
        Err(StoreError::Keyring(Error::IndexOutOfRange {
            index: 38,
            size: 38
        }))
    );
    assert!(subtree_root(&leaves[..], 5, 4).is_err());
    assert_eq!(subtree_root(&leaves[..], 5, 5).unwrap(), empty_root());
    assert!(leaves[..].perfect_root(6, 0).is_err());
    assert!(leaves[..].perfect_root(63, 3).is_err());
    assert!(leaves[..].perfect_root(0, u64::MAX).is_err());
}

#[test]
fn perfect_root_override_is_used() {
    // A source that knows every perfect subtree root (as tiles would) and refuses to read
    // leaves that a proof should not need.
    use std::cell::Cell;
    let leaves: Vec<Hash> = entries(1000).iter().map(|e| leaf_hash(e)).collect();
    struct Stored<'a> {
        leaves: &'a [Hash],
        reads: Cell<u64>,
    }
    impl LeafSource for Stored<'_> {
        type Error = Error;
        fn leaf(&self, index: u64) -> Result<Hash> {
            self.reads.set(self.reads.get() + 1);
            self.leaves.leaf(index)
        }
        fn perfect_root(&self, height: u8, index: u64) -> Result<Hash> {
            self.reads.set(self.reads.get() + 1);
            self.leaves.perfect_root(height, index)
        }
    }
    let s = Stored {
        leaves: &leaves,
        reads: Cell::new(0),
    };
    let p = InclusionProof::generate_from(&s, 777, 1000).unwrap();
    assert_eq!(p, InclusionProof::generate(&leaves, 777).unwrap());
    // One stored read per perfect piece: far fewer than the 1000 leaves.
    assert!(s.reads.get() < 40, "{} reads", s.reads.get());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn inclusion_matches_reference(
        (n, i) in (1usize..2000).prop_flat_map(|n| (Just(n), 0..n)),
        other in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
    ) {
        let e = entries(n);
        let leaves: Vec<Hash> = e.iter().map(|d| leaf_hash(d)).collect();
        let want = naive_path(i, &e);
        let p = InclusionProof::generate(&leaves, i as u64).unwrap();
        prop_assert_eq!(p.as_bytes().to_vec(), concat(&want));
        let r = naive_mth(&e);
        let size = n as u64;
        prop_assert_eq!(p.verify(&leaves[i], i as u64, size, &r), Ok(()));
        // Another (index, size) with that tree's true root accepts only its own proof.
        let n2 = other.index(2000) + 1;
        let i2 = other.index(n2);
        if n2 <= n {
            let r2 = root(&leaves[..n2]);
            if p.verify(&leaves[i], i2 as u64, n2 as u64, &r2).is_ok() {
                prop_assert_eq!((i2, n2), (i, n));
            }
        }
        // A flipped bit anywhere in the proof fails.
        if !p.is_empty() {
            let mut bad = p.as_bytes().to_vec();
            let bit = flip.index(bad.len() * 8);
            bad[bit / 8] ^= 1 << (bit % 8);
            let bad = InclusionProof::from_bytes(&bad).unwrap();
            prop_assert!(bad.verify(&leaves[i], i as u64, size, &r).is_err());
        }
        let mut bad_root = r;
        bad_root[flip.index(32)] ^= 0x80;
        prop_assert!(p.verify(&leaves[i], i as u64, size, &bad_root).is_err());
    }

    #[test]
    fn consistency_matches_reference(
        (n, m) in (1usize..2000).prop_flat_map(|n| (Just(n), 0..=n)),
        other in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
    ) {
        let e = entries(n);
        let leaves: Vec<Hash> = e.iter().map(|d| leaf_hash(d)).collect();
        let want = if m == 0 { Vec::new() } else { naive_subproof(m, &e, true) };
        let p = ConsistencyProof::generate(&leaves, m as u64, n as u64).unwrap();
        prop_assert_eq!(p.as_bytes().to_vec(), concat(&want));
        let (r1, r2) = (naive_mth(&e[..m]), naive_mth(&e));
        prop_assert_eq!(p.verify(m as u64, n as u64, &r1, &r2), Ok(()));
        let p = ConsistencyProof::from_bytes(p.as_bytes()).unwrap();
        prop_assert_eq!(p.verify(m as u64, n as u64, &r1, &r2), Ok(()));
        // Other sizes, each with its true root, accept only an identical proof.
        let n2 = other.index(n) + 1;
        let m2 = other.index(n2 + 1);
        if (m2, n2) != (m, n) {
            let ok = p.verify(m2 as u64, n2 as u64, &root(&leaves[..m2]), &root(&leaves[..n2]));
            if ok.is_ok() {
                let theirs = ConsistencyProof::generate(&leaves, m2 as u64, n2 as u64).unwrap();
                prop_assert_eq!(theirs, p.clone());
            }
        }
        // Wrong roots, tampered hashes, truncation and extension fail.
        let mut bad = r1;
        bad[flip.index(32)] ^= 1;
        if m > 0 {
            prop_assert!(p.verify(m as u64, n as u64, &bad, &r2).is_err());
        }
        // From the empty tree every tree is consistent: only m > 0 binds the new root.
        if m > 0 && m < n {
            let mut bad = r2;
            bad[flip.index(32)] ^= 1;
            prop_assert!(p.verify(m as u64, n as u64, &r1, &bad).is_err());
        }
        if !p.is_empty() {
            let mut b = p.as_bytes().to_vec();
            let bit = flip.index(b.len() * 8);
            b[bit / 8] ^= 1 << (bit % 8);
            let tampered = ConsistencyProof::from_bytes(&b).unwrap();
            prop_assert!(tampered.verify(m as u64, n as u64, &r1, &r2).is_err());
            let cut = ConsistencyProof::from_bytes(&p.as_bytes()[32..]).unwrap();
            prop_assert!(cut.verify(m as u64, n as u64, &r1, &r2).is_err());
        }
        let longer = ConsistencyProof::from_bytes(&[p.as_bytes(), &[0u8; 32]].concat()).unwrap();
        prop_assert!(longer.verify(m as u64, n as u64, &r1, &r2).is_err());
    }

    #[test]
    fn subtree_root_matches_reference(start in 0usize..300, len in 0usize..300) {
        let e = entries(start + len);
        let leaves: Vec<Hash> = e.iter().map(|d| leaf_hash(d)).collect();
        let got = subtree_root(&leaves[..], start as u64, (start + len) as u64).unwrap();
        prop_assert_eq!(got, naive_mth(&e[start..]));
    }
}
