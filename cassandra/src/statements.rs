//! Every statement of the store, prepared once at connect.
//!
//! Plain writes and reads are marked idempotent (the driver may retry them);
//! conditional writes (`IF ...`) are not: a retried compare-and-set could report a
//! write of its own first attempt as a conflict.

use crate::session::Stmt;
use annostore_core::store::StoreResult;
use scylla::client::session::Session;

pub(crate) struct Statements {
    // types
    pub type_insert_if_absent: Stmt,
    pub type_get: Stmt,
    pub type_scan: Stmt,
    // operations
    pub op_get: Stmt,
    pub op_insert: Stmt,
    pub op_cas: Stmt,
    pub key_get: Stmt,
    pub key_first: Stmt,
    pub key_advance: Stmt,
    pub key_move_active: Stmt,
    pub key_scan_active: Stmt,
    pub activation_insert: Stmt,
    pub activations_get: Stmt,
    pub key_ops_insert: Stmt,
    pub key_ops_get: Stmt,
    pub day_ops_insert: Stmt,
    pub day_ops_get: Stmt,
    pub days_insert: Stmt,
    pub days_get: Stmt,
    pub started_insert: Stmt,
    pub started_delete: Stmt,
    pub started_get: Stmt,
    // annotations
    pub ann_insert: Stmt,
    pub ann_get: Stmt,
    pub ann_delete: Stmt,
    pub owner_claim: Stmt,
    pub owner_get: Stmt,
    pub owner_release: Stmt,
    pub op_ann_insert: Stmt,
    pub op_ann_first: Stmt,
    pub op_ann_after: Stmt,
    pub op_ann_delete: Stmt,
    // pending index work
    pub pending_op_insert: Stmt,
    pub pending_op_get: Stmt,
    pub pending_op_delete: Stmt,
    pub pending_hour_insert: Stmt,
    pub pending_hour_get: Stmt,
    pub pending_hour_delete: Stmt,
    pub hours_insert: Stmt,
    pub hours_get: Stmt,
    pub hours_delete: Stmt,
}

impl Statements {
    /// True when the server counts the markers of conditions and ranges (a real
    /// Cassandra or ScyllaDB); false on a test server that ignores them.
    pub fn conditions_honoured(&self) -> bool {
        [
            &self.op_cas,
            &self.key_advance,
            &self.key_move_active,
            &self.owner_release,
            &self.op_ann_after,
        ]
        .iter()
        .all(|s| s.honoured())
    }

