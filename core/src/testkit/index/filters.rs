//! Filters: each alone and combined, and time-range intersection at the edges.

#[allow(unused_imports)]
use super::*;

/// Every filter, alone and combined, matches exactly.
pub async fn filters(index: Arc<dyn Index>) {
    let op1 = Uuid::new_v4();
    let op2 = Uuid::new_v4();
    let mut all: Vec<Annotation> = Vec::new();
    for (i, media) in ["ma", "mb", "ma-x"].iter().enumerate() {
        for j in 0..4i64 {
            let op = if j % 2 == 0 { op1 } else { op2 };
            let mut a = annotation(op, media, j * 10 + i as i64, j * 10 + i as i64 + 5);
            a.annotation_type = if j < 2 { "shot".into() } else { "face".into() };
            a.annotation_type_version = if j == 3 { 2 } else { 1 };
            a.pivot_id = if i == 0 { "p".into() } else { "q".into() };
            a.label = match j {
                0 => Some("cat".into()),
                1 => Some("cats".into()),
                2 => Some("ca".into()),
                _ => None,
            };
            a.confidence = match j {
                0 => Some(0.25),
                1 => Some(0.5),
                2 => Some(0.75),
                _ => None,
            };
            all.push(a);
        }
    }
    // Two commits, so filters work across segments.
    upsert(&index, &all[..5]).await;
    upsert(&index, &all[5..]).await;
    let scope = visible(&[op1, op2]);
    let check = |filter: SearchFilter| {
        let index = index.clone();
        let scope = scope.clone();
        let all = all.clone();
        async move {
            let expected = sorted_keys(all.iter().filter(|a| crate::service::matches(&filter, a)));
            let hits = search(&index, &filter, &scope, None, 1_000).await;
            assert_eq!(keys(&hits), expected, "filter {filter:?}");
            expected.len()
        }
    };
    let f = SearchFilter::default;
    let cases: Vec<(SearchFilter, usize, &str)> = vec![
        (f(), 12, "no filter"),
        (
            SearchFilter {
                media_id: Some("ma".into()),
                ..f()
            },
            4,
            "media_id is exact, not a prefix",
        ),
        (
            SearchFilter {
                annotation_type: Some("face".into()),
                ..f()
            },
            6,
            "type",
        ),
        (
            SearchFilter {
                annotation_type_version: Some(2),
                ..f()
            },
            3,
            "version",
        ),
        (
            SearchFilter {
                pivot_id: Some("q".into()),
                ..f()
            },
            8,
            "pivot",
        ),
        (
            SearchFilter {
                label: Some("cat".into()),
                ..f()
            },
            3,
            "label is exact, not a prefix",
        ),
        (
            SearchFilter {
                label: Some("c".into()),
                ..f()
            },
            0,
            "label prefix",
        ),
        (
            SearchFilter {
                min_confidence: Some(0.5),
                ..f()
            },
            6,
            "min_confidence is inclusive and skips annotations without one",
        ),
        (
            SearchFilter {
                min_confidence: Some(0.0),
                ..f()
            },
            9,
            "min_confidence 0",
        ),
        (
            SearchFilter {
                min_confidence: Some(0.76),
                ..f()
            },
            0,
            "min_confidence above all",
        ),
        (
            SearchFilter {
                operation_id: Some(op2),
                ..f()
            },
            6,
            "operation",
        ),
        (
            SearchFilter {
                media_id: Some("mb".into()),
                annotation_type: Some("shot".into()),
                annotation_type_version: Some(1),
                pivot_id: Some("q".into()),
                label: Some("cats".into()),
                min_confidence: Some(0.5),
                operation_id: Some(op2),
                time_range: Some(TimeRange::new(0, 100)),
                ..f()
            },
            1,
            "every filter at once",
        ),
        (
            SearchFilter {
                media_id: Some("nope".into()),
                ..f()
            },
            0,
            "unknown media",
        ),
    ];
    for (filter, expected, what) in cases {
        assert_eq!(check(filter).await, expected, "{what}");
    }
}

