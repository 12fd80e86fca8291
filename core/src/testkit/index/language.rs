//! The search language beyond equality (issue 5): lists, time relations, regions, text
//! and fuzzy text, `data` conditions, confidence order and aggregations. Each check
//! compares the engine with the brute force of [`crate::query`] and pins literal
//! expectations too, so a bug shared by the engine and the brute force cannot pass.

#[allow(unused_imports)]
use super::*;
use crate::index::{AggregateQuery, IndexError, Position};
use crate::model::{BBox, DataCondition, Region, TextQuery, TimeRelation};
use crate::query::{
    self, AggregateSpec, Aggregates, Aggregator, HistogramSpec, LabelCount, SortOrder,
    SpaceRelation, TypeCount,
};
use serde_json::json;

/// Runs every check of the search language.
pub async fn run_search_language(index: Arc<dyn Index>) {
    list_filters(index.clone()).await;
    time_relations_at_the_edges(index.clone()).await;
    regions_at_the_edges(index.clone()).await;
    text_and_fuzzy_text(index.clone()).await;
    data_conditions(index.clone()).await;
    confidence_order(index.clone()).await;
    aggregations(index.clone()).await;
    histogram_bounds(index.clone()).await;
}

/// Searches every page and checks the hits against the brute force; returns the ids in
/// hit order.
pub async fn check_filter(
    index: &Arc<dyn Index>,
    all: &[Annotation],
    filter: &SearchFilter,
    scope: &Scope,
) -> Vec<Uuid> {
    let expected = sorted_keys(
        all.iter()
            .filter(|a| scope.allows(&a.operation_id) && query::matches(filter, a)),
    );
    let hits = search_all(index, filter, scope, 3).await;
    assert_eq!(keys(&hits), expected, "filter {filter:?}");
    ids(&hits)
}

fn with(f: impl FnOnce(&mut SearchFilter)) -> SearchFilter {
    let mut filter = SearchFilter::default();
    f(&mut filter);
    filter
}

