//! [`ElasticIndex`]: the [`Index`] seam on Elasticsearch.
//!
//! - upsert: `_bulk` index-by-id with `refresh=wait_for`, so an Ok means durable (the
//!   translog is fsynced per request by default) and searchable. A bulk answered 200
//!   can still have failed items: each is read; the retryable ones (429, 5xx, 409) are
//!   sent again, alone, with exponential backoff and jitter, up to `max_retries`; a
//!   non-retryable item makes the call fail with [`IndexError::Rejected`]. Nothing is
//!   dropped: the call succeeds only when every document is indexed.
//! - search: filters as `bool.filter` clauses (`body::filter_clauses`, the semantics of
//!   `annostore_core::query::matches`), sorted (media_id, start_ms, id) or, in
//!   confidence order, by `rank_confidence` first; cursor as `search_after`. The scope
//!   is a term (one operation), a `terms` filter on the operation key (small
//!   snapshots), or, for large snapshots, a check of every hit against the snapshot
//!   with further rounds until the page is full (at most [`MAX_FILL_ROUNDS`] rounds of
//!   growing size; past that the search fails rather than return a short page, which
//!   callers read as the end of the results). The score order is refused: it belongs
//!   to kNN.
//! - knn: first the mapping of `embedding_<dims>` (no field: no neighbours; a field
//!   that is not a `cosine` dense_vector, as schema version 1 made them: refused), then
//!   Elasticsearch's approximate `knn` search with the filter and scope clauses as its
//!   `filter`. A large snapshot (no scope clause) is checked on the hits, asking for
//!   more neighbours each round (doubling up to [`body::MAX_KNN`]); when even that
//!   many hold fewer than `k` in scope while more exist, the search fails
//!   ([`IndexError::Unavailable`]) rather than return fewer. Similarities are
//!   Elasticsearch's cosine scores turned back into cosines (`2 * score - 1`).
//! - aggregate: one `size: 0` search with `track_total_hits` and the aggregations of
//!   `body::aggregate`. The scope must be a clause: counts cannot be checked hit by
//!   hit, so a snapshot above `scope_terms_max` is refused ([`IndexError::Unanswerable`], a 422).
//! - refresh: `<index>/_refresh` (GET, as the client sends it), which also releases
//!   waiting upserts early.
//! - delete_operation: `_delete_by_query` on the `operation_id` term with
//!   `refresh=true` (the documents are gone from searches when it returns) and
//!   `conflicts=proceed` (a document rewritten meanwhile, by a replay, is left and
//!   logged; garbage collection deletes again after the store). A 5xx or 429 is retried
//!   like any request (deleting again is harmless); an answer that timed out or lists
//!   failures is [`IndexError::Unavailable`]: some documents may remain.
//!
//! Metrics: `annostore_elastic_retries_total{request}`, `annostore_elastic_knn_rounds`,
//! `annostore_elastic_bulk_documents_retried_total`,
//! `annostore_elastic_bulk_documents_refused_total`,
//! `annostore_elastic_bulk_documents_superseded_total`, `annostore_elastic_search_rounds`.
//!
//! Ordering across processes: the service writes through `upsert_versioned`, with a
//! version derived from the operation's (`annostore_core::index::batch_version`,
//! `replay_version`), sent as an external version (`version_type=external_gte`). For
//! one id it only grows, so a late, older copy from another node is refused with a 409, which
//! counts as done (`annostore_elastic_bulk_documents_superseded_total`); a replay of the
//! same version rewrites. Plain `upsert` (no version) is last-write-wins, and a 409 there
//! is retried.

use crate::body::{self, ScopePlan};
use crate::config::ElasticConfig;
use crate::response::{self, Verdict};
use annostore_core::index::Position;
use annostore_core::index::{
    AggregateQuery, Existing, Hit, Index, IndexError, IndexQuery, KnnHit, KnnQuery,
};
use annostore_core::model::Annotation;
use annostore_core::query::{self, Aggregates, SortOrder};
use async_trait::async_trait;
use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::Url;
use elasticsearch::http::response::Response;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::indices::{IndicesGetFieldMappingParts, IndicesRefreshParts};
use elasticsearch::params::Conflicts;
use elasticsearch::{CountParts, DeleteByQueryParts, Elasticsearch, SearchParts};
use serde_json::Value;
use std::time::Duration;
use tracing::warn;
use uuid::Uuid;

