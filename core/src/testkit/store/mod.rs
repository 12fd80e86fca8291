//! Conformance suite for the `store` seam.
//!
//! Every function takes a fresh, empty store and panics on a failure. Time is explicit
//! (the trait takes `now`), so leases lapse without sleeping. An engine runs them all with
//! [`run_all`], handing it a factory of empty stores.

use crate::clock::from_unix_ms;
use crate::lifecycle::LifecycleError;
use crate::model::{
    Annotation, AnnotationInput, AnnotationType, Operation, OperationFilter, OperationStatus,
    StartOperation,
};
use crate::store::{IndexWork, IndexWorkKind, PutType, Store, StoreError};
use serde_json::{Map, json};
use std::future::Future;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

mod activate;
mod collect;
mod finish;
mod ops;
mod scans;
mod upsert;

pub use activate::*;
pub use collect::*;
pub use finish::*;
pub use ops::*;
pub use scans::*;
pub use upsert::*;

pub(crate) const BASE_MS: i64 = 1_700_000_000_000;
pub(crate) const LEASE: u32 = 60;

/// `BASE + ms`: the suite's clock.
pub fn at(ms: i64) -> OffsetDateTime {
    from_unix_ms(BASE_MS + ms)
}

pub fn start_request(annotation_type: &str, version: u32, pivot: &str) -> StartOperation {
    StartOperation {
        producer: None,
        annotation_type: annotation_type.into(),
        annotation_type_version: version,
        pivot_id: pivot.into(),
        lease_seconds: None,
        metadata: Some(Map::from_iter([("run".to_string(), json!(pivot))])),
    }
}

/// An annotation of `op` with the given id.
pub fn annotation(op: &Operation, id: Uuid, label: &str) -> Annotation {
    Annotation::from_input(
        AnnotationInput {
            id: Some(id),
            media_id: "media-1".into(),
            start_ms: 1_000,
            end_ms: 2_000,
            label: Some(label.into()),
            confidence: Some(0.5),
            bbox: None,
            embedding: Some(vec![0.25, -1.5]),
            data: Some(json!({"k": label})),
        },
        op,
    )
}

pub(crate) fn annotations(op: &Operation, n: usize) -> Vec<Annotation> {
    (0..n)
        .map(|_| annotation(op, Uuid::new_v4(), "a"))
        .collect()
}

pub(crate) async fn started(
    store: &dyn Store,
    ty: &str,
    pivot: &str,
    now: OffsetDateTime,
) -> Operation {
    store
        .start_operation(start_request(ty, 1, pivot), LEASE, now)
        .await
        .expect("start_operation")
}

pub(crate) async fn reload(store: &dyn Store, id: Uuid) -> Operation {
    store
        .get_operation(id)
        .await
        .expect("get_operation")
        .expect("operation exists")
}

/// Every test of the suite, each on a fresh store from `make`.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    types(make().await).await;
    numbering_per_key(make().await).await;
    upsert_counts_replaces_and_renews(make().await).await;
    upsert_id_conflict_writes_nothing(make().await).await;
    upsert_rejections(make().await).await;
    lapsed_lease_is_recorded_expired(make().await).await;
    finish_refused_while_work_pending(make().await).await;
    finish_activates_and_supersedes(make().await).await;
    finish_out_of_order_stays_inactive(make().await).await;
    finish_is_idempotent(make().await).await;
    finish_rejections(make().await).await;
    cancel_rules(make().await).await;
    list_operations_pages_and_filters(make().await).await;
    active_operations_one_per_key(make().await).await;
    pending_and_complete_work(make().await).await;
    annotations_of_operation_pages(make().await).await;
    list_operations_oldest_first_and_cursors(make().await).await;
    list_operations_admin_filters(make().await).await;
    finish_records_activation_history(make().await).await;
    rollback_and_roll_forward(make().await).await;
    a_newer_run_finishing_after_a_rollback_becomes_active(make().await).await;
    activation_refusals_change_nothing(make().await).await;
    force_expire_rules(make().await).await;
    begin_collection_rules(make().await).await;
    delete_annotations_rules(make().await).await;
    collected_ids_can_be_claimed_again(make().await).await;
    end_collection_records_freed(make().await).await;
    retire_then_collect_spares_the_active_run(make().await).await;
}

