//! The reconciler's loops (queue, sweep, audit, backlog metrics) and their settings.

use crate::audit::{self, Audit};
use annostore_core::Error;
use annostore_core::clock::Clock;
use annostore_core::reconcile::Pass;
use annostore_core::service::Service;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tracing::{info, warn};

/// `[reconciler]` in `annostore.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconcilerConfig {
    /// Run the reconciler inside `annostore serve`. With the embedded engines there is no
    /// other; with distributed ones, `annostore reconcile` processes may do it instead.
    pub in_process: bool,
    /// Messages received per pass of the queue loop.
    pub batch: usize,
    /// Pause after a pass that received nothing (the embedded queue answers at once; SQS
    /// long-polls, so this can be small there).
    pub idle_ms: u64,
    /// Pending records older than this many seconds are re-enqueued by the sweep, which
    /// runs this often.
    pub pending_sweep_seconds: u64,
    /// Seconds between audits of the index against the store (0 turns them off).
    pub audit_seconds: u64,
    /// Seconds between updates of the backlog gauges.
    pub metrics_seconds: u64,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        ReconcilerConfig {
            in_process: true,
            batch: 100,
            idle_ms: 500,
            pending_sweep_seconds: 60,
            audit_seconds: 600,
            metrics_seconds: 5,
        }
    }
}

/// What [`Worker::run_once`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Round {
    pub applied: usize,
    pub failed: usize,
    pub swept: usize,
    pub audit: Audit,
}

/// Runs the loops over one service's engines.
pub struct Worker {
    service: Arc<Service>,
    clock: Arc<dyn Clock>,
    config: ReconcilerConfig,
}

impl Worker {
    pub fn new(service: Arc<Service>, clock: Arc<dyn Clock>, config: ReconcilerConfig) -> Worker {
        Worker {
            service,
            clock,
            config,
        }
    }

    /// One pass of the queue loop: receives what is due and replays it.
    pub async fn drain_once(&self) -> Result<Pass, Error> {
        let pass = self
            .service
            .reconciler()
            .run_queue_once(self.config.batch)
            .await?;
        metrics::counter!("annostore_reconcile_applied_total").increment(pass.applied as u64);
        metrics::counter!("annostore_reconcile_failed_total").increment(pass.failed as u64);
        metrics::counter!("annostore_reconcile_retries_total").increment(pass.retried as u64);
        Ok(pass)
    }

    /// Re-enqueues pending records older than `pending_sweep_seconds`.
    pub async fn sweep_once(&self) -> Result<usize, Error> {
        let age = time::Duration::seconds(self.config.pending_sweep_seconds as i64);
        let cutoff = self.clock.now() - age;
        let queued = self.service.reconciler().sweep(cutoff, 10_000).await?;
        metrics::counter!("annostore_reconcile_swept_total").increment(queued as u64);
        Ok(queued)
    }

    /// Compares the index with the store for every active operation, and rebuilds the
    /// index entries of those that differ.
    pub async fn audit_once(&self) -> Result<Audit, Error> {
        let audit = audit::run(&self.service).await?;
        metrics::counter!("annostore_audit_mismatches_total").increment(audit.mismatched);
        metrics::counter!("annostore_audit_repaired_total").increment(audit.repaired);
        Ok(audit)
    }

    /// One round of everything, for `annostore reconcile --once` and for tests: drains
    /// what is due in the queue, re-enqueues every pending record whatever its age and
    /// drains again, then audits. Items that fail stay in the queue, backing off.
    pub async fn run_once(&self) -> Result<Round, Error> {
        let mut round = Round::default();
        self.drain_due(&mut round).await?;
        round.swept = self
            .service
            .reconciler()
            .sweep(self.clock.now(), usize::MAX)
            .await?;
        self.drain_due(&mut round).await?;
        round.audit = self.audit_once().await?;
        Ok(round)
    }

    async fn drain_due(&self, round: &mut Round) -> Result<(), Error> {
        loop {
            let pass = self.drain_once().await?;
            round.applied += pass.applied;
            round.failed += pass.failed;
            if pass.applied + pass.failed == 0 {
                return Ok(());
            }
        }
    }

    /// Starts the loops; they run until the set is dropped or aborted.
    pub fn spawn(self: Arc<Self>) -> JoinSet<()> {
        let mut loops = JoinSet::new();
        let w = self.clone();
        loops.spawn(async move { w.queue_loop().await });
        let w = self.clone();
        loops.spawn(async move { w.sweep_loop().await });
        if self.config.audit_seconds > 0 {
            let w = self.clone();
            loops.spawn(async move { w.audit_loop().await });
        }
        let w = self;
        loops.spawn(async move { w.metrics_loop().await });
        loops
    }

    async fn queue_loop(&self) {
        let idle = Duration::from_millis(self.config.idle_ms.max(1));
        loop {
            match self.drain_once().await {
                // A full pass: more may be due at once.
                Ok(pass) if pass.applied + pass.failed >= self.config.batch => continue,
                Ok(_) => {}
                Err(e) => warn!(error = %e, "reconciler pass failed"),
            }
            tokio::time::sleep(idle).await;
        }
    }

    async fn sweep_loop(&self) {
        // The first sweep is one period away: whoever started us swept at start-up.
        let every = Duration::from_secs(self.config.pending_sweep_seconds.max(1));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tick.tick().await;
            match self.sweep_once().await {
                Ok(0) => {}
                Ok(n) => info!(requeued = n, "re-enqueued forgotten index work"),
                Err(e) => warn!(error = %e, "pending-work sweep failed"),
            }
        }
    }

    async fn audit_loop(&self) {
        let every = Duration::from_secs(self.config.audit_seconds);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tick.tick().await;
            match self.audit_once().await {
                Ok(a) if a.mismatched > 0 => {
                    warn!(
                        checked = a.checked,
                        mismatched = a.mismatched,
                        repaired = a.repaired,
                        "index audit found differences"
                    )
                }
                Ok(a) => info!(
                    checked = a.checked,
                    "index audit: index agrees with the store"
                ),
                Err(e) => warn!(error = %e, "index audit failed"),
            }
        }
    }

    async fn metrics_loop(&self) {
        let mut tick =
            tokio::time::interval(Duration::from_secs(self.config.metrics_seconds.max(1)));
        loop {
            tick.tick().await;
            crate::metrics::record_backlog(&self.service, self.clock.now()).await;
        }
    }
}
