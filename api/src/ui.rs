//! The web viewer at `/ui/`: the page `ui/` builds (embedded by `build.rs`, or read from
//! the directory `ANNOSTORE_UI_DIST` names, for working on the page), `GET
//! /ui/config.json`, and the headers every answer under `/ui` carries: a
//! Content-Security-Policy that allows only this server (and the media origin of `[ui]
//! media_url_template`), `nosniff`, an `ETag`, and caching (hashed assets forever, the
//! rest revalidated). No key is needed: the page holds no data and asks for a key itself.

use crate::config::UiConfig;
use crate::problem::Problem;
use crate::routes::AppState;
use crate::routes::files;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::map_response;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::path::PathBuf;
use tracing::{info, warn};

/// The page, built into `$OUT_DIR/ui` by `build.rs`.
#[derive(rust_embed::Embed)]
#[folder = "$OUT_DIR/ui"]
struct Embedded;

/// Where the page's files come from, and what every answer under `/ui` says.
pub struct Ui {
    pub config: UiConfig,
    /// `ANNOSTORE_UI_DIST`: serve the page from this directory instead of the binary.
    dist: Option<PathBuf>,
    csp: HeaderValue,
}

/// One file of the page.
struct File {
    bytes: Cow<'static, [u8]>,
    etag: String,
    content_type: String,
}

impl Ui {
    /// From `[ui]` (checked first: see [`UiConfig::validate`]) and the environment.
    pub fn new(config: UiConfig) -> anyhow::Result<Ui> {
        config.validate().map_err(anyhow::Error::msg)?;
        let dist = std::env::var_os("ANNOSTORE_UI_DIST")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from);
        if let Some(dir) = &dist {
            info!(dir = %dir.display(), "serving the web viewer from disk (ANNOSTORE_UI_DIST)");
        }
        let media_src = match config.media_origin() {
            Some(origin) => format!("'self' {origin}"),
            None => "'self'".to_owned(),
        };
        let csp = HeaderValue::try_from(format!(
            "default-src 'self'; img-src 'self' data: blob:; media-src {media_src}; \
             style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
        ))?;
        Ok(Ui { config, dist, csp })
    }

    async fn file(&self, path: &str) -> Option<File> {
        match &self.dist {
            None => {
                let f = Embedded::get(path)?;
                Some(File {
                    etag: etag(&f.metadata.sha256_hash()),
                    content_type: with_charset(f.metadata.mimetype()),
                    bytes: f.data,
                })
            }
            Some(dir) => {
                let opened = match files::open(Some(dir), "ANNOSTORE_UI_DIST", path).await {
                    Ok(opened) => opened,
                    Err(e) => {
                        if !matches!(e, files::FileError::NotFound(_)) {
                            warn!(error = %e, "a file of the web viewer cannot be read");
                        }
                        return None;
                    }
                };
                let bytes = tokio::fs::read(opened.reopen_path()).await.ok()?;
                let mime = mime_guess::from_path(&opened.path).first_or_octet_stream();
                Some(File {
                    etag: etag(&Sha256::digest(&bytes).into()),
                    content_type: with_charset(mime.essence_str()),
                    bytes: Cow::Owned(bytes),
                })
            }
        }
    }
}

/// The routes under `/ui` (none when `[ui] enabled = false`).
pub fn routes(ui: &Ui) -> Router<AppState> {
    if !ui.config.enabled {
        return Router::new();
    }
    Router::new()
        .route("/ui", get(redirect))
        .route("/ui/", get(index))
        .route("/ui/config.json", get(config))
        .route("/ui/{*path}", get(asset))
        .route_layer(map_response(headers))
}

