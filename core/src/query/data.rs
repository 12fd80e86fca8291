//! Conditions on `data` fields, and what a type schema declares searchable.

use super::text::DATA_PREFIX;
use crate::model::Annotation;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// A condition on one top-level field of `data`. `eq` compares strings exactly, numbers
/// as f64 and booleans; the bounds compare numbers (as f64). Every part given must hold;
/// an annotation without the field, or with a value of another kind, never matches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataCondition {
    pub field: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eq: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gte: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lte: Option<f64>,
}

impl DataCondition {
    pub fn has_bounds(&self) -> bool {
        self.gt.is_some() || self.gte.is_some() || self.lt.is_some() || self.lte.is_some()
    }

    pub fn matches(&self, a: &Annotation) -> bool {
        let Some(v) = a.data.as_ref().and_then(|d| d.get(&self.field)) else {
            return false;
        };
        let eq = match &self.eq {
            None => true,
            Some(Value::String(s)) => v.as_str() == Some(s),
            Some(Value::Bool(b)) => v.as_bool() == Some(*b),
            Some(Value::Number(n)) => n.as_f64().is_some_and(|n| v.as_f64() == Some(n)),
            Some(_) => false,
        };
        eq && (!self.has_bounds() || {
            v.as_f64().is_some_and(|x| {
                self.gt.is_none_or(|b| x > b)
                    && self.gte.is_none_or(|b| x >= b)
                    && self.lt.is_none_or(|b| x < b)
                    && self.lte.is_none_or(|b| x <= b)
            })
        })
    }
}

/// What a type schema says about a top-level `data` field, for search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    String,
    Number,
    Boolean,
}

/// The searchable fields that a type's JSON Schema declares: its top-level
/// `properties` of type string, number, integer or boolean. A string property with
/// `"x-annostore-search": "text"` is also searched by text queries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaFields {
    pub filters: BTreeMap<String, FieldKind>,
    pub text: Vec<String>,
}

/// The schema keyword that marks a string property for full-text search.
pub const TEXT_KEYWORD: &str = "x-annostore-search";

impl SchemaFields {
    pub fn of(schema: &Value) -> SchemaFields {
        let mut out = SchemaFields::default();
        let Some(props) = schema.get("properties").and_then(Value::as_object) else {
            return out;
        };
        for (name, p) in props {
            // "string", or ["string", "null"]: one type besides null.
            let ty = match p.get("type") {
                Some(Value::String(t)) => Some(t.as_str()),
                Some(Value::Array(ts)) => {
                    let named: Vec<&str> = ts
                        .iter()
                        .filter_map(Value::as_str)
                        .filter(|t| *t != "null")
                        .collect();
                    (named.len() == 1).then(|| named[0])
                }
                _ => None,
            };
            let kind = match ty {
                Some("string") => FieldKind::String,
                Some("number" | "integer") => FieldKind::Number,
                Some("boolean") => FieldKind::Boolean,
                _ => continue,
            };
            out.filters.insert(name.clone(), kind);
            if kind == FieldKind::String
                && p.get(TEXT_KEYWORD).and_then(Value::as_str) == Some("text")
            {
                out.text.push(format!("{DATA_PREFIX}{name}"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_fields() {
        let s = serde_json::json!({"properties": {
            "caption": {"type": "string", "x-annostore-search": "text"},
            "kind": {"type": "string"},
            "speed": {"type": "number"},
            "n": {"type": "integer"},
            "ok": {"type": "boolean"},
            "maybe": {"type": ["number", "null"]},
            "either": {"type": ["number", "string"]},
            "nested": {"type": "object"}
        }});
        let f = SchemaFields::of(&s);
        assert_eq!(f.text, vec!["data.caption"]);
        assert_eq!(f.filters.len(), 6);
        assert_eq!(f.filters["maybe"], FieldKind::Number);
        assert!(!f.filters.contains_key("either"));
        assert_eq!(f.filters["n"], FieldKind::Number);
    }
}
