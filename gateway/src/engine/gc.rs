//! Garbage collection of the public store.
//!
//! gc lists only `v1/b/`. A blob is deleted when no manifest references it and both its
//! public write time and its pending/orphan row are older than the grace period. The
//! private store decides first, atomically ([`PrivateStore::reap_blob`]): a commit that
//! races with gc either lands first (the blob is referenced and kept) or finds its
//! pending row gone and fails cleanly (`Error::Reaped`), so no manifest ever points at
//! a deleted blob.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use keyring::BlobId;

use crate::store::private::{BlobState, PrivateStore};
use crate::store::public::{blob_path, blob_root, PublicStore};
use crate::{now_ms, Result};

/// What a gc pass found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs listed under `v1/b/`.
    pub scanned: u64,
    /// Blobs some manifest references.
    pub live: u64,
    /// Unreferenced blobs younger than the grace period, kept.
    pub young: u64,
    /// Unreferenced blobs old enough to delete (deleted when applying).
    pub reclaimable: Vec<(BlobId, u64)>,
    /// Names under `v1/b/` that are not blobs of ours; never touched.
    pub foreign: u64,
    /// Pending or orphan rows whose blob is not in the public store (the upload failed
    /// or crashed before anything landed), old enough to drop with their leaves.
    pub stale_pending: u64,
    /// Staging files of unfinished folder-store uploads, old enough to delete.
    pub stale_staging: u64,
    /// Multipart uploads idle for longer than the grace period (aborted when applying).
    pub stale_uploads: u64,
    /// Whether deletions were carried out.
    pub applied: bool,
}

impl GcReport {
    /// Total bytes of the reclaimable blobs.
    pub fn reclaimable_bytes(&self) -> u64 {
        self.reclaimable.iter().map(|(_, n)| n).sum()
    }
}

/// Runs one gc pass; deletes only when `apply`.
///
/// # Errors
/// Listing or store failures; a blob that vanished meanwhile is not an error.
pub async fn run(
    public: &PublicStore,
    local_root: Option<&Path>,
    private: &dyn PrivateStore,
    grace: Duration,
    apply: bool,
) -> Result<GcReport> {
    let cutoff = now_ms().saturating_sub(u64::try_from(grace.as_millis()).unwrap_or(u64::MAX));
    let mut report = GcReport {
        applied: apply,
        ..Default::default()
    };
    for bucket in private.list_buckets().await? {
        for (id, upload) in private.list_uploads(&bucket.name).await? {
            if upload.touched_ms > cutoff {
                continue;
            }
            report.stale_uploads += 1;
            if apply {
                abort_upload(public, private, &id).await?;
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut listing = public.list(Some(&blob_root()));
    while let Some(meta) = listing.next().await {
        let meta = meta?;
        report.scanned += 1;
        let Some(blob) = BlobId::from_public_path(meta.location.as_ref()) else {
            report.foreign += 1;
            continue;
        };
        seen.insert(blob);
        let written_ms = u64::try_from(meta.last_modified.timestamp_millis()).unwrap_or(0);
        let old_enough = |t: u64| t <= cutoff;
        let reclaimable = match private.blob_state(blob).await? {
            BlobState::Referenced(_) => {
                report.live += 1;
                continue;
            }
            BlobState::Pending { created_ms } => old_enough(created_ms) && old_enough(written_ms),
            BlobState::Orphan { since_ms } => old_enough(since_ms) && old_enough(written_ms),
            BlobState::Unknown => old_enough(written_ms),
        };
        if !reclaimable {
            report.young += 1;
            continue;
        }
        if apply {
            if !private.reap_blob(blob, cutoff).await? {
                // A commit claimed it meanwhile.
                report.live += 1;
                continue;
            }
            match public.delete(&blob_path(&blob)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        report.reclaimable.push((blob, meta.size));
    }
    let mut rows = private.pending().await?;
    rows.extend(private.orphans().await?);
    for (blob, created_ms) in rows {
        if seen.contains(&blob) || created_ms > cutoff {
            continue;
        }
        report.stale_pending += 1;
        if apply {
            private.reap_blob(blob, cutoff).await?;
        }
    }
    if let Some(root) = local_root {
        sweep_staging(root, private, cutoff, &mut report).await?;
    }
    if apply {
        private.flush().await?;
    }
    Ok(report)
}

/// Removes a multipart upload and deletes its part blobs, which no manifest can
/// reference (an upload's parts are referenced only once it completes, and completing
/// removes the upload in the same transaction).
///
/// # Errors
/// `NoSuchUpload`; store failures. A part blob that cannot be deleted is left to gc.
pub async fn abort_upload(
    public: &PublicStore,
    private: &dyn PrivateStore,
    id: &str,
) -> Result<()> {
    let parts = private.abort_upload(id).await?;
    private.flush().await?;
    for part in parts {
        if private.reap_blob(part.blob, u64::MAX).await? {
            match public.delete(&blob_path(&part.blob)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => tracing::warn!(error = %e, "could not delete an aborted part; gc will"),
            }
        }
    }
    Ok(())
}

/// Deletes `v1/b/<xx>/<blob>#<n>` staging files of a folder store whose upload is no
/// longer pending (or pending for longer than the grace period) and that are old enough.
async fn sweep_staging(
    root: &Path,
    private: &dyn PrivateStore,
    cutoff: u64,
    report: &mut GcReport,
) -> Result<()> {
    let base = root.join("v1").join("b");
    let mut dirs = match tokio::fs::read_dir(&base).await {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    while let Some(dir) = dirs.next_entry().await? {
        if !dir.file_type().await?.is_dir() {
            continue;
        }
        let mut files = tokio::fs::read_dir(dir.path()).await?;
        while let Some(f) = files.next_entry().await? {
            let name = f.file_name();
            let Some((id, n)) = name.to_str().and_then(|n| n.split_once('#')) else {
                continue;
            };
            let Ok(blob) = BlobId::from_hex(id) else {
                continue;
            };
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let modified_ms = f
                .metadata()
                .await?
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            if modified_ms > cutoff {
                continue;
            }
            if let BlobState::Pending { created_ms } = private.blob_state(blob).await? {
                if created_ms > cutoff {
                    continue;
                }
            }
            report.stale_staging += 1;
            if report.applied {
                match tokio::fs::remove_file(f.path()).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(())
}
