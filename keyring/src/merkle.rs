//! RFC 6962 Merkle tree hashing over sealed chunks: leaf and node hashes, tree roots (batch and
//! streaming), and inclusion proofs.
//!
//! A blob's integrity index is the tree whose leaves are `leaf_hash(sealed chunk)` in chunk order;
//! the manifest keeps its root. Proof types are thin wrappers over concatenated hashes so that
//! consistency proofs can be added beside [`InclusionProof`] with the same shape.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};

/// A SHA-256 output: a leaf hash, an interior node hash or a root.
pub type Hash = [u8; 32];

/// The deepest proof a `u64`-sized tree can need.
const MAX_PROOF_HASHES: usize = 64;

/// SHA-256(0x00 ‖ data): the domain byte keeps a leaf from ever equalling an interior node.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Constant-time equality of two hashes (roots, leaves), for every comparison against a trusted
/// value.
pub fn hash_eq(a: &Hash, b: &Hash) -> bool {
    a.ct_eq(b).into()
}

/// Largest power of two strictly less than `n`; RFC 6962's split point. Requires `n >= 2`.
fn split(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// RFC 6962 Merkle Tree Hash over leaf hashes (`leaves[i] = leaf_hash(chunk i)`).
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [leaf] => *leaf,
        _ => {
            let (l, r) = leaves.split_at(split(leaves.len()));
            node_hash(&root(l), &root(r))
        }
    }
}

/// Computes [`root`] over leaves pushed one at a time, keeping O(log n) hashes.
///
/// Holds the roots of the perfect subtrees that make up the leaves so far, one per set bit of
/// `len`, largest (leftmost) first; merging them right to left at the end gives the RFC 6962
/// root, whose left subtrees are always perfect.
#[derive(Clone, Debug, Default)]
pub struct RootBuilder {
    stack: Vec<Hash>,
    len: u64,
}

impl RootBuilder {
    /// An empty builder.
    pub fn new() -> RootBuilder {
        RootBuilder::default()
    }

    /// Appends the next leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut n = self.len;
        // Each trailing one bit of `len` is a perfect subtree of the same height as `h`.
        while n & 1 == 1 {
            let left = self
                .stack
                .pop()
                .expect("Invariant: one stack entry per set bit of len");
            h = node_hash(&left, &h);
            n >>= 1;
        }
        self.stack.push(h);
        self.len += 1;
    }

    /// Number of leaves pushed.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no leaf has been pushed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The root of the leaves pushed so far.
    pub fn finish(self) -> Hash {
        let mut rest = self.stack.into_iter().rev();
        match rest.next() {
            None => empty_root(),
            Some(last) => rest.fold(last, |acc, left| node_hash(&left, &acc)),
        }
    }
}

/// The audit path of one leaf: the sibling hashes from the leaf up to the root (RFC 6962 §2.1.1
/// `PATH`, RFC 9162 §2.1.3).
///
/// Encoded as the concatenated 32-byte hashes, leaf end first (0 to 64 hashes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InclusionProof {
    bytes: Vec<u8>,
}

impl InclusionProof {
    /// The proof that leaf `index` is in the tree over `leaves`.
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] if `index >= leaves.len()`.
    pub fn generate(leaves: &[Hash], index: u64) -> Result<InclusionProof> {
        let out_of_range = Error::IndexOutOfRange {
            index,
            size: leaves.len() as u64,
        };
        let m = usize::try_from(index).map_err(|_| out_of_range.clone())?;
        if m >= leaves.len() {
            return Err(out_of_range);
        }
        let mut path = Vec::new();
        collect_path(m, leaves, &mut path);
        Ok(InclusionProof {
            bytes: path.concat(),
        })
    }

    /// Checks that `leaf` (a leaf *hash*) sits at `index` in the tree of `tree_size` leaves
    /// with root `root`, following RFC 9162 §2.1.3.2. The final root comparison is constant
    /// time.
    ///
    /// # Errors
    /// [`Error::InvalidProof`] for any mismatch, including `index >= tree_size` and a proof of
    /// the wrong length.
    pub fn verify(&self, leaf: &Hash, index: u64, tree_size: u64, root: &Hash) -> Result<()> {
        if index >= tree_size {
            return Err(Error::InvalidProof);
        }
        let (mut f_n, mut s_n) = (index, tree_size - 1);
        let mut r = *leaf;
        for p in self.hashes() {
            if s_n == 0 {
                return Err(Error::InvalidProof);
            }
            if f_n & 1 == 1 || f_n == s_n {
                r = node_hash(&p, &r);
                if f_n & 1 == 0 {
                    while f_n & 1 == 0 && f_n != 0 {
                        f_n >>= 1;
                        s_n >>= 1;
                    }
                }
            } else {
                r = node_hash(&r, &p);
            }
            f_n >>= 1;
            s_n >>= 1;
        }
        if s_n == 0 && hash_eq(&r, root) {
            Ok(())
        } else {
            Err(Error::InvalidProof)
        }
    }

    /// The concatenated path hashes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Parses concatenated path hashes.
    ///
    /// # Errors
    /// [`Error::Malformed`] unless the length is a multiple of 32 and at most 64 hashes.
    pub fn from_bytes(bytes: &[u8]) -> Result<InclusionProof> {
        if !bytes.chunks_exact(32).remainder().is_empty() || bytes.len() / 32 > MAX_PROOF_HASHES {
            return Err(Error::Malformed("inclusion proof: bad length"));
        }
        Ok(InclusionProof {
            bytes: bytes.to_vec(),
        })
    }

    /// The path hashes, leaf end first.
    pub fn hashes(&self) -> impl Iterator<Item = Hash> + '_ {
        self.bytes.chunks_exact(32).map(|c| {
            let mut h = [0u8; 32];
            h.copy_from_slice(c);
            h
        })
    }

    /// Number of hashes in the path.
    pub fn len(&self) -> usize {
        self.bytes.len() / 32
    }

    /// Whether the path is empty (the proof for a one-leaf tree).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// RFC 6962 `PATH(m, D[n])`, deepest sibling first. Requires `m < leaves.len()`.
fn collect_path(m: usize, leaves: &[Hash], out: &mut Vec<Hash>) {
    if leaves.len() <= 1 {
        return;
    }
    let k = split(leaves.len());
    let (l, r) = leaves.split_at(k);
    if m < k {
        collect_path(m, l, out);
        out.push(root(r));
    } else {
        collect_path(m - k, r, out);
        out.push(root(l));
    }
}

#[cfg(test)]
mod tests {
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
}
