//! [`RetryQueue`] on Amazon SQS: a standard queue whose redrive policy moves a message to
//! a dead-letter queue after `max_receives` receives.
//!
//! | trait call            | SQS                                                                  |
//! |-----------------------|----------------------------------------------------------------------|
//! | `enqueue`             | SendMessage, body from [`crate::body`]                               |
//! | `receive(max)`        | ReceiveMessage (≤ 10 a call, looped; long-poll on the first call only), then ChangeMessageVisibilityBatch to the backoff of each message's receive count |
//! | `ack`                 | DeleteMessage                                                        |
//! | `depth`               | ApproximateNumberOfMessages + …NotVisible + …Delayed of the queue    |
//! | `dead_letter_count`   | the same three counts of the dead-letter queue                      |
//! | `dead_letters(limit)` | a scan of the dead-letter queue ([`crate::dead`]): up to `limit` messages, all made visible again |
//! | `dead_letter(id)`     | a scan until that work's message |
//! | `redrive(ids)`        | a scan: SendMessage of each selected body to the queue, then DeleteMessage from the dead-letter queue |
//! | `purge_dead_letters(ids)` | a scan: DeleteMessage of each selected message (not PurgeQueue) |
//!
//! # Backoff
//!
//! The n-th receive of a message (SQS's `ApproximateReceiveCount`) leaves it invisible
//! for `min(base * 2^(n-1), max)` seconds: ReceiveMessage itself asks for the first
//! backoff, and messages received before get ChangeMessageVisibility to theirs. Should
//! that change fail, the message reappears after the base backoff: early, never lost.
//!
//! # Dead letters
//!
//! SQS's redrive moves a message to the dead-letter queue on the receive that would be
//! its `max_receives + 1`-th, and does not deliver it: the same rule as the embedded
//! queue. Reading dead letters receives them (and makes them visible again), so each
//! read adds one to their `ApproximateReceiveCount` (the `receive_count` they report is
//! at least `max_receives`, plus the reads). Their receipts are for display: `ack` of
//! one does nothing.
//!
//! # Corrupt messages
//!
//! A body that does not decode (written by something else, or by a newer build) is not
//! delivered and does not fail the receive: it is logged, backs off like any message,
//! and the redrive moves it to the dead-letter queue after `max_receives` receives, where
//! `dead_letter_count` counts it (a peek skips it, with a warning). One bad message thus
//! never blocks the queue, and it is kept for a human to look at.
//!
//! # Differences from the embedded queue
//!
//! - Enqueueing the same work twice sends two messages (a standard queue does not
//!   deduplicate); applying work is idempotent, so this costs a second apply at most.
//! - SQS delivers at least once: rarely, a message is received twice at the same time.
//! - Counts are SQS's approximate counts (eventually consistent, within about a minute).
//! - A stale receipt (the message was received again since) may still delete it on
//!   SQS; the embedded queue ignores it.

use crate::body;
use crate::config::SqsConfig;
use crate::dead::Sweep;
use annostore_core::queue::{Delivery, QueueError, RetryQueue};
use annostore_core::store::IndexWork;
use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, Message, MessageSystemAttributeName,
    QueueAttributeName,
};
use std::collections::HashMap;
use std::fmt::Debug;
use std::time::Duration;
use tracing::{debug, warn};
use uuid::Uuid;

/// Messages per ReceiveMessage / batch call: SQS's maximum.
pub(crate) const SQS_BATCH: usize = 10;
/// Retention of both queues: SQS's maximum (14 days).
const RETENTION_SECONDS: u32 = 1_209_600;

/// The retry queue on SQS. Cheap to clone (the SDK client is shared).
#[derive(Clone, Debug)]
pub struct SqsRetryQueue {
    client: Client,
    cfg: SqsConfig,
    queue_url: String,
    dlq_url: String,
}

impl SqsRetryQueue {
    /// Connects to the existing queues of `cfg`. Fails with a message naming the queue
    /// and `annostore schema apply` when they do not exist.
    pub async fn connect(cfg: &SqsConfig) -> Result<Self, QueueError> {
        cfg.validate()?;
        let client = client(cfg).await;
        let queue_url = existing_queue_url(&client, cfg, &cfg.queue_name).await?;
        let dlq_url = existing_queue_url(&client, cfg, &cfg.dead_letter_queue_name).await?;
        let q = SqsRetryQueue {
            client,
            cfg: cfg.clone(),
            queue_url,
            dlq_url,
        };
        q.check_redrive().await;
        Ok(q)
    }

