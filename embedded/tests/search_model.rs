//! Property test of search on the embedded engines against brute force over the store:
//! random types, runs (finished, superseded, still STARTED) and annotations, then random
//! searches with every filter, both orders, nearest neighbours, aggregations and
//! co-occurrence. Each answer, followed page by page, equals the brute-force answer
//! computed from the annotations of the active runs with `annostore_core::query`.

use annostore_core::clock::SystemClock;
use annostore_core::model::{
    Annotation, SearchFilter, SearchRequest, SortKey, SortOrder, StartOperation, TypeDefinition,
};
use annostore_core::query::{
    self, AggregateSpec, Aggregator, DataCondition, HistogramSpec, Interval, Knn, Region,
    SpaceRelation, TextQuery, TimeRange, TimeRelation,
};
use annostore_core::service::{AggregateRequest, CooccurrenceRequest, Service};
use annostore_core::validate::Limits;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::sync::Arc;

const MEDIA: [&str; 3] = ["m0", "m1", "m2"];
const LABELS: [&str; 7] = [
    "person",
    "persons",
    "car",
    "cart",
    "curtain",
    "motorcycle",
    "red car",
];
const WORDS: [&str; 6] = ["curtian", "person", "car", "moto", "red", "motorcycle"];
const KINDS: [&str; 3] = ["a", "b", "c"];
const DIM: usize = 4;

/// A small deterministic generator: every case is a seed, printed on failure.
struct Gen(fastrand::Rng);

impl Gen {
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.0.usize(..xs.len())]
    }
    fn chance(&mut self, p: f64) -> bool {
        self.0.f64() < p
    }
    fn tenth(&mut self) -> f32 {
        self.0.u8(0..=10) as f32 / 10.0
    }
}

async fn setup(service: &Service) {
    let schema = json!({"type": "object", "properties": {
        "caption": {"type": "string", "x-annostore-search": "text"},
        "kind": {"type": "string"},
        "speed": {"type": "number"},
        "moving": {"type": "boolean"}
    }});
    for (name, dim) in [("objects", Some(DIM as u32)), ("faces", None)] {
        service
            .put_type(
                name,
                1,
                TypeDefinition {
                    schema: schema.clone(),
                    embedding_dim: dim,
                },
            )
            .await
            .expect("register type");
    }
}

fn item(g: &mut Gen, with_embedding: bool) -> Value {
    let start = g.0.i64(0..20_000);
    let mut a = json!({
        "media_id": g.pick(&MEDIA),
        "start_ms": start,
        "end_ms": start + g.0.i64(0..3_000),
    });
    if g.chance(0.9) {
        a["label"] = json!(g.pick(&LABELS));
    }
    if g.chance(0.8) {
        a["confidence"] = json!(g.tenth());
    }
    if g.chance(0.8) {
        let (x, y) = (g.tenth() * 0.8, g.tenth() * 0.8);
        a["bbox"] = json!({"x": x, "y": y, "w": g.tenth() * 0.2, "h": g.tenth() * 0.2});
    }
    let mut data = serde_json::Map::new();
    if g.chance(0.5) {
        data.insert(
            "caption".into(),
            json!(format!(
                "a {} near the {}",
                g.pick(&LABELS),
                g.pick(&LABELS)
            )),
        );
    }
    if g.chance(0.6) {
        data.insert("kind".into(), json!(g.pick(&KINDS)));
    }
    if g.chance(0.6) {
        data.insert("speed".into(), json!(g.0.i64(0..100) as f64 / 4.0));
    }
    if g.chance(0.5) {
        data.insert("moving".into(), json!(g.chance(0.5)));
    }
    if !data.is_empty() {
        a["data"] = Value::Object(data);
    }
    if with_embedding {
        let v: Vec<f32> = (0..DIM).map(|_| g.0.f32() * 2.0 - 1.0).collect();
        a["embedding"] = json!(v);
    }
    a
}

