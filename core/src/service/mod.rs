//! The service: every API call, engine-agnostic. It orders the writes so that the
//! invariants in ARCHITECTURE.md hold whatever engines sit behind the traits:
//! store first (the truth), then index, then cache; visibility moves only after the store
//! says so, and only once the index holds the whole run.

use crate::cache::OperationCache;
use crate::clock::Clock;
use crate::error::{Error, FieldError};
use crate::events::{EventBus, OperationEvent};
use crate::index::Index;
use crate::lifecycle;
use crate::model::{
    Annotation, AnnotationType, Operation, OperationFilter, OperationStatus, ScanOrder,
    StartOperation, TypeDefinition,
};
use crate::page;
use crate::pipeline::IndexPipeline;
use crate::queue::RetryQueue;
use crate::reconcile::Reconciler;
use crate::store::{PutType, Store, StoreError};
use crate::validate::{self, CompiledType, Limits};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use tracing::info;
use uuid::Uuid;

mod activate;
mod admin;
mod aggregate;
mod check;
mod consistency;
mod dead_letters;
mod deadline;
mod follow;
mod gc;
mod media;
mod repair;
mod search;

pub use activate::Activated;
pub use admin::{
    Consistency, ConsistencyRow, DeadLetter, EndAction, EndReport, Ended, MAX_BULK, Purged,
    StatusCounts,
};
pub use aggregate::{AggregateRequest, Cooccurrence, CooccurrenceRequest, MAX_SLACK_MS};
pub use dead_letters::MAX_DEAD_LETTERS;
pub use deadline::DEFAULT_INDEX_TIMEOUT;
pub use follow::DEFAULT_VISIBILITY_REFRESH;
pub use gc::{GcOptions, GcReport, Retention};
pub use media::{
    DEFAULT_MEDIA_LIMIT, DEFAULT_RUNS_PER_KEY, KeyRuns, MAX_KEY_SCAN, MAX_MEDIA_SCAN,
    MAX_RUNS_PER_KEY, MediaItem, MediaList, MediaRuns, media_id_of,
};
pub use repair::Reindexed;
pub use search::matches;

/// The engines behind the seams.
#[derive(Clone)]
pub struct Engines {
    pub store: Arc<dyn Store>,
    pub index: Arc<dyn Index>,
    pub queue: Arc<dyn RetryQueue>,
    pub cache: Arc<dyn OperationCache>,
    /// Operation events between the nodes that share the store ([`crate::events`]).
    pub events: Arc<dyn EventBus>,
}

pub struct Service {
    engines: Engines,
    limits: Limits,
    clock: Arc<dyn Clock>,
    /// Indexes acknowledged upserts in the background; holds the reconciler.
    pipeline: IndexPipeline,
    /// Compiled schemas by (type, version); versions are immutable, so entries never go stale.
    types: moka::sync::Cache<(String, u32), Arc<CompiledType>>,
    /// Striped locks that order activations per operation key (see `finish`).
    key_locks: Vec<tokio::sync::Mutex<()>>,
    /// This node, in the events it publishes (it skips its own when following).
    node: Uuid,
    /// Registered types, for checking searches (see `check.rs`).
    type_list: check::TypeList,
    /// Recent views, for page tokens (see `search.rs`).
    views: search::Views,
    /// Turns `knn.text` into a vector, when configured.
    text_encoder: Option<Arc<dyn crate::encode::TextEncoder>>,
    /// The deadline on every index call (`engines.index` is this, in front of the index).
    index_deadline: Arc<deadline::Deadline>,
    /// The last garbage collection pass's report (see `gc.rs`).
    last_gc: parking_lot::Mutex<Option<GcReport>>,
    /// How garbage collection passes run unless a caller says otherwise.
    gc: GcOptions,
    /// The keys that wrote to each media item, as `media.rs` last found them.
    media_keys: media::MediaKeys,
}

const KEY_STRIPES: usize = 256;

fn key_stripe(key: &crate::model::OperationKey) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % KEY_STRIPES as u64) as usize
}

/// Annotations that may be stored and not yet indexed, by default (see [`IndexPipeline`]).
pub const DEFAULT_INDEX_IN_FLIGHT: u32 = 100_000;

/// How many times a finish flushes pending index work before giving up with a 503.
const FINISH_ATTEMPTS: usize = 5;

fn pipeline(engines: &Engines, max_in_flight: u32) -> IndexPipeline {
    let reconciler = Reconciler::new(
        engines.store.clone(),
        engines.index.clone(),
        engines.queue.clone(),
    );
    IndexPipeline::new(
        reconciler,
        engines.index.clone(),
        engines.queue.clone(),
        max_in_flight,
    )
}

