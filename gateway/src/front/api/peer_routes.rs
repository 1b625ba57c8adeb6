//! The peer routes (Medgate-Peer): share requests from another institution, the records a
//! grant covers, key exchange, and sealed chunks with their proofs.

use super::*;

#[utoipa::path(post, path = "/v1/peer/requests", tag = "peer", security(("peer" = [])),
    request_body = PeerShareRequest, responses((status = 200, body = SignedAnswerText,
        description = "a SignedPeerAnswer of kind 0x01 (request state), context medgate/v1/request-answer")))]
pub(super) async fn peer_new_request(
    State(st): State<ApiState>,
    PeerAuth { peer, nonce, body }: PeerAuth<Bytes>,
) -> ApiResult<Json<SignedAnswerText>> {
    let b: PeerShareRequest = parse_json(&body)?;
    let n = NewShareRequest {
        patient: b.patient,
        scope: b.scope,
        bucket: b.bucket,
        path: b.path,
        include_future: b.include_future,
        // The caller asks for itself, and who it is comes from our configuration.
        recipient: peer.recipient.to_string(),
        requester: peer.name.clone(),
        purpose_text: b.purpose_text,
        purpose_code: b.purpose_code,
        expires_ms: b.expires_ms,
    };
    let req = admin::new_request(&st.0.admin, &n)?;
    let rec =
        st.0.engine
            .create_peer_request(&req.to_text(), &format!("peer:{}", peer.name))
            .await?;
    Ok(request_answer(&st, &peer, nonce, &rec).await?)
}

/// A request's state as a signed answer: pending, denied, or approved with its grant and
/// whether that grant is in force, revoked or expired.
pub(super) async fn request_answer(
    st: &ApiState,
    peer: &Peer,
    nonce: [u8; 16],
    rec: &crate::engine::ShareRequestRecord,
) -> Result<Json<SignedAnswerText>> {
    use crate::engine::RequestState;
    let (status, grant) = match (rec.state, rec.grant.as_deref()) {
        (RequestState::Approved, Some(g)) => {
            let status = match st.0.engine.grant(g).await? {
                // Expiry first: the sweeper also stamps expired grants as revoked.
                Some(r) if r.expires_ms <= crate::now_ms() => RequestStatus::Expired,
                Some(r) if r.revoked_ms.is_some() => RequestStatus::Revoked,
                _ => RequestStatus::Approved,
            };
            (status, g)
        }
        (RequestState::Denied, _) => (RequestStatus::Denied, ""),
        _ => (RequestStatus::Pending, ""),
    };
    st.sign_answer(
        peer,
        nonce,
        grant,
        None,
        AnswerBody::Request {
            request_id: rec.id.clone(),
            status,
        },
    )
}

#[utoipa::path(get, path = "/v1/peer/requests/{id}", tag = "peer", security(("peer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = SignedAnswerText,
        description = "a SignedPeerAnswer of kind 0x01 (request state), context medgate/v1/request-answer")))]
pub(super) async fn peer_request(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    PeerAuth { peer, nonce, .. }: PeerAuth,
) -> ApiResult<Json<SignedAnswerText>> {
    let (rec, req) = st.0.engine.request(&id).await?;
    if !req.recipient.ct_eq(&peer.recipient) {
        return Err(Error::NotFound(format!("no share request {id} for you")).into());
    }
    Ok(request_answer(&st, &peer, nonce, &rec).await?)
}

/// The grant `id`, in force and issued to `peer` (its whole Recipient).
pub(super) async fn peer_grant(
    st: &ApiState,
    peer: &Peer,
    id: &str,
) -> Result<(crate::engine::GrantRecord, SignedGrant)> {
    let g = st.0.engine.grant_in_force(id).await?;
    let signed = SignedGrant::from_text(&g.grant)?;
    if !signed.grant.recipient.ct_eq(&peer.recipient) {
        return Err(Error::GrantRefused(format!("grant {id} is not yours")));
    }
    Ok((g, signed))
}

/// Whether record version `m` at `bucket`/`key` is one grant `g` lets its recipient read:
/// the patient's, in scope for its time, and wrapped for the recipient.
pub(super) async fn peer_may_read(
    st: &ApiState,
    g: &crate::engine::GrantRecord,
    signed: &SignedGrant,
    bucket: &str,
    key: &str,
    m: &keyring::Manifest,
) -> Result<bool> {
    if m.patient.as_deref() != Some(g.patient_id.as_str())
        || !signed
            .grant
            .scope
            .covers_version(bucket, key, m.last_modified_ms, g.issued_ms)
    {
        return Ok(false);
    }
    let recipient = &signed.grant.recipient;
    Ok(st
        .0
        .engine
        .stanzas(m.dek_id)
        .await?
        .iter()
        .any(|s| s.is_for(recipient)))
}

