//! The reconciler's metrics, by name, so the README and dashboards have one list.
//!
//! Gauges: `annostore_index_in_flight` (acknowledged, not yet indexed),
//! `annostore_retry_queue_depth`, `annostore_retry_dead_letters`,
//! `annostore_pending_index_work_oldest_seconds` (age of the oldest pending record).
//! Counters: `annostore_reconcile_applied_total`, `annostore_reconcile_retries_total`
//! (deliveries received more than once), `annostore_reconcile_failed_total`,
//! `annostore_reconcile_swept_total`, `annostore_audit_mismatches_total`,
//! `annostore_audit_repaired_total`.

use annostore_core::service::Service;
use time::OffsetDateTime;

/// Records the backlog gauges. Engine errors leave a gauge at its last value (a failing
/// engine is reported by the loops' logs and by the requests that fail).
pub async fn record_backlog(service: &Service, now: OffsetDateTime) {
    metrics::gauge!("annostore_index_in_flight").set(service.index_in_flight() as f64);
    let engines = service.engines();
    if let Ok(depth) = engines.queue.depth().await {
        metrics::gauge!("annostore_retry_queue_depth").set(depth as f64);
    }
    if let Ok(dead) = engines.queue.dead_letter_count().await {
        metrics::gauge!("annostore_retry_dead_letters").set(dead as f64);
    }
    if let Ok(oldest) = engines.store.pending_work(None, 1).await {
        let age = oldest
            .first()
            .and_then(|w| w.created_at())
            .map_or(0.0, |t| (now - t).as_seconds_f64().max(0.0));
        metrics::gauge!("annostore_pending_index_work_oldest_seconds").set(age);
    }
}
