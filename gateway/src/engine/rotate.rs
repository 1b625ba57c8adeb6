//! Key rotation (`medgate rotate`): a record gets a new data key.
//!
//! For each record in scope: its plaintext is streamed out of its blobs (verified as any
//! read) and sealed again under a fresh DEK into blobs with fresh ids; the new DEK is
//! wrapped for the institution, the patient and every grant in force that covered the
//! record (revoked ones have no stanza left to carry over); every manifest that shared the
//! old DEK (copies) moves to the new blobs, each in one transaction with its `rotate` log
//! entry and an If-Match on its old ETag (a concurrent overwrite wins, the rotation of that
//! copy is skipped). The old blobs become orphans for gc. ETag, checksums, metadata and
//! times are unchanged: the content is the same.
//!
//! Resumable: a rotation that stopped part way (crash, restart) is run again with `since`,
//! the log index it started at; records with a `rotate` entry from there on are skipped.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use keyring::{DataKey, DekId, Manifest, Recipient};
use serde::{Deserialize, Serialize};

use crate::engine::record::{ChecksumCheck, Engine};
use crate::store::private::{EventKind, Precondition, PutCommit};
use crate::{now_ms, Error, Result};

/// Which records a rotation covers.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "scope", rename_all = "kebab-case")]
pub enum RotateScope {
    Object { bucket: String, key: String },
    Prefix { bucket: String, prefix: String },
    Patient { patient: String },
}

/// What a rotation did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RotateReport {
    /// Data keys replaced.
    pub rotated: u64,
    /// Manifests moved to a new key (a key shared by copies moves them all).
    pub manifests: u64,
    /// Records already rotated by the run being resumed.
    pub skipped: u64,
    /// Copies left alone because they changed during the rotation.
    pub raced: u64,
    /// Plaintext bytes re-sealed.
    pub bytes: u64,
    /// The log index this run started at (pass it as `since` to resume).
    pub started_at: u64,
}

impl Engine {
    /// Rotates the data keys of the records in `scope` (module docs). `progress` gets
    /// ("records", done, total).
    ///
    /// # Errors
    /// `NoSuchKey` / `NoSuchBucket` for an object scope that names nothing; store and
    /// public store failures (what was rotated before stays rotated).
    pub async fn rotate(
        self: &Arc<Self>,
        scope: &RotateScope,
        since: Option<u64>,
        progress: &(dyn Fn(&str, u64, u64) + Send + Sync),
    ) -> Result<RotateReport> {
        let mut report = RotateReport {
            started_at: self.private.log_size().await?,
            ..RotateReport::default()
        };
        let targets: Vec<(String, String)> = match scope {
            RotateScope::Object { bucket, key } => {
                self.manifest(bucket, key).await?;
                vec![(bucket.clone(), key.clone())]
            }
            RotateScope::Prefix { bucket, prefix } => {
                if self.private.bucket(bucket).await?.is_none() {
                    return Err(Error::NoSuchBucket(bucket.clone()));
                }
                let mut out = Vec::new();
                let mut after = String::new();
                loop {
                    let page = self
                        .private
                        .list_objects(bucket, prefix, &after, 1000)
                        .await?;
                    let Some(last) = page.last() else { break };
                    after = last.key.clone();
                    out.extend(page.into_iter().map(|o| (bucket.clone(), o.key)));
                }
                out
            }
            RotateScope::Patient { patient } => self
                .private
                .patient_objects(patient)
                .await?
                .into_iter()
                .map(|(b, k, _)| (b, k))
                .collect(),
        };
        // Records the run being resumed already rotated.
        let mut done: BTreeSet<(String, String)> = BTreeSet::new();
        if let Some(from) = since {
            let mut next = from;
            loop {
                let batch = self.private.events(next, 10_000).await?;
                let Some(last) = batch.last() else { break };
                next = last.seq + 1;
                for e in batch {
                    if e.kind == EventKind::Rotate {
                        if let (Some(b), Some(k)) = (e.bucket, e.key) {
                            done.insert((b, k));
                        }
                    }
                }
            }
        }
        // Every manifest by DEK: copies share one, and all of them move together.
        let mut by_dek: HashMap<DekId, Vec<(String, String, Manifest)>> = HashMap::new();
        if !targets.is_empty() {
            for b in self.private.list_buckets().await? {
                let mut after = String::new();
                loop {
                    let page = self.private.list_objects(&b.name, "", &after, 1000).await?;
                    let Some(last) = page.last() else { break };
                    after = last.key.clone();
                    for o in page {
                        by_dek.entry(o.manifest.dek_id).or_default().push((
                            b.name.clone(),
                            o.key,
                            o.manifest,
                        ));
                    }
                }
            }
        }
        let total = targets.len() as u64;
        let mut seen_deks: BTreeSet<DekId> = BTreeSet::new();
        for (i, (bucket, key)) in targets.into_iter().enumerate() {
            progress("records", i as u64, total);
            if done.contains(&(bucket.clone(), key.clone())) {
                report.skipped += 1;
                continue;
            }
            let Some(m) = self.private.manifest(&bucket, &key).await? else {
                continue; // deleted meanwhile
            };
            if !seen_deks.insert(m.dek_id) {
                continue; // a copy of a record this run rotated
            }
            let copies = by_dek.remove(&m.dek_id).unwrap_or_default();
            self.rotate_dek(&bucket, &key, &m, copies, &mut report)
                .await?;
        }
        progress("records", total, total);
        self.private.flush().await?;
        Ok(report)
    }

