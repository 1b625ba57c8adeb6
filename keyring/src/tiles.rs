//! The transparency log's public Merkle tree as C2SP tlog-tiles (<https://c2sp.org/tlog-tiles>):
//! tile paths, the tiles that change when the log grows, and the root recomputed from tiles.
//!
//! The gateway publishes tiles under `v1/log/` beside the checkpoint; peers and patients fetch
//! the few tiles they need and recompute roots and proofs without asking the gateway.
//!
//! Tile `N` at level `L` holds, for `i` in `0..256`, the RFC 6962 hash
//! `MTH(D[(N·256 + i)·256^L .. (N·256 + i + 1)·256^L])`: level 0 holds leaf hashes, level 1 the
//! roots of 256-leaf subtrees, level 2 the roots of 65 536-leaf subtrees, and so on. The
//! rightmost tile of a level is usually *partial* (1 to 255 hashes); a partial tile is never
//! hashed into the level above. For a tree of `s` leaves the partial tile of level `L` holds
//! `floor(s / 256^L) mod 256` hashes.
//!
//! Tile bytes:
//!
//! | offset | len | field                                   |
//! |--------|-----|-----------------------------------------|
//! | 0      | 32  | hash 0 of the tile                      |
//! | 32·i   | 32  | hash i                                  |
//! | …      |     | `width` hashes in all (256 when full)   |
//!
//! Tile path, relative to the log prefix (`v1/log/`):
//!
//! ```text
//! tile/<L>/<N>[.p/<W>]
//! ```
//!
//! `<L>` is the level in decimal (0 to 63, no leading zeros). `<N>` is the index written as
//! zero-padded groups of three digits, every group but the last prefixed with `x`: index 1234067
//! is `x001/x234/067`, index 5 is `005`. `.p/<W>` marks a partial tile of width `W` (1 to 255, no
//! leading zeros). So the partial tile of width 8 at level 0, index 1234067 is
//! `tile/0/x001/x234/067.p/8`.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::error::{Error, Result};
use crate::merkle::{empty_root, node_hash, root, Hash};

/// Hashes in a full tile.
pub const TILE_WIDTH: u64 = 256;

/// log2 of [`TILE_WIDTH`]: each tile level spans 8 tree levels.
const TILE_HEIGHT: u32 = 8;

/// The deepest tile level a `u64`-sized tree reaches: `256^8 = 2^64`.
const MAX_LEVEL: u8 = 7;

/// Which tile: its level, its index within the level and how many hashes it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TileId {
    /// The tile level: 0 for leaf hashes, `L` for roots of `256^L`-leaf subtrees.
    pub level: u8,
    /// The index of the tile within its level.
    pub index: u64,
    /// How many hashes the tile holds: 256 for a full tile, 1 to 255 for a partial one.
    pub width: u16,
}

impl TileId {
    /// Whether this is a full (256-hash) tile.
    pub fn is_full(&self) -> bool {
        u64::from(self.width) == TILE_WIDTH
    }

    /// The tile's path relative to the log prefix, e.g. `tile/0/x001/x234/067.p/8`.
    ///
    /// # Panics
    /// If `width` is 0 or above 256: a [`TileId`] built by this module never is.
    pub fn path(&self) -> String {
        let partial = (!self.is_full()).then_some(self.width);
        tile_path(self.level, self.index, partial)
    }

