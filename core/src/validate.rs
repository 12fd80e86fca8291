//! Limits and validation of what clients send.
//!
//! Annotation items are read field by field from JSON values (not with serde's derive) so
//! that one pass reports every problem of every item with its index and field, and a batch
//! is accepted whole or not at all.

use crate::error::FieldError;
use crate::model::{AnnotationInput, AnnotationType, BBox, StartOperation, TypeDefinition};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// Every bound the API enforces. Configurable; the defaults are the documented ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body, in bytes (413 past it).
    pub max_body_bytes: usize,
    /// Most annotations in one upsert call (413 past it).
    pub max_batch: usize,
    /// Longest id, label, media id, pivot id or type name, in bytes (422 past it).
    pub max_string_bytes: usize,
    /// Largest `data` payload, serialised, in bytes (422 past it).
    pub max_data_bytes: usize,
    /// Deepest nesting of objects and arrays in `data` or `metadata` (422 past it).
    pub max_data_depth: usize,
    /// Most dimensions of an embedding (422 past it).
    pub max_embedding_dims: usize,
    /// Largest `metadata` of an operation, serialised, in bytes (422 past it).
    pub max_metadata_bytes: usize,
    /// Page size when a search names none.
    pub default_page_size: u32,
    /// Largest page a search may ask for (422 past it).
    pub max_page_size: u32,
    /// Lease of an operation that names none, in seconds.
    pub default_lease_seconds: u32,
    /// Longest lease an operation may ask for, in seconds (422 past it).
    pub max_lease_seconds: u32,
    /// Most values in one list filter of a search (`media_ids`, `labels`, ...).
    pub max_filter_values: usize,
    /// Most `data` conditions in one search.
    pub max_data_conditions: usize,
    /// Most conditions of one co-occurrence query.
    pub max_cooccurrence_conditions: usize,
    /// Most annotations one co-occurrence condition may match (422 past it: narrow it).
    pub max_cooccurrence_annotations: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 16 * 1024 * 1024,
            max_batch: 10_000,
            max_string_bytes: 256,
            max_data_bytes: 64 * 1024,
            max_data_depth: 32,
            max_embedding_dims: 4096,
            max_metadata_bytes: 64 * 1024,
            default_page_size: 100,
            max_page_size: 1_000,
            default_lease_seconds: 3_600,
            max_lease_seconds: 7 * 24 * 3_600,
            max_filter_values: 1_000,
            max_data_conditions: 16,
            max_cooccurrence_conditions: 8,
            max_cooccurrence_annotations: 100_000,
        }
    }
}

/// A type version ready to validate annotations: its definition and compiled schema.
pub struct CompiledType {
    pub def: AnnotationType,
    schema: jsonschema::Validator,
}

impl std::fmt::Debug for CompiledType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledType")
            .field("def", &self.def)
            .finish()
    }
}

impl CompiledType {
    pub fn compile(def: AnnotationType) -> Result<CompiledType, FieldError> {
        let schema = jsonschema::validator_for(&def.schema)
            .map_err(|e| FieldError::new("schema", format!("not a valid JSON Schema: {e}")))?;
        Ok(CompiledType { def, schema })
    }
}

/// Checks a type registration: name, version and a schema that compiles.
pub fn type_definition(
    name: &str,
    version: u32,
    def: &TypeDefinition,
    limits: &Limits,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    check_name(&mut errors, "type", name, limits);
    if version == 0 {
        errors.push(FieldError::new("version", "must be at least 1"));
    }
    if !def.schema.is_object() && !def.schema.is_boolean() {
        errors.push(FieldError::new("schema", "must be a JSON Schema object"));
    } else if let Err(e) = jsonschema::validator_for(&def.schema) {
        errors.push(FieldError::new(
            "schema",
            format!("not a valid JSON Schema: {e}"),
        ));
    }
    if depth(&def.schema) > limits.max_data_depth {
        errors.push(FieldError::new(
            "schema",
            format!("nested deeper than {} levels", limits.max_data_depth),
        ));
    }
    match def.embedding_dim {
        Some(0) => errors.push(FieldError::new("embedding_dim", "must be at least 1")),
        Some(d) if d as usize > limits.max_embedding_dims => errors.push(FieldError::new(
            "embedding_dim",
            format!("at most {} dimensions", limits.max_embedding_dims),
        )),
        _ => {}
    }
    errors
}

