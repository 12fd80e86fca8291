//! The HNSW graphs behind nearest-neighbour search: one usearch index per dimension,
//! in memory, cosine metric, keyed by `vkey` (a number unique per document version that
//! the tantivy document carries beside its vector). The documents are the truth: the
//! graphs may hold keys no live document has (they are filtered out at search and swept
//! after deletes), and are rebuilt from the documents' columns at open, starting from
//! the snapshot saved at the last close when there is one.

use parking_lot::{Condvar, Mutex, RwLock};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tracing::warn;
use usearch::ffi::{IndexOptions as HnswOptions, MetricKind, ScalarKind};

/// How the graphs are built and searched.
#[derive(Debug, Clone)]
pub struct VectorOptions {
    /// Neighbours per node (HNSW's M).
    pub connectivity: usize,
    /// Candidates kept while inserting (efConstruction).
    pub expansion_add: usize,
    /// Candidates kept while searching (ef); a search keeps at least k.
    pub expansion_search: usize,
    /// A search with at most this many matching candidates compares each of them
    /// exactly instead of walking a graph.
    pub exact_threshold: usize,
}

impl Default for VectorOptions {
    fn default() -> Self {
        VectorOptions {
            connectivity: 16,
            expansion_add: 128,
            expansion_search: 64,
            exact_threshold: 20_000,
        }
    }
}

/// Graph operations in flight at once: usearch needs a thread context for each.
const SLOTS: usize = 64;

/// One dimension's graph.
pub(crate) struct Graph {
    /// Read for add, search and remove (usearch's own locks make those safe together
    /// given a thread context each); write to grow the capacity.
    index: RwLock<usearch::Index>,
    /// Adds that have room reserved and are not done yet.
    reserved: AtomicUsize,
}

/// A counting semaphore over usearch's thread contexts.
#[derive(Default)]
struct Slots {
    used: Mutex<usize>,
    freed: Condvar,
}

struct Slot<'a>(&'a Slots);

impl Slots {
    fn take(&self) -> Slot<'_> {
        let mut used = self.used.lock();
        while *used >= SLOTS {
            self.freed.wait(&mut used);
        }
        *used += 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.used.lock() -= 1;
        self.0.freed.notify_one();
    }
}

/// Which keys the graphs hold and which of them may not be committed yet.
#[derive(Default)]
struct Track {
    /// Every key in a graph, with its dimension.
    present: HashMap<u64, u32>,
    /// Keys added to a graph whose commit has not finished (not yet handed to the
    /// writer, or handed in the batch still open or committing).
    inflight: HashSet<u64>,
    /// Keys handed to the writer in the open batch.
    handed: Vec<u64>,
    /// A delete (or a failed write) happened in the open batch: sweep after its commit.
    dirty: bool,
}

/// What the committer takes from [`Vectors`] when it closes a batch.
pub(crate) struct Closing {
    keys: Vec<u64>,
    dirty: bool,
}

/// The graphs of every dimension, and the bookkeeping that keeps them in step with
/// the documents.
pub(crate) struct Vectors {
    opts: VectorOptions,
    /// [`VectorOptions::exact_threshold`], changeable while open.
    exact_threshold: AtomicUsize,
    graphs: RwLock<HashMap<u32, Arc<Graph>>>,
    track: Mutex<Track>,
    next_key: AtomicU64,
    slots: Slots,
}

pub(crate) type VectorError = String;

fn err(e: impl std::fmt::Display) -> VectorError {
    e.to_string()
}

impl Vectors {
    pub(crate) fn new(opts: VectorOptions) -> Vectors {
        Vectors {
            exact_threshold: AtomicUsize::new(opts.exact_threshold),
            opts,
            graphs: RwLock::new(HashMap::new()),
            track: Mutex::new(Track::default()),
            next_key: AtomicU64::new(0),
            slots: Slots::default(),
        }
    }