    /// Parses a path made by [`TileId::path`], with or without a leading `tile/`.
    ///
    /// # Errors
    /// [`Error::Malformed`] for anything that [`TileId::path`] would not have produced.
    pub fn parse_path(path: &str) -> Result<TileId> {
        const BAD: Error = Error::Malformed("tile path");
        let path = path.strip_prefix("tile/").unwrap_or(path);
        let (level, rest) = path.split_once('/').ok_or(BAD)?;
        let level = parse_decimal(level).ok_or(BAD)?;
        let level = u8::try_from(level).ok().filter(|l| *l <= 63).ok_or(BAD)?;
        let (index, width) = match rest.split_once(".p/") {
            Some((index, width)) => {
                let w = parse_decimal(width).ok_or(BAD)?;
                let w = u16::try_from(w)
                    .ok()
                    .filter(|w| (1..256).contains(w))
                    .ok_or(BAD)?;
                (index, w)
            }
            None => (rest, 256),
        };
        let groups: Vec<&str> = index.split('/').collect();
        let (last, init) = groups.split_last().ok_or(BAD)?;
        let mut n: u64 = 0;
        for (i, group) in init
            .iter()
            .map(|g| g.strip_prefix('x'))
            .chain([Some(*last)])
            .enumerate()
        {
            let group = group.ok_or(BAD)?;
            if group.len() != 3 || !group.bytes().all(|b| b.is_ascii_digit()) {
                return Err(BAD);
            }
            // No leading all-zero group: the encoding is canonical.
            if i == 0 && !init.is_empty() && group == "000" {
                return Err(BAD);
            }
            let digits: u64 = group.parse().map_err(|_| BAD)?;
            n = n
                .checked_mul(1000)
                .and_then(|n| n.checked_add(digits))
                .ok_or(BAD)?;
        }
        Ok(TileId {
            level,
            index: n,
            width,
        })
    }
}

/// Decimal without sign or leading zeros.
fn parse_decimal(s: &str) -> Option<u64> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    canonical.then(|| s.parse().ok()).flatten()
}

/// The path of tile `index` at `level`, relative to the log prefix: `tile/<L>/<N>` for a full
/// tile, `tile/<L>/<N>.p/<W>` for a partial one of `partial_width` hashes.
///
/// `Some(256)` is treated as a full tile.
///
/// # Panics
/// If `partial_width` is `Some(0)` (empty tiles are never served) or above 256.
pub fn tile_path(level: u8, index: u64, partial_width: Option<u16>) -> String {
    let mut groups = Vec::new();
    let mut n = index;
    loop {
        groups.push(n % 1000);
        n /= 1000;
        if n == 0 {
            break;
        }
    }
    let mut out = format!("tile/{level}/");
    for (i, g) in groups.iter().rev().enumerate() {
        let prefix = if i + 1 < groups.len() { "x" } else { "" };
        let slash = if i + 1 < groups.len() { "/" } else { "" };
        // Writing to a String cannot fail.
        let _ = write!(out, "{prefix}{g:03}{slash}");
    }
    match partial_width {
        None | Some(256) => {}
        Some(w) => {
            assert!(
                (1..256).contains(&w),
                "partial tile width must be 1 to 255, got {w}"
            );
            let _ = write!(out, ".p/{w}");
        }
    }
    out
}

/// Number of level-`level` hashes in a tree of `size` leaves: `floor(size / 256^level)`.
fn hashes_at(size: u64, level: u8) -> u64 {
    size.checked_shr(TILE_HEIGHT * u32::from(level))
        .unwrap_or(0)
}

/// The partial tiles of a tree of `size` leaves, lowest level first: exactly the tiles needed to
/// recompute its root ([`root_from_tiles`]) and to extend it ([`tiles_for_append`]).
pub fn edge_tiles(size: u64) -> Vec<TileId> {
    (0..=MAX_LEVEL)
        .filter_map(|level| {
            let n = hashes_at(size, level);
            // Invariant: a value below 256 fits a u16.
            let width = (n % TILE_WIDTH) as u16;
            (width > 0).then_some(TileId {
                level,
                index: n / TILE_WIDTH,
                width,
            })
        })
        .collect()
}

/// The tiles at `level` that a tree growing from `a` to `b` hashes at that level creates or
/// changes, given the hashes `hashes` of that level starting at index `first`.
fn emit(level: u8, a: u64, b: u64, first: u64, hashes: &[Hash], out: &mut Vec<(String, Vec<u8>)>) {
    for index in a / TILE_WIDTH..b.div_ceil(TILE_WIDTH) {
        let start = index * TILE_WIDTH;
        let end = (start + TILE_WIDTH).min(b);
        let id = TileId {
            level,
            index,
            // Invariant: end - start is 1 to 256.
            width: (end - start) as u16,
        };
        // Invariant: the caller holds every hash from the start of the first changed tile.
        let lo = (start - first) as usize;
        let hi = (end - first) as usize;
        out.push((id.path(), hashes[lo..hi].concat()));
    }
}