mod bulk;

/// Rounds of one search when hits are checked against a large snapshot. Rounds start
/// at twice the page (at least 100 hits) and double up to [`MAX_ROUND_SIZE`], so a
/// search looks at about 100,000 documents at most (from 100: 100 + 200 + ... +
/// 6,400, then 10,000 per round) before giving up with [`IndexError::Unavailable`].
pub const MAX_FILL_ROUNDS: usize = 16;

/// The most hits one search request asks for (Elasticsearch's default
/// `index.max_result_window` bounds `size` even with `search_after`).
pub const MAX_ROUND_SIZE: usize = 10_000;

const BULK_FILTER: &[&str] = &["errors", "items.*._id", "items.*.status", "items.*.error"];
const SEARCH_FILTER: &[&str] = &[
    "timed_out",
    "_shards.failed",
    "hits.hits.sort",
    "hits.hits.fields",
];
const KNN_FILTER: &[&str] = &[
    "timed_out",
    "_shards.failed",
    "hits.hits._score",
    "hits.hits.fields",
];

/// The Elasticsearch index behind [`Index`]. Cheap to clone (one HTTP client).
#[derive(Clone)]
pub struct ElasticIndex {
    pub(crate) client: Elasticsearch,
    pub(crate) config: ElasticConfig,
}

impl std::fmt::Debug for ElasticIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElasticIndex")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> IndexError {
    IndexError::Unavailable(e.to_string())
}

/// One answer read whole: status and body.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

pub(crate) async fn read(sent: Result<Response, elasticsearch::Error>) -> Result<Answer, String> {
    let response = sent.map_err(|e| format!("request failed: {e}"))?;
    let status = response.status_code().as_u16();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("reading the response failed: {e}"))?;
    Ok(Answer {
        status,
        body: body.to_vec(),
    })
}

