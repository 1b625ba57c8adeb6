//! Patients, share requests and grants: DESIGN.md's "Sharing and consent".
//!
//! - A record belongs to a patient when its PUT carries `x-amz-meta-medgate-patient: ID`
//!   for a registered patient; the patient's key then gets a stanza on it, beside the
//!   institution's ([`Engine::record_stanzas`]).
//! - A share request names a patient, a scope, a recipient key, a purpose and an expiry.
//!   The patient approves it by signing a [`Grant`]; the gateway re-wraps the DEK of every
//!   record that is in the grant's scope *and* belongs to that patient, one stanza per
//!   record, without touching a blob ([`Engine::approve`]).
//! - Revocation removes the recipient's stanzas from every record of the patient that no
//!   other grant in force to the same recipient still covers. Expiry needs nobody: [`Engine::grant_in_force`] is checked on every access, and
//!   [`Engine::expire_grants`] removes the stanzas of grants that ended.
//!
//! Every step is an [`Event`] in the private store's append-only record.

use std::collections::HashSet;

use futures::StreamExt;

use keyring::consent::{
    registration_proof, verify_registration, Grant, ShareRequest, SignedDenial, SignedGrant,
    SignedRevocation,
};
use keyring::{DataKey, DekId, Identity, Recipient, Signature, WrappedKey};

use crate::engine::record::Engine;
use crate::store::private::{
    Actor, DekStanza, Event, EventKind, GrantRecord, PatientRecord, RequestState,
    ShareRequestRecord,
};
use crate::{now_ms, Error, Result};

mod indexes;

pub use indexes::{DEFAULT_INDEX_INTERVAL, MIN_INDEX_COVER};

/// The user-metadata key (after `x-amz-meta-`) that names a record's patient.
pub const PATIENT_META: &str = "medgate-patient";

/// What re-wrapping under a grant did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RewrapReport {
    pub grant_id: String,
    /// Records of the patient in the grant's scope, now readable by the recipient.
    pub rewrapped: u64,
    /// Records of the patient outside the scope (untouched).
    pub out_of_scope: u64,
}

impl Engine {
    /// The institution's fingerprint, as grants and requests name it.
    pub fn institution_id(&self) -> [u8; 32] {
        self.institution_recipient.fingerprint()
    }

    /// Registers `id` with its public key after checking the registration proof (a
    /// signature by that key over this institution and `id`).
    ///
    /// # Errors
    /// `InvalidArgument` for a bad id, key or proof, or an id already registered.
    pub async fn register_patient(
        &self,
        id: &str,
        recipient: &str,
        proof: &str,
        actor: &str,
    ) -> Result<PatientRecord> {
        // A backup holds off until every write and log entry below is made; the answer
        // waits until they are durable.
        self.durable(async {
            check_patient_id(id)?;
            let key: Recipient = recipient.parse().map_err(|_| {
                Error::InvalidArgument("the patient key is not a medgate1... recipient".into())
            })?;
            let sig = Signature::from_hex(proof.trim()).map_err(|_| {
                Error::InvalidArgument("the registration proof is not a hex signature".into())
            })?;
            verify_registration(&key, self.institution_id(), id, &sig).map_err(|_| {
                Error::InvalidArgument(format!(
                    "the registration proof does not verify for patient {id:?} at this institution; \
                     run `medgate patient keygen --institution RECIPIENT --id {id}` again"
                ))
            })?;
            if key.tag() == self.institution_recipient.tag() {
                return Err(Error::InvalidArgument(
                    "this key collides with the institution's; generate another".into(),
                ));
            }
            let rec = PatientRecord {
                id: id.to_string(),
                recipient: key.to_string(),
                registered_ms: now_ms(),
                proof: sig.to_hex(),
                index_seq: 0,
            };
            self.private.put_patient(rec.clone(), false).await?;
            self.log(Event {
                kind: EventKind::PatientRegister,
                actor: Actor::parse(actor),
                patient: Some(id.into()),
                detail: format!("key {}", key),
                ..Event::default()
            })
            .await?;
            Ok(rec)
        })
        .await
    }

