//! The single writer thread: applies each request as its own check-then-write batch,
//! persists once per group, then answers the group.

use super::Tables;
use fjall::PersistMode;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use tokio::sync::oneshot;
use tracing::error;

/// Called once the group is persisted, with the persist error if any.
pub(crate) type Reply = Box<dyn FnOnce(Option<&str>) + Send>;
pub(crate) type Job = Box<dyn FnOnce(&Tables) -> Reply + Send>;

pub(crate) struct Writer {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub(crate) fn spawn(tables: Arc<Tables>, max_group: usize) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("annostore-writer".into())
            .spawn(move || write_loop(&tables, &rx, max_group.max(1)))?;
        Ok(Writer {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Runs `f` on the writer thread and answers once its group is durable.
    /// `io` turns a dead writer or a failed persist into the caller's error type.
    pub(crate) async fn submit<T, E>(
        &self,
        io: fn(String) -> E,
        f: impl FnOnce(&Tables) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T, E>>();
        let job: Job = Box::new(move |tables: &Tables| {
            let result = f(tables);
            Box::new(move |persist_error: Option<&str>| {
                let result = match (result, persist_error) {
                    (Ok(_), Some(e)) => Err(io(format!("persist failed: {e}"))),
                    (r, _) => r,
                };
                let _ = tx.send(result);
            })
        });
        let sender = self
            .tx
            .as_ref()
            .ok_or_else(|| io("the store writer has stopped".into()))?;
        sender
            .send(job)
            .map_err(|_| io("the store writer has stopped".into()))?;
        rx.await
            .map_err(|_| io("the store writer dropped the request".into()))?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel ends the loop once the queued requests are done.
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub(crate) fn write_loop(tables: &Tables, rx: &mpsc::Receiver<Job>, max_group: usize) {
    let mut replies: Vec<Reply> = Vec::with_capacity(max_group);
    while let Ok(first) = rx.recv() {
        let seqno_before = tables.db.seqno();
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(job) = next {
            taken += 1;
            match catch_unwind(AssertUnwindSafe(|| job(tables))) {
                Ok(reply) => replies.push(reply),
                // The request's answer channel is dropped: its caller gets an Io error.
                Err(_) => error!("a store write panicked; the request failed"),
            }
            next = if taken < max_group {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        let persisted = if tables.db.seqno() != seqno_before {
            tables
                .db
                .persist(PersistMode::SyncAll)
                .map_err(|e| e.to_string())
        } else {
            Ok(())
        };
        if let Err(e) = &persisted {
            error!(error = %e, "persisting a write group failed");
        }
        let persist_error = persisted.err();
        for reply in replies.drain(..) {
            reply(persist_error.as_deref());
        }
    }
}