    pub(crate) fn exact_threshold(&self) -> usize {
        self.exact_threshold.load(Ordering::Relaxed)
    }

    pub(crate) fn set_exact_threshold(&self, n: usize) {
        self.exact_threshold.store(n, Ordering::Relaxed);
    }

    /// A fresh key for a document version.
    pub(crate) fn next_key(&self) -> u64 {
        self.next_key.fetch_add(1, Ordering::AcqRel)
    }

    /// Keys are never reused below this.
    fn keys_from(&self, floor: u64) {
        self.next_key.fetch_max(floor, Ordering::AcqRel);
    }

    fn new_graph(&self, dim: u32) -> Result<usearch::Index, VectorError> {
        let opts = HnswOptions {
            dimensions: dim as usize,
            metric: MetricKind::Cos,
            quantization: ScalarKind::F32,
            connectivity: self.opts.connectivity,
            expansion_add: self.opts.expansion_add,
            expansion_search: self.opts.expansion_search,
            multi: false,
        };
        let index = usearch::Index::new(&opts).map_err(err)?;
        index
            .reserve_capacity_and_threads(1024, SLOTS)
            .map_err(err)?;
        Ok(index)
    }

    /// The graph of `dim`, created when missing.
    fn graph(&self, dim: u32) -> Result<Arc<Graph>, VectorError> {
        if let Some(g) = self.graphs.read().get(&dim) {
            return Ok(g.clone());
        }
        let mut graphs = self.graphs.write();
        if let Some(g) = graphs.get(&dim) {
            return Ok(g.clone());
        }
        let g = Arc::new(Graph {
            index: RwLock::new(self.new_graph(dim)?),
            reserved: AtomicUsize::new(0),
        });
        graphs.insert(dim, g.clone());
        Ok(g)
    }

    /// The graph of `dim`, if any vector of that dimension was ever added.
    pub(crate) fn existing(&self, dim: u32) -> Option<Arc<Graph>> {
        self.graphs.read().get(&dim).cloned()
    }

    /// Adds vectors (each `(key, vector)`) to their dimension's graph. Called before
    /// their documents reach the writer, so a searchable document's vector is always
    /// in a graph; until [`Vectors::handed`] and the commit, the keys count as in
    /// flight and no sweep removes them.
    pub(crate) fn add(&self, vectors: &[(u64, &[f32])]) -> Result<(), VectorError> {
        if vectors.is_empty() {
            return Ok(());
        }
        {
            let mut t = self.track.lock();
            for (key, v) in vectors {
                t.present.insert(*key, v.len() as u32);
                t.inflight.insert(*key);
            }
        }
        let mut by_dim: HashMap<u32, Vec<(u64, &[f32])>> = HashMap::new();
        for (key, v) in vectors {
            by_dim.entry(v.len() as u32).or_default().push((*key, v));
        }
        for (dim, items) in by_dim {
            let graph = self.graph(dim)?;
            graph.add_all(&items, &self.slots)?;
        }
        Ok(())
    }

    /// Records that these keys' documents are in the open batch (under the writer
    /// lock); `dirty` when the batch also deletes documents or failed.
    pub(crate) fn handed(&self, keys: impl IntoIterator<Item = u64>, dirty: bool) {
        let mut t = self.track.lock();
        t.handed.extend(keys);
        t.dirty |= dirty;
    }

    /// Closes the open batch (under the writer lock, as the committer commits it).
    pub(crate) fn close_batch(&self) -> Closing {
        let mut t = self.track.lock();
        Closing {
            keys: std::mem::take(&mut t.handed),
            dirty: std::mem::take(&mut t.dirty),
        }
    }

