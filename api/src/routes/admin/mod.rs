//! The admin API (`/v1/admin/*`, admin role): scans, counts and bulk ends of
//! operations, rollback and roll forward with the activation history (`operations.rs`);
//! garbage collection, dead letters, the consistency report and reindex (`upkeep.rs`).
//! Handlers translate HTTP to service calls; the service does the work.

mod operations;
mod upkeep;

pub use operations::{activations, counts, end, expire, rollback, rollforward, scan};
pub use upkeep::{
    consistency, dead_letter, dead_letters, gc_run, gc_status, purge, redrive, reindex,
};

use annostore_core::Error;
use time::OffsetDateTime;

/// `now - seconds`, for "older than" and "idle for" conditions.
fn seconds_ago(now: OffsetDateTime, seconds: u64, field: &str) -> Result<OffsetDateTime, Error> {
    i64::try_from(seconds)
        .ok()
        .and_then(|s| now.checked_sub(time::Duration::seconds(s)))
        .ok_or_else(|| Error::invalid(field, "too large"))
}
