//! Access keys, mounts, durability and backups: [`AdminRows`] over any [`Kv`]. The commit
//! gate and the operations gate live here (every write holds the first shared; an export
//! takes both exclusive), and group commit (`flush`).

use async_trait::async_trait;

use super::rows::*;
use super::KvStore;
use crate::store::kv::{Kv, Table};
use crate::store::private::{AccessKeyRecord, AdminRows, ExportBatch, MountRecord};
use crate::{Error, Result};

/// The `backup_meta` key of the last backup's time (unix ms, u64 BE).
pub(crate) const LAST_BACKUP_KEY: &[u8] = b"last_backup_ms";
/// The `backup_meta` key that marks a data dir restored from a backup whose patient index
/// sequence numbers the next server start must bring past every published one.
pub const RESTORED_KEY: &[u8] = b"restored_index_seqs";

fn decode_ms(v: &[u8]) -> Result<u64> {
    <[u8; 8]>::try_from(v)
        .map(u64::from_be_bytes)
        .map_err(|_| Error::Corrupt("last backup time".into()))
}

#[async_trait]
impl<K: Kv> AdminRows for KvStore<K> {
    async fn put_access_key(&self, record: AccessKeyRecord) -> Result<()> {
        let _gate = self.gate.read().await;
        self.kv.batch(
            Table::AccessKeys,
            vec![(record.id.as_bytes().to_vec(), Some(encode_json(&record)?))],
        )
    }

    async fn access_key(&self, id: &str) -> Result<Option<AccessKeyRecord>> {
        json_row(&self.kv, Table::AccessKeys, id.as_bytes(), "access key")
    }

    async fn list_access_keys(&self) -> Result<Vec<AccessKeyRecord>> {
        json_rows(&self.kv, Table::AccessKeys, "access key")
    }

    async fn delete_access_key(&self, id: &str) -> Result<bool> {
        let _gate = self.gate.read().await;
        self.kv.transact(&[Table::AccessKeys], |tx| {
            Ok(tx.delete(Table::AccessKeys, id.as_bytes())?.is_some())
        })
    }

    async fn put_mount(&self, record: MountRecord) -> Result<()> {
        self.kv.batch(
            Table::Mounts,
            vec![(
                record.bucket.as_bytes().to_vec(),
                Some(encode_json(&record)?),
            )],
        )
    }

    async fn mounts(&self) -> Result<Vec<MountRecord>> {
        json_rows(&self.kv, Table::Mounts, "mount")
    }

    /// Group commit: concurrent callers share one flush. A caller takes a ticket after
    /// its writes; a flush that starts after the ticket was taken covers them, so a
    /// caller whose ticket is already covered returns without flushing again.
    async fn flush(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        let ticket = self.flush_tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let _turn = self.flush_lock.lock().await;
        if self.flushed_through.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        let covers = self.flush_tickets.load(Ordering::SeqCst);
        self.kv.flush().await?;
        self.flushed_through.store(covers, Ordering::SeqCst);
        Ok(())
    }

    async fn export(&self, out: tokio::sync::mpsc::Sender<ExportBatch>) -> Result<()> {
        // Exclusive: no engine operation is between a write and its log entry, and no
        // write runs until every table is copied.
        let _ops = self.ops_gate.write().await;
        let _gate = self.gate.write().await;
        self.kv.export(out).await
    }

    async fn hold_writes(&self) -> Option<tokio::sync::OwnedRwLockReadGuard<()>> {
        Some(self.ops_gate.clone().read_owned().await)
    }

    async fn last_backup_ms(&self) -> Result<Option<u64>> {
        match self.kv.get(Table::BackupMeta, LAST_BACKUP_KEY)? {
            Some(v) => decode_ms(&v).map(Some),
            None => Ok(None),
        }
    }

    async fn set_last_backup_ms(&self, ms: u64) -> Result<()> {
        {
            let _gate = self.gate.read().await;
            self.kv.batch(
                Table::BackupMeta,
                vec![(LAST_BACKUP_KEY.to_vec(), Some(ms.to_be_bytes().to_vec()))],
            )?;
        }
        self.flush().await
    }

    async fn restored_pending(&self) -> Result<bool> {
        Ok(self.kv.get(Table::BackupMeta, RESTORED_KEY)?.is_some())
    }

    async fn clear_restored(&self) -> Result<()> {
        let _gate = self.gate.read().await;
        self.kv
            .batch(Table::BackupMeta, vec![(RESTORED_KEY.to_vec(), None)])?;
        self.kv.flush_blocking()
    }
}
