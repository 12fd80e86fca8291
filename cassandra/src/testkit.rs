//! An in-process kassandra (an in-memory CQL server from crates.io) on a free loopback
//! port, for tests: this crate's, and black-box tests that run `annostore serve` on the
//! Cassandra store. Behind the `testkit` feature.
//!
//! kassandra runs queries of one connection at a time behind a mutex. It IGNORES LWT
//! conditions (`IF NOT EXISTS`, `IF col = ?`), clustering ranges, `ORDER BY` and TTL:
//! tests that need those run only against a real cluster (`ANNOSTORE_TEST_CASSANDRA`).

use futures::{SinkExt, StreamExt};
use kassandra::KassandraSession;
use kassandra::error::DbError;
use kassandra::frame::request::Request;
use kassandra::frame::response::Response;
use kassandra::frame::response::error::Error;
use kassandra::frame::{request_stream, response_sink};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

/// The address of this process's kassandra, started on first use.
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
