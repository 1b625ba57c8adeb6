//! What the admin socket asks of the engine besides consent and records: access keys, the
//! lists an operator reads (requests, grants, mounts), verification, the institution key's
//! re-wrap, gc and backups. The admin front holds an `Engine` and nothing below it; these
//! methods are the store calls it used to make itself (a change is durable before it returns).

use std::path::Path;
use std::time::Duration;

use keyring::{Identity, Recipient};

use crate::engine::backup::{BackupSink, BackupStats, FileBytes};
use crate::engine::gc::GcReport;
use crate::engine::keyrot::KeyRewrapReport;
use crate::engine::log::VerifyReport;
use crate::engine::record::Engine;
use crate::engine::ACCESS_KEY_VAULT;
use crate::store::private::{
    AccessKeyRecord, GrantRecord, MountRecord, PrivateStore, ShareRequestRecord, ACCESS_KEY_ROW_V2,
};
use crate::{Error, Result};

/// A progress callback of a long operation: (step, done, total).
pub type ProgressFn<'a> = &'a (dyn Fn(&str, u64, u64) + Send + Sync);

/// Stores an access key with its secret sealed under the institution's vault key, durably
/// (for `medgate serve`'s first start, before any engine exists; the admin socket calls
/// [`Engine::add_access_key`]).
///
/// # Errors
/// An id that is empty or already used; a secret shorter than 16 characters; store failures.
pub async fn add_access_key(
    store: &dyn PrivateStore,
    institution: &Identity,
    id: &str,
    secret: &str,
    buckets: Vec<String>,
    label_patients: bool,
) -> Result<()> {
    if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Error::InvalidArgument(
            "an access key id is 1 to 128 ASCII letters and digits".into(),
        ));
    }
    if secret.len() < 16 {
        return Err(Error::InvalidArgument(
            "a secret access key needs at least 16 characters".into(),
        ));
    }
    if store.access_key(id).await?.is_some() {
        return Err(Error::InvalidArgument(format!(
            "access key {id} already exists"
        )));
    }
    let vault = institution.vault_key(ACCESS_KEY_VAULT);
    store
        .put_access_key(AccessKeyRecord {
            id: id.to_string(),
            sealed_secret: vault.seal(id.as_bytes(), secret.as_bytes()),
            buckets,
            created_ms: crate::now_ms(),
            v: ACCESS_KEY_ROW_V2,
            label_patients,
        })
        .await?;
    store.flush().await
}

impl Engine {
    /// Stores a new access key (see [`add_access_key`]), durably.
    ///
    /// # Errors
    /// As [`add_access_key`].
    pub async fn add_access_key(
        &self,
        id: &str,
        secret: &str,
        buckets: Vec<String>,
        label_patients: bool,
    ) -> Result<()> {
        add_access_key(
            &*self.private,
            &self.institution,
            id,
            secret,
            buckets,
            label_patients,
        )
        .await
    }

    /// Every access key (secrets sealed).
    pub async fn list_access_keys(&self) -> Result<Vec<AccessKeyRecord>> {
        self.private.list_access_keys().await
    }

    /// Deletes an access key, durably; whether it existed.
    pub async fn delete_access_key(&self, id: &str) -> Result<bool> {
        self.durable(self.private.delete_access_key(id)).await
    }

    /// Every share request, in any state.
    pub async fn list_requests(&self) -> Result<Vec<ShareRequestRecord>> {
        self.private.list_requests().await
    }

    /// Every grant, in force or not.
    pub async fn list_grants(&self) -> Result<Vec<GrantRecord>> {
        self.private.list_grants().await
    }

    /// The buckets mounted from peers as stored (the running server's `Remote` adds their
    /// state).
    pub async fn mounts(&self) -> Result<Vec<MountRecord>> {
        self.private.mounts().await
    }

    /// Publishes what is pending, then checks the log, the manifests and (`deep`) the blobs
    /// (see [`crate::engine::log::verify`]).
    ///
    /// # Errors
    /// Store failures; a broken log or record is reported in the answer, not as an error.
    pub async fn verify(&self, deep: bool, progress: ProgressFn<'_>) -> Result<VerifyReport> {
        // Publish what is pending first, so the check covers everything logged.
        crate::engine::log::publish(&*self.private, &self.public, &self.institution).await?;
        crate::engine::log::verify(
            &*self.private,
            &self.public,
            &self.institution_recipient,
            deep,
            progress,
        )
        .await
    }

    /// After `medgate keys rotate`'s handover: wraps every record's data key to the current
    /// institution key (see [`crate::engine::keyrot::rewrap`]), then renames and re-signs the
    /// patient indexes.
    ///
    /// # Errors
    /// Store failures; a data key no identity opens.
    pub async fn rewrap_institution_keys(
        &self,
        progress: ProgressFn<'_>,
    ) -> Result<KeyRewrapReport> {
        let report = crate::engine::keyrot::rewrap(
            &*self.private,
            &self.institution,
            self.previous(),
            progress,
        )
        .await?;
        // Indexes have new names and a new signer now.
        self.mark_all_indexes().await?;
        self.publish_indexes().await?;
        Ok(report)
    }

    /// One gc pass over the public store (see [`crate::engine::gc::run`]); `local_root` is
    /// the folder behind the public store, when it is one (for the staging sweep).
    ///
    /// # Errors
    /// Store failures.
    pub async fn gc(
        &self,
        local_root: Option<&Path>,
        grace: Duration,
        apply: bool,
    ) -> Result<GcReport> {
        crate::engine::gc::run(&self.public, local_root, &*self.private, grace, apply).await
    }

    /// Streams a backup of the private store and `files`, encrypted to `recipient`, into
    /// `sink` (see [`crate::engine::backup::write_backup`]).
    ///
    /// # Errors
    /// Store failures; the sink went away.
    pub async fn write_backup(
        &self,
        files: Vec<(String, FileBytes)>,
        recipient: &Recipient,
        sink: &mut dyn BackupSink,
    ) -> Result<BackupStats> {
        crate::engine::backup::write_backup(
            &*self.private,
            files,
            recipient,
            &self.institution,
            sink,
        )
        .await
    }

    /// Records that the backup taken at `created_ms` reached its destination.
    ///
    /// # Errors
    /// Store failures.
    pub async fn record_backup(&self, created_ms: u64) -> Result<()> {
        crate::engine::backup::record_backup(&*self.private, created_ms).await
    }
}
