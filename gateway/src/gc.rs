//! Garbage collection of the public store.
//!
//! gc lists only `v1/b/`. A blob is deleted when no manifest references it and both its
//! public write time and its pending/orphan row are older than the grace period. The
//! private store decides first, atomically ([`PrivateStore::reap_blob`]): a commit that
//! races with gc either lands first (the blob is referenced and kept) or finds its
//! pending row gone and fails cleanly (`Error::Reaped`), so no manifest ever points at
//! a deleted blob.

use std::time::Duration;

use futures::StreamExt;
use keyring::BlobId;

use crate::private::{BlobState, PrivateStore};
use crate::public::{blob_path, blob_root, PublicStore};
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
    /// Pending rows whose upload never produced a blob, old enough to drop.
    pub stale_pending: u64,
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
    private: &dyn PrivateStore,
    grace: Duration,
    apply: bool,
) -> Result<GcReport> {
    let cutoff = now_ms().saturating_sub(u64::try_from(grace.as_millis()).unwrap_or(u64::MAX));
    let mut report = GcReport {
        applied: apply,
        ..Default::default()
    };
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
    for (blob, created_ms) in private.pending().await? {
        if seen.contains(&blob) || created_ms > cutoff {
            continue;
        }
        report.stale_pending += 1;
        if apply {
            private.reap_blob(blob, cutoff).await?;
        }
    }
    if apply {
        private.flush().await?;
    }
    Ok(report)
}
