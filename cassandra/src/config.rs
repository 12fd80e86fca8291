//! `CassandraConfig`: where the cluster is and how the keyspace is laid out.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Connection and keyspace settings of the Cassandra/ScyllaDB store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CassandraConfig {
    /// `host:port` of one or more nodes; the driver discovers the rest.
    pub contact_points: Vec<String>,
    /// Keyspace of every table (letters, digits and `_`).
    pub keyspace: String,
    /// Replication of the keyspace, used by `apply_schema` only.
    pub replication: Replication,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Prefer this datacenter's nodes (token-aware within it).
    pub local_datacenter: Option<String>,
    /// Rows per page of the scans.
    pub page_size: i32,
}

impl Default for CassandraConfig {
    fn default() -> Self {
        CassandraConfig {
            contact_points: vec!["127.0.0.1:9042".into()],
            keyspace: "annostore".into(),
            replication: Replication::default(),
            username: None,
            password: None,
            local_datacenter: None,
            page_size: 1_000,
        }
    }
}

/// Keyspace replication: a CQL map literal as a string
/// (`{'class': 'SimpleStrategy', 'replication_factor': 1}`), or the same as a map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Replication {
    Cql(String),
    Map(BTreeMap<String, serde_json::Value>),
}

impl Default for Replication {
    fn default() -> Self {
        Replication::Cql("{'class': 'SimpleStrategy', 'replication_factor': 1}".into())
    }
}

impl Replication {
    /// The CQL map literal.
    pub fn to_cql(&self) -> String {
        match self {
            Replication::Cql(s) => s.clone(),
            Replication::Map(m) => {
                let items: Vec<String> = m
                    .iter()
                    .map(|(k, v)| {
                        let v = match v {
                            serde_json::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        format!("'{}': '{}'", k.replace('\'', "''"), v.replace('\'', "''"))
                    })
                    .collect();
                format!("{{{}}}", items.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_map_replication() {
        let c: CassandraConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, CassandraConfig::default());
        assert_eq!(c.contact_points, vec!["127.0.0.1:9042".to_string()]);
        let c: CassandraConfig = serde_json::from_str(
            r#"{"replication": {"class": "NetworkTopologyStrategy", "dc1": 3}}"#,
        )
        .unwrap();
        assert_eq!(
            c.replication.to_cql(),
            "{'class': 'NetworkTopologyStrategy', 'dc1': '3'}"
        );
        assert!(serde_json::from_str::<CassandraConfig>(r#"{"nope": 1}"#).is_err());
    }
}
