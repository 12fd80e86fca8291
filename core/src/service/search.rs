//! Search: the index proposes, the store confirms, the page is filled.

use super::Service;
use crate::error::Error;
use crate::index::{IndexQuery, Scope};
use crate::model::{Annotation, OperationStatus, SearchPage, SearchRequest, SortKey};
use crate::page;
use std::collections::HashSet;
use std::time::Instant;
use uuid::Uuid;

impl Service {
    pub async fn search(&self, req: &SearchRequest) -> Result<SearchPage, Error> {
        let started = Instant::now();
        let limit = self.page_size(req.limit)?;
        let filter = &req.filter;
        if let Some(r) = &filter.time_range
            && r.end_ms < r.start_ms
        {
            return Err(Error::invalid(
                "time_range",
                "end_ms must not be before start_ms",
            ));
        }
        if let Some(c) = filter.min_confidence
            && !(0.0..=1.0).contains(&c)
        {
            return Err(Error::invalid("min_confidence", "must be between 0 and 1"));
        }
        let after = req
            .page_token
            .as_deref()
            .map(|t| page::decode_search(filter, t))
            .transpose()?;
        let scope = match filter.operation_id {
            None => Scope::Visible(self.engines.cache.visibility()),
            Some(id) => {
                let vis = self.engines.cache.visibility();
                let previewable = vis.is_active(&id)
                    || match self.operation(id).await {
                        Ok(op) => op.status == OperationStatus::Started,
                        Err(Error::NotFound { .. }) => false,
                        Err(e) => return Err(e),
                    };
                if !previewable {
                    return Ok(SearchPage {
                        annotations: vec![],
                        next_page_token: None,
                    });
                }
                // Read-your-writes for the producer: its acknowledged batches first.
                self.pipeline.settle(id).await;
                Scope::Operation(id)
            }
        };
        let mut query = IndexQuery {
            filter: filter.clone(),
            scope,
            after,
            limit: limit + 1,
        };
        let mut out: Vec<Annotation> = Vec::with_capacity(limit + 1);
        let mut seen: HashSet<Uuid> = HashSet::with_capacity(limit + 1);
        // Fill the page. A hit is kept only if the store agrees with it: same operation in
        // scope (a 64-bit key collision fails this), same position (a stale document left
        // by two racing rewrites of one id fails this), not already on the page (two
        // documents of one retried batch). Then the index is asked again past them.
        loop {
            let hits = self.engines.index.search(&query).await?;
            let exhausted = hits.len() < query.limit;
            let last = hits.last().map(|h| h.key.clone());
            let ids: Vec<Uuid> = hits.iter().map(|h| h.id).collect();
            let found = self.engines.store.get_annotations(&ids).await?;
            for (hit, a) in hits.iter().zip(found) {
                let Some(a) = a else { continue };
                if query.scope.allows(&a.operation_id)
                    && matches(filter, &a)
                    && SortKey::of(&a) == hit.key
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
        let next_page_token = if out.len() > limit {
            out.truncate(limit);
            out.last()
                .map(|a| page::encode_search(filter, &SortKey::of(a)))
        } else {
            None
        };
        metrics::histogram!("annostore_search_seconds").record(started.elapsed().as_secs_f64());
        Ok(SearchPage {
            annotations: out,
            next_page_token,
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

/// The filters applied to a stored annotation: what the index must have matched. Used to
/// drop stale hits and, in tests, as the brute-force model of search.
pub fn matches(filter: &crate::model::SearchFilter, a: &Annotation) -> bool {
    filter.media_id.as_ref().is_none_or(|m| *m == a.media_id)
        && filter
            .annotation_type
            .as_ref()
            .is_none_or(|t| *t == a.annotation_type)
        && filter
            .annotation_type_version
            .is_none_or(|v| v == a.annotation_type_version)
        && filter.pivot_id.as_ref().is_none_or(|p| *p == a.pivot_id)
        && filter
            .label
            .as_ref()
            .is_none_or(|l| a.label.as_ref() == Some(l))
        && filter
            .time_range
            .is_none_or(|r| a.start_ms <= r.end_ms && a.end_ms >= r.start_ms)
        && filter
            .min_confidence
            .is_none_or(|c| a.confidence.is_some_and(|x| x >= c))
        && filter.operation_id.is_none_or(|o| o == a.operation_id)
}