/// Every tile, full or partial, that exists at `new_size` but not at `old_size`, with its bytes,
/// lowest level first. Publishing these (and the new checkpoint) moves the public log from one
/// size to the other; tiles of `old_size` stay valid and are never rewritten.
///
/// Hashes all of `leaves[..new_size]` once (O(new_size)); see [`tiles_for_append`] for the
/// incremental form the gateway uses on a large log.
///
/// # Errors
/// [`Error::IndexOutOfRange`] if `old_size > new_size` or `new_size > leaves.len()`.
pub fn tiles_for(leaves: &[Hash], old_size: u64, new_size: u64) -> Result<Vec<(String, Vec<u8>)>> {
    if old_size > new_size {
        return Err(Error::IndexOutOfRange {
            index: old_size,
            size: new_size,
        });
    }
    let leaves = usize::try_from(new_size)
        .ok()
        .and_then(|n| leaves.get(..n))
        .ok_or(Error::IndexOutOfRange {
            index: new_size,
            size: leaves.len() as u64,
        })?;
    let mut out = Vec::new();
    let mut level_hashes = Cow::Borrowed(leaves);
    for level in 0..=MAX_LEVEL {
        let (a, b) = (hashes_at(old_size, level), hashes_at(new_size, level));
        if a == b {
            break;
        }
        emit(level, a, b, 0, &level_hashes, &mut out);
        // The next level hashes each full tile of this one.
        level_hashes = Cow::Owned(
            level_hashes
                .chunks_exact(TILE_WIDTH as usize)
                .map(root)
                .collect(),
        );
    }
    Ok(out)
}

/// [`tiles_for`] without the old leaves: the tiles that change when `new_leaves` are appended to
/// a tree of `old_size` leaves, computed from the new leaves and the old tree's partial tiles
/// ([`edge_tiles`]`(old_size)`), which `old_tile` returns. Reads at most one tile per level and
/// hashes O(`new_leaves.len()`).
///
/// # Errors
/// [`Error::MissingTile`] if `old_tile` lacks an edge tile; [`Error::Malformed`] if one has the
/// wrong length; [`Error::CounterOverflow`] if the new size overflows a `u64`.
pub fn tiles_for_append(
    old_size: u64,
    new_leaves: &[Hash],
    mut old_tile: impl FnMut(&TileId) -> Option<Vec<u8>>,
) -> Result<Vec<(String, Vec<u8>)>> {
    let new_size = old_size
        .checked_add(new_leaves.len() as u64)
        .ok_or(Error::CounterOverflow)?;
    let mut out = Vec::new();
    // The hashes of the level below, from index `below_first` on.
    let mut below: Vec<Hash> = Vec::new();
    let mut below_first = 0;
    for level in 0..=MAX_LEVEL {
        let (a, b) = (hashes_at(old_size, level), hashes_at(new_size, level));
        if a == b {
            break;
        }
        // The first changed tile starts with the old hashes of the old partial tile, if any.
        let first = a / TILE_WIDTH * TILE_WIDTH;
        let mut hashes = Vec::new();
        if a > first {
            let id = TileId {
                level,
                index: a / TILE_WIDTH,
                // Invariant: a - first is 1 to 255.
                width: (a - first) as u16,
            };
            hashes = read_tile(&id, &mut old_tile)?;
        }
        if level == 0 {
            hashes.extend_from_slice(new_leaves);
        } else {
            // Hash j of this level is the root of hashes 256j..256j+256 of the level below,
            // all of which lie in the tiles changed there: 256·a = the start of that range.
            for j in a..b {
                // Invariant: below covers [below_first, 256·b) and 256·a ≥ below_first.
                let lo = (j * TILE_WIDTH - below_first) as usize;
                hashes.push(root(&below[lo..lo + TILE_WIDTH as usize]));
            }
        }
        emit(level, a, b, first, &hashes, &mut out);
        below = hashes;
        below_first = first;
    }
    Ok(out)
}