impl ElasticIndex {
    /// A client for the cluster at `config.url`. Sends nothing: a cluster that is down
    /// shows as [`IndexError::Unavailable`] on the first call. Call [`apply_schema`]
    /// once (`annostore schema apply`) before the first write.
    pub fn connect(config: &ElasticConfig) -> Result<ElasticIndex, IndexError> {
        config.validate()?;
        // A base URL without a trailing slash would lose its last path segment when
        // the client joins request paths onto it.
        let mut base = config.url.clone();
        if !base.ends_with('/') {
            base.push('/');
        }
        let url = Url::parse(&base).map_err(|e| {
            IndexError::Rejected(format!("elastic config: url {:?}: {e}", config.url))
        })?;
        let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url))
            .timeout(Duration::from_millis(config.request_timeout_ms));
        if let Some(path) = &config.ca_cert {
            let pem = std::fs::read(path).map_err(|e| {
                IndexError::Rejected(format!("elastic config: ca_cert {path:?}: {e}"))
            })?;
            let cert = Certificate::from_pem(&pem).map_err(|e| {
                IndexError::Rejected(format!("elastic config: ca_cert {path:?}: {e}"))
            })?;
            builder = builder.cert_validation(CertificateValidation::Full(cert));
        }
        if let Some(key) = &config.api_key {
            builder = builder.auth(Credentials::EncodedApiKey(key.clone()));
        } else if let (Some(u), Some(p)) = (&config.username, &config.password) {
            builder = builder.auth(Credentials::Basic(u.clone(), p.clone()));
        }
        let transport = builder
            .build()
            .map_err(|e| IndexError::Rejected(format!("elastic client: {e}")))?;
        Ok(ElasticIndex {
            client: Elasticsearch::new(transport),
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &ElasticConfig {
        &self.config
    }

    /// The client, for what the adapter does not wrap (tests, admin tools).
    pub fn client(&self) -> &Elasticsearch {
        &self.client
    }

    /// How long to wait before retry number `attempt` (1-based): exponential from
    /// `retry_backoff_ms`, capped, with "equal jitter" (between half and all of it) so
    /// that writers rejected together do not come back together.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let base = self.config.retry_backoff_ms.max(1);
        let exp = base.saturating_mul(1u64 << attempt.saturating_sub(1).min(20));
        let capped = exp.min(self.config.retry_max_backoff_ms.max(base));
        let half = capped / 2;
        Duration::from_millis(half + fastrand::u64(0..=capped - half))
    }

    /// Sends a request (built anew per attempt by `send`) until it succeeds, fails for
    /// good, or `max_retries` retries are spent.
    pub(crate) async fn with_retries<F, Fut>(
        &self,
        what: &str,
        send: F,
    ) -> Result<Vec<u8>, IndexError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Response, elasticsearch::Error>>,
    {
        let mut attempt = 0u32;
        loop {
            let failure = match read(send().await).await {
                Err(e) => e,
                Ok(a) => match response::verdict(a.status) {
                    Verdict::Done => return Ok(a.body),
                    Verdict::Reject => {
                        return Err(IndexError::Rejected(format!(
                            "{what}: {}",
                            response::describe_body(a.status, &a.body)
                        )));
                    }
                    Verdict::Retry => response::describe_body(a.status, &a.body),
                },
            };
            attempt += 1;
            if attempt > self.config.max_retries {
                return Err(IndexError::Unavailable(format!(
                    "{what}: failed {attempt} times, last: {failure}"
                )));
            }
            warn!(what, attempt, %failure, "elasticsearch request failed; retrying");
            metrics::counter!("annostore_elastic_retries_total", "request" => what.to_owned())
                .increment(1);
            tokio::time::sleep(self.backoff(attempt)).await;
        }
    }

    /// One search request: the hits after `after`.
    async fn search_round(
        &self,
        query: &IndexQuery,
        scope_clause: Option<&Value>,
        after: Option<&Position>,
        size: usize,
    ) -> Result<Vec<response::SearchHit>, IndexError> {
        let body = body::search(&query.filter, query.order, scope_clause, after, size)
            .map_err(IndexError::Unanswerable)?;
        let raw = self.send_search("search", &body, SEARCH_FILTER).await?;
        response::search_hits(&raw, query.order != SortOrder::Time).map_err(unavailable)
    }

    /// Sends a `_search` body (never partial results), with retries.
    async fn send_search(
        &self,
        what: &str,
        body: &Value,
        filter_path: &[&str],
    ) -> Result<Vec<u8>, IndexError> {
        let index = [self.config.index.as_str()];
        self.with_retries(what, || async {
            let mut request = self
                .client
                .search(SearchParts::Index(&index))
                .allow_partial_search_results(false);
            if !filter_path.is_empty() {
                request = request.filter_path(filter_path);
            }
            request.body(body.clone()).send().await
        })
        .await
    }

    /// What the mapping says about an embedding field (see [`response::VectorField`]).
    async fn vector_field(&self, field: &str) -> Result<response::VectorField, IndexError> {
        let index = [self.config.index.as_str()];
        let fields = [field];
        let raw = self
            .with_retries("field mapping", || async {
                self.client
                    .indices()
                    .get_field_mapping(IndicesGetFieldMappingParts::IndexFields(&index, &fields))
                    .send()
                    .await
            })
            .await?;
        response::vector_field(&raw, field).map_err(unavailable)
    }
}

#[async_trait]
impl Index for ElasticIndex {
    async fn delete_operation(&self, operation_id: Uuid) -> Result<u64, IndexError> {
        let body = body::delete_operation(&operation_id);
        let index = [self.config.index.as_str()];
        let raw = self
            .with_retries("delete by query", || async {
                self.client
                    .delete_by_query(DeleteByQueryParts::Index(&index))
                    .refresh(true)
                    .conflicts(Conflicts::Proceed)
                    .body(body.clone())
                    .send()
                    .await
            })
            .await?;
        let done = response::deleted(&raw)
            .map_err(|e| IndexError::Unavailable(format!("operation {operation_id}: {e}")))?;
        if done.version_conflicts > 0 {
            warn!(
                operation = %operation_id,
                conflicts = done.version_conflicts,
                "documents rewritten during the delete were left in the index"
            );
        }
        Ok(done.deleted)
    }

    async fn upsert(
        &self,
        annotations: &[Annotation],
        _existing: Existing<'_>,
    ) -> Result<(), IndexError> {
        self.write(annotations, None).await
    }

