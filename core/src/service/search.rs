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
                        scores: None,
                        next_page_token: None,
                        view_changed: false,
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
            order: crate::query::SortOrder::Time,
            after: after.map(crate::index::Position::time),
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
            query.after = last.map(crate::index::Position::time);
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
            scores: None,
            next_page_token,
            view_changed: false,
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

pub use crate::query::matches;
