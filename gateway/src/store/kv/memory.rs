//! The in-memory [`Kv`]: one `BTreeMap` per table behind one mutex. It is the reference
//! adapter the private-store conformance suite runs on beside sled (proof that the rules
//! need nothing else from a store), and nothing else uses it: it keeps no data across a
//! restart.
//!
//! A transaction holds the mutex for its whole body, so transactions are serial (the
//! strongest isolation the contract allows); its writes go to an overlay applied when the
//! body returns `Ok` and dropped when it aborts.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use keyring::backup::Entry;

use super::{undeclared, KeyRange, Kv, Rows, Table, Tx, TxError, TxResult};
use crate::store::private::ExportBatch;
use crate::{Error, Result};

type Map = BTreeMap<Vec<u8>, Vec<u8>>;
/// A transaction's writes: `None` removes.
type Overlay = BTreeMap<(Table, Vec<u8>), Option<Vec<u8>>>;

/// Tables in memory. See the module docs.
#[derive(Default)]
pub struct MemoryKv {
    tables: Mutex<BTreeMap<Table, Map>>,
}

impl MemoryKv {
    /// An empty store.
    pub fn new() -> MemoryKv {
        MemoryKv::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, BTreeMap<Table, Map>>> {
        self.tables
            .lock()
            .map_err(|_| Error::Internal("memory store: a writer panicked".into()))
    }
}

/// Whether `range` is empty by its bounds alone (`BTreeMap::range` panics on those).
fn inverted(range: &KeyRange) -> bool {
    match range {
        (Bound::Included(s), Bound::Included(e)) => s > e,
        (Bound::Included(s) | Bound::Excluded(s), Bound::Excluded(e))
        | (Bound::Excluded(s), Bound::Included(e)) => s >= e,
        _ => false,
    }
}

struct MemTx<'a> {
    tables: &'a [Table],
    data: &'a BTreeMap<Table, Map>,
    writes: RefCell<Overlay>,
}

impl MemTx<'_> {
    fn check(&self, table: Table) -> TxResult<()> {
        if self.tables.contains(&table) {
            Ok(())
        } else {
            Err(undeclared(table))
        }
    }
}

impl Tx for MemTx<'_> {
    fn get(&self, table: Table, key: &[u8]) -> TxResult<Option<Vec<u8>>> {
        self.check(table)?;
        if let Some(w) = self.writes.borrow().get(&(table, key.to_vec())) {
            return Ok(w.clone());
        }
        Ok(self.data.get(&table).and_then(|m| m.get(key)).cloned())
    }

    fn put(&self, table: Table, key: &[u8], value: &[u8]) -> TxResult<()> {
        self.check(table)?;
        self.writes
            .borrow_mut()
            .insert((table, key.to_vec()), Some(value.to_vec()));
        Ok(())
    }

    fn delete(&self, table: Table, key: &[u8]) -> TxResult<Option<Vec<u8>>> {
        let old = self.get(table, key)?;
        self.writes.borrow_mut().insert((table, key.to_vec()), None);
        Ok(old)
    }
}

fn apply(data: &mut BTreeMap<Table, Map>, table: Table, key: Vec<u8>, value: Option<Vec<u8>>) {
    let map = data.entry(table).or_default();
    match value {
        Some(v) => {
            map.insert(key, v);
        }
        None => {
            map.remove(&key);
        }
    }
}

