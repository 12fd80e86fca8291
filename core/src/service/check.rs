//! Checking a search's filters before any engine sees them, and filling in what the
//! client may leave out: the text fields to search (from the type schemas) and the
//! kinds of `data` fields (which the schemas declare).

use super::Service;
use crate::error::{Error, FieldError};
use crate::model::{AnnotationType, SearchFilter};
use crate::query::{self, FieldKind, SchemaFields};
use crate::validate::Limits;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the list of registered types is reused for checking searches. Types are
/// immutable once registered; only new ones can appear, so a short reuse is safe.
const TYPES_TTL: Duration = Duration::from_secs(2);

/// The registered types, read at most every [`TYPES_TTL`].
#[derive(Default)]
pub(crate) struct TypeList {
    cached: parking_lot::Mutex<Option<(Instant, Arc<Vec<AnnotationType>>)>>,
}

impl Service {
    async fn registered_types(&self) -> Result<Arc<Vec<AnnotationType>>, Error> {
        if let Some((at, types)) = self.type_list.cached.lock().as_ref()
            && at.elapsed() < TYPES_TTL
        {
            return Ok(types.clone());
        }
        let types = Arc::new(self.engines.store.list_types().await?);
        *self.type_list.cached.lock() = Some((Instant::now(), types.clone()));
        Ok(types)
    }

    /// Checks every filter and returns the filter engines get: text fields filled in.
    pub(crate) async fn check_filter(&self, filter: &SearchFilter) -> Result<SearchFilter, Error> {
        // The registered types are read only when a filter needs them.
        let registered = if filter.text.is_some() || filter.data.is_some() {
            self.registered_types().await?
        } else {
            Arc::default()
        };
        Service::check_search_filter(filter, &registered, &self.limits)
    }