/// The hashes of one tile fetched through `get`, checked against its width.
fn read_tile(id: &TileId, get: &mut impl FnMut(&TileId) -> Option<Vec<u8>>) -> Result<Vec<Hash>> {
    let bytes = get(id).ok_or_else(|| Error::MissingTile { path: id.path() })?;
    if bytes.len() != usize::from(id.width) * 32 {
        return Err(Error::Malformed("tile: wrong length for its width"));
    }
    Ok(bytes
        .chunks_exact(32)
        .map(|c| {
            let mut h = [0u8; 32];
            h.copy_from_slice(c);
            h
        })
        .collect())
}

/// The RFC 6962 root of a tree of `size` leaves, from its partial tiles ([`edge_tiles`]`(size)`),
/// which `tile` returns. A verifier compares it with a checkpoint's root before trusting any
/// other tile of that size.
///
/// The tree splits into one perfect subtree per set bit of `size`, largest first; the subtree
/// for bit `h` is the root of `2^(h mod 8)` consecutive hashes of the partial tile of level
/// `h / 8`. Folding them right to left gives the root.
///
/// # Errors
/// [`Error::MissingTile`] if `tile` lacks one; [`Error::Malformed`] if one has the wrong length.
pub fn root_from_tiles(
    size: u64,
    mut tile: impl FnMut(&TileId) -> Option<Vec<u8>>,
) -> Result<Hash> {
    let mut edge = Vec::new();
    for id in edge_tiles(size) {
        let hashes = read_tile(&id, &mut tile)?;
        edge.push((id.level, hashes));
    }
    let mut acc: Option<Hash> = None;
    // Smallest subtree first, so the fold runs right to left.
    for bit in (0..u64::BITS).filter(|b| size >> b & 1 == 1) {
        // Invariant: bit < 64, so the level is at most 7.
        let level = (bit / TILE_HEIGHT) as u8;
        let count = 1usize << (bit % TILE_HEIGHT);
        // The subtree starts where the bits of `size` above `bit` end, in level-hash units,
        // counted from the start of the level's partial tile.
        let offset = ((hashes_at(size, level) % TILE_WIDTH) >> (bit % TILE_HEIGHT + 1)
            << (bit % TILE_HEIGHT + 1)) as usize;
        let hashes = edge
            .iter()
            .find(|(l, _)| *l == level)
            .map(|(_, h)| h)
            .ok_or(Error::Malformed("tile: edge missing a level"))?;
        let subtree = root(
            hashes
                .get(offset..offset + count)
                .ok_or(Error::Malformed("tile: too short"))?,
        );
        acc = Some(match acc {
            None => subtree,
            Some(right) => node_hash(&subtree, &right),
        });
    }
    Ok(acc.unwrap_or_else(empty_root))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::merkle::leaf_hash;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn paths_from_the_spec() {
        // c2sp.org/tlog-tiles: "index 1234067 will be encoded as x001/x234/067".
        assert_eq!(tile_path(0, 1234067, None), "tile/0/x001/x234/067");
        assert_eq!(tile_path(0, 1234067, Some(8)), "tile/0/x001/x234/067.p/8");
        assert_eq!(tile_path(0, 0, None), "tile/0/000");
        assert_eq!(tile_path(1, 5, Some(17)), "tile/1/005.p/17");
        assert_eq!(tile_path(1, 5, Some(256)), "tile/1/005");
        assert_eq!(tile_path(2, 999, None), "tile/2/999");
        assert_eq!(tile_path(2, 1000, None), "tile/2/x001/000");
        assert_eq!(
            tile_path(3, 1_000_000, Some(255)),
            "tile/3/x001/x000/000.p/255"
        );
        assert_eq!(
            tile_path(63, u64::MAX, Some(1)),
            "tile/63/x018/x446/x744/x073/x709/x551/615.p/1"
        );
    }

    #[test]
    #[should_panic(expected = "partial tile width")]
    fn empty_partial_tile_has_no_path() {
        tile_path(0, 0, Some(0));
    }

    #[test]
    fn parse_paths() {
        for (level, index, width) in [
            (0u8, 0u64, 256u16),
            (0, 1234067, 8),
            (1, 999, 256),
            (2, 1000, 1),
            (63, u64::MAX, 255),
        ] {
            let id = TileId {
                level,
                index,
                width,
            };
            assert_eq!(TileId::parse_path(&id.path()).unwrap(), id);
        }
        for bad in [
            "tile/0/1",
            "tile/0/0000",
            "tile/0/x000/001",
            "tile/00/000",
            "tile/64/000",
            "tile/0/001/002",
            "tile/0/x001/x002",
            "tile/0/000.p/0",
            "tile/0/000.p/256",
            "tile/0/000.p/08",
            "tile/0/000.p/",
            "tile/0/x018/x446/x744/x073/x709/x551/616",
            "tile/0/",
            "tile/0",
            "tile/entries/000",
        ] {
            assert!(TileId::parse_path(bad).is_err(), "{bad}");
        }
    }

    /// The tiles of a tree built from scratch, by path.
    fn all_tiles(l: &[Hash], size: u64) -> BTreeMap<String, Vec<u8>> {
        tiles_for(l, 0, size).unwrap().into_iter().collect()
    }

    #[test]
    fn tile_counts_from_the_spec() {
        // "a tree of size 70,000 will be represented by 273 full level 0 tiles, one partial level
        // 0 tile of width 112, one full level 1 tile, one partial level 1 tile of width 17, and
        // one partial level 2 tile of width 1."
        let l = leaves(70_000);
        let tiles = all_tiles(&l, 70_000);
        let ids: Vec<TileId> = tiles
            .keys()
            .map(|p| TileId::parse_path(p).unwrap())
            .collect();
        let count = |level, full: bool| {
            ids.iter()
                .filter(|t| t.level == level && t.is_full() == full)
                .count()
        };
        assert_eq!(count(0, true), 273);
        assert_eq!(count(0, false), 1);
        assert_eq!(count(1, true), 1);
        assert_eq!(count(1, false), 1);
        assert_eq!(count(2, false), 1);
        assert_eq!(ids.len(), 277);
        assert!(tiles.contains_key("tile/0/273.p/112"));
        assert!(tiles.contains_key("tile/1/001.p/17"));
        assert!(tiles.contains_key("tile/2/000.p/1"));
        assert_eq!(
            edge_tiles(70_000),
            vec![
                TileId {
                    level: 0,
                    index: 273,
                    width: 112
                },
                TileId {
                    level: 1,
                    index: 1,
                    width: 17
                },
                TileId {
                    level: 2,
                    index: 0,
                    width: 1
                },
            ]
        );
        // "a tree of size 256 will be represented by a full level 0 tile and a partial level 1
        // tile of width 1."
        let small: Vec<String> = all_tiles(&l, 256).into_keys().collect();
        assert_eq!(small, ["tile/0/000", "tile/1/000.p/1"]);
        // Level 1 hashes are roots of full level 0 tiles; the level 2 one the root of 65 536.
        assert_eq!(tiles["tile/1/000"][..32], root(&l[..256]));
        assert_eq!(
            tiles["tile/1/001.p/17"][16 * 32..],
            root(&l[(256 + 16) * 256..(256 + 17) * 256])
        );
        assert_eq!(tiles["tile/2/000.p/1"], root(&l[..65_536]));
        assert_eq!(
            root_from_tiles(70_000, |id| tiles.get(&id.path()).cloned()).unwrap(),
            root(&l)
        );
    }

    #[test]
    fn ct_tree_is_one_partial_tile() {
        // The 8-leaf CT test tree (see merkle's vectors): one level 0 tile of the 8 leaf hashes.
        let inputs = [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ];
        let l: Vec<Hash> = inputs
            .iter()
            .map(|h| leaf_hash(&hex::decode(h).unwrap()))
            .collect();
        let tiles = tiles_for(&l, 0, 8).unwrap();
        assert_eq!(tiles.len(), 1);
        assert_eq!(tiles[0].0, "tile/0/000.p/8");
        assert_eq!(
            hex::encode(&tiles[0].1[32..64]),
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"
        );
        let r = root_from_tiles(8, |id| {
            (id.path() == tiles[0].0).then(|| tiles[0].1.clone())
        })
        .unwrap();
        assert_eq!(
            hex::encode(r),
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
        );
        // Growing 5 → 8 rewrites the one partial tile.
        let grown = tiles_for(&l, 5, 8).unwrap();
        assert_eq!(grown, tiles);
        assert!(tiles_for(&l, 8, 8).unwrap().is_empty());
    }

    #[test]
    fn errors() {
        let l = leaves(10);
        assert!(tiles_for(&l, 5, 4).is_err());
        assert!(tiles_for(&l, 0, 11).is_err());
        assert_eq!(root_from_tiles(0, |_| None).unwrap(), empty_root());
        assert_eq!(
            root_from_tiles(10, |_| None),
            Err(Error::MissingTile {
                path: "tile/0/000.p/10".into()
            })
        );
        assert!(matches!(
            root_from_tiles(10, |_| Some(vec![0; 32 * 9])),
            Err(Error::Malformed(_))
        ));
        assert!(tiles_for_append(5, &l, |_| None).is_err());
        assert!(matches!(
            tiles_for_append(5, &l, |_| Some(vec![0; 31])),
            Err(Error::Malformed(_))
        ));
        assert_eq!(
            tiles_for_append(u64::MAX, &l, |_| None),
            Err(Error::CounterOverflow)
        );
        assert!(tiles_for_append(7, &[], |_| None).unwrap().is_empty());
    }

    #[test]
    fn every_small_size() {
        // Every size up to a few tiles, grown one leaf at a time and in uneven steps.
        let l = leaves(1100);
        let mut published = BTreeMap::new();
        for n in 0..=1100u64 {
            if n > 0 {
                let step = tiles_for(&l, n - 1, n).unwrap();
                for (path, bytes) in step {
                    assert!(
                        published.insert(path, bytes).is_none(),
                        "tile rewritten at {n}"
                    );
                }
            }
            let r = root_from_tiles(n, |id| published.get(&id.path()).cloned()).unwrap();
            assert_eq!(r, root(&l[..n as usize]), "size {n}");
        }
        assert_eq!(published.keys().filter(|p| !p.contains(".p/")).count(), 4);
    }

    proptest! {
        // Each case hashes up to ~140k leaves a few times; keep the count low.
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn growth_matches_rebuild(a in 0u64..70_000, grow in prop_oneof![0u64..600, 0u64..70_000]) {
            let b = a + grow;
            let l = leaves(b);
            let full: BTreeMap<String, Vec<u8>> = all_tiles(&l, b);
            let old: BTreeMap<String, Vec<u8>> = all_tiles(&l, a);
            let step = tiles_for(&l, a, b).unwrap();
            // The step is exactly the tiles of b that a lacks; the tiles a and b share are equal.
            let mut expect: Vec<(String, Vec<u8>)> = full
                .iter()
                .filter(|(p, _)| !old.contains_key(*p))
                .map(|(p, t)| (p.clone(), t.clone()))
                .collect();
            let mut got = step.clone();
            got.sort();
            expect.sort();
            prop_assert_eq!(&got, &expect);
            for (p, t) in &old {
                if let Some(u) = full.get(p) {
                    prop_assert_eq!(t, u);
                }
            }
            // The incremental form agrees, reading only a's edge tiles.
            let mut reads = Vec::new();
            let inc = tiles_for_append(a, &l[a as usize..], |id| {
                reads.push(*id);
                old.get(&id.path()).cloned()
            }).unwrap();
            prop_assert_eq!(inc, step);
            for id in &reads {
                prop_assert!(edge_tiles(a).contains(id));
            }
            // And the root comes back from b's edge tiles.
            let r = root_from_tiles(b, |id| full.get(&id.path()).cloned()).unwrap();
            prop_assert_eq!(r, root(&l));
        }
    }
}
