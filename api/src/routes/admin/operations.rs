//! Admin routes over operations: scan, counts per status, bulk cancel/expire,
//! rollback, roll forward and the activation history of a key.

use super::super::AppState;
use super::seconds_ago;
use crate::auth::Caller;
use crate::problem::{ApiResult, Json, Path, Query, parse_id};
use annostore_core::model::{
    Activation, ActivationReason, Operation, OperationFilter, OperationKey, ScanOrder,
};
use annostore_core::service::{Activated, EndAction, EndReport, StatusCounts};
use axum::extract::{Extension, State};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// Conditions shared by scans, counts and bulk ends: the filter, plus ages relative
/// to now.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    #[serde(default)]
    filter: OperationFilter,
    /// Started more than this many seconds ago.
    older_than_seconds: Option<u64>,
    /// Not changed (no upsert, for a STARTED run) for this many seconds.
    idle_seconds: Option<u64>,
}

impl Selection {
    fn filter(self, now: OffsetDateTime) -> ApiResult<OperationFilter> {
        let mut filter = self.filter;
        if let Some(s) = self.older_than_seconds {
            let t = seconds_ago(now, s, "older_than_seconds")?;
            filter.started_before = Some(filter.started_before.map_or(t, |b| b.min(t)));
        }
        if let Some(s) = self.idle_seconds {
            let t = seconds_ago(now, s, "idle_seconds")?;
            filter.updated_before = Some(filter.updated_before.map_or(t, |b| b.min(t)));
        }
        Ok(filter)
    }
}

/// A scan's or a bulk end's filter with its ages (bodies that carry the selection's
/// fields beside their own).
fn select(
    filter: OperationFilter,
    older_than_seconds: Option<u64>,
    idle_seconds: Option<u64>,
) -> ApiResult<OperationFilter> {
    Selection {
        filter,
        older_than_seconds,
        idle_seconds,
    }
    .filter(OffsetDateTime::now_utc())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanBody {
    #[serde(default)]
    filter: OperationFilter,
    older_than_seconds: Option<u64>,
    idle_seconds: Option<u64>,
    #[serde(default)]
    order: ScanOrder,
    limit: Option<u32>,
    page_token: Option<String>,
}

#[derive(Serialize)]
pub struct ScanPage {
    operations: Vec<Operation>,
    next_page_token: Option<String>,
}

pub async fn scan(
    State(state): State<AppState>,
    Json(body): Json<ScanBody>,
) -> ApiResult<Json<ScanPage>> {
    let filter = select(body.filter, body.older_than_seconds, body.idle_seconds)?;
    let (operations, next_page_token) = state
        .service
        .list_operations(&filter, body.order, body.limit, body.page_token.as_deref())
        .await?;
    Ok(Json(ScanPage {
        operations,
        next_page_token,
    }))
}

pub async fn counts(
    State(state): State<AppState>,
    Json(body): Json<Selection>,
) -> ApiResult<Json<StatusCounts>> {
    let filter = body.filter(OffsetDateTime::now_utc())?;
    Ok(Json(state.service.count_operations(&filter).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndBody {
    #[serde(default)]
    filter: OperationFilter,
    older_than_seconds: Option<u64>,
    idle_seconds: Option<u64>,
    action: EndAction,
    #[serde(default)]
    dry_run: bool,
    limit: Option<usize>,
}

/// Runs one bulk end handles by default.
const DEFAULT_END_LIMIT: usize = 1_000;

pub async fn end(
    State(state): State<AppState>,
    Json(body): Json<EndBody>,
) -> ApiResult<Json<EndReport>> {
    let filter = select(body.filter, body.older_than_seconds, body.idle_seconds)?;
    let limit = body.limit.unwrap_or(DEFAULT_END_LIMIT);
    Ok(Json(
        state
            .service
            .end_operations(&filter, body.action, body.dry_run, limit)
            .await?,
    ))
}

/// Expires one STARTED run now, whatever its lease.
pub async fn expire(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Operation>> {
    let id = parse_id(&id, "operation")?;
    Ok(Json(state.service.force_expire(id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveBody {
    annotation_type: String,
    annotation_type_version: u32,
    pivot_id: String,
    /// The run to make active; by default the next FINISHED one in that direction.
    to: Option<Uuid>,
}

impl MoveBody {
    fn key(&self) -> OperationKey {
        OperationKey {
            annotation_type: self.annotation_type.clone(),
            annotation_type_version: self.annotation_type_version,
            pivot_id: self.pivot_id.clone(),
        }
    }
}

pub async fn rollback(
    state: State<AppState>,
    caller: Extension<Caller>,
    body: Json<MoveBody>,
) -> ApiResult<Json<Activated>> {
    move_active(state, caller, body, ActivationReason::Rollback).await
}

pub async fn rollforward(
    state: State<AppState>,
    caller: Extension<Caller>,
    body: Json<MoveBody>,
) -> ApiResult<Json<Activated>> {
    move_active(state, caller, body, ActivationReason::RollForward).await
}

async fn move_active(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(body): Json<MoveBody>,
    reason: ActivationReason,
) -> ApiResult<Json<Activated>> {
    Ok(Json(
        state
            .service
            .move_active(&body.key(), body.to, reason, caller.key_id())
            .await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    annotation_type: String,
    annotation_type_version: u32,
    pivot_id: String,
    limit: Option<u32>,
}

#[derive(Serialize)]
pub struct History {
    activations: Vec<Activation>,
}

pub async fn activations(
    State(state): State<AppState>,
    Query(p): Query<HistoryParams>,
) -> ApiResult<Json<History>> {
    let key = OperationKey {
        annotation_type: p.annotation_type,
        annotation_type_version: p.annotation_type_version,
        pivot_id: p.pivot_id,
    };
    Ok(Json(History {
        activations: state.service.activations(&key, p.limit).await?,
    }))
}
