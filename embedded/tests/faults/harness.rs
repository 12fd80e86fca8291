//! The world a fault scenario runs in: the service over the real embedded engines (fjall
//! store, tantivy index, fjall retry queue), each behind its fault layer; concurrent
//! producers (start, upsert, rewrite ids, finish, cancel, abandon) and readers that
//! record a history; the drain that brings everything to rest once the faults heal;
//! and the checks that follow.

use annostore_core::Error;
use annostore_core::cache::MokaOperationCache;
use annostore_core::clock::{ManualClock, SystemClock};
use annostore_core::events::LocalEventBus;
use annostore_core::model::{Annotation, SearchFilter, SearchRequest, TypeDefinition};
use annostore_core::service::{Engines, Service};
use annostore_core::store::Store;
use annostore_core::testkit::faults::{FaultyIndex, FaultyQueue, FaultyStore};
use annostore_core::testkit::history::{FinishOutcome, History, Read};
use annostore_core::testkit::invariants;
use annostore_core::testkit::store::start_request;
use annostore_core::validate::Limits;
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::task::JoinSet;
use uuid::Uuid;

pub const KEYS: [&str; 3] = ["k0", "k1", "k2"];
const PRODUCERS: usize = 3;
const RUNS_PER_PRODUCER: usize = 4;
const READERS: usize = 2;
/// Annotations per run: two batches of half each, then a batch rewriting a few of them.
const PER_RUN: usize = 24;
const REWRITTEN: usize = 6;
/// Attempts a client makes at one call that answers 503 before the test gives up.
const ATTEMPTS: usize = 60;

pub struct World {
    pub service: Arc<Service>,
    /// The store without faults, for checking what was written.
    pub truth: Arc<dyn Store>,
    pub store: Arc<FaultyStore>,
    pub index: Arc<FaultyIndex>,
    pub queue: Arc<FaultyQueue>,
    queue_clock: ManualClock,
    pub history: History<String>,
    pub seed: u64,
    markers: AtomicU64,
    /// Per annotation id, the marker of its last acknowledged write.
    acked: Mutex<HashMap<Uuid, u64>>,
    /// Every upsert that failed, checked whole or absent right after.
    pub failed_upserts: AtomicU64,
    _dir: tempfile::TempDir,
}

impl World {
    pub async fn new(seed: u64, index_timeout: Duration) -> Arc<World> {
        let dir = tempfile::tempdir().unwrap();
        let queue_clock = ManualClock::new(OffsetDateTime::now_utc());
        let (fjall, queue, tantivy) = crate::common::parts(dir.path(), 10_000, queue_clock.clone());
        let truth: Arc<dyn Store> = Arc::new(fjall);
        let store = FaultyStore::new(truth.clone());
        let index = FaultyIndex::new(Arc::new(tantivy));
        let queue = FaultyQueue::new(Arc::new(queue));
        let engines = Engines {
            store: store.clone(),
            index: index.clone(),
            queue: queue.clone(),
            cache: Arc::new(MokaOperationCache::default()),
            events: Arc::new(LocalEventBus::default()),
        };
        let service = Service::new(engines, Limits::default(), Arc::new(SystemClock))
            .with_index_timeout(index_timeout);
        let def = TypeDefinition {
            schema: json!({}),
            embedding_dim: None,
        };
        service.put_type("objects", 1, def).await.unwrap();
        Arc::new(World {
            service: Arc::new(service),
            truth,
            store,
            index,
            queue,
            queue_clock,
            history: History::new(),
            seed,
            markers: AtomicU64::new(1),
            acked: Mutex::new(HashMap::new()),
            failed_upserts: AtomicU64::new(0),
            _dir: dir,
        })
    }

    /// Producers and readers at once; returns when every producer is done.
    pub async fn run(self: &Arc<Self>) {
        let reading = Arc::new(AtomicBool::new(true));
        let mut readers = JoinSet::new();
        for r in 0..READERS {
            let (world, reading) = (self.clone(), reading.clone());
            readers.spawn(async move { world.read_while(r, &reading).await });
        }
        let mut producers = JoinSet::new();
        for p in 0..PRODUCERS {
            let world = self.clone();
            producers.spawn(async move { world.produce(p).await });
        }
        while let Some(done) = producers.join_next().await {
            done.unwrap();
        }
        reading.store(false, Ordering::SeqCst);
        while let Some(done) = readers.join_next().await {
            done.unwrap();
        }
    }

    fn fail(&self, what: impl std::fmt::Display) -> ! {
        panic!("seed {:#x}: {what}", self.seed)
    }