    /// Changes a patient's key on the old key's signature (and the new key's proof): the
    /// new key gets a stanza on every record of the patient and the old key's go, so a
    /// lost or compromised old key stops opening anything. A key change older than 10
    /// minutes is refused, so it cannot be replayed later.
    ///
    /// # Errors
    /// `GrantRefused` when the change does not verify against the key on file.
    pub async fn change_patient_key(&self, change_text: &str) -> Result<u64> {
        // A backup holds off until every write and log entry below is made; the answer
        // waits until they are durable.
        self.durable(async {
            use keyring::consent::SignedKeyChange;
            let change = SignedKeyChange::from_text(change_text)
                .map_err(|e| Error::GrantRefused(format!("the key change does not parse: {e}")))?;
            let id = change.change.patient_id.clone();
            let rec = self
                .private
                .patient(&id)
                .await?
                .ok_or_else(|| Error::UnknownPatient(id.clone()))?;
            let old: Recipient = rec
                .recipient
                .parse()
                .map_err(|_| Error::Corrupt(format!("key of patient {id}")))?;
            if let Err(e) = change.verify(&old, self.institution_id(), &id, now_ms(), 600_000) {
                self.log(Event {
                    kind: EventKind::KeyChangeRefused,
                    actor: Actor::Patient(id.to_string()),
                    patient: Some(id.clone()),
                    detail: e.to_string(),
                    ..Event::default()
                })
                .await?;
                return Err(Error::GrantRefused(format!("key change: {e}")));
            }
            let new = change.change.new.clone();
            let proof = change.new_proof.to_hex();
            self.replace_patient_key(
                rec,
                old,
                new,
                proof,
                Event {
                    kind: EventKind::KeyChange,
                    actor: Actor::Patient(id.to_string()),
                    ..Event::default()
                },
            )
            .await
        })
        .await
    }

    /// Break glass: an admin replaces the key of a patient who lost theirs, without the old
    /// key's signature. The new key must come with its registration proof (so the patient
    /// holds it), and the reason is required: both go into the log entry
    /// (`key-break-glass`, with the admin as actor), which the patient sees in their audit.
    /// Records are re-wrapped to the new key and the old key's stanzas removed, as in a
    /// signed key change; grants stand (they were the patient's consent).
    ///
    /// # Errors
    /// `UnknownPatient`; `InvalidArgument` for a missing reason; `GrantRefused` for a proof
    /// that does not verify.
    pub async fn break_glass_patient_key(
        &self,
        id: &str,
        recipient: &str,
        proof: &str,
        reason: &str,
        admin: &str,
    ) -> Result<u64> {
        // A backup holds off until every write and log entry below is made; the answer
        // waits until they are durable.
        self.durable(async {
            let reason = reason.trim();
            if reason.len() < 10 || reason.chars().any(char::is_control) {
                return Err(Error::InvalidArgument(
                    "break glass needs a reason of at least 10 characters (it is logged for the patient to see)"
                        .into(),
                ));
            }
            let rec = self
                .private
                .patient(id)
                .await?
                .ok_or_else(|| Error::UnknownPatient(id.to_string()))?;
            let old: Recipient = rec
                .recipient
                .parse()
                .map_err(|_| Error::Corrupt(format!("key of patient {id}")))?;
            let new: Recipient = recipient.trim().parse().map_err(|_| {
                Error::InvalidArgument("the new key is not a medgate1... recipient".into())
            })?;
            let sig = Signature::from_hex(proof.trim())
                .map_err(|_| Error::GrantRefused("the registration proof does not parse".into()))?;
            keyring::consent::verify_registration(&new, self.institution_id(), id, &sig).map_err(
                |_| {
                    Error::GrantRefused(
                        "the registration proof does not verify for this key, patient and institution"
                            .into(),
                    )
                },
            )?;
            self.replace_patient_key(
                rec,
                old,
                new,
                sig.to_hex(),
                Event {
                    kind: EventKind::KeyBreakGlass,
                    actor: Actor::NamedAdmin(admin.to_string()),
                    detail: format!("reason: {reason}; "),
                    ..Event::default()
                },
            )
            .await
        })
        .await
    }

