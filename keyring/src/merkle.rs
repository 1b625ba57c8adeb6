//! RFC 6962 / RFC 9162 Merkle tree hashing: leaf and node hashes, tree roots (batch and
//! streaming), inclusion proofs and consistency proofs.
//!
//! Two trees use it: a blob's integrity index, whose leaves are `leaf_hash(sealed chunk)` in chunk
//! order (the manifest keeps its root), and the transparency log, whose leaves are the salted
//! entry commitments (checkpoints sign its root, see [`crate::checkpoint`]).
//!
//! Proof types are thin wrappers over concatenated 32-byte hashes. Proofs can be generated from a
//! slice of leaf hashes or from any [`LeafSource`], so the gateway can serve them from storage
//! without loading the whole tree.

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
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (u64::BITS - 1 - (n - 1).leading_zeros())
}

/// RFC 6962 Merkle Tree Hash over leaf hashes (`leaves[i] = leaf_hash(chunk i)`).
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [leaf] => *leaf,
        _ => {
            // Invariant: the split point is below `len`, so it fits a usize.
            let k = split(leaves.len() as u64) as usize;
            let (l, r) = leaves.split_at(k);
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
        InclusionProof::generate_from(leaves, index, leaves.len() as u64)
    }

    /// The proof that leaf `index` is in the tree of the first `size` leaves of `source`
    /// (RFC 9162 §2.1.3.1 `PATH(m, D[n])`).
    ///
    /// Reads O(size) leaves through the default [`LeafSource::perfect_root`]; fewer when the
    /// source overrides it with stored interior hashes.
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] (converted) if `index >= size`; any error of the source.
    pub fn generate_from<S: LeafSource + ?Sized>(
        source: &S,
        index: u64,
        size: u64,
    ) -> std::result::Result<InclusionProof, S::Error> {
        if index >= size {
            return Err(Error::IndexOutOfRange { index, size }.into());
        }
        let mut path = Vec::new();
        let (mut start, mut end) = (0, size);
        // Walk down from the root, recording the sibling of each subtree that holds `index`;
        // the proof lists them leaf end first, so the walk's order is reversed at the end.
        while end - start > 1 {
            let k = split(end - start);
            if index < start + k {
                path.push(subtree_root(source, start + k, end)?);
                end = start + k;
            } else {
                path.push(subtree_root(source, start, start + k)?);
                start += k;
            }
        }
        path.reverse();
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
        proof_hashes(&self.bytes)
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

/// Where proof generators read the tree from: leaf hashes by index and, optionally, stored roots
/// of perfect subtrees.
///
/// Implemented for a slice of leaf hashes and, through [`LeafFn`], for a closure. The gateway can
/// implement it over its private store (or over published tiles, whose hashes are perfect
/// subtree roots of height 8·level) so proofs need not load the whole log.
pub trait LeafSource {
    /// What a read can fail with. Index errors raised by the generators convert into it.
    type Error: From<Error>;

    /// The hash of leaf `index`.
    ///
    /// # Errors
    /// Whatever the source fails with, e.g. [`Error::IndexOutOfRange`] past its end.
    fn leaf(&self, index: u64) -> std::result::Result<Hash, Self::Error>;

    /// The root of the perfect subtree of `2^height` leaves starting at leaf `index << height`.
    ///
    /// The default hashes up from [`LeafSource::leaf`]; a source that stores interior hashes
    /// overrides it.
    ///
    /// # Errors
    /// Whatever the source fails with.
    fn perfect_root(&self, height: u8, index: u64) -> std::result::Result<Hash, Self::Error> {
        if height == 0 {
            return self.leaf(index);
        }
        let left = self.perfect_root(height - 1, index << 1)?;
        let right = self.perfect_root(height - 1, (index << 1) | 1)?;
        Ok(node_hash(&left, &right))
    }
}

impl LeafSource for [Hash] {
    type Error = Error;

    fn leaf(&self, index: u64) -> Result<Hash> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.get(i))
            .copied()
            .ok_or(Error::IndexOutOfRange {
                index,
                size: self.len() as u64,
            })
    }

    fn perfect_root(&self, height: u8, index: u64) -> Result<Hash> {
        let out_of_range = || Error::IndexOutOfRange {
            index,
            size: self.len() as u64,
        };
        let width = 1u64
            .checked_shl(u32::from(height))
            .ok_or_else(out_of_range)?;
        let start = index.checked_mul(width).ok_or_else(out_of_range)?;
        let end = start.checked_add(width).ok_or_else(out_of_range)?;
        match (usize::try_from(start), usize::try_from(end)) {
            (Ok(start), Ok(end)) => self.get(start..end).map(root).ok_or_else(out_of_range),
            _ => Err(out_of_range()),
        }
    }
}

