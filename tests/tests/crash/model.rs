//! The record of one crash iteration: every request that was acknowledged, and every one
//! that was in flight at a kill (outcome unknown), and from it what a search may show.

use annostore_tests::s;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

pub const TYPE: &str = "crash";

/// SplitMix64: every choice of an iteration comes from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// An independent stream for a task of its own.
    pub fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }

    pub fn uuid(&mut self) -> String {
        let bytes = (u128::from(self.next_u64()) << 64 | u128::from(self.next_u64())).to_be_bytes();
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }
}

/// Where a run's last lifecycle request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Open,
    FinishSent,
    Finished,
    CancelSent,
    Cancelled,
}

/// One annotation id of a run.
#[derive(Debug, Clone)]
pub struct Ann {
    /// Its place in the run: fixes media time (with the version) and `data.n`.
    pub n: u64,
    /// The last acknowledged version.
    pub acked: Option<u64>,
    /// Versions sent and not acknowledged: in flight at the kill, they may have landed.
    pub maybe: BTreeSet<u64>,
    pub next_v: u64,
    /// The producer allowed to rewrite it (one writer per id keeps "last" well defined).
    pub owner: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Run {
    pub id: String,
    pub key: usize,
    pub number: u64,
    pub anns: BTreeMap<String, Ann>,
    pub end: End,
    /// The model's `seq` when the finish was acknowledged (or found done after a restart).
    pub finish_acked: Option<u64>,
    /// Batches in flight at a kill: (id, version) pairs, each landed whole or not at all.
    pub unknown: Vec<Vec<(String, u64)>>,
    /// A task of the current cycle works on it.
    pub busy: bool,
    pub next_n: u64,
    pub next_owner: u64,
    /// What the first view of a finished run with in-flight batches showed (id, version).
    pub pinned: Option<BTreeMap<String, u64>>,
}

impl Run {
    pub fn new(id: String, key: usize, number: u64) -> Run {
        Run {
            id,
            key,
            number,
            anns: BTreeMap::new(),
            end: End::Open,
            finish_acked: None,
            unknown: Vec::new(),
            busy: false,
            next_n: 0,
            next_owner: 0,
            pinned: None,
        }
    }

    pub fn acked_count(&self) -> usize {
        self.anns.values().filter(|a| a.acked.is_some()).count()
    }

    /// Ids that may be stored (acknowledged, or in flight at a kill).
    pub fn possible_count(&self) -> usize {
        self.anns
            .values()
            .filter(|a| a.acked.is_some() || !a.maybe.is_empty())
            .count()
    }

    /// Exactly what the run holds (id, version), when the record knows it: pinned by a
    /// view, or nothing in flight at a kill left open.
    pub fn content(&self) -> Option<BTreeMap<String, u64>> {
        if self.pinned.is_some() {
            return self.pinned.clone();
        }
        if self.anns.values().any(|a| !a.maybe.is_empty()) {
            return None;
        }
        Some(
            self.anns
                .iter()
                .filter_map(|(id, a)| a.acked.map(|v| (id.clone(), v)))
                .collect(),
        )
    }

    pub fn finish_sent(&self) -> bool {
        matches!(self.end, End::FinishSent | End::Finished)
    }
}

pub struct Key {
    pub pivot: String,
    pub runs: Vec<String>,
    /// Starts sent and not acknowledged.
    pub starts_in_flight: usize,
}

pub fn media(key: usize) -> String {
    format!("crash-media-{key}")
}

/// Whether the annotation at place `n` carries an embedding (half of them do).
pub fn embedded(n: u64) -> bool {
    n.is_multiple_of(2)
}

/// The body of version `v` of an annotation: time, label, embedding and data all follow
/// from it (embedding values exact in f32).
pub fn body(key: usize, run: &str, id: &str, n: u64, v: u64) -> Value {
    let start = n * 10 + v % 7;
    let mut a = json!({
        "id": id,
        "media_id": media(key),
        "start_ms": start,
        "end_ms": start + 5,
        "label": format!("l{}", v % 3),
        "confidence": 0.5,
        "data": {"run": run, "n": n, "v": v},
    });
    if embedded(n) {
        a["embedding"] = json!([1.0, (n % 5) as f64 + 0.5, (v % 4) as f64 * 0.25 + 0.25, 0.5]);
    }
    a
}

/// A nearest-neighbour search over one key, large enough for every embedded annotation
/// of a run (up to `k`).
pub fn knn_filter(pivot: &str) -> Value {
    json!({
        "annotation_type": TYPE,
        "pivot_id": pivot,
        "knn": {"vector": [1.0, 1.0, 1.0, 1.0], "k": KNN_K},
    })
}

pub const KNN_K: usize = 1000;

/// The version an annotation read back carries, once it is checked to be exactly the
/// body that version was sent with.
pub fn version_of(a: &Value, run: &Run, pivot: &str) -> Result<u64, String> {
    let id = s(a, "id");
    let v = a["data"]["v"]
        .as_u64()
        .ok_or_else(|| format!("annotation without data.v: {a}"))?;
    let n = run
        .anns
        .get(&id)
        .ok_or_else(|| format!("annotation {id} was never sent to run {}", run.id))?
        .n;
    let want = body(run.key, &run.id, &id, n, v);
    for field in [
        "media_id",
        "start_ms",
        "end_ms",
        "label",
        "data",
        "embedding",
    ] {
        if a[field] != want[field] {
            return Err(format!(
                "annotation {id}: {field} is {}, sent {}",
                a[field], want[field]
            ));
        }
    }
    if a["pivot_id"] != json!(pivot) || a["annotation_type"] != json!(TYPE) {
        return Err(format!("annotation {id} under the wrong key: {a}"));
    }
    Ok(v)
}

/// Totals for the summary line.
#[derive(Default)]
pub struct Stats {
    pub crashes: AtomicU64,
    /// Annotations compared with the record (each time one was read back).
    pub checked: AtomicU64,
    pub searches: AtomicU64,
    pub acked_requests: AtomicU64,
    /// Kills that landed with upserts (finishes) sent and not answered.
    pub kills_mid_upsert: AtomicU64,
    pub kills_mid_finish: AtomicU64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

pub struct Model {
    pub keys: Vec<Key>,
    pub runs: HashMap<String, Run>,
    /// Grows with every acknowledgement: orders acknowledged finishes against searches.
    pub seq: u64,
}

impl Model {
    pub fn new(keys: usize) -> Model {
        Model {
            keys: (0..keys)
                .map(|k| Key {
                    pivot: format!("crash-key-{k}"),
                    runs: Vec::new(),
                    starts_in_flight: 0,
                })
                .collect(),
            runs: HashMap::new(),
            seq: 0,
        }
    }

