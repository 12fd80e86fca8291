//! Test support: the rows of one key in memory, with hooks that let "another node"
//! write just before one of our conditional writes, and whole moves of other nodes.

use super::pointer::*;
use annostore_core::clock::from_unix_ms;
use annostore_core::lifecycle;
use annostore_core::model::{Activation, ActivationReason, Operation, StartOperation};
use annostore_core::store::StoreResult;
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use time::OffsetDateTime;
use uuid::Uuid;

pub type CutIn = Box<dyn FnOnce(&mut Memory) + Send>;

pub struct Memory {
    pub pointer: PointerAt,
    pub ops: HashMap<Uuid, Operation>,
    pub history: BTreeMap<u64, Activation>,
    /// Run in order, one before each conditional write of ours.
    pub before_cas: Vec<CutIn>,
    pub failed_cas: u32,
}

impl Memory {
    pub fn new(ops: &[&Operation]) -> Memory {
        Memory {
            pointer: PointerAt::default(),
            ops: ops.iter().map(|o| (o.id, (*o).clone())).collect(),
            history: BTreeMap::new(),
            before_cas: Vec::new(),
            failed_cas: 0,
        }
    }

    fn cut_in(&mut self) {
        if !self.before_cas.is_empty() {
            let f = self.before_cas.remove(0);
            f(self);
        }
    }

    pub fn op(&self, id: Uuid) -> &Operation {
        &self.ops[&id]
    }

    /// Another node's whole move of the pointer to `id` (all five steps).
    pub fn take(&mut self, id: Uuid, reason: ActivationReason) {
        let prev = self.pointer.id.and_then(|p| self.ops.get(&p).cloned());
        let at = Pointer {
            at: self.pointer,
            run: prev.clone(),
        };
        let seq = at.next_sequence();
        let now = from_unix_ms(100 * seq as i64);
        let run = numbered(&self.ops[&id], seq, now);
        self.ops.insert(id, run.clone());
        self.pointer = PointerAt {
            id: Some(id),
            sequence: Some(seq),
        };
        let why = Why {
            reason,
            actor: None,
        };
        self.history
            .insert(seq, record(&run, prev.as_ref(), &why, now));
        if let Some(d) = prev.and_then(|p| deactivated(&p, p.activation, id, now)) {
            self.ops.insert(d.id, d);
        }
    }

    /// Another node's touch of `id`'s row (step 2 of a move), without the rest.
    pub fn mark(&mut self, id: Uuid, seq: u64) {
        let marked = numbered(&self.ops[&id], seq, from_unix_ms(7));
        self.ops.insert(id, marked);
    }
}

#[async_trait]
impl OpCell for Memory {
    async fn load(&mut self, id: Uuid) -> StoreResult<Option<Operation>> {
        Ok(self.ops.get(&id).cloned())
    }

    async fn write_op(&mut self, op: &Operation, expect_version: u64) -> StoreResult<bool> {
        self.cut_in();
        let cur = self.ops.get(&op.id).map(|o| o.version);
        if cur == Some(expect_version) {
            self.ops.insert(op.id, op.clone());
            Ok(true)
        } else {
            self.failed_cas += 1;
            Ok(false)
        }
    }
}

#[async_trait]
impl PointerCell for Memory {
    async fn current(&mut self) -> StoreResult<Pointer> {
        Ok(Pointer {
            at: self.pointer,
            run: self.pointer.id.and_then(|p| self.ops.get(&p).cloned()),
        })
    }

    async fn move_pointer(&mut self, from: PointerAt, to: PointerAt) -> StoreResult<bool> {
        self.cut_in();
        if self.pointer == from {
            self.pointer = to;
            Ok(true)
        } else {
            self.failed_cas += 1;
            Ok(false)
        }
    }

    async fn record(&mut self, activation: &Activation) -> StoreResult<()> {
        self.history.insert(activation.sequence, activation.clone());
        Ok(())
    }
}

pub fn started(number: u64) -> Operation {
    let req = StartOperation {
        producer: Some(format!("producer-{number}")),
        annotation_type: "objects".into(),
        annotation_type_version: 1,
        pivot_id: "p".into(),
        lease_seconds: None,
        metadata: None,
    };
    lifecycle::start(
        &req,
        Uuid::now_v7(),
        number.checked_sub(1),
        60,
        from_unix_ms(0),
    )
}

/// FINISHED and marked active in its own row (activation 1), as a finisher that read
/// an empty pointer leaves it before moving the pointer.
pub fn finishing(number: u64) -> Operation {
    lifecycle::finish(&started(number), None, from_unix_ms(1_000))
        .unwrap()
        .operation
}

/// FINISHED and never active (for other nodes' moves to take).
pub fn finished(number: u64) -> Operation {
    Operation {
        active: false,
        activation: 0,
        ..finishing(number)
    }
}

pub fn finish_why() -> Why {
    Why {
        reason: ActivationReason::Finish,
        actor: None,
    }
}

pub fn now() -> OffsetDateTime {
    from_unix_ms(50_000)
}

pub fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}
