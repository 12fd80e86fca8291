//! What the fuzz targets share: the fixed type version they validate against, and
//! annotations to run accepted filters on.

#![allow(dead_code)]

use annostore_core::model::{Annotation, AnnotationType, BBox};
use annostore_core::validate::{CompiledType, Limits};
use serde_json::json;
use uuid::Uuid;

/// A type version like a detector's: filterable and text-searchable `data` fields and
/// 4-dimensional embeddings.
pub fn annotation_type() -> AnnotationType {
    AnnotationType {
        name: "objects".into(),
        version: 1,
        schema: json!({
            "type": "object",
            "properties": {
                "track": {"type": "integer", "minimum": 0},
                "kind": {"type": "string", "maxLength": 32},
                "speed": {"type": "number"},
                "moving": {"type": "boolean"},
                "caption": {"type": "string", "x-annostore-search": "text"}
            }
        }),
        embedding_dim: Some(4),
        created_at: time::OffsetDateTime::UNIX_EPOCH,
    }
}

/// A second version without embeddings, and a schema that refuses extra fields.
pub fn strict_type() -> AnnotationType {
    AnnotationType {
        name: "scenes".into(),
        version: 2,
        schema: json!({
            "type": "object",
            "properties": {"speed": {"type": "integer"}, "title": {"type": "string"}},
            "additionalProperties": false
        }),
        embedding_dim: None,
        created_at: time::OffsetDateTime::UNIX_EPOCH,
    }
}

pub fn compiled() -> CompiledType {
    CompiledType::compile(annotation_type()).expect("the fixed type compiles")
}

pub fn limits() -> Limits {
    Limits::default()
}

/// A few annotations covering the kinds of fields a filter reads.
pub fn annotations() -> Vec<Annotation> {
    let base = Annotation {
        id: Uuid::from_u128(1),
        media_id: "movie-42".into(),
        start_ms: 0,
        end_ms: 1_000,
        label: Some("person".into()),
        confidence: Some(0.9),
        bbox: Some(BBox {
            x: 0.1,
            y: 0.2,
            w: 0.3,
            h: 0.4,
        }),
        embedding: Some(vec![0.1, 0.2, 0.3, 0.4]),
        data: Some(
            json!({"track": 1, "kind": "adult", "speed": 12.5, "moving": true,
                          "caption": "a person in a red coat"}),
        ),
        annotation_type: "objects".into(),
        annotation_type_version: 1,
        pivot_id: "movie-42".into(),
        operation_id: Uuid::from_u128(2),
    };
    let bare = Annotation {
        id: Uuid::from_u128(3),
        media_id: "m".into(),
        start_ms: 9_000_000_000_000,
        end_ms: 9_000_000_000_000,
        label: None,
        confidence: None,
        bbox: None,
        embedding: None,
        data: None,
        annotation_type: "scenes".into(),
        annotation_type_version: 2,
        pivot_id: "p".into(),
        operation_id: Uuid::from_u128(4),
    };
    let edge = Annotation {
        id: Uuid::from_u128(5),
        start_ms: 0,
        end_ms: 0,
        confidence: Some(0.0),
        bbox: Some(BBox {
            x: 0.0,
            y: 0.0,
            w: 1.0,
            h: 1.0,
        }),
        data: Some(json!([1, "x", null])),
        ..base.clone()
    };
    vec![base, bare, edge]
}
