//! What the service-level tests share: the service on fresh embedded engines, with the
//! type `objects` version 1 (any data, no embeddings) registered; and the engines as
//! parts, for tests that wrap them (fault layers) before building a service.

// Each test binary that includes this module uses part of it.
#![allow(dead_code)]

use annostore_core::clock::{Clock, ManualClock};
use annostore_core::model::TypeDefinition;
use annostore_core::service::{Engines, Service};
use annostore_core::validate::Limits;
use annostore_embedded::index::{IndexOptions, TantivyIndex};
use annostore_embedded::queue::{FjallRetryQueue, QueueOptions};
use annostore_embedded::store::FjallStore;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub async fn service(dir: &Path, clock: Arc<dyn Clock>) -> (Service, Engines) {
    let engines = annostore_embedded::open(dir).expect("open the embedded engines");
    let service = Service::new(engines.clone(), Limits::default(), clock);
    service
        .put_type(
            "objects",
            1,
            TypeDefinition {
                schema: json!({}),
                embedding_dim: None,
            },
        )
        .await
        .expect("register objects v1");
    (service, engines)
}

/// A fresh fjall store under `dir`, its retry queue (backoff from 100 ms to 1 s on
/// `clock`, dead letters after `max_receives`), and a tantivy index committing every
/// 20 ms.
pub fn parts(
    dir: &Path,
    max_receives: u32,
    clock: ManualClock,
) -> (FjallStore, FjallRetryQueue, TantivyIndex) {
    let store = FjallStore::open(dir.join("store")).expect("open the store");
    let queue = store.retry_queue(QueueOptions {
        base_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
        max_receives,
        clock: Arc::new(clock),
    });
    let index = TantivyIndex::open(
        &dir.join("index"),
        IndexOptions {
            commit_interval: Duration::from_millis(20),
            ..IndexOptions::default()
        },
    )
    .expect("open the index");
    (store, queue, index)
}
