//! The HTTP API v1 (contract: `openapi.yaml` at the repository root, served at
//! `GET /openapi.yaml`). Handlers only translate HTTP to service calls.

mod admin;
mod annotations;
pub(crate) mod files;
mod media;
mod operations;
mod runs;
mod system;
mod types;

use crate::admission::{self, Admission};
use crate::auth::{self, Authenticator};
use crate::config::RunsConfig;
use crate::problem::Problem;
use crate::ui::{self, Ui};
use annostore_core::service::Service;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post, put};
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    pub metrics: Option<PrometheusHandle>,
    pub auth: Arc<Authenticator>,
    pub admission: Arc<Admission>,
    /// `[runs]`: one-call runs.
    pub runs: Arc<RunsConfig>,
    /// `[ui]`: the web viewer and the media files it plays.
    pub ui: Arc<Ui>,
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.service.limits().max_body_bytes;
    Router::new()
        .route("/v1/types", get(types::list))
        .route("/v1/types/{type}/versions/{version}", put(types::put))
        .route(
            "/v1/operations",
            post(operations::start).get(operations::list),
        )
        .route("/v1/operations/{id}", get(operations::show))
        .route("/v1/operations/{id}/annotations", post(operations::upsert))
        .route("/v1/operations/{id}/finish", post(operations::finish))
        .route("/v1/operations/{id}/cancel", post(operations::cancel))
        // The NDJSON body is taken raw, which `DefaultBodyLimit` does not bound: the
        // handler counts it against `[runs] max_bytes` (the `{"file": ...}` form is JSON
        // and bounded as usual).
        .route("/v1/runs", post(runs::put))
        .route("/v1/annotations/search", post(annotations::search))
        .route("/v1/annotations/aggregate", post(annotations::aggregate))
        .route(
            "/v1/annotations/cooccurrence",
            post(annotations::cooccurrence),
        )
        .route("/v1/annotations/{id}", get(annotations::show))
        .route(
            "/v1/media/{media_id}/annotations",
            get(annotations::of_media),
        )
        .route("/v1/media", get(media::list))
        .route("/v1/media/{media_id}/runs", get(media::runs))
        .route("/v1/media/{media_id}/file", get(media::file))
        .route("/v1/admin/reindex", post(admin::reindex))
        .route("/v1/admin/operations/scan", post(admin::scan))
        .route("/v1/admin/operations/counts", post(admin::counts))
        .route("/v1/admin/operations/end", post(admin::end))
        .route("/v1/admin/operations/{id}/expire", post(admin::expire))
        .route("/v1/admin/rollback", post(admin::rollback))
        .route("/v1/admin/rollforward", post(admin::rollforward))
        .route("/v1/admin/activations", get(admin::activations))
        .route("/v1/admin/gc", get(admin::gc_status).post(admin::gc_run))
        .route("/v1/admin/dead-letters", get(admin::dead_letters))
        .route("/v1/admin/dead-letters/{id}", get(admin::dead_letter))
        .route("/v1/admin/dead-letters/redrive", post(admin::redrive))
        .route("/v1/admin/dead-letters/purge", post(admin::purge))
        .route("/v1/admin/consistency", post(admin::consistency))
        .route("/healthz", get(system::healthz))
        .route("/metrics", get(system::metrics))
        .route("/openapi.yaml", get(system::openapi))
        .merge(ui::routes(&state.ui))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // The last layer added runs first: metrics see every answer, overload is
        // refused before any key is checked, and the key before any body is read.
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(from_fn_with_state(state.clone(), auth::authorize))
        .layer(from_fn_with_state(state.clone(), admission::admit))
        .layer(from_fn(system::record_request))
        .with_state(state)
}

async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "no such route")
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
}