    /// Moves patient `rec` from key `old` to `new`: every record re-wrapped, the old key's
    /// stanzas removed, the registry updated, `event` logged (its detail completed), the
    /// index moved to the new key's name.
    async fn replace_patient_key(
        &self,
        mut rec: PatientRecord,
        old: Recipient,
        new: Recipient,
        proof_hex: String,
        mut event: Event,
    ) -> Result<u64> {
        let id = rec.id.clone();
        if new.tag() == self.institution_recipient.tag() {
            return Err(Error::GrantRefused(
                "the new key collides with the institution's".into(),
            ));
        }
        let mut rewrapped = 0;
        for (_, _, m) in self.private.patient_objects(&id).await? {
            let dek = self.unwrap_dek(m.dek_id).await?;
            self.private.remove_stanzas(m.dek_id, &old).await?;
            self.private
                .add_stanzas(
                    m.dek_id,
                    vec![self.named_stanza(&new, new.wrap_key(&dek)?)?],
                )
                .await?;
            rewrapped += 1;
        }
        rec.recipient = new.to_string();
        rec.proof = proof_hex;
        self.private.put_patient(rec, true).await?;
        event.patient = Some(id.clone());
        event.detail.push_str(&format!(
            "key {old} replaced by {new}; {rewrapped} records re-wrapped"
        ));
        self.log(event).await?;
        self.private.flush().await?;
        // The index moves to the new key's name at once, in a tick of its own (with the
        // cover of other patients' indexes), and the old key's index goes.
        self.publish_index(&id).await?;
        let old_name = keyring::patient_index::index_name(&self.institution, &old)?;
        match self
            .public
            .delete(&object_store::path::Path::from(old_name))
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(rewrapped)
    }

    async fn patient_key(&self, id: &str) -> Result<Recipient> {
        let rec = self
            .private
            .patient(id)
            .await?
            .ok_or_else(|| Error::UnknownPatient(id.to_string()))?;
        rec.recipient
            .parse()
            .map_err(|_| Error::Corrupt(format!("key of patient {id}")))
    }

    /// The patient a write at `bucket/key` with `metadata` labels its record with (the
    /// `x-amz-meta-medgate-patient` header or a `[[patient_prefixes]]` match), without
    /// looking at the registry.
    ///
    /// # Errors
    /// `InvalidArgument` when the header and the prefix name different patients.
    pub fn labelled_patient(
        &self,
        bucket: &str,
        key: &str,
        metadata: &[(String, String)],
    ) -> Result<Option<String>> {
        let named = metadata
            .iter()
            .find(|(k, _)| k == PATIENT_META)
            .map(|(_, v)| v.clone());
        let mapped = self
            .config()
            .patient_prefixes
            .iter()
            .filter(|p| p.bucket == bucket && key.starts_with(&p.prefix))
            .max_by_key(|p| p.prefix.len())
            .map(|p| p.patient.clone());
        let id = match (named, mapped) {
            (Some(n), Some(m)) if n != m => {
                return Err(Error::InvalidArgument(format!(
                    "{bucket}/{key} is under the prefix of patient {m:?} but names patient {n:?}"
                )))
            }
            (Some(n), _) => n,
            (None, Some(m)) => m,
            (None, None) => return Ok(None),
        };
        Ok(Some(id))
    }

    /// The patient a write names in its metadata, checked against the registry.
    ///
    /// # Errors
    /// `UnknownPatient` for an id nobody registered.
    pub async fn record_patient(
        &self,
        bucket: &str,
        key: &str,
        metadata: &[(String, String)],
    ) -> Result<Option<(String, Recipient)>> {
        let Some(id) = self.labelled_patient(bucket, key, metadata)? else {
            return Ok(None);
        };
        let recipient = self.patient_key(&id).await?;
        Ok(Some((id, recipient)))
    }

