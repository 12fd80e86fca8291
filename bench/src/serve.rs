//! Starts the `annostore` binary that sits beside the running benchmark, on a data
//! directory, and stops it when dropped.

use anyhow::{Context, bail};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub struct Serve(Child);

impl Serve {
    /// The server's process id (for reading its memory from /proc).
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `annostore serve` from this binary's directory on `dir`, with `env` added,
/// and waits for its address.
pub fn start_server(dir: &Path, env: &[(String, String)]) -> anyhow::Result<(Serve, String)> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("annostore");
    if !bin.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p annostore-api`",
            bin.display()
        );
    }
    let mut child = Command::new(&bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("ANNOSTORE_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(server_log()?)
        .env_remove("ANNOSTORE_BENCH_SERVER_LOG")
        .spawn()
        .context("starting annostore serve")?;
    let stdout = child.stdout.take().context("server stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let serve = Serve(child);
    for line in lines.by_ref() {
        let line = line?;
        if let Some(i) = line.find("listening on ") {
            let rest = &line[i + "listening on ".len()..];
            let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
            std::thread::spawn(move || for _ in lines {});
            let addr = addr.trim_start_matches("http://").to_owned();
            return Ok((serve, format!("http://{addr}")));
        }
    }
    bail!("annostore serve exited before listening")
}

/// Where the server's log goes: the file `ANNOSTORE_BENCH_SERVER_LOG` names (to look at
/// what it did), else nowhere.
fn server_log() -> anyhow::Result<Stdio> {
    Ok(match std::env::var_os("ANNOSTORE_BENCH_SERVER_LOG") {
        Some(path) => Stdio::from(
            std::fs::File::create(&path)
                .with_context(|| format!("creating {}", path.to_string_lossy()))?,
        ),
        None => Stdio::null(),
    })
}
