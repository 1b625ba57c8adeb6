//! Replacing the institution key (`medgate keys rotate`): the handover and the re-wrap.
//!
//! # Handover ([`handover`])
//! 1. The log is published once more under the old key, so every entry so far is covered by
//!    an old-key checkpoint.
//! 2. A [`keyring::SignedRollover`] (signed by the old key and by the new one) names both
//!    keys, the log's origin (unchanged) and the log size at the handover. It goes into the log
//!    as an entry of kind `key-rollover` ([`EventKind::KeyRollover`], actor `admin`, the rollover's text form as
//!    `detail`), so the log itself records the handover, and into the public store at
//!    `v1/rollover/<seq>` (text form), where witnesses, patients and peers fetch it.
//! 3. Access-key secrets (sealed under a vault key derived from the institution identity) are
//!    sealed again under the new identity.
//! 4. The log is published under the new key: the checkpoint that includes the rollover entry
//!    and every later one carry the same origin line, signed by the new key. A witness that
//!    pinned the old key sees a signature it cannot check, fetches the rollover, checks it
//!    against the key it pinned and carries on: a handover, not a fork.
//!
//! Each step checks what is already done, so a handover that stopped part way is run again
//! as it is.
//!
//! # Re-wrap ([`rewrap`])
//! Every record's institution stanza is wrapped again to the new key and the old key's stanza
//! removed, one data key at a time (copies share theirs). Idempotent, so resumable: a record
//! whose key already has a stanza for the new key is skipped. Until it is done, records still
//! open with the old identity, which the gateway keeps (`Engine::previous`).

use std::collections::HashSet;
use std::sync::Arc;

use keyring::rollover::{follow_chain, Rollover, SignedRollover};
use keyring::{Identity, Recipient, WrappedKey};
use object_store::path::Path as StorePath;
use serde::{Deserialize, Serialize};

use crate::engine::record::Engine;
use crate::store::private::{Actor, DekStanza, Event, EventKind, PrivateStore};
use crate::store::public::PublicStore;
use crate::{now_ms, Error, Result};

/// Where rollover `<seq>` is published (text form).
pub const ROLLOVER_PREFIX: &str = "v1/rollover/";
/// The most rollovers a chain may hold (bounds what a reader fetches).
pub const MAX_ROLLOVERS: u32 = 1000;

/// The public-store path of rollover `seq`.
pub fn rollover_path(seq: u32) -> StorePath {
    StorePath::from(format!("{ROLLOVER_PREFIX}{seq}"))
}

/// The rollovers published in `public`, in order (`v1/rollover/1`, `2`, ... up to the first
/// missing one). Not verified: check them with [`follow_chain`] from a key you trust.
///
/// # Errors
/// Store failures; a published rollover that does not parse.
pub async fn published_rollovers(public: &PublicStore) -> Result<Vec<SignedRollover>> {
    let mut out = Vec::new();
    for seq in 1..=MAX_ROLLOVERS {
        let bytes = match public.get(&rollover_path(seq)).await {
            Ok(got) => got.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => break,
            Err(e) => return Err(e.into()),
        };
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| Error::Corrupt(format!("{ROLLOVER_PREFIX}{seq} is not text")))?;
        out.push(SignedRollover::from_text(text)?);
    }
    Ok(out)
}

/// Follows the rollovers published in `public` from `pinned` (each signed by the key before
/// it): the key that signs the institution's checkpoints now, the log's origin line, and the
/// rollovers followed.
///
/// # Errors
/// `Keyring` errors for a rollover that does not verify; store failures.
pub async fn follow(
    public: &PublicStore,
    pinned: &Recipient,
) -> Result<(Recipient, String, Vec<SignedRollover>)> {
    let chain = published_rollovers(public).await?;
    let (key, followed) = follow_chain(pinned, &chain)?;
    let origin = chain
        .iter()
        .find(|s| s.rollover.old.ct_eq(pinned) || s.rollover.new.ct_eq(pinned))
        .map(|s| s.rollover.origin.clone())
        .unwrap_or_else(|| crate::engine::log::origin(pinned));
    Ok((key, origin, followed.into_iter().cloned().collect()))
}

