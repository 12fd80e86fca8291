//! Search: the index proposes, the store confirms (or the index's own copy of what it
//! matched, where it keeps one), the page is filled.
//!
//! A search reads one view (a visibility snapshot) from its first page to its last:
//! the token carries the view's fingerprint and recent views are kept (see [`Views`]),
//! so a run finishing between two pages does not change what the later pages show.

use super::Service;
use crate::encode::EncodeError;
use crate::error::Error;
use crate::index::{IndexQuery, KnnQuery, Position, Scope};
use crate::model::{
    Annotation, OperationStatus, SearchFilter, SearchPage, SearchRequest, SortKey, SortOrder,
};
use crate::page::{self, Cursor, RequestShape};
use crate::query::{self, Knn};
use crate::visibility::Visibility;
use std::cmp::Ordering;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

pub use crate::query::matches;

/// How many recent views are kept for page tokens, and for how long.
const VIEWS_KEPT: usize = 256;
const VIEW_TTL: Duration = Duration::from_secs(15 * 60);

/// Recent views by fingerprint: what makes a page token's later pages read the view
/// its first page read. Views share structure, so keeping one costs little.
#[derive(Default)]
pub(crate) struct Views {
    recent: parking_lot::Mutex<VecDeque<(u64, Arc<Visibility>, Instant)>>,
}

impl Views {
    fn keep(&self, view: &Arc<Visibility>) {
        let mut recent = self.recent.lock();
        let fp = view.fingerprint();
        if let Some((f, _, at)) = recent.back_mut()
            && *f == fp
        {
            // Still the newest: it is kept from its last use, not its first.
            *at = Instant::now();
            return;
        }
        recent.push_back((fp, view.clone(), Instant::now()));
        while recent.len() > VIEWS_KEPT
            || recent
                .front()
                .is_some_and(|(_, _, at)| at.elapsed() > VIEW_TTL)
        {
            recent.pop_front();
        }
    }

    fn find(&self, fingerprint: u64) -> Option<Arc<Visibility>> {
        self.recent
            .lock()
            .iter()
            .rev()
            .find(|(f, _, _)| *f == fingerprint)
            .map(|(_, v, _)| v.clone())
    }
}

/// What one page is asked for, once the request is checked and its scope chosen.
struct PageAsk<'a> {
    filter: &'a SearchFilter,
    order: SortOrder,
    scope: PageScope,
    after: Option<Position>,
    limit: usize,
    shape: RequestShape<'a>,
}

/// The scope of one page, and whether its view differs from the first page's.
struct PageScope {
    scope: Scope,
    view: u64,
    view_changed: bool,
}

impl PageScope {
    /// A page read in this scope, with the token that continues after `next`.
    fn page(
        &self,
        annotations: Vec<Annotation>,
        scores: Option<Vec<f32>>,
        next: Option<Position>,
        shape: &RequestShape<'_>,
    ) -> SearchPage {
        let cursor = |after| Cursor {
            after,
            view: self.view,
        };
        SearchPage {
            annotations,
            scores,
            next_page_token: next.map(|after| page::encode_search(shape, &cursor(after))),
            view_changed: self.view_changed,
        }
    }
}

impl Service {
    pub async fn search(&self, req: &SearchRequest) -> Result<SearchPage, Error> {
        self.search_in(req, None).await
    }