    /// The stanzas a new record gets besides the institution's: its patient's, and the
    /// recipients of the patient's grants in force that cover future records at this
    /// location.
    pub(crate) async fn record_stanzas(
        &self,
        patient: &Option<(String, Recipient)>,
        bucket: &str,
        key: &str,
        dek: &DataKey,
    ) -> Result<Vec<DekStanza>> {
        let Some((id, patient_key)) = patient else {
            return Ok(Vec::new());
        };
        let mut out = vec![self.named_stanza(patient_key, patient_key.wrap_key(dek)?)?];
        let now = now_ms();
        for g in self.private.list_grants().await? {
            if &g.patient_id != id || g.revoked_ms.is_some() || g.expires_ms <= now {
                continue;
            }
            let signed = SignedGrant::from_text(&g.grant)?;
            if signed.grant.scope.include_future && signed.grant.scope.covers(bucket, key) {
                let r = &signed.grant.recipient;
                out.push(self.named_stanza(r, r.wrap_key(dek)?)?);
            }
        }
        Ok(out)
    }

    /// Stores a share request (made by an admin on behalf of a recipient, or by a peer).
    ///
    /// # Errors
    /// `InvalidArgument` for a request for another institution, an unknown patient, an
    /// expired request or one already stored.
    pub async fn create_request(&self, text: &str, actor: &str) -> Result<ShareRequestRecord> {
        self.store_request(text, actor, true).await
    }

    /// A peer's share request: stored like [`Engine::create_request`], but for an
    /// unregistered patient id too (it stays pending until it expires: nobody can sign a
    /// grant for it), so that the peer's answer does not tell who is a patient here.
    ///
    /// # Errors
    /// As [`Engine::create_request`], without `UnknownPatient`.
    pub async fn create_peer_request(&self, text: &str, actor: &str) -> Result<ShareRequestRecord> {
        self.store_request(text, actor, false).await
    }

    async fn store_request(
        &self,
        text: &str,
        actor: &str,
        registered_only: bool,
    ) -> Result<ShareRequestRecord> {
        // A backup holds off until every write and log entry below is made; the answer
        // waits until they are durable.
        self.durable(async {
            let req = ShareRequest::from_text(text)
                .map_err(|e| Error::InvalidArgument(format!("share request: {e}")))?;
            if req.institution != self.institution_id() {
                return Err(Error::InvalidArgument(
                    "the share request names another institution".into(),
                ));
            }
            // Looked up either way, so that both kinds of id cost the same.
            let known = self.private.patient(&req.patient_id).await?.is_some();
            if registered_only && !known {
                return Err(Error::UnknownPatient(req.patient_id.clone()));
            }
            if req.expires_ms <= now_ms() {
                return Err(Error::InvalidArgument(
                    "the share request has expired".into(),
                ));
            }
            let rec = ShareRequestRecord {
                id: hex::encode(req.hash()),
                request: req.to_text(),
                patient_id: req.patient_id.clone(),
                state: RequestState::Pending,
                created_ms: now_ms(),
                grant: None,
            };
            self.private.insert_request(rec.clone()).await?;
            self.log(Event {
                kind: EventKind::ShareRequest,
                actor: Actor::parse(actor),
                patient: Some(req.patient_id.clone()),
                detail: format!(
                    "request {} for {} ({}: {})",
                    rec.id, req.recipient, req.purpose_code, req.purpose_text
                ),
                ..Event::default()
            })
            .await?;
            Ok(rec)
        })
        .await
    }

    /// A stored request, decoded.
    ///
    /// # Errors
    /// `InvalidArgument` when there is no such request.
    pub async fn request(&self, id: &str) -> Result<(ShareRequestRecord, ShareRequest)> {
        let rec = self
            .private
            .request(id)
            .await?
            .ok_or_else(|| Error::InvalidArgument(format!("no share request {id}")))?;
        let req = ShareRequest::from_text(&rec.request)?;
        Ok((rec, req))
    }