#[async_trait]
impl Kv for MemoryKv {
    fn transact<R>(&self, tables: &[Table], body: impl Fn(&dyn Tx) -> TxResult<R>) -> Result<R> {
        let mut data = self.lock()?;
        loop {
            let tx = MemTx {
                tables,
                data: &data,
                writes: RefCell::new(BTreeMap::new()),
            };
            match body(&tx) {
                Ok(r) => {
                    let writes = tx.writes.into_inner();
                    for ((table, key), value) in writes {
                        apply(&mut data, table, key, value);
                    }
                    return Ok(r);
                }
                Err(TxError::Abort(e)) => return Err(e),
                Err(TxError::Retry) => continue,
            }
        }
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.lock()?.get(&table).and_then(|m| m.get(key)).cloned())
    }

    fn range(&self, table: Table, range: KeyRange) -> Result<Rows<'_>> {
        if inverted(&range) {
            return Ok(Box::new(std::iter::empty()));
        }
        let rows: Vec<_> = match self.lock()?.get(&table) {
            Some(m) => m
                .range(range)
                .map(|(k, v)| Ok((k.clone(), v.clone())))
                .collect(),
            None => Vec::new(),
        };
        Ok(Box::new(rows.into_iter()))
    }

    fn batch(&self, table: Table, writes: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
        let mut data = self.lock()?;
        for (key, value) in writes {
            apply(&mut data, table, key, value);
        }
        Ok(())
    }

    fn len(&self, table: Table) -> Result<u64> {
        Ok(self.lock()?.get(&table).map_or(0, |m| m.len() as u64))
    }

    async fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn flush_blocking(&self) -> Result<()> {
        Ok(())
    }

    async fn export(&self, out: tokio::sync::mpsc::Sender<ExportBatch>) -> Result<()> {
        let entries: Vec<Entry> = {
            let data = self.lock()?;
            let mut entries = Vec::new();
            for (table, rows) in data.iter() {
                entries.push(Entry::Tree(table.name().as_bytes().to_vec()));
                for (key, value) in rows {
                    entries.push(Entry::Record {
                        key: key.clone(),
                        value: value.clone(),
                    });
                }
            }
            entries
        };
        let total = entries.len() as u64;
        out.send(ExportBatch { total, entries })
            .await
            .map_err(|_| Error::Internal("the backup was abandoned".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::kv::prefix;

    #[test]
    fn an_abort_writes_nothing_and_a_commit_everything() {
        let kv = MemoryKv::new();
        let t = [Table::Blobs, Table::Orphans];
        let r: Result<()> = kv.transact(&t, |tx| {
            tx.put(Table::Blobs, b"a", b"1")?;
            assert_eq!(tx.get(Table::Blobs, b"a")?, Some(b"1".to_vec()));
            Err(TxError::Abort(Error::PreconditionFailed))
        });
        assert!(matches!(r, Err(Error::PreconditionFailed)));
        assert_eq!(kv.get(Table::Blobs, b"a").unwrap(), None);
        kv.transact(&t, |tx| {
            tx.put(Table::Blobs, b"a", b"1")?;
            tx.put(Table::Orphans, b"b", b"2")?;
            assert_eq!(tx.delete(Table::Orphans, b"b")?, Some(b"2".to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(kv.get(Table::Blobs, b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(kv.len(Table::Orphans).unwrap(), 0);
    }

    #[test]
    fn a_table_the_transaction_did_not_name_is_an_internal_error() {
        let kv = MemoryKv::new();
        let r = kv.transact(&[Table::Blobs], |tx| tx.get(Table::Deks, b"x"));
        assert!(matches!(r, Err(Error::Internal(_))), "{r:?}");
    }

    #[test]
    fn a_retry_runs_the_body_again() {
        let kv = MemoryKv::new();
        let runs = std::sync::atomic::AtomicU32::new(0);
        let n = kv
            .transact(&[Table::Blobs], |tx| {
                tx.put(Table::Blobs, b"k", b"v")?;
                match runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                    0 => Err(TxError::Retry),
                    n => Ok(n),
                }
            })
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(kv.len(Table::Blobs).unwrap(), 1);
    }

    #[test]
    fn ranges_are_ordered_bounded_and_never_panic() {
        let kv = MemoryKv::new();
        let rows = [&b"a"[..], b"ab", b"ab\xff", b"b"]
            .iter()
            .map(|k| (k.to_vec(), Some(Vec::new())))
            .collect();
        kv.batch(Table::Objects, rows).unwrap();
        let keys = |r: KeyRange| -> Vec<Vec<u8>> {
            kv.range(Table::Objects, r)
                .unwrap()
                .map(|row| row.unwrap().0)
                .collect()
        };
        assert_eq!(keys(prefix(b"ab")), [b"ab".to_vec(), b"ab\xff".to_vec()]);
        assert_eq!(keys(prefix(b"")).len(), 4);
        let backwards = (
            Bound::Included(b"b".to_vec()),
            Bound::Included(b"a".to_vec()),
        );
        assert!(keys(backwards).is_empty());
        let last = kv
            .range(
                Table::Objects,
                (Bound::Unbounded, Bound::Included(b"ab\x00".to_vec())),
            )
            .unwrap()
            .next_back()
            .unwrap()
            .unwrap();
        assert_eq!(last.0, b"ab".to_vec());
    }
}