    /// A search that reads `view` (for every page) instead of the current view; queries
    /// made of several searches use it to see one set of runs throughout.
    pub(crate) async fn search_in(
        &self,
        req: &SearchRequest,
        view: Option<Arc<Visibility>>,
    ) -> Result<SearchPage, Error> {
        let started = Instant::now();
        let limit = self.page_size(req.limit)?;
        let filter = self.check_filter(&req.filter).await?;
        let order = match (req.sort, &req.knn) {
            (Some(SortOrder::Score), None) => {
                return Err(Error::invalid(
                    "sort",
                    "score orders nearest-neighbour searches only (give knn)",
                ));
            }
            (Some(o), _) => o,
            (None, Some(_)) => SortOrder::Score,
            (None, None) => SortOrder::Time,
        };
        // Tokens bind to the request as the client sent it.
        let shape = RequestShape {
            filter: &req.filter,
            order,
            knn: req.knn.as_ref(),
        };
        let cursor = req
            .page_token
            .as_deref()
            .map(|t| page::decode_search(&shape, t))
            .transpose()?;
        // Checked before anything else answers (an empty preview included).
        let vector = match &req.knn {
            Some(knn) => Some(self.knn_vector(knn).await?),
            None => None,
        };
        let Some(ps) = self.page_scope(&filter, cursor.as_ref(), view).await? else {
            return Ok(empty_page());
        };
        let ask = PageAsk {
            filter: &filter,
            order,
            scope: ps,
            after: cursor.map(|c| c.after),
            limit,
            shape,
        };
        let page = match (&req.knn, vector) {
            (Some(knn), Some(vector)) => self.knn_page(&ask, knn.k, vector).await?,
            _ => self.filled_page(&ask).await?,
        };
        metrics::histogram!("annostore_search_seconds").record(started.elapsed().as_secs_f64());
        Ok(page)
    }

    /// The scope a page reads: the preview of one operation, or a view of the visible
    /// runs (the token's view if still held). `None` when nothing can be in scope.
    async fn page_scope(
        &self,
        filter: &SearchFilter,
        cursor: Option<&Cursor>,
        pinned: Option<Arc<Visibility>>,
    ) -> Result<Option<PageScope>, Error> {
        if let Some(id) = filter.operation_id {
            let vis = self.engines.cache.visibility();
            let previewable = vis.is_active(&id)
                || match self.operation(id).await {
                    Ok(op) => op.status == OperationStatus::Started,
                    Err(Error::NotFound { .. }) => false,
                    Err(e) => return Err(e),
                };
            if !previewable {
                return Ok(None);
            }
            // Read-your-writes for the producer: its acknowledged batches first.
            self.settle_preview(id).await?;
            return Ok(Some(PageScope {
                scope: Scope::Operation(id),
                view: 0,
                view_changed: false,
            }));
        }
        if let Some(view) = pinned {
            return Ok(Some(PageScope {
                view: view.fingerprint(),
                scope: Scope::Visible(view),
                view_changed: false,
            }));
        }
        let current = self.engines.cache.visibility();
        let (view, view_changed) = match cursor {
            None => (current, false),
            Some(c) if c.view == current.fingerprint() => (current, false),
            Some(c) => match self.views.find(c.view) {
                Some(pinned) => (pinned, false),
                None => (current, true),
            },
        };
        self.views.keep(&view);
        Ok(Some(PageScope {
            view: view.fingerprint(),
            scope: Scope::Visible(view),
            view_changed,
        }))
    }

    /// Everything of the operation the store holds is searchable: its batches in the
    /// pipeline, and work the pipeline does not hold (after a restart, or an index
    /// write that failed) replayed now.
    async fn settle_preview(&self, id: Uuid) -> Result<(), Error> {
        self.pipeline.settle(id).await;
        let pending = self.engines.store.pending_work_ids(id).await?;
        if pending.is_empty() {
            return Ok(());
        }
        let searchable: HashSet<Uuid> = self.pipeline.searchable_work(id).into_iter().collect();
        if pending.iter().all(|w| searchable.contains(w)) {
            return Ok(());
        }
        let rest: Vec<_> = self
            .engines
            .store
            .pending_work(Some(id), usize::MAX)
            .await?
            .into_iter()
            .filter(|w| !searchable.contains(&w.id))
            .collect();
        self.reconciler().apply_all(&rest).await
    }

