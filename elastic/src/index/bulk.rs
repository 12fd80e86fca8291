//! Writing to Elasticsearch: `_bulk` in chunks, each item's outcome read, and the
//! failed items retried (see the module comment of [`super`] for the rules).

use super::{BULK_FILTER, ElasticIndex, read};
use crate::body;
use crate::response::{self, Verdict};
use annostore_core::index::IndexError;
use annostore_core::index::latest_per_id;
use annostore_core::model::Annotation;
use elasticsearch::BulkParts;
use elasticsearch::params::Refresh;
use tracing::{debug, warn};

impl ElasticIndex {
    /// Index-by-id replaces natively: `Existing` changes nothing here.
    pub(super) async fn write(
        &self,
        annotations: &[Annotation],
        version: Option<u64>,
    ) -> Result<(), IndexError> {
        let latest = latest_per_id(annotations);
        for chunk in latest.chunks(self.config.bulk_max_docs) {
            self.bulk(chunk, version).await?;
        }
        Ok(())
    }

    /// Indexes one chunk; see the module comment for the retry rules.
    async fn bulk(&self, docs: &[&Annotation], version: Option<u64>) -> Result<(), IndexError> {
        let lines: Vec<Vec<u8>> = docs
            .iter()
            .map(|a| body::bulk_lines(a, version))
            .collect::<Result<_, _>>()
            .map_err(|e| IndexError::Rejected(format!("serialising a document: {e}")))?;
        let index = self.config.index.as_str();
        let mut pending: Vec<usize> = (0..docs.len()).collect();
        let mut attempt = 0u32;
        loop {
            let payload: Vec<u8> = pending
                .iter()
                .flat_map(|&i| lines[i].iter().copied())
                .collect();
            let sent = self
                .client
                .bulk(BulkParts::Index(index))
                .refresh(Refresh::WaitFor)
                .filter_path(BULK_FILTER)
                .body(vec![payload])
                .send()
                .await;
            let failure = match read(sent).await {
                Err(e) => e,
                Ok(a) => match response::verdict(a.status) {
                    Verdict::Reject => {
                        return Err(IndexError::Rejected(format!(
                            "bulk: {}",
                            response::describe_body(a.status, &a.body)
                        )));
                    }
                    Verdict::Retry => response::describe_body(a.status, &a.body),
                    Verdict::Done => match self.bulk_items(docs, &pending, &a.body, version)? {
                        None => return Ok(()),
                        Some((still, failure)) => {
                            pending = still;
                            failure
                        }
                    },
                },
            };
            attempt += 1;
            if attempt > self.config.max_retries {
                return Err(IndexError::Unavailable(format!(
                    "bulk: {} of {} documents not indexed after {attempt} attempts, last: {failure}",
                    pending.len(),
                    docs.len()
                )));
            }
            warn!(
                attempt,
                pending = pending.len(),
                %failure,
                "elasticsearch bulk incomplete; retrying the failed documents"
            );
            metrics::counter!("annostore_elastic_retries_total", "request" => "bulk").increment(1);
            metrics::counter!("annostore_elastic_bulk_documents_retried_total")
                .increment(pending.len() as u64);
            tokio::time::sleep(self.backoff(attempt)).await;
        }
    }

    /// Reads a 2xx bulk answer for the `pending` documents: `None` when all are
    /// indexed, else the ones to send again and why; an error when one is refused.
    fn bulk_items(
        &self,
        docs: &[&Annotation],
        pending: &[usize],
        body: &[u8],
        version: Option<u64>,
    ) -> Result<Option<(Vec<usize>, String)>, IndexError> {
        let parsed: response::BulkResponse = match serde_json::from_slice(body) {
            Ok(r) => r,
            // Nothing to go on: everything again (index-by-id is idempotent).
            Err(e) => {
                return Ok(Some((
                    pending.to_vec(),
                    format!("unreadable bulk answer: {e}"),
                )));
            }
        };
        if parsed.items.len() != pending.len() {
            return Ok(Some((
                pending.to_vec(),
                format!(
                    "bulk answer has {} items for {} documents",
                    parsed.items.len(),
                    pending.len()
                ),
            )));
        }
        let mut again = Vec::new();
        let mut first_failure = None;
        let mut rejected = Vec::new();
        for (&i, item) in pending.iter().zip(parsed.results()) {
            let id = body::uuid_text(&docs[i].id);
            let Some(item) = item.filter(|it| it.id.as_deref().is_none_or(|x| x == id)) else {
                again.push(i);
                first_failure.get_or_insert_with(|| format!("no answer for document {id}"));
                continue;
            };
            let reason = || {
                item.error
                    .as_ref()
                    .map_or_else(|| "no reason given".into(), response::describe_error)
            };
            match response::verdict(item.status) {
                Verdict::Done => {}
                // A versioned write refused as older than what the index holds: a
                // newer copy is there already, which is what this write wanted.
                Verdict::Retry if item.status == 409 && version.is_some() => {
                    metrics::counter!("annostore_elastic_bulk_documents_superseded_total")
                        .increment(1);
                }
                Verdict::Retry => {
                    again.push(i);
                    first_failure
                        .get_or_insert_with(|| format!("{id}: HTTP {}: {}", item.status, reason()));
                }
                Verdict::Reject => {
                    rejected.push(format!("{id}: HTTP {}: {}", item.status, reason()))
                }
            }
        }
        if !rejected.is_empty() {
            metrics::counter!("annostore_elastic_bulk_documents_refused_total")
                .increment(rejected.len() as u64);
            let shown: Vec<&str> = rejected.iter().take(3).map(String::as_str).collect();
            return Err(IndexError::Rejected(format!(
                "bulk: {} of {} documents refused: {}",
                rejected.len(),
                pending.len(),
                shown.join("; ")
            )));
        }
        if again.is_empty() {
            if parsed.errors {
                debug!("bulk answer said errors but every item succeeded");
            }
            return Ok(None);
        }
        Ok(Some((again, first_failure.unwrap_or_default())))
    }
}
