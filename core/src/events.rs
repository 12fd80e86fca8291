//! Operation events between API nodes: the `EventBus` seam, the in-process
//! `LocalEventBus`, and how a node applies another node's events to its cache.
//!
//! Many stateless nodes may share one store and one index. Each node publishes the
//! lifecycle changes it made (after the store recorded them) and follows the others', so
//! a finish on one node moves visibility on every node within a transport's latency. The
//! store stays the authority: events only speed convergence up; the cache's TTL and the
//! periodic visibility refresh (`Service::refresh_visibility`) cover lost events. Events
//! may arrive in any order relative to a node's own updates; the cache accepts only newer
//! operation versions and newer runs of a key (see [`crate::cache`]).

use crate::cache::OperationCache;
use crate::model::{Operation, OperationKey};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use uuid::Uuid;

/// A lifecycle change the store recorded, with the operation as it is after the change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OperationEvent {
    Started {
        operation: Operation,
    },
    /// Made the key's active run (by a finish, a rollback or a roll forward);
    /// `deactivated` is the run it replaced, as it is after the change (inactive,
    /// superseded).
    Activated {
        operation: Operation,
        deactivated: Option<Box<Operation>>,
    },
    /// Finished without becoming active: a newer run of the key had finished first.
    Finished {
        operation: Operation,
    },
    Cancelled {
        operation: Operation,
    },
    Expired {
        operation: Operation,
    },
}

impl OperationEvent {
    /// The operation the event is about, after the change.
    pub fn operation(&self) -> &Operation {
        match self {
            Self::Started { operation }
            | Self::Activated { operation, .. }
            | Self::Finished { operation }
            | Self::Cancelled { operation }
            | Self::Expired { operation } => operation,
        }
    }

    /// The operation key: transports keep one key's events in order (e.g. one partition).
    pub fn key(&self) -> OperationKey {
        self.operation().key()
    }

    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Started { .. } => "started",
            Self::Activated { .. } => "activated",
            Self::Finished { .. } => "finished",
            Self::Cancelled { .. } => "cancelled",
            Self::Expired { .. } => "expired",
        }
    }
}

/// An event as it travels: which node published it, so that node skips its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// The publishing node (`Service::node_id`).
    pub node: Uuid,
    pub event: OperationEvent,
}

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("cannot encode or decode an operation event: {0}")]
    Codec(String),
    #[error("event bus misconfigured: {0}")]
    Config(String),
    #[error("event transport failed: {0}")]
    Transport(String),
}

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq)]
// Nearly every delivery is an event: boxing it would cost an allocation each.
#[allow(clippy::large_enum_variant)]
pub enum Delivery {
    Event(EventEnvelope),
    /// This many events were lost to this subscriber (it fell behind, or the transport
    /// dropped them): the follower should refresh from the store.
    Missed(u64),
}

/// The events a node receives, from every node (its own included).
pub struct Subscription {
    rx: broadcast::Receiver<EventEnvelope>,
}

impl Subscription {
    pub fn new(rx: broadcast::Receiver<EventEnvelope>) -> Subscription {
        Subscription { rx }
    }