/// Checks a start request. Returns the lease to use.
pub fn start_operation(req: &StartOperation, limits: &Limits) -> Result<u32, Vec<FieldError>> {
    let mut errors = Vec::new();
    check_name(&mut errors, "annotation_type", &req.annotation_type, limits);
    check_name(&mut errors, "pivot_id", &req.pivot_id, limits);
    let lease = req.lease_seconds.unwrap_or(limits.default_lease_seconds);
    if lease == 0 || lease > limits.max_lease_seconds {
        errors.push(FieldError::new(
            "lease_seconds",
            format!("must be between 1 and {}", limits.max_lease_seconds),
        ));
    }
    if let Some(meta) = &req.metadata {
        let meta = Value::Object(meta.clone());
        if depth(&meta) > limits.max_data_depth {
            errors.push(FieldError::new(
                "metadata",
                format!("nested deeper than {} levels", limits.max_data_depth),
            ));
        }
        if serialized_len(&meta) > limits.max_metadata_bytes {
            errors.push(FieldError::new(
                "metadata",
                format!("larger than {} bytes", limits.max_metadata_bytes),
            ));
        }
    }
    if errors.is_empty() {
        Ok(lease)
    } else {
        Err(errors)
    }
}

/// Reads and checks a whole batch. Either every item is valid, or the answer lists
/// each problem of each bad item (with its index).
pub fn annotation_batch(
    items: &[Value],
    ty: &CompiledType,
    limits: &Limits,
) -> Result<Vec<AnnotationInput>, Vec<FieldError>> {
    let mut inputs = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match annotation(item, ty, limits) {
            Ok(a) => inputs.push(a),
            Err(errs) => errors.extend(errs.into_iter().map(|e| e.at(i))),
        }
    }
    if errors.is_empty() {
        Ok(inputs)
    } else {
        Err(errors)
    }
}

const ANNOTATION_FIELDS: &[&str] = &[
    "id",
    "media_id",
    "start_ms",
    "end_ms",
    "label",
    "confidence",
    "bbox",
    "embedding",
    "data",
];

/// Reads one annotation item.
pub fn annotation(
    item: &Value,
    ty: &CompiledType,
    limits: &Limits,
) -> Result<AnnotationInput, Vec<FieldError>> {
    let Some(obj) = item.as_object() else {
        return Err(vec![FieldError::new("", "must be a JSON object")]);
    };
    let mut errors = Vec::new();
    for key in obj.keys() {
        if !ANNOTATION_FIELDS.contains(&key.as_str()) {
            errors.push(FieldError::new(key.clone(), "unknown field"));
        }
    }
    let id = optional(obj, "id", &mut errors, |v| {
        let s = v.as_str().ok_or("must be a UUID string")?;
        Uuid::parse_str(s).map_err(|_| "must be a UUID")
    });
    let media_id = required(obj, "media_id", &mut errors, |v| {
        v.as_str().map(str::to_owned).ok_or("must be a string")
    });
    if let Some(m) = &media_id {
        check_name(&mut errors, "media_id", m, limits);
    }
    let start_ms = required(obj, "start_ms", &mut errors, millis);
    let end_ms = required(obj, "end_ms", &mut errors, millis);
    if let (Some(s), Some(e)) = (start_ms, end_ms)
        && e < s
    {
        errors.push(FieldError::new("end_ms", "must not be before start_ms"));
    }
    let label = optional(obj, "label", &mut errors, |v| {
        v.as_str().map(str::to_owned).ok_or("must be a string")
    });
    if let Some(l) = &label
        && l.len() > limits.max_string_bytes
    {
        errors.push(FieldError::new(
            "label",
            format!("longer than {} bytes", limits.max_string_bytes),
        ));
    }
    let confidence = optional(obj, "confidence", &mut errors, |v| {
        let c = v.as_f64().ok_or("must be a number")?;
        unit_interval(c).ok_or("must be between 0 and 1")
    });
    let bbox = bbox(obj, &mut errors);
    let embedding = embedding(obj, ty, limits, &mut errors);
    let data = data(obj, ty, limits, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    match (media_id, start_ms, end_ms) {
        (Some(media_id), Some(start_ms), Some(end_ms)) => Ok(AnnotationInput {
            id,
            media_id,
            start_ms,
            end_ms,
            label,
            confidence,
            bbox,
            embedding,
            data,
        }),
        _ => Err(vec![FieldError::new("", "missing required fields")]),
    }
}

fn millis(v: &Value) -> Result<i64, &'static str> {
    let ms = v.as_i64().ok_or("must be a whole number of milliseconds")?;
    // Up to about 285 years of media: far beyond any video, far from overflow.
    if (0..=9_000_000_000_000).contains(&ms) {
        Ok(ms)
    } else {
        Err("must be between 0 and 9e12 milliseconds")
    }
}

