//! Opening a sled store, and the upgrades an older data dir gets on open (DEK records v2,
//! the patient index, log tiles).

use super::*;

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    ///
    /// # Errors
    /// An I/O error of kind `WouldBlock` when another process holds the database
    /// (sled allows one at a time), or any sled error.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self> {
        // sled releases its file lock a moment after the last handle in this process
        // drops (its flusher thread ends asynchronously), so a store closed and reopened
        // by one process (a restore, tests) may briefly see its own lock: retry for up to
        // a second before reporting the store as locked.
        let mut tries = 0;
        let db = loop {
            match sled::Config::new()
                .path(dir)
                .cache_capacity(cache_bytes)
                .open()
            {
                Ok(db) => break db,
                Err(sled::Error::Io(io))
                    if tries < 50 && io.to_string().contains("could not acquire lock") =>
                {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(sled::Error::Io(io)) => return Err(Error::Io(io)),
                Err(other) => return Err(Error::from(other)),
            }
        };
        SledStore {
            buckets: db.open_tree("buckets")?,
            objects: db.open_tree("objects")?,
            patient_objects: db.open_tree("patient_objects")?,
            leaves: db.open_tree("leaves")?,
            blobs: db.open_tree("blobs")?,
            pending: db.open_tree("pending")?,
            orphans: db.open_tree("orphans")?,
            deks: db.open_tree("deks")?,
            dek_refs: db.open_tree("dek_refs")?,
            access_keys: db.open_tree("access_keys")?,
            uploads: db.open_tree("uploads")?,
            parts: db.open_tree("parts")?,
            part_blobs: db.open_tree("part_blobs")?,
            patients: db.open_tree("patients")?,
            requests: db.open_tree("requests")?,
            grants: db.open_tree("grants")?,
            events: db.open_tree("events")?,
            log_tiles: db.open_tree("log_tiles")?,
            log_meta: db.open_tree("log_meta")?,
            patient_heads: db.open_tree("patient_heads")?,
            checkpoints: db.open_tree("checkpoints")?,
            flush_tickets: std::sync::atomic::AtomicU64::new(0),
            flushed_through: std::sync::atomic::AtomicU64::new(0),
            flush_lock: tokio::sync::Mutex::new(()),
            gate: tokio::sync::RwLock::new(()),
            ops_gate: std::sync::Arc::new(tokio::sync::RwLock::new(())),
            db,
        }
        .with_log_tiles()?
        .with_patient_index()
    }

    /// Upgrades `deks` rows to DEK record version 2: gives each stanza stored without its
    /// Recipient (version 1 rows, or rows a store that had not been upgraded rewrote) the
    /// Recipient it is wrapped to. Runs once per store (`log_meta/dek_records_v2` marks it
    /// done); the binary calls it every time it opens the store, before serving.
    ///
    /// Candidates are `institution`, `others` (the binary passes the configured peers and the
    /// backup recovery Recipient) and every Recipient the store knows: registered patients
    /// and grant recipients (revoked and expired grants included). A stanza's tag narrows the
    /// candidates; they are then told apart by whole key (one Recipient named twice counts
    /// once). A stanza is given a Recipient only when exactly one candidate names it: its tag
    /// is that Recipient's, and an own stanza (kind 0x03, which only the institution writes)
    /// only ever names the institution. A stanza no candidate names, or that two candidates
    /// with one tag could both own, is kept (never dropped) with the "unknown recipient"
    /// flag: the institution still opens it by trial decryption, but no lookup or removal
    /// by recipient matches it, and rotation replaces it.
    ///
    /// Each row is upgraded in its own transaction (re-read inside it), so a crash leaves
    /// every row whole, and running again changes nothing already upgraded; the mark is set
    /// and the store flushed after the last row. Logged once with the counts.
    ///
    /// # Errors
    /// A row that does not decode (`Corrupt`), a patient or grant row that does not parse,
    /// sled failures.
    pub fn upgrade_dek_records(
        &self,
        institution: &Recipient,
        others: &[Recipient],
    ) -> Result<DekUpgrade> {
        let mut report = DekUpgrade::default();
        if self.log_meta.get(DEK_V2_MARK)?.is_some() {
            return Ok(report);
        }
        let mut candidates: Vec<Recipient> = vec![institution.clone()];
        candidates.extend(others.iter().cloned());
        for p in json_rows::<PatientRecord>(&self.patients, "patient")? {
            candidates.push(parse_recipient(&p.recipient, "patient")?);
        }
        for g in json_rows::<GrantRecord>(&self.grants, "grant")? {
            candidates.push(parse_recipient(&g.recipient, "grant")?);
        }
        let mut seen = std::collections::HashSet::new();
        candidates.retain(|r| seen.insert(r.to_bytes()));
        for item in self.deks.iter() {
            let (k, v) = item?;
            let rec = decode_dek(&v)?;
            if DekRecord::version_of(&v) != Some(DEK_RECORD_V1)
                && rec.stanzas.iter().all(|s| s.recipient().is_some())
            {
                continue;
            }
            let (stanzas, unknown) = self
                .deks
                .transaction(|deks| {
                    let Some(v) = deks.get(&k)? else {
                        return Ok((0, 0));
                    };
                    let mut rec = decode_dek(&v).or_else(abort)?;
                    let (mut named, mut unknown) = (0u64, 0u64);
                    for s in &mut rec.stanzas {
                        if s.recipient().is_some() {
                            continue;
                        }
                        match resolve_stanza(s.wrapped(), institution, &candidates) {
                            Some(r) => {
                                *s = DekStanza::new(r.clone(), s.wrapped().clone())
                                    .map_err(|_| Error::Internal("stanza tag".into()))
                                    .or_else(abort)?;
                                named += 1;
                            }
                            None => unknown += 1,
                        }
                    }
                    deks.insert(&k, rec.encode())?;
                    Ok((named, unknown))
                })
                .map_err(tx_err)?;
            report.rows += 1;
            report.stanzas += stanzas;
            report.unknown += unknown;
        }
        self.log_meta.insert(DEK_V2_MARK, &[1u8][..])?;
        self.db.flush()?;
        if report.rows > 0 {
            tracing::info!(
                rows = report.rows,
                stanzas = report.stanzas,
                unknown_recipient = report.unknown,
                "DEK records upgraded to version 2 (each stanza stored with its Recipient)"
            );
        }
        if report.unknown > 0 {
            tracing::warn!(
                unknown_recipient = report.unknown,
                "stanzas whose recipient no known key names (or two keys with one tag could \
                 both own) are kept with an unknown recipient: no revocation can remove them; \
                 `medgate rotate` replaces them"
            );
        }
        Ok(report)
    }

    /// Indexes every manifest by patient in a store made before `patient_objects` existed.
    pub(super) fn with_patient_index(self) -> Result<Self> {
        if self.log_meta.get(PATIENT_INDEX_MARK)?.is_some() {
            return Ok(self);
        }
        let mut batch = sled::Batch::default();
        for item in self.objects.iter() {
            let (k, v) = item?;
            let m = Manifest::decode(&v).map_err(|_| Error::Corrupt("manifest".into()))?;
            if let Some(p) = &m.patient {
                batch.insert(patient_object_key(p, &k), &[][..]);
            }
        }
        self.patient_objects.apply_batch(batch)?;
        self.log_meta.insert(PATIENT_INDEX_MARK, &[1u8][..])?;
        self.db.flush()?;
        Ok(self)
    }

    /// Converts a log of one `log_leaves` row per leaf (before tiles) to `log_tiles`.
    pub(super) fn with_log_tiles(self) -> Result<Self> {
        if self.log_meta.get(TILES_MARK)?.is_some() {
            return Ok(self);
        }
        let old = self.db.open_tree("log_leaves")?;
        let mut leaves = Vec::new();
        for item in old.iter() {
            let (_, v) = item?;
            leaves.push(to_hash(&v, "log leaf")?);
        }
        let mut batch = sled::Batch::default();
        for (path, bytes) in keyring::tiles::tiles_for(&leaves, 0, leaves.len() as u64)? {
            let id = TileId::parse_path(&path)?;
            batch.insert(&tile_key(id.level, id.index)[..], bytes);
        }
        self.log_tiles.apply_batch(batch)?;
        self.log_meta.insert(TILES_MARK, &[1u8][..])?;
        self.db.flush()?;
        drop(old);
        self.db.drop_tree("log_leaves")?;
        self.db.flush()?;
        Ok(self)
    }

    /// Hashes `lo..hi` of tile level `level` (subtree roots of `256^level` leaves).
    pub(super) fn tile_hashes(&self, level: u8, lo: u64, hi: u64) -> Result<Vec<Hash>> {
        let width = keyring::tiles::TILE_WIDTH;
        let mut out = Vec::with_capacity(hi.saturating_sub(lo) as usize);
        if hi <= lo {
            return Ok(out);
        }
        let mut next = lo;
        for item in self
            .log_tiles
            .range(tile_key(level, lo / width)..=tile_key(level, (hi - 1) / width))
        {
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

/// The `log_meta` key marking a store whose `deks` rows were upgraded to version 2.
pub(super) const DEK_V2_MARK: &[u8] = b"dek_records_v2";

/// What [`SledStore::upgrade_dek_records`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DekUpgrade {
    /// Rows rewritten as version 2.
    pub rows: u64,
    /// Stanzas given their Recipient.
    pub stanzas: u64,
    /// Stanzas kept with an unknown recipient.
    pub unknown: u64,
}

pub(super) fn parse_recipient(text: &str, what: &str) -> Result<Recipient> {
    text.parse()
        .map_err(|_| Error::Corrupt(format!("{what} row: recipient")))
}

/// The one candidate a version 1 stanza names, if exactly one does (see
/// [`SledStore::upgrade_dek_records`]). `candidates` holds distinct whole keys.
pub(super) fn resolve_stanza<'a>(
    stanza: &keyring::WrappedKey,
    institution: &'a Recipient,
    candidates: &'a [Recipient],
) -> Option<&'a Recipient> {
    let tag = stanza.recipient_tag();
    if stanza.kind() == keyring::stanza::STANZA_OWN {
        return (institution.tag() == tag).then_some(institution);
    }
    let mut named = candidates.iter().filter(|r| r.tag() == tag);
    let first = named.next()?;
    // Candidates are distinct whole keys: a second one with this tag makes it ambiguous.
    named.next().is_none().then_some(first)
}

/// The `log_meta` key marking a log stored as tiles.
pub(super) const TILES_MARK: &[u8] = b"tiles";
pub(super) const PATIENT_INDEX_MARK: &[u8] = b"patient_objects";

pub(super) fn tile_key(level: u8, index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = level;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

pub(super) fn to_hash(v: &[u8], what: &str) -> Result<Hash> {
    <Hash>::try_from(v).map_err(|_| Error::Corrupt(what.into()))
}
