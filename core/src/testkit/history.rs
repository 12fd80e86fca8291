//! A history checker for the visibility rule. A concurrent test records every
//! acknowledged start, every finish and cancel with the instants it was invoked and
//! answered, and every search answer with its instants and the runs it saw per key;
//! [`History::check`] then verifies, for the whole history:
//!
//! - a read never sees two runs of one key;
//! - a read sees only a run whose finish was invoked, not cancelled, and not answered
//!   inactive (superseded at its finish);
//! - a read that saw run X of key K overlaps an interval during which X may have been
//!   active: from some point in [finish X invoked, finish X answered] until some point
//!   in [finish Y invoked, finish Y answered] for K's newer runs Y whose finish was
//!   answered (once Y is finished, K's active run is Y or newer, and never goes back);
//! - a read that covered key K (it returned everything visible of K) saw a run whole
//!   (as many annotations as its finish answered), and saw K's run whose finish was
//!   answered active before the read began, or a newer one (unless a newer run that may
//!   be empty was being finished).
//!
//! Instants come from one logical clock ([`History::tick`]): take one just before a call
//! and one just after its answer.

use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use uuid::Uuid;

/// How a finish ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishOutcome {
    /// Answered: the run is FINISHED, active or not, with this many annotations.
    Answered { at: u64, active: bool, count: u64 },
    /// Never answered with success (every attempt failed): the store may have finished
    /// it all the same, at any point after the invocation.
    Unanswered,
}

#[derive(Debug, Clone)]
struct Run<K> {
    key: K,
    number: u64,
    finish: Option<(u64, FinishOutcome)>,
    /// A cancel was answered with success: the run never finished.
    cancelled: bool,
}

/// One search answer: the runs it saw, per key, with how many annotations of each.
#[derive(Debug, Clone)]
pub struct Read<K> {
    pub invoked: u64,
    pub answered: u64,
    pub seen: BTreeMap<K, BTreeMap<Uuid, u64>>,
    /// Keys of which the read returned everything visible (not cut short by a page).
    pub covered: BTreeSet<K>,
}

/// What breaks the rule, with the read and run involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("read {read} saw {} runs of key {key} at once: {runs:?}", .runs.len())]
    TwoRuns {
        read: usize,
        key: String,
        runs: Vec<Uuid>,
    },
    #[error("read {read} saw run {run}, which was never started as a run of key {key}")]
    UnknownRun { read: usize, key: String, run: Uuid },
    #[error("read {read} saw run {run} of key {key}, which was never finished ({why})")]
    NeverActive {
        read: usize,
        key: String,
        run: Uuid,
        why: &'static str,
    },
    #[error(
        "read {read} [{invoked}, {answered}] saw run {run} of key {key}, which may be active only within [{from}, {until}]"
    )]
    NotActiveDuringRead {
        read: usize,
        key: String,
        run: Uuid,
        invoked: u64,
        answered: u64,
        from: u64,
        until: u64,
    },
    #[error("read {read} saw {seen} annotations of run {run} of key {key}; it has {count}")]
    Partial {
        read: usize,
        key: String,
        run: Uuid,
        seen: u64,
        count: u64,
    },
    #[error(
        "read {read} [{invoked}, {answered}] missed run {run} of key {key}, answered active at {at} with {count} annotations"
    )]
    Missed {
        read: usize,
        key: String,
        run: Uuid,
        invoked: u64,
        answered: u64,
        at: u64,
        count: u64,
    },
}

/// What a passing check looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    pub reads: usize,
    /// (read, key, run) triples checked against the rule.
    pub sightings: usize,
    pub finishes: usize,
}

/// The recorder; share it (`Arc`) between the tasks of a concurrent run.
pub struct History<K> {
    clock: AtomicU64,
    runs: Mutex<HashMap<Uuid, Run<K>>>,
    reads: Mutex<Vec<Read<K>>>,
}

impl<K> Default for History<K> {
    fn default() -> Self {
        History {
            clock: AtomicU64::new(1),
            runs: Mutex::new(HashMap::new()),
            reads: Mutex::new(Vec::new()),
        }
    }
}

