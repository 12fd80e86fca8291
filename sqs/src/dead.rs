//! Dead letters by work id on SQS: inspect one, redrive, purge.
//!
//! SQS addresses a message only by a receipt from a receive, so each call scans the
//! dead-letter queue: it receives batches with a visibility timeout of
//! [`SCAN_VISIBILITY_SECONDS`] (so one scan sees each message once), acts on the
//! messages it wants as each batch arrives, and at the end makes the others visible
//! again (ChangeMessageVisibility to 0). A scan stops when a receive comes back
//! empty (a 1 s long-poll when the queue long-polls at all, so every SQS server is
//! asked) or after [`MAX_SCAN`] messages.
//!
//! - `dead_letters(limit)`: stops after `limit` messages that decode (a corrupt one is
//!   skipped, and still counted by `dead_letter_count`); gives every message back.
//!   (Receiving with a visibility timeout of 0 instead would hold nothing, but then
//!   every receive may answer the same first messages, so a listing sees ten.)
//! - `dead_letter(id)`: stops at the first message of that work; gives every message
//!   back.
//! - `redrive`: SendMessage of the body to the queue (a new message: due now, its
//!   receive count starting over), then DeleteMessage from the dead-letter queue. A
//!   failure between the two leaves the work in both queues: applying it twice is
//!   harmless. With `None`, every message goes, also those whose body does not decode.
//! - `purge_dead_letters`: DeleteMessage, message by message. Not PurgeQueue: SQS
//!   allows it once per 60 s per queue and it cannot spare the messages of other work.
//!
//! SQS's `StartMessageMoveTask` would move all messages back without a scan, but it
//! cannot pick messages by work id, keeps nothing to count, and moto (the test
//! server) does not implement it: one way for both cases.
//!
//! Each receive of a dead letter adds one to its `ApproximateReceiveCount`, as a peek
//! does. Two scans at once hide their messages from each other for the visibility
//! timeout: a `redrive(None)` next to an inspection may leave that message behind
//! (it says how many it moved).

use crate::body;
use crate::queue::{SqsRetryQueue, receive_count, sdk_err, to_i32};
use annostore_core::queue::{Delivery, QueueError};
use aws_sdk_sqs::types::{ChangeMessageVisibilityBatchRequestEntry, Message};
use std::collections::HashSet;
use tracing::warn;
use uuid::Uuid;

/// How long a scan holds the messages it received.
pub const SCAN_VISIBILITY_SECONDS: u32 = 60;
/// Messages one call looks at, at most.
pub const MAX_SCAN: usize = 10_000;

/// What a sweep does with the messages it selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sweep {
    Redrive,
    Purge,
}

/// A received dead letter.
struct Letter {
    message_id: String,
    receipt: String,
    body: String,
    work: Option<annostore_core::store::IndexWork>,
    receive_count: u32,
}

impl SqsRetryQueue {
    fn dlq_name(&self) -> &str {
        &self.config().dead_letter_queue_name
    }

    /// One receive of the scan; an empty result ends it.
    async fn scan_batch(&self) -> Result<Vec<Letter>, QueueError> {
        let wait = self.config().wait_seconds.min(1);
        let messages = self
            .receive_batch(
                self.dlq_url(),
                self.dlq_name(),
                crate::queue::SQS_BATCH,
                wait,
                SCAN_VISIBILITY_SECONDS,
            )
            .await?;
        Ok(messages.into_iter().filter_map(letter).collect())
    }

