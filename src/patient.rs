//! `medgate patient ...` and `medgate share ...`: the patient's side of consent (keys,
//! approving, denying, revoking) and the admin's (registry, share requests, grants).
//!
//! The patient's secret never leaves this process: approvals, denials and revocations are
//! signed here and only the signed statements go to the gateway, which checks them
//! against the key on file. Nothing is re-wrapped without such a signature, whatever the
//! channel that carried it.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use gateway::engine::sharing::{grant_for, registration_for};
use gateway::front::admin::{AdminRequest, AdminResponse, NewShareRequest, RequestView};
use gateway::routes::Route;
use keyring::consent::{Denial, Revocation, ShareRequest, SignedGrant};
use keyring::{Identity, Recipient};

use crate::link::{GatewayArg, Link};
use crate::{admin_request, fail_on_error, write_private_file, DataDirArg};

#[derive(Subcommand)]
pub enum PatientAction {
    /// Create a patient identity (run on the patient's side; the gateway never sees it).
    Keygen {
        /// Where to write the identity (0600). Sealed with argon2id when
        /// MEDGATE_PATIENT_PASSPHRASE is set.
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
        /// The institution's Recipient (`medgate keys` there) and the id it knows you by:
        /// with both, prints the registration proof the institution asks for.
        #[arg(long, requires = "id")]
        institution: Option<String>,
        /// The id the institution knows you by (with --institution).
        #[arg(long, requires = "institution")]
        id: Option<String>,
    },
    /// Print the registration proof for an existing patient identity.
    Proof {
        /// Your patient identity file (from `medgate patient keygen`).
        #[arg(long)]
        identity: PathBuf,
        /// The institution's Recipient (`medgate keys` there).
        #[arg(long)]
        institution: String,
        /// The id the institution knows you by.
        #[arg(long)]
        id: String,
    },
    /// Replace your key with a new one, signed by the old: the new key gets your records,
    /// the old one stops opening them.
    Rekey {
        #[command(flatten)]
        dir: DataDirArg,
        #[command(flatten)]
        gw: GatewayArg,
        /// Your current identity.
        #[arg(long)]
        identity: PathBuf,
        /// The new identity (from `medgate patient keygen`).
        #[arg(long)]
        new_identity: PathBuf,
        /// The institution's Recipient.
        #[arg(long)]
        institution: String,
        /// The id the institution knows you by.
        #[arg(long)]
        id: String,
    },
    /// Break glass (admin): replace the key of a patient who lost theirs, without the old
    /// key's signature. Needs the new key's proof (`medgate patient keygen --institution
    /// R --id ID` on the patient's side) and a reason; logged for the patient to see.
    BreakGlass {
        #[command(flatten)]
        dir: DataDirArg,
        /// The patient's id.
        #[arg(long)]
        id: String,
        /// The patient's new Recipient.
        #[arg(long)]
        recipient: String,
        /// The new key's registration proof (`medgate patient keygen --institution R --id
        /// ID` on the patient's side).
        #[arg(long)]
        proof: String,
        /// Why (at least 10 characters), e.g. the identity check done and its reference.
        #[arg(long)]
        reason: String,
        /// Who breaks the glass (default: $USER).
        #[arg(long, env = "USER", default_value = "admin")]
        admin: String,
    },
    /// Register a patient's public key (admin).
    Register {
        #[command(flatten)]
        dir: DataDirArg,
        /// The patient's id at this institution (letters, digits, `-`, `_`, `.`).
        #[arg(long)]
        id: String,
        /// The patient's Recipient (medgate1...).
        #[arg(long)]
        recipient: String,
        /// The registration proof `medgate patient keygen` printed.
        #[arg(long)]
        proof: String,
    },
    /// List registered patients (admin).
    List {
        #[command(flatten)]
        dir: DataDirArg,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Show one patient (admin).
    Show {
        #[command(flatten)]
        dir: DataDirArg,
        /// The patient's id.
        #[arg(long)]
        id: String,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Recover every record of yours from the public store alone (the gateway may be
    /// down): reads your index, checks the institution's signature and that it is not
    /// older than the last one you pulled, then verifies and decrypts each record.
    Pull {
        /// Your patient identity file (from `medgate patient keygen`).
        #[arg(long)]
        identity: PathBuf,
        /// The institution's Recipient (`medgate keys` there).
        #[arg(long)]
        institution: String,
        /// The public store URL (folder, s3://..., ...), read-only access is enough.
        #[arg(long)]
        public_store: String,
        /// Public store option KEY=VALUE; repeatable.
        #[arg(long = "public-store-opt", value_parser = crate::config::parse_kv)]
        public_store_opts: Vec<(String, String)>,
        /// Where to write the records (as BUCKET/KEY files).
        #[arg(long, default_value = "medgate-records")]
        out: PathBuf,
        /// Where the last index sequence number seen is kept (default OUT/.medgate-index-seq).
        #[arg(long)]
        state: Option<PathBuf>,
    },
    /// Pending share requests for the patient whose identity this is.
    Requests {
        #[command(flatten)]
        dir: DataDirArg,
        #[command(flatten)]
        gw: GatewayArg,
        /// Your patient identity file (from `medgate patient keygen`).
        #[arg(long)]
        identity: PathBuf,
        /// Also list decided requests.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Approve a share request: shows it in plain words, asks, then signs a grant.
    Approve {
        #[command(flatten)]
        dir: DataDirArg,
        #[command(flatten)]
        gw: GatewayArg,
        /// Your patient identity file (from `medgate patient keygen`).
        #[arg(long)]
        identity: PathBuf,
        /// The share request's id (from `medgate patient requests`).
        request_id: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Refuse a share request (signed).
    Deny {
        #[command(flatten)]
        dir: DataDirArg,
        #[command(flatten)]
        gw: GatewayArg,
        /// Your patient identity file (from `medgate patient keygen`).
        #[arg(long)]
        identity: PathBuf,
        /// The share request's id (from `medgate patient requests`).
        request_id: String,
    },
    /// The patient's grants.
    Grants {
        #[command(flatten)]
        dir: DataDirArg,
        #[command(flatten)]
        gw: GatewayArg,
        /// Your patient identity file (from `medgate patient keygen`).
        #[arg(long)]
        identity: PathBuf,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Check every log entry about you against the institution's published checkpoint and
    /// print who did what with your records: the gateway must prove each entry is in the
    /// log it published (read here straight from the public store), your entries must
    /// chain without gaps, and the log must extend what your last audit saw.
    Audit {
        #[command(flatten)]
        gw: GatewayArg,
        /// Your patient identity file (from `medgate patient keygen`).
        #[arg(long)]
        identity: PathBuf,
        /// The institution's Recipient (`medgate keys` there).
        #[arg(long)]
        institution: String,
        /// The institution's public store (read access is enough).
        #[arg(long)]
        public_store: String,
        /// Public store option KEY=VALUE; repeatable.
        #[arg(long = "public-store-opt", value_parser = crate::config::parse_kv)]
        public_store_opts: Vec<(String, String)>,
        /// Where the last audited checkpoint is kept.
        #[arg(long, default_value = ".medgate-audit.json")]
        state: PathBuf,
    },
    /// Print an `Authorization` header value for one call to the gateway's patient API (a
    /// fresh challenge signed for that method, path and body), for scripts and curl.
    AuthHeader {
        #[command(flatten)]
        gw: GatewayArg,
        /// Your patient identity file (from `medgate patient keygen`).
        #[arg(long)]
        identity: PathBuf,
        /// The HTTP method of the call.
        #[arg(long, default_value = "GET")]
        method: String,
        /// Path and query, e.g. /v1/patient/grants.
        #[arg(long)]
        path: String,
        /// File holding the exact request body.
        #[arg(long)]
        body_file: Option<PathBuf>,
    },
    /// Revoke a grant (signed): the recipient's wrapped keys are deleted.
    Revoke {
        #[command(flatten)]
        dir: DataDirArg,
        #[command(flatten)]
        gw: GatewayArg,
        /// Your patient identity file (from `medgate patient keygen`).
        #[arg(long)]
        identity: PathBuf,
        /// The grant's id (from `medgate patient grants`).
        grant_id: String,
    },
}

#[derive(Subcommand)]
pub enum ShareAction {
    /// Ask for access to a patient's records for a recipient key (admin, on the
    /// recipient's behalf). Prints the request id the patient approves.
    Request {
        #[command(flatten)]
        dir: DataDirArg,
        /// The patient's id.
        #[arg(long)]
        patient: String,
        /// The key the records' keys would be wrapped to (medgate1...): the recipient's
        /// public key, from `medgate patient keygen -o reader.key` on the recipient's side.
        #[arg(long)]
        recipient: String,
        /// One record: BUCKET/KEY.
        #[arg(long, conflicts_with_all = ["prefix", "all", "bucket"])]
        object: Option<String>,
        /// The bucket of a --prefix scope.
        #[arg(long, requires = "prefix")]
        bucket: Option<String>,
        /// Records whose keys start with PREFIX inside --bucket (e.g. --bucket pacs
        /// --prefix p-1001/).
        #[arg(long, conflicts_with = "all", requires = "bucket")]
        prefix: Option<String>,
        /// All of the patient's records.
        #[arg(long)]
        all: bool,
        /// Also records added after the grant.
        #[arg(long)]
        include_future: bool,
        /// Who asks, in their words (shown to the patient as such).
        #[arg(long)]
        requester: String,
        /// Why, in plain words (shown to the patient).
        #[arg(long)]
        purpose: String,
        /// FHIR-style purpose of use code: TREAT, ETREAT, HPAYMT, HRESCH, ...
        #[arg(long, default_value = "TREAT")]
        purpose_code: String,
        /// How long the access would last (e.g. 30d, 12h).
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Duration,
    },
    /// Ask a peer institution for a patient's records and show them here, read-only, as
    /// bucket --bucket once the patient approves at the peer (admin; the running server
    /// signs the request with this institution's key).
    Mount {
        #[command(flatten)]
        dir: DataDirArg,
        /// The peer's name in [[peers]] (which needs its url).
        #[arg(long)]
        peer: String,
        /// The local bucket the shared records appear in, as PEER_BUCKET/PEER_KEY.
        #[arg(long)]
        bucket: String,
        /// The patient's id at the peer.
        #[arg(long)]
        patient: String,
        /// One record: BUCKET/KEY at the peer.
        #[arg(long, conflicts_with_all = ["prefix", "all", "peer_bucket"])]
        object: Option<String>,
        /// The peer's bucket of a --prefix scope.
        #[arg(long, requires = "prefix")]
        peer_bucket: Option<String>,
        /// Records whose keys start with PREFIX inside --peer-bucket at the peer.
        #[arg(long, conflicts_with = "all", requires = "peer_bucket")]
        prefix: Option<String>,
        /// All of the patient's records.
        #[arg(long)]
        all: bool,
        /// Also records added after the grant.
        #[arg(long)]
        include_future: bool,
        /// Why, in plain words (shown to the patient).
        #[arg(long)]
        purpose: String,
        /// FHIR-style purpose of use code: TREAT, ETREAT, HPAYMT, HRESCH, ...
        #[arg(long, default_value = "TREAT")]
        purpose_code: String,
        /// How long the access would last (e.g. 30d, 12h).
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Duration,
    },
    /// The buckets mounted from peers, with their request and grant (admin).
    Mounts {
        #[command(flatten)]
        dir: DataDirArg,
        #[command(flatten)]
        out: JsonArg,
    },
    /// List share requests (admin).
    Requests {
        #[command(flatten)]
        dir: DataDirArg,
        /// Only this patient's.
        #[arg(long)]
        patient: Option<String>,
        #[command(flatten)]
        out: JsonArg,
    },
    /// List grants (admin).
    Grants {
        #[command(flatten)]
        dir: DataDirArg,
        /// Only this patient's.
        #[arg(long)]
        patient: Option<String>,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Read a shared record as its recipient: the gateway checks the grant and hands out
    /// the manifest and the recipient's wrapped key; the blobs come from the public store
    /// and are verified and decrypted here with the recipient's own identity. With
    /// --gateway URL it asks that gateway's JSON API from anywhere (the request signed with
    /// the recipient's key) and reads the blobs from --public-store (read access is enough).
    Fetch {
        #[command(flatten)]
        dir: DataDirArg,
        #[command(flatten)]
        gw: GatewayArg,
        /// The recipient's identity file (`medgate patient keygen -o reader.key`).
        #[arg(long)]
        identity: PathBuf,
        /// The grant's id (the patient's `approve` printed it; `medgate share grants`).
        #[arg(long)]
        grant: String,
        /// The record, as BUCKET/KEY.
        #[arg(long)]
        object: String,
        /// Where to write the record.
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
    },
    /// The activity record: registrations, requests, grants, re-wraps, revocations.
    Events {
        #[command(flatten)]
        dir: DataDirArg,
        /// Only this patient's.
        #[arg(long)]
        patient: Option<String>,
        #[command(flatten)]
        out: JsonArg,
    },
}

/// `--json` on the commands that list or show something.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct JsonArg {
    /// Print one JSON document instead of text: the JSON API's fields, each `*_ms` time
    /// also as an ISO 8601 `*_at` string beside it.
    #[arg(long)]
    pub json: bool,
}

/// Prints `value` as `--json` says: pretty JSON with `*_at` beside every `*_ms` time.
pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let mut v = serde_json::to_value(value)?;
    gateway::front::api::add_iso_times(&mut v);
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

fn patient_passphrase() -> Option<zeroize::Zeroizing<Vec<u8>>> {
    std::env::var("MEDGATE_PATIENT_PASSPHRASE")
        .ok()
        .filter(|p| !p.is_empty())
        .map(|p| zeroize::Zeroizing::new(p.into_bytes()))
}

fn load_patient(path: &Path) -> Result<Identity> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the patient identity {}", path.display()))?,
    );
    let pass = patient_passphrase();
    if keyring::idfile::is_sealed(&text) && pass.is_none() {
        bail!(
            "the patient identity {} is sealed: set MEDGATE_PATIENT_PASSPHRASE",
            path.display()
        );
    }
    keyring::idfile::decode(&text, pass.as_deref().map(|p| p.as_slice())).map_err(|e| match e {
        keyring::Error::Decrypt => anyhow!(
            "MEDGATE_PATIENT_PASSPHRASE does not open the patient identity {}",
            path.display()
        ),
        other => anyhow!("patient identity {}: {other}", path.display()),
    })
}

/// A stored time (ms since the epoch) as people read it: the date and time in the local
/// time zone, with its UTC offset.
pub(crate) fn time(ms: u64) -> String {
    use chrono::TimeZone;
    match i64::try_from(ms)
        .ok()
        .and_then(|ms| chrono::Local.timestamp_millis_opt(ms).single())
    {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S %:z").to_string(),
        None => {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms))
                .to_string()
        }
    }
}

fn print_request(r: &RequestView) {
    let who = match &r.recipient_name {
        Some(name) => format!("{name} (a configured peer institution)"),
        None => "a key that is NOT one of this gateway's configured peers".to_string(),
    };
    println!("request {}", r.id);
    println!("  state:    {:?}", r.state);
    println!("  patient:  {}", r.patient);
    println!("  who:      {who}");
    println!("            key {}", r.recipient);
    println!(
        "            (the requester calls itself {:?})",
        r.requester_says
    );
    println!("  what:     {}", r.scope);
    println!("  why:      {} — {:?}", r.purpose_code, r.purpose_text);
    println!("  until:    {}", time(r.expires_ms));
    if let Some(g) = &r.grant {
        println!("  grant:    {g}");
    }
    if r.matching_records == Some(0) {
        eprintln!(
            "warning: request {} matches none of patient {}'s records: as it stands it shares \
             nothing. Check the bucket and prefix (--bucket BUCKET --prefix PREFIX, the prefix \
             inside the bucket) or the object (--object BUCKET/KEY)",
            r.id, r.patient
        );
    }
}

async fn whoami(link: &Link, me: &Identity) -> Result<String> {
    match link
        .call(
            me,
            AdminRequest::PatientWhoami {
                recipient: me.recipient().to_string(),
            },
        )
        .await?
    {
        AdminResponse::Patient { patient, .. } => Ok(patient.id),
        _ => bail!("unexpected answer from the gateway"),
    }
}

async fn fetch_request(link: &Link, me: &Identity, id: &str) -> Result<RequestView> {
    match link
        .call(me, AdminRequest::RequestGet { id: id.into() })
        .await?
    {
        AdminResponse::Request { request } => Ok(request),
        _ => bail!("unexpected answer from the gateway"),
    }
}

fn confirm(question: &str) -> Result<bool> {
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "YES"))
}

