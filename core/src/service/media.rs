//! Media items as the web viewer sees them: which media runs were written for, newest
//! first (`GET /v1/media`), and every run of the keys that wrote to one media item
//! (`GET /v1/media/{media_id}/runs`). A run's media item is its `metadata.media_id` when
//! that is a string (`annostore ingest` sets it), else its pivot id.

use super::Service;
use crate::error::Error;
use crate::lifecycle;
use crate::model::{Operation, OperationFilter, OperationKey, ScanOrder};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use time::OffsetDateTime;

/// The media listing reads at most this many operations, newest first: media whose runs
/// are all older are not listed.
pub const MAX_MEDIA_SCAN: usize = 10_000;
/// Media items listed when the caller names no limit.
pub const DEFAULT_MEDIA_LIMIT: u32 = 50;
/// Runs shown per key when the caller names no number.
pub const DEFAULT_RUNS_PER_KEY: u32 = 20;
/// The most runs shown per key.
pub const MAX_RUNS_PER_KEY: u32 = 100;
/// The most operations read to find the keys of one media item (per way of naming it:
/// pivot id, `metadata.media_id`).
pub const MAX_KEY_SCAN: usize = 10_000;

/// How long the keys found for a media item are trusted. A run of a new key shows at
/// once when it starts on this node or its start event arrives from another node; this
/// bounds how long a lost event can hide it.
pub const MEDIA_KEYS_TTL: Duration = Duration::from_secs(60);

/// The keys that wrote to each media item, so that a viewer polling a media item's runs
/// every few seconds does not scan the operations each time. Filled by
/// [`Service::media_runs`]; an entry is dropped when a run naming its media item starts.
/// Keys are only ever added (operations are never deleted), so that is the only change
/// that can make an entry stale.
pub(super) struct MediaKeys {
    keys: moka::sync::Cache<String, Arc<BTreeSet<OperationKey>>>,
    /// Grows with every start: a scan that overlapped one does not cache what it found.
    starts: AtomicU64,
}

impl MediaKeys {
    pub(super) fn new() -> MediaKeys {
        MediaKeys {
            keys: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(MEDIA_KEYS_TTL)
                .build(),
            starts: AtomicU64::new(0),
        }
    }

    /// A run started (here, or on another node): the media items it names may have a
    /// new key.
    pub(super) fn started(&self, op: &Operation) {
        self.starts.fetch_add(1, Ordering::SeqCst);
        self.keys.invalidate(op.pivot_id.as_str());
        self.keys.invalidate(media_id_of(op));
    }
}

/// One media item that runs were written for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MediaItem {
    pub media_id: String,
    /// The newest change of any of its runs.
    #[serde(with = "time::serde::rfc3339")]
    pub last_run_at: OffsetDateTime,
    /// Its runs among the operations read.
    pub runs: u64,
}

/// Recent media items.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MediaList {
    pub media: Vec<MediaItem>,
    /// True when the listing stopped after reading [`MAX_MEDIA_SCAN`] operations: media
    /// whose runs are all older are missing.
    pub truncated: bool,
}

/// The runs of one key that wrote to a media item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyRuns {
    pub annotation_type: String,
    pub annotation_type_version: u32,
    pub pivot_id: String,
    /// Newest first, as `GET /v1/operations/{id}` shows them (a lapsed lease reads as
    /// EXPIRED).
    pub runs: Vec<Operation>,
}

/// Every key that wrote to a media item, with its recent runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MediaRuns {
    pub media_id: String,
    pub keys: Vec<KeyRuns>,
}

/// The media item a run was written for: `metadata.media_id` when it is a string, else
/// the pivot id.
pub fn media_id_of(op: &Operation) -> &str {
    match op.metadata.get("media_id") {
        Some(Value::String(id)) => id,
        _ => &op.pivot_id,
    }
}

impl Service {
    /// Media items runs were written for, the one with the newest change first, at most
    /// `limit` (default [`DEFAULT_MEDIA_LIMIT`], at most `max_page_size`), those whose id
    /// contains `q` (ignoring case) when given. Reads at most [`MAX_MEDIA_SCAN`]
    /// operations, newest first.
    pub async fn recent_media(
        &self,
        q: Option<&str>,
        limit: Option<u32>,
    ) -> Result<MediaList, Error> {
        let limit = match limit {
            None => DEFAULT_MEDIA_LIMIT.min(self.limits.max_page_size) as usize,
            Some(n) => self.page_size(Some(n))?,
        };
        let q = q.map(str::to_lowercase).filter(|q| !q.is_empty());
        // media id -> (index of first sight, item)
        let mut seen: HashMap<String, (usize, MediaItem)> = HashMap::new();
        let mut scanned = 0;
        let truncated = self
            .walk(&OperationFilter::default(), ScanOrder::NewestFirst, |op| {
                if scanned == MAX_MEDIA_SCAN {
                    return false;
                }
                scanned += 1;
                let id = media_id_of(&op);
                if q.as_ref().is_some_and(|q| !id.to_lowercase().contains(q)) {
                    return true;
                }
                let at = op.updated_at.max(op.created_at);
                let order = seen.len();
                let (_, item) = seen.entry(id.to_owned()).or_insert_with(|| {
                    (
                        order,
                        MediaItem {
                            media_id: id.to_owned(),
                            last_run_at: at,
                            runs: 0,
                        },
                    )
                });
                item.runs += 1;
                item.last_run_at = item.last_run_at.max(at);
                true
            })
            .await?;
        let mut media: Vec<_> = seen.into_values().collect();
        media.sort_by(|(a_order, a), (b_order, b)| {
            b.last_run_at.cmp(&a.last_run_at).then(a_order.cmp(b_order))
        });
        Ok(MediaList {
            media: media.into_iter().take(limit).map(|(_, m)| m).collect(),
            truncated,
        })
    }