/// A closure `Fn(index) -> Result<Hash, E>` used as a [`LeafSource`].
pub struct LeafFn<F>(pub F);

impl<F, E> LeafSource for LeafFn<F>
where
    F: Fn(u64) -> std::result::Result<Hash, E>,
    E: From<Error>,
{
    type Error = E;

    fn leaf(&self, index: u64) -> std::result::Result<Hash, E> {
        (self.0)(index)
    }
}

/// RFC 6962 `MTH(D[start:end])`: the root of the tree over leaves `start..end` of `source`.
///
/// Aligned power-of-two ranges go to [`LeafSource::perfect_root`]; others split at the largest
/// power of two below their length, as RFC 6962 does. An empty range gives [`empty_root`].
///
/// # Errors
/// [`Error::IndexOutOfRange`] (converted) if `start > end`; any error of the source.
pub fn subtree_root<S: LeafSource + ?Sized>(
    source: &S,
    start: u64,
    end: u64,
) -> std::result::Result<Hash, S::Error> {
    let n = end.checked_sub(start).ok_or(Error::IndexOutOfRange {
        index: start,
        size: end,
    })?;
    if n == 0 {
        return Ok(empty_root());
    }
    // Aligned: n is a power of two, so `start` is a multiple of it iff its low bits are clear.
    if n.is_power_of_two() && start & (n - 1) == 0 {
        // Invariant: n ≤ 2^63, so its log fits a u8.
        let height = n.trailing_zeros() as u8;
        return source.perfect_root(height, start >> height);
    }
    let k = split(n);
    let left = subtree_root(source, start, start + k)?;
    let right = subtree_root(source, start + k, end)?;
    Ok(node_hash(&left, &right))
}

/// The hashes of a proof, leaf end first.
fn proof_hashes(bytes: &[u8]) -> impl Iterator<Item = Hash> + '_ {
    bytes.chunks_exact(32).map(|c| {
        let mut h = [0u8; 32];
        h.copy_from_slice(c);
        h
    })
}

/// The longest consistency proof a `u64`-sized tree can need: one hash per level of the
/// `SUBPROOF` recursion plus the final subtree root.
const MAX_CONSISTENCY_HASHES: usize = MAX_PROOF_HASHES + 1;

/// A proof that the tree of `old_size` leaves is a prefix of the tree of `new_size` leaves (RFC
/// 9162 §2.1.4 `PROOF(m, D[n])`): what a witness or a client checks before accepting a newer
/// checkpoint.
///
/// Encoded as the concatenated 32-byte hashes in `SUBPROOF` order (0 to 65 hashes). The proof
/// from an empty tree, and from a tree to itself, is empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsistencyProof {
    bytes: Vec<u8>,
}

