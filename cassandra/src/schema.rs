//! The CQL schema (`schema/cql/*.cql` at the repository root) and `apply_schema`.
//!
//! Every statement can run any number of times: tables are `CREATE ... IF NOT EXISTS`,
//! and a column added to an existing table (`ALTER TABLE ks.t ADD c type`, which
//! neither Cassandra before 4.1 nor ScyllaDB can make conditional) is added only when
//! `system_schema.columns` does not list it yet.

use crate::config::CassandraConfig;
use crate::session::{connect_session, io};
use annostore_core::store::{StoreError, StoreResult};

/// How long `apply_schema` waits for every node to report the new schema.
const SCHEMA_AGREEMENT: std::time::Duration = std::time::Duration::from_secs(30);

/// The DDL files in apply order.
const FILES: [(&str, &str); 6] = [
    (
        "001_keyspace.cql",
        include_str!("../../schema/cql/001_keyspace.cql"),
    ),
    (
        "010_types.cql",
        include_str!("../../schema/cql/010_types.cql"),
    ),
    (
        "020_operations.cql",
        include_str!("../../schema/cql/020_operations.cql"),
    ),
    (
        "030_annotations.cql",
        include_str!("../../schema/cql/030_annotations.cql"),
    ),
    (
        "040_pending.cql",
        include_str!("../../schema/cql/040_pending.cql"),
    ),
    (
        "050_activations.cql",
        include_str!("../../schema/cql/050_activations.cql"),
    ),
];

/// A keyspace name safe to paste into CQL.
pub(crate) fn check_keyspace(name: &str) -> StoreResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 48
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Io(format!("invalid keyspace name {name:?}")))
    }
}

/// Every statement of the schema with the keyspace and replication filled in.
pub fn statements(config: &CassandraConfig) -> StoreResult<Vec<String>> {
    check_keyspace(&config.keyspace)?;
    let replication = config.replication.to_cql();
    let mut out = Vec::new();
    for (_, text) in FILES {
        let body: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        for stmt in body.split(';') {
            let stmt = stmt.trim();
            if stmt.is_empty() {
                continue;
            }
            out.push(
                stmt.replace("{keyspace}", &config.keyspace)
                    .replace("{replication}", &replication),
            );
        }
    }
    Ok(out)
}

/// Creates the keyspace and tables that do not exist yet (`IF NOT EXISTS`), so it can
/// run any number of times. `annostore schema apply` calls this.
pub async fn apply_schema(config: &CassandraConfig) -> Result<(), StoreError> {
    let stmts = statements(config)?;
    let session = connect_session(config).await?;
    // On a multi-node cluster each table needs its keyspace on every node first:
    // wait for agreement after every statement, unless the server cannot tell.
    let mut await_agreement = true;
    for stmt in stmts {
        if let Some((table, column)) = added_column(&stmt)
            && has_column(&session, &config.keyspace, table, column).await?
        {
            tracing::debug!(%stmt, "column exists already");
            continue;
        }
        tracing::debug!(%stmt, "applying schema");
        session.query_unpaged(stmt.as_str(), ()).await.map_err(io)?;
        if await_agreement {
            match tokio::time::timeout(SCHEMA_AGREEMENT, session.await_schema_agreement()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "the server cannot confirm schema agreement");
                    await_agreement = false;
                }
                Err(_) => {
                    return Err(StoreError::Io(format!(
                        "schema agreement not reached within {SCHEMA_AGREEMENT:?}"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// `(table, column)` of an `ALTER TABLE <keyspace>.<table> ADD <column> <type>`.
fn added_column(stmt: &str) -> Option<(&str, &str)> {
    let words: Vec<&str> = stmt.split_whitespace().collect();
    match words.as_slice() {
        [alter, table, name, add, column, _ty]
            if alter.eq_ignore_ascii_case("ALTER")
                && table.eq_ignore_ascii_case("TABLE")
                && add.eq_ignore_ascii_case("ADD") =>
        {
            let (_, table) = name.split_once('.')?;
            Some((table, column))
        }
        _ => None,
    }
}

/// Whether `system_schema.columns` lists the column. The whole table is read (one row
/// per column of every table: small) and matched here, as the in-process test server
/// answers no rows to a `WHERE keyspace_name = ?` on it.
async fn has_column(
    session: &scylla::client::session::Session,
    keyspace: &str,
    table: &str,
    column: &str,
) -> StoreResult<bool> {
    use futures::TryStreamExt;
    use scylla::value::{CqlValue, Row};
    let text = |v: Option<&Option<CqlValue>>| match v {
        Some(Some(CqlValue::Text(s))) | Some(Some(CqlValue::Ascii(s))) => Some(s.clone()),
        _ => None,
    };
    let mut rows = session
        .query_iter(
            "SELECT keyspace_name, table_name, column_name FROM system_schema.columns",
            (),
        )
        .await
        .map_err(io)?
        .rows_stream::<Row>()
        .map_err(io)?;
    while let Some(row) = rows.try_next().await.map_err(io)? {
        let c = &row.columns;
        if text(c.first()).as_deref() == Some(keyspace)
            && text(c.get(1)).as_deref() == Some(table)
            && text(c.get(2)).as_deref() == Some(column)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_and_comments_dropped() {
        let c = CassandraConfig {
            keyspace: "ks_1".into(),
            ..Default::default()
        };
        let s = statements(&c).unwrap();
        assert!(s[0].starts_with("CREATE KEYSPACE IF NOT EXISTS ks_1 WITH replication = {'class'"));
        assert!(
            s.iter()
                .all(|s| !s.contains('{') || s.contains("replication"))
        );
        assert!(s.iter().all(|s| !s.contains("--")));
        assert!(
            s.iter()
                .skip(1)
                .all(|s| s.contains("IF NOT EXISTS ks_1.") || added_column(s).is_some())
        );
        assert!(s.contains(&"ALTER TABLE ks_1.key_state ADD active_sequence bigint".to_string()));
        let bad = CassandraConfig {
            keyspace: "a; DROP".into(),
            ..Default::default()
        };
        assert!(statements(&bad).is_err());
    }

    #[test]
    fn added_columns_are_recognised() {
        assert_eq!(
            added_column("ALTER TABLE ks.key_state ADD active_sequence bigint"),
            Some(("key_state", "active_sequence"))
        );
        assert_eq!(
            added_column("alter  table ks.t\n add c int"),
            Some(("t", "c"))
        );
        assert_eq!(added_column("ALTER TABLE ks.t DROP c"), None);
        assert_eq!(
            added_column("CREATE TABLE IF NOT EXISTS ks.t (a int)"),
            None
        );
    }
}