    /// Accepts a patient's signed grant for a pending request and re-wraps the DEK of every
    /// record of that patient in its scope for the recipient.
    ///
    /// # Errors
    /// `GrantRefused` naming why (signature, key, request, scope, expiry, replay); store
    /// failures. A refusal is logged.
    pub async fn approve(&self, request_id: &str, grant_text: &str) -> Result<RewrapReport> {
        // A backup holds off until every write and log entry below is made; the answer
        // waits until they are durable.
        self.durable(async {
            let result = self.approve_inner(request_id, grant_text).await;
            if let Err(e) = &result {
                let patient = self.private.request(request_id).await.ok().flatten();
                self.log(Event {
                    kind: EventKind::GrantRefused,
                    actor: Actor::UnverifiedPatient,
                    patient: patient.map(|r| r.patient_id),
                    detail: format!("request {request_id}: {e}"),
                    ..Event::default()
                })
                .await?;
            }
            result
        })
        .await
    }

    async fn approve_inner(&self, request_id: &str, grant_text: &str) -> Result<RewrapReport> {
        let (rec, req) = self.request(request_id).await?;
        let signed = SignedGrant::from_text(grant_text)
            .map_err(|e| Error::GrantRefused(format!("the grant does not parse: {e}")))?;
        let patient_key = self.patient_key(&rec.patient_id).await?;
        let now = now_ms();
        signed
            .check(&patient_key, self.institution_id(), &req, now)
            .map_err(|e| Error::GrantRefused(e.to_string()))?;
        let recipient = signed.grant.recipient.clone();
        if recipient.tag() == self.institution_recipient.tag()
            || recipient.tag() == patient_key.tag()
        {
            return Err(Error::GrantRefused(
                "the recipient key collides with the institution's or the patient's".into(),
            ));
        }
        let grant_id = hex::encode(signed.id());
        let mut record = GrantRecord {
            id: grant_id.clone(),
            grant: signed.to_text(),
            request_id: rec.id.clone(),
            patient_id: rec.patient_id.clone(),
            recipient: recipient.to_string(),
            issued_ms: now,
            expires_ms: signed.grant.expires_ms,
            revoked_ms: None,
            records: Vec::new(),
        };
        // One transaction moves the request out of pending and stores the grant id, so a
        // grant (or the request) can be used once only.
        self.private
            .decide_request(request_id, RequestState::Approved, Some(record.clone()))
            .await
            .map_err(|e| match e {
                Error::InvalidArgument(m) => Error::GrantRefused(m),
                other => other,
            })?;
        let mut report = RewrapReport {
            grant_id: grant_id.clone(),
            ..RewrapReport::default()
        };
        // One stanza per data key (copies share one), written and logged in batches made
        // durable by the one flush at the end, before the patient is answered.
        let in_scope: Vec<_> = self
            .private
            .patient_objects(&rec.patient_id)
            .await?
            .into_iter()
            .filter(|(bucket, key, _)| {
                let covered = signed.grant.scope.covers(bucket, key);
                if !covered {
                    report.out_of_scope += 1;
                }
                covered
            })
            .collect();
        let mut entries = Vec::new();
        let mut wrapped: std::collections::HashMap<DekId, bool> = std::collections::HashMap::new();
        // One ephemeral key for the whole approval (batch stanzas, each with its own salt and
        // wrap key): one X25519 operation, not two per record.
        let wrapper = recipient.batch_wrapper()?;
        for chunk in in_scope.chunks(REWRAP_LOG_BATCH) {
            let mut batch = Vec::new();
            let mut in_batch = std::collections::HashSet::new();
            for (_, _, m) in chunk {
                if wrapped.contains_key(&m.dek_id) || !in_batch.insert(m.dek_id) {
                    continue;
                }
                let dek = self.unwrap_dek(m.dek_id).await?;
                batch.push((m.dek_id, self.named_stanza(&recipient, wrapper.wrap(&dek))?));
            }
            crate::metrics::global()
                .stanza_wraps
                .inc_by(batch.len() as u64);
            let ids: Vec<DekId> = batch.iter().map(|(d, _)| *d).collect();
            for (id, ok) in ids
                .into_iter()
                .zip(self.private.add_stanzas_batch(batch).await?)
            {
                wrapped.insert(id, ok);
            }
            for (bucket, key, m) in chunk {
                if !wrapped.get(&m.dek_id).copied().unwrap_or(false) {
                    continue;
                }
                report.rewrapped += 1;
                record
                    .records
                    .push((bucket.clone(), key.clone(), m.dek_id.to_hex()));
                entries.push(Event {
                    time_ms: now_ms(),
                    kind: EventKind::Rewrap,
                    actor: Actor::Gateway,
                    patient: Some(rec.patient_id.clone()),
                    bucket: Some(bucket.clone()),
                    key: Some(key.clone()),
                    grant: Some(grant_id.clone()),
                    detail: format!("wrapped for {recipient}"),
                    ..Event::default()
                });
            }
            self.private
                .append_events(std::mem::take(&mut entries))
                .await?;
        }
        self.private.update_grant(record).await?;
        entries.push(Event {
            time_ms: now_ms(),
            kind: EventKind::Grant,
            actor: Actor::Patient(rec.patient_id.clone()),
            patient: Some(rec.patient_id.clone()),
            grant: Some(grant_id),
            detail: format!(
                "request {} approved for {recipient} until {}; {} records re-wrapped",
                rec.id,
                rfc3339(signed.grant.expires_ms),
                report.rewrapped
            ),
            ..Event::default()
        });
        self.private.append_events(entries).await?;
        Ok(report)
    }

