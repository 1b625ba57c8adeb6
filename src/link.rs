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
use gateway::front::api::{ChallengeAnswer, PATIENT_SCHEME};
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
        let (method, path, body) = match req {
            AdminRequest::PatientWhoami { .. } => ("GET", "/v1/patient/me".to_string(), None),
            AdminRequest::Requests { .. } => {
                ("GET", "/v1/patient/requests?all=true".to_string(), None)
            }
            AdminRequest::RequestGet { id } => ("GET", format!("/v1/patient/requests/{id}"), None),
            AdminRequest::Approve { request_id, grant } => (
                "POST",
                format!("/v1/patient/requests/{request_id}/approve"),
                Some(serde_json::json!({ "grant": grant })),
            ),
            AdminRequest::Deny { request_id, denial } => (
                "POST",
                format!("/v1/patient/requests/{request_id}/deny"),
                Some(serde_json::json!({ "denial": denial })),
            ),
            AdminRequest::Grants { .. } => ("GET", "/v1/patient/grants".to_string(), None),
            AdminRequest::Revoke { revocation } => (
                "POST",
                "/v1/patient/revocations".to_string(),
                Some(serde_json::json!({ "revocation": revocation })),
            ),
            AdminRequest::PatientRekey { change } => (
                "POST",
                "/v1/patient/key-change".to_string(),
                Some(serde_json::json!({ "change": change })),
            ),
            _ => bail!("not a patient operation"),
        };
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let token = self.token(me, method, &path, &body).await?;
        let url = join(base, &path)?;
        let mut rb = http
            .request(method.parse()?, url)
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
            .post(join(base, "/v1/recipient/challenge")?)
            .json(&serde_json::json!({ "grant": grant }))
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
        let path = "/v1/recipient/exchange";
        let body = serde_json::json!({ "grant": grant, "bucket": bucket, "key": key })
            .to_string()
            .into_bytes();
        let token = AuthToken::new(challenge, "POST", path, &body).sign(me);
        let resp = http
            .post(join(base, path)?)
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
            .post(join(base, "/v1/patient/challenge")?)
            .json(&serde_json::json!({ "recipient": me.recipient().to_string() }))
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