    /// Creates the dead-letter queue and the queue, with a redrive policy from one to
    /// the other after `max_receives` receives; for queues that exist, sets those
    /// attributes again (so a changed `max_receives` takes effect). Idempotent: this is
    /// what `annostore schema apply` runs.
    pub async fn ensure_queues(cfg: &SqsConfig) -> Result<(), QueueError> {
        cfg.validate()?;
        let client = client(cfg).await;
        let retention = RETENTION_SECONDS.to_string();
        let dlq_url = ensure_queue(
            &client,
            &cfg.dead_letter_queue_name,
            HashMap::from([(
                QueueAttributeName::MessageRetentionPeriod,
                retention.clone(),
            )]),
        )
        .await?;
        let dlq_arn = client
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| sdk_err("GetQueueAttributes", &cfg.dead_letter_queue_name, e))?
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .ok_or_else(|| {
                QueueError::Unavailable(format!(
                    "SQS returned no QueueArn for queue `{}`",
                    cfg.dead_letter_queue_name
                ))
            })?;
        let redrive = serde_json::json!({
            "deadLetterTargetArn": dlq_arn,
            "maxReceiveCount": cfg.max_receives,
        })
        .to_string();
        ensure_queue(
            &client,
            &cfg.queue_name,
            HashMap::from([
                (QueueAttributeName::MessageRetentionPeriod, retention),
                (QueueAttributeName::RedrivePolicy, redrive),
            ]),
        )
        .await?;
        debug!(queue = %cfg.queue_name, dlq = %cfg.dead_letter_queue_name, "SQS queues in place");
        Ok(())
    }

    /// The settings it was connected with.
    pub fn config(&self) -> &SqsConfig {
        &self.cfg
    }

    /// Warns when the queue has no redrive policy: its messages would never become
    /// dead letters.
    async fn check_redrive(&self) {
        let got = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await;
        match got {
            Ok(out)
                if out
                    .attributes()
                    .is_some_and(|a| a.contains_key(&QueueAttributeName::RedrivePolicy)) => {}
            Ok(_) => warn!(
                queue = %self.cfg.queue_name,
                "the SQS retry queue has no redrive policy, so nothing will ever become a dead letter; run `annostore schema apply`"
            ),
            Err(e) => warn!(
                error = %sdk_err("GetQueueAttributes", &self.cfg.queue_name, e),
                "cannot check the redrive policy of the SQS retry queue"
            ),
        }
    }

    /// Sum of the approximate counts (visible, in flight, delayed) of a queue.
    async fn approximate_count(&self, url: &str, name: &str) -> Result<u64, QueueError> {
        let names = [
            QueueAttributeName::ApproximateNumberOfMessages,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            QueueAttributeName::ApproximateNumberOfMessagesDelayed,
        ];
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .set_attribute_names(Some(names.to_vec()))
            .send()
            .await
            .map_err(|e| sdk_err("GetQueueAttributes", name, e))?;
        let mut total = 0u64;
        for n in &names {
            let Some(v) = out.attributes().and_then(|a| a.get(n)) else {
                continue;
            };
            let v: u64 = v.parse().map_err(|_| {
                QueueError::Unavailable(format!(
                    "SQS GetQueueAttributes on queue `{name}` returned {n} = {v:?}, not a count"
                ))
            })?;
            total = total.saturating_add(v);
        }
        Ok(total)
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) fn dlq_url(&self) -> &str {
        &self.dlq_url
    }

    /// SendMessage of a body as it is (a redriven dead letter).
    pub(crate) async fn send_raw(&self, body: &str) -> Result<(), QueueError> {
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| sdk_err("SendMessage", &self.cfg.queue_name, e))?;
        Ok(())
    }

    /// One ReceiveMessage call.
    pub(crate) async fn receive_batch(
        &self,
        url: &str,
        name: &str,
        max: usize,
        wait_seconds: u32,
        visibility_seconds: u32,
    ) -> Result<Vec<Message>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(to_i32(max.min(SQS_BATCH)))
            .wait_time_seconds(to_i32(wait_seconds as usize))
            .visibility_timeout(to_i32(visibility_seconds as usize))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| sdk_err("ReceiveMessage", name, e))?;
        Ok(out.messages.unwrap_or_default())
    }

    /// Sets the visibility of received messages whose backoff is not the base one.
    async fn back_off(&self, entries: Vec<ChangeMessageVisibilityBatchRequestEntry>) {
        if entries.is_empty() {
            return;
        }
        let got = self
            .client
            .change_message_visibility_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await;
        match got {
            Ok(out) => {
                for f in out.failed() {
                    warn!(
                        queue = %self.cfg.queue_name, entry = f.id(), code = f.code(),
                        message = f.message().unwrap_or_default(),
                        "SQS ChangeMessageVisibility failed for a message; it reappears after the base backoff"
                    );
                }
            }
            Err(e) => warn!(
                error = %sdk_err("ChangeMessageVisibilityBatch", &self.cfg.queue_name, e),
                "cannot back off received messages; they reappear after the base backoff"
            ),
        }
    }
}

