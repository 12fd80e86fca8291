//! Invariant checks for a service at rest: after a scenario has quiesced (the pipeline
//! settled, the retry queue drained, pending work swept), the store, the index, the
//! cache and search must agree:
//!
//! - per key at most one active operation, and it is the highest-numbered FINISHED one
//!   (after a rollback: the FINISHED one activated last)
//!   (and the store's active set says the same);
//! - the visibility snapshot holds exactly the active operations;
//! - no pending index work remains;
//! - the index holds as many documents of each active operation as the store holds
//!   annotations of it;
//! - search finds every annotation of an active run exactly once, and nothing else.

use crate::model::{
    Operation, OperationFilter, OperationKey, OperationStatus, ScanOrder, SearchRequest,
};
use crate::service::Service;
use std::collections::{BTreeMap, HashMap, HashSet};
use uuid::Uuid;

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvariantViolation {
    #[error(
        "key {key:?}: active {active:?}, expected {expected:?} (the newest finished, or the last activated after a rollback)"
    )]
    WrongActive {
        key: OperationKey,
        active: Vec<Uuid>,
        expected: Option<Uuid>,
    },
    #[error("the store's active set {store:?} differs from its operations' {operations:?}")]
    ActiveSetDiffers {
        store: Vec<Uuid>,
        operations: Vec<Uuid>,
    },
    #[error(
        "the visibility snapshot ({visible} runs) differs from the active set; missing {missing:?}"
    )]
    SnapshotDiffers { visible: usize, missing: Vec<Uuid> },
    #[error("index work pending: {0:?}")]
    PendingWork(Vec<Uuid>),
    #[error("operation {operation}: the store holds {store} annotations, the index {index}")]
    CountsDiffer {
        operation: Uuid,
        store: u64,
        index: u64,
    },
    #[error("operation {operation}: annotation_count {recorded}, the store holds {held}")]
    RecordedCountDiffers {
        operation: Uuid,
        recorded: u64,
        held: u64,
    },
    #[error("search returned annotation {id} {times} times")]
    Duplicate { id: Uuid, times: usize },
    #[error("search returned annotation {id} of operation {operation}, which is not active")]
    Invisible { id: Uuid, operation: Uuid },
    #[error("search missed {missing} of the {held} annotations of active operation {operation}")]
    Missing {
        operation: Uuid,
        held: usize,
        missing: usize,
    },
    #[error("a call failed during the check: {0}")]
    Call(String),
}

/// What a passing check looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    pub operations: usize,
    pub active: usize,
    pub annotations_visible: usize,
}

/// Checks every invariant of the module comment; returns every violation found.
pub async fn check(service: &Service) -> Result<Summary, Vec<InvariantViolation>> {
    let mut violations = Vec::new();
    let summary = match check_into(service, &mut violations).await {
        Ok(s) => s,
        Err(e) => {
            violations.push(InvariantViolation::Call(e.to_string()));
            Summary::default()
        }
    };
    if violations.is_empty() {
        Ok(summary)
    } else {
        Err(violations)
    }
}