    /// After the batch's commit (or rollback) is done and the reader reloaded: its keys
    /// are no longer in flight. When it deleted documents or failed, removes from the
    /// graphs every key that is neither live (in `live`, computed on demand from the
    /// new snapshot) nor in flight.
    pub(crate) fn batch_done(
        &self,
        closing: Closing,
        ok: bool,
        live: impl FnOnce() -> Result<HashSet<u64>, VectorError>,
    ) {
        {
            let mut t = self.track.lock();
            for k in &closing.keys {
                t.inflight.remove(k);
            }
            if !ok {
                // Committed but not visible, or rolled back: a snapshot that may be stale
                // cannot tell which. The next good commit sweeps.
                t.dirty = true;
                return;
            }
        }
        if !closing.dirty {
            return;
        }
        let live = match live() {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "cannot read the live vector keys; not sweeping");
                return;
            }
        };
        let dead: Vec<(u64, u32)> = {
            let mut t = self.track.lock();
            let Track {
                present, inflight, ..
            } = &mut *t;
            let dead: Vec<(u64, u32)> = present
                .iter()
                .filter(|(k, _)| !live.contains(k) && !inflight.contains(k))
                .map(|(k, d)| (*k, *d))
                .collect();
            for (k, _) in &dead {
                present.remove(k);
            }
            dead
        };
        self.remove(&dead);
    }

    fn remove(&self, keys: &[(u64, u32)]) {
        for (key, dim) in keys {
            if let Some(g) = self.existing(*dim) {
                let _slot = self.slots.take();
                if let Err(e) = g.index.read().remove(*key) {
                    warn!(error = %e, key, "cannot remove a vector from its graph");
                }
            }
        }
    }

    /// Keys in the graphs (tests and statistics).
    pub(crate) fn len(&self) -> usize {
        self.track.lock().present.len()
    }

    /// Searches `dim`'s graph for the `k` nearest keys that pass `allow`; returns
    /// (key, cosine distance) pairs, nearest first.
    pub(crate) fn search(
        &self,
        graph: &Graph,
        query: &[f32],
        k: usize,
        allow: impl Fn(u64) -> bool,
    ) -> Result<Vec<(u64, f32)>, VectorError> {
        let _slot = self.slots.take();
        let index = graph.index.read();
        let m = index.filtered_search(query, k, allow).map_err(err)?;
        Ok(m.keys.into_iter().zip(m.distances).collect())
    }

    /// [`VectorOptions::expansion_search`].
    pub(crate) fn expansion_search(&self) -> usize {
        self.opts.expansion_search
    }

    /// Vectors in `graph` (live or not yet swept).
    pub(crate) fn graph_len(&self, graph: &Graph) -> usize {
        graph.index.read().size()
    }

    /// Copies `key`'s vector from `graph` into `out` (sized to the dimension); false
    /// when the graph does not hold the key.
    pub(crate) fn read(&self, graph: &Graph, key: u64, out: &mut [f32]) -> bool {
        let index = graph.index.read();
        index.get(key, out).is_ok_and(|n| n == 1)
    }

    // -----------------------------------------------------------------------------
    // Opening: snapshot and catch-up
    // -----------------------------------------------------------------------------

    /// Brings the graphs in step with the documents at open: `live` holds every live
    /// document's (key, dimension); `read` fetches the vectors of the keys the graphs
    /// lack (calling back with each). Keys the graphs hold that are not live go.
    pub(crate) fn catch_up(
        &self,
        live: &HashMap<u64, u32>,
        read: impl FnOnce(&HashSet<u64>, &mut dyn FnMut(u64, &[f32])) -> Result<(), VectorError>,
    ) -> Result<CatchUp, VectorError> {
        let (stale, missing): (Vec<(u64, u32)>, HashSet<u64>) = {
            let mut t = self.track.lock();
            let stale: Vec<(u64, u32)> = t
                .present
                .iter()
                .filter(|(k, d)| live.get(k) != Some(d))
                .map(|(k, d)| (*k, *d))
                .collect();
            for (k, _) in &stale {
                t.present.remove(k);
            }
            let missing = live
                .keys()
                .filter(|k| !t.present.contains_key(k))
                .copied()
                .collect();
            (stale, missing)
        };
        self.remove(&stale);
        if let Some(max) = live.keys().max() {
            self.keys_from(max + 1);
        }
        let added = missing.len();
        let mut failed: Option<VectorError> = None;
        let mut batch: Vec<(u64, Vec<f32>)> = Vec::with_capacity(8192);
        let flush = |batch: &mut Vec<(u64, Vec<f32>)>, failed: &mut Option<VectorError>| {
            let refs: Vec<(u64, &[f32])> = batch.iter().map(|(k, v)| (*k, v.as_slice())).collect();
            // Rebuilding is the slow part of an open: every core adds.
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let chunk = refs.len().div_ceil(threads).max(1);
            let results: Vec<Result<(), VectorError>> = std::thread::scope(|s| {
                let handles: Vec<_> = refs
                    .chunks(chunk)
                    .map(|part| s.spawn(move || self.add(part)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err("a graph add panicked".into()))
                    })
                    .collect()
            });
            for r in results {
                if let Err(e) = r {
                    failed.get_or_insert(e);
                }
            }
            let keys: Vec<u64> = batch.iter().map(|(k, _)| *k).collect();
            let mut t = self.track.lock();
            for k in keys {
                t.inflight.remove(&k);
            }
            batch.clear();
        };
        read(&missing, &mut |key, v| {
            batch.push((key, v.to_vec()));
            if batch.len() >= 8192 {
                flush(&mut batch, &mut failed);
            }
        })?;
        flush(&mut batch, &mut failed);
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(CatchUp {
            removed: stale.len(),
            added,
        })
    }

    /// Loads the snapshot in `dir`, if there is a readable one; returns the keys it
    /// holds. A missing or unreadable snapshot leaves the graphs empty.
    pub(crate) fn load(&self, dir: &Path) -> usize {
        match self.try_load(dir) {
            Ok(n) => n,
            Err(e) => {
                warn!(error = %e, "vector snapshot unreadable; rebuilding from the index");
                *self.graphs.write() = HashMap::new();
                self.track.lock().present.clear();
                0
            }
        }
    }

    fn try_load(&self, dir: &Path) -> Result<usize, VectorError> {
        let manifest = dir.join(MANIFEST);
        let text = match std::fs::read_to_string(&manifest) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(err(e)),
        };
        let m = Manifest::parse(&text).ok_or("bad manifest")?;
        let mut graphs = HashMap::new();
        for dim in &m.dims {
            let index = self.new_graph(*dim)?;
            let path = dir.join(graph_file(m.generation, *dim));
            index.load(&path.to_string_lossy()).map_err(err)?;
            index
                .reserve_capacity_and_threads(index.size() + 1024, SLOTS)
                .map_err(err)?;
            index.change_expansion_search(self.opts.expansion_search);
            index.change_expansion_add(self.opts.expansion_add);
            graphs.insert(
                *dim,
                Arc::new(Graph {
                    index: RwLock::new(index),
                    reserved: AtomicUsize::new(0),
                }),
            );
        }
        let keys = std::fs::read(dir.join(keys_file(m.generation))).map_err(err)?;
        if keys.len() % 12 != 0 {
            return Err("truncated key file".into());
        }
        let mut present = HashMap::with_capacity(keys.len() / 12);
        for rec in keys.chunks_exact(12) {
            let key = u64::from_le_bytes(rec[..8].try_into().map_err(err)?);
            let dim = u32::from_le_bytes(rec[8..].try_into().map_err(err)?);
            present.insert(key, dim);
        }
        let n = present.len();
        *self.graphs.write() = graphs;
        self.track.lock().present = present;
        self.keys_from(m.next_key);
        Ok(n)
    }

    /// Saves the graphs and their keys to `dir` (at close, once no write runs). The
    /// manifest is renamed into place last, so a crash leaves the previous snapshot.
    pub(crate) fn save(&self, dir: &Path) -> Result<(), VectorError> {
        std::fs::create_dir_all(dir).map_err(err)?;
        let old = std::fs::read_to_string(dir.join(MANIFEST))
            .ok()
            .and_then(|t| Manifest::parse(&t));
        let generation = old.as_ref().map_or(1, |m| m.generation + 1);
        let graphs = self.graphs.read();
        let mut dims: Vec<u32> = graphs.keys().copied().collect();
        dims.sort_unstable();
        for dim in &dims {
            if let Some(g) = graphs.get(dim) {
                let path = dir.join(graph_file(generation, *dim));
                g.index.read().save(&path.to_string_lossy()).map_err(err)?;
            }
        }
        let mut keys = Vec::new();
        for (k, d) in &self.track.lock().present {
            keys.extend_from_slice(&k.to_le_bytes());
            keys.extend_from_slice(&d.to_le_bytes());
        }
        write_synced(&dir.join(keys_file(generation)), &keys)?;
        let m = Manifest {
            generation,
            next_key: self.next_key.load(Ordering::Acquire),
            dims,
        };
        let tmp = dir.join(format!("{MANIFEST}.tmp"));
        write_synced(&tmp, m.render().as_bytes())?;
        std::fs::rename(&tmp, dir.join(MANIFEST)).map_err(err)?;
        if let Some(old) = old {
            for dim in &old.dims {
                let _ = std::fs::remove_file(dir.join(graph_file(old.generation, *dim)));
            }
            let _ = std::fs::remove_file(dir.join(keys_file(old.generation)));
        }
        Ok(())
    }
}

