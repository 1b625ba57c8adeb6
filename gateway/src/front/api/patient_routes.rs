//! The patient routes (Medgate-Patient): challenges, requests, approval and denial,
//! grants, revocation, key change, the patient's log entries; and a grant recipient's
//! challenge and exchange.

use super::*;

#[utoipa::path(post, path = "/v1/patient/challenge", tag = "patient",
    request_body = ChallengeBody, responses((status = 200, body = ChallengeAnswer)))]
pub(super) async fn patient_challenge(
    State(st): State<ApiState>,
    body: Bytes,
) -> ApiResult<Json<ChallengeAnswer>> {
    let b: ChallengeBody = parse_json(&body)?;
    // No store lookup, for any caller: the answer and its cost are the same whether or
    // not a patient has this id or key.
    let subject = match (b.patient, b.recipient) {
        (Some(id), _) => {
            crate::engine::sharing::check_patient_id(&id)?;
            id
        }
        (None, Some(r)) => {
            let key: Recipient = r
                .trim()
                .parse()
                .map_err(|_| Error::InvalidArgument("recipient: not a medgate1... key".into()))?;
            format!("{KEY_SUBJECT}{key}")
        }
        (None, None) => {
            return Err(Error::InvalidArgument("give patient or recipient".into()).into())
        }
    };
    let challenge =
        st.0.challenge_key
            .issue(st.0.engine.institution_id(), &subject, crate::now_ms());
    Ok(Json(ChallengeAnswer {
        patient: subject,
        challenge: challenge.to_text(),
    }))
}

/// Issues a challenge for a grant in force; the recipient signs it with the grant's
/// recipient key to call `/v1/recipient/exchange`.
#[utoipa::path(post, path = "/v1/recipient/challenge", tag = "recipient",
    request_body = RecipientChallengeBody, responses((status = 200, body = ChallengeAnswer)))]
pub(super) async fn recipient_challenge(
    State(st): State<ApiState>,
    body: Bytes,
) -> ApiResult<Json<ChallengeAnswer>> {
    let b: RecipientChallengeBody = parse_json(&body)?;
    // Only a grant in force gets a challenge (an unknown, revoked or expired one is
    // refused with its reason, as every exchange call would be).
    st.0.engine.grant_in_force(&b.grant).await?;
    let now = crate::now_ms();
    let subject = format!("{RECIPIENT_CHALLENGE_PREFIX}{}", b.grant);
    let challenge =
        st.0.challenge_key
            .issue(st.0.engine.institution_id(), &subject, now);
    Ok(Json(ChallengeAnswer {
        patient: subject,
        challenge: challenge.to_text(),
    }))
}

/// A recipient's read of a shared record from anywhere: the manifest and the
/// recipient's wrapped key, for a request signed with the grant's recipient key (a
/// challenge from `/v1/recipient/challenge`). The grant is checked as on every read;
/// the blobs come from the public store.
#[utoipa::path(post, path = "/v1/recipient/exchange", tag = "recipient", security(("patient" = [])),
    request_body = RecipientExchangeBody, responses((status = 200, body = Answer, description = "`exchange`")))]
pub(super) async fn recipient_exchange(
    State(st): State<ApiState>,
    RecipientAuth { body: b }: RecipientAuth,
) -> ApiResult<Json<AdminResponse>> {
    st.admin_call(AdminRequest::Exchange {
        grant: b.grant,
        bucket: b.bucket,
        key: b.key,
    })
    .await
}

#[utoipa::path(get, path = "/v1/patient/me", tag = "patient", security(("patient" = [])),
    responses((status = 200, body = Answer, description = "`patient`")))]
pub(super) async fn patient_me(
    State(st): State<ApiState>,
    PatientAuth { id, .. }: PatientAuth,
) -> ApiResult<Json<AdminResponse>> {
    st.admin_call(AdminRequest::PatientShow { id }).await
}

#[utoipa::path(get, path = "/v1/patient/requests", tag = "patient", security(("patient" = [])),
    params(AllFilter), responses((status = 200, body = Answer, description = "`requests`")))]
pub(super) async fn patient_requests(
    State(st): State<ApiState>,
    Query(q): Query<AllFilter>,
    PatientAuth { id, .. }: PatientAuth,
) -> ApiResult<Json<AdminResponse>> {
    let mut r = admin::execute(&st.0.admin, AdminRequest::Requests { patient: Some(id) }).await?;
    if let AdminResponse::Requests { requests } = &mut r {
        if !q.all {
            requests.retain(|v| v.state == crate::engine::RequestState::Pending);
        }
    }
    Ok(Json(r))
}

/// The request `id` if it is `patient`'s (another patient's looks like none).
pub(super) async fn own_request(st: &ApiState, patient: &str, id: &str) -> Result<AdminResponse> {
    let r = admin::execute(&st.0.admin, AdminRequest::RequestGet { id: id.into() }).await?;
    match &r {
        AdminResponse::Request { request } if request.patient == patient => Ok(r),
        _ => Err(Error::NotFound(format!("no share request {id} for you"))),
    }
}