    pub fn key_of_pivot(&self, pivot: &str) -> Option<usize> {
        self.keys.iter().position(|k| k.pivot == pivot)
    }

    pub fn add_run(&mut self, run: Run) {
        self.keys[run.key].runs.push(run.id.clone());
        self.runs.insert(run.id.clone(), run);
    }

    pub fn runs_of(&self, key: usize) -> impl Iterator<Item = &Run> {
        self.keys[key].runs.iter().map(|id| &self.runs[id])
    }

    /// Checks what one search showed of `key` (every annotation it returned of that key),
    /// the search having been sent when the model's `seq` was `sent_at`. The key shows
    /// one whole run or nothing: a run whose finish was sent, no older than any run
    /// whose finish was acknowledged before the search, with exactly its acknowledged
    /// annotations at their last acknowledged versions, plus whichever batches in flight
    /// at a kill landed (each whole; the first view of such a run pins what it holds, and
    /// every later view must show the same). Returns how many annotations it checked.
    /// With `knn`, the search was [`knn_filter`]: only embedded annotations count.
    pub fn check_view(
        &mut self,
        key: usize,
        shown: &[&Value],
        sent_at: u64,
        knn: bool,
    ) -> Result<usize, String> {
        let pivot = self.keys[key].pivot.clone();
        let ops: BTreeSet<String> = shown.iter().map(|a| s(a, "operation_id")).collect();
        if ops.len() > 1 {
            return Err(format!("key {pivot}: two runs visible at once: {ops:?}"));
        }
        let floor = self
            .runs_of(key)
            .filter(|r| r.finish_acked.is_some_and(|at| at <= sent_at))
            .map(|r| r.number)
            .max();
        let Some(op) = ops.into_iter().next() else {
            let may_show_nothing = |r: &Run| match r.content() {
                Some(c) => c.keys().all(|id| knn && !embedded(r.anns[id].n)),
                None => r
                    .anns
                    .values()
                    .all(|a| a.acked.is_none() || (knn && !embedded(a.n))),
            };
            let empty_candidate = self.runs_of(key).any(|r| {
                r.finish_sent() && floor.is_none_or(|f| r.number >= f) && may_show_nothing(r)
            });
            return match floor {
                Some(f) if !empty_candidate => Err(format!(
                    "key {pivot}: nothing visible, though run #{f} finished before the search"
                )),
                _ => Ok(0),
            };
        };
        let run = self
            .runs
            .get_mut(&op)
            .filter(|r| r.key == key)
            .ok_or_else(|| format!("key {pivot}: annotations of an unknown run {op}"))?;
        let what = format!(
            "key {pivot}, run #{}{}",
            run.number,
            if knn { ", kNN" } else { "" }
        );
        if !run.finish_sent() {
            return Err(format!(
                "{what}: visible though never finished ({:?})",
                run.end
            ));
        }
        if let Some(f) = floor.filter(|f| run.number < *f) {
            return Err(format!(
                "{what}: superseded, visible after run #{f} finished"
            ));
        }
        let mut got = BTreeMap::new();
        for a in shown {
            let v = version_of(a, run, &pivot).map_err(|e| format!("{what}: {e}"))?;
            if got.insert(s(a, "id"), v).is_some() {
                return Err(format!("{what}: annotation {} shown twice", s(a, "id")));
            }
        }
        match run.content() {
            Some(want) => {
                let want: BTreeMap<String, u64> = want
                    .into_iter()
                    .filter(|(id, _)| !knn || embedded(run.anns[id].n))
                    .collect();
                let whole = if want.len() > KNN_K {
                    got.len() == KNN_K && got.iter().all(|(id, v)| want.get(id) == Some(v))
                } else {
                    got == want
                };
                if !whole {
                    let missing: Vec<_> = want
                        .iter()
                        .filter(|(id, v)| got.get(*id) != Some(v))
                        .take(5)
                        .collect();
                    let extra: Vec<_> = got
                        .iter()
                        .filter(|(id, v)| want.get(*id) != Some(v))
                        .take(5)
                        .collect();
                    return Err(format!(
                        "{what}: partial or wrong run visible: {} of {} annotations; \
                         missing or other version e.g. {missing:?}; unexpected e.g. {extra:?}",
                        got.len(),
                        want.len()
                    ));
                }
            }
            None => {
                // Batches in flight at a kill: each id at an acknowledged or in-flight
                // version, every acknowledged id there, each batch whole or absent.
                for (id, v) in &got {
                    let ann = &run.anns[id];
                    if ann.acked != Some(*v) && !ann.maybe.contains(v) {
                        return Err(format!(
                            "{what}: {id} at version {v}, acknowledged {:?}, in flight {:?}",
                            ann.acked, ann.maybe
                        ));
                    }
                }
                for (id, ann) in &run.anns {
                    if ann.acked.is_some() && (!knn || embedded(ann.n)) && !got.contains_key(id) {
                        return Err(format!("{what}: acknowledged {id} missing: partial run"));
                    }
                }
                if !knn {
                    for batch in &run.unknown {
                        let landed = batch
                            .iter()
                            .filter(|(id, v)| got.get(id) == Some(v))
                            .count();
                        if landed != 0 && landed != batch.len() {
                            return Err(format!(
                                "{what}: {landed} of {} items of a batch in flight at the kill",
                                batch.len()
                            ));
                        }
                    }
                    run.pinned = Some(got.clone());
                }
            }
        }
        Ok(got.len())
    }

