//! Upgrades of older rows that every store gets, whatever its adapter: the patient index
//! of a store made before it existed (at open), and DEK records version 2 (run by the
//! binary each time it opens the store).

use keyring::dek_record::{DekRecord, DekStanza, DEK_RECORD_V1};
use keyring::{Manifest, Recipient};

use super::rows::*;
use super::KvStore;
use crate::store::kv::{abort, prefix, Kv, Table, Tx};
use crate::store::private::{GrantRecord, PatientRecord};
use crate::{Error, Result};

/// What [`KvStore::upgrade_dek_records`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DekUpgrade {
    /// Rows rewritten as version 2.
    pub rows: u64,
    /// Stanzas given their Recipient.
    pub stanzas: u64,
    /// Stanzas kept with an unknown recipient.
    pub unknown: u64,
}

impl<K: Kv> KvStore<K> {
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
    /// store failures.
    pub fn upgrade_dek_records(
        &self,
        institution: &Recipient,
        others: &[Recipient],
    ) -> Result<DekUpgrade> {
        let mut report = DekUpgrade::default();
        if self.kv.get(Table::LogMeta, DEK_V2_MARK)?.is_some() {
            return Ok(report);
        }
        let mut candidates: Vec<Recipient> = vec![institution.clone()];
        candidates.extend(others.iter().cloned());
        for p in json_rows::<PatientRecord>(&self.kv, Table::Patients, "patient")? {
            candidates.push(parse_recipient(&p.recipient, "patient")?);
        }
        for g in json_rows::<GrantRecord>(&self.kv, Table::Grants, "grant")? {
            candidates.push(parse_recipient(&g.recipient, "grant")?);
        }
        let mut seen = std::collections::HashSet::new();
        candidates.retain(|r| seen.insert(r.to_bytes()));
        for item in self.kv.range(Table::Deks, prefix(b""))? {
            let (k, v) = item?;
            let rec = decode_dek(&v)?;
            if DekRecord::version_of(&v) != Some(DEK_RECORD_V1)
                && rec.stanzas.iter().all(|s| s.recipient().is_some())
            {
                continue;
            }
            let (stanzas, unknown) = self.kv.transact(&[Table::Deks], |tx: &dyn Tx| {
                let Some(v) = tx.get(Table::Deks, &k)? else {
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
                tx.put(Table::Deks, &k, &rec.encode())?;
                Ok((named, unknown))
            })?;
            report.rows += 1;
            report.stanzas += stanzas;
            report.unknown += unknown;
        }
        self.kv.batch(
            Table::LogMeta,
            vec![(DEK_V2_MARK.to_vec(), Some(vec![1u8]))],
        )?;
        self.kv.flush_blocking()?;
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
        if self.kv.get(Table::LogMeta, PATIENT_INDEX_MARK)?.is_some() {
            return Ok(self);
        }
        let mut writes = Vec::new();
        for item in self.kv.range(Table::Objects, prefix(b""))? {
            let (k, v) = item?;
            let m = Manifest::decode(&v).map_err(|_| Error::Corrupt("manifest".into()))?;
            if let Some(p) = &m.patient {
                writes.push((patient_object_key(p, &k), Some(Vec::new())));
            }
        }
        self.kv.batch(Table::PatientObjects, writes)?;
        self.kv.batch(
            Table::LogMeta,
            vec![(PATIENT_INDEX_MARK.to_vec(), Some(vec![1u8]))],
        )?;
        self.kv.flush_blocking()?;
        Ok(self)
    }
}

pub(crate) fn parse_recipient(text: &str, what: &str) -> Result<Recipient> {
    text.parse()
        .map_err(|_| Error::Corrupt(format!("{what} row: recipient")))
}

/// The one candidate a version 1 stanza names, if exactly one does (see
/// [`KvStore::upgrade_dek_records`]). `candidates` holds distinct whole keys.
pub(crate) fn resolve_stanza<'a>(
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
