//! The sled adapter: the private store's [`Kv`] on sled 0.34.
//!
//! One sled database in `DATA_DIR/private`; sled lets one process open it at a time,
//! which [`SledStore::open`] reports as [`crate::Error::Locked`]-like I/O errors the binary
//! turns into a clear message.
//!
//! Every [`Table`] is the sled tree of the same name (the layout is in
//! [`crate::store::rules`], which holds every rule; this file only maps `Kv` onto sled):
//! a transaction is a sled transaction over the named trees (`[Tree]::transaction`, which
//! re-runs its body on a conflict), a batch is `Tree::apply_batch`, a range a tree range,
//! `flush` is `Db::flush_async`. `mounts`, `peer_keys` and `backup_meta` are opened when
//! first used, as before, so a store that never used them has no such tree.
//!
//! The one sled-only upgrade runs here, at open: a log kept as one `log_leaves` row per
//! leaf (before tiles) is converted to `log_tiles` and the old tree dropped.

use std::path::Path;

use async_trait::async_trait;
use keyring::tiles::TileId;
use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};
use sled::Transactional;

use super::ExportBatch;
use crate::store::kv::{undeclared, KeyRange, Kv, Rows, Table, Tx, TxError, TxResult};
use crate::store::rules::rows::{tile_key, to_hash, TILES_MARK};
use crate::store::rules::KvStore;
use crate::{Error, Result};

pub use crate::store::rules::DekUpgrade;

/// The sled-backed private store: the rules over [`SledKv`].
pub type SledStore = KvStore<SledKv>;

/// sled trees as a [`Kv`].
pub struct SledKv {
    db: sled::Db,
    buckets: sled::Tree,
    objects: sled::Tree,
    patient_objects: sled::Tree,
    leaves: sled::Tree,
    blobs: sled::Tree,
    pending: sled::Tree,
    orphans: sled::Tree,
    deks: sled::Tree,
    dek_refs: sled::Tree,
    access_keys: sled::Tree,
    uploads: sled::Tree,
    parts: sled::Tree,
    part_blobs: sled::Tree,
    patients: sled::Tree,
    requests: sled::Tree,
    grants: sled::Tree,
    events: sled::Tree,
    log_tiles: sled::Tree,
    log_meta: sled::Tree,
    patient_heads: sled::Tree,
    checkpoints: sled::Tree,
}

impl KvStore<SledKv> {
    /// Opens (or creates) the store in `dir`.
    ///
    /// # Errors
    /// An I/O error of kind `WouldBlock` when another process holds the database
    /// (sled allows one at a time), or any sled error.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self> {
        KvStore::new(SledKv::open(dir, cache_bytes)?)
    }
}

impl SledKv {
    /// Opens (or creates) the sled database in `dir`, with the sled-only upgrade applied.
    ///
    /// # Errors
    /// See [`KvStore::open`](KvStore#method.open).
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
        let open = |t: Table| db.open_tree(t.name());
        SledKv {
            buckets: open(Table::Buckets)?,
            objects: open(Table::Objects)?,
            patient_objects: open(Table::PatientObjects)?,
            leaves: open(Table::Leaves)?,
            blobs: open(Table::Blobs)?,
            pending: open(Table::Pending)?,
            orphans: open(Table::Orphans)?,
            deks: open(Table::Deks)?,
            dek_refs: open(Table::DekRefs)?,
            access_keys: open(Table::AccessKeys)?,
            uploads: open(Table::Uploads)?,
            parts: open(Table::Parts)?,
            part_blobs: open(Table::PartBlobs)?,
            patients: open(Table::Patients)?,
            requests: open(Table::Requests)?,
            grants: open(Table::Grants)?,
            events: open(Table::Events)?,
            log_tiles: open(Table::LogTiles)?,
            log_meta: open(Table::LogMeta)?,
            patient_heads: open(Table::PatientHeads)?,
            checkpoints: open(Table::Checkpoints)?,
            db,
        }
        .with_log_tiles()
    }

    /// The tree of `table`.
    fn tree(&self, table: Table) -> Result<sled::Tree> {
        Ok(match table {
            Table::Buckets => self.buckets.clone(),
            Table::Objects => self.objects.clone(),
            Table::PatientObjects => self.patient_objects.clone(),
            Table::Leaves => self.leaves.clone(),
            Table::Blobs => self.blobs.clone(),
            Table::Pending => self.pending.clone(),
            Table::Orphans => self.orphans.clone(),
            Table::Deks => self.deks.clone(),
            Table::DekRefs => self.dek_refs.clone(),
            Table::AccessKeys => self.access_keys.clone(),
            Table::Uploads => self.uploads.clone(),
            Table::Parts => self.parts.clone(),
            Table::PartBlobs => self.part_blobs.clone(),
            Table::Patients => self.patients.clone(),
            Table::Requests => self.requests.clone(),
            Table::Grants => self.grants.clone(),
            Table::Events => self.events.clone(),
            Table::LogTiles => self.log_tiles.clone(),
            Table::LogMeta => self.log_meta.clone(),
            Table::PatientHeads => self.patient_heads.clone(),
            Table::Checkpoints => self.checkpoints.clone(),
            // Opened when first used (a store that never used them has no such tree).
            Table::Mounts | Table::PeerKeys | Table::BackupMeta => {
                self.db.open_tree(table.name())?
            }
        })
    }

    /// Converts a log of one `log_leaves` row per leaf (before tiles) to `log_tiles`.
    fn with_log_tiles(self) -> Result<Self> {
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
}