/// Headers of every answer under `/ui`.
async fn headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// `GET /ui`: the page lives at `/ui/` (its assets are relative to it).
async fn redirect(req: Request) -> Response {
    let location = match req.uri().query() {
        Some(q) => format!("/ui/?{q}"),
        None => "/ui/".to_owned(),
    };
    match HeaderValue::try_from(location) {
        Ok(location) => (
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response(),
        Err(_) => Problem::new(StatusCode::BAD_REQUEST, "malformed query").into_response(),
    }
}

async fn index(State(state): State<AppState>, headers: HeaderMap) -> Response {
    serve(&state.ui, "index.html", &headers).await
}

async fn asset(
    State(state): State<AppState>,
    axum::extract::Path(path): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    serve(&state.ui, &path, &headers).await
}

async fn serve(ui: &Ui, path: &str, request: &HeaderMap) -> Response {
    let Some(file) = ui.file(path).await else {
        let mut resp = Problem::new(
            StatusCode::NOT_FOUND,
            format!("the web viewer has no file {path:?}"),
        )
        .into_response();
        resp.headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, ui.csp.clone());
        return resp;
    };
    // Vite names what it builds into assets/ by a hash of the content.
    let cache = if path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|t| t.trim() == file.etag || t.trim() == "*")
        });
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(header::CONTENT_SECURITY_POLICY, ui.csp.clone());
    if let Ok(etag) = HeaderValue::try_from(&file.etag) {
        headers.insert(header::ETAG, etag);
    }
    if fresh {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    if let Ok(ct) = HeaderValue::try_from(&file.content_type) {
        headers.insert(header::CONTENT_TYPE, ct);
    }
    let body = match file.bytes {
        Cow::Borrowed(b) => Body::from(Bytes::from_static(b)),
        Cow::Owned(v) => Body::from(v),
    };
    (headers, body).into_response()
}

/// `GET /ui/config.json`: what the page needs to know of this server.
async fn config(State(state): State<AppState>) -> Response {
    let c = &state.ui.config;
    let body = serde_json::json!({
        "auth": if state.auth.enforcing() { "keys" } else { "open" },
        "media_url_template": c.media_url_template,
        "media_files": c.media_root.is_some(),
        "poll_seconds": c.poll_seconds,
        "version": env!("CARGO_PKG_VERSION"),
    });
    let mut resp = axum::Json(body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, state.ui.csp.clone());
    resp
}

fn etag(sha256: &[u8; 32]) -> String {
    let hex: String = sha256[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// Text types are UTF-8 (Vite writes UTF-8).
fn with_charset(mime: &str) -> String {
    let text = mime.starts_with("text/")
        || matches!(
            mime,
            "application/javascript" | "application/json" | "image/svg+xml"
        );
    if text && !mime.contains("charset") {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_owned()
    }
}

/// The page is built in (or `ANNOSTORE_UI_DIST` holds one): checked at start-up so a
/// binary without it says so at once.
pub fn check(ui: &Ui) -> anyhow::Result<()> {
    if !ui.config.enabled {
        return Ok(());
    }
    match &ui.dist {
        None if Embedded::get("index.html").is_none() => {
            anyhow::bail!("this binary was built without the web viewer's index.html")
        }
        Some(dir) if !dir.join("index.html").is_file() => anyhow::bail!(
            "ANNOSTORE_UI_DIST={} holds no index.html (run `npm run build` in ui/)",
            dir.display()
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_page_has_an_index_and_hashed_assets() {
        let index = Embedded::get("index.html").expect("index.html is embedded");
        let html = String::from_utf8_lossy(&index.data);
        assert!(html.contains("/ui/assets/"), "{html}");
        assert!(Embedded::iter().any(|p| p.starts_with("assets/")));
    }

    #[test]
    fn text_types_say_utf_8() {
        assert_eq!(with_charset("text/html"), "text/html; charset=utf-8");
        assert_eq!(
            with_charset("text/javascript"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(with_charset("image/png"), "image/png");
    }

    #[test]
    fn the_policy_names_the_media_origin_of_the_template() {
        let ui = |t: Option<&str>| {
            Ui::new(UiConfig {
                media_url_template: t.map(str::to_owned),
                ..UiConfig::default()
            })
        };
        let csp = ui(Some("https://cdn.example:8443/v/{media_id}"))
            .unwrap()
            .csp;
        assert!(
            csp.to_str()
                .unwrap()
                .contains("media-src 'self' https://cdn.example:8443;"),
            "{csp:?}"
        );
        let csp = ui(None).unwrap().csp;
        assert!(
            csp.to_str().unwrap().contains("media-src 'self';"),
            "{csp:?}"
        );
        assert!(ui(Some("nope")).is_err());
    }
}
