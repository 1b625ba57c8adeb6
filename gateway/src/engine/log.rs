//! The transparency log: DESIGN.md's "Transparency log".
//!
//! Entries ([`Event`]s) stay in the private store, each with a random salt; the log's
//! Merkle leaves are the RFC 6962 leaf hashes of their salted commitments
//! (`keyring::logentry`). [`publish`] writes the leaves as C2SP tlog-tiles and a signed
//! C2SP checkpoint to `v1/log/` in the public store, where the gateway cannot take them
//! back. [`verify`] checks the private log against every checkpoint it published and the
//! one in the public store, every manifest against the object root logged at its write,
//! and with `deep` every blob against its chunk leaves.
//!
//! # How entries get in
//! - A write (put, copy, multipart completion, delete) appends its entry in the very
//!   transaction that commits it (`PrivateStore::commit_put_logged`,
//!   `delete_object_logged`): there is no window in which a write is visible but not
//!   logged.
//! - Every other entry (reads, sharing, grants, expiry, ...) goes through the
//!   [`Appender`], a group commit: concurrent callers queue their entries, one of them
//!   writes everything queued in one `append_events` transaction and one flush, and each
//!   caller is answered once its batch is durable. The next batch's transaction overlaps
//!   the previous batch's flush (one batch ahead of the disk at most).
//! - Both paths take the log size inside their transaction, and sled serializes
//!   transactions that touch the same key, so indices stay dense and gap-free whichever
//!   path an entry took; a patient's chain runs across both.
//!
//! # Proofs
//! The store keeps the tree as tiles, so the root of any complete aligned subtree
//! (`PrivateStore::log_hashes`) is one read and at most 127 hashes. [`StoredTree`] serves them to keyring's proof
//! generators as a `LeafSource`, so an inclusion or consistency proof, a tree root, or the
//! tiles of a publication read O(log n) (tiles: O(new entries)) stored hashes instead of
//! hashing the whole log.

use std::collections::HashMap;
use std::sync::Arc;

use keyring::checkpoint::Checkpoint;
use keyring::merkle::{ConsistencyProof, LeafSource};
use keyring::tiles::TileId;
use keyring::{Hash, Identity, InclusionProof, Manifest, Recipient};
use object_store::path::Path as StorePath;
use tokio::sync::oneshot;

use crate::store::private::{Actor, Event, EventKind, PrivateStore};
use crate::store::public::PublicStore;
use crate::{Error, Result};

/// Where the latest checkpoint is published.
pub const CHECKPOINT_PATH: &str = "v1/log/checkpoint";
/// Prefix of the tiles.
pub const TILE_PREFIX: &str = "v1/log/";

pub use crate::store::private::entry_of;

