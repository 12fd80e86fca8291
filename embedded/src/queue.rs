//! The retry queue, in the store's fjall database and behind its single writer (so every
//! queue mutation is durable and serialised with the store's writes).
//!
//! # Keyspaces
//!
//! | keyspace       | key                                              | value                 |
//! |----------------|--------------------------------------------------|-----------------------|
//! | `queue`        | due time (i64 ms, sign-flipped BE, 8) + work id (16) | `{work, receive_count}` JSON |
//! | `queue_ids`    | work id                                          | its current `queue` key (dedup of enqueues) |
//! | `dead_letters` | work id                                          | `{work, receive_count}` JSON |
//!
//! A receive takes the items due at `now` (keys up to `now`), and moves each to
//! `now + backoff` where backoff is `base_backoff * 2^(receive_count - 1)` capped at
//! `max_backoff`; the receipt is the hex of that new key, so acknowledging a stale
//! receipt (the item was received again since) does nothing. An item received more than
//! `max_receives` times goes to `dead_letters` instead of being returned.
//!
//! An operator inspects dead letters by work id, redrives them (back into `queue`, due
//! now, their receive count reset, replacing any copy of the same work still queued)
//! or purges them. Each call is one batch on the writer: every item moves whole.

use crate::store::records::ms_key;
use crate::store::{Shared, Tables};
use annostore_core::clock::{Clock, SystemClock, unix_ms};
use annostore_core::queue::{Delivery, QueueError, RetryQueue};
use annostore_core::store::IndexWork;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tracing::info;
use uuid::Uuid;

/// Behaviour of the retry queue.
#[derive(Clone)]
pub struct QueueOptions {
    /// Invisibility after the first receive; doubles with every further receive.
    pub base_backoff: Duration,
    /// Cap of the backoff.
    pub max_backoff: Duration,
    /// Receives after which an item goes to the dead letters.
    pub max_receives: u32,
    /// What "now" is (a manual clock in tests).
    pub clock: Arc<dyn Clock>,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(300),
            max_receives: 10,
            clock: Arc::new(SystemClock),
        }
    }
}

impl fmt::Debug for QueueOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueOptions")
            .field("base_backoff", &self.base_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("max_receives", &self.max_receives)
            .finish_non_exhaustive()
    }
}

impl QueueOptions {
    /// Backoff after the `receive_count`-th receive (1-based).
    fn backoff_ms(&self, receive_count: u32) -> i64 {
        let base = self.base_backoff.as_millis();
        let factor = 1u128 << receive_count.saturating_sub(1).min(62);
        let ms = base
            .saturating_mul(factor)
            .min(self.max_backoff.as_millis());
        i64::try_from(ms).unwrap_or(i64::MAX)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Message {
    work: IndexWork,
    receive_count: u32,
}

/// The embedded [`RetryQueue`]; build it with [`crate::store::FjallStore::retry_queue`].
#[derive(Clone)]
pub struct FjallRetryQueue {
    shared: Arc<Shared>,
    opts: Arc<QueueOptions>,
}

fn unavailable(e: String) -> QueueError {
    QueueError::Unavailable(e)
}

trait IoExt<T> {
    fn io(self) -> Result<T, QueueError>;
}

impl<T> IoExt<T> for fjall::Result<T> {
    fn io(self) -> Result<T, QueueError> {
        self.map_err(|e| QueueError::Unavailable(e.to_string()))
    }
}

fn encode(m: &Message) -> Result<Vec<u8>, QueueError> {
    serde_json::to_vec(m).map_err(|e| QueueError::Corrupt(format!("cannot encode: {e}")))
}

fn decode(bytes: &[u8]) -> Result<Message, QueueError> {
    serde_json::from_slice(bytes).map_err(|e| QueueError::Corrupt(e.to_string()))
}

fn queue_key(due_ms: i64, work: &IndexWork) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&ms_key(due_ms));
    k[8..].copy_from_slice(work.id.as_bytes());
    k
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|d| u8::from_str_radix(d, 16).ok()))
        .collect()
}

impl FjallRetryQueue {
    pub(crate) fn new(shared: Arc<Shared>, opts: QueueOptions) -> Self {
        FjallRetryQueue {
            shared,
            opts: Arc::new(opts),
        }
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Tables) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        self.shared.writer.submit(unavailable, f).await
    }

    /// The dead letters named (each once), or all of them: (work id, record).
    fn dead_of(
        t: &Tables,
        work_ids: Option<&[Uuid]>,
    ) -> Result<Vec<(Vec<u8>, fjall::UserValue)>, QueueError> {
        let mut out = Vec::new();
        match work_ids {
            Some(ids) => {
                let mut ids = ids.to_vec();
                ids.sort_unstable();
                ids.dedup();
                for id in ids {
                    if let Some(v) = t.dead_letters.get(id.as_bytes()).io()? {
                        out.push((id.as_bytes().to_vec(), v));
                    }
                }
            }
            None => {
                for g in t.dead_letters.iter() {
                    let (k, v) = g.into_inner().io()?;
                    out.push((k.to_vec(), v));
                }
            }
        }
        Ok(out)
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Tables) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        let tables = self.shared.tables.clone();
        tokio::task::spawn_blocking(move || f(&tables))
            .await
            .map_err(|e| QueueError::Unavailable(format!("queue read task failed: {e}")))?
    }
}

#[async_trait]
impl RetryQueue for FjallRetryQueue {
    async fn enqueue(&self, work: &IndexWork) -> Result<(), QueueError> {
        let work = work.clone();
        let opts = self.opts.clone();
        self.write(move |t| {
            if t.queue_ids.contains_key(work.id.as_bytes()).io()? {
                return Ok(());
            }
            let key = queue_key(unix_ms(opts.clock.now()), &work);
            let value = encode(&Message {
                work,
                receive_count: 0,
            })?;
            let mut b = t.db.batch();
            b.insert(&t.queue_ids, key[8..].to_vec(), key.to_vec());
            b.insert(&t.queue, key.to_vec(), value);
            b.commit().io()
        })
        .await
    }

