//! The transparency log: DESIGN.md's "Transparency log".
//!
//! Entries ([`Event`]s) stay in the private store, each with a random salt; the log's
//! Merkle leaves are the RFC 6962 leaf hashes of their salted commitments
//! (`keyring::logentry`). [`publish`] writes the leaves as C2SP tlog-tiles and a signed
//! C2SP checkpoint to `v1/log/` in the public store, where the gateway cannot take them
//! back. [`verify`] checks the private log against every checkpoint it published and the
//! one in the public store, every manifest against the object root logged at its write,
//! and with `deep` every blob against its chunk leaves.

use keyring::checkpoint::Checkpoint;
use keyring::logentry::Entry;
use keyring::{Hash, Identity, Manifest, Recipient};
use object_store::path::Path as StorePath;

use crate::private::{Event, PrivateStore};
use crate::public::PublicStore;
use crate::{Error, Result};

/// Where the latest checkpoint is published.
pub const CHECKPOINT_PATH: &str = "v1/log/checkpoint";
/// Prefix of the tiles.
pub const TILE_PREFIX: &str = "v1/log/";

fn unhex32(s: &str, what: &str) -> Result<Hash> {
    let v = hex::decode(s).map_err(|_| Error::Corrupt(what.into()))?;
    <[u8; 32]>::try_from(v.as_slice()).map_err(|_| Error::Corrupt(what.into()))
}

/// The log entry an event stands for (the store fills seq, salt and the patient chain).
///
/// # Errors
/// `Corrupt` for malformed hex fields.
pub fn entry_of(e: &Event) -> Result<Entry> {
    Ok(Entry {
        index: e.seq,
        time_ms: e.time_ms,
        kind: e.kind.clone(),
        actor: e.actor.clone(),
        patient: e.patient.clone(),
        patient_seq: e.patient_seq,
        patient_prev: if e.patient_prev.is_empty() {
            [0u8; 32]
        } else {
            unhex32(&e.patient_prev, "log entry: patient_prev")?
        },
        bucket: e.bucket.clone(),
        key: e.key.clone(),
        grant: e.grant.clone(),
        root: match &e.root {
            Some(r) => Some(unhex32(r, "log entry: root")?),
            None => None,
        },
        detail: e.detail.clone(),
    })
}

/// An event's salted commitment.
///
/// # Errors
/// `Corrupt` for malformed stored fields.
pub fn commitment_of(e: &Event) -> Result<Hash> {
    let salt = unhex32(&e.salt, "log entry: salt")?;
    Ok(entry_of(e)?.commitment(&salt))
}

/// The object root logged for a manifest (over its parts' roots).
pub fn manifest_root(m: &Manifest) -> Hash {
    let roots: Vec<Hash> = m.parts.iter().map(|p| p.root).collect();
    keyring::logentry::object_root(&roots)
}

/// The log's origin line and checkpoint key name for an institution.
pub fn origin(institution: &Recipient) -> String {
    format!(
        "medgate.log/{}",
        hex::encode(&institution.fingerprint()[..16])
    )
}

/// Publishes the log's new tiles and a signed checkpoint if it grew since the last one.
/// Returns the published size, or `None` if nothing was new.
///
/// # Errors
/// Store failures.
pub async fn publish(
    private: &dyn PrivateStore,
    public: &PublicStore,
    institution: &Identity,
) -> Result<Option<u64>> {
    let size = private.log_size().await?;
    let last = private
        .checkpoints()
        .await?
        .last()
        .map(|(s, _)| *s)
        .unwrap_or(0);
    if size == 0 || size == last {
        return Ok(None);
    }
    let leaves = private.log_leaves(0, size).await?;
    for (path, bytes) in keyring::tiles::tiles_for(&leaves, last, size)? {
        public
            .put(
                &StorePath::from(format!("{TILE_PREFIX}{path}")),
                bytes.into(),
            )
            .await?;
    }
    let name = origin(&institution.recipient());
    let cp = Checkpoint::new(name.clone(), size, keyring::root(&leaves));
    let note = institution.sign_checkpoint(&name, &cp)?;
    private.put_checkpoint(size, &note).await?;
    private.flush().await?;
    public
        .put(
            &StorePath::from(CHECKPOINT_PATH),
            note.clone().into_bytes().into(),
        )
        .await?;
    Ok(Some(size))
}