    /// The keys whose runs wrote to `media_id` (a run with that pivot id or that
    /// `metadata.media_id`), each with its newest `per_key` runs (default
    /// [`DEFAULT_RUNS_PER_KEY`], at most [`MAX_RUNS_PER_KEY`]), keys in (type, version,
    /// pivot) order.
    pub async fn media_runs(
        &self,
        media_id: &str,
        per_key: Option<u32>,
    ) -> Result<MediaRuns, Error> {
        let per_key = match per_key {
            None => DEFAULT_RUNS_PER_KEY,
            Some(n @ 1..=MAX_RUNS_PER_KEY) => n,
            Some(_) => {
                return Err(Error::invalid(
                    "per_key",
                    format!("must be between 1 and {MAX_RUNS_PER_KEY}"),
                ));
            }
        } as usize;
        let keys = match self.media_keys.keys.get(media_id) {
            Some(keys) => keys,
            None => {
                let starts = self.media_keys.starts.load(Ordering::SeqCst);
                let keys = Arc::new(self.scan_media_keys(media_id).await?);
                // A run that started during the scan may be missing from it: not cached.
                if self.media_keys.starts.load(Ordering::SeqCst) == starts {
                    self.media_keys
                        .keys
                        .insert(media_id.to_owned(), keys.clone());
                }
                keys
            }
        };
        let now = self.clock.now();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys.iter().cloned() {
            let OperationKey {
                annotation_type,
                annotation_type_version,
                pivot_id,
            } = key;
            let filter = OperationFilter {
                annotation_type: Some(annotation_type.clone()),
                annotation_type_version: Some(annotation_type_version),
                pivot_id: Some(pivot_id.clone()),
                ..OperationFilter::default()
            };
            let runs = self
                .engines
                .store
                .list_operations(&filter, ScanOrder::NewestFirst, None, per_key)
                .await?
                .into_iter()
                .map(|op| lifecycle::expire_if_lapsed(&op, now).unwrap_or(op))
                .collect();
            out.push(KeyRuns {
                annotation_type,
                annotation_type_version,
                pivot_id,
                runs,
            });
        }
        Ok(MediaRuns {
            media_id: media_id.to_owned(),
            keys: out,
        })
    }

    /// The keys of the runs naming `media_id`: by pivot id, and by `metadata.media_id` (a
    /// scan of the operations), at most [`MAX_KEY_SCAN`] operations each way.
    async fn scan_media_keys(&self, media_id: &str) -> Result<BTreeSet<OperationKey>, Error> {
        let by_pivot = OperationFilter {
            pivot_id: Some(media_id.to_owned()),
            ..OperationFilter::default()
        };
        let by_metadata = OperationFilter {
            metadata: [("media_id".to_owned(), Value::from(media_id))]
                .into_iter()
                .collect(),
            ..OperationFilter::default()
        };
        let mut keys = BTreeSet::new();
        for filter in [by_pivot, by_metadata] {
            let (ops, _) = self
                .collect_operations(&filter, ScanOrder::NewestFirst, MAX_KEY_SCAN)
                .await?;
            keys.extend(ops.iter().map(Operation::key));
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(pivot: &str, metadata: Value) -> Operation {
        let now = OffsetDateTime::UNIX_EPOCH;
        Operation {
            id: uuid::Uuid::nil(),
            annotation_type: "t".into(),
            annotation_type_version: 1,
            pivot_id: pivot.into(),
            operation_number: 1,
            status: crate::model::OperationStatus::Finished,
            active: true,
            annotation_count: 0,
            created_at: now,
            updated_at: now,
            finished_at: Some(now),
            lease_seconds: 60,
            lease_expires_at: None,
            superseded_by: None,
            metadata: metadata.as_object().cloned().unwrap_or_default(),
            producer: None,
            version: 1,
            activation: 1,
            collected: None,
        }
    }

    #[test]
    fn a_runs_media_is_its_metadata_media_id_when_a_string_else_its_pivot() {
        assert_eq!(
            media_id_of(&op("sha", json!({"media_id": "a.mp4"}))),
            "a.mp4"
        );
        assert_eq!(media_id_of(&op("sha", json!({"media_id": 7}))), "sha");
        assert_eq!(media_id_of(&op("sha", json!({}))), "sha");
    }
}
