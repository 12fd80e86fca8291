//! The terms that text and `data` filters search, and how they are encoded.
//!
//! Both live in bytes fields (no tokenizer, no JSON paths): each term names what it came
//! from, `[kind][name length, u32 big-endian][name][value]`, so one field holds every
//! name's terms and no two (name, value) pairs share a term, whatever bytes the names
//! hold (dots, NULs, the empty name).
//!
//! - Text: one term per token of the label (name `label`) and of each top-level string
//!   of `data` (name `data.<key>`), the tokens being exactly [`query::tokens`]: the
//!   index calls the function that defines them instead of imitating it with a tantivy
//!   tokenizer (whose default keeps tokens shorter than 40 bytes, where the definition
//!   keeps up to 40, and lower-cases a final sigma differently).
//! - Data: for each top-level field of `data`, a presence term, and a term for its value
//!   when it is a string (its bytes), a number (as f64, `-0` as `0`, in an order-keeping
//!   8-byte form so ranges are term ranges) or a boolean.

use annostore_core::model::Annotation;
use annostore_core::query::{self, DATA_PREFIX, LABEL_FIELD};
use serde_json::Value;
use std::collections::BTreeSet;

/// A text token of a field.
pub(crate) const TEXT: u8 = b't';
/// A data field is present (with any value).
pub(crate) const PRESENT: u8 = b'e';
/// A data field's string value.
pub(crate) const STRING: u8 = b's';
/// A data field's number, as f64.
pub(crate) const NUMBER: u8 = b'n';
/// A data field's boolean.
pub(crate) const BOOL: u8 = b'b';

/// `[kind][name length][name]`: what every term of `name` starts with.
pub(crate) fn prefix(kind: u8, name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + name.len() + 8);
    out.push(kind);
    // A name longer than 4 GiB cannot reach here (documents are far smaller).
    out.extend_from_slice(&(name.len() as u32).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out
}

/// The term of `value` under `name`.
pub(crate) fn term(kind: u8, name: &str, value: &[u8]) -> Vec<u8> {
    let mut out = prefix(kind, name);
    out.extend_from_slice(value);
    out
}

/// A number as indexed: f64, `-0` folded into `0` (they compare equal), in 8 bytes
/// whose byte order is the numbers' order.
pub(crate) fn number(x: f64) -> [u8; 8] {
    let x = if x == 0.0 { 0.0 } else { x };
    tantivy::f64_to_u64(x).to_be_bytes()
}

/// The text terms of an annotation (each once).
pub(crate) fn text_terms(a: &Annotation) -> BTreeSet<Vec<u8>> {
    let mut out = BTreeSet::new();
    if let Some(label) = &a.label {
        for t in query::tokens(label) {
            out.insert(term(TEXT, LABEL_FIELD, t.as_bytes()));
        }
    }
    if let Some(Value::Object(data)) = &a.data {
        for (key, v) in data {
            if let Some(s) = v.as_str() {
                let name = format!("{DATA_PREFIX}{key}");
                for t in query::tokens(s) {
                    out.insert(term(TEXT, &name, t.as_bytes()));
                }
            }
        }
    }
    out
}

/// The data terms of an annotation.
pub(crate) fn data_terms(a: &Annotation) -> Vec<Vec<u8>> {
    let Some(Value::Object(data)) = &a.data else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(data.len() * 2);
    for (key, v) in data {
        out.push(prefix(PRESENT, key));
        match v {
            Value::String(s) => out.push(term(STRING, key, s.as_bytes())),
            Value::Bool(b) => out.push(term(BOOL, key, &[u8::from(*b)])),
            Value::Number(n) => {
                if let Some(x) = n.as_f64() {
                    out.push(term(NUMBER, key, &number(x)));
                }
            }
            Value::Null | Value::Array(_) | Value::Object(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_run_into_values() {
        assert_ne!(term(STRING, "a", b"bc"), term(STRING, "ab", b"c"));
        assert_ne!(term(TEXT, "", b"x"), term(TEXT, "x", b""));
        assert!(term(NUMBER, "n", &[0; 8]).starts_with(&prefix(NUMBER, "n")));
    }

    #[test]
    fn numbers_keep_their_order() {
        let xs = [
            f64::NEG_INFINITY,
            -1e300,
            -2.5,
            -1.0,
            -0.0,
            0.0,
            1e-300,
            0.5,
            3.0,
            1e300,
        ];
        for w in xs.windows(2) {
            assert!(number(w[0]) <= number(w[1]), "{} <= {}", w[0], w[1]);
        }
        assert_eq!(number(-0.0), number(0.0));
        assert!(number(-1.0) < number(-0.5));
    }
}