/// Writes random runs; returns the annotations of the active ones.
async fn runs(g: &mut Gen, service: &Service) -> Vec<Annotation> {
    let mut visible = Vec::new();
    for (ty, pivot) in [("objects", "p0"), ("objects", "p1"), ("faces", "p0")] {
        let runs = g.0.usize(1..=3);
        for r in 0..runs {
            let op = service
                .start(StartOperation {
                    producer: None,
                    annotation_type: ty.into(),
                    annotation_type_version: 1,
                    pivot_id: pivot.into(),
                    lease_seconds: None,
                    metadata: None,
                })
                .await
                .expect("start");
            let n = g.0.usize(0..40);
            let items: Vec<Value> = (0..n).map(|_| item(g, ty == "objects")).collect();
            service.upsert(op.id, &items).await.expect("upsert");
            // The last run of a key may stay STARTED; earlier ones finish (and are
            // superseded by the next finished one).
            let finish = r + 1 < runs || g.chance(0.7);
            if finish {
                service.finish(op.id).await.expect("finish");
            }
        }
    }
    // The truth: the store's active runs, read back whole from the store.
    let store = &service.engines().store;
    for op in store.active_operations().await.expect("active operations") {
        let mut all = store
            .annotations_of_operation(op.id, None, 10_000)
            .await
            .expect("annotations of an active run");
        visible.append(&mut all);
    }
    visible
}

fn filter(g: &mut Gen) -> SearchFilter {
    let mut f = SearchFilter::default();
    if g.chance(0.3) {
        f.media_id = Some(g.pick(&MEDIA).into());
    } else if g.chance(0.2) {
        f.media_ids = Some(vec![g.pick(&MEDIA).into(), g.pick(&MEDIA).into()]);
    }
    if g.chance(0.2) {
        f.annotation_type = Some(g.pick(&["objects", "faces"]).into());
    } else if g.chance(0.1) {
        f.annotation_types = Some(vec!["faces".into(), "objects".into()]);
    }
    if g.chance(0.2) {
        f.label = Some(g.pick(&LABELS).into());
    } else if g.chance(0.2) {
        f.labels = Some(vec![g.pick(&LABELS).into(), g.pick(&LABELS).into()]);
    }
    if g.chance(0.4) {
        let start = g.0.i64(0..20_000);
        f.time_range = Some(TimeRange {
            start_ms: start,
            end_ms: start + g.0.i64(0..8_000),
            relation: [
                TimeRelation::Intersects,
                TimeRelation::Within,
                TimeRelation::Contains,
            ][g.0.usize(0..3)],
        });
    }
    if g.chance(0.2) {
        f.min_confidence = Some(g.tenth());
    }
    if g.chance(0.15) {
        f.max_confidence = Some(g.tenth());
    }
    if g.chance(0.25) {
        f.region = Some(Region {
            x: f64::from(g.tenth()) * 0.5,
            y: f64::from(g.tenth()) * 0.5,
            w: f64::from(g.tenth()) * 0.5,
            h: f64::from(g.tenth()) * 0.5,
            relation: if g.chance(0.5) {
                SpaceRelation::Intersects
            } else {
                SpaceRelation::Within
            },
        });
    }
    if g.chance(0.25) {
        let words = g.0.usize(1..=2);
        let query: Vec<&str> = (0..words).map(|_| g.pick(&WORDS)).collect();
        f.text = Some(TextQuery {
            query: query.join(" "),
            fuzzy: g.chance(0.7),
            fields: if g.chance(0.3) {
                vec![g.pick(&["label", "data.caption"]).into()]
            } else {
                vec![]
            },
        });
    }
    if g.chance(0.3) {
        let mut conds = Vec::new();
        match g.0.u8(0..3) {
            0 => conds.push(DataCondition {
                field: "kind".into(),
                eq: Some(json!(g.pick(&KINDS))),
                ..Default::default()
            }),
            1 => conds.push(DataCondition {
                field: "speed".into(),
                gte: g.chance(0.5).then(|| g.0.i64(0..25) as f64),
                lt: Some(g.0.i64(0..25) as f64 + 1.0),
                eq: g.chance(0.2).then(|| json!(g.0.i64(0..100) as f64 / 4.0)),
                ..Default::default()
            }),
            _ => conds.push(DataCondition {
                field: "moving".into(),
                eq: Some(json!(g.chance(0.5))),
                ..Default::default()
            }),
        }
        f.data = Some(conds);
    }
    f
}

