//! A patient's audit of the transparency log (`medgate patient audit`): the checks, with no
//! I/O, so that every tamper case is testable on its own.
//!
//! The gateway answers `GET /v1/patient/entries` with every log entry about the patient,
//! each with the fields and salt that open its commitment and an inclusion proof, and the
//! checkpoint they are proved against. The patient's side checks:
//!
//! 1. the checkpoint is signed by the institution, and agrees with the one read straight
//!    from the public store (equal, or older with a valid consistency proof up to it), so
//!    the gateway cannot show the patient a log other than the one it published;
//! 2. it is not older than the last checkpoint the patient kept, and consistent with it;
//! 3. every entry is about this patient, opens to its leaf and is included at its index;
//! 4. the patient's chain has no gap: sequence numbers `1..=n` with each entry naming the
//!    previous one's commitment, and `n` is not below the count seen by the last audit.
//!
//! So an edited entry fails (3), a dropped or reordered one (4), an older checkpoint (1, 2).
//! A dropped *newest* entry shows only against a previous audit's count (4).

use keyring::checkpoint::Checkpoint;
use keyring::{ConsistencyProof, Hash, InclusionProof, Recipient};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store::private::Event;
use crate::{Error, Result};

/// What a patient keeps between audits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditState {
    /// The last checkpoint checked: its size and hex root.
    pub size: u64,
    pub root: String,
    /// How many entries about the patient it had.
    pub entries: u64,
}

/// A passed audit: the entries in the patient's order, and the state to keep.
#[derive(Clone, Debug)]
pub struct AuditReport {
    pub checkpoint: Checkpoint,
    pub entries: Vec<Event>,
    pub state: AuditState,
}

fn failed(what: String) -> Error {
    Error::AuditFailed(what)
}

fn hashes(hex_list: &[String], what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(hex_list.len() * 32);
    for h in hex_list {
        let b = hex::decode(h).map_err(|_| failed(format!("{what}: a proof hash is not hex")))?;
        if b.len() != 32 {
            return Err(failed(format!("{what}: a proof hash is not 32 bytes")));
        }
        out.extend_from_slice(&b);
    }
    Ok(out)
}

/// Checks a consistency proof given as hex hashes.
///
/// # Errors
/// The proof does not show that `old` is a prefix of `new`.
pub fn check_consistency(
    old: (u64, &Hash),
    new: (u64, &Hash),
    proof: &[String],
    what: &str,
) -> Result<()> {
    let p = ConsistencyProof::from_bytes(&hashes(proof, what)?)
        .map_err(|e| failed(format!("{what}: {e}")))?;
    p.verify(old.0, new.0, old.1, new.1).map_err(|_| {
        failed(format!(
            "{what}: the log at size {} is not a prefix of the log at size {}",
            old.0, new.0
        ))
    })
}

/// Runs every check (module docs).
///
/// `public_note` is the checkpoint read from the public store; `to_public` the consistency
/// proof from the answer's size to it (empty when equal); `last` the state of the previous
/// audit and `from_last` the proof from its size to the answer's.
///
/// # Errors
/// `Integrity` naming the first check that failed and the log index or patient sequence.
pub fn check(
    institution: &Recipient,
    patient: &str,
    answer: &EntriesAnswer,
    public_note: &str,
    to_public: &[String],
    last: Option<&AuditState>,
    from_last: &[String],
) -> Result<AuditReport> {
    let origin = crate::engine::log::origin(institution);
    check_with_origin(
        institution,
        &origin,
        patient,
        answer,
        public_note,
        to_public,
        last,
        from_last,
    )
}