    async fn receive(&self, max: usize) -> Result<Vec<Delivery>, QueueError> {
        let opts = self.opts.clone();
        self.write(move |t| {
            let now = unix_ms(opts.clock.now());
            let mut upper = [0xffu8; 24];
            upper[..8].copy_from_slice(&ms_key(now));
            let mut due = Vec::new();
            for g in t.queue.range(..=upper).take(max) {
                let (k, v) = g.into_inner().io()?;
                due.push((k, decode(&v)?));
            }
            let mut out = Vec::with_capacity(due.len());
            let mut b = t.db.batch();
            for (old_key, mut msg) in due {
                msg.receive_count = msg.receive_count.saturating_add(1);
                let id = msg.work.id;
                if msg.receive_count > opts.max_receives {
                    msg.receive_count -= 1; // times it was actually delivered
                    b.remove(&t.queue, old_key.to_vec());
                    b.remove(&t.queue_ids, id.as_bytes().to_vec());
                    b.insert(&t.dead_letters, id.as_bytes().to_vec(), encode(&msg)?);
                    continue;
                }
                let new_key = queue_key(
                    now.saturating_add(opts.backoff_ms(msg.receive_count)),
                    &msg.work,
                );
                if *old_key != new_key[..] {
                    b.remove(&t.queue, old_key.to_vec());
                }
                b.insert(&t.queue, new_key.to_vec(), encode(&msg)?);
                b.insert(&t.queue_ids, id.as_bytes().to_vec(), new_key.to_vec());
                out.push(Delivery {
                    receipt: hex(&new_key),
                    receive_count: msg.receive_count,
                    work: msg.work,
                });
            }
            b.commit().io()?;
            Ok(out)
        })
        .await
    }

    async fn ack(&self, receipt: &str) -> Result<(), QueueError> {
        let Some(key) = unhex(receipt).filter(|k| k.len() == 24) else {
            // Not one of ours: as unknown as any stale receipt.
            return Ok(());
        };
        self.write(move |t| {
            if !t.queue.contains_key(&key).io()? {
                return Ok(());
            }
            let id = key[8..].to_vec();
            let mut b = t.db.batch();
            if t.queue_ids.get(&id).io()?.is_some_and(|k| *k == key[..]) {
                b.remove(&t.queue_ids, id);
            }
            b.remove(&t.queue, key);
            b.commit().io()
        })
        .await
    }

    async fn depth(&self) -> Result<u64, QueueError> {
        self.read(|t| Ok(t.queue.len().io()? as u64)).await
    }

    async fn dead_letter_count(&self) -> Result<u64, QueueError> {
        self.read(|t| Ok(t.dead_letters.len().io()? as u64)).await
    }

    async fn dead_letter(&self, work_id: Uuid) -> Result<Option<Delivery>, QueueError> {
        self.read(move |t| {
            let Some(v) = t.dead_letters.get(work_id.as_bytes()).io()? else {
                return Ok(None);
            };
            let msg = decode(&v)?;
            Ok(Some(Delivery {
                receipt: hex(work_id.as_bytes()),
                receive_count: msg.receive_count,
                work: msg.work,
            }))
        })
        .await
    }

    async fn redrive(&self, work_ids: Option<&[Uuid]>) -> Result<u64, QueueError> {
        let work_ids = work_ids.map(<[Uuid]>::to_vec);
        let opts = self.opts.clone();
        let moved = self
            .write(move |t| {
                let dead = Self::dead_of(t, work_ids.as_deref())?;
                let now = unix_ms(opts.clock.now());
                let mut b = t.db.batch();
                for (id, v) in &dead {
                    let mut msg = decode(v)?;
                    msg.receive_count = 0;
                    // The same work enqueued again meanwhile (the sweep re-enqueues
                    // pending records): one copy, the redriven one.
                    if let Some(old) = t.queue_ids.get(id).io()? {
                        b.remove(&t.queue, old.to_vec());
                    }
                    let key = queue_key(now, &msg.work);
                    b.remove(&t.dead_letters, id.clone());
                    b.insert(&t.queue_ids, id.clone(), key.to_vec());
                    b.insert(&t.queue, key.to_vec(), encode(&msg)?);
                }
                b.commit().io()?;
                Ok(dead.len() as u64)
            })
            .await?;
        if moved > 0 {
            info!(moved, "dead letters redriven");
        }
        Ok(moved)
    }

    async fn purge_dead_letters(&self, work_ids: Option<&[Uuid]>) -> Result<u64, QueueError> {
        let work_ids = work_ids.map(<[Uuid]>::to_vec);
        let purged = self
            .write(move |t| {
                let dead = Self::dead_of(t, work_ids.as_deref())?;
                let mut b = t.db.batch();
                for (id, _) in &dead {
                    b.remove(&t.dead_letters, id.clone());
                }
                b.commit().io()?;
                Ok(dead.len() as u64)
            })
            .await?;
        if purged > 0 {
            info!(purged, "dead letters purged");
        }
        Ok(purged)
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<Delivery>, QueueError> {
        self.read(move |t| {
            let mut out = Vec::new();
            for g in t.dead_letters.iter().take(limit) {
                let (k, v) = g.into_inner().io()?;
                let msg = decode(&v)?;
                out.push(Delivery {
                    receipt: hex(&k),
                    receive_count: msg.receive_count,
                    work: msg.work,
                });
            }
            Ok(out)
        })
        .await
    }
}