pub async fn patient(action: PatientAction) -> Result<()> {
    match action {
        PatientAction::Keygen {
            out,
            institution,
            id,
        } => {
            if out.exists() {
                bail!(
                    "{} exists; not overwriting a patient identity",
                    out.display()
                );
            }
            let me = Identity::generate();
            let pass = patient_passphrase();
            let text = keyring::idfile::encode(&me, pass.as_deref().map(|p| p.as_slice()));
            write_private_file(&out, text.as_bytes())?;
            println!(
                "wrote the patient identity to {} ({})",
                out.display(),
                if pass.is_some() {
                    "sealed with MEDGATE_PATIENT_PASSPHRASE"
                } else {
                    "unsealed, mode 0600"
                }
            );
            if let (Some(inst), Some(id)) = (institution, id) {
                let inst: Recipient = inst
                    .parse()
                    .map_err(|_| anyhow!("--institution is not a medgate1... recipient"))?;
                gateway::engine::sharing::check_patient_id(&id)?;
                println!("proof: {}", registration_for(&me, &inst, &id));
            }
            // Labelled, and still the last word of the last line for scripts.
            println!("public key (Recipient): {}", me.recipient());
        }
        PatientAction::Proof {
            identity,
            institution,
            id,
        } => {
            let me = load_patient(&identity)?;
            let inst: Recipient = institution
                .parse()
                .map_err(|_| anyhow!("--institution is not a medgate1... recipient"))?;
            println!("{}", registration_for(&me, &inst, &id));
        }
        PatientAction::Pull {
            identity,
            institution,
            public_store,
            public_store_opts,
            out,
            state,
        } => {
            pull(
                &identity,
                &institution,
                &public_store,
                public_store_opts,
                &out,
                state,
            )
            .await?;
        }
        PatientAction::Rekey {
            dir,
            gw,
            identity,
            new_identity,
            institution,
            id,
        } => {
            let old = load_patient(&identity)?;
            let new = load_patient(&new_identity)?;
            let inst: Recipient = institution
                .parse()
                .map_err(|_| anyhow!("--institution is not a medgate1... recipient"))?;
            let change = keyring::consent::KeyChange::new(
                inst.fingerprint(),
                &id,
                &old.recipient(),
                &new.recipient(),
                gateway::now_ms(),
            )
            .sign(&old, &new)?;
            let req = AdminRequest::PatientRekey {
                change: change.to_text(),
            };
            if let AdminResponse::Done { message } = Link::new(&dir, &gw)?.call(&old, req).await? {
                println!("{message}");
            }
        }
        PatientAction::BreakGlass {
            dir,
            id,
            recipient,
            proof,
            reason,
            admin,
        } => {
            let req = AdminRequest::PatientBreakGlass {
                id,
                recipient,
                proof,
                reason,
                admin,
            };
            if let AdminResponse::Done { message } = fail_on_error(admin_request(&dir, req).await?)?
            {
                println!("{message}");
            }
        }
        PatientAction::Register {
            dir,
            id,
            recipient,
            proof,
        } => {
            let req = AdminRequest::PatientRegister {
                id,
                recipient,
                proof,
            };
            if let AdminResponse::Patient { patient, .. } =
                fail_on_error(admin_request(&dir, req).await?)?
            {
                println!(
                    "registered patient {} with key {}",
                    patient.id, patient.recipient
                );
            }
        }
        PatientAction::List { dir, out } => {
            if let AdminResponse::Patients { patients } =
                fail_on_error(admin_request(&dir, AdminRequest::PatientList).await?)?
            {
                if out.json {
                    return print_json(&patients);
                }
                for p in patients {
                    println!("{}\t{}\t{}", p.id, p.recipient, time(p.registered_ms));
                }
            }
        }
        PatientAction::Show { dir, id, out } => {
            if let AdminResponse::Patient { patient, records } =
                fail_on_error(admin_request(&dir, AdminRequest::PatientShow { id }).await?)?
            {
                if out.json {
                    return print_json(
                        &serde_json::json!({ "patient": patient, "records": records }),
                    );
                }
                println!("patient:    {}", patient.id);
                println!("key:        {}", patient.recipient);
                println!("registered: {}", time(patient.registered_ms));
                println!("records:    {records}");
            }
        }
        PatientAction::Requests {
            dir,
            gw,
            identity,
            all,
            out,
        } => {
            let me = load_patient(&identity)?;
            let link = Link::new(&dir, &gw)?;
            let id = whoami(&link, &me).await?;
            if let AdminResponse::Requests { requests } = link
                .call(&me, AdminRequest::Requests { patient: Some(id) })
                .await?
            {
                let shown: Vec<_> = requests
                    .iter()
                    .filter(|r| all || r.state == gateway::store::private::RequestState::Pending)
                    .collect();
                if out.json {
                    return print_json(&shown);
                }
                if shown.is_empty() {
                    println!("no pending share requests");
                }
                for r in shown {
                    print_request(r);
                }
            }
        }
        PatientAction::Approve {
            dir,
            gw,
            identity,
            request_id,
            yes,
        } => {
            let me = load_patient(&identity)?;
            let link = Link::new(&dir, &gw)?;
            let id = whoami(&link, &me).await?;
            let view = fetch_request(&link, &me, &request_id).await?;
            if view.patient != id {
                bail!("request {request_id} is not about you (patient {id})");
            }
            print_request(&view);
            if !yes && !confirm("Allow this access?")? {
                bail!("not approved");
            }
            // Sign what the gateway stored, after checking it is what was shown.
            let req = ShareRequest::from_text(&view.text)?;
            if hex::encode(req.hash()) != view.id {
                bail!("the gateway's request text does not match its id; not signing");
            }
            let grant = grant_for(&me, &req);
            match link
                .call(
                    &me,
                    AdminRequest::Approve {
                        request_id: request_id.clone(),
                        grant,
                    },
                )
                .await?
            {
                AdminResponse::Rewrapped { report } => {
                    println!(
                        "approved: grant {} ({} records shared, {} of yours outside the request left alone)",
                        report.grant_id, report.rewrapped, report.out_of_scope
                    );
                    if report.rewrapped == 0 {
                        eprintln!(
                            "warning: the grant shares none of your records now{}; revoke it with \
                             `medgate patient revoke {}` if that is not what you meant",
                            if req.scope.include_future {
                                " (only records added later will be shared)"
                            } else {
                                ", and never will (it does not include later records)"
                            },
                            report.grant_id
                        );
                    }
                }
                _ => bail!("unexpected answer from the server"),
            }
        }
        PatientAction::Deny {
            dir,
            gw,
            identity,
            request_id,
        } => {
            let me = load_patient(&identity)?;
            let link = Link::new(&dir, &gw)?;
            let view = fetch_request(&link, &me, &request_id).await?;
            let req = ShareRequest::from_text(&view.text)?;
            if hex::encode(req.hash()) != view.id {
                bail!("the gateway's request text does not match its id; not signing");
            }
            let denial = Denial::for_request(&req, gateway::now_ms()).sign(&me);
            if let AdminResponse::Done { message } = link
                .call(
                    &me,
                    AdminRequest::Deny {
                        request_id,
                        denial: denial.to_text(),
                    },
                )
                .await?
            {
                println!("{message}");
            }
        }
        PatientAction::Grants {
            dir,
            gw,
            identity,
            out,
        } => {
            let me = load_patient(&identity)?;
            let link = Link::new(&dir, &gw)?;
            let id = whoami(&link, &me).await?;
            if let AdminResponse::Grants { grants } = link
                .call(&me, AdminRequest::Grants { patient: Some(id) })
                .await?
            {
                if out.json {
                    return print_json(&grants);
                }
                print_grant_list(grants);
            }
        }
        PatientAction::Audit {
            gw,
            identity,
            institution,
            public_store,
            public_store_opts,
            state,
        } => {
            audit(
                &gw,
                &identity,
                &institution,
                &public_store,
                public_store_opts,
                &state,
            )
            .await?;
        }
        PatientAction::AuthHeader {
            gw,
            identity,
            method,
            path,
            body_file,
        } => {
            if gw.gateway.is_none() {
                bail!("--gateway URL is needed: the header is for the gateway's JSON API");
            }
            let me = load_patient(&identity)?;
            let body = match body_file {
                Some(f) => {
                    std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?
                }
                None => Vec::new(),
            };
            let link = Link::new(&DataDirArg::default(), &gw)?;
            println!(
                "{}",
                link.token(&me, &method.to_uppercase(), &path, &body)
                    .await?
            );
        }
        PatientAction::Revoke {
            dir,
            gw,
            identity,
            grant_id,
        } => {
            let me = load_patient(&identity)?;
            let link = Link::new(&dir, &gw)?;
            let id = whoami(&link, &me).await?;
            let grants = match link
                .call(&me, AdminRequest::Grants { patient: Some(id) })
                .await?
            {
                AdminResponse::Grants { grants } => grants,
                _ => bail!("unexpected answer from the server"),
            };
            let g = grants
                .iter()
                .find(|g| g.id == grant_id)
                .ok_or_else(|| anyhow!("you have no grant {grant_id}"))?;
            let signed = SignedGrant::from_text(&g.grant)?;
            let rev = Revocation::for_grant(&signed, gateway::now_ms()).sign(&me);
            if let AdminResponse::Done { message } = link
                .call(
                    &me,
                    AdminRequest::Revoke {
                        revocation: rev.to_text(),
                    },
                )
                .await?
            {
                println!("{message}");
            }
        }
    }
    Ok(())
}