    /// Checks every key against the annotations a catalogue-wide search returned.
    pub fn check_all_views(&mut self, shown: &[Value], sent_at: u64) -> Result<usize, String> {
        let mut by_key: Vec<Vec<&Value>> = vec![Vec::new(); self.keys.len()];
        for a in shown {
            let pivot = s(a, "pivot_id");
            let key = self
                .key_of_pivot(&pivot)
                .ok_or_else(|| format!("an annotation of an unknown key: {a}"))?;
            by_key[key].push(a);
        }
        let mut checked = 0;
        for (key, shown) in by_key.iter().enumerate() {
            checked += self.check_view(key, shown, sent_at, false)?;
        }
        Ok(checked)
    }

    /// Records the acknowledged finish of `run_id` (sent when `seq` was `sent_at`) and
    /// checks its answer: FINISHED, with every acknowledged annotation, active unless a
    /// newer run of the key finished, and then superseded by such a run.
    pub fn record_finish(&mut self, run_id: &str, op: &Value, sent_at: u64) -> Result<(), String> {
        self.seq += 1;
        let seq = self.seq;
        let run = self.runs.get_mut(run_id).expect("a run of the record");
        run.end = End::Finished;
        run.finish_acked = Some(seq);
        let run = &self.runs[run_id];
        let what = format!(
            "finish of run #{} of {}",
            run.number, self.keys[run.key].pivot
        );
        if op["status"] != "FINISHED" || op["operation_number"] != json!(run.number) {
            return Err(format!("{what} answered {op}"));
        }
        let count = op["annotation_count"].as_u64().unwrap_or(u64::MAX) as usize;
        if count < run.acked_count() || count > run.possible_count() {
            return Err(format!(
                "{what}: annotation_count {count}, but {} acknowledged and {} possible",
                run.acked_count(),
                run.possible_count()
            ));
        }
        let newer_done_before = self
            .runs_of(run.key)
            .any(|r| r.number > run.number && r.finish_acked.is_some_and(|at| at <= sent_at));
        if op["active"] == true {
            if newer_done_before {
                return Err(format!(
                    "{what}: active though a newer run had finished: {op}"
                ));
            }
            if op["superseded_by"] != Value::Null {
                return Err(format!("{what}: active and superseded: {op}"));
            }
        } else {
            let by = op["superseded_by"].as_str().unwrap_or_default();
            let ok = self
                .runs_of(run.key)
                .any(|r| r.id == by && r.number > run.number && r.finish_sent());
            if !ok {
                return Err(format!(
                    "{what}: inactive, but not superseded by a newer finished run: {op}"
                ));
            }
        }
        Ok(())
    }
}