    /// A call a client retries while it answers 503; any other error fails the test.
    async fn retried<T, F: Future<Output = Result<T, Error>>>(
        &self,
        what: &str,
        mut call: impl FnMut() -> F,
    ) -> Option<T> {
        for _ in 0..ATTEMPTS {
            match call().await {
                Ok(v) => return Some(v),
                Err(Error::Unavailable { .. }) => {}
                Err(e) => self.fail(format!("{what}: {e}")),
            }
        }
        None
    }

    async fn produce(&self, p: usize) {
        let mut rng = fastrand::Rng::with_seed(self.seed ^ ((p as u64 + 1) * 0x9E37));
        for _ in 0..RUNS_PER_PRODUCER {
            let key = KEYS[rng.usize(..KEYS.len())];
            let start = || self.service.start(start_request("objects", 1, key));
            let Some(op) = self.retried("start", start).await else {
                self.fail("a start never succeeded")
            };
            self.history.started(key.into(), op.id, op.operation_number);
            let ids: Vec<Uuid> = (0..PER_RUN)
                .map(|_| Uuid::from_u128(rng.u128(..)))
                .collect();
            let mut batches: Vec<Vec<(Uuid, i64)>> = vec![
                ids[..PER_RUN / 2].iter().map(|id| (*id, 0)).collect(),
                ids[PER_RUN / 2..].iter().map(|id| (*id, 0)).collect(),
            ];
            // A rewrite of ids of both batches, at other times.
            batches.push(
                (0..REWRITTEN)
                    .map(|_| (ids[rng.usize(..PER_RUN)], 1 + rng.i64(0..100)))
                    .collect(),
            );
            for batch in &batches {
                self.upsert(op.id, key, batch, &mut rng).await;
            }
            match rng.u8(..100) {
                0..10 => self.cancel(op.id).await,
                10..20 => {} // abandoned: never finished, never cancelled
                _ => self.finish(op.id).await,
            }
        }
    }

    /// Upserts one batch until acknowledged. After each failure, the store must hold
    /// the failed write whole or not at all.
    async fn upsert(&self, op: Uuid, key: &str, batch: &[(Uuid, i64)], rng: &mut fastrand::Rng) {
        for _ in 0..ATTEMPTS {
            let marker = self.markers.fetch_add(1, Ordering::SeqCst);
            let items: Vec<Value> = batch
                .iter()
                .enumerate()
                .map(|(i, (id, shift))| {
                    let start = (i as i64 + shift * 7) * 40;
                    json!({"id": id, "media_id": key, "start_ms": start, "end_ms": start + 40,
                           "label": label(rng), "data": {"w": marker}})
                })
                .collect();
            match self.service.upsert(op, &items).await {
                Ok(_) => {
                    let mut acked = self.acked.lock();
                    for (id, _) in batch {
                        acked.insert(*id, marker);
                    }
                    return;
                }
                Err(Error::Unavailable { what, .. }) => {
                    assert_eq!(
                        what, "store",
                        "seed {:#x}: only the store fails upserts",
                        self.seed
                    );
                    self.failed_upserts.fetch_add(1, Ordering::SeqCst);
                    self.whole_or_absent(batch, marker).await;
                }
                Err(e) => self.fail(format!("upsert: {e}")),
            }
        }
        self.fail("an upsert never succeeded")
    }

    async fn whole_or_absent(&self, batch: &[(Uuid, i64)], marker: u64) {
        // One batch may name an id twice: the last copy is the one written.
        let ids: Vec<Uuid> = batch
            .iter()
            .map(|(id, _)| *id)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let held = self.truth.get_annotations(&ids).await.unwrap();
        let written = held
            .iter()
            .flatten()
            .filter(|a| write_of(a) == Some(marker))
            .count();
        let distinct = ids.len();
        assert!(
            written == 0 || written == distinct,
            "seed {:#x}: a failed upsert left {written} of {distinct} annotations written",
            self.seed
        );
    }

    async fn finish(&self, op: Uuid) {
        let invoked = self.history.tick();
        let finish = || self.service.finish(op);
        let outcome = match self.retried("finish", finish).await {
            Some(done) => FinishOutcome::Answered {
                at: self.history.tick(),
                active: done.active,
                count: done.annotation_count,
            },
            None => FinishOutcome::Unanswered,
        };
        self.history.finished(op, invoked, outcome);
    }