/// What [`Vectors::catch_up`] did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CatchUp {
    pub removed: usize,
    pub added: usize,
}

impl Graph {
    fn add_all(&self, items: &[(u64, &[f32])], slots: &Slots) -> Result<(), VectorError> {
        let n = items.len();
        {
            // Reserve room for this batch beside every other add under way (one
            // upgradable guard at a time, so checks and reservations do not interleave).
            let index = self.index.upgradable_read();
            let before = self.reserved.fetch_add(n, Ordering::AcqRel);
            let need = index.size() + before + n;
            if need > index.capacity() {
                let index = parking_lot::RwLockUpgradableReadGuard::upgrade(index);
                let cap = need.max(index.capacity().saturating_mul(2));
                if let Err(e) = index.reserve_capacity_and_threads(cap, SLOTS) {
                    self.reserved.fetch_sub(n, Ordering::AcqRel);
                    return Err(err(e));
                }
            }
        }
        let result = (|| {
            let _slot = slots.take();
            let index = self.index.read();
            for (key, v) in items {
                index.add(*key, v).map_err(err)?;
            }
            Ok(())
        })();
        self.reserved.fetch_sub(n, Ordering::AcqRel);
        result
    }
}

const MANIFEST: &str = "manifest";

fn graph_file(generation: u64, dim: u32) -> String {
    format!("graph-{generation}-{dim}.usearch")
}

fn keys_file(generation: u64) -> String {
    format!("keys-{generation}")
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), VectorError> {
    let mut f = std::fs::File::create(path).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}

/// The snapshot's table of contents: `generation next_key dim dim ...`.
struct Manifest {
    generation: u64,
    next_key: u64,
    dims: Vec<u32>,
}

impl Manifest {
    fn parse(text: &str) -> Option<Manifest> {
        let mut words = text.split_whitespace();
        if words.next()? != "annostore-vectors-1" {
            return None;
        }
        let generation = words.next()?.parse().ok()?;
        let next_key = words.next()?.parse().ok()?;
        let dims = words
            .map(|w| w.parse().ok())
            .collect::<Option<Vec<u32>>>()?;
        Some(Manifest {
            generation,
            next_key,
            dims,
        })
    }

    fn render(&self) -> String {
        let mut s = format!("annostore-vectors-1 {} {}", self.generation, self.next_key);
        for d in &self.dims {
            s.push_str(&format!(" {d}"));
        }
        s.push('\n');
        s
    }
}