/// What [`verify`] found.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct VerifyReport {
    pub log_size: u64,
    pub checkpoints: u64,
    pub published_size: Option<u64>,
    pub objects: u64,
    pub blobs_rehashed: u64,
    /// One line per mismatch, naming the log index, object or blob.
    pub problems: Vec<String>,
}

/// Checks the log and the records (see the module docs). Progress goes to `progress`
/// as (done, total) over the steps.
///
/// # Errors
/// Store failures that stop the check (mismatches are [`VerifyReport::problems`]).
pub async fn verify(
    private: &dyn PrivateStore,
    public: &PublicStore,
    institution: &Recipient,
    deep: bool,
    progress: &(dyn Fn(&str, u64, u64) + Send + Sync),
) -> Result<VerifyReport> {
    let mut r = VerifyReport::default();
    // 1. Every entry's commitment matches its leaf; the patient chains have no gaps.
    let size = private.log_size().await?;
    r.log_size = size;
    let leaves = private.log_leaves(0, size).await.unwrap_or_else(|e| {
        r.problems.push(format!("log leaves unreadable: {e}"));
        Vec::new()
    });
    let mut heads: std::collections::HashMap<String, (u64, Hash)> = Default::default();
    let mut logged_roots: std::collections::HashMap<(String, String), Option<String>> =
        Default::default();
    let mut next = 0u64;
    loop {
        let batch = private.events(next, 4096).await?;
        if batch.is_empty() {
            break;
        }
        for e in &batch {
            if e.seq != next {
                r.problems.push(format!(
                    "log index {next}: entry missing (next is {})",
                    e.seq
                ));
            }
            match commitment_of(e) {
                Ok(c) => {
                    let leaf = keyring::leaf_hash(&c);
                    if leaves.get(e.seq as usize) != Some(&leaf) {
                        r.problems.push(format!(
                            "log index {}: entry does not match its leaf",
                            e.seq
                        ));
                    }
                    if let Some(p) = &e.patient {
                        let (seq, prev) = heads.get(p).copied().unwrap_or((0, [0u8; 32]));
                        if e.patient_seq != seq + 1 || e.patient_prev != hex::encode(prev) {
                            r.problems.push(format!(
                                "log index {}: patient chain of {p} broken (seq {} after {seq})",
                                e.seq, e.patient_seq
                            ));
                        }
                        heads.insert(p.clone(), (e.patient_seq, c));
                    }
                }
                Err(err) => r.problems.push(format!("log index {}: {err}", e.seq)),
            }
            if let (Some(b), Some(k)) = (&e.bucket, &e.key) {
                match e.kind.as_str() {
                    "put" | "copy" => {
                        logged_roots.insert((b.clone(), k.clone()), e.root.clone());
                    }
                    "delete" => {
                        logged_roots.remove(&(b.clone(), k.clone()));
                    }
                    _ => {}
                }
            }
            next = e.seq + 1;
        }
        progress("log", next, size);
    }
    if next != size {
        r.problems.push(format!(
            "log index {next}: entries end at {next} but the log has {size} leaves"
        ));
    }
    // 2. Every checkpoint we published is a prefix of this log, signed by us.
    let name = origin(institution);
    let cps = private.checkpoints().await?;
    r.checkpoints = cps.len() as u64;
    for (s, note) in &cps {
        check_checkpoint(
            &mut r,
            institution,
            &name,
            note,
            &leaves,
            &format!("checkpoint {s}"),
        );
    }
    // 3. The published checkpoint: signed, not older than our latest, consistent.
    match public.get(&StorePath::from(CHECKPOINT_PATH)).await {
        Ok(got) => {
            let text = String::from_utf8_lossy(&got.bytes().await?).to_string();
            if let Some(cp) = check_checkpoint(
                &mut r,
                institution,
                &name,
                &text,
                &leaves,
                "published checkpoint",
            ) {
                r.published_size = Some(cp.size);
                if let Some((latest, _)) = cps.last() {
                    if cp.size < *latest {
                        r.problems.push(format!(
                            "published checkpoint: size {} is older than the latest published ({latest}): rolled back",
                            cp.size
                        ));
                    }
                }
            }
        }
        Err(object_store::Error::NotFound { .. }) if cps.is_empty() => {}
        Err(e) => r
            .problems
            .push(format!("published checkpoint unreadable: {e}")),
    }
    // 4. Every manifest matches the object root logged when it was written.
    let buckets = private.list_buckets().await?;
    for b in &buckets {
        let mut after = String::new();
        loop {
            let page = private.list_objects(&b.name, "", &after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = last.key.clone();
            for o in &page {
                r.objects += 1;
                let here = hex::encode(manifest_root(&o.manifest));
                match logged_roots.get(&(b.name.clone(), o.key.clone())) {
                    Some(Some(root)) if *root == here => {}
                    Some(Some(_)) => r.problems.push(format!(
                        "object {}/{}: manifest root differs from the root logged at its write",
                        b.name, o.key
                    )),
                    _ => r.problems.push(format!(
                        "object {}/{}: no logged write for this manifest",
                        b.name, o.key
                    )),
                }
                if deep {
                    for part in &o.manifest.parts {
                        if let Err(e) = rehash_blob(private, public, part).await {
                            r.problems.push(format!(
                                "object {}/{}: blob {}: {e}",
                                b.name,
                                o.key,
                                part.blob.to_hex()
                            ));
                        }
                        r.blobs_rehashed += 1;
                    }
                }
            }
            progress("objects", r.objects, r.objects);
        }
    }
    Ok(r)
}

fn check_checkpoint(
    r: &mut VerifyReport,
    institution: &Recipient,
    name: &str,
    note: &str,
    leaves: &[Hash],
    what: &str,
) -> Option<Checkpoint> {
    let cp = match institution.verify_checkpoint(name, note) {
        Ok(cp) => cp,
        Err(e) => {
            r.problems
                .push(format!("{what}: signature does not verify ({e})"));
            return None;
        }
    };
    if cp.size > leaves.len() as u64 {
        r.problems.push(format!(
            "{what}: size {} is larger than the log ({}): entries were deleted",
            cp.size,
            leaves.len()
        ));
        return None;
    }
    let root = keyring::root(&leaves[..cp.size as usize]);
    if !keyring::merkle::hash_eq(&root, &cp.root) {
        r.problems.push(format!(
            "{what}: the log's first {} entries do not hash to the signed root: the log was rewritten",
            cp.size
        ));
    }
    Some(cp)
}

async fn rehash_blob(
    private: &dyn PrivateStore,
    public: &PublicStore,
    part: &keyring::Part,
) -> Result<()> {
    let layout = keyring::Layout::new(part.plaintext_len, part.chunk_size)?;
    let sealed = public
        .get(&crate::public::blob_path(&part.blob))
        .await?
        .bytes()
        .await?;
    if sealed.len() as u64 != layout.sealed_total() {
        return Err(Error::Corrupt(format!(
            "{} bytes, expected {}",
            sealed.len(),
            layout.sealed_total()
        )));
    }
    let n = layout.chunk_count();
    let stored = private.leaves(part.blob, 0, n.saturating_sub(1)).await?;
    let mut b = keyring::RootBuilder::new();
    for i in 0..n {
        let (from, len) = (layout.sealed_offset(i), layout.sealed_len(i));
        let leaf = keyring::leaf_hash(&sealed[from as usize..(from + len) as usize]);
        if stored.get(i as usize) != Some(&leaf) {
            return Err(Error::Corrupt(format!("chunk {i} does not match its leaf")));
        }
        b.push(leaf);
    }
    if !keyring::merkle::hash_eq(&b.finish(), &part.root) {
        return Err(Error::Corrupt(
            "leaves do not hash to the manifest root".into(),
        ));
    }
    Ok(())
}