    /// Records the patient's signed refusal of a pending request.
    ///
    /// # Errors
    /// `GrantRefused` for a denial that does not verify; the request not pending.
    pub async fn deny(&self, request_id: &str, denial_text: &str) -> Result<()> {
        // A backup holds off until every write and log entry below is made; the answer
        // waits until they are durable.
        self.durable(async {
            let (rec, req) = self.request(request_id).await?;
            let denial = SignedDenial::from_text(denial_text)
                .map_err(|e| Error::GrantRefused(format!("the denial does not parse: {e}")))?;
            let patient_key = self.patient_key(&rec.patient_id).await?;
            denial
                .check(&patient_key, &req)
                .map_err(|e| Error::GrantRefused(e.to_string()))?;
            self.private
                .decide_request(request_id, RequestState::Denied, None)
                .await?;
            self.log(Event {
                kind: EventKind::Denial,
                actor: Actor::Patient(rec.patient_id.clone()),
                patient: Some(rec.patient_id),
                detail: format!("request {request_id} denied"),
                ..Event::default()
            })
            .await?;
            Ok(())
        })
        .await
    }

    /// Revokes a grant on the patient's signed word: the recipient's stanzas go from
    /// every record of the patient (including records added under `include_future`) that
    /// no other grant in force to the same recipient covers. Returns how many went.
    ///
    /// # Errors
    /// `GrantRefused` for a revocation that does not verify or names no known grant.
    pub async fn revoke(&self, revocation_text: &str) -> Result<u64> {
        // A backup holds off until every write and log entry below is made; the answer
        // waits until they are durable.
        self.durable(async {
            let rev = SignedRevocation::from_text(revocation_text)
                .map_err(|e| Error::GrantRefused(format!("the revocation does not parse: {e}")))?;
            let grant_id = hex::encode(rev.revocation.grant_id);
            let mut record = self
                .private
                .grant(&grant_id)
                .await?
                .ok_or_else(|| Error::GrantRefused(format!("no grant {grant_id}")))?;
            let signed = SignedGrant::from_text(&record.grant)?;
            let patient_key = self.patient_key(&record.patient_id).await?;
            rev.check(&patient_key, &signed)
                .map_err(|e| Error::GrantRefused(e.to_string()))?;
            let removed = self.remove_grant_stanzas(&record, &signed).await?;
            record.revoked_ms = Some(now_ms());
            self.private.update_grant(record.clone()).await?;
            self.log(Event {
                kind: EventKind::Revocation,
                actor: Actor::Patient(record.patient_id.clone()),
                patient: Some(record.patient_id.clone()),
                grant: Some(grant_id),
                detail: format!("{removed} stanzas of {} removed", record.recipient),
                ..Event::default()
            })
            .await?;
            Ok(removed)
        })
        .await
    }

