//! Test harness: an in-process kassandra (an in-memory CQL server) on a free loopback
//! port, a fresh keyspace per test, and the gate for a real cluster.
//!
//! kassandra runs queries of one connection at a time behind a mutex. It IGNORES LWT
//! conditions (`IF NOT EXISTS`, `IF col = ?`), clustering ranges, `ORDER BY` and TTL:
//! tests that need those run only against a real cluster named by
//! `ANNOSTORE_TEST_CASSANDRA=host:port`.

#![allow(dead_code)]

use annostore_cassandra::{CassandraConfig, CassandraStore, apply_schema};
use futures::{SinkExt, StreamExt};
use kassandra::KassandraSession;
use kassandra::error::DbError;
use kassandra::frame::request::Request;
use kassandra::frame::response::Response;
use kassandra::frame::response::error::Error;
use kassandra::frame::{request_stream, response_sink};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// The address of this test binary's kassandra, started on first use.
pub fn kassandra() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        std::thread::Builder::new()
            .name("kassandra".into())
            .spawn(move || serve(listener))
            .expect("spawn kassandra thread");
        addr
    })
}

fn serve(listener: std::net::TcpListener) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("kassandra runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        let db = Arc::new(Mutex::new(KassandraSession::new()));
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::task::spawn_local(client(db.clone(), stream));
        }
    });
}

async fn client(db: Arc<Mutex<KassandraSession>>, mut stream: tokio::net::TcpStream) {
    let (mut read, mut write) = stream.split();
    let mut requests = request_stream(&mut read);
    let mut responses = response_sink(&mut write);
    while let Some(frame) = requests.next().await {
        let Ok((frame, opcode, data)) = frame else {
            break;
        };
        let response = match Request::deserialize(opcode, &data, frame.flags) {
            Ok(request) => answer(&db, request),
            Err(e) => Response::Error(Error::new(
                DbError::ProtocolError,
                format!("cannot parse request: {e}"),
            )),
        };
        if responses.send((response, frame.stream)).await.is_err() {
            break;
        }
    }
}

fn answer(db: &Mutex<KassandraSession>, request: Request<'_>) -> Response {
    let mut db = match db.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let result = match request {
        Request::StartUp(_) | Request::Register { .. } => return Response::Ready,
        Request::Options => return Response::options(),
        Request::Query(q) => db.process(q),
        Request::Prepare(p) => db.prepare(p),
        Request::Execute(e) => db.execute(e),
        Request::Batch(b) => db.process_batch(b),
        Request::AuthResponse => {
            return Response::Error(Error::new(DbError::ProtocolError, "no authentication"));
        }
    };
    match result {
        Ok(r) => Response::Result(r),
        Err(e) => Response::Error(e),
    }
}

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