    /// The next delivery; `None` once the bus is gone.
    pub async fn recv(&mut self) -> Option<Delivery> {
        match self.rx.recv().await {
            Ok(e) => Some(Delivery::Event(e)),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(Delivery::Missed(n)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// Carries operation events between the nodes that share a store.
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Hands an event to the transport. Returns once the transport accepted it, without
    /// waiting long (lifecycle requests wait on it); a transport that confirms delivery
    /// later logs and counts failures itself. Events of one operation key published by
    /// one node must reach every subscriber in publishing order.
    async fn publish(&self, event: &EventEnvelope) -> Result<(), EventError>;
    /// Events published from now on, by any node.
    fn subscribe(&self) -> Subscription;
}

/// Events within one process: the embedded default, where the node is alone.
pub struct LocalEventBus {
    tx: broadcast::Sender<EventEnvelope>,
}

impl LocalEventBus {
    /// A bus that keeps up to `capacity` events for a subscriber that falls behind.
    pub fn new(capacity: usize) -> LocalEventBus {
        let (tx, _) = broadcast::channel(capacity.max(1));
        LocalEventBus { tx }
    }
}

impl Default for LocalEventBus {
    fn default() -> Self {
        Self::new(4_096)
    }
}

#[async_trait]
impl EventBus for LocalEventBus {
    async fn publish(&self, event: &EventEnvelope) -> Result<(), EventError> {
        // No subscriber is not an error: nobody needs to hear it.
        let _ = self.tx.send(event.clone());
        Ok(())
    }

    fn subscribe(&self) -> Subscription {
        Subscription::new(self.tx.subscribe())
    }
}

/// What following one envelope did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Followed {
    /// Published by this node: its cache has it already.
    Own,
    /// Applied to the cache (parts older than the cache's state are ignored by the cache).
    Applied,
}

/// Applies other nodes' events to this node's cache.
pub struct Follower<'a> {
    pub node: Uuid,
    pub cache: &'a dyn OperationCache,
}

impl Follower<'_> {
    pub fn follow(&self, envelope: &EventEnvelope) -> Followed {
        if envelope.node == self.node {
            return Followed::Own;
        }
        match &envelope.event {
            OperationEvent::Activated {
                operation,
                deactivated,
            } => {
                let mut changed = vec![operation.clone()];
                changed.extend(deactivated.as_deref().cloned());
                self.cache.put(&changed);
                self.cache.activate(operation);
            }
            other => self.cache.put(std::slice::from_ref(other.operation())),
        }
        Followed::Applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::MokaOperationCache;
    use crate::clock::from_unix_ms;
    use crate::lifecycle;
    use crate::model::{OperationStatus, StartOperation};

    fn start(number: u64) -> Operation {
        let req = StartOperation {
            producer: None,
            annotation_type: "objects".into(),
            annotation_type_version: 1,
            pivot_id: "movie-42".into(),
            lease_seconds: None,
            metadata: None,
        };
        lifecycle::start(&req, Uuid::now_v7(), Some(number - 1), 60, from_unix_ms(0))
    }

    /// Runs `numbers` of one key finished in that order: the Activated event of each
    /// (an older run finishing after a newer one is a plain Finished event).
    fn finish_in_order(numbers: &[u64]) -> Vec<OperationEvent> {
        let mut active: Option<Operation> = None;
        let mut events = Vec::new();
        for &n in numbers {
            let plan = lifecycle::finish(&start(n), active.as_ref(), from_unix_ms(n as i64))
                .unwrap_or_else(|e| panic!("finish run {n}: {e}"));
            if plan.operation.active {
                active = Some(plan.operation.clone());
                events.push(OperationEvent::Activated {
                    operation: plan.operation,
                    deactivated: plan.deactivated.map(Box::new),
                });
            } else {
                events.push(OperationEvent::Finished {
                    operation: plan.operation,
                });
            }
        }
        events
    }

    fn envelope(node: Uuid, event: OperationEvent) -> EventEnvelope {
        EventEnvelope { node, event }
    }

    #[test]
    fn events_round_trip_as_json() {
        let events = finish_in_order(&[1, 2]);
        let env = envelope(Uuid::now_v7(), events[1].clone());
        let json = serde_json::to_string(&env).unwrap();
        assert!(json.contains(r#""type":"activated""#), "{json}");
        let back: EventEnvelope = serde_json::from_str(&json).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn own_events_are_skipped() {
        let cache = MokaOperationCache::default();
        let me = Uuid::now_v7();
        let follower = Follower {
            node: me,
            cache: &cache,
        };
        let events = finish_in_order(&[1]);
        let run = events[0].operation().clone();
        assert_eq!(
            follower.follow(&envelope(me, events[0].clone())),
            Followed::Own
        );
        assert!(cache.get(&run.id).is_none());
        assert!(!cache.visibility().is_active(&run.id));
        assert_eq!(
            follower.follow(&envelope(Uuid::now_v7(), events[0].clone())),
            Followed::Applied
        );
        assert_eq!(cache.get(&run.id), Some(run.clone()));
        assert!(cache.visibility().is_active(&run.id));
    }

    #[test]
    fn activations_arriving_out_of_order_never_bring_an_older_run_back() {
        let cache = MokaOperationCache::default();
        let follower = Follower {
            node: Uuid::now_v7(),
            cache: &cache,
        };
        let other = Uuid::now_v7();
        let events = finish_in_order(&[1, 2, 3]);
        let ids: Vec<Uuid> = events.iter().map(|e| e.operation().id).collect();
        // Run 3's activation overtakes runs 1 and 2.
        for i in [2, 0, 1] {
            follower.follow(&envelope(other, events[i].clone()));
            let v = cache.visibility();
            assert!(
                v.is_active(&ids[2]),
                "run 3 stays active after run {}",
                i + 1
            );
            assert!(!v.is_active(&ids[0]) && !v.is_active(&ids[1]));
            assert_eq!(v.len(), 1, "one run of the key is active");
        }
        // Run 1's cached state is the one from its own event, and run 2's deactivation
        // (carried by run 3's event) wins over its older Activated state.
        assert!(cache.get(&ids[1]).is_some_and(|o| !o.active));
    }

    #[test]
    fn a_direct_update_and_a_late_event_agree() {
        // This node finished run 2 itself; another node's older event for run 1 arrives late.
        let cache = MokaOperationCache::default();
        let events = finish_in_order(&[1, 2]);
        let run2 = events[1].operation().clone();
        cache.put(std::slice::from_ref(&run2));
        cache.activate(&run2);
        let follower = Follower {
            node: Uuid::now_v7(),
            cache: &cache,
        };
        follower.follow(&envelope(Uuid::now_v7(), events[0].clone()));
        let v = cache.visibility();
        assert!(v.is_active(&run2.id) && !v.is_active(&events[0].operation().id));
        assert_eq!(v.len(), 1);
    }

    #[test]
    fn an_older_run_finishing_late_stays_invisible() {
        let cache = MokaOperationCache::default();
        let follower = Follower {
            node: Uuid::now_v7(),
            cache: &cache,
        };
        let other = Uuid::now_v7();
        // Run 2 finishes first; run 1 finishes after it and is left inactive.
        let events = finish_in_order(&[2, 1]);
        assert!(matches!(events[1], OperationEvent::Finished { .. }));
        for e in &events {
            follower.follow(&envelope(other, e.clone()));
        }
        let v = cache.visibility();
        assert!(v.is_active(&events[0].operation().id));
        assert!(!v.is_active(&events[1].operation().id));
        assert_eq!(
            cache.get(&events[1].operation().id).map(|o| o.status),
            Some(OperationStatus::Finished)
        );
    }

    #[tokio::test]
    async fn the_local_bus_delivers_to_every_subscriber_in_order() {
        let bus = LocalEventBus::new(16);
        let (mut a, mut b) = (bus.subscribe(), bus.subscribe());
        let node = Uuid::now_v7();
        let events = finish_in_order(&[1, 2]);
        for e in &events {
            bus.publish(&envelope(node, e.clone())).await.unwrap();
        }
        for sub in [&mut a, &mut b] {
            for e in &events {
                assert_eq!(
                    sub.recv().await,
                    Some(Delivery::Event(envelope(node, e.clone())))
                );
            }
        }
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_what_it_missed() {
        let bus = LocalEventBus::new(2);
        let mut sub = bus.subscribe();
        let node = Uuid::now_v7();
        let events = finish_in_order(&[1, 2, 3, 4]);
        for e in &events {
            bus.publish(&envelope(node, e.clone())).await.unwrap();
        }
        assert_eq!(sub.recv().await, Some(Delivery::Missed(2)));
        assert_eq!(
            sub.recv().await,
            Some(Delivery::Event(envelope(node, events[2].clone())))
        );
    }

    #[tokio::test]
    async fn publishing_with_nobody_listening_is_fine() {
        let bus = LocalEventBus::default();
        let events = finish_in_order(&[1]);
        assert!(
            bus.publish(&envelope(Uuid::now_v7(), events[0].clone()))
                .await
                .is_ok()
        );
    }
}