impl<K: Clone + Ord + Hash + Debug> History<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next instant of the logical clock.
    pub fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    /// A start answered with run `run`, numbered `number` among `key`'s runs.
    pub fn started(&self, key: K, run: Uuid, number: u64) {
        self.runs.lock().insert(
            run,
            Run {
                key,
                number,
                finish: None,
                cancelled: false,
            },
        );
    }

    /// A finish of `run`, first invoked at `invoked` (retries included).
    pub fn finished(&self, run: Uuid, invoked: u64, outcome: FinishOutcome) {
        if let Some(r) = self.runs.lock().get_mut(&run) {
            r.finish = Some((invoked, outcome));
        }
    }

    /// A cancel of `run` answered with success.
    pub fn cancelled(&self, run: Uuid) {
        if let Some(r) = self.runs.lock().get_mut(&run) {
            r.cancelled = true;
        }
    }

    /// A search answer.
    pub fn read(&self, read: Read<K>) {
        self.reads.lock().push(read);
    }

    pub fn reads(&self) -> usize {
        self.reads.lock().len()
    }

    /// Checks the whole history (see the module comment).
    pub fn check(&self) -> Result<Checked, Vec<Violation>> {
        let runs = self.runs.lock().clone();
        let reads = self.reads.lock().clone();
        let mut by_key: HashMap<K, Vec<(Uuid, &Run<K>)>> = HashMap::new();
        for (id, r) in &runs {
            by_key.entry(r.key.clone()).or_default().push((*id, r));
        }
        let mut violations = Vec::new();
        let mut sightings = 0;
        for (i, read) in reads.iter().enumerate() {
            for (key, seen) in &read.seen {
                let name = format!("{key:?}");
                if seen.len() > 1 {
                    violations.push(Violation::TwoRuns {
                        read: i,
                        key: name.clone(),
                        runs: seen.keys().copied().collect(),
                    });
                }
                for (&run, &count) in seen {
                    sightings += 1;
                    let siblings = by_key.get(key).map_or(&[][..], Vec::as_slice);
                    if let Err(v) =
                        sighting(i, read, &name, run, count, runs.get(&run), key, siblings)
                    {
                        violations.push(v);
                    }
                }
            }
            for key in &read.covered {
                let siblings = by_key.get(key).map_or(&[][..], Vec::as_slice);
                if let Some(v) = missed(i, read, key, siblings) {
                    violations.push(v);
                }
            }
        }
        if violations.is_empty() {
            Ok(Checked {
                reads: reads.len(),
                sightings,
                finishes: runs.values().filter(|r| r.finish.is_some()).count(),
            })
        } else {
            Err(violations)
        }
    }
}

/// Checks that `read` may have seen `count` annotations of `run` of `key`.
#[allow(clippy::too_many_arguments)]
fn sighting<K: Ord + Debug>(
    i: usize,
    read: &Read<K>,
    name: &str,
    run: Uuid,
    count: u64,
    found: Option<&Run<K>>,
    key: &K,
    siblings: &[(Uuid, &Run<K>)],
) -> Result<(), Violation> {
    let never = |why| Violation::NeverActive {
        read: i,
        key: name.to_owned(),
        run,
        why,
    };
    let Some(r) = found.filter(|r| r.key == *key) else {
        return Err(Violation::UnknownRun {
            read: i,
            key: name.to_owned(),
            run,
        });
    };
    if r.cancelled {
        return Err(never("it was cancelled"));
    }
    let Some((invoked, outcome)) = r.finish else {
        return Err(never("no finish was invoked"));
    };
    if let FinishOutcome::Answered { active: false, .. } = outcome {
        return Err(never("its finish answered it superseded"));
    }
    // Deactivated at the latest when a newer run's finish was answered.
    let until = siblings
        .iter()
        .filter(|(_, s)| s.number > r.number)
        .filter_map(|(_, s)| match s.finish {
            Some((_, FinishOutcome::Answered { at, .. })) => Some(at),
            _ => None,
        })
        .min()
        .unwrap_or(u64::MAX);
    if read.invoked.max(invoked) > read.answered.min(until) {
        return Err(Violation::NotActiveDuringRead {
            read: i,
            key: name.to_owned(),
            run,
            invoked: read.invoked,
            answered: read.answered,
            from: invoked,
            until,
        });
    }
    if let FinishOutcome::Answered { count: whole, .. } = outcome
        && read.covered.contains(key)
        && count != whole
    {
        return Err(Violation::Partial {
            read: i,
            key: name.to_owned(),
            run,
            seen: count,
            count: whole,
        });
    }
    Ok(())
}

/// The run of `key` that `read` covered and must have seen but did not, if any.
fn missed<K: Ord + Debug>(
    i: usize,
    read: &Read<K>,
    key: &K,
    siblings: &[(Uuid, &Run<K>)],
) -> Option<Violation> {
    // The newest run answered active before the read began: from then on, the key's
    // active run is it or a newer one, never none.
    let (id, run, at, count) = siblings
        .iter()
        .filter_map(|(id, r)| match r.finish {
            Some((
                _,
                FinishOutcome::Answered {
                    at,
                    active: true,
                    count,
                },
            )) if at < read.invoked => Some((*id, *r, at, count)),
            _ => None,
        })
        .max_by_key(|(_, r, _, _)| r.number)?;
    let number = |run: &Uuid| {
        siblings
            .iter()
            .find(|(id, _)| id == run)
            .map(|(_, r)| r.number)
    };
    let saw_it_or_newer = read
        .seen
        .get(key)
        .is_some_and(|s| s.keys().any(|r| number(r).is_some_and(|n| n >= run.number)));
    // A newer run that may be empty may have replaced it before the read ended.
    let may_be_empty_since = siblings.iter().any(|(_, r)| {
        r.number > run.number
            && match r.finish {
                Some((invoked, FinishOutcome::Unanswered)) => invoked < read.answered,
                Some((invoked, FinishOutcome::Answered { count, .. })) => {
                    invoked < read.answered && count == 0
                }
                None => false,
            }
    });
    (count > 0 && !saw_it_or_newer && !may_be_empty_since).then(|| Violation::Missed {
        read: i,
        key: format!("{key:?}"),
        run: id,
        invoked: read.invoked,
        answered: read.answered,
        at,
        count,
    })
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