/// One sled transaction's view: the declared tables and their transactional trees.
struct SledTx<'a> {
    tables: &'a [Table],
    view: &'a [TransactionalTree],
}

impl SledTx<'_> {
    fn tree(&self, table: Table) -> TxResult<&TransactionalTree> {
        self.tables
            .iter()
            .position(|t| *t == table)
            .and_then(|i| self.view.get(i))
            .ok_or_else(|| undeclared(table))
    }
}

fn tx_error(e: UnabortableTransactionError) -> TxError {
    match e {
        UnabortableTransactionError::Conflict => TxError::Retry,
        UnabortableTransactionError::Storage(e) => TxError::Abort(Error::from(e)),
    }
}

impl Tx for SledTx<'_> {
    fn get(&self, table: Table, key: &[u8]) -> TxResult<Option<Vec<u8>>> {
        let v = self.tree(table)?.get(key).map_err(tx_error)?;
        Ok(v.map(|v| v.to_vec()))
    }

    fn put(&self, table: Table, key: &[u8], value: &[u8]) -> TxResult<()> {
        self.tree(table)?.insert(key, value).map_err(tx_error)?;
        Ok(())
    }

    fn delete(&self, table: Table, key: &[u8]) -> TxResult<Option<Vec<u8>>> {
        let v = self.tree(table)?.remove(key).map_err(tx_error)?;
        Ok(v.map(|v| v.to_vec()))
    }
}

#[async_trait]
impl Kv for SledKv {
    fn transact<R>(&self, tables: &[Table], body: impl Fn(&dyn Tx) -> TxResult<R>) -> Result<R> {
        let trees = tables
            .iter()
            .map(|t| self.tree(*t))
            .collect::<Result<Vec<_>>>()?;
        trees[..]
            .transaction(|view| {
                body(&SledTx { tables, view }).map_err(|e| match e {
                    TxError::Abort(e) => ConflictableTransactionError::Abort(e),
                    TxError::Retry => ConflictableTransactionError::Conflict,
                })
            })
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => Error::from(e),
            })
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tree(table)?.get(key)?.map(|v| v.to_vec()))
    }

    fn range(&self, table: Table, range: KeyRange) -> Result<Rows<'_>> {
        let rows = self.tree(table)?.range(range).map(|item| {
            item.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(Error::from)
        });
        Ok(Box::new(rows))
    }

    fn batch(&self, table: Table, writes: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
        let tree = self.tree(table)?;
        if let [(key, value)] = writes.as_slice() {
            match value {
                Some(v) => tree.insert(key.as_slice(), v.as_slice())?,
                None => tree.remove(key.as_slice())?,
            };
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (key, value) in writes {
            match value {
                Some(v) => batch.insert(key, v),
                None => batch.remove(key),
            }
        }
        tree.apply_batch(batch)?;
        Ok(())
    }

    fn len(&self, table: Table) -> Result<u64> {
        Ok(self.tree(table)?.len() as u64)
    }

    async fn flush(&self) -> Result<()> {
        self.db.flush_async().await?;
        Ok(())
    }

    fn flush_blocking(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    async fn export(&self, out: tokio::sync::mpsc::Sender<ExportBatch>) -> Result<()> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || super::sled_backup::export_sled(&db, &out))
            .await
            .map_err(|e| Error::Internal(format!("backup export task: {e}")))?
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Private(Box::new(e))
    }
}

#[cfg(test)]
mod tests;
