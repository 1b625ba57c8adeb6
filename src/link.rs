//! How the patient CLI reaches a gateway: its JSON API (`--gateway URL`, what patients use)
//! or, on the gateway's own host, the admin socket / a stopped data dir.
//!
//! Over the API every call is authenticated the same way: a fresh challenge from
//! `POST /v1/patient/challenge`, signed with the patient's key together with the request's
//! method, path and query and body hash (`Authorization: Medgate-Patient ...`). The signed
//! consent statements themselves (grants, denials, revocations, key changes) travel in the
//! bodies and are what the gateway checks before acting.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use gateway::front::admin::{AdminRequest, AdminResponse};
use gateway::front::api::{
    ChallengeAnswer, ChallengeBody, DenialBody, GrantBody, KeyChangeBody, RecipientChallengeBody,
    RecipientExchangeBody, RevocationBody, PATIENT_SCHEME,
};
use gateway::routes::Route;
use keyring::consent::{AuthChallenge, AuthToken};
use keyring::Identity;

use crate::{admin_request, DataDirArg};

/// `--gateway URL [--ca FILE]`.
#[derive(Args, Clone, Default)]
pub struct GatewayArg {
    /// The gateway's JSON API (https://gateway.example:9002). Without it, the admin socket
    /// of the data dir on this host is used.
    #[arg(long, env = "MEDGATE_GATEWAY")]
    pub gateway: Option<url::Url>,
    /// PEM CA bundle to trust for the gateway's certificate (beside the system roots).
    #[arg(long = "gateway-ca", env = "MEDGATE_GATEWAY_CA")]
    pub ca: Option<PathBuf>,
}

/// A patient's channel to one gateway.
pub enum Link {
    Local(DataDirArg),
    Api {
        base: url::Url,
        http: reqwest::Client,
    },
}

impl Link {
    /// The API when `--gateway` is given, else the local data dir.
    ///
    /// # Errors
    /// An unreadable CA bundle.
    pub fn new(dir: &DataDirArg, gw: &GatewayArg) -> Result<Link> {
        let Some(base) = gw.gateway.clone() else {
            return Ok(Link::Local(dir.clone()));
        };
        let mut builder = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .connect_timeout(std::time::Duration::from_secs(10));
        if let Some(ca) = &gw.ca {
            let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| anyhow!("{}: not a PEM CA bundle: {e}", ca.display()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Link::Api {
            base,
            http: builder.build()?,
        })
    }

    /// Carries out a patient operation as `me`.
    ///
    /// # Errors
    /// The gateway cannot be reached, refuses (its message), or answers nonsense.
    pub async fn call(&self, me: &Identity, req: AdminRequest) -> Result<AdminResponse> {
        let (base, http) = match self {
            Link::Local(dir) => return crate::fail_on_error(admin_request(dir, req).await?),
            Link::Api { base, http } => (base, http),
        };
        let (route, id, query, body) = match req {
            AdminRequest::PatientWhoami { .. } => (Route::PatientMe, None, NO_QUERY, None),
            AdminRequest::Requests { .. } => {
                (Route::PatientRequests, None, &[("all", "true")][..], None)
            }
            AdminRequest::RequestGet { id } => (Route::PatientRequest, Some(id), NO_QUERY, None),
            AdminRequest::Approve { request_id, grant } => (
                Route::PatientApprove,
                Some(request_id),
                NO_QUERY,
                Some(json_body(&GrantBody { grant })?),
            ),
            AdminRequest::Deny { request_id, denial } => (
                Route::PatientDeny,
                Some(request_id),
                NO_QUERY,
                Some(json_body(&DenialBody { denial })?),
            ),
            AdminRequest::Grants { .. } => (Route::PatientGrants, None, NO_QUERY, None),
            AdminRequest::Revoke { revocation } => (
                Route::PatientRevoke,
                None,
                NO_QUERY,
                Some(json_body(&RevocationBody { revocation })?),
            ),
            AdminRequest::PatientRekey { change } => (
                Route::PatientKeyChange,
                None,
                NO_QUERY,
                Some(json_body(&KeyChangeBody { change })?),
            ),
            _ => bail!("not a patient operation"),
        };
        let params: Vec<(&str, &str)> = id.as_deref().map(|id| ("id", id)).into_iter().collect();
        let path = route.path_query(&params, query);
        let method = route.method();
        let body = body.unwrap_or_default();
        let token = self.token(me, method.as_str(), &path, &body).await?;
        let url = join(base, &path)?;
        let mut rb = http
            .request(method, url)
            .header(reqwest::header::AUTHORIZATION, token);
        if !body.is_empty() {
            rb = rb
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let resp = rb
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway at {base}"))?;
        let status = resp.status();
        let text = resp.text().await?;
        let answer: AdminResponse = serde_json::from_str(&text).map_err(|_| {
            anyhow!("the gateway answered HTTP {status} with something that is not medgate JSON")
        })?;
        crate::fail_on_error(answer)
    }

    /// An authenticated GET of the patient API, its JSON answer as `T`.
    ///
    /// # Errors
    /// No API link; the gateway refuses (its message) or answers something else.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        me: &Identity,
        path: &str,
    ) -> Result<T> {
        let Link::Api { base, http } = self else {
            bail!("this needs the gateway's JSON API: pass --gateway URL");
        };
        let token = self.token(me, "GET", path, b"").await?;
        let resp = http
            .get(join(base, path)?)
            .header(reqwest::header::AUTHORIZATION, token)
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway at {base}"))?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
                .unwrap_or_else(|| format!("HTTP {status}"));
            bail!("{message}");
        }
        serde_json::from_str(&text)
            .map_err(|e| anyhow!("the gateway's answer to {path} is not what medgate sends: {e}"))
    }

