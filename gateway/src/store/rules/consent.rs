//! Patients, share requests, grants, stanzas, re-pinned peers: [`ConsentRows`] over any
//! [`Kv`]. A request is decided once, and a grant id is stored once (no replay).

use async_trait::async_trait;
use keyring::dek_record::DekStanza;
use keyring::{DekId, Recipient};

use super::rows::*;
use super::KvStore;
use crate::store::kv::{abort, prefix, Kv, Table, Tx};
use crate::store::private::{
    AdminRows, ConsentRows, GrantRecord, PatientRecord, RequestState, ShareRequestRecord,
};
use crate::{Error, Result};

#[async_trait]
impl<K: Kv> ConsentRows for KvStore<K> {
    async fn put_patient(&self, record: PatientRecord, replace: bool) -> Result<()> {
        let _gate = self.gate.read().await;
        let value = encode_json(&record)?;
        if replace {
            return self.kv.batch(
                Table::Patients,
                vec![(record.id.as_bytes().to_vec(), Some(value))],
            );
        }
        self.kv.transact(&[Table::Patients], |tx: &dyn Tx| {
            if tx.get(Table::Patients, record.id.as_bytes())?.is_some() {
                return abort(Error::InvalidArgument(format!(
                    "patient {:?} is already registered; changing their key needs the old key's signature",
                    record.id
                )));
            }
            tx.put(Table::Patients, record.id.as_bytes(), &value)
        })
    }

    async fn patient(&self, id: &str) -> Result<Option<PatientRecord>> {
        json_row(&self.kv, Table::Patients, id.as_bytes(), "patient")
    }

    async fn list_patients(&self) -> Result<Vec<PatientRecord>> {
        json_rows(&self.kv, Table::Patients, "patient")
    }

    async fn insert_request(&self, record: ShareRequestRecord) -> Result<()> {
        let _gate = self.gate.read().await;
        let value = encode_json(&record)?;
        self.kv.transact(&[Table::Requests], |tx: &dyn Tx| {
            if tx.get(Table::Requests, record.id.as_bytes())?.is_some() {
                return abort(Error::InvalidArgument(format!(
                    "share request {} was already made",
                    record.id
                )));
            }
            tx.put(Table::Requests, record.id.as_bytes(), &value)
        })
    }

    async fn request(&self, id: &str) -> Result<Option<ShareRequestRecord>> {
        json_row(&self.kv, Table::Requests, id.as_bytes(), "share request")
    }

    async fn list_requests(&self) -> Result<Vec<ShareRequestRecord>> {
        json_rows(&self.kv, Table::Requests, "share request")
    }

    async fn decide_request(
        &self,
        id: &str,
        state: RequestState,
        grant: Option<GrantRecord>,
    ) -> Result<()> {
        let _gate = self.gate.read().await;
        let grant_row = match &grant {
            Some(g) => Some((g.id.clone(), encode_json(g)?)),
            None => None,
        };
        self.kv
            .transact(&[Table::Requests, Table::Grants], |tx: &dyn Tx| {
                let Some(v) = tx.get(Table::Requests, id.as_bytes())? else {
                    return abort(Error::InvalidArgument(format!("no share request {id}")));
                };
                let mut rec: ShareRequestRecord =
                    decode_json(&v, "share request").or_else(abort)?;
                if rec.state != RequestState::Pending {
                    return abort(Error::InvalidArgument(format!(
                        "share request {id} was already decided"
                    )));
                }
                if let Some((gid, row)) = &grant_row {
                    if tx.get(Table::Grants, gid.as_bytes())?.is_some() {
                        return abort(Error::InvalidArgument(format!(
                            "grant {gid} was already used"
                        )));
                    }
                    tx.put(Table::Grants, gid.as_bytes(), row)?;
                    rec.grant = Some(gid.clone());
                }
                rec.state = state;
                tx.put(
                    Table::Requests,
                    id.as_bytes(),
                    &encode_json(&rec).or_else(abort)?,
                )?;
                Ok(())
            })
    }

    async fn grant(&self, id: &str) -> Result<Option<GrantRecord>> {
        json_row(&self.kv, Table::Grants, id.as_bytes(), "grant")
    }

    async fn list_grants(&self) -> Result<Vec<GrantRecord>> {
        json_rows(&self.kv, Table::Grants, "grant")
    }

    async fn update_grant(&self, record: GrantRecord) -> Result<()> {
        let _gate = self.gate.read().await;
        self.kv.batch(
            Table::Grants,
            vec![(record.id.as_bytes().to_vec(), Some(encode_json(&record)?))],
        )
    }

    async fn add_stanzas(&self, dek: DekId, stanzas: Vec<DekStanza>) -> Result<bool> {
        let _gate = self.gate.read().await;
        self.kv.transact(&[Table::Deks], |tx: &dyn Tx| {
            let Some(v) = tx.get(Table::Deks, &dek.0)? else {
                return Ok(false);
            };
            let mut rec = decode_dek(&v).or_else(abort)?;
            rec.stanzas.extend(stanzas.iter().cloned());
            tx.put(Table::Deks, &dek.0, &rec.encode())?;
            Ok(true)
        })
    }

    async fn add_stanzas_batch(&self, batch: Vec<(DekId, DekStanza)>) -> Result<Vec<bool>> {
        let _gate = self.gate.read().await;
        self.kv.transact(&[Table::Deks], |tx: &dyn Tx| {
            let mut out = Vec::with_capacity(batch.len());
            for (dek, stanza) in &batch {
                let Some(v) = tx.get(Table::Deks, &dek.0)? else {
                    out.push(false);
                    continue;
                };
                let mut rec = decode_dek(&v).or_else(abort)?;
                rec.stanzas.push(stanza.clone());
                tx.put(Table::Deks, &dek.0, &rec.encode())?;
                out.push(true);
            }
            Ok(out)
        })
    }

    async fn remove_stanzas(&self, dek: DekId, recipient: &Recipient) -> Result<usize> {
        let _gate = self.gate.read().await;
        self.kv.transact(&[Table::Deks], |tx: &dyn Tx| {
            let Some(v) = tx.get(Table::Deks, &dek.0)? else {
                return Ok(0);
            };
            let mut rec = decode_dek(&v).or_else(abort)?;
            let before = rec.stanzas.len();
            rec.stanzas.retain(|s| !s.is_for(recipient));
            let removed = before - rec.stanzas.len();
            if removed > 0 {
                tx.put(Table::Deks, &dek.0, &rec.encode())?;
            }
            Ok(removed)
        })
    }

    async fn peer_keys(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for row in self.kv.range(Table::PeerKeys, prefix(b""))? {
            let (k, v) = row?;
            let text = |b: Vec<u8>| {
                String::from_utf8(b).map_err(|_| Error::Corrupt("peer_keys: not UTF-8".into()))
            };
            out.push((text(k)?, text(v)?));
        }
        Ok(out)
    }

    async fn put_peer_key(&self, peer: &str, recipient: &str) -> Result<()> {
        {
            let _gate = self.gate.read().await;
            self.kv.batch(
                Table::PeerKeys,
                vec![(
                    peer.as_bytes().to_vec(),
                    Some(recipient.as_bytes().to_vec()),
                )],
            )?;
        }
        self.flush().await
    }
}