async fn print_grants(dir: &DataDirArg, patient: Option<String>, out: JsonArg) -> Result<()> {
    if let AdminResponse::Grants { grants } =
        fail_on_error(admin_request(dir, AdminRequest::Grants { patient }).await?)?
    {
        if out.json {
            return print_json(&grants);
        }
        print_grant_list(grants);
    }
    Ok(())
}

fn print_grant_list(grants: Vec<gateway::store::private::GrantRecord>) {
    {
        let now = gateway::now_ms();
        for g in grants {
            let state = match g.revoked_ms {
                // The sweeper stamps expired grants too: those say expired.
                Some(t) if t < g.expires_ms => format!("revoked {}", time(t)),
                Some(_) => format!("expired {}", time(g.expires_ms)),
                None if g.expires_ms <= now => format!("expired {}", time(g.expires_ms)),
                None => format!("in force until {}", time(g.expires_ms)),
            };
            println!(
                "{}\tpatient {}\tto {}\t{}\t{} records",
                g.id,
                g.patient_id,
                g.recipient,
                state,
                g.records.len()
            );
        }
    }
}

/// The scope the --object / --bucket --prefix / --all flags say: (kind, bucket, key or
/// prefix).
fn scope_of(
    object: Option<String>,
    bucket: Option<String>,
    prefix: Option<String>,
    all: bool,
) -> Result<(&'static str, String, String)> {
    Ok(match (object, bucket.zip(prefix), all) {
        (Some(o), _, _) => {
            let (b, k) = split_location(&o, "object")?;
            ("object", b, k)
        }
        (None, Some((b, p)), _) => {
            if b.is_empty() || b.contains('/') {
                bail!("the bucket of a prefix scope is a bucket name alone, not {b:?}");
            }
            ("prefix", b, p)
        }
        (None, None, true) => ("patient", String::new(), String::new()),
        _ => bail!(
            "say which records: --object BUCKET/KEY, --bucket BUCKET --prefix PREFIX, or --all"
        ),
    })
}

