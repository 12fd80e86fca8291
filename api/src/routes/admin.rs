//! Repair: rebuild index entries from the store.

use super::AppState;
use crate::problem::{ApiResult, Json};
use annostore_core::service::Reindexed;
use axum::extract::State;
use serde::Deserialize;
use uuid::Uuid;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReindexRequest {
    /// One operation; absent: every STARTED and FINISHED operation.
    operation_id: Option<Uuid>,
}

pub async fn reindex(
    State(state): State<AppState>,
    Json(req): Json<ReindexRequest>,
) -> ApiResult<Json<Reindexed>> {
    Ok(Json(state.service.reindex(req.operation_id).await?))
}
