//! Conformance suite for the `index` seam.
//!
//! Every check uses fresh operation ids and searches within a scope of its own
//! operations, so the checks can share one index (and run against a shared server).
//! Call [`run_all`] with an empty or shared index; each check is public too.
//! [`run_search_language`] checks the search language of issue 5 (lists, time
//! relations, regions, text, `data` conditions, confidence order, aggregations): a
//! separate entry point, so an engine can pass `run_all` before it implements those.
//! [`run_operating`] checks what garbage collection needs (issue 7), separately too.

use crate::index::Existing;
use crate::index::{Hit, Index, IndexQuery, Scope};
use crate::model::{Annotation, SearchFilter, SortKey, TimeRange};
use crate::visibility::Visibility;
use std::collections::HashSet;
use std::sync::Arc;
use uuid::Uuid;

mod filters;
mod language;

pub use filters::*;
pub use language::*;

/// Runs every check of the suite.
pub async fn run_all(index: Arc<dyn Index>) {
    upsert_then_search(index.clone()).await;
    replace_by_id(index.clone()).await;
    replace_only_named_ids(index.clone()).await;
    filters(index.clone()).await;
    time_range_intersects(index.clone()).await;
    media_windows_at_every_scale(index.clone()).await;
    scope(index.clone()).await;
    ordering_across_media_and_commits(index.clone()).await;
    paging_returns_each_once(index.clone()).await;
    count_operation(index.clone()).await;
}

/// Runs the checks of what operating annostore needs of an index (issue 7).
pub async fn run_operating(index: Arc<dyn Index>) {
    delete_operation_removes_only_its_run(index.clone()).await;
}

/// An annotation of `op` with the suite's defaults: type "shot" v1, pivot "p".
pub fn annotation(op: Uuid, media_id: &str, start_ms: i64, end_ms: i64) -> Annotation {
    Annotation {
        id: Uuid::new_v4(),
        media_id: media_id.to_owned(),
        start_ms,
        end_ms,
        label: None,
        confidence: None,
        bbox: None,
        embedding: None,
        data: None,
        annotation_type: "shot".into(),
        annotation_type_version: 1,
        pivot_id: "p".into(),
        operation_id: op,
    }
}

/// A scope showing exactly these operations.
pub fn visible(ops: &[Uuid]) -> Scope {
    Scope::Visible(Arc::new(Visibility::from_active(ops.iter().copied())))
}

/// One page.
pub async fn search(
    index: &Arc<dyn Index>,
    filter: &SearchFilter,
    scope: &Scope,
    after: Option<SortKey>,
    limit: usize,
) -> Vec<Hit> {
    let hits = index
        .search(&IndexQuery {
            filter: filter.clone(),
            scope: scope.clone(),
            order: crate::query::SortOrder::Time,
            after: after.map(crate::index::Position::time),
            limit,
        })
        .await
        .expect("search");
    assert!(hits.len() <= limit, "more hits than the limit");
    for h in &hits {
        assert_eq!(h.id, h.key.id, "a hit's id is its key's id");
    }
    hits
}

/// Every hit, following `after` page by page.
pub async fn search_all(
    index: &Arc<dyn Index>,
    filter: &SearchFilter,
    scope: &Scope,
    page: usize,
) -> Vec<Hit> {
    let mut out: Vec<Hit> = Vec::new();
    let mut after = None;
    loop {
        let hits = search(index, filter, scope, after, page).await;
        let n = hits.len();
        after = hits.last().map(|h| h.key.clone());
        out.extend(hits);
        if n < page {
            return out;
        }
        assert!(out.len() < 1_000_000, "paging does not end");
    }
}

pub(crate) fn ids(hits: &[Hit]) -> Vec<Uuid> {
    hits.iter().map(|h| h.id).collect()
}

/// The expected order of `annotations`: (media_id, start_ms, id).
pub fn sorted_keys<'a>(annotations: impl IntoIterator<Item = &'a Annotation>) -> Vec<SortKey> {
    let mut keys: Vec<SortKey> = annotations.into_iter().map(SortKey::of).collect();
    keys.sort();
    keys
}

pub(crate) fn keys(hits: &[Hit]) -> Vec<SortKey> {
    hits.iter().map(|h| h.key.clone()).collect()
}