fn split_location(s: &str, what: &str) -> Result<(String, String)> {
    match s.split_once('/') {
        Some((b, rest)) if !b.is_empty() => Ok((b.to_string(), rest.to_string())),
        _ => bail!("--{what} must be BUCKET/{}", what.to_uppercase()),
    }
}

pub async fn share(action: ShareAction) -> Result<()> {
    match action {
        ShareAction::Mount {
            dir,
            peer,
            bucket,
            patient,
            object,
            peer_bucket,
            prefix,
            all,
            include_future,
            purpose,
            purpose_code,
            expires_in,
        } => {
            let (scope, b, path) = scope_of(object, peer_bucket, prefix, all)?;
            let request = gateway::engine::remote::PeerShareRequest {
                patient,
                scope: scope.into(),
                bucket: b,
                path,
                include_future,
                purpose_text: purpose,
                purpose_code,
                expires_ms: gateway::now_ms()
                    + u64::try_from(expires_in.as_millis()).unwrap_or(u64::MAX / 2),
            };
            if let AdminResponse::Mounts { mounts } = fail_on_error(
                admin_request(
                    &dir,
                    AdminRequest::Mount {
                        bucket,
                        peer,
                        request,
                    },
                )
                .await?,
            )? {
                for m in mounts {
                    println!(
                        "bucket {} will show what {} shares under request {} once the patient approves there",
                        m.bucket, m.peer, m.request_id
                    );
                    println!("{}", m.request_id);
                }
            }
        }
        ShareAction::Mounts { dir, out } => {
            if let AdminResponse::Mounts { mounts } =
                fail_on_error(admin_request(&dir, AdminRequest::Mounts).await?)?
            {
                if out.json {
                    return print_json(&mounts);
                }
                for m in mounts {
                    println!(
                        "{}\tfrom {}\trequest {}\t{}\t{}",
                        m.bucket,
                        m.peer,
                        m.request_id,
                        m.grant
                            .map_or_else(|| "no grant yet".to_string(), |g| format!("grant {g}")),
                        m.state.as_deref().map_or_else(
                            || "state unknown (the server is not running)".to_string(),
                            |s| format!("state: {s}")
                        )
                    );
                }
            }
        }
        ShareAction::Request {
            dir,
            patient,
            recipient,
            object,
            bucket,
            prefix,
            all,
            include_future,
            requester,
            purpose,
            purpose_code,
            expires_in,
        } => {
            let (scope, bucket, path) = scope_of(object, bucket, prefix, all)?;
            let expires_ms =
                gateway::now_ms() + u64::try_from(expires_in.as_millis()).unwrap_or(u64::MAX / 2);
            let req = AdminRequest::ShareRequest(Box::new(NewShareRequest {
                patient,
                scope: scope.into(),
                bucket,
                path,
                include_future,
                recipient,
                requester,
                purpose_text: purpose,
                purpose_code,
                expires_ms,
            }));
            if let AdminResponse::Request { request } =
                fail_on_error(admin_request(&dir, req).await?)?
            {
                print_request(&request);
                println!("{}", request.id);
            }
        }
        ShareAction::Requests { dir, patient, out } => {
            if let AdminResponse::Requests { requests } =
                fail_on_error(admin_request(&dir, AdminRequest::Requests { patient }).await?)?
            {
                if out.json {
                    return print_json(&requests);
                }
                for r in &requests {
                    print_request(r);
                }
            }
        }
        ShareAction::Grants { dir, patient, out } => print_grants(&dir, patient, out).await?,
        ShareAction::Fetch {
            dir,
            gw,
            identity,
            grant,
            object,
            out,
        } => {
            let me = load_patient(&identity)?;
            let (bucket, key) = split_location(&object, "object")?;
            let (manifest, stanza) = if gw.gateway.is_some() {
                if dir.public_store.is_none() {
                    bail!(
                        "with --gateway, say where the records' blobs are: --public-store URL \
                         (the hospital's public store; read access is enough)"
                    );
                }
                Link::new(&dir, &gw)?
                    .recipient_exchange(&me, &grant, &bucket, &key)
                    .await?
            } else {
                let req = AdminRequest::Exchange { grant, bucket, key };
                match fail_on_error(admin_request(&dir, req).await?)? {
                    AdminResponse::Exchange { manifest, stanza } => (manifest, stanza),
                    _ => bail!("unexpected answer from the server"),
                }
            };
            let manifest = keyring::Manifest::decode(&hex::decode(manifest)?)?;
            let stanza = keyring::WrappedKey::from_bytes(&hex::decode(stanza)?)?;
            let dek = me
                .unwrap_key(&stanza)
                .ok_or_else(|| anyhow!("the key handed out is not wrapped to this identity"))??;
            let (public, _) = crate::setup(&dir)?.open_public(false)?;
            let tmp = out.with_extension("partial");
            let mut file = std::fs::File::create(&tmp)
                .with_context(|| format!("cannot create {}", tmp.display()))?;
            let n = match gateway::engine::sharing::read_record(&public, &manifest, &dek, &mut file)
                .await
            {
                Ok(n) => n,
                Err(e) => {
                    drop(file);
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e.into());
                }
            };
            file.sync_all()?;
            std::fs::rename(&tmp, &out)?;
            println!("{n} bytes verified and decrypted to {}", out.display());
        }
        ShareAction::Events { dir, patient, out } => {
            if let AdminResponse::Events { events } = fail_on_error(
                admin_request(
                    &dir,
                    AdminRequest::Events {
                        from: 0,
                        limit: 10_000,
                        patient,
                    },
                )
                .await?,
            )? {
                if out.json {
                    return print_json(&events);
                }
                for e in events {
                    let place = match (&e.bucket, &e.key) {
                        (Some(b), Some(k)) => format!(" {b}/{k}"),
                        _ => String::new(),
                    };
                    println!(
                        "{}\t{}\t{}\t{}{}\t{}",
                        e.seq,
                        time(e.time_ms),
                        e.kind,
                        e.actor,
                        place,
                        e.detail
                    );
                }
            }
        }
    }
    Ok(())
}