/// A number in [0, 1] as f32, `-0` read as `0`: they compare equal, and engines that
/// order numbers by their bits (index columns) would put `-0` first.
fn unit_interval(x: f64) -> Option<f32> {
    if x == 0.0 {
        Some(0.0)
    } else if (0.0..=1.0).contains(&x) {
        Some(x as f32)
    } else {
        None
    }
}

fn bbox(obj: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Option<BBox> {
    let v = obj.get("bbox").filter(|v| !v.is_null())?;
    let Some(b) = v.as_object() else {
        errors.push(FieldError::new("bbox", "must be an object {x, y, w, h}"));
        return None;
    };
    let mut part = |name: &str| -> Option<f32> {
        match b.get(name).and_then(Value::as_f64).and_then(unit_interval) {
            Some(x) => Some(x),
            None => {
                errors.push(FieldError::new(
                    format!("bbox.{name}"),
                    "must be a number between 0 and 1",
                ));
                None
            }
        }
    };
    let (x, y, w, h) = (part("x"), part("y"), part("w"), part("h"));
    if b.len() != 4 {
        errors.push(FieldError::new("bbox", "must have exactly x, y, w and h"));
    }
    let (x, y, w, h) = (x?, y?, w?, h?);
    // A small tolerance for producers that round coordinates.
    const EPS: f32 = 1e-4;
    if x + w > 1.0 + EPS || y + h > 1.0 + EPS {
        errors.push(FieldError::new("bbox", "must lie inside the frame"));
        return None;
    }
    Some(BBox { x, y, w, h })
}

fn embedding(
    obj: &Map<String, Value>,
    ty: &CompiledType,
    limits: &Limits,
    errors: &mut Vec<FieldError>,
) -> Option<Vec<f32>> {
    let v = obj.get("embedding").filter(|v| !v.is_null())?;
    let Some(arr) = v.as_array() else {
        errors.push(FieldError::new("embedding", "must be an array of numbers"));
        return None;
    };
    let Some(dim) = ty.def.embedding_dim else {
        errors.push(FieldError::new(
            "embedding",
            format!(
                "type {} version {} declares no embedding_dim",
                ty.def.name, ty.def.version
            ),
        ));
        return None;
    };
    if arr.len() > limits.max_embedding_dims {
        errors.push(FieldError::new(
            "embedding",
            format!("more than {} dimensions", limits.max_embedding_dims),
        ));
        return None;
    }
    if arr.len() != dim as usize {
        errors.push(FieldError::new(
            "embedding",
            format!("has {} dimensions, the type declares {dim}", arr.len()),
        ));
        return None;
    }
    let mut out = Vec::with_capacity(arr.len());
    for x in arr {
        match x.as_f64().map(|f| f as f32).filter(|f| f.is_finite()) {
            Some(f) => out.push(f),
            None => {
                errors.push(FieldError::new(
                    "embedding",
                    "every element must be a finite 32-bit number",
                ));
                return None;
            }
        }
    }
    Some(out)
}

fn data(
    obj: &Map<String, Value>,
    ty: &CompiledType,
    limits: &Limits,
    errors: &mut Vec<FieldError>,
) -> Option<Value> {
    let v = obj.get("data").filter(|v| !v.is_null());
    if let Some(v) = v {
        if depth(v) > limits.max_data_depth {
            errors.push(FieldError::new(
                "data",
                format!("nested deeper than {} levels", limits.max_data_depth),
            ));
            return None;
        }
        if serialized_len(v) > limits.max_data_bytes {
            errors.push(FieldError::new(
                "data",
                format!("larger than {} bytes", limits.max_data_bytes),
            ));
            return None;
        }
    }
    // The schema applies to the payload; an absent payload is validated as {}.
    let instance = v.cloned().unwrap_or_else(|| Value::Object(Map::new()));
    for e in ty.schema.iter_errors(&instance) {
        errors.push(FieldError::new(
            format!("data{}", e.instance_path()),
            e.to_string(),
        ));
    }
    v.cloned()
}

fn required<T>(
    obj: &Map<String, Value>,
    field: &str,
    errors: &mut Vec<FieldError>,
    read: impl FnOnce(&Value) -> Result<T, &'static str>,
) -> Option<T> {
    match obj.get(field).filter(|v| !v.is_null()) {
        None => {
            errors.push(FieldError::new(field, "is required"));
            None
        }
        Some(v) => read(v)
            .map_err(|reason| errors.push(FieldError::new(field, reason)))
            .ok(),
    }
}

fn optional<T>(
    obj: &Map<String, Value>,
    field: &str,
    errors: &mut Vec<FieldError>,
    read: impl FnOnce(&Value) -> Result<T, &'static str>,
) -> Option<T> {
    let v = obj.get(field).filter(|v| !v.is_null())?;
    read(v)
        .map_err(|reason| errors.push(FieldError::new(field, reason)))
        .ok()
}

/// Names (types, pivot ids, media ids): non-empty, bounded, no control characters.
pub fn check_name(errors: &mut Vec<FieldError>, field: &str, value: &str, limits: &Limits) {
    if value.is_empty() {
        errors.push(FieldError::new(field, "must not be empty"));
    } else if value.len() > limits.max_string_bytes {
        errors.push(FieldError::new(
            field,
            format!("longer than {} bytes", limits.max_string_bytes),
        ));
    } else if value.chars().any(char::is_control) {
        errors.push(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
}

/// Nesting depth of a JSON value: a scalar is 0, `{}` and `[]` are 1.
pub fn depth(v: &Value) -> usize {
    // Iterative, so a hostile document cannot exhaust the stack here.
    let mut max = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Array(a) => {
                max = max.max(d + 1);
                stack.extend(a.iter().map(|x| (x, d + 1)));
            }
            Value::Object(o) => {
                max = max.max(d + 1);
                stack.extend(o.values().map(|x| (x, d + 1)));
            }
            _ => {}
        }
    }
    max
}

fn serialized_len(v: &Value) -> usize {
    serde_json::to_vec(v).map_or(usize::MAX, |b| b.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::from_unix_ms;
    use serde_json::json;

    fn ty(dim: Option<u32>, schema: Value) -> CompiledType {
        CompiledType::compile(AnnotationType {
            name: "objects".into(),
            version: 1,
            schema,
            embedding_dim: dim,
            created_at: from_unix_ms(0),
        })
        .unwrap()
    }

    #[test]
    fn a_full_item_reads_back() {
        let t = ty(Some(2), json!({"type": "object"}));
        let a = annotation(
            &json!({"media_id": "m", "start_ms": 0, "end_ms": 10, "label": "cat",
                    "confidence": 0.5, "bbox": {"x": 0.1, "y": 0.1, "w": 0.5, "h": 0.5},
                    "embedding": [1.0, 2.0], "data": {"k": 1}}),
            &t,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(a.label.as_deref(), Some("cat"));
        assert_eq!(a.embedding, Some(vec![1.0, 2.0]));
    }

    #[test]
    fn negative_zero_is_read_as_zero() {
        let t = ty(None, json!({"type": "object"}));
        let a = annotation(
            &json!({"media_id": "m", "start_ms": 0, "end_ms": 10, "confidence": -0.0,
                    "bbox": {"x": -0.0, "y": -0.0, "w": -0.0, "h": 0.5}}),
            &t,
            &Limits::default(),
        )
        .unwrap();
        let bits = |x: Option<f32>| x.map(f32::to_bits);
        assert_eq!(bits(a.confidence), Some(0));
        let b = a.bbox.unwrap();
        assert_eq!([b.x, b.y, b.w].map(f32::to_bits), [0, 0, 0]);
    }

    #[test]
    fn every_problem_is_reported_with_its_index() {
        let t = ty(Some(2), json!({"type": "object", "required": ["k"]}));
        let items = vec![
            json!({"media_id": "m", "start_ms": 0, "end_ms": 1, "data": {"k": 1}}),
            json!({"media_id": "", "start_ms": 5, "end_ms": 1, "confidence": 2,
                   "bbox": {"x": 0.9, "y": 0, "w": 0.5, "h": 0.1}, "embedding": [1.0],
                   "id": "nope", "extra": 1}),
        ];
        let errs = annotation_batch(&items, &t, &Limits::default()).unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert!(errs.iter().all(|e| e.index == Some(1)), "{errs:?}");
        for f in [
            "media_id",
            "end_ms",
            "confidence",
            "bbox",
            "embedding",
            "id",
            "extra",
            "data",
        ] {
            assert!(fields.contains(&f), "missing {f} in {fields:?}");
        }
    }

    #[test]
    fn embeddings_need_a_declared_dimension() {
        let t = ty(None, json!({}));
        let e = annotation(
            &json!({"media_id": "m", "start_ms": 0, "end_ms": 1, "embedding": [1.0]}),
            &t,
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(e[0].field, "embedding");
    }

    #[test]
    fn limits_bind() {
        let t = ty(None, json!({}));
        let limits = Limits::default();
        let long = "x".repeat(257);
        let e = annotation(
            &json!({"media_id": long, "start_ms": 0, "end_ms": 1, "label": long}),
            &t,
            &limits,
        )
        .unwrap_err();
        assert_eq!(e.len(), 2);
        let mut deep = json!(1);
        for _ in 0..40 {
            deep = json!([deep]);
        }
        let e = annotation(
            &json!({"media_id": "m", "start_ms": 0, "end_ms": 1, "data": deep}),
            &t,
            &limits,
        )
        .unwrap_err();
        assert!(e[0].reason.contains("deeper"));
    }

    #[test]
    fn start_requests_are_checked() {
        let req = StartOperation {
            producer: None,
            annotation_type: String::new(),
            annotation_type_version: 1,
            pivot_id: "p".into(),
            lease_seconds: Some(8 * 24 * 3600),
            metadata: None,
        };
        let errs = start_operation(&req, &Limits::default()).unwrap_err();
        assert_eq!(errs.len(), 2);
    }

    #[test]
    fn bad_schemas_are_refused() {
        let def = TypeDefinition {
            schema: json!({"type": 12}),
            embedding_dim: Some(0),
        };
        assert_eq!(type_definition("t", 0, &def, &Limits::default()).len(), 3);
    }
}