#[utoipa::path(get, path = "/v1/patient/requests/{id}", tag = "patient", security(("patient" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Answer, description = "`request`")))]
pub(super) async fn patient_request(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    PatientAuth { id: patient, .. }: PatientAuth,
) -> ApiResult<Json<AdminResponse>> {
    Ok(Json(own_request(&st, &patient, &id).await?))
}

#[utoipa::path(post, path = "/v1/patient/requests/{id}/approve", tag = "patient", security(("patient" = [])),
    params(("id" = String, Path)), request_body = GrantBody,
    responses((status = 200, body = Answer, description = "`rewrapped`"), (status = 403, description = "grant refused")))]
pub(super) async fn patient_approve(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    PatientAuth { id: patient, body }: PatientAuth<Bytes>,
) -> ApiResult<Json<AdminResponse>> {
    own_request(&st, &patient, &id).await?;
    let b: GrantBody = parse_json(&body)?;
    st.admin_call(AdminRequest::Approve {
        request_id: id,
        grant: b.grant,
    })
    .await
}

#[utoipa::path(post, path = "/v1/patient/requests/{id}/deny", tag = "patient", security(("patient" = [])),
    params(("id" = String, Path)), request_body = DenialBody,
    responses((status = 200, body = Answer, description = "`done`")))]
pub(super) async fn patient_deny(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    PatientAuth { id: patient, body }: PatientAuth<Bytes>,
) -> ApiResult<Json<AdminResponse>> {
    own_request(&st, &patient, &id).await?;
    let b: DenialBody = parse_json(&body)?;
    st.admin_call(AdminRequest::Deny {
        request_id: id,
        denial: b.denial,
    })
    .await
}

#[utoipa::path(get, path = "/v1/patient/grants", tag = "patient", security(("patient" = [])),
    responses((status = 200, body = Answer, description = "`grants`")))]
pub(super) async fn patient_grants(
    State(st): State<ApiState>,
    PatientAuth { id, .. }: PatientAuth,
) -> ApiResult<Json<AdminResponse>> {
    st.admin_call(AdminRequest::Grants { patient: Some(id) })
        .await
}

#[utoipa::path(post, path = "/v1/patient/revocations", tag = "patient", security(("patient" = [])),
    request_body = RevocationBody, responses((status = 200, body = Answer, description = "`done`")))]
pub(super) async fn patient_revoke(
    State(st): State<ApiState>,
    PatientAuth { id: patient, body }: PatientAuth<Bytes>,
) -> ApiResult<Json<AdminResponse>> {
    let b: RevocationBody = parse_json(&body)?;
    // The revocation is checked against the patient's key on file by the engine; the
    // grant must also be this patient's.
    let rev = keyring::consent::SignedRevocation::from_text(&b.revocation)?;
    let grant_id = hex::encode(rev.revocation.grant_id);
    match st.0.engine.grant(&grant_id).await? {
        Some(g) if g.patient_id == patient => {}
        _ => return Err(Error::NotFound(format!("no grant {grant_id} of yours")).into()),
    }
    st.admin_call(AdminRequest::Revoke {
        revocation: b.revocation,
    })
    .await
}

#[utoipa::path(post, path = "/v1/patient/key-change", tag = "patient", security(("patient" = [])),
    request_body = KeyChangeBody, responses((status = 200, body = Answer, description = "`done`")))]
pub(super) async fn patient_key_change(
    State(st): State<ApiState>,
    PatientAuth { body, .. }: PatientAuth<Bytes>,
) -> ApiResult<Json<AdminResponse>> {
    let b: KeyChangeBody = parse_json(&body)?;
    st.admin_call(AdminRequest::PatientRekey { change: b.change })
        .await
}

#[utoipa::path(get, path = "/v1/patient/entries", tag = "patient", security(("patient" = [])),
    responses((status = 200, body = EntriesAnswer)))]
pub(super) async fn patient_entries(
    State(st): State<ApiState>,
    PatientAuth { id: patient, .. }: PatientAuth,
) -> ApiResult<Json<EntriesAnswer>> {
    Ok(Json(entries_for(&st.0.engine, &patient).await?))
}

/// Every log entry about `patient`, each with an inclusion proof against the newest
/// checkpoint (published first, so the public store has it).
///
/// # Errors
/// Store failures; nothing published yet.
pub async fn entries_for(engine: &Engine, patient: &str) -> Result<EntriesAnswer> {
    engine.publish_log().await?;
    let (tree_size, checkpoint) = engine
        .latest_checkpoint()
        .await?
        .ok_or_else(|| Error::NotFound("no checkpoint published yet".into()))?;
    let mut entries = Vec::new();
    let mut from = 0;
    while from < tree_size {
        let batch = engine.events(from, 10_000).await?;
        let Some(last) = batch.last() else { break };
        from = last.seq + 1;
        for event in batch {
            if event.seq >= tree_size || event.patient.as_deref() != Some(patient) {
                continue;
            }
            let proof = engine.inclusion_proof(event.seq, tree_size).await?;
            entries.push(EntryWithProof {
                proof: proof.hashes().map(hex::encode).collect(),
                event,
            });
        }
    }
    Ok(EntriesAnswer {
        checkpoint,
        tree_size,
        entries,
    })
}