impl Service {
    pub fn new(mut engines: Engines, limits: Limits, clock: Arc<dyn Clock>) -> Service {
        let index_deadline = Arc::new(deadline::Deadline::new(
            engines.index.clone(),
            DEFAULT_INDEX_TIMEOUT,
        ));
        engines.index = index_deadline.clone();
        let pipeline = pipeline(&engines, DEFAULT_INDEX_IN_FLIGHT);
        Service {
            engines,
            limits,
            clock,
            pipeline,
            types: moka::sync::Cache::new(10_000),
            key_locks: (0..KEY_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            node: Uuid::now_v7(),
            type_list: Default::default(),
            views: Default::default(),
            text_encoder: None,
            index_deadline,
            last_gc: Default::default(),
            gc: GcOptions::default(),
            media_keys: media::MediaKeys::new(),
        }
    }

    /// Sets how long an index call may take before it fails as unavailable (503); a
    /// write that timed out stays pending for the reconciler. Default
    /// [`DEFAULT_INDEX_TIMEOUT`].
    pub fn with_index_timeout(self, timeout: std::time::Duration) -> Service {
        self.index_deadline.set(timeout);
        self
    }

    /// Sets the retention and the bounds of garbage collection passes.
    pub fn with_gc_options(mut self, options: GcOptions) -> Service {
        self.gc = options;
        self
    }

    /// The retention and bounds garbage collection passes use by default.
    pub fn gc_options(&self) -> GcOptions {
        self.gc
    }

    /// Sets the encoder that turns `knn.text` queries into vectors.
    pub fn with_text_encoder(mut self, encoder: Arc<dyn crate::encode::TextEncoder>) -> Service {
        self.text_encoder = Some(encoder);
        self
    }

    /// This node's id in the operation events it publishes; new with every `Service`.
    pub fn node_id(&self) -> Uuid {
        self.node
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The reconciler for every replay in this process: it keeps out of the way of
    /// the pipeline's writes (see [`IndexPipeline`]).
    pub fn reconciler(&self) -> &Reconciler {
        self.pipeline.reconciler()
    }

    pub fn engines(&self) -> &Engines {
        &self.engines
    }

    /// Sets how many annotations may be stored and not yet indexed (at least one batch).
    pub fn with_index_in_flight(mut self, max: u32) -> Service {
        self.pipeline = pipeline(&self.engines, max);
        self
    }

    /// Annotations stored and not yet indexed by this process.
    pub fn index_in_flight(&self) -> usize {
        self.pipeline.in_flight()
    }

    /// Waits until every upsert acknowledged so far is indexed (or queued for retry).
    pub async fn settle(&self) {
        self.pipeline.settle_all().await
    }

    /// Loads the active set from the store into the cache. Call before serving (and
    /// after [`Service::follow_events`], so no change falls between the two).
    pub async fn warm_up(&self) -> Result<usize, Error> {
        let active = self.engines.store.active_operations().await?;
        self.engines.cache.refresh(&active);
        Ok(active.len())
    }

    // ---- types ----

    /// Registers a type version. Returns it and whether it was new.
    pub async fn put_type(
        &self,
        name: &str,
        version: u32,
        def: TypeDefinition,
    ) -> Result<(AnnotationType, bool), Error> {
        let errors = validate::type_definition(name, version, &def, &self.limits);
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        let ty = AnnotationType {
            name: name.to_owned(),
            version,
            schema: def.schema,
            embedding_dim: def.embedding_dim,
            created_at: self.clock.now(),
        };
        match self.engines.store.put_type(ty).await? {
            PutType::Created(t) => Ok((t, true)),
            PutType::Unchanged(t) => Ok((t, false)),
        }
    }

    pub async fn list_types(&self) -> Result<Vec<AnnotationType>, Error> {
        Ok(self.engines.store.list_types().await?)
    }

    async fn compiled_type(&self, name: &str, version: u32) -> Result<Arc<CompiledType>, Error> {
        let key = (name.to_owned(), version);
        if let Some(t) = self.types.get(&key) {
            return Ok(t);
        }
        let def = self
            .engines
            .store
            .get_type(name, version)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: "annotation type",
                id: format!("{name} version {version}"),
            })?;
        let compiled = Arc::new(CompiledType::compile(def).map_err(|e| Error::Invalid(vec![e]))?);
        self.types.insert(key, compiled.clone());
        Ok(compiled)
    }

    // ---- operations ----