    async fn cancel(&self, op: Uuid) {
        let cancel = || self.service.cancel(op);
        if self.retried("cancel", cancel).await.is_some() {
            self.history.cancelled(op);
        }
    }

    /// Searches one key or all of them until told to stop, recording each answer.
    async fn read_while(&self, reader: usize, reading: &AtomicBool) {
        let mut rng = fastrand::Rng::with_seed(self.seed ^ 0xDEAD ^ reader as u64);
        while reading.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
            let key = rng.usize(..=KEYS.len());
            let filter = SearchFilter {
                media_id: KEYS.get(key).map(|k| k.to_string()),
                ..Default::default()
            };
            let req = SearchRequest {
                filter,
                limit: Some(1_000),
                ..Default::default()
            };
            let invoked = self.history.tick();
            let Ok(page) = self.service.search(&req).await else {
                continue; // a failed search shows nothing
            };
            let answered = self.history.tick();
            let mut seen: BTreeMap<String, BTreeMap<Uuid, u64>> = BTreeMap::new();
            for a in &page.annotations {
                *seen
                    .entry(a.pivot_id.clone())
                    .or_default()
                    .entry(a.operation_id)
                    .or_default() += 1;
            }
            let covered: BTreeSet<String> = match (page.next_page_token, KEYS.get(key)) {
                (Some(_), _) => BTreeSet::new(),
                (None, Some(k)) => BTreeSet::from([k.to_string()]),
                (None, None) => KEYS.iter().map(|k| k.to_string()).collect(),
            };
            self.history.read(Read {
                invoked,
                answered,
                seen,
                covered,
            });
        }
    }

    /// Brings everything to rest, the faults healed: the pipeline settled, pending work
    /// swept into the queue and the queue drained, the snapshot refreshed from the store
    /// (the periodic safety net). Polls with a deadline.
    pub async fn drain(&self) {
        let reconciler = self.service.reconciler();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.service.settle().await;
            let cutoff = OffsetDateTime::now_utc() + time::Duration::minutes(1);
            reconciler.sweep(cutoff, 10_000).await.unwrap();
            self.queue_clock.advance_ms(60_000);
            reconciler.run_queue_once(10_000).await.unwrap();
            let pending = self.truth.pending_work(None, 1).await.unwrap();
            let depth = self.service.engines().queue.depth().await.unwrap();
            if pending.is_empty() && depth == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "seed {:#x}: no convergence: {} pending, {depth} queued",
                self.seed,
                pending.len()
            );
            tokio::task::yield_now().await;
        }
        self.service.refresh_visibility().await.unwrap();
    }

    /// The history of the run against the visibility rule.
    pub fn check_history(&self) {
        match self.history.check() {
            Ok(checked) => assert!(checked.reads > 0, "seed {:#x}: no read answered", self.seed),
            Err(v) => self.fail(format!("history: {v:#?}")),
        }
    }

    /// The invariants at rest, and that no acknowledged write was lost.
    pub async fn check_at_rest(&self) {
        if let Err(v) = invariants::check(&self.service).await {
            self.fail(format!("invariants: {v:#?}"));
        }
        let acked: Vec<(Uuid, u64)> = self.acked.lock().iter().map(|(k, v)| (*k, *v)).collect();
        let ids: Vec<Uuid> = acked.iter().map(|(id, _)| *id).collect();
        let held = self.truth.get_annotations(&ids).await.unwrap();
        for ((id, marker), a) in acked.iter().zip(held) {
            let got = a.as_ref().and_then(write_of);
            assert_eq!(
                got,
                Some(*marker),
                "seed {:#x}: acknowledged write of {id} lost",
                self.seed
            );
        }
    }
}

fn label(rng: &mut fastrand::Rng) -> &'static str {
    ["person", "car"][rng.usize(..2)]
}

/// The marker of the write that left `a` as it is.
fn write_of(a: &Annotation) -> Option<u64> {
    a.data.as_ref()?.get("w")?.as_u64()
}

/// Scenario iterations: a few in CI, more with `ANNOSTORE_FAULT_ITERATIONS`.
pub fn iterations() -> u64 {
    std::env::var("ANNOSTORE_FAULT_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

/// The seed of iteration `i` of a scenario: `ANNOSTORE_FAULT_SEED` replays one.
pub fn seed(scenario: u64, i: u64) -> u64 {
    match std::env::var("ANNOSTORE_FAULT_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
    {
        Some(s) => s,
        None => scenario.wrapping_mul(0x1000_0000_01B3) ^ (i + 1).wrapping_mul(0x9E37_79B9),
    }
}
