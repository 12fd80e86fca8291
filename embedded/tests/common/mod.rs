//! What the service-level tests share: the service on fresh embedded engines, with the
//! type `objects` version 1 (any data, no embeddings) registered.

use annostore_core::clock::Clock;
use annostore_core::model::TypeDefinition;
use annostore_core::service::{Engines, Service};
use annostore_core::validate::Limits;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;

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