    async fn rotate_dek(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        m: &Manifest,
        mut copies: Vec<(String, String, Manifest)>,
        report: &mut RotateReport,
    ) -> Result<()> {
        if !copies.iter().any(|(b, k, _)| b == bucket && k == key) {
            copies.push((bucket.to_string(), key.to_string(), m.clone()));
        }
        let new_dek = DataKey::generate();
        // Re-seal every part under the new key, from the verified plaintext.
        let mut parts = Vec::with_capacity(m.parts.len());
        let mut start = 0u64;
        for part in &m.parts {
            let end = start + part.plaintext_len;
            let body = self.open(m, start, end).await?;
            let (new_part, _, _) = self
                .write_checked(
                    &new_dek,
                    body,
                    Some(part.plaintext_len),
                    None,
                    &ChecksumCheck::default(),
                )
                .await?;
            parts.push(new_part);
            start = end;
        }
        report.bytes += m.size;
        // Who keeps a key: the institution, the patient, grants in force that had one.
        let old_hex = m.dek_id.to_hex();
        let mut stanzas = vec![self.own_stanza(&new_dek)?];
        if let Some(p) = &m.patient {
            if let Some(rec) = self.private.patient(p).await? {
                let r: Recipient = rec
                    .recipient
                    .parse()
                    .map_err(|_| Error::Corrupt(format!("key of patient {p}")))?;
                stanzas.push(self.named_stanza(&r, r.wrap_key(&new_dek)?)?);
            }
        }
        let now = now_ms();
        let mut grants = Vec::new();
        for g in self.private.list_grants().await? {
            if g.revoked_ms.is_some()
                || g.expires_ms <= now
                || !g.records.iter().any(|(_, _, d)| *d == old_hex)
            {
                continue;
            }
            let r: Recipient = g
                .recipient
                .parse()
                .map_err(|_| Error::Corrupt(format!("recipient of grant {}", g.id)))?;
            stanzas.push(self.named_stanza(&r, r.wrap_key(&new_dek)?)?);
            grants.push(g);
        }
        crate::metrics::global()
            .stanza_wraps
            .inc_by(stanzas.len() as u64);
        let new_id = DekId::random();
        let mut first = true;
        let mut moved = 0;
        for (b, k, old) in copies {
            let manifest = Manifest {
                dek_id: new_id,
                parts: parts.clone(),
                ..old.clone()
            };
            manifest.validate()?;
            let mut entry = crate::engine::log::write_entry(
                EventKind::Rotate,
                "admin",
                &b,
                &k,
                Some(&manifest),
            );
            entry.detail = format!("new data key; {} bytes re-sealed", manifest.size);
            let result = self
                .durable(self.private.commit_put_logged(
                    PutCommit {
                        bucket: b.clone(),
                        key: k.clone(),
                        manifest: manifest.clone(),
                        stanzas: if first { stanzas.clone() } else { Vec::new() },
                        precondition: Precondition::ETag(old.etag.clone()),
                        upload: None,
                    },
                    entry,
                ))
                .await;
            match result {
                Ok(_) => {
                    first = false;
                    moved += 1;
                    report.manifests += 1;
                    self.patient_changed(Some(&manifest));
                }
                Err(Error::PreconditionFailed | Error::NoSuchKey { .. }) => report.raced += 1,
                Err(e) => {
                    if first {
                        for p in &parts {
                            self.forget_blob(p.blob).await;
                        }
                    }
                    return Err(e);
                }
            }
        }
        if moved == 0 {
            for p in &parts {
                self.forget_blob(p.blob).await;
            }
            return Ok(());
        }
        for mut g in grants {
            for r in g.records.iter_mut() {
                if r.2 == old_hex {
                    r.2 = new_id.to_hex();
                }
            }
            self.private.update_grant(g).await?;
        }
        report.rotated += 1;
        Ok(())
    }
}
