//! Backups of the private store: made online, encrypted to an offline recovery Recipient, and
//! restored into an empty data dir.
//!
//! **Consistency.** [`PrivateStore::export`] copies every tree while holding the store's
//! commit gate exclusively (every write holds it shared), so a backup is one point in time
//! across trees: a write acknowledged before the backup began is in it, whole. Writes wait
//! while the copy runs; they are not refused.
//!
//!
//! The admin socket side (streaming a backup to `medgate backup`) is
//! [`crate::front::backup_socket`]; the sled side (export, restore into a new store) is
//! [`crate::store::private::sled_backup`].

use std::fmt;
use std::io::Read;
use std::path::Path;

use async_trait::async_trait;
use keyring::backup::{
    BackupHeader, Entry, EntryDecoder, EntryEncoder, Opener, Sealer, MAX_HEADER_LEN,
};
use keyring::{Identity, Recipient};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use crate::store::private::sled_backup::Restorer;
pub use crate::store::private::sled_backup::{META_TREE, RESTORED_KEY};
pub use crate::store::private::ExportBatch;
use crate::store::private::PrivateStore;
use crate::{Error, Result};

/// A file's bytes carried in an admin request (the institution identity file): hex in JSON,
/// wiped on drop, never shown by `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct FileBytes(pub Zeroizing<Vec<u8>>);

impl fmt::Debug for FileBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileBytes(<{} bytes>)", self.0.len())
    }
}

impl Serialize for FileBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&Zeroizing::new(hex::encode(&*self.0)))
    }
}

impl<'de> Deserialize<'de> for FileBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = Zeroizing::new(String::deserialize(d)?);
        hex::decode(&*text)
            .map(|b| FileBytes(Zeroizing::new(b)))
            .map_err(serde::de::Error::custom)
    }
}

/// Where a backup's bytes go, and who hears of its progress.
#[async_trait]
pub trait BackupSink: Send {
    /// The next bytes of the backup file.
    async fn write(&mut self, bytes: &[u8]) -> Result<()>;
    /// `done` of `total` entries copied.
    async fn progress(&mut self, done: u64, total: u64) -> Result<()>;
}

/// What a finished backup holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupStats {
    pub created_ms: u64,
    /// Entries: files, trees and records.
    pub entries: u64,
    /// Bytes of the backup file.
    pub bytes: u64,
}

struct PayloadWriter<'a> {
    sealer: Sealer,
    encoder: EntryEncoder,
    buf: Zeroizing<Vec<u8>>,
    bytes: u64,
    sink: &'a mut dyn BackupSink,
}

impl PayloadWriter<'_> {
    fn push(&mut self, entry: &Entry) -> Result<()> {
        Ok(self.encoder.encode(entry, &mut self.buf)?)
    }

    /// Seals and writes every full chunk but keeps at least one byte back, so the final
    /// chunk is sealed by [`PayloadWriter::finish`].
    async fn drain(&mut self) -> Result<()> {
        let size = self.sealer.chunk_size();
        while self.buf.len() > size {
            let sealed = self.sealer.seal(&self.buf[..size], false)?;
            self.buf.drain(..size);
            self.bytes += sealed.len() as u64;
            self.sink.write(&sealed).await?;
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<u64> {
        let sealed = self.sealer.seal(&self.buf, true)?;
        self.bytes += sealed.len() as u64;
        self.sink.write(&sealed).await?;
        Ok(self.bytes)
    }
}

/// Makes a backup of `store` and `files` encrypted to `recipient` and signed by the
/// `institution` (a v2 backup file, `keyring::backup`), writing it to `sink`.
///
/// # Errors
/// The store cannot export, or the sink fails (the backup is then abandoned and the
/// store's writes resume).
pub async fn write_backup(
    store: &dyn PrivateStore,
    files: Vec<(String, FileBytes)>,
    recipient: &Recipient,
    institution: &Identity,
    sink: &mut dyn BackupSink,
) -> Result<BackupStats> {
    // A name restore would refuse is refused before anything is written.
    for (name, _) in &files {
        check_file_name(name)?;
    }
    let created_ms = crate::now_ms();
    let (sealer, header) = Sealer::new_signed(
        recipient,
        &institution.recipient(),
        created_ms,
        keyring::backup::DEFAULT_CHUNK_SIZE,
    )?;
    let head = header.encode();
    sink.write(&head).await?;
    let mut w = PayloadWriter {
        sealer,
        encoder: EntryEncoder::new(&header),
        buf: Zeroizing::new(Vec::new()),
        bytes: head.len() as u64,
        sink,
    };
    let mut count = 0u64;
    for (name, contents) in files {
        w.push(&Entry::File {
            name,
            contents: contents.0,
        })?;
        count += 1;
        w.drain().await?;
    }
    let (tx, mut rx) = mpsc::channel::<ExportBatch>(4);
    let files = count;
    let consume = async {
        let mut done = 0u64;
        while let Some(batch) = rx.recv().await {
            for e in &batch.entries {
                w.push(e)?;
            }
            done += batch.entries.len() as u64;
            w.drain().await?;
            w.sink.progress(done, batch.total).await?;
        }
        Ok::<_, Error>(done)
    };
    let (exported, consumed) = tokio::join!(store.export(tx), consume);
    let done = consumed?;
    exported?;
    count = files + done;
    let encoder = std::mem::replace(&mut w.encoder, EntryEncoder::new(&header));
    let signed = encoder.finish(Some(institution), &mut w.buf)?;
    if signed != count {
        return Err(Error::Internal(format!(
            "backup: {signed} entries encoded, {count} counted"
        )));
    }
    w.drain().await?;
    let bytes = w.finish().await?;
    Ok(BackupStats {
        created_ms,
        entries: count,
        bytes,
    })
}

/// A sink that writes the backup to a file and reports progress to a callback.
pub struct FileSink {
    file: std::fs::File,
    on_progress: Box<dyn FnMut(u64, u64) + Send>,
}

impl FileSink {
    /// Writes to `file`; `on_progress` hears entries done and total.
    pub fn new(file: std::fs::File, on_progress: Box<dyn FnMut(u64, u64) + Send>) -> FileSink {
        FileSink { file, on_progress }
    }

    /// The file, to make durable.
    pub fn into_file(self) -> std::fs::File {
        self.file
    }
}

#[async_trait]
impl BackupSink for FileSink {
    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        self.file.write_all(bytes)?;
        Ok(())
    }

    async fn progress(&mut self, done: u64, total: u64) -> Result<()> {
        (self.on_progress)(done, total);
        Ok(())
    }
}