async fn check_into(
    service: &Service,
    violations: &mut Vec<InvariantViolation>,
) -> Result<Summary, crate::Error> {
    let engines = service.engines();
    let store = &engines.store;
    let ops = all_operations(service).await?;

    // Per key: the active one is the newest FINISHED one.
    let mut by_key: BTreeMap<OperationKey, Vec<&Operation>> = BTreeMap::new();
    for op in &ops {
        by_key.entry(op.key()).or_default().push(op);
    }
    let mut active: Vec<Uuid> = Vec::new();
    for (key, runs) in &by_key {
        let finished = runs
            .iter()
            .filter(|o| o.status == OperationStatus::Finished);
        // Without rollbacks the active run is the newest finished one; a key rolled
        // back (a run superseded by an older one) has the latest activation active.
        let rolled_back = runs.iter().any(|r| {
            r.superseded_by.is_some_and(|s| {
                runs.iter()
                    .any(|o| o.id == s && o.operation_number < r.operation_number)
            })
        });
        let expected = if rolled_back {
            finished
                .max_by_key(|o| (o.activation, o.operation_number))
                .map(|o| o.id)
        } else {
            finished.max_by_key(|o| o.operation_number).map(|o| o.id)
        };
        let actives: Vec<Uuid> = runs.iter().filter(|o| o.active).map(|o| o.id).collect();
        if actives.len() > 1 || actives.first().copied() != expected {
            violations.push(InvariantViolation::WrongActive {
                key: key.clone(),
                active: actives.clone(),
                expected,
            });
        }
        active.extend(actives);
    }
    active.sort();
    let mut stored_active: Vec<Uuid> = store
        .active_operations()
        .await?
        .iter()
        .map(|o| o.id)
        .collect();
    stored_active.sort();
    if stored_active != active {
        violations.push(InvariantViolation::ActiveSetDiffers {
            store: stored_active,
            operations: active.clone(),
        });
    }

    let visibility = engines.cache.visibility();
    let missing: Vec<Uuid> = active
        .iter()
        .filter(|id| !visibility.is_active(id))
        .copied()
        .collect();
    if !missing.is_empty() || visibility.len() != active.len() {
        violations.push(InvariantViolation::SnapshotDiffers {
            visible: visibility.len(),
            missing,
        });
    }

    let pending = store.pending_work(None, 100).await?;
    if !pending.is_empty() {
        violations.push(InvariantViolation::PendingWork(
            pending.iter().map(|w| w.operation_id).collect(),
        ));
    }

    // What each active operation holds, in the store and in the index.
    let mut held: HashMap<Uuid, HashSet<Uuid>> = HashMap::new();
    for id in &active {
        let ids = annotation_ids(service, *id).await?;
        let index = engines.index.count_operation(*id).await?;
        if index != ids.len() as u64 {
            violations.push(InvariantViolation::CountsDiffer {
                operation: *id,
                store: ids.len() as u64,
                index,
            });
        }
        if let Some(op) = ops.iter().find(|o| o.id == *id)
            && op.annotation_count != ids.len() as u64
        {
            violations.push(InvariantViolation::RecordedCountDiffers {
                operation: *id,
                recorded: op.annotation_count,
                held: ids.len() as u64,
            });
        }
        held.insert(*id, ids);
    }

    // Search: every visible annotation exactly once, nothing of an inactive run.
    let mut found: HashMap<Uuid, usize> = HashMap::new();
    let mut found_of: HashMap<Uuid, HashSet<Uuid>> = HashMap::new();
    let mut req = SearchRequest {
        limit: Some(1_000),
        ..Default::default()
    };
    loop {
        let page = service.search(&req).await?;
        for a in &page.annotations {
            *found.entry(a.id).or_default() += 1;
            if !held.contains_key(&a.operation_id) {
                violations.push(InvariantViolation::Invisible {
                    id: a.id,
                    operation: a.operation_id,
                });
            }
            found_of.entry(a.operation_id).or_default().insert(a.id);
        }
        match page.next_page_token {
            Some(t) if !page.annotations.is_empty() => req.page_token = Some(t),
            _ => break,
        }
    }
    for (id, times) in &found {
        if *times > 1 {
            violations.push(InvariantViolation::Duplicate {
                id: *id,
                times: *times,
            });
        }
    }
    for (op, ids) in &held {
        let seen = found_of.get(op);
        let missing = ids
            .iter()
            .filter(|id| !seen.is_some_and(|s| s.contains(*id)))
            .count();
        if missing > 0 {
            violations.push(InvariantViolation::Missing {
                operation: *op,
                held: ids.len(),
                missing,
            });
        }
    }
    Ok(Summary {
        operations: ops.len(),
        active: active.len(),
        annotations_visible: found.len(),
    })
}

async fn all_operations(service: &Service) -> Result<Vec<Operation>, crate::Error> {
    let store = &service.engines().store;
    let mut out: Vec<Operation> = Vec::new();
    loop {
        let before = out.last().map(|o| o.id);
        let page = store
            .list_operations(
                &OperationFilter::default(),
                ScanOrder::NewestFirst,
                before,
                1_000,
            )
            .await?;
        let done = page.len() < 1_000;
        out.extend(page);
        if done {
            return Ok(out);
        }
    }
}

async fn annotation_ids(service: &Service, op: Uuid) -> Result<HashSet<Uuid>, crate::Error> {
    let store = &service.engines().store;
    let mut ids = HashSet::new();
    let mut after = None;
    loop {
        let page = store.annotations_of_operation(op, after, 1_000).await?;
        after = page.last().map(|a| a.id);
        let done = page.len() < 1_000;
        ids.extend(page.into_iter().map(|a| a.id));
        if done {
            return Ok(ids);
        }
    }
}
