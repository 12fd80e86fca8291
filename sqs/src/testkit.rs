//! A real moto server (a local SQS) for tests: this crate's, and black-box tests that
//! run `annostore serve` on the SQS queue. Behind the `testkit` feature.
//!
//! `moto_server` is looked up in `$ANNOSTORE_MOTO_SERVER` (a path), then
//! `$ANNOSTORE_VENV/bin/moto_server`, then `/var/tmp/annostore-venv/bin/moto_server`
//! (where `scripts/setup-python` puts it), then `PATH`. Tests that run at the same time
//! share one server; it is killed when the last of them drops its handle. Each test uses
//! queues of its own (fresh names), so sharing is safe.
//!
//! Without moto_server a test prints a loud banner and returns, unless
//! `ANNOSTORE_REQUIRE_MOTO=1` (CI), where it fails.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

static SHARED: Mutex<Weak<Moto>> = Mutex::new(Weak::new());

/// The running server, or `None` (after a banner) when moto_server is missing and not
/// required.
pub fn moto() -> Option<Arc<Moto>> {
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(m) = shared.upgrade() {
        return Some(m);
    }
    match start() {
        Ok(m) => {
            let m = Arc::new(m);
            *shared = Arc::downgrade(&m);
            Some(m)
        }
        Err(why) => {
            if std::env::var("ANNOSTORE_REQUIRE_MOTO").is_ok_and(|v| v == "1") {
                panic!("ANNOSTORE_REQUIRE_MOTO=1 but moto_server cannot run: {why}");
            }
            // Straight to stderr: the test harness captures eprintln! of passing tests.
            let _ = writeln!(
                std::io::stderr(),
                "\n{bar}\n!!! SKIPPED: SQS test without moto_server: {why}\n\
                 !!! Run scripts/setup-python (or set ANNOSTORE_MOTO_SERVER); \
                 CI sets ANNOSTORE_REQUIRE_MOTO=1 to make this a failure.\n{bar}\n",
                bar = "!".repeat(100)
            );
            None
        }
    }
}

fn find() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ANNOSTORE_MOTO_SERVER") {
        return Some(PathBuf::from(p));
    }
    let venv = std::env::var_os("ANNOSTORE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/annostore-venv"));
    let in_venv = venv.join("bin/moto_server");
    if in_venv.is_file() {
        return Some(in_venv);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("moto_server"))
        .find(|p| p.is_file())
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn start() -> Result<Moto, String> {
    let bin = find().ok_or("moto_server not found")?;
    let port = free_port()?;
    let log = std::env::temp_dir().join(format!("annostore-moto-{port}.log"));
    let log_file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let log_err = log_file
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let child = Command::new(&bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let mut moto = Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(moto);
        }
        let output = || std::fs::read_to_string(&log).unwrap_or_default();
        if let Ok(Some(status)) = moto.child.try_wait() {
            return Err(format!(
                "{} exited ({status}) before answering:\n{}",
                bin.display(),
                output()
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} did not answer on port {port} within 30 s:\n{}",
                bin.display(),
                output()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