/// `media_ids`, `annotation_types`, `labels` (any of, exactly), `max_confidence`,
/// alone and with the older filters.
pub async fn list_filters(index: Arc<dyn Index>) {
    let op = Uuid::new_v4();
    let mut all = Vec::new();
    for (i, media) in ["la", "lb", "lc", "la-x"].iter().enumerate() {
        for j in 0..3usize {
            let mut a = annotation(op, media, (i * 10 + j) as i64, (i * 10 + j) as i64 + 2);
            a.annotation_type = ["shot", "face", "text"][j].into();
            a.label = [Some("cat"), Some("Cat"), None][(i + j) % 3].map(String::from);
            a.confidence = [Some(0.25), Some(0.5), None][j];
            all.push(a);
        }
    }
    upsert(&index, &all[..6]).await;
    upsert(&index, &all[6..]).await;
    let scope = Scope::Operation(op);
    let strings = |xs: &[&str]| Some(xs.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let cases: Vec<(SearchFilter, usize)> = vec![
        (with(|f| f.media_ids = strings(&["la", "lc"])), 6),
        (with(|f| f.media_ids = strings(&["la"])), 3),
        (with(|f| f.media_ids = strings(&["la", "la", "nope"])), 3),
        (with(|f| f.media_ids = strings(&[])), 0),
        (with(|f| f.annotation_types = strings(&["shot", "text"])), 8),
        (with(|f| f.annotation_types = strings(&[])), 0),
        (with(|f| f.labels = strings(&["cat"])), 4),
        (with(|f| f.labels = strings(&["cat", "Cat"])), 8),
        (with(|f| f.labels = strings(&["ca", "CAT"])), 0),
        (with(|f| f.max_confidence = Some(0.25)), 4),
        (with(|f| f.max_confidence = Some(0.5)), 8),
        (with(|f| f.max_confidence = Some(0.0)), 0),
        (
            with(|f| {
                f.min_confidence = Some(0.3);
                f.max_confidence = Some(0.6);
            }),
            4,
        ),
        (
            with(|f| {
                f.media_ids = strings(&["la", "lb"]);
                f.annotation_types = strings(&["face", "text"]);
                f.labels = strings(&["Cat", "cat"]);
                f.max_confidence = Some(0.9);
            }),
            1,
        ),
        (
            with(|f| {
                f.media_id = Some("la".into());
                f.media_ids = strings(&["lb"]);
            }),
            0,
        ),
    ];
    for (filter, n) in cases {
        let got = check_filter(&index, &all, &filter, &scope).await;
        assert_eq!(got.len(), n, "{filter:?}");
    }
}

/// Intersects, within and contains at their edges (both ends closed).
pub async fn time_relations_at_the_edges(index: Arc<dyn Index>) {
    let op = Uuid::new_v4();
    let a = annotation(op, "tr", 100, 200);
    let point = annotation(op, "tr", 150, 150);
    let long = annotation(op, "tr", 0, 1_000);
    let all = vec![a.clone(), point.clone(), long.clone()];
    upsert(&index, &all).await;
    let scope = Scope::Operation(op);
    use TimeRelation::*;
    let cases: Vec<(TimeRelation, i64, i64, Vec<&Annotation>)> = vec![
        (Within, 100, 200, vec![&a, &point]),
        (Within, 101, 200, vec![&point]),
        (Within, 100, 199, vec![&point]),
        (Within, 150, 150, vec![&point]),
        (Within, i64::MIN, i64::MAX, vec![&a, &point, &long]),
        (Contains, 100, 200, vec![&a, &long]),
        (Contains, 99, 200, vec![&long]),
        (Contains, 150, 150, vec![&a, &point, &long]),
        (Contains, 200, 201, vec![&long]),
        (Contains, 0, 1_000, vec![&long]),
        (Contains, 0, 1_001, vec![]),
        (Intersects, 200, 300, vec![&a, &long]),
        (Intersects, 1_000, 1_000, vec![&long]),
        (Intersects, 151, 99, vec![&long]),
        (Within, 200, 100, vec![]),
    ];
    for (relation, start_ms, end_ms, expected) in cases {
        let filter = with(|f| {
            f.time_range = Some(TimeRange {
                start_ms,
                end_ms,
                relation,
            })
        });
        let got = check_filter(&index, &all, &filter, &scope).await;
        assert_eq!(
            sorted_keys(all.iter().filter(|x| got.contains(&x.id))),
            sorted_keys(expected.iter().copied()),
            "{relation:?} {start_ms}..={end_ms}"
        );
    }
}

/// Regions: touching edges intersect, within is inclusive, no box never matches; the
/// corners are the f32 box's, summed in f64.
pub async fn regions_at_the_edges(index: Arc<dyn Index>) {
    let op = Uuid::new_v4();
    let boxed = |x, y, w, h| {
        let mut a = annotation(op, "rg", 0, 1);
        a.bbox = Some(BBox { x, y, w, h });
        a
    };
    let left = boxed(0.0, 0.0, 0.25, 0.25);
    let centre = boxed(0.25, 0.25, 0.5, 0.5);
    let point = boxed(0.5, 0.5, 0.0, 0.0);
    // 0.1 + 0.2 in f32-then-f64 is not 0.3 in f64.
    let odd = boxed(0.1, 0.1, 0.2, 0.2);
    let none = annotation(op, "rg", 0, 1);
    let all = vec![
        left.clone(),
        centre.clone(),
        point.clone(),
        odd.clone(),
        none.clone(),
    ];
    upsert(&index, &all).await;
    let scope = Scope::Operation(op);
    let region = |x, y, w, h, relation| Region {
        x,
        y,
        w,
        h,
        relation,
    };
    use SpaceRelation::*;
    let odd_x2 = f64::from(0.1f32) + f64::from(0.2f32);
    let cases: Vec<(Region, Vec<&Annotation>)> = vec![
        (
            region(0.0, 0.0, 1.0, 1.0, Intersects),
            vec![&left, &centre, &point, &odd],
        ),
        (
            region(0.0, 0.0, 1.0, 1.0, Within),
            vec![&left, &centre, &point, &odd],
        ),
        // Touching at x = 0.25 (and y): both boxes share the corner.
        (
            region(0.25, 0.25, 0.0, 0.0, Intersects),
            vec![&left, &centre, &odd],
        ),
        (
            region(0.26, 0.26, 0.1, 0.1, Intersects),
            vec![&centre, &odd],
        ),
        (region(0.5, 0.5, 0.0, 0.0, Within), vec![&point]),
        (region(0.25, 0.25, 0.5, 0.5, Within), vec![&centre, &point]),
        (region(0.25, 0.25, 0.49, 0.5, Within), vec![&point]),
        (region(0.8, 0.8, 0.2, 0.2, Intersects), vec![]),
        (region(0.0, 0.0, odd_x2, odd_x2, Within), vec![&left, &odd]),
        (
            region(0.0, 0.0, odd_x2 - 1e-12, odd_x2 - 1e-12, Within),
            vec![&left],
        ),
    ];
    for (r, expected) in cases {
        let filter = with(|f| f.region = Some(r));
        let got = check_filter(&index, &all, &filter, &scope).await;
        assert_eq!(
            sorted_keys(all.iter().filter(|x| got.contains(&x.id))),
            sorted_keys(expected.iter().copied()),
            "{r:?}"
        );
    }
}

fn text(q: &str, fuzzy: bool, fields: &[&str]) -> TextQuery {
    TextQuery {
        query: q.into(),
        fuzzy,
        fields: fields.iter().map(|s| s.to_string()).collect(),
    }
}

/// Text: tokens as `query::tokens` cuts them, every query token in some listed field;
/// fuzzy "curtian" finds "curtain" in a label and in a data string, exact text and
/// label filters stay exact.
pub async fn text_and_fuzzy_text(index: Arc<dyn Index>) {
    let op = Uuid::new_v4();
    let mut n = 0;
    let mut make = |label: Option<&str>, data: serde_json::Value| {
        n += 1;
        let mut a = annotation(op, "tx", n, n);
        a.label = label.map(String::from);
        a.data = Some(data);
        a
    };
    let forty = "a".repeat(40);
    let forty_one = "b".repeat(41);
    let curtain = make(Some("Red Curtain"), json!({}));
    let caption = make(
        None,
        json!({"caption": "the curtain, drawn", "kind": "curtain"}),
    );
    let cat = make(Some("cat"), json!({"caption": "a red car"}));
    let cut = make(Some("cut-out"), json!({"caption": 7, "n": "curtains"}));
    let long = make(
        Some(&format!("{forty} {forty_one}")),
        json!({"caption": "ΣΊΣΥΦΟΣ straße"}),
    );
    let all = vec![
        curtain.clone(),
        caption.clone(),
        cat.clone(),
        cut.clone(),
        long.clone(),
    ];
    upsert(&index, &all).await;
    let scope = Scope::Operation(op);
    let both = ["label", "data.caption"];
    let cases: Vec<(TextQuery, Vec<&Annotation>)> = vec![
        (text("curtian", true, &both), vec![&curtain, &caption]),
        (text("curtian", false, &both), vec![]),
        (text("curtain", false, &both), vec![&curtain, &caption]),
        (text("CURTAIN!", false, &["label"]), vec![&curtain]),
        (text("curtian", true, &["data.caption"]), vec![&caption]),
        (text("curtian", true, &["data.kind"]), vec![&caption]),
        // "curtains" is one edit from "curtain", two from "curtian".
        (text("curtian", true, &["data.n"]), vec![&cut]),
        (text("curtian", true, &["data.nope", "nope"]), vec![]),
        (text("curtian", true, &[]), vec![]),
        (text("red curtian", true, &both), vec![&curtain]),
        (text("red car", true, &both), vec![&cat]),
        (text("rad caa", true, &both), vec![&cat]),
        (text("rad caa", false, &both), vec![]),
        // 1-2 characters: no edits allowed; 3-5: one.
        (text("ca", true, &both), vec![]),
        (text("cat", true, &["label"]), vec![&cat, &cut]),
        (text("cut", true, &["label"]), vec![&cat, &cut]),
        (text("xat", true, &["label"]), vec![&cat]),
        (text("act", true, &["label"]), vec![&cat]),
        (text("out", false, &["label"]), vec![&cut]),
        // Numbers are not text.
        (text("7", false, &["data.caption"]), vec![]),
        // A 40-byte token is kept, a 41-byte one dropped (from documents and queries).
        (text(&forty, false, &["label"]), vec![&long]),
        (text(&forty_one, false, &["label"]), vec![]),
        (
            text(&format!("{forty_one} cat"), false, &["label"]),
            vec![&cat],
        ),
        (text(" ,; ", true, &both), vec![]),
        (
            text("σίσυφοσ", false, &["data.caption"]),
            query_hits(&all, "σίσυφοσ"),
        ),
        (
            text("σίσυφος", false, &["data.caption"]),
            query_hits(&all, "σίσυφος"),
        ),
        (text("STRASSE straße", true, &["data.caption"]), vec![&long]),
    ];
    for (t, expected) in cases {
        let filter = with(|f| f.text = Some(t.clone()));
        let got = check_filter(&index, &all, &filter, &scope).await;
        assert_eq!(
            sorted_keys(all.iter().filter(|x| got.contains(&x.id))),
            sorted_keys(expected.iter().copied()),
            "{t:?}"
        );
    }
    // The label filters stay exact whatever the text index does.
    let exact = with(|f| f.label = Some("curtian".into()));
    assert!(check_filter(&index, &all, &exact, &scope).await.is_empty());
    let exact = with(|f| f.labels = Some(vec!["red curtain".into()]));
    assert!(check_filter(&index, &all, &exact, &scope).await.is_empty());
    let exact = with(|f| f.label = Some("Red Curtain".into()));
    assert_eq!(
        check_filter(&index, &all, &exact, &scope).await,
        vec![curtain.id]
    );
}

/// The annotations whose caption has a token equal to `token` (by `query::tokens`):
/// the literal answer depends on Unicode lower-casing, which the definition fixes.
fn query_hits<'a>(all: &'a [Annotation], token: &str) -> Vec<&'a Annotation> {
    all.iter()
        .filter(|a| {
            query::field_text(a, "data.caption")
                .is_some_and(|t| query::tokens(t).iter().any(|x| x == token))
        })
        .collect()
}

