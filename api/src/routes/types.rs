//! Annotation type registration: `PUT /v1/types/{type}/versions/{version}`, `GET /v1/types`.

use super::AppState;
use crate::problem::{ApiResult, Json, Path};
use annostore_core::Error;
use annostore_core::model::{AnnotationType, TypeDefinition};
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

#[derive(Serialize)]
pub struct TypeList {
    types: Vec<AnnotationType>,
}

pub async fn put(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    Json(def): Json<TypeDefinition>,
) -> ApiResult<(StatusCode, Json<AnnotationType>)> {
    let version: u32 = version
        .parse()
        .map_err(|_| Error::invalid("version", "must be a whole number from 1"))?;
    let (ty, created) = state.service.put_type(&name, version, def).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(ty)))
}

pub async fn list(State(state): State<AppState>) -> ApiResult<Json<TypeList>> {
    Ok(Json(TypeList {
        types: state.service.list_types().await?,
    }))
}
