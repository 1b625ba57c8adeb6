//! The public log routes: checkpoints, inclusion and consistency proofs, witness
//! cosignatures, and the institution's key rollovers.

use super::*;

/// The institution's key rollovers (public: each is signed by the key it replaces and by the
/// new one, so a peer that pinned the old key checks it and re-pins).
#[utoipa::path(get, path = "/v1/peer/rollover", tag = "peer",
    responses((status = 200, body = RolloverAnswer)))]
pub(super) async fn peer_rollover(State(st): State<ApiState>) -> ApiResult<Json<RolloverAnswer>> {
    let rollovers =
        st.0.engine
            .published_rollovers()
            .await?
            .iter()
            .map(|r| r.to_text())
            .collect();
    Ok(Json(RolloverAnswer { rollovers }))
}

#[utoipa::path(get, path = "/v1/log/checkpoint", tag = "log",
    responses((status = 200, body = CheckpointAnswer), (status = 404, description = "nothing published yet")))]
pub(super) async fn log_checkpoint(
    State(st): State<ApiState>,
) -> ApiResult<Json<CheckpointAnswer>> {
    let (size, note) =
        st.0.engine
            .latest_checkpoint()
            .await?
            .ok_or_else(|| Error::NotFound("no checkpoint published yet".into()))?;
    Ok(Json(CheckpointAnswer { size, note }))
}

pub(super) async fn check_size(engine: &Engine, size: u64) -> Result<()> {
    let have = engine.log_size().await?;
    if size == 0 || size > have {
        return Err(Error::InvalidArgument(format!(
            "tree size {size} is not in 1..={have}"
        )));
    }
    Ok(())
}

#[utoipa::path(get, path = "/v1/log/proofs/inclusion", tag = "log", params(InclusionQuery),
    responses((status = 200, body = ProofAnswer)))]
pub(super) async fn log_inclusion(
    State(st): State<ApiState>,
    Query(q): Query<InclusionQuery>,
) -> ApiResult<Json<ProofAnswer>> {
    check_size(&st.0.engine, q.size).await?;
    if q.index >= q.size {
        return Err(Error::InvalidArgument(format!(
            "index {} is not below size {}",
            q.index, q.size
        ))
        .into());
    }
    let proof = st.0.engine.inclusion_proof(q.index, q.size).await?;
    Ok(Json(ProofAnswer {
        hashes: proof.hashes().map(hex::encode).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/log/proofs/consistency", tag = "log", params(ConsistencyQuery),
    responses((status = 200, body = ProofAnswer)))]
pub(super) async fn log_consistency(
    State(st): State<ApiState>,
    Query(q): Query<ConsistencyQuery>,
) -> ApiResult<Json<ProofAnswer>> {
    check_size(&st.0.engine, q.to).await?;
    if q.from > q.to {
        return Err(Error::InvalidArgument(format!("from {} is above to {}", q.from, q.to)).into());
    }
    let proof = st.0.engine.consistency_proof(q.from, q.to).await?;
    Ok(Json(ProofAnswer {
        hashes: proof.hashes().map(hex::encode).collect(),
    }))
}

/// `POST /v1/log/cosignatures`: the latest checkpoint, cosigned by a witness.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct CosignBody {
    /// The signed note with the witness's cosignature line added.
    pub note: String,
}

#[utoipa::path(post, path = "/v1/log/cosignatures", tag = "log", request_body = CosignBody,
    responses((status = 200, body = Answer, description = "`done`: the cosignature is published with the checkpoint"),
              (status = 403, description = "not a configured witness's valid cosignature of the latest checkpoint")))]
pub(super) async fn log_cosign(
    State(st): State<ApiState>,
    body: Bytes,
) -> ApiResult<Json<AdminResponse>> {
    // No caller authentication: the cosignature itself is checked against the peers' keys.
    let b: CosignBody = parse_json(&body)?;
    let witnesses: Vec<Recipient> = st.0.peers.iter().map(|p| p.recipient.clone()).collect();
    let engine = &st.0.engine;
    let who = engine.add_cosignature(&witnesses, &b.note).await?;
    Ok(Json(AdminResponse::Done {
        message: format!("cosignature by {} published", st.0.peers[who].name),
    }))
}
