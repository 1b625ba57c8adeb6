//! The admin routes (Bearer admin token): patients, share requests, grants, access keys,
//! events, verify and mounts; most call the admin socket's dispatcher.

use super::*;

#[utoipa::path(get, path = "/v1/admin/patients", tag = "admin", security(("admin" = [])),
    responses((status = 200, body = Answer, description = "`patients`")))]
pub(super) async fn admin_patients(
    State(st): State<ApiState>,
    _: AdminAuth,
) -> ApiResult<Json<AdminResponse>> {
    st.admin_call(AdminRequest::PatientList).await
}

#[utoipa::path(post, path = "/v1/admin/patients", tag = "admin", security(("admin" = [])),
    request_body = RegisterBody, responses((status = 200, body = Answer, description = "`patient`")))]
pub(super) async fn admin_register(
    State(st): State<ApiState>,
    AdminAuth { body }: AdminAuth<Bytes>,
) -> ApiResult<Json<AdminResponse>> {
    let b: RegisterBody = parse_json(&body)?;
    st.admin_call(AdminRequest::PatientRegister {
        id: b.id,
        recipient: b.recipient,
        proof: b.proof,
    })
    .await
}

#[utoipa::path(get, path = "/v1/admin/patients/{id}", tag = "admin", security(("admin" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Answer, description = "`patient`")))]
pub(super) async fn admin_patient(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    _: AdminAuth,
) -> ApiResult<Json<AdminResponse>> {
    st.admin_call(AdminRequest::PatientShow { id }).await
}

#[utoipa::path(post, path = "/v1/admin/patients/{id}/break-glass", tag = "admin", security(("admin" = [])),
    params(("id" = String, Path)), request_body = BreakGlassBody,
    responses((status = 200, body = Answer, description = "`done`"), (status = 403, description = "the proof does not verify")))]
pub(super) async fn admin_break_glass(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    AdminAuth { body }: AdminAuth<Bytes>,
) -> ApiResult<Json<AdminResponse>> {
    let b: BreakGlassBody = parse_json(&body)?;
    st.admin_call(AdminRequest::PatientBreakGlass {
        id,
        recipient: b.recipient,
        proof: b.proof,
        reason: b.reason,
        admin: b.admin,
    })
    .await
}

#[utoipa::path(get, path = "/v1/admin/requests", tag = "admin", security(("admin" = [])),
    params(PatientFilter), responses((status = 200, body = Answer, description = "`requests`")))]
pub(super) async fn admin_requests(
    State(st): State<ApiState>,
    Query(q): Query<PatientFilter>,
    _: AdminAuth,
) -> ApiResult<Json<AdminResponse>> {
    st.admin_call(AdminRequest::Requests { patient: q.patient })
        .await
}

#[utoipa::path(post, path = "/v1/admin/requests", tag = "admin", security(("admin" = [])),
    request_body = NewShareRequest, responses((status = 200, body = Answer, description = "`request`")))]
pub(super) async fn admin_new_request(
    State(st): State<ApiState>,
    AdminAuth { body }: AdminAuth<Bytes>,
) -> ApiResult<Json<AdminResponse>> {
    let b: NewShareRequest = parse_json(&body)?;
    st.admin_call(AdminRequest::ShareRequest(Box::new(b))).await
}

#[utoipa::path(get, path = "/v1/admin/requests/{id}", tag = "admin", security(("admin" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Answer, description = "`request`")))]
pub(super) async fn admin_request(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    _: AdminAuth,
) -> ApiResult<Json<AdminResponse>> {
    st.admin_call(AdminRequest::RequestGet { id }).await
}

#[utoipa::path(get, path = "/v1/admin/grants", tag = "admin", security(("admin" = [])),
    params(PatientFilter), responses((status = 200, body = Answer, description = "`grants`")))]
pub(super) async fn admin_grants(
    State(st): State<ApiState>,
    Query(q): Query<PatientFilter>,
    _: AdminAuth,
) -> ApiResult<Json<AdminResponse>> {
    st.admin_call(AdminRequest::Grants { patient: q.patient })
        .await
}