    /// A page in time or confidence order, filled from the index in rounds.
    async fn filled_page(&self, ask: &PageAsk<'_>) -> Result<SearchPage, Error> {
        let (filter, order, ps, limit) = (ask.filter, ask.order, &ask.scope, ask.limit);
        let mut query = IndexQuery {
            filter: filter.clone(),
            scope: ps.scope.clone(),
            order,
            after: ask.after.clone(),
            limit: limit + 1,
        };
        let mut out: Vec<Annotation> = Vec::with_capacity(limit + 1);
        let mut seen: HashSet<Uuid> = HashSet::with_capacity(limit + 1);
        // Fill the page. A hit is kept only if the store agrees with it: same operation in
        // scope (a 64-bit key collision fails this), same position (a stale document left
        // by two racing rewrites of one id fails this), not already on the page (two
        // documents of one retried batch). Then the index is asked again past them.
        loop {
            let mut hits = self.engines.index.search(&query).await?;
            let exhausted = hits.len() < query.limit;
            let last = hits.last().map(|h| h.position());
            let found = self
                .annotations_of(
                    hits.iter_mut()
                        .map(|h| (h.id, h.annotation.take()))
                        .collect(),
                )
                .await?;
            for (hit, a) in hits.iter().zip(found) {
                let Some(a) = a else { continue };
                let rank_agrees =
                    order == SortOrder::Time || query::rank_of(order, &a, None) == hit.rank;
                if query.scope.allows(&a.operation_id)
                    && matches(filter, &a)
                    && SortKey::of(&a) == hit.key
                    && rank_agrees
                    && seen.insert(a.id)
                {
                    out.push(a);
                }
            }
            if out.len() > limit || exhausted {
                break;
            }
            query.after = last;
        }
        let next = if out.len() > limit {
            out.truncate(limit);
            out.last().map(|a| Position {
                rank: query::rank_of(order, a, None),
                key: SortKey::of(a),
            })
        } else {
            None
        };
        Ok(ps.page(out, None, next, &ask.shape))
    }

    /// A page of the k nearest neighbours: the index finds them, the store confirms
    /// them and gives the exact similarity, then they are ordered and paged.
    async fn knn_page(
        &self,
        ask: &PageAsk<'_>,
        k: u32,
        vector: Vec<f32>,
    ) -> Result<SearchPage, Error> {
        let (filter, order, ps, limit) = (ask.filter, ask.order, &ask.scope, ask.limit);
        let mut hits = self
            .engines
            .index
            .knn(&KnnQuery {
                filter: filter.clone(),
                scope: ps.scope.clone(),
                vector: vector.clone(),
                k: k as usize,
            })
            .await?;
        let found = self
            .annotations_of(
                hits.iter_mut()
                    .map(|h| (h.id, h.annotation.take()))
                    .collect(),
            )
            .await?;
        let mut seen: HashSet<Uuid> = HashSet::with_capacity(hits.len());
        let mut items: Vec<(Position, f32, Annotation)> = Vec::with_capacity(hits.len());
        for (hit, a) in hits.iter().zip(found) {
            let Some(a) = a else { continue };
            let Some(embedding) = a.embedding.as_deref() else {
                continue;
            };
            if embedding.len() == vector.len()
                && ps.scope.allows(&a.operation_id)
                && matches(filter, &a)
                && SortKey::of(&a) == hit.key
                && seen.insert(a.id)
            {
                let score = query::cosine(&vector, embedding);
                let pos = Position {
                    rank: query::rank_of(order, &a, Some(score)),
                    key: SortKey::of(&a),
                };
                items.push((pos, score, a));
            }
        }
        let cmp =
            |a: &Position, b: &Position| query::compare(order, (a.rank, &a.key), (b.rank, &b.key));
        items.sort_by(|a, b| cmp(&a.0, &b.0));
        if let Some(after) = &ask.after {
            items.retain(|(p, _, _)| cmp(p, after) == Ordering::Greater);
        }
        let more = items.len() > limit;
        items.truncate(limit);
        let next = if more {
            items.last().map(|(p, _, _)| p.clone())
        } else {
            None
        };
        let (scores, annotations) = items.into_iter().map(|(_, s, a)| (s, a)).unzip();
        Ok(ps.page(annotations, Some(scores), next, &ask.shape))
    }