#[async_trait]
impl RetryQueue for SqsRetryQueue {
    async fn dead_letter(&self, work_id: Uuid) -> Result<Option<Delivery>, QueueError> {
        self.find_dead(work_id).await
    }

    async fn redrive(&self, work_ids: Option<&[Uuid]>) -> Result<u64, QueueError> {
        self.sweep_dead(work_ids, Sweep::Redrive).await
    }

    async fn purge_dead_letters(&self, work_ids: Option<&[Uuid]>) -> Result<u64, QueueError> {
        self.sweep_dead(work_ids, Sweep::Purge).await
    }

    async fn enqueue(&self, work: &IndexWork) -> Result<(), QueueError> {
        self.send_raw(&body::encode(work)?).await
    }

    async fn receive(&self, max: usize) -> Result<Vec<Delivery>, QueueError> {
        let base = self.cfg.backoff_seconds(1);
        let mut out: Vec<Delivery> = Vec::new();
        // Message id -> index in `out`: a message whose backoff ran out during this very
        // receive comes back; keep its newest receipt only.
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut first = true;
        while out.len() < max {
            let wait = if first { self.cfg.wait_seconds } else { 0 };
            let messages = match self
                .receive_batch(
                    &self.queue_url,
                    &self.cfg.queue_name,
                    max - out.len(),
                    wait,
                    base,
                )
                .await
            {
                Ok(m) => m,
                Err(e) if first => return Err(e),
                Err(e) => {
                    // What was received so far is backing off already: deliver it.
                    warn!(error = %e, "SQS receive stopped early");
                    break;
                }
            };
            first = false;
            if messages.is_empty() {
                break;
            }
            let mut backoffs = Vec::new();
            for (i, m) in messages.into_iter().enumerate() {
                let Some(receipt) = m.receipt_handle else {
                    warn!(queue = %self.cfg.queue_name, "SQS delivered a message without a receipt handle; skipped");
                    continue;
                };
                let message_id = m.message_id.unwrap_or_default();
                let receive_count = receive_count(m.attributes.as_ref(), &message_id);
                let backoff = self.cfg.backoff_seconds(receive_count);
                if backoff != base {
                    backoffs.push(
                        ChangeMessageVisibilityBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(&receipt)
                            .visibility_timeout(to_i32(backoff as usize))
                            .build()
                            .map_err(|e| {
                                QueueError::Unavailable(format!(
                                    "cannot build a ChangeMessageVisibility entry: {e}"
                                ))
                            })?,
                    );
                }
                let work = match body::decode(m.body.as_deref().unwrap_or_default()) {
                    Ok(w) => w,
                    Err(e) => {
                        warn!(
                            queue = %self.cfg.queue_name, message_id, receive_count, error = %e,
                            "corrupt SQS retry message not delivered; the redrive moves it to the dead letters after max_receives receives"
                        );
                        continue;
                    }
                };
                let d = Delivery {
                    work,
                    receipt,
                    receive_count,
                };
                match seen.get(&message_id) {
                    Some(&at) if !message_id.is_empty() => out[at] = d,
                    _ => {
                        seen.insert(message_id, out.len());
                        out.push(d);
                    }
                }
            }
            self.back_off(backoffs).await;
        }
        Ok(out)
    }

    async fn ack(&self, receipt: &str) -> Result<(), QueueError> {
        match self
            .client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_invalid_receipt(&e) => {
                // Not one of this queue's receipts: as unknown as any stale one.
                debug!(queue = %self.cfg.queue_name, "ack of an unknown receipt ignored");
                Ok(())
            }
            Err(e) => Err(sdk_err("DeleteMessage", &self.cfg.queue_name, e)),
        }
    }

    async fn depth(&self) -> Result<u64, QueueError> {
        self.approximate_count(&self.queue_url, &self.cfg.queue_name)
            .await
    }

    async fn dead_letter_count(&self) -> Result<u64, QueueError> {
        self.approximate_count(&self.dlq_url, &self.cfg.dead_letter_queue_name)
            .await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<Delivery>, QueueError> {
        self.list_dead(limit).await
    }
}

