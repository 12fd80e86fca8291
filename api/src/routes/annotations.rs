//! Reading annotations: search, aggregations, co-occurrence, one by id, and the
//! media-centred listing.

use super::AppState;
use crate::auth::Caller;
use crate::problem::{ApiResult, Json, Path, Query, parse_id};
use annostore_core::Error;
use annostore_core::model::{Annotation, SearchFilter, SearchPage, SearchRequest, TimeRange};
use annostore_core::query::Aggregates;
use annostore_core::service::{AggregateRequest, Cooccurrence, CooccurrenceRequest};
use axum::extract::{Extension, State};
use serde::Deserialize;

pub async fn search(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<SearchRequest>,
) -> ApiResult<Json<SearchPage>> {
    if !matches!(caller, Caller::Open) {
        match req.filter.operation_id {
            Some(id) => caller.may_preview(&state.service.operation(id).await?)?,
            None => caller.may_search_all()?,
        }
    }
    let mut page = state.service.search(&req).await?;
    if req.omit_embeddings {
        for a in &mut page.annotations {
            a.embedding = None;
        }
    }
    Ok(Json(page))
}

pub async fn aggregate(
    State(state): State<AppState>,
    Json(req): Json<AggregateRequest>,
) -> ApiResult<Json<Aggregates>> {
    Ok(Json(state.service.aggregate(&req).await?))
}

pub async fn cooccurrence(
    State(state): State<AppState>,
    Json(req): Json<CooccurrenceRequest>,
) -> ApiResult<Json<Cooccurrence>> {
    Ok(Json(state.service.cooccurrence(&req).await?))
}

pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Annotation>> {
    let id = parse_id(&id, "annotation")?;
    Ok(Json(state.service.annotation(id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaParams {
    #[serde(rename = "type")]
    annotation_type: Option<String>,
    version: Option<u32>,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    label: Option<String>,
    limit: Option<u32>,
    page_token: Option<String>,
}

pub async fn of_media(
    State(state): State<AppState>,
    Path(media_id): Path<String>,
    Query(p): Query<MediaParams>,
) -> ApiResult<Json<SearchPage>> {
    let time_range = match (p.from_ms, p.to_ms) {
        (None, None) => None,
        (from, to) => Some(TimeRange::new(from.unwrap_or(0), to.unwrap_or(i64::MAX))),
    };
    if time_range.is_some_and(|r| r.start_ms < 0) {
        return Err(Error::invalid("from_ms", "must not be negative").into());
    }
    let req = SearchRequest {
        filter: SearchFilter {
            media_id: Some(media_id),
            annotation_type: p.annotation_type,
            annotation_type_version: p.version,
            label: p.label,
            time_range,
            ..Default::default()
        },
        limit: p.limit,
        page_token: p.page_token,
        ..Default::default()
    };
    Ok(Json(state.service.search(&req).await?))
}
