//! The transparency log over any [`Kv`]: event blocks, [`LogTx`] (the append with the
//! per-patient chain and the tiles, inside a caller's transaction), and [`LogRows`].

use async_trait::async_trait;
use keyring::tiles::TileId;
use keyring::Hash;

use super::rows::*;
use super::KvStore;
use crate::store::kv::{abort, prefix, Kv, Table, Tx, TxError, TxResult};
use crate::store::private::{entry_of, Event, EventKind, LogRows};
use crate::{Error, Result};

/// The entries one append wrote, in one row keyed by the first one's index, v1:
///
/// | offset | len | field                                      |
/// |--------|-----|--------------------------------------------|
/// | 0      | 1   | version = 0x01                             |
/// | 1      | 4   | entry count n (u32 BE)                     |
/// | 5      | …   | n × (length l (u32 BE) ‖ JSON [`Event`])   |
///
/// A row that starts with `{` (0x7B, never a version byte) is one JSON event: the layout
/// before blocks, still read. Each JSON event has the shape in [`Event`]'s docs; an event
/// of a kind no version wrote ([`EventKind::Other`]) is `Corrupt`.
pub struct EventBlock {
    pub(crate) bytes: Vec<u8>,
}

impl EventBlock {
    const VERSION: u8 = 1;

    pub(crate) fn start(n: usize) -> EventBlock {
        let mut bytes = Vec::with_capacity(5 + n * 400);
        bytes.push(Self::VERSION);
        // Invariant: a batch is far below 2^32 entries (the appender caps it).
        bytes.extend_from_slice(&(n as u32).to_be_bytes());
        EventBlock { bytes }
    }

    pub(crate) fn push(&mut self, e: &Event) -> Result<()> {
        let json = encode_json(e)?;
        let len =
            u32::try_from(json.len()).map_err(|_| Error::Internal("event too long".into()))?;
        self.bytes.extend_from_slice(&len.to_be_bytes());
        self.bytes.extend_from_slice(&json);
        Ok(())
    }

    /// The events of an `events` row (a block, or one JSON event from before blocks).
    ///
    /// # Errors
    /// `Corrupt` for a row that is neither.
    pub fn decode(v: &[u8]) -> Result<Vec<Event>> {
        if v.first() == Some(&b'{') {
            return Ok(vec![known(decode_json(v, "event")?)?]);
        }
        let bad = || Error::Corrupt("event block".into());
        let (&version, rest) = v.split_first().ok_or_else(bad)?;
        if version != Self::VERSION {
            return Err(bad());
        }
        let (n, mut rest) = split_u32(rest).ok_or_else(bad)?;
        let mut out = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let (len, r) = split_u32(rest).ok_or_else(bad)?;
            let len = len as usize;
            let json = r.get(..len).ok_or_else(bad)?;
            out.push(known(decode_json(json, "event")?)?);
            rest = &r[len..];
        }
        if !rest.is_empty() {
            return Err(bad());
        }
        Ok(out)
    }
}

/// An event of a stored row, whose kind must be one this version knows: every kind any
/// version wrote is an [`EventKind`] variant, so `Other` in a row is damage.
fn known(e: Event) -> Result<Event> {
    match &e.kind {
        EventKind::Other(kind) => Err(Error::Corrupt(format!(
            "log entry {}: unknown kind {kind:?}",
            e.seq
        ))),
        _ => Ok(e),
    }
}

/// The tables a log append writes (a transaction that appends names them all).
pub(crate) const LOG_TABLES: [Table; 4] = [
    Table::Events,
    Table::LogTiles,
    Table::LogMeta,
    Table::PatientHeads,
];

/// The log, as seen inside one transaction (which names [`LOG_TABLES`]).
pub(crate) struct LogTx<'a>(pub(crate) &'a dyn Tx);