    /// An unauthenticated GET (the public log endpoints), its JSON answer as `T`.
    ///
    /// # Errors
    /// No API link; the gateway refuses or answers something else.
    pub async fn get_public<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let Link::Api { base, http } = self else {
            bail!("this needs the gateway's JSON API: pass --gateway URL");
        };
        let resp = http
            .get(join(base, path)?)
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway at {base}"))?;
        let status = resp.status();
        if !status.is_success() {
            bail!("the gateway answered {path} with HTTP {status}");
        }
        Ok(resp.json().await?)
    }

    /// An unauthenticated POST of JSON (the public log endpoints); the answer's message.
    ///
    /// # Errors
    /// No API link; the gateway refuses (its message).
    pub async fn post_public(&self, path: &str, body: &serde_json::Value) -> Result<String> {
        let Link::Api { base, http } = self else {
            bail!("this needs the gateway's JSON API: pass --gateway URL");
        };
        let resp = http
            .post(join(base, path)?)
            .json(body)
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway at {base}"))?;
        let status = resp.status();
        let text = resp.text().await?;
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
            .unwrap_or_else(|| format!("HTTP {status}"));
        if status.is_success() {
            Ok(message)
        } else {
            bail!("{message}")
        }
    }

    /// A recipient's read of one record of `grant` (BUCKET/KEY) through the gateway's
    /// JSON API: a challenge for the grant, signed with the recipient's key `me`.
    /// Answers `(manifest hex, stanza hex)`.
    ///
    /// # Errors
    /// No API link; the gateway refuses (its message).
    pub async fn recipient_exchange(
        &self,
        me: &Identity,
        grant: &str,
        bucket: &str,
        key: &str,
    ) -> Result<(String, String)> {
        let Link::Api { base, http } = self else {
            bail!("this needs the gateway's JSON API: pass --gateway URL");
        };
        let refused = |text: &str, status: reqwest::StatusCode| {
            serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
                .unwrap_or_else(|| format!("HTTP {status}"))
        };
        let resp = http
            .post(join(base, Route::RecipientChallenge.template())?)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(json_body(&RecipientChallengeBody {
                grant: grant.to_string(),
            })?)
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway at {base}"))?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("the gateway refused: {}", refused(&text, status));
        }
        let answer: ChallengeAnswer = serde_json::from_str(&text)
            .map_err(|e| anyhow!("the gateway's challenge is not what medgate sends: {e}"))?;
        let challenge = AuthChallenge::from_text(&answer.challenge)
            .map_err(|e| anyhow!("the gateway's challenge: {e}"))?;
        let path = Route::RecipientExchange.path(&[]);
        let body = json_body(&RecipientExchangeBody {
            grant: grant.to_string(),
            bucket: bucket.to_string(),
            key: key.to_string(),
        })?;
        let token = AuthToken::new(
            challenge,
            Route::RecipientExchange.method().as_str(),
            &path,
            &body,
        )
        .sign(me);
        let resp = http
            .post(join(base, &path)?)
            .header(
                reqwest::header::AUTHORIZATION,
                format!("{PATIENT_SCHEME} {}", token.to_text()),
            )
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway at {base}"))?;
        let status = resp.status();
        let text = resp.text().await?;
        let answer: AdminResponse = serde_json::from_str(&text).map_err(|_| {
            anyhow!("the gateway answered HTTP {status} with something that is not medgate JSON")
        })?;
        match crate::fail_on_error(answer)? {
            AdminResponse::Exchange { manifest, stanza } => Ok((manifest, stanza)),
            _ => bail!("unexpected answer from the gateway"),
        }
    }

    /// A fresh challenge signed for `method path body`, as the `Authorization` value.
    pub async fn token(
        &self,
        me: &Identity,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<String> {
        let Link::Api { base, http } = self else {
            bail!("no gateway API");
        };
        let resp = http
            .post(join(base, Route::PatientChallenge.template())?)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(json_body(&ChallengeBody {
                patient: None,
                recipient: Some(me.recipient().to_string()),
            })?)
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway at {base}"))?;
        if !resp.status().is_success() {
            let text = resp.text().await.unwrap_or_default();
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
                .unwrap_or(text);
            bail!("the gateway refused to issue a challenge: {message}");
        }
        let answer: ChallengeAnswer = resp.json().await?;
        let challenge = AuthChallenge::from_text(&answer.challenge)
            .map_err(|e| anyhow!("the gateway's challenge: {e}"))?;
        let token = AuthToken::new(challenge, method, path, body).sign(me);
        Ok(format!("{PATIENT_SCHEME} {}", token.to_text()))
    }
}

/// No query parameters.
const NO_QUERY: &[(&str, &str)] = &[];

/// A request body as JSON text, its keys in sorted order (the bytes the patient's
/// signature covers are exactly these).
///
/// # Errors
/// A body that does not serialize (never, for the API's body types).
pub fn json_body<T: serde::Serialize>(body: &T) -> Result<Vec<u8>> {
    Ok(serde_json::to_value(body)?.to_string().into_bytes())
}

fn join(base: &url::Url, path: &str) -> Result<url::Url> {
    let mut url = base.clone();
    let (p, q) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    url.set_path(p);
    url.set_query(q);
    Ok(url)
}