/// An event's salted commitment.
///
/// # Errors
/// `Corrupt` for malformed stored fields.
pub fn commitment_of(e: &Event) -> Result<Hash> {
    let salt = e.salt_hash()?;
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

/// The origin line of a stored checkpoint note.
fn note_origin(note: &str) -> Result<String> {
    Ok(keyring::checkpoint::SignedNote::parse(note)?
        .checkpoint()?
        .origin)
}

/// The log's origin line and checkpoint key name: the one its checkpoints carry. It never
/// changes, not even when the institution replaces its key (`medgate keys rotate`, see
/// [`crate::engine::keyrot`]): it was derived ([`origin`]) from the key that published the first
/// checkpoint. A log that published nothing yet gets the one derived from `institution`.
///
/// # Errors
/// Store failures; a stored checkpoint that does not parse.
pub async fn log_origin(private: &dyn PrivateStore, institution: &Recipient) -> Result<String> {
    match private.checkpoints().await?.last() {
        Some((_, note)) => note_origin(note),
        None => Ok(origin(institution)),
    }
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
    let _one = PUBLISHING.lock().await;
    let size = private.log_size().await?;
    crate::metrics::global()
        .log_size
        .set(i64::try_from(size).unwrap_or(i64::MAX));
    let stored = private.checkpoints().await?;
    let last = stored.last().map(|(s, _)| *s).unwrap_or(0);
    if size == 0 || size == last {
        return Ok(None);
    }
    if size < last {
        return Err(Error::Corrupt(format!(
            "the log has {size} entries but a checkpoint of {last} was published"
        )));
    }
    for (path, bytes) in tiles_between(private, last, size).await? {
        public
            .put(
                &StorePath::from(format!("{TILE_PREFIX}{path}")),
                bytes.into(),
            )
            .await?;
    }
    let name = match stored.last() {
        Some((_, note)) => note_origin(note)?,
        None => origin(&institution.recipient()),
    };
    let cp = Checkpoint::new(name.clone(), size, tree_root(private, size).await?);
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

/// The checkpoint note published in `public` (what patients and witnesses check).
///
/// # Errors
/// `NotFound` when nothing is published; store failures; a note that is not text.
pub async fn published_checkpoint(public: &PublicStore) -> Result<String> {
    let bytes = match public.get(&StorePath::from(CHECKPOINT_PATH)).await {
        Ok(got) => got.bytes().await?,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(Error::NotFound(format!(
                "no checkpoint at {CHECKPOINT_PATH} in the public store"
            )))
        }
        Err(e) => return Err(e.into()),
    };
    String::from_utf8(bytes.to_vec())
        .map_err(|_| Error::Corrupt("the published checkpoint is not text".into()))
}

/// One writer of the published checkpoint at a time ([`publish`], [`add_cosignature`]), so a
/// cosigned older checkpoint never replaces a newer one.
static PUBLISHING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The key name a witness cosigns under: derived from its Recipient, so the gateway can
/// check a cosignature from any configured peer without more configuration.
pub fn witness_name(witness: &Recipient) -> String {
    format!(
        "medgate.witness/{}",
        hex::encode(&witness.fingerprint()[..16])
    )
}

/// Takes a witness's cosignature of the latest checkpoint: `note` must carry this
/// institution's signature and a valid cosignature by one of `witnesses` (under
/// [`witness_name`]) over the checkpoint this gateway published last. The cosignature line
/// is added to the stored and the published note (until the next checkpoint replaces it).
/// Returns the witness's index in `witnesses`.
///
/// # Errors
/// `GrantRefused` for a note that is not signed by this institution or cosigned by a
/// configured witness, or is not the latest checkpoint; store failures.
pub async fn add_cosignature(
    private: &dyn PrivateStore,
    public: &PublicStore,
    institution: &Identity,
    witnesses: &[Recipient],
    note: &str,
) -> Result<usize> {
    use keyring::checkpoint::SignedNote;
    let _one = PUBLISHING.lock().await;
    let refuse = |why: &str| Error::GrantRefused(format!("cosignature refused: {why}"));
    let name = log_origin(private, &institution.recipient()).await?;
    let cp = institution
        .recipient()
        .verify_checkpoint(&name, note)
        .map_err(|_| refuse("the note is not this institution's checkpoint"))?;
    let (who, wname) = witnesses
        .iter()
        .enumerate()
        .find_map(|(i, w)| {
            let n = witness_name(w);
            w.verify_cosignature(&n, note).ok().map(|_| (i, n))
        })
        .ok_or_else(|| refuse("no valid cosignature by a configured witness ([[peers]])"))?;
    let (size, stored) = private
        .checkpoints()
        .await?
        .pop()
        .ok_or_else(|| refuse("nothing published yet"))?;
    let mut merged = SignedNote::parse(&stored)?;
    let current = merged.checkpoint()?;
    if current.size != cp.size || !keyring::merkle::hash_eq(&current.root, &cp.root) {
        return Err(refuse(&format!(
            "it cosigns size {} but the latest checkpoint is size {size}",
            cp.size
        )));
    }
    let incoming = SignedNote::parse(note)?;
    for sig in incoming.signatures().iter().filter(|s| s.name == wname) {
        if !merged.signatures().iter().any(|m| m.name == wname) {
            merged.add_signature(sig.clone())?;
        }
    }
    let merged = merged.to_string();
    private.put_checkpoint(size, &merged).await?;
    private.flush().await?;
    public
        .put(
            &StorePath::from(CHECKPOINT_PATH),
            merged.into_bytes().into(),
        )
        .await?;
    Ok(who)
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
    // The tree recomputed from the leaves; the stored tiles proofs are served from (their
    // levels are heights 8, 16, ...) must equal it.
    let levels = Levels::new(leaves.clone());
    for (h, want) in levels.0.iter().enumerate().skip(8).step_by(8) {
        // Invariant: at most 64 levels.
        let height = h as u8;
        match private.log_hashes(height, 0, want.len() as u64).await {
            Ok(stored) => {
                if let Some(i) = (0..want.len()).find(|&i| stored.get(i) != want.get(i)) {
                    r.problems.push(format!(
                        "log subtree {height}/{i}: stored hash differs from the leaves"
                    ));
                }
            }
            Err(e) => r
                .problems
                .push(format!("log subtrees of height {height}: {e}")),
        }
    }
    let mut heads: std::collections::HashMap<String, (u64, Hash)> = Default::default();
    let mut logged_roots: std::collections::HashMap<(String, String), Option<String>> =
        Default::default();
    let mut rollovers: Vec<keyring::SignedRollover> = Vec::new();
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
            if e.kind == EventKind::KeyRollover {
                match keyring::SignedRollover::from_text(&e.detail) {
                    Ok(s) => rollovers.push(s),
                    Err(err) => r.problems.push(format!(
                        "log index {}: key rollover unreadable: {err}",
                        e.seq
                    )),
                }
            }
            if let (Some(b), Some(k)) = (&e.bucket, &e.key) {
                match &e.kind {
                    kind if kind.is_object_write() => {
                        logged_roots.insert((b.clone(), k.clone()), e.root.clone());
                    }
                    EventKind::Delete => {
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
    // 2. Every checkpoint we published is a prefix of this log, signed by the key in force
    // at its size: the first key, then each rollover's new key for the checkpoints that
    // include the rollover's entry. The chain of rollovers leads to today's key.
    let name = log_origin(private, institution).await?;
    let keys = match crate::engine::keyrot::key_history(&rollovers, institution) {
        Ok(k) => k,
        Err(e) => {
            r.problems.push(format!("key rollovers: {e}"));
            vec![(0, institution.clone())]
        }
    };
    let key_at = |size: u64| -> &Recipient {
        keys.iter()
            .rev()
            .find(|(from, _)| size > *from || *from == 0)
            .map(|(_, k)| k)
            .unwrap_or(institution)
    };
    let cps = private.checkpoints().await?;
    r.checkpoints = cps.len() as u64;
    for (s, note) in &cps {
        check_checkpoint(
            &mut r,
            key_at(*s),
            &name,
            note,
            &levels,
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
                &levels,
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
    let expected_objects = logged_roots.len() as u64;
    let buckets = private.list_buckets().await?;
    for b in &buckets {
        let mut after = String::new();
        loop {
            let page = private.list_objects(&b.name, "", &after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = last.key.clone();
            for o in &page {
                r.objects += 1;
                progress("objects", r.objects, expected_objects.max(r.objects));
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
        }
    }
    progress("objects", r.objects, r.objects);
    Ok(r)
}

fn check_checkpoint(
    r: &mut VerifyReport,
    institution: &Recipient,
    name: &str,
    note: &str,
    tree: &Levels,
    what: &str,
) -> Option<Checkpoint> {
    let size = tree.size();
    let cp = match institution.verify_checkpoint(name, note) {
        Ok(cp) => cp,
        Err(e) => {
            r.problems
                .push(format!("{what}: signature does not verify ({e})"));
            return None;
        }
    };
    if cp.size > size {
        r.problems.push(format!(
            "{what}: size {} is larger than the log ({size}): entries were deleted",
            cp.size
        ));
        return None;
    }
    let root = keyring::merkle::subtree_root(tree, 0, cp.size).ok()?;
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
        .get(&crate::store::public::blob_path(&part.blob))
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

/// Every level of a tree, recomputed from its leaves: level `h` holds the roots of its
/// complete aligned subtrees of `2^h` leaves. What [`verify`] checks the stored hashes and
/// the checkpoints against.
struct Levels(Vec<Vec<Hash>>);

impl Levels {
    fn new(leaves: Vec<Hash>) -> Levels {
        let mut levels = vec![leaves];
        while let Some(below) = levels.last().filter(|l| l.len() > 1) {
            let up = below
                .chunks_exact(2)
                .map(|p| keyring::merkle::node_hash(&p[0], &p[1]))
                .collect();
            levels.push(up);
        }
        Levels(levels)
    }

    fn size(&self) -> u64 {
        self.0.first().map_or(0, |l| l.len() as u64)
    }
}

impl LeafSource for Levels {
    type Error = keyring::Error;

    fn leaf(&self, index: u64) -> keyring::Result<Hash> {
        self.perfect_root(0, index)
    }

    fn perfect_root(&self, height: u8, index: u64) -> keyring::Result<Hash> {
        self.0
            .get(usize::from(height))
            .and_then(|l| l.get(usize::try_from(index).ok()?))
            .copied()
            .ok_or(keyring::Error::IndexOutOfRange {
                index,
                size: self.size(),
            })
    }
}

/// Records which subtrees a proof generator reads, answering with placeholders: which
/// subtrees a proof needs depends on the sizes and the index only, never on the hashes,
/// so a dry run tells [`StoredTree::load`] what to fetch.
#[derive(Default)]
struct Reads(std::sync::Mutex<Vec<(u8, u64)>>);

impl Reads {
    fn take(self) -> Vec<(u8, u64)> {
        self.0.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

impl LeafSource for Reads {
    type Error = keyring::Error;

    fn leaf(&self, index: u64) -> keyring::Result<Hash> {
        self.perfect_root(0, index)
    }

    fn perfect_root(&self, height: u8, index: u64) -> keyring::Result<Hash> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((height, index));
        Ok([0u8; 32])
    }
}

/// Perfect subtree roots read from the private store, as a `LeafSource`: each subtree a
/// proof generator asks for is one stored hash (`PrivateStore::log_hashes`).
pub struct StoredTree {
    hashes: HashMap<(u8, u64), Hash>,
}

impl StoredTree {
    /// Reads the subtree roots `(height, index)` from the store.
    ///
    /// # Errors
    /// Store failures; `Corrupt` if one is missing (not a complete subtree).
    pub async fn load(
        store: &dyn PrivateStore,
        wanted: impl IntoIterator<Item = (u8, u64)>,
    ) -> Result<StoredTree> {
        let mut hashes = HashMap::new();
        for (height, index) in wanted {
            if hashes.contains_key(&(height, index)) {
                continue;
            }
            let got = store.log_hashes(height, index, index + 1).await?;
            let h = got
                .first()
                .copied()
                .ok_or_else(|| Error::Corrupt(format!("log subtree {height}/{index} missing")))?;
            hashes.insert((height, index), h);
        }
        Ok(StoredTree { hashes })
    }

    /// Loads what `generate` reads and runs it over the stored hashes.
    async fn run<T>(
        store: &dyn PrivateStore,
        size: u64,
        generate: impl Fn(&dyn ProofSource) -> Result<T>,
    ) -> Result<T> {
        let have = store.log_size().await?;
        if size > have {
            return Err(Error::InvalidArgument(format!(
                "the log has {have} entries, not {size}"
            )));
        }
        let reads = Reads::default();
        generate(&reads)?;
        let tree = StoredTree::load(store, reads.take()).await?;
        generate(&tree)
    }
}

impl LeafSource for StoredTree {
    type Error = Error;

    fn leaf(&self, index: u64) -> Result<Hash> {
        self.perfect_root(0, index)
    }

    fn perfect_root(&self, height: u8, index: u64) -> Result<Hash> {
        self.hashes
            .get(&(height, index))
            .copied()
            .ok_or_else(|| Error::Corrupt(format!("log subtree {height}/{index} not loaded")))
    }
}

/// The two sources [`StoredTree::run`] drives one generator over.
trait ProofSource {
    fn subtree(&self, start: u64, end: u64) -> Result<Hash>;
    fn inclusion(&self, index: u64, size: u64) -> Result<InclusionProof>;
    fn consistency(&self, old: u64, new: u64) -> Result<ConsistencyProof>;
}

impl<S: LeafSource> ProofSource for S
where
    Error: From<S::Error>,
{
    fn subtree(&self, start: u64, end: u64) -> Result<Hash> {
        Ok(keyring::merkle::subtree_root(self, start, end)?)
    }

    fn inclusion(&self, index: u64, size: u64) -> Result<InclusionProof> {
        Ok(InclusionProof::generate_from(self, index, size)?)
    }

    fn consistency(&self, old: u64, new: u64) -> Result<ConsistencyProof> {
        Ok(ConsistencyProof::generate_from(self, old, new)?)
    }
}

/// The root of the log's first `size` entries, from O(log size) stored hashes.
///
/// # Errors
/// `InvalidArgument` if the log is shorter; store failures.
pub async fn tree_root(store: &dyn PrivateStore, size: u64) -> Result<Hash> {
    StoredTree::run(store, size, |s| s.subtree(0, size)).await
}

/// The proof that entry `index` is in the log's first `size` entries, from O(log size)
/// stored hashes.
///
/// # Errors
/// `InvalidArgument` if the log is shorter; keyring's `IndexOutOfRange` if
/// `index >= size`; store failures.
pub async fn inclusion_proof(
    store: &dyn PrivateStore,
    index: u64,
    size: u64,
) -> Result<InclusionProof> {
    StoredTree::run(store, size, |s| s.inclusion(index, size)).await
}

/// The proof that the log's first `old` entries are a prefix of its first `new`, from
/// O(log new) stored hashes.
///
/// # Errors
/// `InvalidArgument` if the log is shorter than `new`; keyring's `IndexOutOfRange` if
/// `old > new`; store failures.
pub async fn consistency_proof(
    store: &dyn PrivateStore,
    old: u64,
    new: u64,
) -> Result<ConsistencyProof> {
    StoredTree::run(store, new, |s| s.consistency(old, new)).await
}

/// The tiles (path under [`TILE_PREFIX`], bytes) that exist at size `new` but not at
/// `old`, lowest level first: what `keyring::tiles::tiles_for` computes from every leaf,
/// read here from the stored subtree hashes (a level-`L` tile holds subtree roots of
/// height `8L`), so publishing costs O(new entries).
///
/// # Errors
/// `InvalidArgument` if `old > new`; store failures.
pub async fn tiles_between(
    store: &dyn PrivateStore,
    old: u64,
    new: u64,
) -> Result<Vec<(String, Vec<u8>)>> {
    if old > new {
        return Err(Error::InvalidArgument(format!(
            "tiles from size {old} to {new}"
        )));
    }
    let width = keyring::tiles::TILE_WIDTH;
    let mut out = Vec::new();
    for level in 0..8u8 {
        let shift = 8 * u32::from(level);
        let (a, b) = (old >> shift, new >> shift);
        if a == b {
            break;
        }
        // The first changed tile starts with the hashes it already had.
        let first = a / width * width;
        let hashes = store.log_hashes(8 * level, first, b).await?;
        for index in a / width..b.div_ceil(width) {
            let start = index * width;
            let end = (start + width).min(b);
            let slice = usize::try_from(start - first)
                .ok()
                .zip(usize::try_from(end - first).ok())
                .and_then(|(lo, hi)| hashes.get(lo..hi))
                .ok_or_else(|| Error::Corrupt(format!("log tile {level}/{index}")))?;
            let id = TileId {
                level,
                index,
                // Invariant: end - start is 1 to 256.
                width: (end - start) as u16,
            };
            out.push((id.path(), slice.concat()));
        }
    }
    Ok(out)
}

/// The entry of a committed write (put, copy, rotate) or delete of `bucket/key` by `actor`: the
/// access key id that made it, or `admin` for a rotation (entries written before writes were
/// attributed say `s3`, [`Actor::S3`]).
pub(crate) fn write_entry(
    kind: EventKind,
    actor: &str,
    bucket: &str,
    key: &str,
    m: Option<&Manifest>,
) -> Event {
    Event {
        time_ms: crate::now_ms(),
        kind,
        actor: Actor::parse(actor),
        patient: m.and_then(|m| m.patient.clone()),
        bucket: Some(bucket.into()),
        key: Some(key.into()),
        root: m.map(|m| hex::encode(manifest_root(m))),
        detail: m.map_or_else(String::new, |m| {
            format!("{} bytes, etag {}", m.size, m.etag)
        }),
        ..Default::default()
    }
}

/// Most entries one batch writes; a longer queue is written in several.
const MAX_BATCH: usize = 4096;

/// An entry waiting for its batch, and who to tell its index.
type Waiting = (Event, oneshot::Sender<std::result::Result<u64, String>>);

/// Group commit for log entries (see the module docs): callers queue entries; whoever
/// takes the writer's turn writes every queued entry in one transaction and one flush and
/// answers each caller once its batch is durable. The writing runs in a task of its own,
/// so a caller that goes away mid-batch strands nobody; the store is released before the
/// last caller hears back.
pub struct Appender {
    store: Arc<dyn PrivateStore>,
    /// Entries not yet taken by a writer.
    queue: Arc<std::sync::Mutex<Vec<Waiting>>>,
    /// Held by the one writer at a time, until the queue it found is written.
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl Appender {
    pub fn new(store: Arc<dyn PrivateStore>) -> Appender {
        Appender {
            store,
            queue: Default::default(),
            turn: Default::default(),
        }
    }

    /// Appends `event` and returns its index once it is durable.
    ///
    /// # Errors
    /// The store's failure to write or flush the batch (every entry of that batch gets
    /// it, as `Internal`).
    pub async fn append(&self, event: Event) -> Result<u64> {
        let (tx, mut rx) = oneshot::channel();
        lock(&self.queue).push((event, tx));
        let turn = Arc::clone(&self.turn).lock_owned().await;
        match rx.try_recv() {
            // A writer before us took and wrote our entry.
            Ok(r) => return r.map_err(Error::Internal),
            Err(oneshot::error::TryRecvError::Empty) => {}
            Err(oneshot::error::TryRecvError::Closed) => {
                return Err(Error::Internal("log writer stopped".into()))
            }
        }
        // Our turn: write the queue (our entry is in it, or in a batch being written by
        // a writer whose caller went away). The writing runs in its own task, so a caller
        // that goes away mid-batch strands nobody.
        tokio::spawn(drain(
            Arc::clone(&self.store),
            Arc::clone(&self.queue),
            turn,
        ));
        match rx.await {
            Ok(r) => r.map_err(Error::Internal),
            Err(_) => Err(Error::Internal("log writer stopped".into())),
        }
    }
}

fn lock(queue: &std::sync::Mutex<Vec<Waiting>>) -> std::sync::MutexGuard<'_, Vec<Waiting>> {
    // A panic elsewhere cannot leave the queue half-changed: every change is one call.
    queue.lock().unwrap_or_else(|p| p.into_inner())
}

/// Writes the queue in batches until it is empty, holding the writer's turn. A batch is
/// answered once a flush that started after its transaction returns. The next batch's
/// transaction runs while that flush does, but waits for it before flushing itself, so
/// one batch at most is written ahead of the disk and batches do not splinter.
async fn drain(
    store: Arc<dyn PrivateStore>,
    queue: Arc<std::sync::Mutex<Vec<Waiting>>>,
    _turn: tokio::sync::OwnedMutexGuard<()>,
) {
    let mut flushing: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        let batch: Vec<Waiting> = {
            let mut q = lock(&queue);
            let n = q.len().min(MAX_BATCH);
            q.drain(..n).collect()
        };
        if batch.is_empty() {
            break;
        }
        let (events, waiters): (Vec<Event>, Vec<_>) = batch.into_iter().unzip();
        let written = store.append_events(events).await;
        if let Some(previous) = flushing.take() {
            // Its task answers its callers; a panic there is already reported.
            let _ = previous.await;
        }
        match written {
            Ok(first) => {
                flushing = Some(tokio::spawn(durable(Arc::clone(&store), first, waiters)));
            }
            Err(e) => answer(waiters, &Err(e)),
        }
    }
    drop(store);
    if let Some(last) = flushing {
        let _ = last.await;
    }
}

/// Flushes (the store shares one flush among concurrent callers) and answers a written
/// batch.
async fn durable(
    store: Arc<dyn PrivateStore>,
    first: u64,
    waiters: Vec<oneshot::Sender<std::result::Result<u64, String>>>,
) {
    let written = store.flush().await.map(|()| first);
    // Let go of the store before the callers hear back, so one that closes it next finds
    // it free.
    drop(store);
    answer(waiters, &written);
}

fn answer(waiters: Vec<oneshot::Sender<std::result::Result<u64, String>>>, written: &Result<u64>) {
    for (i, w) in waiters.into_iter().enumerate() {
        // A caller that went away no longer listens; its entry is written all the same.
        let _ = w.send(match written {
            Ok(first) => Ok(first + i as u64),
            Err(e) => Err(format!("log append: {e}")),
        });
    }
}

impl crate::engine::record::Engine {
    /// Logs a read of `bucket/key` (GetObject, HeadObject) by `actor`; returns once the
    /// entry is durable, so the caller can answer.
    ///
    /// # Errors
    /// Store failures.
    pub async fn log_read(
        &self,
        bucket: &str,
        key: &str,
        m: &Manifest,
        actor: &str,
        detail: String,
    ) -> Result<u64> {
        self.log(Event {
            kind: EventKind::Read,
            actor: Actor::parse(actor),
            patient: m.patient.clone(),
            bucket: Some(bucket.into()),
            key: Some(key.into()),
            detail,
            ..Default::default()
        })
        .await
    }
}