#[utoipa::path(get, path = "/v1/admin/access-keys", tag = "admin", security(("admin" = [])),
    responses((status = 200, body = Answer, description = "`access-keys` (ids and buckets, never secrets)")))]
pub(super) async fn admin_access_keys(
    State(st): State<ApiState>,
    _: AdminAuth,
) -> ApiResult<Json<AdminResponse>> {
    st.admin_call(AdminRequest::AccessKeyList).await
}

#[utoipa::path(post, path = "/v1/admin/access-keys", tag = "admin", security(("admin" = [])),
    request_body = AccessKeyBody,
    responses((status = 200, body = Answer, description = "`access-key-created`, with the secret, shown once")))]
pub(super) async fn admin_new_access_key(
    State(st): State<ApiState>,
    AdminAuth { body }: AdminAuth<Bytes>,
) -> ApiResult<Json<AdminResponse>> {
    let b: AccessKeyBody = if body.is_empty() {
        AccessKeyBody {
            buckets: Vec::new(),
            label_patients: false,
        }
    } else {
        parse_json(&body)?
    };
    st.admin_call(AdminRequest::AccessKeyCreate {
        buckets: b.buckets,
        label_patients: b.label_patients,
    })
    .await
}

#[utoipa::path(delete, path = "/v1/admin/access-keys/{id}", tag = "admin", security(("admin" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Answer, description = "`deleted`")))]
pub(super) async fn admin_delete_access_key(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    _: AdminAuth,
) -> ApiResult<Json<AdminResponse>> {
    st.admin_call(AdminRequest::AccessKeyDelete { id }).await
}

#[utoipa::path(get, path = "/v1/admin/events", tag = "admin", security(("admin" = [])),
    params(EventsQuery), responses((status = 200, body = Answer, description = "`events`")))]
pub(super) async fn admin_events(
    State(st): State<ApiState>,
    Query(q): Query<EventsQuery>,
    _: AdminAuth,
) -> ApiResult<Json<AdminResponse>> {
    st.admin_call(AdminRequest::Events {
        from: q.from,
        limit: q.limit.unwrap_or(1000),
        patient: q.patient,
    })
    .await
}

#[utoipa::path(post, path = "/v1/admin/verify", tag = "admin", security(("admin" = [])),
    request_body = VerifyBody, responses((status = 200, body = Answer, description = "`verified`, with the problems found")))]
pub(super) async fn admin_verify(
    State(st): State<ApiState>,
    AdminAuth { body }: AdminAuth<Bytes>,
) -> ApiResult<Json<AdminResponse>> {
    let deep = if body.is_empty() {
        false
    } else {
        parse_json::<VerifyBody>(&body)?.deep
    };
    st.admin_call(AdminRequest::Verify { deep }).await
}

pub(super) fn remote(st: &ApiState) -> Result<&Arc<Remote>> {
    st.0.remote
        .as_ref()
        .ok_or_else(|| Error::InvalidArgument("this gateway has no [[peers]] with a url".into()))
}

#[utoipa::path(get, path = "/v1/admin/mounts", tag = "admin", security(("admin" = [])),
    responses((status = 200, body = MountsAnswer)))]
pub(super) async fn admin_mounts(
    State(st): State<ApiState>,
    _: AdminAuth,
) -> ApiResult<Json<MountsAnswer>> {
    let mounts = match &st.0.remote {
        Some(r) => r.mounts_with_state().await,
        None => Vec::new(),
    };
    Ok(Json(MountsAnswer {
        status: "mounts".into(),
        mounts,
    }))
}

#[utoipa::path(post, path = "/v1/admin/mounts", tag = "admin", security(("admin" = [])),
    request_body = MountBody, responses((status = 200, body = MountsAnswer)))]
pub(super) async fn admin_mount(
    State(st): State<ApiState>,
    AdminAuth { body }: AdminAuth<Bytes>,
) -> ApiResult<Json<MountsAnswer>> {
    let b: MountBody = parse_json(&body)?;
    let m = remote(&st)?.ask(&b.peer, &b.bucket, &b.request).await?;
    Ok(Json(MountsAnswer {
        status: "mounts".into(),
        mounts: vec![m],
    }))
}
