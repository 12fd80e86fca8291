//! annostore's embedded engines: everything on one machine, no servers.
//!
//! - [`store`]: the source of truth on fjall (an LSM key-value store), with group commit.
//! - [`queue`]: the retry queue, in the same fjall database.
//! - [`index`]: the search index on tantivy.

mod codec;
pub mod index;
mod priority;
pub mod queue;
pub mod store;
mod vectors;

use annostore_core::cache::MokaOperationCache;
use annostore_core::events::LocalEventBus;
use annostore_core::service::Engines;
use index::{IndexOptions, TantivyIndex};
use queue::QueueOptions;
use std::path::Path;
use std::sync::Arc;
use store::FjallStore;

/// Background threads for an engine (the store's workers, the index's writer): half
/// the cores, from 1 to 4, so the two engines and the requests share the machine.
pub(crate) fn half_the_cores() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get() / 2)
        .clamp(1, 4)
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create {0}: {1}")]
    Dir(String, std::io::Error),
    #[error("cannot open the store: {0}")]
    Store(#[from] annostore_core::store::StoreError),
    #[error("cannot open the index: {0}")]
    Index(#[from] annostore_core::index::IndexError),
}

/// Opens (or creates) the embedded engines under `data_dir`: the store and its retry
/// queue in `data_dir/store`, the index in `data_dir/index`.
pub fn open(data_dir: &Path) -> Result<Engines, OpenError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| OpenError::Dir(data_dir.display().to_string(), e))?;
    let store = FjallStore::open(data_dir.join("store"))?;
    let queue = store.retry_queue(QueueOptions::default());
    let index_dir = data_dir.join("index");
    std::fs::create_dir_all(&index_dir)
        .map_err(|e| OpenError::Dir(index_dir.display().to_string(), e))?;
    let index = TantivyIndex::open(&index_dir, IndexOptions::default())?;
    Ok(Engines {
        store: Arc::new(store),
        index: Arc::new(index),
        queue: Arc::new(queue),
        cache: Arc::new(MokaOperationCache::default()),
        events: Arc::new(LocalEventBus::default()),
    })
}