/// [`check`] for a log whose origin is not the one derived from `institution`: after
/// `medgate keys rotate`, `institution` is the key the rollovers lead to and `origin` the
/// log's (unchanged) origin line (`crate::engine::keyrot::follow`).
///
/// # Errors
/// As [`check`].
#[allow(clippy::too_many_arguments)]
pub fn check_with_origin(
    institution: &Recipient,
    origin: &str,
    patient: &str,
    answer: &EntriesAnswer,
    public_note: &str,
    to_public: &[String],
    last: Option<&AuditState>,
    from_last: &[String],
) -> Result<AuditReport> {
    let name = origin.to_owned();
    let cp = institution
        .verify_checkpoint(&name, &answer.checkpoint)
        .map_err(|e| failed(format!("the gateway's checkpoint does not verify: {e}")))?;
    if cp.size != answer.tree_size {
        return Err(failed(
            "the answer's tree size is not its checkpoint's".into(),
        ));
    }
    let public = institution
        .verify_checkpoint(&name, public_note)
        .map_err(|e| {
            failed(format!(
                "the public store's checkpoint does not verify: {e}"
            ))
        })?;
    if public.size < cp.size {
        return Err(failed(format!(
            "the public store's checkpoint (size {}) is older than the gateway's answer (size {})",
            public.size, cp.size
        )));
    }
    check_consistency(
        (cp.size, &cp.root),
        (public.size, &public.root),
        to_public,
        "gateway vs public checkpoint",
    )?;
    if let Some(last) = last {
        if cp.size < last.size {
            return Err(failed(format!(
                "rollback: the gateway proves against size {} but you already saw size {}",
                cp.size, last.size
            )));
        }
        let old_root: Hash = hex::decode(&last.root)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| failed("the kept state's root is not hex".into()))?;
        check_consistency(
            (last.size, &old_root),
            (cp.size, &cp.root),
            from_last,
            "previous audit vs now",
        )?;
    }
    let mut entries = Vec::with_capacity(answer.entries.len());
    for e in &answer.entries {
        let ev = &e.event;
        if ev.patient.as_deref() != Some(patient) {
            return Err(failed(format!("log index {} is not about you", ev.seq)));
        }
        if ev.seq >= cp.size {
            return Err(failed(format!(
                "log index {} is past the checkpoint",
                ev.seq
            )));
        }
        let leaf = keyring::leaf_hash(
            &crate::engine::log::commitment_of(ev)
                .map_err(|_| failed(format!("log index {}: malformed entry", ev.seq)))?,
        );
        let proof = InclusionProof::from_bytes(&hashes(&e.proof, "inclusion proof")?)
            .map_err(|_| failed(format!("log index {}: malformed proof", ev.seq)))?;
        proof
            .verify(&leaf, ev.seq, cp.size, &cp.root)
            .map_err(|_| {
                failed(format!(
                    "log index {} does not match the published log (edited or forged entry)",
                    ev.seq
                ))
            })?;
        entries.push(ev.clone());
    }
    entries.sort_by_key(|e| e.patient_seq);
    let mut prev = [0u8; 32];
    for (i, ev) in entries.iter().enumerate() {
        let want = i as u64 + 1;
        if ev.patient_seq != want {
            return Err(failed(format!(
                "your entry number {want} is missing (next one shown is number {}, log index {})",
                ev.patient_seq, ev.seq
            )));
        }
        if ev.patient_prev != hex::encode(prev) {
            return Err(failed(format!(
                "your entry number {want} (log index {}) does not follow the one before it",
                ev.seq
            )));
        }
        prev = crate::engine::log::commitment_of(ev)?;
    }
    if let Some(last) = last {
        if (entries.len() as u64) < last.entries {
            return Err(failed(format!(
                "entries were dropped: your last audit saw {} entries about you, now {}",
                last.entries,
                entries.len()
            )));
        }
    }
    let state = AuditState {
        size: cp.size,
        root: hex::encode(cp.root),
        entries: entries.len() as u64,
    };
    Ok(AuditReport {
        checkpoint: cp,
        entries,
        state,
    })
}

/// One log entry about the patient, with what is needed to check it: the entry's fields
/// and salt (which open its commitment), its index, and an inclusion proof against the
/// checkpoint of `tree_size`.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug)]
pub struct EntryWithProof {
    #[schema(value_type = Object)]
    pub event: Event,
    /// Hex of the hashes of the inclusion proof, leaf to root.
    pub proof: Vec<String>,
}

/// The patient's entries and the checkpoint they are proved against.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug)]
pub struct EntriesAnswer {
    /// The signed note the proofs are against (also in the public store).
    pub checkpoint: String,
    pub tree_size: u64,
    pub entries: Vec<EntryWithProof>,
}