fn cond(field: &str, f: impl FnOnce(&mut DataCondition)) -> DataCondition {
    let mut c = DataCondition {
        field: field.into(),
        ..Default::default()
    };
    f(&mut c);
    c
}

/// `data` conditions: strings exactly, numbers as f64 (integers too), bounds, booleans,
/// values of another kind, missing fields, and several conditions at once.
pub async fn data_conditions(index: Arc<dyn Index>) {
    let op = Uuid::new_v4();
    let datas = [
        json!({"kind": "car", "speed": 3, "ok": true, "x.y": "dot"}),
        json!({"kind": "Car", "speed": 3.0, "ok": false}),
        json!({"kind": "car park", "speed": -0.0, "ok": "true"}),
        json!({"kind": 3, "speed": "3", "ok": 1}),
        json!({"speed": 12.5, "nested": {"kind": "car"}, "none": null}),
        json!({"speed": 18446744073709551615u64}),
        json!(["kind", "car"]),
    ];
    let mut all: Vec<Annotation> = datas
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mut a = annotation(op, "dt", i as i64, i as i64);
            a.data = Some(d.clone());
            a
        })
        .collect();
    all.push(annotation(op, "dt", 100, 100));
    upsert(&index, &all).await;
    let scope = Scope::Operation(op);
    let cases: Vec<(Vec<DataCondition>, Vec<usize>)> = vec![
        (vec![cond("kind", |c| c.eq = Some(json!("car")))], vec![0]),
        (vec![cond("kind", |c| c.eq = Some(json!("Car")))], vec![1]),
        (vec![cond("kind", |c| c.eq = Some(json!("ca")))], vec![]),
        (vec![cond("kind", |c| c.eq = Some(json!(3)))], vec![3]),
        (vec![cond("speed", |c| c.eq = Some(json!(3)))], vec![0, 1]),
        (vec![cond("speed", |c| c.eq = Some(json!(3.0)))], vec![0, 1]),
        (vec![cond("speed", |c| c.eq = Some(json!(0)))], vec![2]),
        (vec![cond("speed", |c| c.eq = Some(json!("3")))], vec![3]),
        (vec![cond("speed", |c| c.gt = Some(3.0))], vec![4, 5]),
        (vec![cond("speed", |c| c.gte = Some(3.0))], vec![0, 1, 4, 5]),
        (vec![cond("speed", |c| c.lt = Some(3.0))], vec![2]),
        (vec![cond("speed", |c| c.lte = Some(0.0))], vec![2]),
        (
            vec![cond("speed", |c| c.gte = Some(-0.0))],
            vec![0, 1, 2, 4, 5],
        ),
        (
            vec![cond("speed", |c| {
                c.gt = Some(0.0);
                c.lt = Some(12.5);
            })],
            vec![0, 1],
        ),
        (vec![cond("speed", |c| c.gt = Some(1e19))], vec![5]),
        (vec![cond("speed", |c| c.gt = Some(1.9e19))], vec![]),
        (vec![cond("speed", |c| c.gte = Some(1.8e19))], vec![5]),
        (vec![cond("speed", |c| c.gt = Some(f64::NAN))], vec![]),
        (
            vec![cond("speed", |c| {
                c.eq = Some(json!(3));
                c.lt = Some(3.0);
            })],
            vec![],
        ),
        (
            vec![cond("kind", |c| {
                c.eq = Some(json!("car"));
                c.gte = Some(0.0);
            })],
            vec![],
        ),
        (vec![cond("ok", |c| c.eq = Some(json!(true)))], vec![0]),
        (vec![cond("ok", |c| c.eq = Some(json!(false)))], vec![1]),
        (vec![cond("ok", |c| c.gte = Some(0.0))], vec![3]),
        (vec![cond("ok", |_| {})], vec![0, 1, 2, 3]),
        (vec![cond("none", |_| {})], vec![4]),
        (vec![cond("none", |c| c.eq = Some(json!(null)))], vec![]),
        (
            vec![cond("nested", |c| c.eq = Some(json!({"kind": "car"})))],
            vec![],
        ),
        (vec![cond("kind", |c| c.eq = Some(json!(["car"])))], vec![]),
        (vec![cond("x.y", |c| c.eq = Some(json!("dot")))], vec![0]),
        (vec![cond("x", |_| {})], vec![]),
        (vec![cond("missing", |c| c.lt = Some(1e300))], vec![]),
        (
            vec![
                cond("kind", |c| c.eq = Some(json!("car"))),
                cond("ok", |c| c.eq = Some(json!(true))),
                cond("speed", |c| c.lte = Some(3.0)),
            ],
            vec![0],
        ),
        (
            vec![
                cond("kind", |c| c.eq = Some(json!("Car"))),
                cond("ok", |c| c.eq = Some(json!(true))),
            ],
            vec![],
        ),
        (vec![], (0..8).collect()),
    ];
    for (conds, expected) in cases {
        let filter = with(|f| f.data = Some(conds.clone()));
        let got = check_filter(&index, &all, &filter, &scope).await;
        assert_eq!(
            sorted_keys(all.iter().filter(|x| got.contains(&x.id))),
            sorted_keys(expected.iter().map(|i| &all[*i])),
            "{conds:?}"
        );
    }
}