pub async fn types(store: Arc<dyn Store>) {
    let def = AnnotationType {
        name: "objects".into(),
        version: 1,
        schema: json!({"type": "object"}),
        embedding_dim: Some(2),
        created_at: at(0),
    };
    assert_eq!(store.get_type("objects", 1).await.unwrap(), None);
    assert_eq!(
        store.put_type(def.clone()).await.unwrap(),
        PutType::Created(def.clone())
    );
    // Same definition later: unchanged, and the first registration is what stays.
    let again = AnnotationType {
        created_at: at(5_000),
        ..def.clone()
    };
    assert_eq!(
        store.put_type(again).await.unwrap(),
        PutType::Unchanged(def.clone())
    );
    let different = AnnotationType {
        schema: json!({"type": "object", "required": ["x"]}),
        ..def.clone()
    };
    assert!(matches!(
        store.put_type(different).await,
        Err(StoreError::TypeConflict(_))
    ));
    let dim = AnnotationType {
        embedding_dim: Some(3),
        ..def.clone()
    };
    assert!(matches!(
        store.put_type(dim).await,
        Err(StoreError::TypeConflict(_))
    ));
    // Another version is another type.
    let v2 = AnnotationType {
        version: 2,
        schema: json!({}),
        ..def.clone()
    };
    assert!(matches!(
        store.put_type(v2.clone()).await.unwrap(),
        PutType::Created(_)
    ));
    assert_eq!(
        store.get_type("objects", 1).await.unwrap(),
        Some(def.clone())
    );
    assert_eq!(
        store.get_type("objects", 2).await.unwrap(),
        Some(v2.clone())
    );
    assert_eq!(store.get_type("objects", 3).await.unwrap(), None);
    let mut all = store.list_types().await.unwrap();
    all.sort_by_key(|t| t.version);
    assert_eq!(all, vec![def, v2]);
}

pub async fn numbering_per_key(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let a1 = started(s, "objects", "movie-a", at(0)).await;
    let a2 = started(s, "objects", "movie-a", at(1)).await;
    let b1 = started(s, "objects", "movie-b", at(2)).await;
    let a3 = started(s, "objects", "movie-a", at(3)).await;
    let other_type = started(s, "faces", "movie-a", at(4)).await;
    let other_version = s
        .start_operation(start_request("objects", 2, "movie-a"), LEASE, at(5))
        .await
        .unwrap();
    let b2 = started(s, "objects", "movie-b", at(6)).await;
    assert_eq!(
        [
            a1.operation_number,
            a2.operation_number,
            a3.operation_number
        ],
        [1, 2, 3]
    );
    assert_eq!([b1.operation_number, b2.operation_number], [1, 2]);
    assert_eq!(other_type.operation_number, 1);
    assert_eq!(other_version.operation_number, 1);
    // A finished or cancelled run still takes its number.
    s.finish_operation(a3.id, at(10)).await.unwrap();
    s.cancel_operation(b2.id, at(10)).await.unwrap();
    assert_eq!(
        started(s, "objects", "movie-a", at(11))
            .await
            .operation_number,
        4
    );
    assert_eq!(
        started(s, "objects", "movie-b", at(11))
            .await
            .operation_number,
        3
    );

    assert_eq!(a1.status, OperationStatus::Started);
    assert!(!a1.active);
    assert_eq!(a1.annotation_count, 0);
    assert_eq!(a1.created_at, at(0));
    assert_eq!(a1.lease_seconds, LEASE);
    assert_eq!(
        a1.lease_expires_at,
        Some(at(0) + Duration::seconds(LEASE.into()))
    );
    assert_eq!(a1.metadata.get("run"), Some(&json!("movie-a")));
    assert_eq!(reload(s, a1.id).await, a1);
    assert_eq!(s.get_operation(Uuid::now_v7()).await.unwrap(), None);
}