    pub async fn start(&self, req: StartOperation) -> Result<Operation, Error> {
        let lease = validate::start_operation(&req, &self.limits).map_err(Error::Invalid)?;
        if let Err(Error::NotFound { id, .. }) = self
            .compiled_type(&req.annotation_type, req.annotation_type_version)
            .await
        {
            return Err(Error::Invalid(vec![FieldError::new(
                "annotation_type_version",
                format!("annotation type {id} is not registered"),
            )]));
        }
        let op = self
            .engines
            .store
            .start_operation(req, lease, self.clock.now())
            .await?;
        self.engines.cache.put(std::slice::from_ref(&op));
        self.media_keys.started(&op);
        metrics::counter!("annostore_operations_started_total").increment(1);
        self.publish(OperationEvent::Started {
            operation: op.clone(),
        })
        .await;
        Ok(op)
    }

    /// The operation as it stands now: a lapsed lease is recorded as EXPIRED on access.
    pub async fn operation(&self, id: Uuid) -> Result<Operation, Error> {
        let op = match self.engines.cache.get(&id) {
            Some(op) => op,
            None => {
                let op = self
                    .engines
                    .store
                    .get_operation(id)
                    .await?
                    .ok_or_else(|| Error::operation_not_found(id))?;
                self.engines.cache.put(std::slice::from_ref(&op));
                op
            }
        };
        if lifecycle::lease_lapsed(&op, self.clock.now()) {
            return self.expire(id).await;
        }
        Ok(op)
    }

    async fn expire(&self, id: Uuid) -> Result<Operation, Error> {
        let changed = self
            .engines
            .store
            .expire_operation(id, self.clock.now())
            .await?;
        let expired = changed.is_some();
        let op = match changed {
            Some(op) => {
                metrics::counter!("annostore_operations_expired_total").increment(1);
                op
            }
            None => self
                .engines
                .store
                .get_operation(id)
                .await?
                .ok_or_else(|| Error::operation_not_found(id))?,
        };
        self.engines.cache.put(std::slice::from_ref(&op));
        if expired {
            self.publish(OperationEvent::Expired {
                operation: op.clone(),
            })
            .await;
        }
        Ok(op)
    }

    /// Expires every STARTED operation whose lease lapsed (the background sweep).
    pub async fn expire_lapsed(&self) -> Result<usize, Error> {
        let ids = self
            .engines
            .store
            .lapsed_operations(self.clock.now(), 1_000)
            .await?;
        for id in &ids {
            self.expire(*id).await?;
        }
        Ok(ids.len())
    }

    /// A page of operations matching `filter`, in `order`; lapsed leases read as
    /// EXPIRED.
    pub async fn list_operations(
        &self,
        filter: &OperationFilter,
        order: ScanOrder,
        limit: Option<u32>,
        page_token: Option<&str>,
    ) -> Result<(Vec<Operation>, Option<String>), Error> {
        let limit = self.page_size(limit)?;
        let cursor = page_token
            .map(|t| page::decode_operations(t, order))
            .transpose()?;
        let mut ops = self
            .engines
            .store
            .list_operations(filter, order, cursor, limit + 1)
            .await?;
        let next = if ops.len() > limit {
            ops.truncate(limit);
            ops.last().map(|o| page::encode_operations(o.id, order))
        } else {
            None
        };
        let now = self.clock.now();
        for op in &mut ops {
            if let Some(expired) = lifecycle::expire_if_lapsed(op, now) {
                *op = expired;
            }
        }
        Ok((ops, next))
    }

    /// Upserts a batch into a STARTED operation, all or nothing. Returns how many
    /// annotations the batch carried.
    pub async fn upsert(&self, operation_id: Uuid, items: &[Value]) -> Result<usize, Error> {
        if items.len() > self.limits.max_batch {
            return Err(Error::TooLarge(format!(
                "{} annotations in one call; at most {}",
                items.len(),
                self.limits.max_batch
            )));
        }
        let op = self.operation(operation_id).await?;
        if op.status != OperationStatus::Started {
            return Err(lifecycle::LifecycleError::NotStarted {
                id: op.id,
                status: op.status,
            }
            .into());
        }
        let ty = self
            .compiled_type(&op.annotation_type, op.annotation_type_version)
            .await?;
        let inputs =
            validate::annotation_batch(items, &ty, &self.limits).map_err(Error::Invalid)?;
        // A given id twice in one batch keeps the last version, as across batches.
        let mut by_id: HashMap<Uuid, usize> = HashMap::with_capacity(inputs.len());
        let mut annotations: Vec<Annotation> = Vec::with_capacity(inputs.len());
        for input in inputs {
            let a = Annotation::from_input(input, &op);
            match by_id.get(&a.id) {
                Some(&i) => annotations[i] = a,
                None => {
                    by_id.insert(a.id, annotations.len());
                    annotations.push(a);
                }
            }
        }
        let count = items.len();
        let ticket = self
            .pipeline
            .reserve(operation_id, annotations.len())
            .await?;
        let upserted = match self
            .engines
            .store
            .upsert_annotations(operation_id, &annotations, self.clock.now())
            .await
        {
            Ok(u) => u,
            Err(StoreError::Lifecycle(e)) => return Err(self.refused(operation_id, e).await),
            Err(e) => return Err(e.into()),
        };
        self.engines
            .cache
            .put(std::slice::from_ref(&upserted.operation));
        metrics::counter!("annostore_annotations_upserted_total").increment(count as u64);
        // The batch is durable, with its pending index work: the pipeline indexes it in
        // the background, and the retry queue and the sweep cover what that misses.
        self.pipeline.stored(ticket, upserted, annotations);
        Ok(count)
    }