impl LogTx<'_> {
    /// Appends `events` (each with its salt) at the end of the log: see
    /// [`LogRows::append_events`]. Returns the first index.
    pub(crate) fn append(&self, events: &[Event], salts: &[[u8; 32]]) -> TxResult<u64> {
        let tx = self.0;
        let first = match tx.get(Table::LogMeta, LOG_SIZE)? {
            Some(v) => read_u64(&v).or_else(abort)?,
            None => 0,
        };
        // Patient heads this batch moved, so a patient's second entry chains to its first.
        let mut heads: std::collections::HashMap<String, (u64, Hash)> = Default::default();
        let mut index = first;
        let mut leaves = Vec::with_capacity(events.len());
        let mut block = EventBlock::start(events.len());
        for (event, salt) in events.iter().zip(salts) {
            if let EventKind::Other(kind) = &event.kind {
                return abort(Error::InvalidArgument(format!(
                    "log entry of unknown kind {kind:?}: the log holds only the kinds of EventKind"
                )));
            }
            let mut e = event.clone();
            e.seq = index;
            e.salt = hex::encode(salt);
            match e.patient.clone() {
                Some(p) => {
                    let (prev_seq, prev) = match heads.get(&p) {
                        Some(head) => *head,
                        None => match tx.get(Table::PatientHeads, p.as_bytes())? {
                            Some(v) if v.len() == 40 => (
                                read_u64(&v).or_else(abort)?,
                                to_hash(&v[8..], "patient log head").or_else(abort)?,
                            ),
                            Some(_) => return abort(Error::Corrupt("patient log head".into())),
                            None => (0, [0u8; 32]),
                        },
                    };
                    e.patient_seq = prev_seq + 1;
                    e.patient_prev = hex::encode(prev);
                    let commitment = entry_of(&e).or_else(abort)?.commitment(salt);
                    heads.insert(p, (e.patient_seq, commitment));
                    block.push(&e).or_else(abort)?;
                    leaves.push(keyring::leaf_hash(&commitment));
                }
                None => {
                    e.patient_seq = 0;
                    e.patient_prev = hex::encode([0u8; 32]);
                    let commitment = entry_of(&e).or_else(abort)?.commitment(salt);
                    block.push(&e).or_else(abort)?;
                    leaves.push(keyring::leaf_hash(&commitment));
                }
            }
            index += 1;
        }
        if !leaves.is_empty() {
            tx.put(Table::Events, &first.to_be_bytes(), &block.bytes)?;
        }
        for (p, (seq, commitment)) in heads {
            let mut head = Vec::with_capacity(40);
            head.extend_from_slice(&seq.to_be_bytes());
            head.extend_from_slice(&commitment);
            tx.put(Table::PatientHeads, p.as_bytes(), &head)?;
        }
        // The tiles the new leaves change, from the old edge tiles.
        let mut failed: Option<TxError> = None;
        let changed = keyring::tiles::tiles_for_append(first, &leaves, |id| {
            match tx.get(Table::LogTiles, &tile_key(id.level, id.index)) {
                Ok(v) => v,
                Err(e) => {
                    failed = Some(e);
                    None
                }
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        for (path, bytes) in changed.map_err(Error::from).or_else(abort)? {
            let id = TileId::parse_path(&path)
                .map_err(Error::from)
                .or_else(abort)?;
            tx.put(Table::LogTiles, &tile_key(id.level, id.index), &bytes)?;
        }
        tx.put(Table::LogMeta, LOG_SIZE, &index.to_be_bytes())?;
        Ok(first)
    }
}

impl<K: Kv> KvStore<K> {
    /// Hashes `lo..hi` of tile level `level` (subtree roots of `256^level` leaves).
    pub(crate) fn tile_hashes(&self, level: u8, lo: u64, hi: u64) -> Result<Vec<Hash>> {
        use std::ops::Bound;
        let width = keyring::tiles::TILE_WIDTH;
        let mut out = Vec::with_capacity(hi.saturating_sub(lo) as usize);
        if hi <= lo {
            return Ok(out);
        }
        let mut next = lo;
        let range = (
            Bound::Included(tile_key(level, lo / width).to_vec()),
            Bound::Included(tile_key(level, (hi - 1) / width).to_vec()),
        );
        for item in self.kv.range(Table::LogTiles, range)? {
            let (k, v) = item?;
            let start = read_u64(k.get(1..).unwrap_or_default())?
                .checked_mul(width)
                .ok_or_else(|| Error::Corrupt("log tile key".into()))?;
            if start > next || v.len() % 32 != 0 {
                break;
            }
            let end = (start + v.len() as u64 / 32).min(hi);
            for j in next..end {
                // Invariant: start <= j < start + v.len() / 32.
                let at = ((j - start) * 32) as usize;
                out.push(to_hash(&v[at..at + 32], "log tile")?);
            }
            next = next.max(end);
        }
        if next != hi {
            return Err(Error::Corrupt(format!(
                "log tile level {level}: hashes {lo}..{hi} incomplete at {next}"
            )));
        }
        Ok(out)
    }
}

#[async_trait]
impl<K: Kv> LogRows for KvStore<K> {
    async fn append_events(&self, events: Vec<Event>) -> Result<u64> {
        let _gate = self.gate.read().await;
        let salts: Vec<[u8; 32]> = events.iter().map(|_| rand::random()).collect();
        self.kv
            .transact(&LOG_TABLES, |tx: &dyn Tx| LogTx(tx).append(&events, &salts))
    }

    async fn log_size(&self) -> Result<u64> {
        match self.kv.get(Table::LogMeta, LOG_SIZE)? {
            Some(v) => read_u64(&v),
            None => Ok(0),
        }
    }

    async fn log_leaves(&self, from: u64, to: u64) -> Result<Vec<Hash>> {
        self.tile_hashes(0, from, to)
    }

    /// Heights that are multiples of 8 are tile levels; a subtree in between is hashed
    /// from at most 128 hashes of one tile.
    async fn log_hashes(&self, height: u8, from: u64, to: u64) -> Result<Vec<Hash>> {
        if to <= from {
            return Ok(Vec::new());
        }
        let (level, up) = (height / 8, u32::from(height % 8));
        let span = 1u64 << up;
        let base = match (from.checked_mul(span), to.checked_mul(span)) {
            (Some(lo), Some(hi)) => self.tile_hashes(level, lo, hi)?,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "log subtrees {height}/{from}..{to}: beyond any log"
                )))
            }
        };
        Ok(base
            .chunks_exact(span as usize)
            .map(keyring::root)
            .collect())
    }

    async fn put_checkpoint(&self, size: u64, note: &str) -> Result<()> {
        let _gate = self.gate.read().await;
        self.kv.batch(
            Table::Checkpoints,
            vec![(size.to_be_bytes().to_vec(), Some(note.as_bytes().to_vec()))],
        )
    }

    async fn checkpoints(&self) -> Result<Vec<(u64, String)>> {
        let mut out = Vec::new();
        for item in self.kv.range(Table::Checkpoints, prefix(b""))? {
            let (k, v) = item?;
            out.push((
                read_u64(&k)?,
                String::from_utf8(v).map_err(|_| Error::Corrupt("checkpoint".into()))?,
            ));
        }
        Ok(out)
    }

    async fn events(&self, from: u64, limit: usize) -> Result<Vec<Event>> {
        use std::ops::Bound;
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        // From the block that holds `from`.
        let upto = (
            Bound::Unbounded,
            Bound::Included(from.to_be_bytes().to_vec()),
        );
        let start = match self.kv.range(Table::Events, upto)?.next_back() {
            Some(item) => item?.0,
            None => from.to_be_bytes().to_vec(),
        };
        for item in self
            .kv
            .range(Table::Events, (Bound::Included(start), Bound::Unbounded))?
        {
            let (_, v) = item?;
            for e in EventBlock::decode(&v)? {
                if e.seq >= from {
                    out.push(e);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }
}
