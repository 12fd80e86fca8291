//! The service's typed errors. Each maps onto one HTTP status in the API crate.

use serde::Serialize;
use uuid::Uuid;

/// One problem with one field of one item of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Index of the item in its batch, when the request carries a batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            index: None,
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn at(mut self, index: usize) -> Self {
        self.index = Some(index);
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 404: the named thing does not exist.
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    /// 409: the request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// 409 on an annotation id that another operation already owns.
    #[error("annotation {id} already belongs to operation {owner}")]
    IdConflict { id: Uuid, owner: Uuid },
    /// 422: the request is well-formed JSON but not valid.
    #[error("invalid request: {} problem(s)", .0.len())]
    Invalid(Vec<FieldError>),
    /// 400: the request cannot be understood (bad page token, bad query parameter).
    #[error("{0}")]
    BadRequest(String),
    /// 413: the request is over a configured limit.
    #[error("{0}")]
    TooLarge(String),
    /// 503: an engine failed; the request may be retried.
    #[error("{what} unavailable: {detail}")]
    Unavailable { what: &'static str, detail: String },
}

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Invalid(vec![FieldError::new(field, reason)])
    }

    pub fn operation_not_found(id: Uuid) -> Error {
        Error::NotFound {
            what: "operation",
            id: id.to_string(),
        }
    }
}

impl From<crate::store::StoreError> for Error {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            StoreError::Lifecycle(l) => l.into(),
            StoreError::IdConflict { id, owner } => Error::IdConflict { id, owner },
            StoreError::NotFound { what, id } => Error::NotFound { what, id },
            StoreError::TypeConflict(name) => Error::Conflict(format!(
                "annotation type {name} is already registered with a different definition"
            )),
            other => Error::Unavailable {
                what: "store",
                detail: other.to_string(),
            },
        }
    }
}

impl From<crate::lifecycle::LifecycleError> for Error {
    fn from(e: crate::lifecycle::LifecycleError) -> Self {
        Error::Conflict(e.to_string())
    }
}

impl From<crate::index::IndexError> for Error {
    fn from(e: crate::index::IndexError) -> Self {
        match e {
            crate::index::IndexError::Unanswerable(reason) => Error::invalid("query", reason),
            other => Error::Unavailable {
                what: "index",
                detail: other.to_string(),
            },
        }
    }
}
