//! The data model: operation keys and operations, annotation types, annotations and searches.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

/// What identifies a family of runs: only the newest finished run of a key is visible.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OperationKey {
    pub annotation_type: String,
    pub annotation_type_version: u32,
    pub pivot_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OperationStatus {
    Started,
    Finished,
    Cancelled,
    Expired,
}

impl OperationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "STARTED",
            Self::Finished => "FINISHED",
            Self::Cancelled => "CANCELLED",
            Self::Expired => "EXPIRED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "STARTED" => Some(Self::Started),
            "FINISHED" => Some(Self::Finished),
            "CANCELLED" => Some(Self::Cancelled),
            "EXPIRED" => Some(Self::Expired),
            _ => None,
        }
    }
}

/// One run of an algorithm for one key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    pub id: Uuid,
    pub annotation_type: String,
    pub annotation_type_version: u32,
    pub pivot_id: String,
    pub operation_number: u64,
    pub status: OperationStatus,
    pub active: bool,
    pub annotation_count: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    pub lease_seconds: u32,
    /// Set while the operation is STARTED.
    #[serde(with = "time::serde::rfc3339::option")]
    pub lease_expires_at: Option<OffsetDateTime>,
    /// The operation that made this one inactive: a newer finished run of the key, or
    /// the run an admin rolled back or forward to.
    pub superseded_by: Option<Uuid>,
    pub metadata: Map<String, Value>,
    /// The id of the API key that started the operation; `None` when the server had
    /// no keys. Producers may preview, upsert into, finish and cancel only their own.
    #[serde(default)]
    pub producer: Option<String>,
    /// Grows by one with every change the store records; caches keep the highest seen,
    /// and distributed stores compare-and-set on it.
    pub version: u64,
    /// The key's activation sequence number when this run last became active (0:
    /// never). Every activation of a key (a finish that makes a run active, a rollback,
    /// a roll forward) takes the previous active run's number plus one, so caches order
    /// a key's activations by it, whatever the runs' own numbers.
    #[serde(default)]
    pub activation: u64,
    /// Garbage collection of the run's annotations, once it has begun (see
    /// [`crate::lifecycle::begin_collection`]): a collected run can never be active again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collected: Option<Collection>,
}

/// The garbage collection of one operation's annotations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Collection {
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// Set once every annotation of the run is gone from store and index.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// Annotations deleted from the store.
    pub freed: u64,
}

/// Why a run became its key's active one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationReason {
    /// It finished, newer than the key's active run.
    Finish,
    /// An admin made an older finished run active again.
    Rollback,
    /// An admin made a newer finished run active again after a rollback.
    RollForward,
}

/// One entry of a key's activation history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activation {
    pub annotation_type: String,
    pub annotation_type_version: u32,
    pub pivot_id: String,
    /// The key's activation sequence number (see [`Operation::activation`]).
    pub sequence: u64,
    pub operation_id: Uuid,
    pub operation_number: u64,
    /// The run that was active before, if any.
    pub previous: Option<Uuid>,
    pub reason: ActivationReason,
    /// The API key id that caused it (the producer for a finish, the admin otherwise).
    pub actor: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

impl Activation {
    pub fn key(&self) -> OperationKey {
        OperationKey {
            annotation_type: self.annotation_type.clone(),
            annotation_type_version: self.annotation_type_version,
            pivot_id: self.pivot_id.clone(),
        }
    }
}

impl Operation {
    pub fn key(&self) -> OperationKey {
        OperationKey {
            annotation_type: self.annotation_type.clone(),
            annotation_type_version: self.annotation_type_version,
            pivot_id: self.pivot_id.clone(),
        }
    }
}

/// What a producer asks for when it starts an operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartOperation {
    pub annotation_type: String,
    pub annotation_type_version: u32,
    pub pivot_id: String,
    #[serde(default)]
    pub lease_seconds: Option<u32>,
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
    /// The API key that starts the operation (set by the API from the request's
    /// credentials, never read from the body); `None` when the server has no keys.
    #[serde(skip)]
    pub producer: Option<String>,
}

/// A registered annotation type version. Immutable once registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnnotationType {
    pub name: String,
    pub version: u32,
    /// JSON Schema that every annotation's `data` must satisfy.
    pub schema: Value,
    pub embedding_dim: Option<u32>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl AnnotationType {
    /// Two registrations are the same when schema and embedding_dim agree.
    pub fn same_definition(&self, other: &AnnotationType) -> bool {
        self.name == other.name
            && self.version == other.version
            && self.schema == other.schema
            && self.embedding_dim == other.embedding_dim
    }
}

/// The body of `PUT /v1/types/{type}/versions/{version}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeDefinition {
    #[serde(default = "empty_schema")]
    pub schema: Value,
    #[serde(default)]
    pub embedding_dim: Option<u32>,
}

fn empty_schema() -> Value {
    Value::Object(Map::new())
}

/// A box in normalised frame coordinates: (x, y) is the top-left corner.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BBox {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

/// An annotation as a producer writes it (after validation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnnotationInput {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    pub media_id: String,
    pub start_ms: i64,
    pub end_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bbox: Option<BBox>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// A stored annotation: the input plus the operation it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Annotation {
    pub id: Uuid,
    pub media_id: String,
    pub start_ms: i64,
    pub end_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bbox: Option<BBox>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    pub annotation_type: String,
    pub annotation_type_version: u32,
    pub pivot_id: String,
    pub operation_id: Uuid,
}

