//! Anti-entropy: per active operation, the store's annotation count against the
//! index's. An active operation is FINISHED, so its count is final and it has no index
//! work pending (a finish waits for it): any difference is damage (a lost or extra
//! document), and a reindex of that operation repairs it.

use annostore_core::Error;
use annostore_core::service::Service;
use serde::Serialize;
use tracing::warn;

/// What an audit found and did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Audit {
    /// Active operations compared.
    pub checked: u64,
    /// Of those, where the index held a different count.
    pub mismatched: u64,
    /// Of those, rebuilt from the store.
    pub repaired: u64,
}

pub(crate) async fn run(service: &Service) -> Result<Audit, Error> {
    let engines = service.engines();
    let active = engines.store.active_operations().await?;
    let mut audit = Audit::default();
    for op in active {
        audit.checked += 1;
        let indexed = engines.index.count_operation(op.id).await?;
        if indexed == op.annotation_count {
            continue;
        }
        audit.mismatched += 1;
        warn!(
            operation = %op.id,
            store = op.annotation_count,
            index = indexed,
            "index disagrees with the store; reindexing the operation"
        );
        match service.reindex(Some(op.id)).await {
            Ok(_) => audit.repaired += 1,
            Err(e) => {
                warn!(operation = %op.id, error = %e, "reindex failed; the next audit retries")
            }
        }
    }
    Ok(audit)
}
