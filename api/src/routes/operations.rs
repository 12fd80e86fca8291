//! Operations: start, list, show, upsert annotations, finish, cancel.

use super::AppState;
use crate::auth::Caller;
use crate::problem::{ApiResult, Json, Path, Query, parse_id};
use annostore_core::Error;
use annostore_core::model::{
    Operation, OperationFilter, OperationStatus, ScanOrder, StartOperation,
};
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

pub async fn start(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(mut req): Json<StartOperation>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    req.producer = caller.key_id();
    let op = state.service.start(req).await?;
    Ok((StatusCode::CREATED, Json(op)))
}

pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Operation>> {
    let id = parse_id(&id, "operation")?;
    Ok(Json(state.service.operation(id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    status: Option<String>,
    annotation_type: Option<String>,
    annotation_type_version: Option<u32>,
    pivot_id: Option<String>,
    started_before: Option<String>,
    limit: Option<u32>,
    page_token: Option<String>,
}

#[derive(Serialize)]
pub struct OperationPage {
    operations: Vec<Operation>,
    next_page_token: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<OperationPage>> {
    let status = p
        .status
        .as_deref()
        .map(|s| {
            OperationStatus::parse(s).ok_or_else(|| {
                Error::BadRequest(
                    "status must be one of STARTED, FINISHED, CANCELLED, EXPIRED".into(),
                )
            })
        })
        .transpose()?;
    let started_before = p
        .started_before
        .as_deref()
        .map(|s| {
            OffsetDateTime::parse(s, &Rfc3339)
                .map_err(|_| Error::BadRequest("started_before must be an RFC 3339 time".into()))
        })
        .transpose()?;
    let filter = OperationFilter {
        status,
        annotation_type: p.annotation_type,
        annotation_type_version: p.annotation_type_version,
        pivot_id: p.pivot_id,
        started_before,
        ..OperationFilter::default()
    };
    let (operations, next_page_token) = state
        .service
        .list_operations(
            &filter,
            ScanOrder::NewestFirst,
            p.limit,
            p.page_token.as_deref(),
        )
        .await?;
    Ok(Json(OperationPage {
        operations,
        next_page_token,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpsertBody {
    annotations: Vec<Value>,
}

#[derive(Serialize)]
pub struct Upserted {
    upserted: usize,
}

pub async fn upsert(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Json(body): Json<UpsertBody>,
) -> ApiResult<Json<Upserted>> {
    let id = managed(&state, &caller, &id).await?;
    let upserted = state.service.upsert(id, &body.annotations).await?;
    Ok(Json(Upserted { upserted }))
}

pub async fn finish(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Operation>> {
    let id = managed(&state, &caller, &id).await?;
    Ok(Json(state.service.finish(id).await?))
}

pub async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Operation>> {
    let id = managed(&state, &caller, &id).await?;
    Ok(Json(state.service.cancel(id).await?))
}

/// The operation `raw` names, once the caller is known to be allowed to change it.
async fn managed(state: &AppState, caller: &Caller, raw: &str) -> ApiResult<Uuid> {
    let id = parse_id(raw, "operation")?;
    if !matches!(caller, Caller::Open) {
        caller.may_manage(&state.service.operation(id).await?)?;
    }
    Ok(id)
}