/// Every hit in confidence order, following the cursor page by page.
pub async fn search_by_confidence(
    index: &Arc<dyn Index>,
    filter: &SearchFilter,
    scope: &Scope,
    page: usize,
) -> Vec<Hit> {
    let mut out: Vec<Hit> = Vec::new();
    let mut after: Option<Position> = None;
    loop {
        let hits = index
            .search(&IndexQuery {
                filter: filter.clone(),
                scope: scope.clone(),
                order: SortOrder::Confidence,
                after: after.clone(),
                limit: page,
            })
            .await
            .expect("search by confidence");
        assert!(hits.len() <= page);
        let n = hits.len();
        after = hits.last().map(Hit::position);
        out.extend(hits);
        if n < page {
            return out;
        }
        assert!(out.len() < 1_000_000, "paging does not end");
    }
}

/// The brute force of confidence order: (rank, key) of the matching annotations.
pub fn by_confidence<'a>(
    all: impl IntoIterator<Item = &'a Annotation>,
) -> Vec<(Option<f32>, SortKey)> {
    let mut v: Vec<(Option<f32>, SortKey)> = all
        .into_iter()
        .map(|a| {
            (
                query::rank_of(SortOrder::Confidence, a, None),
                SortKey::of(a),
            )
        })
        .collect();
    v.sort_by(|a, b| query::compare(SortOrder::Confidence, (a.0, &a.1), (b.0, &b.1)));
    v
}

