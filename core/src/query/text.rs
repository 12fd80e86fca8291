//! Full-text search: tokens, fuzzy matching and which fields a text query reads.

use crate::model::Annotation;
use serde::{Deserialize, Serialize};

/// Longest token that text search indexes, in bytes (Elasticsearch's mapping drops
/// longer ones with a `length` filter; tantivy's default tokenizer would also drop
/// tokens of exactly 40 bytes, so the tantivy index does not use it).
pub const MAX_TOKEN_BYTES: usize = 40;
/// Most tokens in one text query.
pub const MAX_QUERY_TOKENS: usize = 16;

/// Full-text search: every token of `query` must match a token of one of `fields`
/// (`label`, or `data.<name>` for a string field of `data` that the type schema marks
/// `"x-annostore-search": "text"`). Fuzzy matching allows, per token, the edit
/// distance Elasticsearch's `AUTO` allows (0 for 1-2 characters, 1 for 3-5, 2 above),
/// with a transposition counting as one edit. The service fills `fields` in from the
/// type schemas when the client leaves it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextQuery {
    pub query: String,
    #[serde(default = "yes")]
    pub fuzzy: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

fn yes() -> bool {
    true
}

/// The label's text field name in [`TextQuery::fields`].
pub const LABEL_FIELD: &str = "label";
/// The prefix of a data field's name in [`TextQuery::fields`].
pub const DATA_PREFIX: &str = "data.";

/// How text is cut into tokens: runs of alphanumeric characters, tokens longer than
/// [`MAX_TOKEN_BYTES`] (before lower-casing) dropped, lower-cased by
/// `str::to_lowercase` (a final sigma becomes `ς`). Close to tantivy's default
/// tokenizer, which differs at 40 bytes and on the final sigma.
pub fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN_BYTES)
        .map(str::to_lowercase)
        .collect()
}

/// The edits a fuzzy query token may be away from a document token (Elasticsearch's
/// `fuzziness: AUTO`, by characters).
pub fn fuzzy_distance(token: &str) -> u8 {
    match token.chars().count() {
        0..=2 => 0,
        3..=5 => 1,
        _ => 2,
    }
}

/// True when query token `q` matches document token `t`.
pub fn token_matches(q: &str, t: &str, fuzzy: bool) -> bool {
    if !fuzzy {
        return q == t;
    }
    let d = fuzzy_distance(q);
    d == 0 && q == t || d > 0 && strsim::osa_distance(q, t) <= usize::from(d)
}

/// The text of one field of an annotation, as the index sees it.
pub fn field_text<'a>(a: &'a Annotation, field: &str) -> Option<&'a str> {
    if field == LABEL_FIELD {
        return a.label.as_deref();
    }
    let name = field.strip_prefix(DATA_PREFIX)?;
    a.data.as_ref()?.get(name)?.as_str()
}

impl TextQuery {
    pub fn matches(&self, a: &Annotation) -> bool {
        let doc: Vec<Vec<String>> = self
            .fields
            .iter()
            .filter_map(|f| field_text(a, f))
            .map(tokens)
            .collect();
        let query = tokens(&self.query);
        !query.is_empty()
            && query.iter().all(|q| {
                doc.iter()
                    .flatten()
                    .any(|t| token_matches(q, t, self.fuzzy))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzzy_text_finds_a_transposition() {
        assert!(token_matches("curtian", "curtain", true));
        assert!(!token_matches("curtian", "curtain", false));
        assert!(token_matches("cat", "cut", true));
        assert!(!token_matches("ca", "cb", true));
        assert!(!token_matches("cat", "dog", true));
        assert_eq!(tokens("Red-Car, parked!"), vec!["red", "car", "parked"]);
    }
}