#[utoipa::path(get, path = "/v1/peer/objects", tag = "peer", security(("peer" = [])),
    params(GrantQuery), responses((status = 200, body = SignedAnswerText,
        description = "a SignedPeerAnswer of kind 0x02 (listing), context medgate/v1/objects-answer")))]
pub(super) async fn peer_objects(
    State(st): State<ApiState>,
    Query(q): Query<GrantQuery>,
    PeerAuth { peer, nonce, .. }: PeerAuth,
) -> ApiResult<Json<SignedAnswerText>> {
    let (g, signed) = peer_grant(&st, &peer, &q.grant).await?;
    let mut objects = Vec::new();
    for (bucket, key, m) in st.0.engine.patient_objects(&g.patient_id).await? {
        if !signed.grant.scope.covers(&bucket, &key) {
            continue;
        }
        if peer_may_read(&st, &g, &signed, &bucket, &key, &m).await? {
            if objects.len() == keyring::peer::MAX_LISTED_OBJECTS {
                return Err(Error::InvalidArgument(format!(
                    "grant {} covers more than {} records, more than one listing may hold",
                    q.grant,
                    keyring::peer::MAX_LISTED_OBJECTS
                ))
                .into());
            }
            objects.push(ListedObject {
                bucket,
                key,
                size: m.size,
                etag: m.etag.clone(),
                last_modified_ms: m.last_modified_ms,
            });
        }
    }
    Ok(st.sign_answer(&peer, nonce, &q.grant, None, AnswerBody::Objects(objects))?)
}

#[utoipa::path(post, path = "/v1/peer/exchange", tag = "peer", security(("peer" = [])),
    request_body = ExchangeRequest,
    responses((status = 200, body = SignedAnswerText,
        description = "a SignedPeerAnswer of kind 0x03 (manifest and the caller's stanza), context medgate/v1/exchange-answer"),
        (status = 403, description = "grant not in force or record not covered")))]
pub(super) async fn peer_exchange(
    State(st): State<ApiState>,
    PeerAuth { peer, nonce, body }: PeerAuth<Bytes>,
) -> ApiResult<Json<SignedAnswerText>> {
    let b: ExchangeRequest = parse_json(&body)?;
    peer_grant(&st, &peer, &b.grant).await?;
    let (m, stanza) =
        st.0.engine
            .exchange(&b.grant, &b.bucket, &b.key, &format!("peer:{}", peer.name))
            .await?;
    Ok(st.sign_answer(
        &peer,
        nonce,
        &b.grant,
        Some((&b.bucket, &b.key)),
        AnswerBody::Exchange {
            manifest: m.encode(),
            stanza: stanza.to_bytes(),
        },
    )?)
}

#[utoipa::path(get, path = "/v1/peer/blob", tag = "peer", security(("peer" = [])),
    params(BlobQuery),
    responses((status = 200, description = "a ChunkAnswer (keyring::peer): the sealed chunk with its leaf and inclusion proof", content_type = "application/octet-stream"),
              (status = 403, description = "grant not in force, record version not covered, or no key for the caller")))]
pub(super) async fn peer_blob(
    State(st): State<ApiState>,
    Query(q): Query<BlobQuery>,
    PeerAuth { peer, .. }: PeerAuth,
) -> ApiResult<Response> {
    let (g, signed) = peer_grant(&st, &peer, &q.grant).await?;
    let engine = &st.0.engine;
    let m = engine
        .stored_manifest(&q.bucket, &q.key)
        .await?
        .ok_or_else(|| Error::NoSuchKey {
            bucket: q.bucket.clone(),
            key: q.key.clone(),
        })?;
    if !peer_may_read(&st, &g, &signed, &q.bucket, &q.key, &m).await? {
        return Err(Error::GrantRefused(format!(
            "{}/{} (this version) is not covered by grant {}, or holds no key for you",
            q.bucket, q.key, q.grant
        ))
        .into());
    }
    let part = m
        .parts
        .iter()
        .find(|p| p.blob.to_hex() == q.blob)
        .ok_or_else(|| Error::GrantRefused("that blob is not part of the record".into()))?;
    let answer = engine.peer_chunk(part, q.chunk).await?;
    Ok(Response::builder()
        .header(axum::http::header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::from(answer.encode()))
        .map_err(|e| Error::Internal(e.to_string()))?)
}
