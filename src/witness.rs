//! `medgate log witness`: another party (a peer institution's gateway, say) checks that an
//! institution's transparency log only grows, and cosigns its checkpoint.
//!
//! The checkpoint is read straight from the institution's public store and must carry the
//! institution's signature. Against the last checkpoint this witness cosigned (kept in
//! `--state`), a smaller size is a rollback, the same size with another root a fork, and a
//! larger size needs a consistency proof from the gateway's public API that verifies
//! between the two signed roots. Only then is the checkpoint cosigned (C2SP cosignature/v1,
//! under the key name `medgate.witness/<fingerprint>`), the cosigned note sent back to the
//! gateway, which publishes it, and the state advanced.
//!
//! Key rollovers (`medgate keys rotate` at the institution): a checkpoint that the pinned key
//! does not sign is accepted only under the key a chain of published rollovers
//! (`v1/rollover/<n>`), each signed by the key before it, hands over to from the pinned one,
//! with the same origin; the witness then follows that key (kept in `--state` with the
//! origin). Anything else is a fork.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use keyring::Recipient;
use serde::{Deserialize, Serialize};

#[derive(Args)]
pub struct WitnessArgs {
    /// The witness's identity file (e.g. its own institution's `institution.key`; sealed
    /// files need MEDGATE_PASSPHRASE).
    #[arg(long)]
    identity: PathBuf,
    /// The witnessed institution's Recipient (`medgate keys` there). After the institution
    /// replaced its key (`medgate keys rotate`), the witness follows the published rollover
    /// signed by the key it pinned, and keeps the new key in `--state`.
    #[arg(long)]
    institution: String,
    /// The witnessed institution's public store (read access is enough).
    #[arg(long)]
    public_store: String,
    /// Public store option KEY=VALUE; repeatable.
    #[arg(long = "public-store-opt", value_parser = crate::config::parse_kv)]
    public_store_opts: Vec<(String, String)>,
    /// The witnessed gateway's JSON API: consistency proofs come from it and the
    /// cosignature goes back to it.
    #[arg(long)]
    gateway: url::Url,
    /// PEM CA bundle for the gateway's certificate.
    #[arg(long = "gateway-ca")]
    ca: Option<PathBuf>,
    /// Where the last cosigned checkpoint is kept.
    #[arg(long, default_value = ".medgate-witness.json")]
    state: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct WitnessState {
    size: u64,
    root: String,
    /// The institution key this witness follows now: `--institution`, or the key a verified
    /// rollover handed over to (absent in state files written before key rollovers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    /// The log's origin line, which a rollover never changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    origin: Option<String>,
}

/// The checkpoint `note`, verified under the key this witness pins or, when the institution
/// replaced that key, under the key a chain of published rollovers hands over to, each signed
/// by the key before it (`keyring::rollover::follow_chain`). Returns the checkpoint and the key
/// it verified under. A signer no such chain leads to is a fork.
async fn verify_with_rollovers(
    store: &gateway::store::public::PublicStore,
    pinned: &Recipient,
    origin: &str,
    note: &str,
) -> Result<(keyring::Checkpoint, Recipient)> {
    if let Ok(cp) = pinned.verify_checkpoint(origin, note) {
        return Ok((cp, pinned.clone()));
    }
    let chain = gateway::engine::keyrot::published_rollovers(store)
        .await
        .context(
        "the checkpoint is not signed by the pinned key; cannot read the published key rollovers",
    )?;
    let (key, followed) = keyring::rollover::follow_chain(pinned, &chain).map_err(|e| {
        anyhow!("fork: a published key rollover does not verify against the pinned key: {e}")
    })?;
    if followed.is_empty() {
        bail!(
            "fork: the published checkpoint is not signed by the pinned institution key, and no \
             published key rollover signed by that key hands the log over"
        );
    }
    if followed.iter().any(|s| s.rollover.origin != origin) {
        bail!("fork: a key rollover names another log (origin)");
    }
    let cp = key.verify_checkpoint(origin, note).map_err(|e| {
        anyhow!("fork: the checkpoint is signed neither by the pinned key nor by the key it rolled over to: {e}")
    })?;
    for s in &followed {
        eprintln!(
            "the institution rolled its key over (rollover {}, at log size {}): now following {}",
            s.rollover.seq, s.rollover.log_size, s.rollover.new
        );
    }
    Ok((cp, key))
}

pub async fn witness(args: WitnessArgs) -> Result<()> {
    use keyring::checkpoint::SignedNote;
    let me = crate::load_identity(&args.identity, Path::new("/nonexistent"), false)?;
    let inst: Recipient = args
        .institution
        .parse()
        .map_err(|_| anyhow!("--institution is not a medgate1... recipient"))?;
    let opts: std::collections::BTreeMap<String, String> =
        args.public_store_opts.into_iter().collect();
    let store = gateway::store::public::open(Some(&args.public_store), &opts, Path::new("."))
        .context("cannot open the public store")?;
    let note = gateway::engine::log::published_checkpoint(&store)
        .await
        .context("cannot read the checkpoint from the public store")?;
    let last: Option<WitnessState> = match std::fs::read(&args.state) {
        Ok(b) => Some(
            serde_json::from_slice(&b)
                .with_context(|| format!("{} is not a witness state file", args.state.display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => bail!("cannot read {}: {e}", args.state.display()),
    };
    // The key followed so far (re-pinned by earlier rollovers) and the log's origin.
    let pinned: Recipient = match last.as_ref().and_then(|l| l.key.as_deref()) {
        Some(k) => k
            .parse()
            .map_err(|_| anyhow!("{}: bad institution key", args.state.display()))?,
        None => inst.clone(),
    };
    let note_origin = keyring::checkpoint::SignedNote::parse(&note)
        .and_then(|n| n.checkpoint())
        .map(|c| c.origin)
        .map_err(|e| anyhow!("the published checkpoint does not parse: {e}"))?;
    let origin = match last.as_ref().and_then(|l| l.origin.clone()) {
        Some(o) if o != note_origin => bail!(
            "fork: the published checkpoint is of log {note_origin}, this witness follows {o}"
        ),
        Some(o) => o,
        None => note_origin,
    };
    let (cp, key) = verify_with_rollovers(&store, &pinned, &origin, &note)
        .await
        .map_err(|e| anyhow!("the published checkpoint is not signed by the institution: {e}"))?;
    let gw = GatewayArg {
        gateway: Some(args.gateway.clone()),
        ca: args.ca.clone(),
    };
    let link = crate::link::Link::new(&crate::DataDirArg::default(), &gw)?;
    match &last {
        None => eprintln!(
            "first checkpoint seen for this log (size {}): trusting it as the starting point",
            cp.size
        ),
        Some(l) => {
            let old_root: keyring::Hash = hex::decode(&l.root)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| anyhow!("{}: bad root", args.state.display()))?;
            if cp.size < l.size {
                bail!(
                    "rollback: the published checkpoint has size {} but this witness already cosigned size {}",
                    cp.size,
                    l.size
                );
            }
            if cp.size == l.size {
                if !keyring::merkle::hash_eq(&old_root, &cp.root) {
                    bail!("fork: size {} was cosigned with another root", cp.size);
                }
            } else {
                let proof: gateway::front::api::ProofAnswer = link
                    .get_public(&Route::LogConsistency.path_query(
                        &[],
                        &[("from", &l.size.to_string()), ("to", &cp.size.to_string())],
                    ))
                    .await?;
                gateway::engine::audit::check_consistency(
                    (l.size, &old_root),
                    (cp.size, &cp.root),
                    &proof.hashes,
                    "consistency with the last cosigned checkpoint",
                )
                .map_err(|e| anyhow!("fork: {e}"))?;
            }
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = gateway::engine::log::witness_name(&me.recipient());
    let cosigned = me.cosign_checkpoint(&name, &note, now)?;
    SignedNote::parse(&cosigned)?;
    let answer = link
        .post_public(
            &Route::LogCosign.path(&[]),
            &serde_json::to_value(CosignBody {
                note: cosigned.clone(),
            })?,
        )
        .await;
    std::fs::write(
        &args.state,
        serde_json::to_vec_pretty(&WitnessState {
            size: cp.size,
            root: hex::encode(cp.root),
            key: Some(key.to_string()),
            origin: Some(origin.clone()),
        })?,
    )
    .with_context(|| format!("cannot write {}", args.state.display()))?;
    print!("{cosigned}");
    match answer {
        Ok(msg) => eprintln!("cosigned size {} ({msg})", cp.size),
        Err(e) => bail!(
            "cosigned size {}, but the gateway did not take the cosignature: {e}",
            cp.size
        ),
    }
    Ok(())
}

use crate::link::GatewayArg;
use gateway::front::api::CosignBody;
use gateway::routes::Route;