/// Confidence order: highest first, missing last (rank -1), ties by time key; the
/// cursor is exclusive and pages return each hit once.
pub async fn confidence_order(index: Arc<dyn Index>) {
    let (op, other) = (Uuid::new_v4(), Uuid::new_v4());
    let mut all = Vec::new();
    for i in 0..30i64 {
        let mut a = annotation(op, ["ca", "cb", "c"][(i % 3) as usize], i % 7, i % 7);
        a.confidence = match i % 5 {
            0 => None,
            1 => Some(0.0),
            2 => Some(0.5),
            3 => Some(1.0),
            _ => Some(0.5 + (i as f32) / 1000.0),
        };
        all.push(a);
    }
    let mut hidden = annotation(other, "ca", 0, 0);
    hidden.confidence = Some(0.99);
    upsert(&index, &all[..13]).await;
    upsert(&index, &[all[13..].to_vec(), vec![hidden]].concat()).await;
    let scope = Scope::Operation(op);
    let expected = by_confidence(&all);
    // Literally: the six 1.0s first, the six missing last.
    assert!(expected[..6].iter().all(|(r, _)| *r == Some(1.0)));
    assert!(expected[24..].iter().all(|(r, _)| *r == Some(-1.0)));
    for page in [1usize, 4, 7, 30, 100] {
        let hits = search_by_confidence(&index, &SearchFilter::default(), &scope, page).await;
        let got: Vec<(Option<f32>, SortKey)> =
            hits.iter().map(|h| (h.rank, h.key.clone())).collect();
        assert_eq!(got, expected, "page {page}");
    }
    // With a filter, and a cursor no hit holds (between ranks).
    let filter = with(|f| f.media_ids = Some(vec!["ca".into(), "c".into()]));
    let matching: Vec<&Annotation> = all.iter().filter(|a| query::matches(&filter, a)).collect();
    let expected = by_confidence(matching.iter().copied());
    let hits = search_by_confidence(&index, &filter, &scope, 3).await;
    assert_eq!(
        hits.iter()
            .map(|h| (h.rank, h.key.clone()))
            .collect::<Vec<_>>(),
        expected
    );
    let cursor = Position {
        rank: Some(0.75),
        key: SortKey {
            media_id: "zzz".into(),
            start_ms: 0,
            id: Uuid::nil(),
        },
    };
    let hits = index
        .search(&IndexQuery {
            filter: SearchFilter::default(),
            scope: scope.clone(),
            order: SortOrder::Confidence,
            after: Some(cursor.clone()),
            limit: 100,
        })
        .await
        .expect("search");
    let rest: Vec<SortKey> = by_confidence(&all)
        .into_iter()
        .filter(|(r, _)| r.unwrap_or(-1.0) < 0.75)
        .map(|(_, k)| k)
        .collect();
    assert_eq!(keys(&hits), rest);
    assert_eq!(rest.len(), 24);
    // A cursor without a rank is at the missing rank: only the missing ones after it.
    let hits = index
        .search(&IndexQuery {
            filter: SearchFilter::default(),
            scope,
            order: SortOrder::Confidence,
            after: Some(Position {
                rank: None,
                key: SortKey {
                    media_id: String::new(),
                    start_ms: i64::MIN,
                    id: Uuid::nil(),
                },
            }),
            limit: 100,
        })
        .await
        .expect("search");
    assert_eq!(hits.len(), 6);
    assert!(hits.iter().all(|h| h.rank == Some(-1.0)));
}

