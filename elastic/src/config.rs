//! How to reach the cluster and how to write to it: [`ElasticConfig`].

use annostore_core::index::IndexError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Elasticsearch's default `index.max_terms_count`: the most values one `terms` query
/// may carry.
pub const MAX_TERMS: usize = 65_536;

/// The Elasticsearch index's settings. Every field has a default, so an empty table
/// is a local single-node cluster without security.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ElasticConfig {
    /// One node's base URL (http or https); requests go to this node only.
    pub url: String,
    /// The index, or an alias with one write index, that holds the annotations.
    pub index: String,
    /// Basic authentication (with `password`).
    pub username: Option<String>,
    pub password: Option<String>,
    /// An API key in its encoded form (base64 of `id:key`, as Elasticsearch returns it
    /// in `encoded`). Takes precedence over username/password.
    pub api_key: Option<String>,
    /// A PEM file of the CA certificate(s) that signed the cluster's HTTPS certificate
    /// (Elasticsearch 8+ generates its own CA at install: `config/certs/http_ca.crt`).
    /// Without it, https URLs are checked against the usual public roots.
    pub ca_cert: Option<String>,
    /// Most documents in one `_bulk` request; larger upserts are split.
    pub bulk_max_docs: usize,
    /// Retries of a failed request, or of a bulk's failed items, before giving up.
    pub max_retries: u32,
    /// The first retry waits about this long; each next one twice as long (with
    /// jitter), up to [`ElasticConfig::retry_max_backoff_ms`].
    pub retry_backoff_ms: u64,
    /// The longest wait between two retries.
    pub retry_max_backoff_ms: u64,
    /// Timeout of one HTTP request, connect to last byte.
    pub request_timeout_ms: u64,
    /// Primary shards of a new index (`schema apply`).
    pub shards: u32,
    /// Replicas of a new index (`schema apply`).
    pub replicas: u32,
    /// The index's `refresh_interval` (`schema apply`). Upserts wait for a refresh
    /// (`refresh=wait_for`), so this is also their longest extra latency; "-1" is
    /// refused for that reason.
    pub refresh_interval: String,
    /// Searches over a visibility snapshot of at most this many active operations send
    /// the snapshot as a `terms` filter; larger snapshots are checked on the hits.
    pub scope_terms_max: usize,
}

impl Default for ElasticConfig {
    fn default() -> Self {
        ElasticConfig {
            url: "http://127.0.0.1:9200".into(),
            index: "annostore-annotations".into(),
            username: None,
            password: None,
            api_key: None,
            ca_cert: None,
            bulk_max_docs: 1_000,
            max_retries: 5,
            retry_backoff_ms: 100,
            retry_max_backoff_ms: 5_000,
            request_timeout_ms: 30_000,
            shards: 1,
            replicas: 1,
            refresh_interval: "1s".into(),
            scope_terms_max: 1_024,
        }
    }
}

/// Secrets stay out of logs.
impl fmt::Debug for ElasticConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("ElasticConfig")
            .field("url", &self.url)
            .field("index", &self.index)
            .field("username", &self.username)
            .field("password", &redact(&self.password))
            .field("api_key", &redact(&self.api_key))
            .field("ca_cert", &self.ca_cert)
            .field("bulk_max_docs", &self.bulk_max_docs)
            .field("max_retries", &self.max_retries)
            .field("retry_backoff_ms", &self.retry_backoff_ms)
            .field("retry_max_backoff_ms", &self.retry_max_backoff_ms)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("shards", &self.shards)
            .field("replicas", &self.replicas)
            .field("refresh_interval", &self.refresh_interval)
            .field("scope_terms_max", &self.scope_terms_max)
            .finish()
    }
}

impl ElasticConfig {
    /// Checks what the cluster would refuse later, or what would make the adapter
    /// misbehave, so a bad config fails at start-up.
    pub fn validate(&self) -> Result<(), IndexError> {
        let bad = |what: String| Err(IndexError::Rejected(format!("elastic config: {what}")));
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return bad(format!(
                "url {:?} must start with http:// or https://",
                self.url
            ));
        }
        let index_ok = !self.index.is_empty()
            && self.index.len() <= 255
            && !self.index.starts_with(['-', '_', '+', '.'])
            && self.index.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
            });
        if !index_ok {
            return bad(format!(
                "index {:?} must be lower-case letters, digits, '-', '_' or '.', not starting with '-', '_' or '.'",
                self.index
            ));
        }
        if self.username.is_some() != self.password.is_some() {
            return bad("username and password go together".into());
        }
        if self.bulk_max_docs == 0 {
            return bad("bulk_max_docs must be at least 1".into());
        }
        if self.request_timeout_ms == 0 {
            return bad("request_timeout_ms must be at least 1".into());
        }
        if self.shards == 0 {
            return bad("shards must be at least 1".into());
        }
        let interval = self.refresh_interval.trim();
        if interval.is_empty() || interval.starts_with('-') {
            return bad(format!(
                "refresh_interval {:?} must be a positive time (upserts wait for a refresh)",
                self.refresh_interval
            ));
        }
        if self.scope_terms_max > MAX_TERMS {
            return bad(format!("scope_terms_max must be at most {MAX_TERMS}"));
        }
        Ok(())
    }

    /// The name of the index template that `schema apply` writes.
    pub fn template_name(&self) -> String {
        format!("{}-template", self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_secrets_do_not_print() {
        let mut c = ElasticConfig::default();
        assert!(c.validate().is_ok());
        c.username = Some("u".into());
        c.password = Some("hunter2".into());
        c.api_key = Some("c2VjcmV0".into());
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("c2VjcmV0"),
            "{shown}"
        );
    }

    #[test]
    fn bad_values_are_refused() {
        type Change = Box<dyn Fn(&mut ElasticConfig)>;
        let cases: Vec<(&str, Change)> = vec![
            ("url", Box::new(|c| c.url = "localhost:9200".into())),
            ("upper-case index", Box::new(|c| c.index = "Annos".into())),
            ("index starting with _", Box::new(|c| c.index = "_x".into())),
            (
                "user without password",
                Box::new(|c| c.username = Some("u".into())),
            ),
            ("bulk 0", Box::new(|c| c.bulk_max_docs = 0)),
            ("refresh -1", Box::new(|c| c.refresh_interval = "-1".into())),
            ("terms", Box::new(|c| c.scope_terms_max = MAX_TERMS + 1)),
        ];
        for (what, change) in cases {
            let mut c = ElasticConfig::default();
            change(&mut c);
            assert!(
                matches!(c.validate(), Err(IndexError::Rejected(_))),
                "{what} accepted"
            );
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let parsed: Result<ElasticConfig, _> =
            serde_json::from_value(serde_json::json!({"url": "http://h:9200", "shardz": 2}));
        assert!(parsed.is_err());
        let parsed: ElasticConfig =
            serde_json::from_value(serde_json::json!({"index": "x", "replicas": 0})).unwrap();
        assert_eq!(parsed.replicas, 0);
        assert_eq!(parsed.url, ElasticConfig::default().url);
    }
}
