//! The log inside sled transactions: event blocks and [`LogTx`], which appends with the
//! per-patient chain and the tiles.

use super::*;

/// The entries one append wrote, in one row keyed by the first one's index, v1:
///
/// | offset | len | field                                      |
/// |--------|-----|--------------------------------------------|
/// | 0      | 1   | version = 0x01                             |
/// | 1      | 4   | entry count n (u32 BE)                     |
/// | 5      | …   | n × (length l (u32 BE) ‖ JSON [`Event`])   |
///
/// A row that starts with `{` is one JSON event (the layout before blocks).
pub(super) struct EventBlock {
    pub(super) bytes: Vec<u8>,
}

impl EventBlock {
    const VERSION: u8 = 1;

    pub(super) fn start(n: usize) -> EventBlock {
        let mut bytes = Vec::with_capacity(5 + n * 400);
        bytes.push(Self::VERSION);
        // Invariant: a batch is far below 2^32 entries (the appender caps it).
        bytes.extend_from_slice(&(n as u32).to_be_bytes());
        EventBlock { bytes }
    }

    pub(super) fn push(&mut self, e: &Event) -> Result<()> {
        let json = encode_json(e)?;
        let len =
            u32::try_from(json.len()).map_err(|_| Error::Internal("event too long".into()))?;
        self.bytes.extend_from_slice(&len.to_be_bytes());
        self.bytes.extend_from_slice(&json);
        Ok(())
    }

    pub(super) fn decode(v: &[u8]) -> Result<Vec<Event>> {
        if v.first() == Some(&b'{') {
            return Ok(vec![decode_json(v, "event")?]);
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
            out.push(decode_json(json, "event")?);
            rest = &r[len..];
        }
        if !rest.is_empty() {
            return Err(bad());
        }
        Ok(out)
    }
}

/// The log's trees, as seen inside one transaction.
pub(super) struct LogTx<'a> {
    pub(super) events: &'a TransactionalTree,
    pub(super) tiles: &'a TransactionalTree,
    pub(super) meta: &'a TransactionalTree,
    pub(super) heads: &'a TransactionalTree,
}

impl LogTx<'_> {
    /// Appends `events` (each with its salt) at the end of the log: see
    /// [`PrivateStore::append_events`]. Returns the first index.
    pub(super) fn append(&self, events: &[Event], salts: &[[u8; 32]]) -> TxResult<u64> {
        let first = match self.meta.get(b"size")? {
            Some(v) => read_u64(&v).or_else(abort)?,
            None => 0,
        };
        // Patient heads this batch moved, so a patient's second entry chains to its first.
        let mut heads: std::collections::HashMap<String, (u64, Hash)> = Default::default();
        let mut index = first;
        let mut leaves = Vec::with_capacity(events.len());
        let mut block = EventBlock::start(events.len());
        for (event, salt) in events.iter().zip(salts) {
            let mut e = event.clone();
            e.seq = index;
            e.salt = hex::encode(salt);
            match e.patient.clone() {
                Some(p) => {
                    let (prev_seq, prev) = match heads.get(&p) {
                        Some(head) => *head,
                        None => match self.heads.get(p.as_bytes())? {
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
                    let commitment = super::super::entry_of(&e).or_else(abort)?.commitment(salt);
                    heads.insert(p, (e.patient_seq, commitment));
                    block.push(&e).or_else(abort)?;
                    leaves.push(keyring::leaf_hash(&commitment));
                }
                None => {
                    e.patient_seq = 0;
                    e.patient_prev = hex::encode([0u8; 32]);
                    let commitment = super::super::entry_of(&e).or_else(abort)?.commitment(salt);
                    block.push(&e).or_else(abort)?;
                    leaves.push(keyring::leaf_hash(&commitment));
                }
            }
            index += 1;
        }
        if !leaves.is_empty() {
            self.events.insert(&first.to_be_bytes(), block.bytes)?;
        }
        for (p, (seq, commitment)) in heads {
            let mut head = Vec::with_capacity(40);
            head.extend_from_slice(&seq.to_be_bytes());
            head.extend_from_slice(&commitment);
            self.heads.insert(p.as_bytes(), head)?;
        }
        // The tiles the new leaves change, from the old edge tiles.
        let mut failed = None;
        let changed = keyring::tiles::tiles_for_append(first, &leaves, |id| {
            match self.tiles.get(tile_key(id.level, id.index)) {
                Ok(v) => v.map(|v| v.to_vec()),
                Err(e) => {
                    failed = Some(e);
                    None
                }
            }
        });
        if let Some(e) = failed {
            return Err(e.into());
        }
        for (path, bytes) in changed.map_err(Error::from).or_else(abort)? {
            let id = TileId::parse_path(&path)
                .map_err(Error::from)
                .or_else(abort)?;
            self.tiles
                .insert(&tile_key(id.level, id.index)[..], bytes)?;
        }
        self.meta.insert(b"size", &index.to_be_bytes()[..])?;
        Ok(first)
    }
}