/// The aggregates of the matching annotations in scope, by the engine.
pub async fn aggregate(
    index: &Arc<dyn Index>,
    filter: &SearchFilter,
    scope: &Scope,
    spec: &AggregateSpec,
) -> Result<Aggregates, IndexError> {
    index
        .aggregate(&AggregateQuery {
            filter: filter.clone(),
            scope: scope.clone(),
            spec: spec.clone(),
        })
        .await
}

/// The same by brute force.
pub fn brute_aggregate(
    all: &[Annotation],
    filter: &SearchFilter,
    scope: &Scope,
    spec: &AggregateSpec,
) -> Aggregates {
    let mut agg = Aggregator::new(spec.clone());
    for a in all
        .iter()
        .filter(|a| scope.allows(&a.operation_id) && query::matches(filter, a))
    {
        agg.add(a);
    }
    agg.finish()
}

/// Labels top-N (ties by name), types per (type, version), histograms with labels and
/// annotations spanning buckets; in scope and filtered.
pub async fn aggregations(index: Arc<dyn Index>) {
    let (op, other) = (Uuid::new_v4(), Uuid::new_v4());
    let mut all = Vec::new();
    let mut add = |op: Uuid, start: i64, end: i64, label: Option<&str>, ty: &str, v: u32| {
        let mut a = annotation(op, "ag", start, end);
        a.label = label.map(String::from);
        a.annotation_type = ty.into();
        a.annotation_type_version = v;
        all.push(a);
    };
    add(op, 0, 999, Some("dog"), "shot", 1);
    add(op, 500, 2_500, Some("cat"), "shot", 1);
    add(op, 1_000, 1_000, Some("bird"), "face", 1);
    add(op, 2_000, 2_999, Some("cat"), "face", 2);
    add(op, 2_999, 3_000, Some("dog"), "face", 2);
    add(op, 9_000, 9_001, None, "shot", 2);
    add(op, -1, -1, Some("ant"), "shot", 1);
    add(other, 0, 10_000, Some("cat"), "shot", 1);
    upsert(&index, &all[..4]).await;
    upsert(&index, &all[4..]).await;
    let scope = Scope::Operation(op);
    let spec = AggregateSpec {
        labels: Some(2),
        types: true,
        histogram: Some(HistogramSpec {
            interval_ms: 1_000,
            by_label: true,
        }),
    };
    let got = aggregate(&index, &SearchFilter::default(), &scope, &spec)
        .await
        .expect("aggregate");
    assert_eq!(
        got,
        brute_aggregate(&all, &SearchFilter::default(), &scope, &spec)
    );
    // Literally.
    assert_eq!(got.total, 7);
    let lc = |label: &str, count| LabelCount {
        label: label.into(),
        count,
    };
    assert_eq!(got.labels, Some(vec![lc("cat", 2), lc("dog", 2)]));
    let tc = |t: &str, v, count| TypeCount {
        annotation_type: t.into(),
        annotation_type_version: v,
        count,
    };
    assert_eq!(
        got.types,
        Some(vec![
            tc("face", 1, 1),
            tc("face", 2, 2),
            tc("shot", 1, 3),
            tc("shot", 2, 1)
        ])
    );
    let histogram = got.histogram.expect("histogram");
    let starts: Vec<i64> = histogram.iter().map(|b| b.start_ms).collect();
    assert_eq!(starts, vec![-1_000, 0, 1_000, 2_000, 3_000, 9_000]);
    let counts: Vec<u64> = histogram.iter().map(|b| b.count).collect();
    assert_eq!(counts, vec![1, 2, 2, 3, 1, 1]);
    let at = |i: usize| histogram[i].labels.clone().expect("by label");
    assert_eq!(
        at(2).into_iter().collect::<Vec<_>>(),
        vec![("bird".to_string(), 1), ("cat".to_string(), 1)]
    );
    assert_eq!(at(3).get("cat"), Some(&2));
    assert_eq!(
        at(5).len(),
        0,
        "an unlabelled annotation counts, without a label"
    );
    // Ties at the cut: labels with equal counts by name.
    for n in [0u32, 1, 3, 10] {
        let spec = AggregateSpec {
            labels: Some(n),
            ..Default::default()
        };
        let got = aggregate(&index, &SearchFilter::default(), &scope, &spec)
            .await
            .expect("aggregate");
        assert_eq!(
            got,
            brute_aggregate(&all, &SearchFilter::default(), &scope, &spec)
        );
        assert_eq!(got.types, None);
        assert_eq!(got.histogram, None);
    }
    // Filtered, across scopes, without labels per bucket.
    let both = visible(&[op, other]);
    let filter = with(|f| f.time_range = Some(TimeRange::new(900, 2_000)));
    let spec = AggregateSpec {
        labels: Some(5),
        types: true,
        histogram: Some(HistogramSpec {
            interval_ms: 700,
            by_label: false,
        }),
    };
    let got = aggregate(&index, &filter, &both, &spec)
        .await
        .expect("aggregate");
    assert_eq!(got, brute_aggregate(&all, &filter, &both, &spec));
    assert_eq!(got.total, 5);
    assert!(got.histogram.iter().flatten().all(|b| b.labels.is_none()));
    // Nothing matches: zero, empty lists.
    let none = with(|f| f.media_id = Some("nope".into()));
    let got = aggregate(&index, &none, &both, &spec)
        .await
        .expect("aggregate");
    assert_eq!(got.total, 0);
    assert_eq!(got.labels, Some(vec![]));
    assert_eq!(got.histogram, Some(vec![]));
}

