//! The driver session: connection settings, prepared statements that know whether the
//! server honours their conditions, and reading `[applied]` from a conditional write.

use crate::config::CassandraConfig;
use annostore_core::store::{StoreError, StoreResult};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::response::query_result::QueryResult;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row};
use std::fmt::Display;

/// One bound value (`None` binds null).
pub(crate) type V = Option<CqlValue>;

pub(crate) fn uuid(u: uuid::Uuid) -> V {
    Some(CqlValue::Uuid(u))
}

pub(crate) fn text(s: impl Into<String>) -> V {
    Some(CqlValue::Text(s.into()))
}

pub(crate) fn big(v: i64) -> V {
    Some(CqlValue::BigInt(v))
}

pub(crate) fn int(v: i32) -> V {
    Some(CqlValue::Int(v))
}

pub(crate) fn blob(b: &[u8]) -> V {
    Some(CqlValue::Blob(b.to_vec()))
}

/// Any driver error, as the store reports it.
pub(crate) fn io(e: impl Display) -> StoreError {
    StoreError::Io(e.to_string())
}

/// A session to the cluster with token-aware load balancing (in the local datacenter
/// when one is configured). Schema agreement is awaited explicitly by `apply_schema`
/// only, so in-memory test servers without `system.peers` work too.
pub(crate) async fn connect_session(config: &CassandraConfig) -> StoreResult<Session> {
    let mut policy = DefaultPolicy::builder().token_aware(true);
    if let Some(dc) = &config.local_datacenter {
        policy = policy.prefer_datacenter(dc.clone());
    }
    let profile = ExecutionProfile::builder()
        .load_balancing_policy(policy.build())
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(&config.contact_points)
        .default_execution_profile_handle(profile.into_handle())
        .auto_await_schema_agreement(false);
    if let (Some(user), Some(password)) = (&config.username, &config.password) {
        builder = builder.user(user, password);
    }
    builder.build().await.map_err(io)
}

/// A prepared statement and how many of its trailing bind values the server ignores.
///
/// Conditions (`IF version = ?`) and clustering ranges (`AND k > ?`) always come last
/// in our statements. Cassandra and ScyllaDB count their markers; a test server that
/// ignores them (kassandra) prepares fewer variables, and the values for them are
/// dropped when binding: on such a server conditions always apply, which the store
/// logs once at connect (`Statements::conditions_honoured`).
pub(crate) struct Stmt {
    pub(crate) prepared: PreparedStatement,
    ignored_tail: usize,
}

impl Stmt {
    pub(crate) async fn prepare(
        session: &Session,
        cql: &str,
        binds: usize,
        idempotent: bool,
        page_size: i32,
    ) -> StoreResult<Stmt> {
        let mut prepared = session
            .prepare(cql)
            .await
            .map_err(|e| StoreError::Io(format!("cannot prepare `{cql}`: {e}")))?;
        prepared.set_is_idempotent(idempotent);
        prepared.set_page_size(page_size.max(1));
        let declared = prepared.get_variable_col_specs().len();
        if declared > binds {
            return Err(StoreError::Io(format!(
                "`{cql}` has {declared} bind markers, expected {binds}"
            )));
        }
        Ok(Stmt {
            prepared,
            ignored_tail: binds - declared,
        })
    }

    /// True when the server counted every marker (conditions and ranges are real).
    pub(crate) fn honoured(&self) -> bool {
        self.ignored_tail == 0
    }

    /// The values to send: all of them, less those the server ignores.
    pub(crate) fn bind(&self, mut values: Vec<V>) -> Vec<V> {
        let keep = values.len().saturating_sub(self.ignored_tail);
        values.truncate(keep);
        values
    }

    pub(crate) async fn run(&self, s: &Session, values: Vec<V>) -> StoreResult<QueryResult> {
        s.execute_unpaged(&self.prepared, self.bind(values))
            .await
            .map_err(io)
    }

