//! The tantivy index against a brute-force model: for random annotations, batches,
//! filters, scopes and page sizes, paged search and aggregations equal what
//! `query::matches` and `Aggregator` say over the same annotations.

use annostore_core::index::Existing;
use annostore_core::index::{Index, Scope};
use annostore_core::model::{
    Annotation, BBox, DataCondition, Region, SearchFilter, SortKey, TextQuery, TimeRange,
    TimeRelation,
};
use annostore_core::query::{AggregateSpec, HistogramSpec, SpaceRelation};
use annostore_core::service::matches;
use annostore_core::testkit::index as suite;
use annostore_core::visibility::Visibility;
use annostore_embedded::index::{IndexOptions, TantivyIndex};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Commits only when the test asks (see [`run_case`]'s `commits`).
fn small() -> IndexOptions {
    IndexOptions {
        commit_interval: Duration::from_secs(3_600),
        commit_docs: 1_000_000,
        memory_budget_bytes: 32 << 20,
        indexing_threads: 1,
        ..IndexOptions::default()
    }
}

#[derive(Debug, Clone)]
struct Gen {
    media: usize,
    start: i64,
    len: i64,
    label: Option<usize>,
    confidence: Option<u8>,
    op: usize,
    ty: usize,
    version: u32,
    pivot: usize,
    /// Replace an earlier annotation's id instead of a fresh one.
    reuse: Option<usize>,
    /// (x, y, w, h) in tenths.
    bbox: Option<(u8, u8, u8, u8)>,
    data: Option<Vec<(usize, usize)>>,
}

const MEDIA: &[&str] = &["a", "ab", "b", "a0", "B", "b-1", "zz"];
/// Labels, near-misspellings among them.
const LABELS: &[&str] = &[
    "cat",
    "ca",
    "cats",
    "dog",
    "Cat",
    "curtain",
    "curtian",
    "red curtain",
    "cut-out",
];
const TYPES: &[&str] = &["shot", "face"];
const PIVOTS: &[&str] = &["p", "q"];
/// Data fields and the values they take (strings, numbers, booleans, other kinds).
const DATA_FIELDS: &[&str] = &["kind", "n", "ok", "caption"];

fn data_value(i: usize) -> Value {
    [
        json!("car"),
        json!("Car"),
        json!("curtain"),
        json!("the red curtian"),
        json!(0),
        json!(-0.0),
        json!(1),
        json!(1.0),
        json!(2.5),
        json!(-3),
        json!(true),
        json!(false),
        json!("true"),
        json!(null),
        json!([1]),
    ][i % 15]
        .clone()
}

const DATA_VALUES: usize = 15;

fn gen_annotation() -> impl Strategy<Value = Gen> {
    use proptest::option::{of, weighted};
    (
        (
            0..MEDIA.len(),
            -20i64..40,
            0i64..15,
            of(0..LABELS.len()),
            weighted(0.8, 0u8..=10),
        ),
        (
            0usize..3,
            0..TYPES.len(),
            1u32..=2,
            0..PIVOTS.len(),
            weighted(0.2, 0usize..1_000),
        ),
        (
            weighted(0.7, (0u8..=10, 0u8..=10, 0u8..=5, 0u8..=5)),
            weighted(
                0.6,
                proptest::collection::vec((0..DATA_FIELDS.len(), 0..DATA_VALUES), 0..4),
            ),
        ),
    )
        .prop_map(
            |(
                (media, start, len, label, confidence),
                (op, ty, version, pivot, reuse),
                (bbox, data),
            )| Gen {
                media,
                start,
                len,
                label,
                confidence,
                op,
                ty,
                version,
                pivot,
                reuse,
                bbox,
                data,
            },
        )
}

#[derive(Debug, Clone)]
struct GenCond {
    field: usize,
    eq: Option<usize>,
    gt: Option<i8>,
    gte: Option<i8>,
    lt: Option<i8>,
    lte: Option<i8>,
}

fn gen_cond() -> impl Strategy<Value = GenCond> {
    use proptest::option::weighted;
    (
        0..DATA_FIELDS.len() + 1,
        weighted(0.5, 0..DATA_VALUES),
        weighted(0.2, -4i8..6),
        weighted(0.2, -4i8..6),
        weighted(0.2, -4i8..6),
        weighted(0.2, -4i8..6),
    )
        .prop_map(|(field, eq, gt, gte, lt, lte)| GenCond {
            field,
            eq,
            gt,
            gte,
            lt,
            lte,
        })
}

/// Text query tokens: exact words, misspellings, short ones, case and punctuation.
const WORDS: &[&str] = &[
    "cat", "curtian", "CURTAIN", "red", "ca", "dogg", "out", "car", "cut", "tru",
];
const TEXT_FIELDS: &[&str] = &["label", "data.caption", "data.kind", "data.n"];

#[derive(Debug, Clone)]
struct GenText {
    words: Vec<usize>,
    fuzzy: bool,
    fields: Vec<usize>,
}

#[derive(Debug, Clone)]
struct GenFilter {
    media: Option<usize>,
    ty: Option<usize>,
    version: Option<u32>,
    pivot: Option<usize>,
    label: Option<usize>,
    time: Option<(i64, i64, u8)>,
    confidence: Option<u8>,
    op: Option<usize>,
    media_ids: Option<Vec<usize>>,
    types: Option<Vec<usize>>,
    labels: Option<Vec<usize>>,
    max_confidence: Option<u8>,
    region: Option<(u8, u8, u8, u8, bool)>,
    text: Option<GenText>,
    data: Option<Vec<GenCond>>,
}

fn gen_filter() -> impl Strategy<Value = GenFilter> {
    use proptest::collection::vec;
    use proptest::option::weighted;
    (
        (
            weighted(0.2, 0..MEDIA.len()),
            weighted(0.2, 0..TYPES.len()),
            weighted(0.15, 1u32..=2),
            weighted(0.15, 0..PIVOTS.len()),
            weighted(0.15, 0..LABELS.len()),
            weighted(0.4, (-25i64..60, 0i64..20, 0u8..3)),
            weighted(0.2, 0u8..=10),
            weighted(0.15, 0usize..3),
        ),
        (
            weighted(0.2, vec(0..MEDIA.len(), 0..3)),
            weighted(0.15, vec(0..TYPES.len(), 0..2)),
            weighted(0.2, vec(0..LABELS.len(), 0..4)),
            weighted(0.2, 0u8..=10),
            weighted(0.3, (0u8..=10, 0u8..=10, 0u8..=6, 0u8..=6, any::<bool>())),
            weighted(
                0.35,
                (
                    vec(0..WORDS.len(), 0..4),
                    proptest::bool::weighted(0.7),
                    vec(0..TEXT_FIELDS.len(), 0..4),
                )
                    .prop_map(|(words, fuzzy, fields)| GenText {
                        words,
                        fuzzy,
                        fields,
                    }),
            ),
            weighted(0.35, vec(gen_cond(), 0..3)),
        ),
    )
        .prop_map(
            |(
                (media, ty, version, pivot, label, time, confidence, op),
                (media_ids, types, labels, max_confidence, region, text, data),
            )| GenFilter {
                media,
                ty,
                version,
                pivot,
                label,
                time,
                confidence,
                op,
                media_ids,
                types,
                labels,
                max_confidence,
                region,
                text,
                data,
            },
        )
}

fn gen_spec() -> impl Strategy<Value = AggregateSpec> {
    use proptest::option::weighted;
    (
        weighted(0.6, 0u32..5),
        any::<bool>(),
        weighted(0.6, (1i64..20, any::<bool>())),
    )
        .prop_map(|(labels, types, histogram)| AggregateSpec {
            labels,
            types,
            histogram: histogram.map(|(interval_ms, by_label)| HistogramSpec {
                interval_ms,
                by_label,
            }),
        })
}

#[derive(Debug, Clone)]
enum GenScope {
    Visible(Vec<bool>),
    Operation(usize),
}

fn gen_scope() -> impl Strategy<Value = GenScope> {
    prop_oneof![
        3 => proptest::collection::vec(any::<bool>(), 3).prop_map(GenScope::Visible),
        1 => (0usize..3).prop_map(GenScope::Operation),
    ]
}

fn tenths(v: u8) -> f32 {
    f32::from(v) / 10.0
}

fn filter_of(g: GenFilter, ops: &[Uuid]) -> SearchFilter {
    let strings = |xs: Option<Vec<usize>>, from: &[&str]| {
        xs.map(|v| v.into_iter().map(|i| from[i].to_owned()).collect())
    };
    let bound = |b: Option<i8>| b.map(|b| f64::from(b) / 2.0);
    SearchFilter {
        media_id: g.media.map(|m| MEDIA[m].to_owned()),
        annotation_type: g.ty.map(|t| TYPES[t].to_owned()),
        annotation_type_version: g.version,
        pivot_id: g.pivot.map(|p| PIVOTS[p].to_owned()),
        label: g.label.map(|l| LABELS[l].to_owned()),
        time_range: g.time.map(|(s, l, rel)| TimeRange {
            start_ms: s,
            end_ms: s + l,
            relation: [
                TimeRelation::Intersects,
                TimeRelation::Within,
                TimeRelation::Contains,
            ][usize::from(rel)],
        }),
        min_confidence: g.confidence.map(tenths),
        operation_id: g.op.map(|o| ops[o]),
        media_ids: strings(g.media_ids, MEDIA),
        annotation_types: strings(g.types, TYPES),
        labels: strings(g.labels, LABELS),
        max_confidence: g.max_confidence.map(tenths),
        region: g.region.map(|(x, y, w, h, within)| Region {
            x: f64::from(tenths(x)),
            y: f64::from(tenths(y)),
            w: f64::from(tenths(w)),
            h: f64::from(tenths(h)),
            relation: if within {
                SpaceRelation::Within
            } else {
                SpaceRelation::Intersects
            },
        }),
        text: g.text.map(|t| TextQuery {
            query: t
                .words
                .iter()
                .map(|w| WORDS[*w])
                .collect::<Vec<_>>()
                .join(", "),
            fuzzy: t.fuzzy,
            fields: t
                .fields
                .iter()
                .map(|f| TEXT_FIELDS[*f].to_owned())
                .collect(),
        }),
        data: g.data.map(|cs| {
            cs.into_iter()
                .map(|c| DataCondition {
                    field: DATA_FIELDS.get(c.field).unwrap_or(&"missing").to_string(),
                    eq: c.eq.map(data_value),
                    gt: bound(c.gt),
                    gte: bound(c.gte),
                    lt: bound(c.lt),
                    lte: bound(c.lte),
                })
                .collect()
        }),
    }
}

/// The filter's parts, each alone: a part that one bug breaks is checked even when the
/// other parts leave nothing to match.
fn parts(f: &SearchFilter) -> Vec<SearchFilter> {
    let mut out = Vec::new();
    let mut part = |set: &dyn Fn(&mut SearchFilter)| {
        let mut p = SearchFilter::default();
        set(&mut p);
        if p != SearchFilter::default() {
            out.push(p);
        }
    };
    part(&|p| p.media_id = f.media_id.clone());
    part(&|p| p.media_ids = f.media_ids.clone());
    part(&|p| p.annotation_type = f.annotation_type.clone());
    part(&|p| p.annotation_types = f.annotation_types.clone());
    part(&|p| p.annotation_type_version = f.annotation_type_version);
    part(&|p| p.pivot_id = f.pivot_id.clone());
    part(&|p| p.label = f.label.clone());
    part(&|p| p.labels = f.labels.clone());
    part(&|p| p.time_range = f.time_range);
    part(&|p| p.min_confidence = f.min_confidence);
    part(&|p| p.max_confidence = f.max_confidence);
    part(&|p| p.operation_id = f.operation_id);
    part(&|p| p.region = f.region);
    part(&|p| p.text = f.text.clone());
    for c in f.data.iter().flatten() {
        part(&|p| p.data = Some(vec![c.clone()]));
    }
    out
}

fn run_case(
    items: Vec<Gen>,
    batch_sizes: Vec<usize>,
    mut filter: GenFilter,
    scope: GenScope,
    page: usize,
    mut spec: AggregateSpec,
    (scale, commits): (i64, u8),
) -> Result<(), TestCaseError> {
    // Times on the scale of milliseconds, seconds, minutes or hours, so that the index's
    // time cells are crossed at every level.
    filter.time = filter.time.map(|(s, l, rel)| (s * scale, l * scale, rel));
    if let Some(h) = &mut spec.histogram {
        h.interval_ms *= scale;
    }
    let ops: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let mut ids: Vec<Uuid> = Vec::new();
    let annotations: Vec<Annotation> = items
        .iter()
        .map(|g| {
            let id = match g.reuse {
                Some(i) if !ids.is_empty() => ids[i % ids.len()],
                _ => {
                    let id = Uuid::new_v4();
                    ids.push(id);
                    id
                }
            };
            let (start, end) = (g.start * scale, (g.start + g.len) * scale);
            let mut a = suite::annotation(ops[g.op], MEDIA[g.media], start, end);
            a.id = id;
            a.label = g.label.map(|l| LABELS[l].to_owned());
            a.confidence = g.confidence.map(tenths);
            a.annotation_type = TYPES[g.ty].into();
            a.annotation_type_version = g.version;
            a.pivot_id = PIVOTS[g.pivot].into();
            a.bbox = g.bbox.map(|(x, y, w, h)| BBox {
                x: tenths(x),
                y: tenths(y),
                w: tenths(w),
                h: tenths(h),
            });
            a.data = g.data.as_ref().map(|fields| {
                Value::Object(
                    fields
                        .iter()
                        .map(|(f, v)| (DATA_FIELDS[*f].to_owned(), data_value(*v)))
                        .collect(),
                )
            });
            a
        })
        .collect();
    let filter = filter_of(filter, &ops);
    let scope = match scope {
        GenScope::Visible(v) => Scope::Visible(Arc::new(Visibility::from_active(
            ops.iter().zip(v).filter(|(_, on)| *on).map(|(op, _)| *op),
        ))),
        GenScope::Operation(o) => Scope::Operation(ops[o]),
    };
    // The model: last write per id wins.
    let mut model: BTreeMap<Uuid, Annotation> = BTreeMap::new();
    for a in &annotations {
        model.insert(a.id, a.clone());
    }
    let latest: Vec<Annotation> = model.into_values().collect();
    let matching: Vec<&Annotation> = latest
        .iter()
        .filter(|a| scope.allows(&a.operation_id) && matches(&filter, a))
        .collect();
    let expected = suite::sorted_keys(matching.iter().copied());
    let expected_ranked = suite::by_confidence(matching.iter().copied());
    let expected_aggregates = suite::brute_aggregate(&latest, &filter, &scope, &spec);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (got, ranked, aggregates) = rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let index: Arc<dyn Index> = Arc::new(TantivyIndex::open(dir.path(), small()).unwrap());
        let mut rest = &annotations[..];
        for (i, n) in batch_sizes.iter().cycle().enumerate() {
            if rest.is_empty() {
                break;
            }
            let n = (*n).clamp(1, rest.len());
            index.upsert(&rest[..n], Existing::Unknown).await.unwrap();
            rest = &rest[n..];
            // Never (every document fresh), after every batch (every one committed),
            // or after every other one (a mix, with fresh copies over committed ones).
            if commits == 1 || (commits == 2 && i % 2 == 0) {
                index.refresh().await;
                index.sync().await.unwrap();
            }
        }
        for part in parts(&filter) {
            // Checks each hit list against the brute force.
            suite::check_filter(&index, &latest, &part, &scope).await;
        }
        let got = suite::search_all(&index, &filter, &scope, page).await;
        let ranked = suite::search_by_confidence(&index, &filter, &scope, page).await;
        let aggregates = suite::aggregate(&index, &filter, &scope, &spec).await;
        (got, ranked, aggregates)
    });
    let got: Vec<SortKey> = got.into_iter().map(|h| h.key).collect();
    prop_assert_eq!(got, expected);
    let ranked: Vec<(Option<f32>, SortKey)> = ranked.into_iter().map(|h| (h.rank, h.key)).collect();
    prop_assert_eq!(ranked, expected_ranked);
    prop_assert_eq!(aggregates.unwrap(), expected_aggregates);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn paged_search_and_aggregates_equal_brute_force(
        items in proptest::collection::vec(gen_annotation(), 0..120),
        batch_sizes in proptest::collection::vec(1usize..60, 1..4),
        filter in gen_filter(),
        scope in gen_scope(),
        page in 1usize..9,
        spec in gen_spec(),
        scale in prop_oneof![Just(1i64), Just(997), Just(65_537), Just(4_194_301)],
        commits in 0u8..3,
    ) {
        run_case(items, batch_sizes, filter, scope, page, spec, (scale, commits))?;
    }
}