    pub async fn prepare(s: &Session, ks: &str, page: i32) -> StoreResult<Statements> {
        // (cql, binds, idempotent)
        macro_rules! p {
            ($cql:expr, $binds:expr, $idem:expr) => {
                Stmt::prepare(s, &format!($cql, ks = ks), $binds, $idem, page).await?
            };
        }
        let key = "annotation_type = ? AND type_version = ? AND pivot_id = ?";
        Ok(Statements {
            type_insert_if_absent: p!(
                "INSERT INTO {ks}.annotation_types (name, version, body) VALUES (?, ?, ?) IF NOT EXISTS",
                3,
                false
            ),
            type_get: p!(
                "SELECT body FROM {ks}.annotation_types WHERE name = ? AND version = ?",
                2,
                true
            ),
            type_scan: p!("SELECT body FROM {ks}.annotation_types", 0, true),
            op_get: p!("SELECT body FROM {ks}.operations WHERE id = ?", 1, true),
            // Conditional like every later write of the row: mixing plain and
            // conditional writes on one row lets clock skew reorder them.
            op_insert: p!(
                "INSERT INTO {ks}.operations (id, version, body) VALUES (?, ?, ?) IF NOT EXISTS",
                3,
                false
            ),
            op_cas: p!(
                "UPDATE {ks}.operations SET version = ?, body = ? WHERE id = ? IF version = ?",
                4,
                false
            ),
            key_get: Stmt::prepare(
                s,
                &format!(
                    "SELECT last_number, active_id, active_sequence FROM {ks}.key_state WHERE {key}"
                ),
                3,
                true,
                page,
            )
            .await?,
            key_first: p!(
                "INSERT INTO {ks}.key_state (annotation_type, type_version, pivot_id, last_number) VALUES (?, ?, ?, ?) IF NOT EXISTS",
                4,
                false
            ),
            key_advance: Stmt::prepare(
                s,
                &format!(
                    "UPDATE {ks}.key_state SET last_number = ? WHERE {key} IF last_number = ?"
                ),
                5,
                false,
                page,
            )
            .await?,
            key_move_active: Stmt::prepare(
                s,
                &format!(
                    "UPDATE {ks}.key_state SET active_id = ?, active_sequence = ? WHERE {key} IF active_id = ? AND active_sequence = ?"
                ),
                7,
                false,
                page,
            )
            .await?,
            key_scan_active: p!("SELECT active_id FROM {ks}.key_state", 0, true),
            activation_insert: p!(
                "INSERT INTO {ks}.activations (annotation_type, type_version, pivot_id, sequence, body) VALUES (?, ?, ?, ?, ?)",
                5,
                true
            ),
            activations_get: Stmt::prepare(
                s,
                &format!("SELECT body FROM {ks}.activations WHERE {key}"),
                3,
                true,
                page,
            )
            .await?,
            key_ops_insert: p!(
                "INSERT INTO {ks}.key_operations (annotation_type, type_version, pivot_id, operation_number, operation_id) VALUES (?, ?, ?, ?, ?)",
                5,
                true
            ),
            key_ops_get: Stmt::prepare(
                s,
                &format!(
                    "SELECT operation_number, operation_id FROM {ks}.key_operations WHERE {key}"
                ),
                3,
                true,
                page,
            )
            .await?,
            day_ops_insert: p!(
                "INSERT INTO {ks}.operations_by_day (day, operation_id) VALUES (?, ?)",
                2,
                true
            ),
            day_ops_get: p!(
                "SELECT operation_id FROM {ks}.operations_by_day WHERE day = ?",
                1,
                true
            ),
            days_insert: p!(
                "INSERT INTO {ks}.operation_days (shard, day) VALUES (?, ?)",
                2,
                true
            ),
            days_get: p!(
                "SELECT day FROM {ks}.operation_days WHERE shard = ?",
                1,
                true
            ),
            started_insert: p!(
                "INSERT INTO {ks}.started_operations (shard, operation_id, lease_expires_at) VALUES (?, ?, ?)",
                3,
                true
            ),
            started_delete: p!(
                "DELETE FROM {ks}.started_operations WHERE shard = ? AND operation_id = ?",
                2,
                true
            ),
            started_get: p!(
                "SELECT operation_id, lease_expires_at FROM {ks}.started_operations WHERE shard = ?",
                1,
                true
            ),
            ann_insert: p!(
                "INSERT INTO {ks}.annotations (id, operation_id, body) VALUES (?, ?, ?)",
                3,
                true
            ),
            ann_get: p!(
                "SELECT operation_id, body FROM {ks}.annotations WHERE id = ?",
                1,
                true
            ),
            ann_delete: p!("DELETE FROM {ks}.annotations WHERE id = ?", 1, true),
            owner_claim: p!(
                "INSERT INTO {ks}.annotation_owners (id, operation_id) VALUES (?, ?) IF NOT EXISTS",
                2,
                false
            ),
            owner_get: p!(
                "SELECT operation_id FROM {ks}.annotation_owners WHERE id = ?",
                1,
                true
            ),
            owner_release: p!(
                "DELETE FROM {ks}.annotation_owners WHERE id = ? IF operation_id = ?",
                2,
                false
            ),
            op_ann_insert: p!(
                "INSERT INTO {ks}.operation_annotations (operation_id, bucket, annotation_key) VALUES (?, ?, ?)",
                3,
                true
            ),
            op_ann_first: p!(
                "SELECT annotation_key FROM {ks}.operation_annotations WHERE operation_id = ? AND bucket = ?",
                2,
                true
            ),
            op_ann_after: p!(
                "SELECT annotation_key FROM {ks}.operation_annotations WHERE operation_id = ? AND bucket = ? AND annotation_key > ?",
                3,
                true
            ),
            op_ann_delete: p!(
                "DELETE FROM {ks}.operation_annotations WHERE operation_id = ? AND bucket = ? AND annotation_key = ?",
                3,
                true
            ),
            pending_op_insert: p!(
                "INSERT INTO {ks}.pending_by_operation (operation_id, work_id, body) VALUES (?, ?, ?)",
                3,
                true
            ),
            pending_op_get: p!(
                "SELECT work_id, body FROM {ks}.pending_by_operation WHERE operation_id = ?",
                1,
                true
            ),
            pending_op_delete: p!(
                "DELETE FROM {ks}.pending_by_operation WHERE operation_id = ? AND work_id = ?",
                2,
                true
            ),
            pending_hour_insert: p!(
                "INSERT INTO {ks}.pending_by_hour (hour, work_id, body) VALUES (?, ?, ?)",
                3,
                true
            ),
            pending_hour_get: p!(
                "SELECT work_id, body FROM {ks}.pending_by_hour WHERE hour = ?",
                1,
                true
            ),
            pending_hour_delete: p!(
                "DELETE FROM {ks}.pending_by_hour WHERE hour = ? AND work_id = ?",
                2,
                true
            ),
            hours_insert: p!(
                "INSERT INTO {ks}.pending_hours (shard, hour) VALUES (?, ?)",
                2,
                true
            ),
            hours_get: p!(
                "SELECT hour FROM {ks}.pending_hours WHERE shard = ?",
                1,
                true
            ),
            hours_delete: p!(
                "DELETE FROM {ks}.pending_hours WHERE shard = ? AND hour = ?",
                2,
                true
            ),
        })
    }
}