    /// Removes the recipient's stanzas from every record of the patient that no other grant
    /// in force to the same recipient still covers; returns how many stanzas went.
    ///
    /// A record stays covered by another grant when that grant re-wrapped its data key at
    /// approval (its `records`), or covers its location and future records. Copies share a
    /// data key, so a key is kept when any record using it is still covered.
    async fn remove_grant_stanzas(
        &self,
        record: &GrantRecord,
        signed: &SignedGrant,
    ) -> Result<u64> {
        let now = now_ms();
        let mut others = Vec::new();
        for g in self.private.list_grants().await? {
            if g.id != record.id
                && g.recipient == record.recipient
                && g.revoked_ms.is_none()
                && g.expires_ms > now
            {
                let other = SignedGrant::from_text(&g.grant)?;
                others.push((g, other));
            }
        }
        let mut kept: HashSet<DekId> = HashSet::new();
        for (g, _) in &others {
            for (_, _, dek) in &g.records {
                kept.insert(
                    DekId::from_hex(dek)
                        .map_err(|_| Error::Corrupt(format!("a DEK id of grant {}", g.id)))?,
                );
            }
        }
        let objects = self.private.patient_objects(&record.patient_id).await?;
        for (bucket, key, m) in &objects {
            let future = others.iter().any(|(g, s)| {
                g.patient_id == record.patient_id
                    && s.grant.scope.include_future
                    && s.grant.scope.covers(bucket, key)
            });
            if future {
                kept.insert(m.dek_id);
            }
        }
        let mut removed = 0u64;
        let mut done = HashSet::new();
        for (_, _, m) in objects {
            if kept.contains(&m.dek_id) || !done.insert(m.dek_id) {
                continue;
            }
            removed += self
                .private
                .remove_stanzas(m.dek_id, &signed.grant.recipient)
                .await? as u64;
        }
        Ok(removed)
    }

    /// Whether grant `id` may be used now: known, not revoked, not expired.
    ///
    /// # Errors
    /// `GrantRefused` naming why.
    pub async fn grant_in_force(&self, id: &str) -> Result<GrantRecord> {
        let rec = self
            .private
            .grant(id)
            .await?
            .ok_or_else(|| Error::GrantRefused(format!("no grant {id}")))?;
        // Expiry first: the sweeper also stamps `revoked_ms` on grants that expired, and
        // the reader should hear why it really ended.
        if rec.expires_ms <= now_ms() {
            return Err(Error::GrantRefused(format!("grant {id} has expired")));
        }
        if rec.revoked_ms.is_some() {
            return Err(Error::GrantRefused(format!("grant {id} was revoked")));
        }
        Ok(rec)
    }

    /// Removes the stanzas of grants that ended (run periodically by the server; access
    /// checks [`Engine::grant_in_force`] anyway). Returns how many grants it closed.
    ///
    /// # Errors
    /// Store failures.
    pub async fn expire_grants(&self) -> Result<u64> {
        // A backup holds off until every write and log entry below is made; the answer
        // waits until they are durable.
        self.durable(async {
            let now = now_ms();
            let mut closed = 0;
            for mut g in self.private.list_grants().await? {
                if g.revoked_ms.is_some() || g.expires_ms > now {
                    continue;
                }
                let signed = SignedGrant::from_text(&g.grant)?;
                let removed = self.remove_grant_stanzas(&g, &signed).await?;
                g.revoked_ms = Some(now);
                self.private.update_grant(g.clone()).await?;
                self.log(Event {
                    kind: EventKind::Expiry,
                    actor: Actor::Gateway,
                    patient: Some(g.patient_id.clone()),
                    grant: Some(g.id.clone()),
                    detail: format!("grant ended; {removed} stanzas removed"),
                    ..Event::default()
                })
                .await?;
                closed += 1;
            }
            Ok(closed)
        })
        .await
    }

    /// The DEK of a record, unwrapped with the institution's stanza.
    pub(crate) async fn unwrap_dek(&self, dek: DekId) -> Result<DataKey> {
        let stanzas = self.private.stanzas(dek).await?;
        self.institution_key(dek, &stanzas)
    }

