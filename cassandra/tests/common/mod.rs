//! Test harness: a fresh keyspace per test on the in-process kassandra
//! (`annostore_cassandra::testkit`), and the gate for a real cluster.
//!
//! kassandra runs queries of one connection at a time behind a mutex. It IGNORES LWT
//! conditions (`IF NOT EXISTS`, `IF col = ?`), clustering ranges, `ORDER BY` and TTL:
//! tests that need those run only against a real cluster named by
//! `ANNOSTORE_TEST_CASSANDRA=host:port`.

#![allow(dead_code)]

pub use annostore_cassandra::testkit::kassandra;
use annostore_cassandra::{CassandraConfig, CassandraStore, apply_schema};
use std::sync::atomic::{AtomicU32, Ordering};

/// A config for a fresh keyspace on kassandra.
pub fn fresh_config(prefix: &str) -> CassandraConfig {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    CassandraConfig {
        contact_points: vec![kassandra().to_string()],
        keyspace: format!("{prefix}_{}_{n}", std::process::id()),
        ..Default::default()
    }
}

/// A store on a fresh keyspace of kassandra, schema applied.
pub async fn fresh_store(prefix: &str) -> CassandraStore {
    let config = fresh_config(prefix);
    apply_schema(&config).await.expect("apply schema");
    CassandraStore::connect(&config).await.expect("connect")
}

/// A config for a fresh keyspace on the real cluster named by
/// `ANNOSTORE_TEST_CASSANDRA=host:port`, or None (with a loud banner) when unset.
pub fn real_cluster(prefix: &str, test: &str) -> Option<CassandraConfig> {
    match std::env::var("ANNOSTORE_TEST_CASSANDRA") {
        Ok(addr) if !addr.trim().is_empty() => {
            let mut c = fresh_config(prefix);
            c.contact_points = addr.split(',').map(|s| s.trim().to_string()).collect();
            Some(c)
        }
        _ => {
            eprintln!(
                "\n==================== SKIPPED: {test} ====================\n\
                 needs a real Cassandra/ScyllaDB (LWT conditions, which kassandra\n\
                 ignores): set ANNOSTORE_TEST_CASSANDRA=host:port to run it.\n\
                 ========================================================\n"
            );
            if std::env::var("ANNOSTORE_REQUIRE_CASSANDRA").as_deref() == Ok("1") {
                panic!("ANNOSTORE_REQUIRE_CASSANDRA=1 but ANNOSTORE_TEST_CASSANDRA is unset");
            }
            None
        }
    }
}