/// Records a successful backup: in the store (durably) and in the metrics.
///
/// # Errors
/// The store cannot record it.
pub async fn record_backup(store: &dyn PrivateStore, created_ms: u64) -> Result<()> {
    store.set_last_backup_ms(created_ms).await?;
    crate::metrics::global()
        .last_backup
        .set(i64::try_from(created_ms / 1000).unwrap_or(i64::MAX));
    Ok(())
}

/// What a restore wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreStats {
    pub created_ms: u64,
    pub trees: u64,
    pub records: u64,
    /// Files written beside `private/`, by name.
    pub files: Vec<String>,
    /// Whether the backup was signed (v2) by the expected institution; `false` for a v1
    /// backup restored with `allow_unsigned`.
    pub signed: bool,
    /// The size of the transparency log in the backup.
    pub log_size: u64,
}

/// Which signer a restore accepts.
#[derive(Clone, Copy, Debug)]
pub struct ExpectedSigner<'a> {
    /// The institution's Recipient, known from somewhere other than the backup (kept
    /// offline with the recovery key).
    pub institution: &'a Recipient,
    /// Whether an unsigned (v1) backup is restored anyway (the caller logs it).
    pub allow_unsigned: bool,
}

/// Names a restore may write beside `private/`: plain names, no paths.
fn check_file_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name != "private"
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Corrupt(format!("backup file name {name:?}")))
    }
}

fn write_private_file(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents)?;
    f.sync_all()?;
    Ok(())
}