    /// Appends an event with the current time; returns once it is durable (group commit,
    /// see `log::Appender`).
    pub(crate) async fn log(&self, mut event: Event) -> Result<u64> {
        event.time_ms = now_ms();
        self.appender.append(event).await
    }
}

/// Re-wrap log entries written per transaction by an approval.
const REWRAP_LOG_BATCH: usize = 1024;

/// A patient id: 1 to 128 characters from `[A-Za-z0-9._-]`, so it is safe in metadata
/// headers, file names and log lines.
///
/// # Errors
/// `InvalidArgument` saying what is allowed.
pub fn check_patient_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(Error::InvalidArgument(format!(
            "patient id {id:?}: use 1 to 128 letters, digits, '.', '_' or '-'"
        )));
    }
    Ok(())
}

/// The patient's side of registration: the proof to hand to the institution.
pub fn registration_for(patient: &Identity, institution: &Recipient, id: &str) -> String {
    registration_proof(patient, institution.fingerprint(), id).to_hex()
}

/// The patient's side of approval: a signed grant for `request`, as text.
pub fn grant_for(patient: &Identity, request: &ShareRequest) -> String {
    Grant::for_request(request, &patient.recipient(), now_ms())
        .sign(patient)
        .to_text()
}

/// Reads a whole record from the public store with nothing but its manifest and its DEK:
/// what a recipient (or a patient pulling their records) does without the institution's
/// key; see `engine::read::read_record`: each part's blob must rebuild the
/// part's Merkle root before any of its plaintext goes to `out`.
///
/// # Errors
/// `Integrity` for a blob that does not match its root or does not open; public store
/// failures; I/O errors of `out`.
pub async fn read_record(
    public: &crate::store::public::PublicStore,
    manifest: &keyring::Manifest,
    dek: &DataKey,
    out: &mut (dyn std::io::Write + Send),
) -> Result<u64> {
    crate::engine::read::read_record(public, manifest, dek, out).await
}

impl Engine {
    /// A recipient's read of one shared record: checks that grant `grant_id` is in force,
    /// that the record is its patient's and in its scope, and returns the record's
    /// manifest and the recipient's stanza (the caller decrypts with its own key). The
    /// read is logged.
    ///
    /// # Errors
    /// `GrantRefused` naming why; `NoSuchKey`.
    pub async fn exchange(
        &self,
        grant_id: &str,
        bucket: &str,
        key: &str,
        actor: &str,
    ) -> Result<(keyring::Manifest, WrappedKey)> {
        let g = self.grant_in_force(grant_id).await?;
        let signed = SignedGrant::from_text(&g.grant)?;
        let m = self
            .private
            .manifest(bucket, key)
            .await?
            .ok_or_else(|| Error::NoSuchKey {
                bucket: bucket.into(),
                key: key.into(),
            })?;
        if m.patient.as_deref() != Some(g.patient_id.as_str())
            || !signed
                .grant
                .scope
                .covers_version(bucket, key, m.last_modified_ms, g.issued_ms)
        {
            return Err(Error::GrantRefused(format!(
                "{bucket}/{key} (this version) is not covered by grant {grant_id}"
            )));
        }
        let recipient = &signed.grant.recipient;
        let stanza = self
            .private
            .stanzas(m.dek_id)
            .await?
            .into_iter()
            .find(|s| s.is_for(recipient))
            .map(DekStanza::into_wrapped)
            .ok_or_else(|| {
                Error::GrantRefused(format!("{bucket}/{key} has no key for this grant"))
            })?;
        self.log(Event {
            kind: EventKind::Read,
            actor: Actor::parse(actor),
            patient: Some(g.patient_id.clone()),
            bucket: Some(bucket.into()),
            key: Some(key.into()),
            grant: Some(grant_id.into()),
            detail: format!("read by {}", g.recipient),
            ..Event::default()
        })
        .await?;
        self.private.flush().await?;
        Ok((m, stanza))
    }
}

/// `ms` since the epoch as an RFC 3339 UTC time (`2026-12-07T14:40:00Z`), for texts that
/// are stored and shown to others.
pub(crate) fn rfc3339(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.replace_nanosecond(0)
                .ok()?
                .format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ms} ms after the epoch"))
}