/// The keys of a log's history: `(from, key)` pairs, the first key with `from` = 0, then each
/// rollover's new key with `from` = its log size (it signs the checkpoints larger than that).
/// The chain must verify from its first key and end at `current`.
///
/// # Errors
/// `Corrupt` for a chain that does not verify or does not end at `current`.
pub fn key_history(
    rollovers: &[SignedRollover],
    current: &Recipient,
) -> Result<Vec<(u64, Recipient)>> {
    let Some(first) = rollovers.first() else {
        return Ok(vec![(0, current.clone())]);
    };
    let start = first.rollover.old.clone();
    let (end, _) = follow_chain(&start, rollovers)
        .map_err(|e| Error::Corrupt(format!("the chain of key rollovers does not verify: {e}")))?;
    if !end.ct_eq(current) {
        return Err(Error::Corrupt(
            "the last key rollover does not hand over to this institution's key".into(),
        ));
    }
    let mut keys = vec![(0, start)];
    keys.extend(
        rollovers
            .iter()
            .map(|s| (s.rollover.log_size, s.rollover.new.clone())),
    );
    Ok(keys)
}

/// Hands the institution over from `old` to `new` (module docs). Returns the rollover.
///
/// # Errors
/// `InvalidArgument` when the published rollovers do not end at `old` (another key was
/// rotated in since) or `new` is `old`; store failures.
pub async fn handover(
    private: &dyn PrivateStore,
    public: &PublicStore,
    old: &Identity,
    new: &Identity,
) -> Result<SignedRollover> {
    let (old_r, new_r) = (old.recipient(), new.recipient());
    let prior = published_rollovers(public).await?;
    let signed = match prior.last() {
        // Already published (a resumed run): finish the remaining steps.
        Some(last) if last.rollover.new.ct_eq(&new_r) && last.rollover.old.ct_eq(&old_r) => {
            last.clone()
        }
        Some(last) if !last.rollover.new.ct_eq(&old_r) => return Err(Error::InvalidArgument(
            "the last published key rollover hands over to another key than this institution's: \
                 the data dir's identity is not the current one"
                .into(),
        )),
        _ => {
            let seq = u32::try_from(prior.len() + 1)
                .ok()
                .filter(|&s| s <= MAX_ROLLOVERS)
                .ok_or_else(|| Error::InvalidArgument("too many key rollovers".into()))?;
            // 1. Everything so far under the old key.
            crate::engine::log::publish(private, public, old).await?;
            let origin = crate::engine::log::log_origin(private, &old_r).await?;
            let signed = Rollover {
                seq,
                old: old_r,
                new: new_r.clone(),
                log_size: private.log_size().await?,
                time_ms: now_ms(),
                origin,
            }
            .sign(old, new)?;
            // 2. In the public store first: a run that stops after this finds it and goes on
            // with the same statement.
            public
                .put(&rollover_path(seq), signed.to_text().into_bytes().into())
                .await?;
            signed
        }
    };
    let text = signed.to_text();
    let seq = signed.rollover.seq;
    // 2. In the log, once, as the entry at the handover's log size.
    let logged = private
        .events(signed.rollover.log_size, 16)
        .await?
        .iter()
        .any(|e| e.kind == EventKind::KeyRollover && e.detail == text);
    if !logged {
        let size = private.log_size().await?;
        if size != signed.rollover.log_size {
            return Err(Error::Corrupt(format!(
                "the log grew to {size} entries since the rollover was published at {}: \
                 a server ran with the old key meanwhile",
                signed.rollover.log_size
            )));
        }
        private
            .append_event(Event {
                time_ms: signed.rollover.time_ms,
                kind: EventKind::KeyRollover,
                actor: Actor::Admin,
                detail: text,
                ..Event::default()
            })
            .await?;
        private.flush().await?;
    }
    // 3. and 4.
    reseal_access_keys(private, old, new).await?;
    crate::engine::log::publish(private, public, new).await?;
    tracing::info!(seq, new = %new_r, "institution key handed over");
    Ok(signed)
}

/// Seals every access key's secret again under `new`'s vault key; a secret that already
/// opens under `new` is left as it is.
async fn reseal_access_keys(
    private: &dyn PrivateStore,
    old: &Identity,
    new: &Identity,
) -> Result<()> {
    let (from, to) = (
        old.vault_key(crate::engine::ACCESS_KEY_VAULT),
        new.vault_key(crate::engine::ACCESS_KEY_VAULT),
    );
    for mut k in private.list_access_keys().await? {
        if to.open(k.id.as_bytes(), &k.sealed_secret).is_ok() {
            continue;
        }
        let secret = from.open(k.id.as_bytes(), &k.sealed_secret).map_err(|_| {
            Error::Corrupt(format!(
                "access key {}: its secret opens under neither key",
                k.id
            ))
        })?;
        k.sealed_secret = to.seal(k.id.as_bytes(), &secret);
        private.put_access_key(k).await?;
    }
    private.flush().await
}