    /// The first `max` rows (the rest of the partition is not read), or every row when
    /// `max` is None: callers pass None unless the server honours clustering order.
    pub(crate) async fn rows_up_to(
        &self,
        s: &Session,
        values: Vec<V>,
        max: Option<usize>,
    ) -> StoreResult<Vec<Row>> {
        use futures::{StreamExt, TryStreamExt};
        let Some(max) = max else {
            return self.rows(s, values).await;
        };
        let pager = s
            .execute_iter(self.prepared.clone(), self.bind(values))
            .await
            .map_err(io)?;
        pager
            .rows_stream::<Row>()
            .map_err(io)?
            .take(max)
            .try_collect::<Vec<Row>>()
            .await
            .map_err(io)
    }

    /// Every row (paged through), as generic rows.
    pub(crate) async fn rows(&self, s: &Session, values: Vec<V>) -> StoreResult<Vec<Row>> {
        use futures::TryStreamExt;
        let pager = s
            .execute_iter(self.prepared.clone(), self.bind(values))
            .await
            .map_err(io)?;
        pager
            .rows_stream::<Row>()
            .map_err(io)?
            .try_collect::<Vec<Row>>()
            .await
            .map_err(io)
    }
}

/// Whether a conditional write applied. Cassandra answers a row whose first column is
/// `[applied]`; a server that ignores conditions answers no rows, which means it wrote.
pub(crate) fn applied(result: QueryResult) -> StoreResult<bool> {
    if !result.is_rows() {
        return Ok(true);
    }
    let rows = result.into_rows_result().map_err(io)?;
    match rows.maybe_first_row::<Row>().map_err(io)? {
        Some(row) => match row.columns.first() {
            Some(Some(CqlValue::Boolean(b))) => Ok(*b),
            other => Err(StoreError::Corrupt(format!(
                "conditional write answered {other:?} for [applied]"
            ))),
        },
        None => Ok(true),
    }
}

// ---- reading generic rows ----

pub(crate) fn col(row: &Row, i: usize) -> Option<&CqlValue> {
    row.columns.get(i).and_then(|c| c.as_ref())
}

pub(crate) fn uuid_at(row: &Row, i: usize) -> StoreResult<uuid::Uuid> {
    match col(row, i) {
        Some(CqlValue::Uuid(u)) => Ok(*u),
        Some(CqlValue::Timeuuid(u)) => Ok((*u).into()),
        other => Err(StoreError::Corrupt(format!(
            "expected a uuid, got {other:?}"
        ))),
    }
}

pub(crate) fn opt_uuid_at(row: &Row, i: usize) -> StoreResult<Option<uuid::Uuid>> {
    match col(row, i) {
        None => Ok(None),
        Some(_) => uuid_at(row, i).map(Some),
    }
}

pub(crate) fn text_at(row: &Row, i: usize) -> StoreResult<&str> {
    match col(row, i) {
        Some(CqlValue::Text(s)) | Some(CqlValue::Ascii(s)) => Ok(s),
        other => Err(StoreError::Corrupt(format!("expected text, got {other:?}"))),
    }
}

pub(crate) fn i64_at(row: &Row, i: usize) -> StoreResult<i64> {
    match col(row, i) {
        Some(CqlValue::BigInt(v)) => Ok(*v),
        Some(CqlValue::Int(v)) => Ok(i64::from(*v)),
        other => Err(StoreError::Corrupt(format!(
            "expected a bigint, got {other:?}"
        ))),
    }
}

pub(crate) fn opt_i64_at(row: &Row, i: usize) -> StoreResult<Option<i64>> {
    match col(row, i) {
        None => Ok(None),
        Some(_) => i64_at(row, i).map(Some),
    }
}

pub(crate) fn blob_at(row: &Row, i: usize) -> StoreResult<&[u8]> {
    match col(row, i) {
        Some(CqlValue::Blob(b)) => Ok(b),
        other => Err(StoreError::Corrupt(format!(
            "expected a blob, got {other:?}"
        ))),
    }
}