    /// Up to `limit` dead letters.
    pub(crate) async fn list_dead(&self, limit: usize) -> Result<Vec<Delivery>, QueueError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut held = Vec::new();
        let listed = self.list_in_scan(limit, &mut held).await;
        self.give_back(held).await;
        listed
    }

    async fn list_in_scan(
        &self,
        limit: usize,
        held: &mut Vec<String>,
    ) -> Result<Vec<Delivery>, QueueError> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        while out.len() < limit && seen.len() < MAX_SCAN {
            let batch = self.scan_batch().await?;
            if batch.is_empty() {
                break;
            }
            for l in batch {
                held.push(l.receipt.clone());
                if !seen.insert(l.message_id.clone()) || out.len() >= limit {
                    continue;
                }
                if let Some(work) = l.work {
                    out.push(Delivery {
                        work,
                        receipt: l.receipt,
                        receive_count: l.receive_count,
                    });
                }
            }
        }
        Ok(out)
    }

    /// The dead letter of work `work_id`, if any.
    pub(crate) async fn find_dead(&self, work_id: Uuid) -> Result<Option<Delivery>, QueueError> {
        let mut held = Vec::new();
        let found = self.find_in_scan(work_id, &mut held).await;
        self.give_back(held).await;
        found
    }

    async fn find_in_scan(
        &self,
        work_id: Uuid,
        held: &mut Vec<String>,
    ) -> Result<Option<Delivery>, QueueError> {
        let mut seen = HashSet::new();
        while seen.len() < MAX_SCAN {
            let batch = self.scan_batch().await?;
            if batch.is_empty() {
                return Ok(None);
            }
            let mut found = None;
            for l in batch {
                held.push(l.receipt.clone());
                if !seen.insert(l.message_id.clone()) || found.is_some() {
                    continue;
                }
                if let Some(work) = l.work.filter(|w| w.id == work_id) {
                    found = Some(Delivery {
                        work,
                        receipt: l.receipt,
                        receive_count: l.receive_count,
                    });
                }
            }
            if found.is_some() {
                return Ok(found);
            }
        }
        warn!(queue = %self.dlq_name(), scanned = seen.len(), "dead-letter scan stopped at its limit");
        Ok(None)
    }

    /// Redrives or purges the dead letters of these work ids (all when `None`);
    /// returns how many messages went.
    pub(crate) async fn sweep_dead(
        &self,
        work_ids: Option<&[Uuid]>,
        sweep: Sweep,
    ) -> Result<u64, QueueError> {
        let wanted: Option<HashSet<Uuid>> = work_ids.map(|ids| ids.iter().copied().collect());
        if wanted.as_ref().is_some_and(HashSet::is_empty) {
            return Ok(0);
        }
        let mut others = Vec::new();
        let mut done = 0;
        let swept = self
            .sweep_scan(wanted.as_ref(), sweep, &mut others, &mut done)
            .await;
        self.give_back(others).await;
        swept.map(|()| done)
    }

    async fn sweep_scan(
        &self,
        wanted: Option<&HashSet<Uuid>>,
        sweep: Sweep,
        others: &mut Vec<String>,
        done: &mut u64,
    ) -> Result<(), QueueError> {
        let mut seen = HashSet::new();
        while seen.len() < MAX_SCAN {
            let batch = self.scan_batch().await?;
            if batch.is_empty() {
                return Ok(());
            }
            for l in batch {
                let first = seen.insert(l.message_id.clone());
                let selected = match wanted {
                    None => true,
                    Some(ids) => l.work.as_ref().is_some_and(|w| ids.contains(&w.id)),
                };
                if !selected {
                    others.push(l.receipt);
                    continue;
                }
                if sweep == Sweep::Redrive && first {
                    self.send_raw(&l.body).await?;
                }
                self.delete_dead(&l.receipt).await?;
                // A message received twice (its visibility ran out mid-scan) counts once.
                *done += u64::from(first);
            }
        }
        warn!(queue = %self.dlq_name(), scanned = seen.len(), "dead-letter sweep stopped at its limit; run it again for the rest");
        Ok(())
    }

    async fn delete_dead(&self, receipt: &str) -> Result<(), QueueError> {
        self.client()
            .delete_message()
            .queue_url(self.dlq_url())
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| sdk_err("DeleteMessage", self.dlq_name(), e))?;
        Ok(())
    }

    /// Makes held messages visible again. Best effort: one that stays hidden comes back
    /// when the scan's visibility timeout runs out.
    async fn give_back(&self, receipts: Vec<String>) {
        for chunk in receipts.chunks(crate::queue::SQS_BATCH) {
            let entries: Result<Vec<_>, _> = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .visibility_timeout(to_i32(0))
                        .build()
                })
                .collect();
            let entries = match entries {
                Ok(e) => e,
                Err(e) => {
                    warn!(error = %e, "cannot build ChangeMessageVisibility entries; the dead letters reappear after the scan's timeout");
                    continue;
                }
            };
            let got = self
                .client()
                .change_message_visibility_batch()
                .queue_url(self.dlq_url())
                .set_entries(Some(entries))
                .send()
                .await;
            match got {
                Ok(out) if out.failed().is_empty() => {}
                Ok(out) => warn!(
                    queue = %self.dlq_name(), failed = out.failed().len(),
                    "some dead letters stay hidden until the scan's visibility timeout runs out"
                ),
                Err(e) => warn!(
                    error = %sdk_err("ChangeMessageVisibilityBatch", self.dlq_name(), e),
                    "dead letters stay hidden until the scan's visibility timeout runs out"
                ),
            }
        }
    }
}

fn letter(m: Message) -> Option<Letter> {
    let Some(receipt) = m.receipt_handle else {
        warn!("SQS delivered a dead letter without a receipt handle; skipped");
        return None;
    };
    let message_id = m.message_id.unwrap_or_default();
    let receive_count = receive_count(m.attributes.as_ref(), &message_id);
    let body = m.body.unwrap_or_default();
    let work = match body::decode(&body) {
        Ok(w) => Some(w),
        Err(e) => {
            warn!(message_id, error = %e, "corrupt dead letter: matches no work id");
            None
        }
    };
    Some(Letter {
        message_id,
        receipt,
        body,
        work,
        receive_count,
    })
}