    /// The annotations of hits: the index's copy where it kept one (see
    /// [`crate::index::Hit::annotation`]), the store's for the rest, read at once.
    async fn annotations_of(
        &self,
        hits: Vec<(Uuid, Option<Annotation>)>,
    ) -> Result<Vec<Option<Annotation>>, Error> {
        let missing: Vec<Uuid> = hits
            .iter()
            .filter(|(_, a)| a.is_none())
            .map(|(id, _)| *id)
            .collect();
        if missing.is_empty() {
            return Ok(hits.into_iter().map(|(_, a)| a).collect());
        }
        let mut read = self
            .engines
            .store
            .get_annotations(&missing)
            .await?
            .into_iter();
        Ok(hits
            .into_iter()
            .map(|(_, a)| match a {
                Some(a) => Some(a),
                None => read.next().flatten(),
            })
            .collect())
    }

    /// The query vector of a nearest-neighbour search, checked.
    async fn knn_vector(&self, knn: &Knn) -> Result<Vec<f32>, Error> {
        if knn.k == 0 || knn.k > query::MAX_K {
            return Err(Error::invalid(
                "knn.k",
                format!("must be between 1 and {}", query::MAX_K),
            ));
        }
        let vector = match (&knn.vector, &knn.text) {
            (Some(v), None) => v.clone(),
            (None, Some(text)) => self.encode_text(text).await?,
            _ => {
                return Err(Error::invalid("knn", "give exactly one of vector and text"));
            }
        };
        if vector.is_empty() || vector.len() > self.limits.max_embedding_dims {
            return Err(Error::invalid(
                "knn.vector",
                format!(
                    "between 1 and {} dimensions",
                    self.limits.max_embedding_dims
                ),
            ));
        }
        if vector.iter().any(|x| !x.is_finite()) || vector.iter().all(|x| *x == 0.0) {
            return Err(Error::invalid(
                "knn.vector",
                "must be finite and not all zeros",
            ));
        }
        Ok(vector)
    }

    /// A query text's vector, from the configured encoder (off the async workers: a
    /// model runs).
    async fn encode_text(&self, text: &str) -> Result<Vec<f32>, Error> {
        let Some(encoder) = self.text_encoder.clone() else {
            return Err(Error::invalid(
                "knn.text",
                "this server has no text encoder configured (see [search] text_encoder); give knn.vector",
            ));
        };
        if text.len() > self.limits.max_string_bytes {
            return Err(Error::invalid(
                "knn.text",
                format!("at most {} bytes", self.limits.max_string_bytes),
            ));
        }
        let text = text.to_owned();
        let encoded = tokio::task::spawn_blocking(move || encoder.encode(&text))
            .await
            .map_err(|e| Error::Unavailable {
                what: "text encoder",
                detail: e.to_string(),
            })?;
        encoded.map_err(|e| match e {
            EncodeError::Input(reason) => Error::invalid("knn.text", reason),
            EncodeError::Encoder(detail) => Error::Unavailable {
                what: "text encoder",
                detail,
            },
        })
    }

    /// One annotation, if it is visible.
    pub async fn annotation(&self, id: Uuid) -> Result<Annotation, Error> {
        let not_found = || Error::NotFound {
            what: "annotation",
            id: id.to_string(),
        };
        let a = self
            .engines
            .store
            .get_annotations(&[id])
            .await?
            .pop()
            .flatten()
            .ok_or_else(not_found)?;
        if self.engines.cache.visibility().is_active(&a.operation_id) {
            Ok(a)
        } else {
            Err(not_found())
        }
    }
}

fn empty_page() -> SearchPage {
    SearchPage {
        annotations: vec![],
        scores: None,
        next_page_token: None,
        view_changed: false,
    }
}