pub(crate) async fn upsert(index: &Arc<dyn Index>, annotations: &[Annotation]) {
    index
        .upsert(annotations, Existing::Unknown)
        .await
        .expect("upsert");
}

/// Once upsert returns, the annotations are searchable with their keys.
pub async fn upsert_then_search(index: Arc<dyn Index>) {
    let op = Uuid::new_v4();
    let batch: Vec<Annotation> = (0..10)
        .map(|i| annotation(op, "m1", i * 100, i * 100 + 50))
        .collect();
    upsert(&index, &batch).await;
    let hits = search(
        &index,
        &SearchFilter::default(),
        &Scope::Operation(op),
        None,
        100,
    )
    .await;
    assert_eq!(keys(&hits), sorted_keys(&batch));
    let hits = search(&index, &SearchFilter::default(), &visible(&[op]), None, 100).await;
    assert_eq!(keys(&hits), sorted_keys(&batch));
    // An empty upsert is fine.
    upsert(&index, &[]).await;
}

/// Upserting an id again replaces the document: no duplicate, new values searched.
pub async fn replace_by_id(index: Arc<dyn Index>) {
    let op = Uuid::new_v4();
    let mut a = annotation(op, "m-old", 0, 10);
    a.label = Some("cat".into());
    let b = annotation(op, "m-old", 5, 10);
    upsert(&index, &[a.clone(), b.clone()]).await;
    let mut a2 = a.clone();
    a2.media_id = "m-new".into();
    a2.start_ms = 1_000;
    a2.end_ms = 2_000;
    a2.label = Some("dog".into());
    upsert(&index, std::slice::from_ref(&a2)).await;
    let scope = Scope::Operation(op);
    let all = search(&index, &SearchFilter::default(), &scope, None, 100).await;
    assert_eq!(
        keys(&all),
        sorted_keys([&b, &a2]),
        "replaced, not duplicated"
    );
    let by_label = |l: &str| SearchFilter {
        label: Some(l.into()),
        ..Default::default()
    };
    assert!(
        search(&index, &by_label("cat"), &scope, None, 10)
            .await
            .is_empty()
    );
    assert_eq!(
        ids(&search(&index, &by_label("dog"), &scope, None, 10).await),
        vec![a.id]
    );
    let old_media = SearchFilter {
        media_id: Some("m-old".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(&search(&index, &old_media, &scope, None, 10).await),
        vec![b.id]
    );
    // Replacing twice in one batch keeps the last version.
    let mut a3 = a2.clone();
    a3.start_ms = 3_000;
    let mut a4 = a2.clone();
    a4.start_ms = 4_000;
    upsert(&index, &[a3, a4.clone()]).await;
    let all = search(&index, &SearchFilter::default(), &scope, None, 100).await;
    assert_eq!(keys(&all), sorted_keys([&b, &a4]));
    assert_eq!(index.count_operation(op).await.expect("count"), 2);
}

/// With `Existing::Only`, the named ids are replaced and the others added.
pub async fn replace_only_named_ids(index: Arc<dyn Index>) {
    let op = Uuid::new_v4();
    let a = annotation(op, "m", 0, 10);
    let b = annotation(op, "m", 20, 30);
    index
        .upsert(&[a.clone(), b.clone()], Existing::Only(&[]))
        .await
        .expect("upsert new");
    let mut a2 = a.clone();
    a2.start_ms = 40;
    a2.end_ms = 50;
    let c = annotation(op, "m", 60, 70);
    index
        .upsert(&[a2.clone(), c.clone()], Existing::Only(&[a.id]))
        .await
        .expect("upsert replacing");
    let all = search(
        &index,
        &SearchFilter::default(),
        &Scope::Operation(op),
        None,
        100,
    )
    .await;
    assert_eq!(keys(&all), sorted_keys([&b, &a2, &c]));
    assert_eq!(index.count_operation(op).await.expect("count"), 3);
}

/// A Visible snapshot hides the operations not in it; Operation(id) shows only that one.
pub async fn scope(index: Arc<dyn Index>) {
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let of =
        |op: Uuid| -> Vec<Annotation> { (0..3).map(|i| annotation(op, "s", i, i + 1)).collect() };
    let (xa, xb, xc) = (of(a), of(b), of(c));
    upsert(&index, &xa).await;
    upsert(&index, &[xb.clone(), xc.clone()].concat()).await;
    let f = SearchFilter::default();
    assert_eq!(
        keys(&search(&index, &f, &visible(&[a]), None, 100).await),
        sorted_keys(&xa)
    );
    assert_eq!(
        keys(&search(&index, &f, &visible(&[a, c]), None, 100).await),
        sorted_keys(xa.iter().chain(&xc))
    );
    assert!(
        search(&index, &f, &visible(&[]), None, 100)
            .await
            .is_empty()
    );
    assert!(
        search(&index, &f, &visible(&[Uuid::new_v4()]), None, 100)
            .await
            .is_empty()
    );
    assert_eq!(
        keys(&search(&index, &f, &Scope::Operation(b), None, 100).await),
        sorted_keys(&xb)
    );
    // A later snapshot moves visibility without touching documents.
    let v1 = Visibility::from_active([a]);
    let v2 = v1.with_change(&[b], &[a]);
    assert_eq!(
        keys(&search(&index, &f, &Scope::Visible(Arc::new(v2)), None, 100).await),
        sorted_keys(&xb)
    );
    // The operation filter and the scope both apply.
    let only_c = SearchFilter {
        operation_id: Some(c),
        ..Default::default()
    };
    assert!(
        search(&index, &only_c, &visible(&[a]), None, 100)
            .await
            .is_empty()
    );
}

/// Order is (media_id, start_ms, id) across media, equal starts and commits.
pub async fn ordering_across_media_and_commits(index: Arc<dyn Index>) {
    let op = Uuid::new_v4();
    let media = [
        "b", "a", "ab", "a0", "B", "z", "aa", "a-1", "é", "m10", "m9",
    ];
    let mut all: Vec<Annotation> = Vec::new();
    for round in 0..4i64 {
        let mut batch = Vec::new();
        for (i, m) in media.iter().enumerate() {
            // Equal start_ms across rounds for some, so ids break ties.
            let start = if i % 2 == 0 {
                7
            } else {
                (round * 31 + i as i64) % 17 - 5
            };
            batch.push(annotation(op, m, start, start + 3));
        }
        upsert(&index, &batch).await;
        all.extend(batch);
    }
    let expected = sorted_keys(&all);
    let hits = search(
        &index,
        &SearchFilter::default(),
        &Scope::Operation(op),
        None,
        1_000,
    )
    .await;
    assert_eq!(keys(&hits), expected);
    // A limit keeps the first ones.
    let hits = search(
        &index,
        &SearchFilter::default(),
        &Scope::Operation(op),
        None,
        5,
    )
    .await;
    assert_eq!(keys(&hits), expected[..5].to_vec());
    // Ids compare as u128, not as strings or random bytes.
    let mut same: Vec<Annotation> = Vec::new();
    for hi in [0u64, 1, u64::MAX, 1 << 63] {
        for lo in [0u64, u64::MAX, 42] {
            let mut a = annotation(op, "same", 0, 1);
            a.id = Uuid::from_u64_pair(hi, lo);
            same.push(a);
        }
    }
    upsert(&index, &same).await;
    let filter = SearchFilter {
        media_id: Some("same".into()),
        ..Default::default()
    };
    let hits = search(&index, &filter, &Scope::Operation(op), None, 100).await;
    assert_eq!(keys(&hits), sorted_keys(&same));
}

/// Paging with `after` returns every matching annotation exactly once, in order.
pub async fn paging_returns_each_once(index: Arc<dyn Index>) {
    let op = Uuid::new_v4();
    let other = Uuid::new_v4();
    let mut all: Vec<Annotation> = Vec::new();
    for batch in 0..3i64 {
        let mut xs = Vec::new();
        for i in 0..40i64 {
            let media = format!("page-{}", (i * 7 + batch) % 5);
            xs.push(annotation(op, &media, (i % 6) * 10, (i % 6) * 10 + 5));
        }
        // Invisible documents interleaved must not disturb paging.
        xs.push(annotation(other, "page-1", 0, 5));
        upsert(&index, &xs).await;
        all.extend(xs.into_iter().filter(|a| a.operation_id == op));
    }
    let expected = sorted_keys(&all);
    for page in [1usize, 2, 7, 50, 120, 121, 500] {
        let hits = search_all(&index, &SearchFilter::default(), &visible(&[op]), page).await;
        assert_eq!(keys(&hits), expected, "page size {page}");
        let unique: HashSet<Uuid> = hits.iter().map(|h| h.id).collect();
        assert_eq!(unique.len(), all.len());
    }
    // A cursor on a media id no document has continues at the next one.
    let after = SortKey {
        media_id: "page-2x".into(),
        start_ms: i64::MIN,
        id: Uuid::nil(),
    };
    let hits = search(
        &index,
        &SearchFilter::default(),
        &visible(&[op]),
        Some(after.clone()),
        500,
    )
    .await;
    let rest: Vec<SortKey> = expected.iter().filter(|k| **k > after).cloned().collect();
    assert_eq!(keys(&hits), rest);
    // A cursor after everything returns nothing; before everything, everything.
    let end = SortKey {
        media_id: "zzz".into(),
        start_ms: 0,
        id: Uuid::nil(),
    };
    assert!(
        search(
            &index,
            &SearchFilter::default(),
            &visible(&[op]),
            Some(end),
            10
        )
        .await
        .is_empty()
    );
    let start = SortKey {
        media_id: String::new(),
        start_ms: i64::MIN,
        id: Uuid::nil(),
    };
    let hits = search(
        &index,
        &SearchFilter::default(),
        &visible(&[op]),
        Some(start),
        500,
    )
    .await;
    assert_eq!(keys(&hits), expected);
}

/// count_operation counts the live documents of one operation.
pub async fn count_operation(index: Arc<dyn Index>) {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(index.count_operation(a).await.expect("count"), 0);
    let xs: Vec<Annotation> = (0..25).map(|i| annotation(a, "c", i, i)).collect();
    upsert(&index, &xs).await;
    upsert(&index, &[annotation(b, "c", 0, 0)]).await;
    assert_eq!(index.count_operation(a).await.expect("count"), 25);
    assert_eq!(index.count_operation(b).await.expect("count"), 1);
    // Replacing does not double count.
    upsert(&index, &xs[..10]).await;
    assert_eq!(index.count_operation(a).await.expect("count"), 25);
}

/// delete_operation removes every document of one run, durably enough that search,
/// previews and counts no longer see them, returns how many, and leaves other runs'
/// documents alone; the freed ids can be indexed again under another run.
pub async fn delete_operation_removes_only_its_run(index: Arc<dyn Index>) {
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let xa: Vec<Annotation> = (0..20).map(|i| annotation(a, "gc", i, i + 1)).collect();
    let xb: Vec<Annotation> = (0..5).map(|i| annotation(b, "gc", i, i + 1)).collect();
    upsert(&index, &xa).await;
    upsert(&index, &xb).await;
    assert_eq!(index.delete_operation(a).await.expect("delete"), 20);
    assert_eq!(index.count_operation(a).await.expect("count"), 0);
    assert_eq!(index.count_operation(b).await.expect("count"), 5);
    let all = SearchFilter::default();
    let hits = search_all(&index, &all, &visible(&[a, b]), 4).await;
    assert_eq!(keys(&hits), sorted_keys(&xb), "only the other run is left");
    assert!(
        search_all(&index, &all, &Scope::Operation(a), 4)
            .await
            .is_empty()
    );
    // Again, and a run the index never saw: nothing to remove.
    assert_eq!(index.delete_operation(a).await.expect("delete"), 0);
    assert_eq!(
        index
            .delete_operation(Uuid::new_v4())
            .await
            .expect("delete"),
        0
    );
    assert_eq!(index.count_operation(b).await.expect("count"), 5);
    // A collected run's ids, claimed by a new run.
    let xc: Vec<Annotation> = xa
        .iter()
        .map(|x| Annotation {
            operation_id: c,
            ..x.clone()
        })
        .collect();
    upsert(&index, &xc).await;
    assert_eq!(index.count_operation(c).await.expect("count"), 20);
    let hits = search_all(&index, &all, &visible(&[a, b, c]), 7).await;
    let mut both: Vec<Annotation> = xb.clone();
    both.extend(xc);
    assert_eq!(keys(&hits), sorted_keys(&both));
}