/// The SDK client for `cfg`. Loads nothing from the environment that `cfg` gives.
async fn client(cfg: &SqsConfig) -> Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(cfg.region.clone()))
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                // A long-poll holds the request for up to `wait_seconds`.
                .operation_attempt_timeout(Duration::from_secs(u64::from(cfg.wait_seconds) + 20))
                .build(),
        );
    if let Some(endpoint) = &cfg.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let (Some(id), Some(secret)) = (&cfg.access_key_id, &cfg.secret_access_key) {
        loader = loader.credentials_provider(Credentials::new(
            id,
            secret,
            None,
            None,
            "annostore-config",
        ));
    }
    Client::new(&loader.load().await)
}

fn where_(cfg: &SqsConfig) -> String {
    match &cfg.endpoint {
        Some(e) => format!("at {e}"),
        None => format!("in AWS region {}", cfg.region),
    }
}

async fn existing_queue_url(
    client: &Client,
    cfg: &SqsConfig,
    name: &str,
) -> Result<String, QueueError> {
    match client.get_queue_url().queue_name(name).send().await {
        Ok(out) => out.queue_url.ok_or_else(|| {
            QueueError::Unavailable(format!("SQS returned no URL for queue `{name}`"))
        }),
        Err(e) if is_missing_queue(&e) => Err(QueueError::Unavailable(format!(
            "SQS queue `{name}` does not exist {}; create the retry queues with `annostore schema apply`",
            where_(cfg)
        ))),
        Err(e) => Err(sdk_err("GetQueueUrl", name, e)),
    }
}

/// The queue's URL, creating it with `attributes` or setting them on it.
async fn ensure_queue(
    client: &Client,
    name: &str,
    attributes: HashMap<QueueAttributeName, String>,
) -> Result<String, QueueError> {
    let url = match client.get_queue_url().queue_name(name).send().await {
        Ok(out) => out.queue_url,
        Err(e) if is_missing_queue(&e) => None,
        Err(e) => return Err(sdk_err("GetQueueUrl", name, e)),
    };
    let url = match url {
        Some(url) => url,
        None => match client
            .create_queue()
            .queue_name(name)
            .set_attributes(Some(attributes.clone()))
            .send()
            .await
        {
            Ok(out) => {
                return out.queue_url.ok_or_else(|| {
                    QueueError::Unavailable(format!("SQS CreateQueue returned no URL for `{name}`"))
                });
            }
            // Created meanwhile by someone else, with other attributes: set ours below.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_queue_name_exists()) =>
            {
                client
                    .get_queue_url()
                    .queue_name(name)
                    .send()
                    .await
                    .map_err(|e| sdk_err("GetQueueUrl", name, e))?
                    .queue_url
                    .ok_or_else(|| {
                        QueueError::Unavailable(format!("SQS returned no URL for queue `{name}`"))
                    })?
            }
            Err(e) => return Err(sdk_err("CreateQueue", name, e)),
        },
    };
    client
        .set_queue_attributes()
        .queue_url(&url)
        .set_attributes(Some(attributes))
        .send()
        .await
        .map_err(|e| sdk_err("SetQueueAttributes", name, e))?;
    Ok(url)
}

pub(crate) fn receive_count(
    attributes: Option<&HashMap<MessageSystemAttributeName, String>>,
    message_id: &str,
) -> u32 {
    let got = attributes
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|v| v.parse::<u32>().ok());
    got.unwrap_or_else(|| {
        warn!(
            message_id,
            "SQS message without ApproximateReceiveCount; taken as its first receive"
        );
        1
    })
}

pub(crate) fn to_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn is_missing_queue<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    matches!(
        e.code(),
        Some("AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist")
    )
}

fn is_invalid_receipt<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    matches!(
        e.code(),
        Some("ReceiptHandleIsInvalid" | "InvalidIdFormat" | "InvalidParameterValue")
    )
}

/// An SDK failure as [`QueueError::Unavailable`], naming the call and the queue.
pub(crate) fn sdk_err<E, R>(call: &str, queue: &str, e: SdkError<E, R>) -> QueueError
where
    E: std::error::Error + 'static,
    R: Debug,
{
    QueueError::Unavailable(format!(
        "SQS {call} on queue `{queue}` failed: {}",
        DisplayErrorContext(&e)
    ))
}