    /// Finishes an operation. Its index work is settled (and what failed of it flushed)
    /// first, so the run becomes visible whole or not at all: every batch is searchable
    /// when the store records the finish.
    pub async fn finish(&self, id: Uuid) -> Result<Operation, Error> {
        let op = self.operation(id).await?;
        // Store write and visibility change happen under the key's lock, so two finishes
        // of one key reach the snapshot in the order the store applied them.
        let _key = self.key_locks[key_stripe(&op.key())].lock().await;
        for _ in 0..FINISH_ATTEMPTS {
            self.pipeline.settle(id).await;
            // What the index already serves counts as done: its pending records go
            // once the index holds it durably.
            let searchable = self.pipeline.searchable_work(id);
            match self
                .engines
                .store
                .finish_operation_with(id, self.clock.now(), &searchable)
                .await
            {
                Ok(plan) => {
                    let mut changed = vec![plan.operation.clone()];
                    changed.extend(plan.deactivated.clone());
                    self.engines.cache.put(&changed);
                    // Also when this finish changed nothing: an earlier attempt may have
                    // finished the run in the store and lost its answer before the
                    // cache heard of it. Activating is idempotent and never moves a key
                    // back, and the key's lock is held.
                    if plan.operation.active {
                        self.engines.cache.activate(&plan.operation);
                    } else if let Some(newer) = plan.active_run.as_ref().filter(|r| r.active) {
                        // A newer run superseded this one; this node may not have heard
                        // (its finish applied, its answer lost): after this answer no
                        // search may show an older run of the key.
                        self.engines.cache.put(std::slice::from_ref(newer));
                        self.engines.cache.activate(newer);
                    }
                    if plan.changed {
                        metrics::counter!("annostore_operations_finished_total").increment(1);
                        info!(operation = %id, active = plan.operation.active, "operation finished");
                        // Published under the key's lock: one node's events of a key
                        // leave in store order.
                        self.publish(if plan.operation.active {
                            OperationEvent::Activated {
                                operation: plan.operation.clone(),
                                deactivated: plan.deactivated.clone().map(Box::new),
                            }
                        } else {
                            OperationEvent::Finished {
                                operation: plan.operation.clone(),
                            }
                        })
                        .await;
                    }
                    return Ok(plan.operation);
                }
                Err(StoreError::PendingIndexWork(_)) => {
                    self.reconciler().flush_operation(id).await?;
                }
                Err(StoreError::Lifecycle(e)) => return Err(self.refused(id, e).await),
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Unavailable {
            what: "index",
            detail: format!("operation {id} keeps receiving index work; retry the finish"),
        })
    }

    pub async fn cancel(&self, id: Uuid) -> Result<Operation, Error> {
        self.operation(id).await?;
        match self
            .engines
            .store
            .cancel_operation(id, self.clock.now())
            .await
        {
            Ok(op) => {
                self.engines.cache.put(std::slice::from_ref(&op));
                self.publish(OperationEvent::Cancelled {
                    operation: op.clone(),
                })
                .await;
                Ok(op)
            }
            Err(StoreError::Lifecycle(e)) => Err(self.refused(id, e).await),
            Err(e) => Err(e.into()),
        }
    }

    /// The answer to a request the store refused by the lifecycle rules. The store may
    /// have recorded an expiry while refusing, so the cache is refreshed from it first.
    async fn refused(&self, id: Uuid, e: lifecycle::LifecycleError) -> Error {
        match self.expire(id).await {
            Ok(_) => e.into(),
            Err(refresh) => refresh,
        }
    }

    fn page_size(&self, limit: Option<u32>) -> Result<usize, Error> {
        match limit {
            None => Ok(self.limits.default_page_size as usize),
            Some(0) => Err(Error::invalid("limit", "must be at least 1")),
            Some(n) if n > self.limits.max_page_size => Err(Error::invalid(
                "limit",
                format!("at most {}", self.limits.max_page_size),
            )),
            Some(n) => Ok(n as usize),
        }
    }
}