    async fn upsert_versioned(
        &self,
        annotations: &[Annotation],
        _existing: Existing<'_>,
        version: u64,
    ) -> Result<(), IndexError> {
        self.write(annotations, Some(version)).await
    }

    async fn search(&self, query: &IndexQuery) -> Result<Vec<Hit>, IndexError> {
        if query.order == SortOrder::Score {
            return Err(IndexError::Unanswerable(
                "the score order belongs to nearest-neighbour searches".into(),
            ));
        }
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let plan = body::scope_plan(&query.filter, &query.scope, self.config.scope_terms_max);
        let (clause, mut size, grow) = match &plan {
            ScopePlan::Empty => return Ok(Vec::new()),
            ScopePlan::Exact(clause) => (clause.as_ref(), query.limit.min(MAX_ROUND_SIZE), false),
            // Ask for more than the page, and for twice as many each round: some hits
            // (possibly most: superseded runs stay in the index) are out of scope.
            ScopePlan::Check => (
                None,
                query.limit.saturating_mul(2).clamp(100, MAX_ROUND_SIZE),
                true,
            ),
        };
        let mut out: Vec<Hit> = Vec::with_capacity(query.limit.min(MAX_ROUND_SIZE));
        let mut after = query.after.clone();
        let mut scanned = 0usize;
        for round in 1..=MAX_FILL_ROUNDS {
            let hits = self
                .search_round(query, clause, after.as_ref(), size)
                .await?;
            let n = hits.len();
            scanned += n;
            for h in hits {
                after = Some(Position {
                    rank: h.rank,
                    key: h.key.clone(),
                });
                // Exact plans need no check; it is kept as a guard on the answer.
                if query.scope.allows_key(h.op_key) {
                    // Written by many nodes, in no one order: the store confirms.
                    out.push(Hit {
                        id: h.key.id,
                        key: h.key,
                        rank: h.rank,
                        annotation: None,
                    });
                    if out.len() == query.limit {
                        metrics::histogram!("annostore_elastic_search_rounds").record(round as f64);
                        return Ok(out);
                    }
                }
            }
            if n < size {
                metrics::histogram!("annostore_elastic_search_rounds").record(round as f64);
                return Ok(out);
            }
            if grow {
                size = size.saturating_mul(2).min(MAX_ROUND_SIZE);
            }
        }
        Err(IndexError::Unavailable(format!(
            "search looked at {scanned} documents in {MAX_FILL_ROUNDS} rounds and found only {} of {} in scope; narrow the filters",
            out.len(),
            query.limit
        )))
    }

    async fn knn(&self, query: &KnnQuery) -> Result<Vec<KnnHit>, IndexError> {
        if query.k == 0 || query.vector.is_empty() {
            return Ok(Vec::new());
        }
        if query.vector.iter().all(|x| *x == 0.0) {
            return Err(IndexError::Unanswerable(
                "a zero vector has no direction: cosine similarity is undefined".into(),
            ));
        }
        let plan = body::scope_plan(&query.filter, &query.scope, self.config.scope_terms_max);
        let (clause, checked) = match &plan {
            ScopePlan::Empty => return Ok(Vec::new()),
            ScopePlan::Exact(clause) => (clause.as_ref(), false),
            ScopePlan::Check => (None, true),
        };
        let field = body::embedding_field(query.vector.len());
        match self.vector_field(&field).await? {
            response::VectorField::Missing => return Ok(Vec::new()),
            response::VectorField::Cosine => {}
            response::VectorField::Other(what) => {
                return Err(IndexError::Rejected(format!(
                    "knn needs {field} to be a cosine dense_vector ({what}); reindex into an index made by schema version 2"
                )));
            }
        }
        let k = query.k.min(body::MAX_KNN);
        // A checked scope asks for more than k: some neighbours are out of scope.
        let mut want = if checked {
            k.saturating_mul(2).clamp(100, body::MAX_KNN)
        } else {
            k
        };
        let mut rounds = 0usize;
        loop {
            rounds += 1;
            let body = body::knn(&query.filter, clause, &query.vector, want)
                .map_err(IndexError::Unanswerable)?;
            let raw = self.send_search("knn", &body, KNN_FILTER).await?;
            let hits = response::knn_hits(&raw).map_err(unavailable)?;
            let n = hits.len();
            let mut out: Vec<KnnHit> = hits
                .into_iter()
                .filter(|h| query.scope.allows_key(h.op_key))
                .map(|h| KnnHit {
                    id: h.key.id,
                    key: h.key,
                    similarity: h.similarity,
                    annotation: None,
                })
                .collect();
            // All that match (fewer than asked for) or k in scope: the answer.
            if !checked || out.len() >= k || n < want {
                metrics::histogram!("annostore_elastic_knn_rounds").record(rounds as f64);
                out.sort_by(|a, b| {
                    query::compare(
                        SortOrder::Score,
                        (Some(a.similarity), &a.key),
                        (Some(b.similarity), &b.key),
                    )
                });
                out.truncate(k);
                return Ok(out);
            }
            if want >= body::MAX_KNN {
                return Err(IndexError::Unavailable(format!(
                    "knn: the {want} nearest neighbours hold only {} of {k} in scope; narrow the filters",
                    out.len()
                )));
            }
            want = want.saturating_mul(4).min(body::MAX_KNN);
        }
    }