/// Odd histograms are refused, not computed without bound.
pub async fn histogram_bounds(index: Arc<dyn Index>) {
    let op = Uuid::new_v4();
    let xs = vec![
        annotation(op, "hb", 0, 10),
        annotation(op, "hb", i64::MIN, i64::MAX - 1),
    ];
    upsert(&index, &xs).await;
    let scope = Scope::Operation(op);
    let spec = |interval_ms| AggregateSpec {
        histogram: Some(HistogramSpec {
            interval_ms,
            by_label: false,
        }),
        ..Default::default()
    };
    for bad in [0, -5] {
        let got = aggregate(&index, &SearchFilter::default(), &scope, &spec(bad)).await;
        assert!(
            matches!(got, Err(IndexError::Unanswerable(_))),
            "interval {bad}: {got:?}"
        );
    }
    // Spanning every millisecond: far more than MAX_BUCKETS.
    let got = aggregate(&index, &SearchFilter::default(), &scope, &spec(1)).await;
    assert!(matches!(got, Err(IndexError::Unanswerable(_))), "{got:?}");
    // Without the long one, the same interval is fine.
    let short = with(|f| {
        f.time_range = Some(TimeRange {
            relation: TimeRelation::Within,
            ..TimeRange::new(0, 10)
        })
    });
    let got = aggregate(&index, &short, &scope, &spec(1))
        .await
        .expect("aggregate");
    assert_eq!(got, brute_aggregate(&xs, &short, &scope, &spec(1)));
    assert_eq!(got.histogram.map(|h| h.len()), Some(11));
    // 10_002 buckets for the long one.
    let got = aggregate(
        &index,
        &SearchFilter::default(),
        &scope,
        &spec(i64::MAX / 5_000),
    )
    .await;
    assert!(matches!(got, Err(IndexError::Unanswerable(_))), "{got:?}");
    // One bucket, starting below i64::MIN: floor(i64::MIN / 3) * 3.
    let edge = annotation(op, "hb-min", i64::MIN, i64::MIN);
    upsert(&index, std::slice::from_ref(&edge)).await;
    let only = with(|f| f.media_id = Some("hb-min".into()));
    let got = aggregate(&index, &only, &scope, &spec(3)).await;
    assert!(matches!(got, Err(IndexError::Unanswerable(_))), "{got:?}");
    let got = aggregate(&index, &only, &scope, &spec(2))
        .await
        .expect("aggregate");
    let bucket = got.histogram.expect("histogram");
    assert_eq!(
        (bucket.len(), bucket[0].start_ms, bucket[0].count),
        (1, i64::MIN, 1)
    );
}
