//! What the fronts read and change through the engine instead of the private store: buckets,
//! access keys, listings, uploads, patients, grants and the log's proofs. Each method is the
//! store call it names (a change is flushed before it returns); the fronts never hold the
//! store itself.

use std::sync::Arc;

use keyring::{ConsistencyProof, DekId, InclusionProof, Manifest, Recipient};

use crate::engine::record::Engine;
use crate::engine::remote::Remote;
use crate::store::private::{
    AccessKeyRecord, BucketInfo, DekStanza, Event, GrantRecord, ListedObject, PartRecord,
    PatientRecord, UploadRecord,
};
use crate::Result;

impl Engine {
    /// An access key's record (its secret sealed), if it exists.
    pub async fn access_key(&self, id: &str) -> Result<Option<AccessKeyRecord>> {
        self.private.access_key(id).await
    }

    /// Every local bucket.
    pub async fn list_buckets(&self) -> Result<Vec<BucketInfo>> {
        self.private.list_buckets().await
    }

    /// A local bucket, if it exists.
    pub async fn bucket(&self, name: &str) -> Result<Option<BucketInfo>> {
        self.private.bucket(name).await
    }

    /// Creates a bucket, durably.
    pub async fn create_bucket(&self, name: &str) -> Result<()> {
        self.durable(self.private.create_bucket(name, crate::now_ms()))
            .await
    }

    /// Deletes an empty bucket, durably.
    pub async fn delete_bucket(&self, name: &str) -> Result<()> {
        self.durable(self.private.delete_bucket(name)).await
    }

    /// Up to `limit` objects of `bucket` under `prefix`, after the key `after`.
    pub async fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<ListedObject>> {
        self.private
            .list_objects(bucket, prefix, after, limit)
            .await
    }

    /// The parts uploaded so far to the multipart upload `id`.
    pub async fn parts(&self, id: &str) -> Result<Vec<(u32, PartRecord)>> {
        self.private.parts(id).await
    }

    /// The multipart uploads in progress in `bucket`.
    pub async fn list_uploads(&self, bucket: &str) -> Result<Vec<(String, UploadRecord)>> {
        self.private.list_uploads(bucket).await
    }

    /// The private store itself, for the integration tests in `gateway/tests` (which set up
    /// and inspect rows). No front calls it: `tests/layers.py` refuses `private_store` in
    /// `front/`, as it refuses `engine.private`.
    #[doc(hidden)]
    pub fn private_store(&self) -> &Arc<dyn crate::store::private::PrivateStore> {
        &self.private
    }

    /// Sets the peers' client (once, at start; see [`crate::runtime::run`]).
    pub fn set_remote(&self, remote: Arc<Remote>) {
        let _ = self.remote.set(remote);
    }

    /// Sets the institution's previous identities, newest first (once, at start).
    pub fn set_previous(&self, previous: Vec<Arc<keyring::Identity>>) {
        let _ = self.previous.set(previous);
    }

    /// The institution's previous identities, newest first (none before a key rotation).
    pub fn previous(&self) -> &[Arc<keyring::Identity>] {
        self.previous.get().map(Vec::as_slice).unwrap_or(&[])
    }

    /// The peers' client, when any peer has an API url.
    pub fn remote(&self) -> Option<&Arc<Remote>> {
        self.remote.get()
    }

    /// Every registered patient.
    pub async fn list_patients(&self) -> Result<Vec<PatientRecord>> {
        self.private.list_patients().await
    }

    /// A registered patient, if it is one.
    pub async fn patient(&self, id: &str) -> Result<Option<PatientRecord>> {
        self.private.patient(id).await
    }

    /// The latest published checkpoint (tree size, signed note), if any.
    pub async fn latest_checkpoint(&self) -> Result<Option<(u64, String)>> {
        Ok(self.private.checkpoints().await?.pop())
    }

    /// The log's size.
    pub async fn log_size(&self) -> Result<u64> {
        self.private.log_size().await
    }

    /// Up to `limit` log events from index `from`.
    pub async fn events(&self, from: u64, limit: usize) -> Result<Vec<Event>> {
        self.private.events(from, limit).await
    }

    /// The inclusion proof of entry `index` in the tree of `size`.
    pub async fn inclusion_proof(&self, index: u64, size: u64) -> Result<InclusionProof> {
        crate::engine::log::inclusion_proof(&*self.private, index, size).await
    }

    /// The consistency proof between the trees of `old` and `new` entries.
    pub async fn consistency_proof(&self, old: u64, new: u64) -> Result<ConsistencyProof> {
        crate::engine::log::consistency_proof(&*self.private, old, new).await
    }

    /// Adds a witness's cosignature of the latest checkpoint (see
    /// [`crate::engine::log::add_cosignature`]).
    pub async fn add_cosignature(&self, witnesses: &[Recipient], note: &str) -> Result<usize> {
        crate::engine::log::add_cosignature(
            &*self.private,
            &self.public,
            &self.institution,
            witnesses,
            note,
        )
        .await
    }

    /// This institution's key rollovers as published, oldest first.
    pub async fn published_rollovers(&self) -> Result<Vec<keyring::SignedRollover>> {
        crate::engine::keyrot::published_rollovers(&self.public).await
    }

    /// A grant's record, if it exists.
    pub async fn grant(&self, id: &str) -> Result<Option<GrantRecord>> {
        self.private.grant(id).await
    }

    /// The wrapped keys of a data key.
    pub async fn stanzas(&self, dek: DekId) -> Result<Vec<DekStanza>> {
        self.private.stanzas(dek).await
    }

    /// Every record labelled with `patient`: (bucket, key, manifest).
    pub async fn patient_objects(&self, patient: &str) -> Result<Vec<(String, String, Manifest)>> {
        self.private.patient_objects(patient).await
    }

    /// The stored manifest of `bucket/key`, if any (no mount, no NoSuchKey).
    pub async fn stored_manifest(&self, bucket: &str, key: &str) -> Result<Option<Manifest>> {
        self.private.manifest(bucket, key).await
    }
}