/// A time range matches the annotations that intersect it; touching ends match.
pub async fn time_range_intersects(index: Arc<dyn Index>) {
    let op = Uuid::new_v4();
    let a = annotation(op, "t", 100, 200);
    let point = annotation(op, "t", 300, 300);
    let negative = annotation(op, "t", -50, -10);
    upsert(&index, &[a.clone(), point.clone(), negative.clone()]).await;
    let scope = Scope::Operation(op);
    let cases: &[(i64, i64, &[&Annotation])] = &[
        (0, 99, &[]),
        (0, 100, &[&a]),
        (150, 160, &[&a]),
        (50, 250, &[&a]),
        (200, 299, &[&a]),
        (201, 299, &[]),
        (300, 300, &[&point]),
        (299, 301, &[&point]),
        (301, 400, &[]),
        (-10, -10, &[&negative]),
        (-100, 100, &[&negative, &a]),
        (i64::MIN, i64::MAX, &[&negative, &a, &point]),
    ];
    for (start_ms, end_ms, expected) in cases {
        let filter = SearchFilter {
            time_range: Some(TimeRange::new(*start_ms, *end_ms)),
            ..Default::default()
        };
        let hits = search(&index, &filter, &scope, None, 10).await;
        assert_eq!(
            keys(&hits),
            sorted_keys(expected.iter().copied()),
            "time range {start_ms}..={end_ms}"
        );
    }
}

/// Windows of one or two media items, against brute force, at the scales of
/// milliseconds, seconds, minutes, hours and days, with every relation: an index that
/// narrows a media item's documents by time (tantivy's cells) must find every document
/// the window relates to, wherever it lies against the engine's own time boundaries.
pub async fn media_windows_at_every_scale(index: Arc<dyn Index>) {
    use crate::model::TimeRelation;
    let op = Uuid::new_v4();
    let scope = Scope::Operation(op);
    // Starts and lengths that straddle powers of two and of ten at every scale.
    let shapes: &[(i64, i64)] = &[
        (0, 0),
        (0, 1),
        (1, 2),
        (-3, 5),
        (7, 9),
        (15, 1),
        (31, 2),
        (63, 65),
        (100, 900),
        (511, 3),
        (1000, 24),
        (-700, 2000),
        (4095, 4097),
        (9_999, 1),
    ];
    let scales = [1i64, 997, 60_000, 3_600_000, 86_400_000];
    let mut all = Vec::new();
    for (i, &scale) in scales.iter().enumerate() {
        for (j, &(start, len)) in shapes.iter().enumerate() {
            let media = if (i + j) % 3 == 0 { "mw-b" } else { "mw-a" };
            let s = start * scale;
            all.push(annotation(op, media, s, s + len * scale));
        }
    }
    upsert(&index, &all).await;
    let windows: &[(i64, i64)] = &[
        (0, 0),
        (1, 1),
        (2, 30),
        (-5, 5),
        (64, 64),
        (500, 1500),
        (1023, 1025),
        (4096, 4096),
        (-1_000, 20_000),
    ];
    let media_lists: [(Option<&str>, Option<Vec<String>>); 3] = [
        (Some("mw-a"), None),
        (None, Some(vec!["mw-a".into(), "mw-b".into()])),
        (Some("mw-b"), Some(vec!["mw-b".into()])),
    ];
    let mut checked = 0;
    for &scale in &scales {
        for &(from, to) in windows {
            for relation in [
                TimeRelation::Intersects,
                TimeRelation::Within,
                TimeRelation::Contains,
            ] {
                for (media_id, media_ids) in &media_lists {
                    let filter = SearchFilter {
                        media_id: media_id.map(str::to_owned),
                        media_ids: media_ids.clone(),
                        time_range: Some(TimeRange {
                            start_ms: from * scale,
                            end_ms: to * scale,
                            relation,
                        }),
                        ..Default::default()
                    };
                    let expected: Vec<&Annotation> = all
                        .iter()
                        .filter(|a| crate::query::matches(&filter, a))
                        .collect();
                    let hits = search(&index, &filter, &scope, None, all.len() + 1).await;
                    assert_eq!(
                        keys(&hits),
                        sorted_keys(expected.iter().copied()),
                        "{filter:?}"
                    );
                    checked += usize::from(!expected.is_empty());
                }
            }
        }
    }
    assert!(checked > 100, "only {checked} windows found anything");
}