/// The filter with text fields filled in as the service does (label and data.caption,
/// the only field the schemas mark for text).
fn resolved(f: &SearchFilter) -> SearchFilter {
    let mut f = f.clone();
    if let Some(t) = f.text.as_mut()
        && t.fields.is_empty()
    {
        t.fields = vec!["label".into(), "data.caption".into()];
    }
    f
}

async fn all_pages(service: &Service, mut req: SearchRequest) -> Vec<(Annotation, Option<f32>)> {
    let mut out = Vec::new();
    loop {
        let page = service.search(&req).await.expect("search");
        assert!(!page.view_changed, "the view changed with no run finishing");
        let scores = page.scores.clone();
        for (i, a) in page.annotations.into_iter().enumerate() {
            out.push((a, scores.as_ref().map(|s| s[i])));
        }
        match page.next_page_token {
            Some(t) => req.page_token = Some(t),
            None => return out,
        }
        assert!(out.len() < 10_000, "paging does not end");
    }
}

fn ids(v: &[(Annotation, Option<f32>)]) -> Vec<(uuid::Uuid, SortKey)> {
    v.iter().map(|(a, _)| (a.id, SortKey::of(a))).collect()
}

async fn check(seed: u64) {
    let mut g = Gen(fastrand::Rng::with_seed(seed));
    let dir = tempfile::tempdir().expect("tempdir");
    let engines = annostore_embedded::open(dir.path()).expect("open");
    let service = Service::new(engines, Limits::default(), Arc::new(SystemClock));
    setup(&service).await;
    let visible = runs(&mut g, &service).await;
    for q in 0..12 {
        let f = filter(&mut g);
        let model_filter = resolved(&f);
        let matching: Vec<&Annotation> = visible
            .iter()
            .filter(|a| query::matches(&model_filter, a))
            .collect();
        match q % 4 {
            // Time or confidence order, paged.
            0 | 1 => {
                let order = if q % 4 == 0 {
                    SortOrder::Time
                } else {
                    SortOrder::Confidence
                };
                let got = all_pages(
                    &service,
                    SearchRequest {
                        filter: f.clone(),
                        sort: Some(order),
                        limit: Some(g.0.u32(1..8)),
                        ..Default::default()
                    },
                )
                .await;
                let mut want: Vec<&Annotation> = matching.clone();
                want.sort_by(|a, b| {
                    query::compare(
                        order,
                        (query::rank_of(order, a, None), &SortKey::of(a)),
                        (query::rank_of(order, b, None), &SortKey::of(b)),
                    )
                });
                let want: Vec<_> = want.iter().map(|a| (a.id, SortKey::of(a))).collect();
                assert_eq!(ids(&got), want, "seed {seed}: {order:?} search {f:?}");
            }
            // Nearest neighbours (exact at this size).
            2 => {
                let v: Vec<f32> = (0..DIM).map(|_| g.0.f32() * 2.0 - 1.0).collect();
                let k = g.0.u32(1..12);
                let got = all_pages(
                    &service,
                    SearchRequest {
                        filter: f.clone(),
                        knn: Some(Knn {
                            vector: Some(v.clone()),
                            text: None,
                            k,
                        }),
                        limit: Some(g.0.u32(1..5)),
                        ..Default::default()
                    },
                )
                .await;
                let mut want: Vec<(f32, &Annotation)> = matching
                    .iter()
                    .filter_map(|a| {
                        let e = a.embedding.as_deref()?;
                        (e.len() == DIM).then(|| (query::cosine(&v, e), *a))
                    })
                    .collect();
                want.sort_by(|a, b| {
                    query::compare(
                        SortOrder::Score,
                        (Some(a.0), &SortKey::of(a.1)),
                        (Some(b.0), &SortKey::of(b.1)),
                    )
                });
                want.truncate(k as usize);
                let want_ids: Vec<_> = want.iter().map(|(_, a)| (a.id, SortKey::of(a))).collect();
                assert_eq!(ids(&got), want_ids, "seed {seed}: knn k={k} {f:?}");
                for ((_, s), (w, _)) in got.iter().zip(&want) {
                    assert_eq!(*s, Some(*w), "seed {seed}: knn score");
                }
            }
            // Aggregations and co-occurrence.
            _ => {
                let mut f = f.clone();
                f.media_ids = None;
                f.media_id = Some(g.pick(&MEDIA).into());
                let spec = AggregateSpec {
                    labels: Some(g.0.u32(1..5)),
                    types: true,
                    histogram: Some(HistogramSpec {
                        interval_ms: g.0.i64(500..5_000),
                        by_label: g.chance(0.5),
                    }),
                };
                let got = service
                    .aggregate(&AggregateRequest {
                        filter: f.clone(),
                        aggregations: spec.clone(),
                    })
                    .await
                    .expect("aggregate");
                let mut model = Aggregator::new(spec);
                let model_filter = resolved(&f);
                for a in visible.iter().filter(|a| query::matches(&model_filter, a)) {
                    model.add(a);
                }
                assert_eq!(got, model.finish(), "seed {seed}: aggregate {f:?}");

                let media = f.media_id.clone().unwrap_or_default();
                let conditions: Vec<SearchFilter> = (0..g.0.usize(1..=3))
                    .map(|_| SearchFilter {
                        label: Some(g.pick(&LABELS).into()),
                        ..Default::default()
                    })
                    .collect();
                let slack = g.0.i64(0..600);
                let got = service
                    .cooccurrence(&CooccurrenceRequest {
                        media_id: media.clone(),
                        time_range: None,
                        conditions: conditions.clone(),
                        slack_ms: slack,
                        min_duration_ms: None,
                    })
                    .await
                    .expect("cooccurrence");
                let mut acc: Option<Vec<Interval>> = None;
                for c in &conditions {
                    let spans = visible
                        .iter()
                        .filter(|a| a.media_id == media && a.label == c.label)
                        .map(|a| Interval {
                            start_ms: a.start_ms - slack,
                            end_ms: a.end_ms + slack,
                        })
                        .collect();
                    let u = query::union(spans);
                    acc = Some(match acc {
                        None => u,
                        Some(prev) => query::intersect(&prev, &u),
                    });
                }
                // Slack can reach before time 0; answers start at 0.
                let from_zero = [Interval {
                    start_ms: 0,
                    end_ms: i64::MAX,
                }];
                assert_eq!(
                    got.intervals,
                    query::intersect(&acc.unwrap_or_default(), &from_zero),
                    "seed {seed}: cooccurrence {conditions:?}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]
    #[test]
    fn search_equals_brute_force_over_the_store(seed in any::<u64>()) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(check(seed));
    }
}

#[test]
fn a_known_case_pins_the_semantics() {
    // Literal expectations, so a bug shared by the engine and `query` cannot pass.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let engines = annostore_embedded::open(dir.path()).expect("open");
        let service = Service::new(engines, Limits::default(), Arc::new(SystemClock));
        setup(&service).await;
        let op = service
            .start(StartOperation {
                producer: None,
                annotation_type: "objects".into(),
                annotation_type_version: 1,
                pivot_id: "p".into(),
                lease_seconds: None,
                metadata: None,
            })
            .await
            .expect("start");
        let items = vec![
            json!({"media_id": "m", "start_ms": 0, "end_ms": 999, "label": "person",
                   "confidence": 0.9, "bbox": {"x": 0.1, "y": 0.1, "w": 0.2, "h": 0.2},
                   "data": {"caption": "a curtain", "speed": 3.5, "kind": "a"},
                   "embedding": [1.0, 0.0, 0.0, 0.0]}),
            json!({"media_id": "m", "start_ms": 500, "end_ms": 1500, "label": "motorcycle",
                   "confidence": 0.5, "bbox": {"x": 0.6, "y": 0.6, "w": 0.3, "h": 0.3},
                   "data": {"speed": 10, "moving": true},
                   "embedding": [0.0, 1.0, 0.0, 0.0]}),
            json!({"media_id": "m", "start_ms": 3000, "end_ms": 3999, "label": "person",
                   "embedding": [0.7, 0.7, 0.0, 0.0]}),
        ];
        service.upsert(op.id, &items).await.expect("upsert");
        service.finish(op.id).await.expect("finish");
        let labels = |req: SearchRequest| {
            let service = &service;
            async move {
                let page = service.search(&req).await.expect("search");
                page.annotations
                    .iter()
                    .map(|a| (a.label.clone().unwrap_or_default(), a.start_ms))
                    .collect::<Vec<_>>()
            }
        };
        let f = |filter: SearchFilter| SearchRequest {
            filter,
            ..Default::default()
        };
        // Fuzzy text finds the misspelt curtain in the caption; exact does not.
        let text = |fuzzy| SearchFilter {
            text: Some(TextQuery {
                query: "curtian".into(),
                fuzzy,
                fields: vec![],
            }),
            ..Default::default()
        };
        assert_eq!(labels(f(text(true))).await, vec![("person".into(), 0)]);
        assert!(labels(f(text(false))).await.is_empty());
        // Within / contains.
        let time = |s, e, relation| SearchFilter {
            time_range: Some(TimeRange {
                start_ms: s,
                end_ms: e,
                relation,
            }),
            ..Default::default()
        };
        assert_eq!(
            labels(f(time(0, 1000, TimeRelation::Within))).await,
            vec![("person".into(), 0)]
        );
        assert_eq!(
            labels(f(time(600, 900, TimeRelation::Contains))).await,
            vec![("person".into(), 0), ("motorcycle".into(), 500)]
        );
        // A region in the bottom-right quarter.
        let region = SearchFilter {
            region: Some(Region {
                x: 0.5,
                y: 0.5,
                w: 0.5,
                h: 0.5,
                relation: SpaceRelation::Within,
            }),
            ..Default::default()
        };
        assert_eq!(labels(f(region)).await, vec![("motorcycle".into(), 500)]);
        // Numbers compare as numbers (10 > 3.5), and confidence orders highest first with
        // the annotation without one last.
        let fast = SearchFilter {
            data: Some(vec![DataCondition {
                field: "speed".into(),
                gt: Some(5.0),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(labels(f(fast)).await, vec![("motorcycle".into(), 500)]);
        let by_conf = SearchRequest {
            sort: Some(SortOrder::Confidence),
            ..Default::default()
        };
        assert_eq!(
            labels(by_conf).await,
            vec![
                ("person".into(), 0),
                ("motorcycle".into(), 500),
                ("person".into(), 3000)
            ]
        );
        // Nearest to (1, 0.1, 0, 0): the first, then the diagonal one.
        let knn = SearchRequest {
            knn: Some(Knn {
                vector: Some(vec![1.0, 0.1, 0.0, 0.0]),
                text: None,
                k: 2,
            }),
            ..Default::default()
        };
        assert_eq!(
            labels(knn).await,
            vec![("person".into(), 0), ("person".into(), 3000)]
        );
        // A timeline of 1 s buckets: the motorcycle touches buckets 0 and 1.
        let agg = service
            .aggregate(&AggregateRequest {
                filter: SearchFilter {
                    media_id: Some("m".into()),
                    ..Default::default()
                },
                aggregations: AggregateSpec {
                    labels: Some(1),
                    types: false,
                    histogram: Some(HistogramSpec {
                        interval_ms: 1000,
                        by_label: false,
                    }),
                },
            })
            .await
            .expect("aggregate");
        assert_eq!(agg.total, 3);
        let labels_top = agg.labels.expect("labels");
        assert_eq!(
            (labels_top[0].label.as_str(), labels_top[0].count),
            ("person", 2)
        );
        let buckets: Vec<(i64, u64)> = agg
            .histogram
            .expect("histogram")
            .iter()
            .map(|b| (b.start_ms, b.count))
            .collect();
        assert_eq!(buckets, vec![(0, 2), (1000, 1), (3000, 1)]);
        // Person and motorcycle together: 500..999.
        let co = service
            .cooccurrence(&CooccurrenceRequest {
                media_id: "m".into(),
                time_range: None,
                conditions: vec![
                    SearchFilter {
                        label: Some("person".into()),
                        ..Default::default()
                    },
                    SearchFilter {
                        label: Some("motorcycle".into()),
                        ..Default::default()
                    },
                ],
                slack_ms: 0,
                min_duration_ms: None,
            })
            .await
            .expect("cooccurrence");
        assert_eq!(
            co.intervals,
            vec![Interval {
                start_ms: 500,
                end_ms: 999
            }]
        );
    });
}
