//! Which role each route needs, and what a caller may do with an operation.

use super::{Principal, Refusal, Role};
use annostore_core::model::{Operation, OperationStatus};
use axum::http::Method;
use std::sync::Arc;

/// What a route asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: health and the contract.
    Nothing,
    /// Any valid key.
    AnyKey,
    /// reader or admin.
    Read,
    /// producer or admin (the handler checks the operation is the caller's).
    Produce,
    /// reader, producer or admin: search (a producer may search only its own
    /// operations, which the handler checks).
    ReadOrProduce,
    /// admin only.
    Admin,
}

/// The need of `method` on the route template `route` (`None`: no route matched,
/// which any key may learn). A route missing from this table needs admin, so a new
/// route is closed until someone decides who may call it.
pub fn need(method: &Method, route: Option<&str>) -> Need {
    let Some(route) = route else {
        return Need::AnyKey;
    };
    let get = method == Method::GET || method == Method::HEAD;
    match (get, route) {
        (true, "/healthz" | "/openapi.yaml") => Need::Nothing,
        // The web viewer: the page holds no data and asks for a key itself.
        (true, "/ui" | "/ui/" | "/ui/config.json" | "/ui/{*path}") => Need::Nothing,
        (true, "/metrics") => Need::Admin,
        (true, "/v1/types" | "/v1/operations/{id}") => Need::AnyKey,
        (false, "/v1/types/{type}/versions/{version}") => Need::Produce,
        (false, "/v1/operations" | "/v1/runs") => Need::Produce,
        (true, "/v1/operations") => Need::Admin,
        (
            false,
            "/v1/operations/{id}/annotations"
            | "/v1/operations/{id}/finish"
            | "/v1/operations/{id}/cancel",
        ) => Need::Produce,
        (false, "/v1/annotations/search") => Need::ReadOrProduce,
        (false, "/v1/annotations/aggregate" | "/v1/annotations/cooccurrence") => Need::Read,
        (
            true,
            "/v1/annotations/{id}"
            | "/v1/media/{media_id}/annotations"
            | "/v1/media"
            | "/v1/media/{media_id}/runs"
            | "/v1/media/{media_id}/file",
        ) => Need::Read,
        _ => Need::Admin,
    }
}

/// Who made a request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No keys are configured (or the route needs none): anything goes.
    Open,
    Key(Arc<Principal>),
}

impl Caller {
    pub fn role(&self) -> Option<Role> {
        match self {
            Caller::Open => None,
            Caller::Key(p) => Some(p.role),
        }
    }

    /// The key id recorded as an operation's producer.
    pub fn key_id(&self) -> Option<String> {
        match self {
            Caller::Open => None,
            Caller::Key(p) => Some(p.id.clone()),
        }
    }

    pub(super) fn meets(&self, need: Need) -> Result<(), Refusal> {
        let Some(role) = self.role() else {
            return Ok(());
        };
        let ok = match need {
            Need::Nothing | Need::AnyKey => true,
            Need::Read => matches!(role, Role::Reader | Role::Admin),
            Need::Produce => matches!(role, Role::Producer | Role::Admin),
            Need::ReadOrProduce => true,
            Need::Admin => role == Role::Admin,
        };
        if ok {
            Ok(())
        } else {
            Err(Refusal::Forbidden(format!(
                "a {} key may not call this route",
                role.as_str()
            )))
        }
    }

    /// May this caller upsert into, finish or cancel `op`? Admins may act on any
    /// operation; a producer only on those it started.
    pub fn may_manage(&self, op: &Operation) -> Result<(), Refusal> {
        match self {
            Caller::Open => Ok(()),
            Caller::Key(p) if p.role == Role::Admin => Ok(()),
            Caller::Key(p) if p.role == Role::Producer && op.producer.as_deref() == Some(&p.id) => {
                Ok(())
            }
            Caller::Key(p) => Err(Refusal::Forbidden(format!(
                "operation {} was not started by this {} key",
                op.id,
                p.role.as_str()
            ))),
        }
    }

    /// May this caller search with `operation_id` = `op` (a preview when STARTED)?
    /// Producers: their own operations only. Readers: any visible run, no previews.
    pub fn may_preview(&self, op: &Operation) -> Result<(), Refusal> {
        match self.role() {
            Some(Role::Reader) if op.status == OperationStatus::Started => Err(Refusal::Forbidden(
                "a STARTED run is previewed only by its producer or an admin".into(),
            )),
            Some(Role::Reader) => Ok(()),
            _ => self.may_manage(op),
        }
    }

    /// May this caller search without naming its operation? Not a producer.
    pub fn may_search_all(&self) -> Result<(), Refusal> {
        match self.role() {
            Some(Role::Producer) => Err(Refusal::Forbidden(
                "a producer key searches only its own operations: set filter.operation_id".into(),
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(role: Role, id: &str) -> Caller {
        Caller::Key(Arc::new(Principal {
            id: id.into(),
            name: id.into(),
            role,
        }))
    }

    #[test]
    fn roles_meet_the_needs_of_their_routes_only() {
        let (p, r, a) = (
            key(Role::Producer, "p"),
            key(Role::Reader, "r"),
            key(Role::Admin, "a"),
        );
        let table = [
            (Method::GET, "/v1/operations", [false, false, true]),
            (Method::POST, "/v1/operations", [true, false, true]),
            (Method::POST, "/v1/runs", [true, false, true]),
            (Method::GET, "/v1/runs", [false, false, true]),
            (
                Method::POST,
                "/v1/operations/{id}/finish",
                [true, false, true],
            ),
            (Method::POST, "/v1/annotations/search", [true, true, true]),
            (
                Method::POST,
                "/v1/annotations/aggregate",
                [false, true, true],
            ),
            (Method::GET, "/v1/annotations/{id}", [false, true, true]),
            (Method::GET, "/v1/operations/{id}", [true, true, true]),
            (Method::POST, "/v1/admin/reindex", [false, false, true]),
            (Method::GET, "/metrics", [false, false, true]),
            (Method::GET, "/v1/media", [false, true, true]),
            (
                Method::GET,
                "/v1/media/{media_id}/runs",
                [false, true, true],
            ),
            (
                Method::HEAD,
                "/v1/media/{media_id}/file",
                [false, true, true],
            ),
            (
                Method::POST,
                "/v1/media/{media_id}/file",
                [false, false, true],
            ),
            (Method::GET, "/ui/{*path}", [true, true, true]),
            (Method::DELETE, "/v1/some/new/route", [false, false, true]),
        ];
        for (method, route, want) in table {
            let got = [&p, &r, &a].map(|c| c.meets(need(&method, Some(route))).is_ok());
            assert_eq!(got, want, "{method} {route}");
            assert!(Caller::Open.meets(need(&method, Some(route))).is_ok());
        }
        assert_eq!(need(&Method::GET, Some("/healthz")), Need::Nothing);
        for page in ["/ui", "/ui/", "/ui/config.json", "/ui/{*path}"] {
            assert_eq!(need(&Method::GET, Some(page)), Need::Nothing, "{page}");
        }
        assert_eq!(need(&Method::GET, None), Need::AnyKey);
    }
}
