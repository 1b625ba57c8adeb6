//! The sled side of backups: copying every tree out for [`crate::engine::backup`], the
//! last-backup time and restored mark in the `backup_meta` tree, and [`Restorer`], which
//! writes a backup's trees and records into a new sled store.

use keyring::backup::Entry;
use tokio::sync::mpsc;

use super::ExportBatch;
use crate::{Error, Result};

/// The sled tree that records when the last backup was taken (`Table::BackupMeta`).
pub const META_TREE: &str = "backup_meta";
use crate::store::rules::LAST_BACKUP_KEY;
pub use crate::store::rules::RESTORED_KEY;
/// Entries per export batch.
const BATCH: usize = 1024;

/// Copies every tree of a sled database to `out`, in batches. The caller holds the commit
/// gate exclusively.
pub(crate) fn export_sled(db: &sled::Db, out: &mpsc::Sender<ExportBatch>) -> Result<()> {
    let names = db.tree_names();
    let mut trees = Vec::with_capacity(names.len());
    let mut total = 0u64;
    for name in names {
        let tree = db.open_tree(&name)?;
        total += 1 + tree.len() as u64;
        trees.push((name, tree));
    }
    let gone = || Error::Internal("the backup was abandoned".into());
    let mut entries = Vec::with_capacity(BATCH);
    for (name, tree) in trees {
        entries.push(Entry::Tree(name.to_vec()));
        for item in tree.iter() {
            let (k, v) = item?;
            entries.push(Entry::Record {
                key: k.to_vec(),
                value: v.to_vec(),
            });
            if entries.len() >= BATCH {
                let batch = std::mem::replace(&mut entries, Vec::with_capacity(BATCH));
                out.blocking_send(ExportBatch {
                    total,
                    entries: batch,
                })
                .map_err(|_| gone())?;
            }
        }
    }
    if !entries.is_empty() {
        out.blocking_send(ExportBatch { total, entries })
            .map_err(|_| gone())?;
    }
    Ok(())
}

pub(crate) fn set_last_backup_ms(db: &sled::Db, ms: u64) -> Result<()> {
    db.open_tree(META_TREE)?
        .insert(LAST_BACKUP_KEY, &ms.to_be_bytes())?;
    Ok(())
}

/// A new sled store being filled from a backup, tree by tree (see
/// [`crate::engine::backup::restore`]).
pub struct Restorer {
    db: sled::Db,
    tree: Option<sled::Tree>,
}

impl Restorer {
    /// Opens (creates) the sled store at `path`.
    ///
    /// # Errors
    /// A store that cannot be opened.
    pub fn open(path: &std::path::Path) -> Result<Restorer> {
        Ok(Restorer {
            db: sled::Config::new().path(path).open()?,
            tree: None,
        })
    }

    /// Makes `name` the tree the next records go to.
    ///
    /// # Errors
    /// Store errors.
    pub fn tree(&mut self, name: &[u8]) -> Result<()> {
        self.tree = Some(self.db.open_tree(name)?);
        Ok(())
    }

    /// Writes one record into the current tree.
    ///
    /// # Errors
    /// `Corrupt` for a record before any tree; store errors.
    pub fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let t = self
            .tree
            .as_ref()
            .ok_or_else(|| Error::Corrupt("backup record outside a tree".into()))?;
        t.insert(key, value)?;
        Ok(())
    }

    /// Records the backup's time as the last backup, marks the store restored (the first
    /// start brings patient index numbers past what was published since), flushes, and
    /// returns the restored log's size.
    ///
    /// # Errors
    /// `Corrupt` for a malformed log size; store errors.
    pub fn finish(self, created_ms: u64) -> Result<u64> {
        let db = self.db;
        // The restored store is as recent as this backup.
        set_last_backup_ms(&db, created_ms)?;
        // The first start must bring patient index numbers past what was published since.
        db.open_tree(META_TREE)?.insert(RESTORED_KEY, &[1u8][..])?;
        let log_size = match db.open_tree("log_meta")?.get(b"size")? {
            Some(v) => <[u8; 8]>::try_from(&*v)
                .map(u64::from_be_bytes)
                .map_err(|_| Error::Corrupt("log size".into()))?,
            None => 0,
        };
        db.flush()?;
        Ok(log_size)
    }
}
