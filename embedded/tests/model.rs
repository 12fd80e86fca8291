//! Property test of the whole service on the embedded engines against a simple model:
//! random interleavings of start, upsert, finish, cancel and lease expiry on a few keys.
//! After every step, a catalogue-wide search returns exactly the annotations of the
//! model's active runs, and every answer (success or refusal) is the model's.

use annostore_core::clock::{Clock, ManualClock, from_unix_ms};
use annostore_core::model::{OperationStatus, SearchRequest, StartOperation};
use annostore_core::testkit::store::start_request;
use proptest::prelude::*;
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use uuid::Uuid;

mod common;

const KEYS: usize = 2;
const LEASE_SECONDS: u32 = 10;

#[derive(Debug, Clone)]
enum Step {
    Start(usize),
    /// Upsert `n` new annotations (plus one rewrite of an existing id when `rewrite`).
    Upsert {
        op: usize,
        n: usize,
        rewrite: bool,
    },
    Finish(usize),
    Cancel(usize),
    /// Moves the clock forward by this many seconds.
    Advance(u32),
    /// Runs the background expiry sweep.
    Sweep,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..KEYS).prop_map(Step::Start),
        5 => (0..8usize, 1..6usize, any::<bool>()).prop_map(|(op, n, rewrite)| Step::Upsert { op, n, rewrite }),
        3 => (0..8usize).prop_map(Step::Finish),
        1 => (0..8usize).prop_map(Step::Cancel),
        1 => (1..15u32).prop_map(Step::Advance),
        1 => Just(Step::Sweep),
    ]
}

#[derive(Debug)]
struct ModelOp {
    id: Uuid,
    key: usize,
    number: u64,
    status: OperationStatus,
    lease_until: i64,
    annotations: BTreeSet<Uuid>,
    next: u32,
}

#[derive(Default)]
struct Model {
    ops: Vec<ModelOp>,
    active: HashMap<usize, usize>,
}

impl Model {
    fn lapse(&mut self, i: usize, now: i64) {
        let op = &mut self.ops[i];
        if op.status == OperationStatus::Started && op.lease_until <= now {
            op.status = OperationStatus::Expired;
        }
    }

    fn visible(&self) -> BTreeSet<Uuid> {
        self.active
            .values()
            .flat_map(|&i| self.ops[i].annotations.iter().copied())
            .collect()
    }
}

fn start_req(key: usize) -> StartOperation {
    StartOperation {
        producer: None,
        lease_seconds: Some(LEASE_SECONDS),
        ..start_request("objects", 1, &format!("pivot-{key}"))
    }
}

async fn check(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(from_unix_ms(1_700_000_000_000));
    let (service, _) = common::service(dir.path(), Arc::new(clock.clone())).await;
    let mut model = Model::default();
    let ms = |c: &ManualClock| annostore_core::clock::unix_ms(c.now());

    for step in steps {
        let now = ms(&clock);
        match step {
            Step::Start(key) => {
                let op = service.start(start_req(key)).await.unwrap();
                let number = model.ops.iter().filter(|o| o.key == key).count() as u64 + 1;
                prop_assert_eq!(op.operation_number, number);
                model.ops.push(ModelOp {
                    id: op.id,
                    key,
                    number,
                    status: OperationStatus::Started,
                    lease_until: now + i64::from(LEASE_SECONDS) * 1000,
                    annotations: BTreeSet::new(),
                    next: 0,
                });
            }
            Step::Upsert { op, n, rewrite } if op < model.ops.len() => {
                model.lapse(op, now);
                let m = &mut model.ops[op];
                let mut items = Vec::new();
                let mut ids = Vec::new();
                for _ in 0..n {
                    let id = Uuid::new_v5(&m.id, &m.next.to_be_bytes());
                    m.next += 1;
                    ids.push(id);
                    items.push(json!({"id": id, "media_id": format!("media-{}", m.key),
                        "start_ms": m.next * 100, "end_ms": m.next * 100 + 50, "label": "thing"}));
                }
                if rewrite && let Some(old) = m.annotations.iter().next().copied() {
                    items.push(json!({"id": old, "media_id": format!("media-{}", m.key),
                        "start_ms": 1, "end_ms": 2, "label": "rewritten"}));
                }
                let result = service.upsert(m.id, &items).await;
                if m.status == OperationStatus::Started {
                    prop_assert!(result.is_ok(), "upsert refused: {:?}", result);
                    m.annotations.extend(ids);
                    m.lease_until = now + i64::from(LEASE_SECONDS) * 1000;
                } else {
                    prop_assert!(result.is_err(), "upsert into {:?} accepted", m.status);
                }
            }
            Step::Finish(op) if op < model.ops.len() => {
                model.lapse(op, now);
                let result = service.finish(model.ops[op].id).await;
                match model.ops[op].status {
                    OperationStatus::Started => {
                        let got = result.map_err(|e| TestCaseError::fail(e.to_string()))?;
                        model.ops[op].status = OperationStatus::Finished;
                        let key = model.ops[op].key;
                        let newer = model
                            .active
                            .get(&key)
                            .is_some_and(|&a| model.ops[a].number > model.ops[op].number);
                        if !newer {
                            model.active.insert(key, op);
                        }
                        prop_assert_eq!(got.active, !newer);
                    }
                    OperationStatus::Finished => {
                        prop_assert!(result.is_ok());
                    }
                    _ => prop_assert!(result.is_err()),
                }
            }
            Step::Cancel(op) if op < model.ops.len() => {
                model.lapse(op, now);
                let result = service.cancel(model.ops[op].id).await;
                match model.ops[op].status {
                    OperationStatus::Started | OperationStatus::Cancelled => {
                        prop_assert!(result.is_ok());
                        model.ops[op].status = OperationStatus::Cancelled;
                    }
                    _ => prop_assert!(result.is_err()),
                }
            }
            Step::Advance(s) => clock.advance_ms(i64::from(s) * 1000),
            Step::Sweep => {
                service.expire_lapsed().await.unwrap();
                for i in 0..model.ops.len() {
                    model.lapse(i, now);
                }
            }
            _ => {}
        }
        // Every operation's status is the model's.
        let now = ms(&clock);
        for i in 0..model.ops.len() {
            model.lapse(i, now);
            let got = service.operation(model.ops[i].id).await.unwrap();
            prop_assert_eq!(got.status, model.ops[i].status);
            prop_assert_eq!(got.annotation_count, model.ops[i].annotations.len() as u64);
            prop_assert_eq!(got.active, model.active.values().any(|&a| a == i));
        }
        // Search shows exactly the active runs.
        let mut seen = BTreeSet::new();
        let mut req = SearchRequest {
            limit: Some(7),
            ..Default::default()
        };
        loop {
            let page = service.search(&req).await.unwrap();
            for a in &page.annotations {
                prop_assert!(seen.insert(a.id), "annotation {} returned twice", a.id);
            }
            match page.next_page_token {
                Some(t) => req.page_token = Some(t),
                None => break,
            }
        }
        prop_assert_eq!(seen, model.visible());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 200, ..ProptestConfig::default() })]
    #[test]
    fn service_matches_the_model(steps in prop::collection::vec(step(), 1..30)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(check(steps))?;
    }
}