impl Annotation {
    /// Binds a validated input to its operation. The id is the producer's, or else
    /// a UUIDv5 of the operation id and the input's canonical JSON, so a retried
    /// batch maps onto the same ids.
    pub fn from_input(input: AnnotationInput, op: &Operation) -> Annotation {
        let id = input.id.unwrap_or_else(|| derived_id(op.id, &input));
        Annotation {
            id,
            media_id: input.media_id,
            start_ms: input.start_ms,
            end_ms: input.end_ms,
            label: input.label,
            confidence: input.confidence,
            bbox: input.bbox,
            embedding: input.embedding,
            data: input.data,
            annotation_type: op.annotation_type.clone(),
            annotation_type_version: op.annotation_type_version,
            pivot_id: op.pivot_id.clone(),
            operation_id: op.id,
        }
    }
}

/// UUIDv5 in the operation's namespace over the input's canonical JSON
/// (serde_json's maps are ordered, so equal inputs serialise equally).
pub fn derived_id(operation_id: Uuid, input: &AnnotationInput) -> Uuid {
    debug_assert!(input.id.is_none());
    let bytes = serde_json::to_vec(input).unwrap_or_default();
    Uuid::new_v5(&operation_id, &bytes)
}

pub use crate::query::{
    AggregateSpec, Aggregates, DataCondition, Knn, Region, SortOrder, TextQuery, TimeRange,
    TimeRelation,
};

/// The filters of a search. Every one is optional; given ones must all hold (see
/// [`crate::query::matches`] for the exact semantics).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_id: Option<String>,
    /// Any of these media items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation_type: Option<String>,
    /// Any of these types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation_types: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation_type_version: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pivot_id: Option<String>,
    /// Exactly this label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Any of these labels, exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_range: Option<TimeRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_confidence: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_confidence: Option<f32>,
    /// Restricts the search to one operation: allowed when it is active, or
    /// STARTED (a producer previewing its own run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<Uuid>,
    /// Boxes that intersect, or lie within, a region of the frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<Region>,
    /// Full-text (and fuzzy) search over labels and searchable `data` strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextQuery>,
    /// Conditions on `data` fields that the type schema declares; all must hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Vec<DataCondition>>,
}

/// A search request: filters, order, nearest neighbours and paging.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    #[serde(flatten)]
    pub filter: SearchFilter,
    /// Time (the default), confidence, or score (with `knn`, its default).
    #[serde(default)]
    pub sort: Option<SortOrder>,
    #[serde(default)]
    pub knn: Option<Knn>,
    #[serde(default)]
    pub limit: Option<u32>,
    #[serde(default)]
    pub page_token: Option<String>,
    /// Leave each annotation's `embedding` out of the page (a viewer drawing boxes has
    /// no use for them, and a 1280-d embedding is most of an annotation's bytes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub omit_embeddings: bool,
}

/// A page of search results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchPage {
    pub annotations: Vec<Annotation>,
    /// With `knn`: each annotation's cosine similarity to the query, in page order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scores: Option<Vec<f32>>,
    pub next_page_token: Option<String>,
    /// True when this page came from a later view than the first page's: a run that the
    /// first page could see was replaced (or one appeared) and the first page's view is
    /// no longer held (see `page.rs`). Pages of one view never mix runs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub view_changed: bool,
}

/// The position of an annotation in search order: (media_id, start_ms, id).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SortKey {
    pub media_id: String,
    pub start_ms: i64,
    pub id: Uuid,
}

impl SortKey {
    pub fn of(a: &Annotation) -> SortKey {
        SortKey {
            media_id: a.media_id.clone(),
            start_ms: a.start_ms,
            id: a.id,
        }
    }
}

/// Filters of operation scans (`GET /v1/operations`, `POST /v1/admin/operations/scan`).
/// Every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<OperationStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation_type_version: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pivot_id: Option<String>,
    /// Started (created) strictly before this time.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub started_before: Option<OffsetDateTime>,
    /// Started at or after this time.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub started_after: Option<OffsetDateTime>,
    /// Last changed strictly before this time (for a STARTED run, the last upsert
    /// renews it: an idle run).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub updated_before: Option<OffsetDateTime>,
    /// The API key id that started the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer: Option<String>,
    /// Whether the run is its key's active one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// Top-level metadata properties that must equal these values.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
}

/// Which way a scan of operations walks. Operation ids are UUIDv7, so id order is
/// start order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanOrder {
    #[default]
    NewestFirst,
    OldestFirst,
}

impl ScanOrder {
    /// True when `id` comes after `cursor` in this order.
    pub fn past(self, id: &Uuid, cursor: Option<Uuid>) -> bool {
        match (self, cursor) {
            (_, None) => true,
            (ScanOrder::NewestFirst, Some(c)) => *id < c,
            (ScanOrder::OldestFirst, Some(c)) => *id > c,
        }
    }
}

impl OperationFilter {
    pub fn matches(&self, op: &Operation) -> bool {
        self.status.is_none_or(|s| s == op.status)
            && self
                .annotation_type
                .as_ref()
                .is_none_or(|t| *t == op.annotation_type)
            && self
                .annotation_type_version
                .is_none_or(|v| v == op.annotation_type_version)
            && self.pivot_id.as_ref().is_none_or(|p| *p == op.pivot_id)
            && self.started_before.is_none_or(|t| op.created_at < t)
            && self.started_after.is_none_or(|t| op.created_at >= t)
            && self.updated_before.is_none_or(|t| op.updated_at < t)
            && self
                .producer
                .as_ref()
                .is_none_or(|p| op.producer.as_ref() == Some(p))
            && self.active.is_none_or(|a| a == op.active)
            && self
                .metadata
                .iter()
                .all(|(k, v)| op.metadata.get(k) == Some(v))
    }
}