/// Reads at most `buf.len()` bytes, stopping early only at the end of the input.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Decrypts the backup read from `input` with the recovery `identity` into the empty
/// directory `dir`: the private store in `dir/private`, files beside it (0600), and the
/// backup's time recorded as the last backup. Blocking; `progress` hears bytes read.
///
/// Nothing is trusted before it authenticates: a chunk's entries are applied only after the
/// chunk opened, and the caller must discard `dir` on any error (a file cut short or
/// tampered fails at the chunk where it happens, so `dir` may hold part of the data).
///
/// # Errors
/// `Error::Keyring` for a file that is not a backup, is for another recovery key, or does
/// not authenticate (tampered or truncated); I/O and store errors.
pub fn restore(
    input: &mut impl Read,
    identity: &Identity,
    expected: ExpectedSigner<'_>,
    dir: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<RestoreStats> {
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = read_full(input, &mut head)?;
    let head = &head[..n];
    let mut opener = Opener::new(head, identity)?;
    let header: BackupHeader = opener.header().clone();
    match &header.signer {
        Some(signer) => {
            use subtle::ConstantTimeEq;
            let same: bool = signer
                .to_bytes()
                .ct_eq(&expected.institution.to_bytes())
                .into();
            if !same {
                return Err(Error::BackupRefused(format!(
                    "it is signed by {signer}, not by the institution {} given with \
                     --institution: it was not made by this institution's gateway",
                    expected.institution
                )));
            }
        }
        None if expected.allow_unsigned => {}
        None => {
            return Err(Error::BackupRefused(
                "it is an unsigned (v1) backup, which anyone who knows the recovery Recipient \
                 could have written: restore it only if you know where it came from, with \
                 --allow-unsigned"
                    .into(),
            ))
        }
    }
    let header_len = header.len();
    progress(header_len as u64);

    let mut db = Restorer::open(&dir.join("private"))?;
    let mut stats = RestoreStats {
        created_ms: header.created_ms,
        trees: 0,
        records: 0,
        files: Vec::new(),
        signed: header.signer.is_some(),
        log_size: 0,
    };
    let mut decoder = EntryDecoder::for_header(&header);
    let size = header.sealed_chunk_len();
    // What was read past the header (a v1 header is shorter than MAX_HEADER_LEN).
    let rest = head.get(header_len..).unwrap_or_default();
    // One sealed chunk plus one byte: the byte says whether the chunk is the last (and room
    // for what was read past a header, should chunks be smaller than that).
    let mut buf = vec![0u8; (size + 1).max(rest.len())];
    let mut have = rest.len();
    buf[..have].copy_from_slice(rest);
    loop {
        have += read_full(input, &mut buf[have..])?;
        let last = have <= size;
        let take = have.min(size);
        let plain = opener.open(&buf[..take], last)?;
        progress(take as u64);
        decoder.push(&plain);
        while let Some(entry) = decoder.next_entry()? {
            match entry {
                Entry::File { name, contents } => {
                    check_file_name(&name)?;
                    write_private_file(&dir.join(&name), &contents)?;
                    stats.files.push(name);
                }
                Entry::Tree(name) => {
                    db.tree(&name)?;
                    stats.trees += 1;
                }
                Entry::Record { key, value } => {
                    db.insert(&key, &value)?;
                    stats.records += 1;
                }
                Entry::End(_) => {}
            }
        }
        if last {
            break;
        }
        buf.copy_within(size..have, 0);
        have -= size;
    }
    opener.finish()?;
    decoder.finish()?;
    stats.log_size = db.finish(header.created_ms)?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::private::prelude::*;
    use crate::store::private::sled::SledStore;
    use std::sync::Arc;
    use std::time::Duration;

    struct VecSink(Vec<u8>, u64);

    #[async_trait]
    impl BackupSink for VecSink {
        async fn write(&mut self, bytes: &[u8]) -> Result<()> {
            self.0.extend_from_slice(bytes);
            Ok(())
        }
        async fn progress(&mut self, done: u64, total: u64) -> Result<()> {
            assert!(done <= total);
            self.1 = done;
            Ok(())
        }
    }

    #[tokio::test]
    async fn backup_restores_every_tree_and_the_identity_file() {
        let src = tempfile::tempdir().unwrap();
        let store = Arc::new(SledStore::open(&src.path().join("private"), 1 << 20).unwrap());
        store.create_bucket("b", 1).await.unwrap();
        for i in 0..3000u32 {
            store
                .add_pending(keyring::BlobId([(i % 251) as u8; 16]), u64::from(i))
                .await
                .unwrap();
        }
        assert_eq!(store.last_backup_ms().await.unwrap(), None);
        let recovery = Identity::generate();
        let institution = Identity::generate();
        let expected = ExpectedSigner {
            institution: &institution.recipient(),
            allow_unsigned: false,
        };
        let mut sink = VecSink(Vec::new(), 0);
        let files = vec![(
            "institution.key".to_string(),
            FileBytes(Zeroizing::new(b"secret file".to_vec())),
        )];
        let stats = write_backup(
            &*store,
            files,
            &recovery.recipient(),
            &institution,
            &mut sink,
        )
        .await
        .unwrap();
        assert_eq!(stats.bytes, sink.0.len() as u64);
        assert!(sink.1 > 0);
        record_backup(&*store, stats.created_ms).await.unwrap();
        assert_eq!(
            store.last_backup_ms().await.unwrap(),
            Some(stats.created_ms)
        );

        let dst = tempfile::tempdir().unwrap();
        let mut read = 0;
        let r = restore(
            &mut sink.0.as_slice(),
            &recovery,
            expected,
            dst.path(),
            &mut |n| read += n,
        )
        .unwrap();
        assert_eq!(read, sink.0.len() as u64);
        assert!(r.signed);
        assert_eq!(r.files, vec!["institution.key".to_string()]);
        assert_eq!(
            std::fs::read(dst.path().join("institution.key")).unwrap(),
            b"secret file"
        );
        let restored = SledStore::open(&dst.path().join("private"), 1 << 20).unwrap();
        assert!(restored.bucket("b").await.unwrap().is_some());
        assert_eq!(
            restored.pending().await.unwrap(),
            store.pending().await.unwrap()
        );
        assert_eq!(
            restored.last_backup_ms().await.unwrap(),
            Some(stats.created_ms)
        );

        // Another key, a flipped byte, a cut: errors, not panics.
        let other = tempfile::tempdir().unwrap();
        let e = restore(
            &mut sink.0.as_slice(),
            &Identity::generate(),
            expected,
            other.path(),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(matches!(
            e,
            Error::Keyring(keyring::Error::NotForThisIdentity)
        ));
        let mut bad = sink.0.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 1;
        let other = tempfile::tempdir().unwrap();
        assert!(restore(
            &mut bad.as_slice(),
            &recovery,
            expected,
            other.path(),
            &mut |_| {}
        )
        .is_err());
        let other = tempfile::tempdir().unwrap();
        let cut = &sink.0[..sink.0.len() - 1];
        assert!(restore(
            &mut &cut[..],
            &recovery,
            expected,
            other.path(),
            &mut |_| {}
        )
        .is_err());
        // Expecting another institution: refused before anything is written.
        let other = tempfile::tempdir().unwrap();
        let e = restore(
            &mut sink.0.as_slice(),
            &recovery,
            ExpectedSigner {
                institution: &Identity::generate().recipient(),
                allow_unsigned: true,
            },
            other.path(),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(
            matches!(e, Error::BackupRefused(ref m) if m.contains("not by the institution")),
            "{e}"
        );
        assert!(!other.path().join("private").exists());
    }

    #[test]
    fn unsigned_backups_need_allow_unsigned() {
        let recovery = Identity::generate();
        let institution = Identity::generate();
        let payload = {
            let mut out = Vec::new();
            Entry::Tree(b"buckets".to_vec())
                .encode_into(&mut out)
                .unwrap();
            Entry::End(1).encode_into(&mut out).unwrap();
            out
        };
        let v1 = keyring::backup::seal(&recovery.recipient(), 5, 1 << 10, &payload).unwrap();
        let refused = tempfile::tempdir().unwrap();
        let e = restore(
            &mut v1.as_slice(),
            &recovery,
            ExpectedSigner {
                institution: &institution.recipient(),
                allow_unsigned: false,
            },
            refused.path(),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(
            matches!(e, Error::BackupRefused(ref m) if m.contains("--allow-unsigned")),
            "{e}"
        );
        assert!(!refused.path().join("private").exists());
        let ok = tempfile::tempdir().unwrap();
        let r = restore(
            &mut v1.as_slice(),
            &recovery,
            ExpectedSigner {
                institution: &institution.recipient(),
                allow_unsigned: true,
            },
            ok.path(),
            &mut |_| {},
        )
        .unwrap();
        assert!(!r.signed);
        assert_eq!((r.trees, r.created_ms), (1, 5));
    }

    #[tokio::test]
    async fn export_waits_for_held_operations_and_writes_wait_for_export() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SledStore::open(dir.path(), 1 << 20).unwrap());
        store.create_bucket("b", 1).await.unwrap();
        // Enough records for several batches, so the export blocks on the channel.
        for i in 0..4000u32 {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            store
                .add_pending(keyring::BlobId(id), u64::from(i))
                .await
                .unwrap();
        }
        // An engine operation is between its write and its log entry.
        let hold = store.hold_writes().await;
        assert!(hold.is_some());
        let (tx, mut rx) = mpsc::channel(1);
        let s = Arc::clone(&store);
        let export = tokio::spawn(async move { s.export(tx).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            rx.try_recv().is_err(),
            "the export must wait for the operation"
        );
        drop(hold);
        // Now the export holds the gate and waits on the channel: a write waits too.
        let first = rx.recv().await.unwrap();
        assert!(first.total >= 2);
        let s = Arc::clone(&store);
        let write = tokio::spawn(async move { s.create_bucket("c", 2).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!write.is_finished(), "a write must wait for the export");
        while rx.recv().await.is_some() {}
        export.await.unwrap().unwrap();
        write.await.unwrap().unwrap();
        assert!(store.bucket("c").await.unwrap().is_some());
    }

    #[test]
    fn file_names_are_plain() {
        for bad in ["", ".", "..", "../x", "a/b", "private", ".hidden", "é"] {
            assert!(check_file_name(bad).is_err(), "{bad}");
        }
        check_file_name("institution.key").unwrap();
    }

    #[test]
    fn file_bytes_debug_is_redacted() {
        let f = FileBytes(Zeroizing::new(b"SECRET".to_vec()));
        assert_eq!(format!("{f:?}"), "FileBytes(<6 bytes>)");
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(serde_json::from_str::<FileBytes>(&json).unwrap(), f);
    }
}