/// A record key as a relative path under the output folder, refusing anything that could
/// climb out of it.
fn safe_relative(bucket: &str, key: &str) -> Option<PathBuf> {
    let mut p = PathBuf::new();
    for part in std::iter::once(bucket).chain(key.split('/')) {
        if part.is_empty() || part == "." || part == ".." || part.contains('\0') {
            return None;
        }
        p.push(part);
    }
    Some(p)
}

async fn pull(
    identity: &Path,
    institution: &str,
    public_store: &str,
    opts: Vec<(String, String)>,
    out: &Path,
    state: Option<PathBuf>,
) -> Result<()> {
    use keyring::patient_index::{index_name_for_patient, PatientIndex};
    let me = load_patient(identity)?;
    let inst: Recipient = institution
        .parse()
        .map_err(|_| anyhow!("--institution is not a medgate1... recipient"))?;
    let opts: std::collections::BTreeMap<String, String> = opts.into_iter().collect();
    let public = gateway::store::public::open(Some(public_store), &opts, out)
        .context("cannot open the public store")?;
    let state = state.unwrap_or_else(|| out.join(".medgate-index-seq"));
    let min_seq = match std::fs::read_to_string(&state) {
        Ok(t) => t
            .trim()
            .parse::<u64>()
            .with_context(|| format!("{} does not hold a sequence number", state.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e).context(format!("cannot read {}", state.display())),
    };
    // An institution that replaced its key publishes a rollover signed by the key before:
    // follow the chain from the key given, and only from it.
    let chain = gateway::engine::keyrot::published_rollovers(&public)
        .await
        .context("cannot read the institution's key rollovers from the public store")?;
    let (inst, followed) = keyring::rollover::follow_chain(&inst, &chain).map_err(|e| {
        anyhow!(
            "a published key rollover does not verify against the institution key you gave: {e}"
        )
    })?;
    for s in &followed {
        eprintln!(
            "the institution rolled its key over (rollover {}): reading the index signed by {}",
            s.rollover.seq, s.rollover.new
        );
    }
    let name = index_name_for_patient(&me, &inst)?;
    let bytes = public
        .get(&object_store::path::Path::from(name.clone()))
        .await
        .map_err(|e| match e {
            object_store::Error::NotFound { .. } => anyhow!(
                "no index for you in this public store ({name}): wrong institution key, or nothing published yet"
            ),
            other => anyhow!("cannot read your index {name}: {other}"),
        })?
        .bytes()
        .await?;
    let index = PatientIndex::open(&bytes, &me, &inst, min_seq).map_err(|e| match e {
        keyring::Error::Rollback { seen, got } => anyhow!(
            "the published index is older (sequence {got}) than one you already pulled ({seen}): \
             refusing a rolled-back index"
        ),
        keyring::Error::BadSignature => {
            anyhow!("the index is not signed by this institution: refusing a forged index")
        }
        other => anyhow!("your index does not open: {other}"),
    })?;
    std::fs::create_dir_all(out)?;
    let mut failed = 0;
    for r in &index.records {
        let Some(rel) = safe_relative(&r.bucket, &r.key) else {
            eprintln!("skipping {}/{}: not a safe file name", r.bucket, r.key);
            failed += 1;
            continue;
        };
        let result = async {
            let manifest = r.decode_manifest()?;
            let dek = me
                .unwrap_key(&r.stanza)
                .ok_or_else(|| anyhow!("not wrapped to you"))??;
            let path = out.join(&rel);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("medgate-partial");
            let mut file = std::fs::File::create(&tmp)?;
            match gateway::engine::sharing::read_record(&public, &manifest, &dek, &mut file).await {
                Ok(n) => {
                    file.sync_all()?;
                    std::fs::rename(&tmp, &path)?;
                    Ok::<u64, anyhow::Error>(n)
                }
                Err(e) => {
                    drop(file);
                    let _ = std::fs::remove_file(&tmp);
                    Err(e.into())
                }
            }
        }
        .await;
        match result {
            Ok(n) => println!("ok\t{}/{}\t{n} bytes", r.bucket, r.key),
            Err(e) => {
                eprintln!("FAILED\t{}/{}: {e:#}", r.bucket, r.key);
                failed += 1;
            }
        }
    }
    std::fs::write(&state, format!("{}\n", index.seq))
        .with_context(|| format!("cannot write {}", state.display()))?;
    println!(
        "index sequence {}: {} records, {} verified and decrypted into {}",
        index.seq,
        index.records.len(),
        index.records.len() - failed,
        out.display()
    );
    if failed > 0 {
        bail!("{failed} records could not be recovered");
    }
    Ok(())
}

async fn audit(
    gw: &GatewayArg,
    identity: &Path,
    institution: &str,
    public_store: &str,
    opts: Vec<(String, String)>,
    state_path: &Path,
) -> Result<()> {
    use gateway::engine::audit::AuditState;
    use gateway::front::api::{EntriesAnswer, ProofAnswer};
    if gw.gateway.is_none() {
        bail!("--gateway URL is needed: the audit asks the gateway for your entries and proofs");
    }
    let me = load_patient(identity)?;
    let inst: Recipient = institution
        .parse()
        .map_err(|_| anyhow!("--institution is not a medgate1... recipient"))?;
    let link = Link::new(&DataDirArg::default(), gw)?;
    let me_id = whoami(&link, &me).await?;
    let last: Option<AuditState> = match std::fs::read(state_path) {
        Ok(b) => Some(
            serde_json::from_slice(&b)
                .with_context(|| format!("{} is not an audit state file", state_path.display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(anyhow!("cannot read {}: {e}", state_path.display())),
    };
    let answer: EntriesAnswer = link.get_json(&me, &Route::PatientEntries.path(&[])).await?;
    let opts: std::collections::BTreeMap<String, String> = opts.into_iter().collect();
    let store = gateway::store::public::open(Some(public_store), &opts, Path::new("."))
        .context("cannot open the public store")?;
    let public_note = gateway::engine::log::published_checkpoint(&store)
        .await
        .context("cannot read the institution's checkpoint from the public store")?;
    let public_size = keyring::checkpoint::SignedNote::parse(&public_note)
        .and_then(|n| n.checkpoint())
        .map(|c| c.size)
        .unwrap_or(0);
    let proof = |from: u64, to: u64| {
        let link = &link;
        async move {
            if from >= to || from == 0 {
                return Ok::<_, anyhow::Error>(Vec::new());
            }
            let p: ProofAnswer = link
                .get_public(
                    &Route::LogConsistency
                        .path_query(&[], &[("from", &from.to_string()), ("to", &to.to_string())]),
                )
                .await?;
            Ok(p.hashes)
        }
    };
    let to_public = proof(answer.tree_size, public_size).await?;
    let from_last = match &last {
        Some(l) => proof(l.size, answer.tree_size).await?,
        None => Vec::new(),
    };
    // After a key rotation the checkpoints are signed by the key the published rollovers
    // (each signed by the key before it) lead to from the one given, under the same origin.
    let (key, origin, _) = gateway::engine::keyrot::follow(&store, &inst)
        .await
        .map_err(|e| anyhow!("the institution's key rollovers do not verify: {e}"))?;
    let report = gateway::engine::audit::check_with_origin(
        &key,
        &origin,
        &me_id,
        &answer,
        &public_note,
        &to_public,
        last.as_ref(),
        &from_last,
    )?;
    println!(
        "your {} log entries are in the institution's published log (size {}), in order and without gaps:",
        report.entries.len(),
        report.checkpoint.size
    );
    for e in &report.entries {
        let what = match (&e.bucket, &e.key) {
            (Some(b), Some(k)) => format!(" {b}/{k}"),
            _ => String::new(),
        };
        let grant = e
            .grant
            .as_ref()
            .map(|g| format!(" under grant {g}"))
            .unwrap_or_default();
        println!(
            "#{:<4} {}  {:<16} by {}{}{}  {}",
            e.patient_seq,
            time(e.time_ms),
            e.kind,
            e.actor,
            what,
            grant,
            e.detail
        );
    }
    let text = serde_json::to_vec_pretty(&report.state)?;
    std::fs::write(state_path, text)
        .with_context(|| format!("cannot write {}", state_path.display()))?;
    Ok(())
}
