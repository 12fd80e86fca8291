//! Admin routes that keep the engines tidy: garbage collection passes, the retry
//! queue's dead letters, the store-vs-index consistency report, and reindex.

use super::super::AppState;
use crate::problem::{ApiResult, Json, Path, Query, parse_id};
use annostore_core::Error;
use annostore_core::model::OperationFilter;
use annostore_core::service::{Consistency, DeadLetter, GcReport, Purged, Reindexed};
use axum::extract::State;
use serde::{Deserialize, Serialize};
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GcBody {
    #[serde(default)]
    dry_run: bool,
    /// Annotations deleted at most in this pass (default: `[gc] max_annotations_per_pass`).
    max_annotations: Option<usize>,
}

/// Runs one garbage collection pass now, with the server's retention.
pub async fn gc_run(
    State(state): State<AppState>,
    Json(body): Json<GcBody>,
) -> ApiResult<Json<GcReport>> {
    let mut options = state.service.gc_options();
    options.dry_run = body.dry_run;
    if let Some(max) = body.max_annotations {
        options.max_annotations = max;
    }
    Ok(Json(state.service.collect_garbage(&options).await?))
}

#[derive(Serialize)]
pub struct GcStatus {
    superseded_retention_seconds: u64,
    ended_retention_seconds: u64,
    max_annotations_per_pass: usize,
    /// The last pass this server ran (background or asked for), if any.
    last: Option<GcReport>,
}

pub async fn gc_status(State(state): State<AppState>) -> ApiResult<Json<GcStatus>> {
    let options = state.service.gc_options();
    Ok(Json(GcStatus {
        superseded_retention_seconds: options.retention.superseded.as_secs(),
        ended_retention_seconds: options.retention.ended.as_secs(),
        max_annotations_per_pass: options.max_annotations,
        last: state.service.last_gc(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterParams {
    limit: Option<usize>,
}

#[derive(Serialize)]
pub struct DeadLetters {
    dead_letters: Vec<DeadLetter>,
    /// How many there are in all.
    total: u64,
}

pub async fn dead_letters(
    State(state): State<AppState>,
    Query(p): Query<DeadLetterParams>,
) -> ApiResult<Json<DeadLetters>> {
    let (dead_letters, total) = state.service.dead_letters(p.limit.unwrap_or(100)).await?;
    Ok(Json(DeadLetters {
        dead_letters,
        total,
    }))
}

pub async fn dead_letter(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<DeadLetter>> {
    let id = parse_id(&id, "dead letter")?;
    Ok(Json(state.service.dead_letter(id).await?))
}

/// Which dead letters: these work ids, or all of them (one of the two, explicitly).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Which {
    work_ids: Option<Vec<Uuid>>,
    #[serde(default)]
    all: bool,
}

impl Which {
    fn ids(&self) -> Result<Option<&[Uuid]>, Error> {
        match (&self.work_ids, self.all) {
            (Some(ids), false) if !ids.is_empty() => Ok(Some(ids)),
            (None, true) => Ok(None),
            _ => Err(Error::invalid(
                "work_ids",
                "give a non-empty work_ids, or all: true (not both)",
            )),
        }
    }
}

#[derive(Serialize)]
pub struct Redriven {
    redriven: u64,
}

pub async fn redrive(
    State(state): State<AppState>,
    Json(which): Json<Which>,
) -> ApiResult<Json<Redriven>> {
    let redriven = state.service.redrive_dead_letters(which.ids()?).await?;
    Ok(Json(Redriven { redriven }))
}

pub async fn purge(
    State(state): State<AppState>,
    Json(which): Json<Which>,
) -> ApiResult<Json<Purged>> {
    Ok(Json(state.service.purge_dead_letters(which.ids()?).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyBody {
    #[serde(default)]
    filter: OperationFilter,
    /// Operations checked at most (newest first); default 1,000.
    limit: Option<usize>,
    /// Rebuild the index entries of every run that disagrees.
    #[serde(default)]
    repair: bool,
    /// List only the runs that disagree.
    #[serde(default)]
    only_disagreeing: bool,
}

pub async fn consistency(
    State(state): State<AppState>,
    Json(body): Json<ConsistencyBody>,
) -> ApiResult<Json<Consistency>> {
    Ok(Json(
        state
            .service
            .consistency(
                &body.filter,
                body.limit.unwrap_or(1_000),
                body.repair,
                body.only_disagreeing,
            )
            .await?,
    ))
}
