//! Keeping this node's cache in step with the other nodes that share the store: publishing
//! this node's lifecycle changes, following the others' events, and the periodic refresh
//! of the visibility snapshot from the store that covers events the transport lost.

use super::Service;
use crate::error::Error;
use crate::events::{Delivery, EventEnvelope, Followed, Follower, OperationEvent};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// How often, by default, a node re-reads the active set from the store.
pub const DEFAULT_VISIBILITY_REFRESH: Duration = Duration::from_secs(30);

/// A publish that takes longer than this is given up (and counted as failed).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);

impl Service {
    /// Tells the other nodes about a change the store recorded. Never fails the request:
    /// the store has the truth already, and the others converge through their refresh.
    pub(super) async fn publish(&self, event: OperationEvent) {
        let kind = event.kind();
        let envelope = EventEnvelope {
            node: self.node,
            event,
        };
        let outcome =
            tokio::time::timeout(PUBLISH_TIMEOUT, self.engines.events.publish(&envelope)).await;
        let error = match outcome {
            Ok(Ok(())) => {
                metrics::counter!("annostore_events_published_total", "kind" => kind).increment(1);
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {PUBLISH_TIMEOUT:?}"),
        };
        metrics::counter!("annostore_events_publish_failed_total", "kind" => kind).increment(1);
        warn!(
            operation = %envelope.event.operation().id,
            kind,
            error,
            "operation event not published; other nodes converge on their next refresh"
        );
    }

    /// Applies one event from the bus to this node's cache (its own are skipped).
    pub fn follow_event(&self, envelope: &EventEnvelope) -> Followed {
        if let OperationEvent::Started { operation } = &envelope.event {
            self.media_keys.started(operation);
        }
        let followed = Follower {
            node: self.node,
            cache: self.engines.cache.as_ref(),
        }
        .follow(envelope);
        if followed == Followed::Applied {
            metrics::counter!("annostore_events_applied_total", "kind" => envelope.event.kind())
                .increment(1);
        }
        followed
    }

    /// Follows the other nodes' events until the bus closes. Subscribes before it returns,
    /// so call it before [`Service::warm_up`]: nothing published after this call is missed.
    /// Lost events (a subscriber that fell behind) trigger a refresh from the store.
    pub fn follow_events(self: &Arc<Self>) -> JoinHandle<()> {
        let mut subscription = self.engines.events.subscribe();
        let service = self.clone();
        tokio::spawn(async move {
            while let Some(delivery) = subscription.recv().await {
                match delivery {
                    Delivery::Event(envelope) => {
                        service.follow_event(&envelope);
                    }
                    Delivery::Missed(n) => {
                        metrics::counter!("annostore_events_missed_total").increment(n);
                        warn!(
                            missed = n,
                            "operation events lost; refreshing from the store"
                        );
                        if let Err(e) = service.refresh_visibility().await {
                            warn!(error = %e, "visibility refresh failed");
                        }
                    }
                }
            }
            info!("operation event bus closed; no longer following other nodes");
        })
    }

    /// Merges the store's active set into the visibility snapshot: keys whose newer run
    /// this node has not heard of move to it; nothing moves back. Returns how many moved.
    pub async fn refresh_visibility(&self) -> Result<usize, Error> {
        let active = self.engines.store.active_operations().await?;
        let moved = self.engines.cache.refresh(&active);
        if moved > 0 {
            metrics::counter!("annostore_visibility_refresh_moved_total").increment(moved as u64);
            info!(
                moved,
                "visibility refresh found runs this node had not heard of"
            );
        } else {
            debug!(keys = active.len(), "visibility refresh: in step");
        }
        Ok(moved)
    }

    /// Refreshes the visibility snapshot from the store every `every` (the safety net for
    /// lost events), the first time one period from now.
    pub fn spawn_visibility_refresh(self: &Arc<Self>, every: Duration) -> JoinHandle<()> {
        let service = self.clone();
        let every = every.max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = service.refresh_visibility().await {
                    warn!(error = %e, "visibility refresh failed");
                }
            }
        })
    }
}