impl ConsistencyProof {
    /// The proof that the first `old_size` leaves are a prefix of the first `new_size`.
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] if `old_size > new_size` or `new_size > leaves.len()`.
    pub fn generate(leaves: &[Hash], old_size: u64, new_size: u64) -> Result<ConsistencyProof> {
        if new_size > leaves.len() as u64 {
            return Err(Error::IndexOutOfRange {
                index: new_size,
                size: leaves.len() as u64,
            });
        }
        ConsistencyProof::generate_from(leaves, old_size, new_size)
    }

    /// [`ConsistencyProof::generate`] over any [`LeafSource`] that holds at least `new_size`
    /// leaves.
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] (converted) if `old_size > new_size`; any error of the source.
    pub fn generate_from<S: LeafSource + ?Sized>(
        source: &S,
        old_size: u64,
        new_size: u64,
    ) -> std::result::Result<ConsistencyProof, S::Error> {
        if old_size > new_size {
            return Err(Error::IndexOutOfRange {
                index: old_size,
                size: new_size,
            }
            .into());
        }
        let mut path = Vec::new();
        if old_size > 0 && old_size < new_size {
            // SUBPROOF(m, D[start:end], b), unrolled: the recursion only ever descends into one
            // side, so it is a walk; siblings are recorded top-down and reversed at the end.
            let (mut m, mut start, mut end, mut complete) = (old_size, 0, new_size, true);
            loop {
                let n = end - start;
                if m == n {
                    if !complete {
                        path.push(subtree_root(source, start, end)?);
                    }
                    break;
                }
                let k = split(n);
                if m <= k {
                    path.push(subtree_root(source, start + k, end)?);
                    end = start + k;
                } else {
                    path.push(subtree_root(source, start, start + k)?);
                    start += k;
                    m -= k;
                    complete = false;
                }
            }
            path.reverse();
        }
        Ok(ConsistencyProof {
            bytes: path.concat(),
        })
    }

    /// Checks that `old_root` (of `old_size` leaves) and `new_root` (of `new_size` leaves) are
    /// roots of one append-only tree, following RFC 9162 §2.1.4.2. Root comparisons are
    /// constant time.
    ///
    /// Beyond the RFC, which assumes `0 < old_size < new_size`: equal sizes need an empty proof
    /// and equal roots, and a size-0 old tree needs an empty proof and the empty-tree root.
    ///
    /// # Errors
    /// [`Error::InvalidProof`] for any mismatch, including `old_size > new_size` and a proof of
    /// the wrong length.
    pub fn verify(
        &self,
        old_size: u64,
        new_size: u64,
        old_root: &Hash,
        new_root: &Hash,
    ) -> Result<()> {
        let ok = if old_size > new_size {
            false
        } else if old_size == new_size {
            self.is_empty() && hash_eq(old_root, new_root)
        } else if old_size == 0 {
            self.is_empty() && hash_eq(old_root, &empty_root())
        } else {
            self.verify_path(old_size, new_size, old_root, new_root)
        };
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidProof)
        }
    }

    /// RFC 9162 §2.1.4.2 steps 1–7, for `0 < first < second`.
    fn verify_path(&self, first: u64, second: u64, first_hash: &Hash, second_hash: &Hash) -> bool {
        // Step 1.
        if self.is_empty() {
            return false;
        }
        // Step 2: an old tree that is a perfect subtree is its own first proof node.
        let seed = first.is_power_of_two().then_some(*first_hash);
        let mut path = seed.into_iter().chain(self.hashes());
        let Some(head) = path.next() else {
            return false;
        };
        let (mut f_n, mut s_n) = (first - 1, second - 1);
        while f_n & 1 == 1 {
            f_n >>= 1;
            s_n >>= 1;
        }
        let (mut f_r, mut s_r) = (head, head);
        for c in path {
            if s_n == 0 {
                return false;
            }
            if f_n & 1 == 1 || f_n == s_n {
                f_r = node_hash(&c, &f_r);
                s_r = node_hash(&c, &s_r);
                if f_n & 1 == 0 {
                    while f_n & 1 == 0 && f_n != 0 {
                        f_n >>= 1;
                        s_n >>= 1;
                    }
                }
            } else {
                s_r = node_hash(&s_r, &c);
            }
            f_n >>= 1;
            s_n >>= 1;
        }
        // Both comparisons run, so timing does not say which root differed.
        let first_ok = hash_eq(&f_r, first_hash);
        let second_ok = hash_eq(&s_r, second_hash);
        s_n == 0 && first_ok && second_ok
    }

    /// The concatenated proof hashes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Parses concatenated proof hashes.
    ///
    /// # Errors
    /// [`Error::Malformed`] unless the length is a multiple of 32 and at most 65 hashes.
    pub fn from_bytes(bytes: &[u8]) -> Result<ConsistencyProof> {
        if !bytes.chunks_exact(32).remainder().is_empty()
            || bytes.len() / 32 > MAX_CONSISTENCY_HASHES
        {
            return Err(Error::Malformed("consistency proof: bad length"));
        }
        Ok(ConsistencyProof {
            bytes: bytes.to_vec(),
        })
    }

    /// The proof hashes, in `SUBPROOF` order.
    pub fn hashes(&self) -> impl Iterator<Item = Hash> + '_ {
        proof_hashes(&self.bytes)
    }

    /// Number of hashes in the proof.
    pub fn len(&self) -> usize {
        self.bytes.len() / 32
    }

    /// Whether the proof is empty (from the empty tree, or from a tree to itself).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

#[cfg(test)]
mod tests;
