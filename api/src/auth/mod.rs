//! Who is calling, and may they: API keys with roles, checked in front of every route.
//!
//! With no keys configured the API is open (and `serve` then listens on loopback only
//! unless told `--insecure`). Once the keys file has a key, every route but `/healthz`,
//! `/openapi.yaml` and the web viewer's page (`/ui`) needs one (`Authorization: Bearer
//! <key>` or `X-Api-Key`; `GET /v1/media/{media_id}/file` also takes it from the cookie
//! `annostore_key`, since a `<video>` cannot send headers).
//! The keys file is re-read when it changes, so `annostore keys revoke` takes effect on
//! the next request. A key's secret is checked against its argon2id hash once; after
//! that the server compares a SHA-256 of the whole key in constant time.

pub mod command;
pub mod keys;
mod roles;

pub use keys::Role;
pub use roles::{Caller, Need, need};

use crate::problem::Problem;
use crate::routes::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keys::{KeyEntry, KeyFile, Token};
use parking_lot::RwLock;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use tracing::{error, info, warn};

/// A key that passed its argon2id check: who it is, and the digest of the whole key.
#[derive(Debug, Clone)]
pub struct Principal {
    pub id: String,
    pub name: String,
    pub role: Role,
}

/// What identifies a version of the keys file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

#[derive(Default)]
struct Loaded {
    /// The file was read (or found missing) at least once; `stamp` is its state then.
    read_once: bool,
    stamp: Option<Stamp>,
    /// Every key in the file, revoked ones too (a file with only revoked keys still
    /// means "keys are required").
    keys: HashMap<String, KeyEntry>,
    /// The file could not be read: nobody gets in until it can.
    broken: bool,
    /// SHA-256 of the whole key, per key id, for keys whose secret verified.
    verified: HashMap<String, [u8; 32]>,
}

pub struct Authenticator {
    path: PathBuf,
    /// Keys are needed even while the file has none (a non-loopback listen address).
    required: bool,
    loaded: RwLock<Loaded>,
    /// argon2id is slow on purpose; at most this many checks run at once, so guessing
    /// secrets cannot take every core.
    hashing: Semaphore,
}

/// Why a request is refused.
pub enum Refusal {
    Unauthenticated(&'static str),
    Forbidden(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Unauthenticated(why) => {
                let mut resp = Problem::new(StatusCode::UNAUTHORIZED, why).into_response();
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"annostore\""),
                );
                resp
            }
            Refusal::Forbidden(why) => Problem::new(StatusCode::FORBIDDEN, why).into_response(),
        }
    }
}

impl Authenticator {
    pub fn new(path: PathBuf, required: bool) -> Authenticator {
        let auth = Authenticator {
            path,
            required,
            loaded: RwLock::new(Loaded::default()),
            hashing: Semaphore::new(2),
        };
        auth.refresh();
        auth
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when requests must carry a key (now).
    pub fn enforcing(&self) -> bool {
        self.refresh();
        let l = self.loaded.read();
        self.required || l.broken || !l.keys.is_empty()
    }

    /// Re-reads the keys file if it changed since it was last read.
    fn refresh(&self) {
        let stamp = stamp(&self.path);
        let unchanged = |l: &Loaded| l.read_once && l.stamp == stamp;
        if unchanged(&self.loaded.read()) {
            return;
        }
        let mut l = self.loaded.write();
        if unchanged(&l) {
            return;
        }
        match KeyFile::load(&self.path) {
            Ok(file) => {
                let keys: HashMap<_, _> =
                    file.keys.into_iter().map(|k| (k.id.clone(), k)).collect();
                let before = std::mem::take(&mut l.verified);
                l.verified = before
                    .into_iter()
                    .filter(|(id, _)| keys.get(id).is_some_and(|k| k.active()))
                    .collect();
                if l.broken || l.keys.len() != keys.len() || l.stamp.is_some() {
                    info!(path = %self.path.display(), keys = keys.len(), "API keys loaded");
                }
                l.keys = keys;
                l.broken = false;
            }
            Err(e) => {
                error!(error = %e, "cannot read the API keys file: refusing every request until it can be read");
                l.keys.clear();
                l.verified.clear();
                l.broken = true;
            }
        }
        l.stamp = stamp;
        l.read_once = true;
    }

    /// The caller a request's credentials name.
    pub async fn caller(&self, presented: Option<&str>) -> Result<Caller, Refusal> {
        if !self.enforcing() {
            return Ok(Caller::Open);
        }
        let presented = presented.ok_or(Refusal::Unauthenticated(
            "this server needs an API key: Authorization: Bearer <key>",
        ))?;
        let bad = Refusal::Unauthenticated("the API key is unknown, revoked or malformed");
        let token = Token::parse(presented).ok_or(bad)?;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let entry = {
            let l = self.loaded.read();
            let entry = l.keys.get(token.id).filter(|k| k.active()).cloned();
            if let (Some(entry), Some(known)) = (&entry, l.verified.get(token.id)) {
                return if bool::from(known.ct_eq(&digest)) {
                    Ok(Caller::Key(Arc::new(principal(entry))))
                } else {
                    Err(Refusal::Unauthenticated(
                        "the API key is unknown, revoked or malformed",
                    ))
                };
            }
            entry
        };
        let entry = entry.ok_or(Refusal::Unauthenticated(
            "the API key is unknown, revoked or malformed",
        ))?;
        let secret = token.secret.to_owned();
        let hashed = entry.clone();
        let ok = {
            let _permit = self
                .hashing
                .acquire()
                .await
                .map_err(|_| Refusal::Unauthenticated("the server is shutting down"))?;
            tokio::task::spawn_blocking(move || hashed.verify(&secret))
                .await
                .unwrap_or(false)
        };
        if !ok {
            warn!(key = %entry.id, "API key with a wrong secret");
            return Err(Refusal::Unauthenticated(
                "the API key is unknown, revoked or malformed",
            ));
        }
        let mut l = self.loaded.write();
        // Still the same, still active key after the (slow) check?
        if l.keys
            .get(&entry.id)
            .is_some_and(|k| k.active() && k.hash == entry.hash)
        {
            l.verified.insert(entry.id.clone(), digest);
            Ok(Caller::Key(Arc::new(principal(&entry))))
        } else {
            Err(Refusal::Unauthenticated(
                "the API key is unknown, revoked or malformed",
            ))
        }
    }
}

fn principal(k: &KeyEntry) -> Principal {
    Principal {
        id: k.id.clone(),
        name: k.name.clone(),
        role: k.role,
    }
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode,
    })
}

