//! `annostore runs put`: a whole run in one call to `POST /v1/runs`. A local run file is
//! streamed as the request body while it is read (never loaded whole), with a progress
//! bar of the bytes sent when stderr is a terminal; `--file-on-server` has the server
//! read a file under its `[runs] file_root` instead.

use super::{Client, OP_COLUMNS, print_rows};
use crate::cli::{RunsCommand, RunsPutArgs};
use anyhow::{Context, bail};
use futures::Stream;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use std::io::IsTerminal;
use tokio::io::AsyncReadExt;

/// Bytes read from the run file at a time.
const CHUNK: usize = 256 * 1024;

pub async fn runs(cmd: RunsCommand) -> anyhow::Result<()> {
    match cmd {
        RunsCommand::Put(args) => put(args).await,
    }
}

async fn put(args: RunsPutArgs) -> anyhow::Result<()> {
    let c = Client::new(&args.client);
    let url = c.url("/v1/runs");
    let (req, bar) = match (&args.file, &args.file_on_server) {
        (Some(path), _) => {
            let file = tokio::fs::File::open(path)
                .await
                .with_context(|| format!("opening {}", path.display()))?;
            let len = file
                .metadata()
                .await
                .with_context(|| format!("reading {}", path.display()))?
                .len();
            let bar = progress(len);
            let body = reqwest::Body::wrap_stream(chunks(file, bar.clone()));
            let req = c
                .http
                .post(url)
                .header(CONTENT_TYPE, "application/x-ndjson")
                .body(body);
            (req, bar)
        }
        (None, Some(name)) => (
            c.http.post(url).json(&json!({"file": name})),
            ProgressBar::hidden(),
        ),
        (None, None) => bail!("name a run file, or --file-on-server PATH"),
    };
    let sent = req.send().await;
    bar.finish_and_clear();
    let resp = sent.with_context(|| format!("sending the run to {}", c.base))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{}", failure(status, &body));
    }
    print_rows(&args.client, &[body["operation"].clone()], OP_COLUMNS);
    eprintln!(
        "{} annotations written in {} batches",
        body["annotations"], body["batches"]
    );
    Ok(())
}

/// What a refused run says: the status, the detail, the first bad line and what became
/// of the run.
fn failure(status: reqwest::StatusCode, body: &Value) -> String {
    let mut out = format!(
        "server answered {status}: {}",
        body["detail"].as_str().unwrap_or("no detail")
    );
    if let Some(line) = body["line"].as_u64() {
        out.push_str(&format!("\nfirst bad line: {line}"));
    }
    if let Some(op) = body["operation_id"].as_str() {
        let fate = match body["cancelled"].as_bool() {
            Some(true) => "cancelled",
            _ => "NOT cancelled (it expires with its lease)",
        };
        out.push_str(&format!("\nrun {op}: {fate}"));
    }
    out
}

/// A bar of bytes sent, drawn only on a terminal.
fn progress(len: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "[{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}, {eta} left {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

/// The file as a stream of chunks, advancing `bar` as each is handed to the connection.
/// The last chunk sets the bar's message: the server finishes the run after it.
fn chunks(
    file: tokio::fs::File,
    bar: ProgressBar,
) -> impl Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static {
    futures::stream::try_unfold((file, bar), |(mut file, bar)| async move {
        let mut buf = vec![0; CHUNK];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            bar.set_message("sent; the server is finishing the run");
            return Ok(None);
        }
        buf.truncate(n);
        bar.inc(n as u64);
        Ok(Some((buf, (file, bar))))
    })
}