    async fn aggregate(&self, query: &AggregateQuery) -> Result<Aggregates, IndexError> {
        let plan = body::scope_plan(&query.filter, &query.scope, self.config.scope_terms_max);
        let clause = match &plan {
            ScopePlan::Empty => {
                return Ok(query::finish_aggregates(
                    &query.spec,
                    0,
                    Default::default(),
                    Default::default(),
                    Default::default(),
                ));
            }
            ScopePlan::Exact(clause) => clause.as_ref(),
            ScopePlan::Check => {
                return Err(IndexError::Unanswerable(format!(
                    "aggregations need the scope as a filter, and this snapshot has more than scope_terms_max ({}) active operations; raise scope_terms_max (at most {}) or filter on one operation",
                    self.config.scope_terms_max,
                    crate::config::MAX_TERMS
                )));
            }
        };
        let body = body::aggregate(&query.filter, clause, &query.spec)
            .map_err(IndexError::Unanswerable)?;
        let raw = self.send_search("aggregate", &body, &[]).await?;
        response::aggregates(&raw, &query.spec).map_err(unavailable)
    }

    async fn count_operation(&self, operation_id: Uuid) -> Result<u64, IndexError> {
        let body = body::count_operation(&operation_id);
        let index = [self.config.index.as_str()];
        let raw = self
            .with_retries("count", || async {
                self.client
                    .count(CountParts::Index(&index))
                    .body(body.clone())
                    .send()
                    .await
            })
            .await?;
        response::count(&raw).map_err(unavailable)
    }

    async fn refresh(&self) {
        let index = [self.config.index.as_str()];
        let sent = self
            .client
            .indices()
            .refresh(IndicesRefreshParts::Index(&index))
            .send()
            .await;
        match read(sent).await {
            Ok(a) if response::verdict(a.status) == Verdict::Done => {}
            Ok(a) => warn!(
                failure = %response::describe_body(a.status, &a.body),
                "elasticsearch refresh failed"
            ),
            Err(e) => warn!(failure = %e, "elasticsearch refresh failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use annostore_core::index::latest_per_id;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let es = ElasticIndex::connect(&ElasticConfig {
            retry_backoff_ms: 100,
            retry_max_backoff_ms: 1_000,
            ..ElasticConfig::default()
        })
        .unwrap();
        for _ in 0..50 {
            let ms = |attempt| es.backoff(attempt).as_millis() as u64;
            assert!((50..=100).contains(&ms(1)));
            assert!((100..=200).contains(&ms(2)));
            assert!((200..=400).contains(&ms(3)));
            assert!((500..=1_000).contains(&ms(5)));
            assert!((500..=1_000).contains(&ms(60)), "no overflow far out");
        }
    }

    #[test]
    fn the_last_copy_of_an_id_wins_in_first_seen_order() {
        let op = Uuid::new_v4();
        let a = annostore_core::testkit::index::annotation(op, "m", 0, 1);
        let b = annostore_core::testkit::index::annotation(op, "m", 5, 6);
        let mut a2 = a.clone();
        a2.start_ms = 9;
        let all = [a.clone(), b.clone(), a2.clone()];
        let latest = latest_per_id(&all);
        assert_eq!(latest, vec![&b, &a2]);
    }
}