/// The one route that also takes its key from a cookie: a `<video src>` cannot send
/// headers. It only reads a file (GET, HEAD), and the page sets the cookie
/// `SameSite=Strict` on the path `/v1/media/`.
const COOKIE_ROUTE: &str = "/v1/media/{media_id}/file";
/// The cookie that carries the key to [`COOKIE_ROUTE`].
pub const KEY_COOKIE: &str = "annostore_key";

/// The key a request presents: `Authorization: Bearer <key>`, else `X-Api-Key`, else,
/// on [`COOKIE_ROUTE`] only, the cookie [`KEY_COOKIE`] (headers win over the cookie).
fn presented<'r>(req: &'r Request, route: Option<&str>) -> Option<&'r str> {
    let headers = req.headers();
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return Some(v.strip_prefix("Bearer ").unwrap_or(v).trim());
    }
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    if route == Some(COOKIE_ROUTE) {
        return cookie(headers, KEY_COOKIE);
    }
    None
}

/// The value of the cookie `name`, from any `Cookie` header.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
}

/// The middleware: names the caller, checks its role against the route's need, and
/// hands the caller to the handler (which checks ownership of operations).
pub async fn authorize(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let need = need(req.method(), route.as_deref());
    if need == Need::Nothing {
        req.extensions_mut().insert(Caller::Open);
        return next.run(req).await;
    }
    let caller = match state.auth.caller(presented(&req, route.as_deref())).await {
        Ok(c) => c,
        Err(refusal) => return refusal.into_response(),
    };
    if let Err(refusal) = caller.meets(need) {
        return refusal.into_response();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn request(headers: &[(&str, &str)]) -> Request {
        let mut req = axum::http::Request::builder().uri("/");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(Body::empty()).unwrap()
    }

    #[test]
    fn the_cookie_counts_only_on_the_media_file_route_and_headers_win() {
        let file = Some(COOKIE_ROUTE);
        let with_cookie = request(&[("cookie", "theme=dark; annostore_key=ask_c ; x=1")]);
        assert_eq!(presented(&with_cookie, file), Some("ask_c"));
        assert_eq!(
            presented(&with_cookie, Some("/v1/media/{media_id}/runs")),
            None
        );
        assert_eq!(presented(&with_cookie, None), None);
        let both = request(&[
            ("authorization", "Bearer ask_h"),
            ("cookie", "annostore_key=ask_c"),
        ]);
        assert_eq!(presented(&both, file), Some("ask_h"));
        let api_key = request(&[("x-api-key", "ask_x"), ("cookie", "annostore_key=ask_c")]);
        assert_eq!(presented(&api_key, file), Some("ask_x"));
        let two_headers = request(&[("cookie", "a=1"), ("cookie", "annostore_key=\"ask_q\"")]);
        assert_eq!(presented(&two_headers, file), Some("ask_q"));
        let other = request(&[("cookie", "not_annostore_key=ask_c")]);
        assert_eq!(presented(&other, file), None);
    }
}