    /// The checks of [`Service::check_filter`] without a store: `registered` are every
    /// registered type version (those in the filter's scope are picked from them).
    /// Returns the filter engines get (text fields filled in), or every problem.
    /// Public for the fuzz targets (`fuzz/`), which run it on arbitrary requests.
    pub fn check_search_filter(
        filter: &SearchFilter,
        registered: &[AnnotationType],
        limits: &Limits,
    ) -> Result<SearchFilter, Error> {
        let mut errors: Vec<FieldError> = Vec::new();
        let mut out = filter.clone();
        if let Some(r) = &filter.time_range
            && r.end_ms < r.start_ms
        {
            errors.push(FieldError::new(
                "time_range",
                "the end must not be before the start",
            ));
        }
        for (name, c) in [
            ("min_confidence", filter.min_confidence),
            ("max_confidence", filter.max_confidence),
        ] {
            if let Some(c) = c
                && !(0.0..=1.0).contains(&c)
            {
                errors.push(FieldError::new(name, "must be between 0 and 1"));
            }
        }
        for (name, list) in [
            ("media_ids", &filter.media_ids),
            ("annotation_types", &filter.annotation_types),
            ("labels", &filter.labels),
        ] {
            if let Some(list) = list {
                if list.is_empty() {
                    errors.push(FieldError::new(name, "must name at least one value"));
                } else if list.len() > limits.max_filter_values {
                    errors.push(FieldError::new(
                        name,
                        format!("at most {} values", limits.max_filter_values),
                    ));
                }
                if list.iter().any(|v| v.len() > limits.max_string_bytes) {
                    errors.push(FieldError::new(
                        name,
                        format!("values of at most {} bytes", limits.max_string_bytes),
                    ));
                }
            }
        }
        if let Some(r) = &filter.region
            && let Err(e) = r.check()
        {
            errors.push(FieldError::new("region", e));
        }
        let types = if filter.text.is_some() || filter.data.is_some() {
            in_scope(filter, registered)
        } else {
            Vec::new()
        };
        if let Some(t) = &filter.text {
            match check_text(t, &types, limits.max_string_bytes) {
                Ok(fields) => {
                    if let Some(text) = out.text.as_mut() {
                        text.fields = fields;
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        if let Some(conds) = &filter.data {
            if conds.is_empty() || conds.len() > limits.max_data_conditions {
                errors.push(FieldError::new(
                    "data",
                    format!("between 1 and {} conditions", limits.max_data_conditions),
                ));
            }
            for (i, c) in conds.iter().enumerate() {
                if let Err(reason) = check_data(c, &types) {
                    errors.push(FieldError::new(format!("data[{i}]"), reason));
                }
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(Error::Invalid(errors))
        }
    }
}

/// The type versions of `all` that a filter can match.
fn in_scope(filter: &SearchFilter, all: &[AnnotationType]) -> Vec<AnnotationType> {
    all.iter()
        .filter(|t| {
            filter.annotation_type.as_ref().is_none_or(|n| *n == t.name)
                && filter
                    .annotation_types
                    .as_ref()
                    .is_none_or(|ns| ns.contains(&t.name))
                && filter
                    .annotation_type_version
                    .is_none_or(|v| v == t.version)
        })
        .cloned()
        .collect()
}

/// The text fields a query searches: the client's (each must be the label or a field
/// some type in scope marks for text search), or else the label and every such field.
fn check_text(
    t: &query::TextQuery,
    types: &[AnnotationType],
    max_bytes: usize,
) -> Result<Vec<String>, FieldError> {
    let err = |reason: String| FieldError::new("text", reason);
    if t.query.len() > max_bytes {
        return Err(err(format!("query of at most {max_bytes} bytes")));
    }
    let n = query::tokens(&t.query).len();
    if n == 0 {
        return Err(err("query has no words to search for".into()));
    }
    if n > query::MAX_QUERY_TOKENS {
        return Err(err(format!(
            "query of at most {} words",
            query::MAX_QUERY_TOKENS
        )));
    }
    let mut searchable: Vec<String> = vec![query::LABEL_FIELD.to_owned()];
    for ty in types {
        for f in SchemaFields::of(&ty.schema).text {
            if !searchable.contains(&f) {
                searchable.push(f);
            }
        }
    }
    if t.fields.is_empty() {
        return Ok(searchable);
    }
    for f in &t.fields {
        if !searchable.contains(f) {
            return Err(err(format!(
                "field {f:?} is not searchable: use \"label\" or \"data.<name>\" of a string \
                 property that a type in scope marks \"{}\": \"text\"",
                query::TEXT_KEYWORD
            )));
        }
    }
    Ok(t.fields.clone())
}

/// A data condition must name a field that a type in scope declares, with a value of
/// the declared kind, and bounds only on numbers.
fn check_data(c: &query::DataCondition, types: &[AnnotationType]) -> Result<(), String> {
    let kinds: Vec<FieldKind> = types
        .iter()
        .filter_map(|t| SchemaFields::of(&t.schema).filters.get(&c.field).copied())
        .collect();
    let Some(kind) = kinds.first().copied() else {
        return Err(format!(
            "field {:?} is not declared (a top-level string, number, integer or boolean \
             property) by the schema of any type in scope; name the type to search",
            c.field
        ));
    };
    if kinds.iter().any(|k| *k != kind) {
        return Err(format!(
            "field {:?} has different kinds in the types in scope; name one type",
            c.field
        ));
    }
    if c.eq.is_none() && !c.has_bounds() {
        return Err("give eq, or a bound (gt, gte, lt, lte)".into());
    }
    let eq_ok = matches!(
        (&c.eq, kind),
        (None, _)
            | (Some(Value::String(_)), FieldKind::String)
            | (Some(Value::Number(_)), FieldKind::Number)
            | (Some(Value::Bool(_)), FieldKind::Boolean)
    );
    if !eq_ok {
        return Err(format!(
            "eq must be a {} for field {:?}",
            kind_name(kind),
            c.field
        ));
    }
    if c.has_bounds() && kind != FieldKind::Number {
        return Err(format!(
            "bounds apply to numbers only; field {:?} is a {}",
            c.field,
            kind_name(kind)
        ));
    }
    Ok(())
}

fn kind_name(k: FieldKind) -> &'static str {
    match k {
        FieldKind::String => "string",
        FieldKind::Number => "number",
        FieldKind::Boolean => "boolean",
    }
}