/// [`rewrap`] flushes the private store after this many data keys.
const REWRAP_FLUSH_EVERY: u64 = 16;

/// What [`rewrap`] did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct KeyRewrapReport {
    /// Data keys wrapped again to the new key.
    pub rewrapped: u64,
    /// Data keys that already had a stanza for the new key (a resumed run, or copies).
    pub skipped: u64,
    /// Objects looked at.
    pub objects: u64,
}

/// Wraps every record's data key to `current` and removes the stanzas of `previous` keys
/// (module docs). `progress` gets ("records", done, total).
///
/// # Errors
/// `NoStanza` for a record that opens under none of the keys; store failures (what was
/// re-wrapped stays re-wrapped: run it again).
pub async fn rewrap(
    private: &dyn PrivateStore,
    current: &Identity,
    previous: &[Arc<Identity>],
    progress: &(dyn Fn(&str, u64, u64) + Send + Sync),
) -> Result<KeyRewrapReport> {
    let mut report = KeyRewrapReport::default();
    let mut targets = Vec::new();
    for b in private.list_buckets().await? {
        let mut after = String::new();
        loop {
            let page = private.list_objects(&b.name, "", &after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = last.key.clone();
            targets.extend(page.into_iter().map(|o| o.manifest.dek_id));
        }
    }
    let total = targets.len() as u64;
    progress("records", 0, total);
    let new_recipient = current.recipient();
    let old_recipients: Vec<Recipient> = previous.iter().map(|p| p.recipient()).collect();
    let mut seen = HashSet::new();
    for dek in targets {
        report.objects += 1;
        if seen.insert(dek) {
            let stanzas = private.stanzas(dek).await?;
            if stanzas.iter().any(|s| s.is_for(&new_recipient)) {
                report.skipped += 1;
            } else {
                // A previous key's stanza, found by its whole Recipient; else one of unknown
                // recipient (a v1 row the DEK upgrade could not name) that a previous key opens.
                let key = previous
                    .iter()
                    .zip(&old_recipients)
                    .find_map(|(p, r)| {
                        stanzas
                            .iter()
                            .filter(|s| s.is_for(r) || s.recipient().is_none())
                            .find_map(|s| p.unwrap_key(s.wrapped()))
                    })
                    .ok_or_else(|| Error::NoStanza(dek.to_hex()))??;
                let own = DekStanza::new(new_recipient.clone(), current.wrap_own(&key))
                    .map_err(|_| Error::Internal("a stanza was wrapped to another key".into()))?;
                private.add_stanzas(dek, vec![own]).await?;
                report.rewrapped += 1;
            }
            for old in &old_recipients {
                if stanzas.iter().any(|s| s.is_for(old)) {
                    private.remove_stanzas(dek, old).await?;
                }
            }
            // Durable in small steps: a crash loses at most the last few records' work.
            if (report.rewrapped + report.skipped) % REWRAP_FLUSH_EVERY == 0 {
                private.flush().await?;
            }
        }
        progress("records", report.objects, total);
    }
    private.flush().await?;
    Ok(report)
}

impl Engine {
    /// Unwraps one of the institution's stanzas with the current key or, until the re-wrap
    /// of a key rotation is done, a previous one. `None` when no key of ours fits.
    pub(crate) fn unwrap_own(
        &self,
        stanza: &WrappedKey,
    ) -> Option<keyring::Result<keyring::DataKey>> {
        if let Some(r) = self.institution.unwrap_key(stanza) {
            return Some(r);
        }
        self.previous
            .get()?
            .iter()
            .find_map(|p| p.unwrap_key(stanza))
    }

    /// Marks every registered patient's index for publication (after a key rotation their
    /// indexes have new names and a new signer).
    ///
    /// # Errors
    /// Store failures.
    pub async fn mark_all_indexes(&self) -> Result<usize> {
        let patients = self.private.list_patients().await?;
        let n = patients.len();
        if let Ok(mut dirty) = self.index_dirty.lock() {
            dirty.extend(patients.into_iter().map(|p| p.id));
        }
        Ok(n)
    }
}

/// `GET /v1/peer/rollover`: this institution's key rollovers, oldest first.
#[derive(serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RolloverAnswer {
    /// Text forms (`keyring::SignedRollover::to_text`), as published at `v1/rollover/<n>`.
    pub rollovers: Vec<String>,
}
