//! `annostore ingest` against a real `annostore serve`, with the shared models on the
//! shared slideshow (24 s, six stills of 4 s): what it makes findable, how a second run
//! replaces the first, local files and http(s) URLs, and bad input.

use annostore_tests::{Server, serde_json};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn shared(path: &str) -> PathBuf {
    annostore_ingest::testkit::shared(path)
}

fn slideshow() -> String {
    shared("media/slideshow_720p.mp4").display().to_string()
}

/// The model flags of every run here.
fn model_args() -> Vec<String> {
    vec![
        "--detector".into(),
        shared("models/centernet.onnx").display().to_string(),
        "--embedder".into(),
        shared("models/mobilenetv2_imagenet.onnx")
            .display()
            .to_string(),
    ]
}

fn ingest(server: &Server, extra: &[&str]) -> Output {
    let mut args: Vec<String> = vec!["ingest".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(model_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    server.cli(&args)
}

/// `annostore ingest` of the slideshow on one worker thread, in the background.
fn spawn_ingest(server: &Server, extra: &[&str]) -> std::process::Child {
    Command::new(annostore_tests::binary())
        .args([
            "ingest",
            &slideshow(),
            "--jobs",
            "1",
            "--server",
            &server.api().base,
        ])
        .args(extra)
        .args(model_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting annostore ingest")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The JSON reports `ingest` printed, one per video.
fn reports(out: &Output) -> Vec<Value> {
    assert!(out.status.success(), "ingest failed: {}", stderr(out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON report per line"))
        .collect()
}

async fn visible(server: &Server, media: &str) -> Vec<Value> {
    server.search_all(&json!({"media_id": media}), 500).await
}

async fn operations(server: &Server, status: &str) -> Vec<Value> {
    let r = server
        .get(&format!("/v1/operations?status={status}&limit=100"))
        .await;
    r.expect(200)["operations"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_makes_each_object_findable_by_label_in_its_time_range() {
    let server = Server::start();
    let out = ingest(
        &server,
        &[&slideshow(), "--media-id", "slides", "--jobs", "2"],
    );
    let report = &reports(&out)[0];
    assert_eq!(report["status"], "FINISHED");
    assert_eq!(report["frames"], 24);
    // 24 s in segments of at most 10 s, evened out for 2 workers: 4 of 6 s.
    assert_eq!(report["segments"], 4);
    let pivot = report["pivot_id"].as_str().unwrap();
    assert!(
        pivot.starts_with("sha256:") && pivot.len() == 7 + 64,
        "{pivot}"
    );

    // Each still's object is found by its label, only in that still's 4 seconds.
    for (label, from, to) in [
        ("cup", 8_000, 12_000),
        ("motorcycle", 12_000, 16_000),
        ("person", 16_000, 20_000),
    ] {
        let hits = server
            .search_all(&json!({"media_id": "slides", "label": label}), 100)
            .await;
        assert!(!hits.is_empty(), "no {label}");
        for h in &hits {
            let start = h["start_ms"].as_u64().unwrap();
            assert!((from..to).contains(&start), "{label} at {start}");
            assert_eq!(h["end_ms"].as_u64().unwrap(), start + 1000);
            assert_eq!(h["embedding"].as_array().map(Vec::len), Some(1280));
            assert_eq!(h["operation_id"], report["operation_id"]);
        }
        // One sampled frame per second of the still: 4 frames, each with the object.
        let seconds: BTreeSet<u64> = hits
            .iter()
            .map(|h| h["start_ms"].as_u64().unwrap())
            .collect();
        assert_eq!(seconds.len(), 4, "{label}: {seconds:?}");
    }
    // A time-range search finds the motorcycle and nothing of the other stills.
    let window = server
        .search_all(
            &json!({"media_id": "slides", "time_range": {"start_ms": 12_500, "end_ms": 14_500}}),
            100,
        )
        .await;
    let labels: BTreeSet<&str> = window
        .iter()
        .map(|h| h["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, BTreeSet::from(["motorcycle"]));
    // The type was registered by the command, with the embedder's length.
    let types = server.get("/v1/types").await;
    let objects = types.expect(200)["types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "objects")
        .cloned()
        .expect("objects type");
    assert_eq!(objects["embedding_dim"], 1280);
    let total = visible(&server, "slides").await.len() as u64;
    assert_eq!(report["annotations"].as_u64(), Some(total));
}

/// Searches during a second run of the same video see the first run, whole; after it,
/// the second, whole. Never a mix, never nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_replaces_the_first_atomically() {
    let server = Server::start();
    let first = &reports(&ingest(&server, &[&slideshow(), "--media-id", "slides"]))[0];
    let first_op = first["operation_id"].as_str().unwrap().to_owned();
    let first_count = first["annotations"].as_u64().unwrap() as usize;
    assert!(first_count > 0);

    // The second run samples twice as often: different annotations, same key.
    let mut child = spawn_ingest(&server, &["--media-id", "slides", "--fps", "2"]);
    let mut seen_during = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let running = child.try_wait().unwrap().is_none();
        let started = operations(&server, "STARTED").await;
        let hits = visible(&server, "slides").await;
        let ops: BTreeSet<&str> = hits
            .iter()
            .map(|h| h["operation_id"].as_str().unwrap())
            .collect();
        assert_eq!(ops.len(), 1, "one run visible at a time: {ops:?}");
        if !started.is_empty() {
            // The second run is under way: what is visible is the first, whole.
            assert!(ops.contains(first_op.as_str()));
            assert_eq!(hits.len(), first_count);
            seen_during += 1;
        }
        if !running {
            break;
        }
        assert!(Instant::now() < deadline, "the second run did not end");
    }
    let out = child.wait_with_output().unwrap();
    let second = &reports(&out)[0];
    assert!(
        seen_during > 0,
        "no search happened while the second run was STARTED"
    );
    let hits = visible(&server, "slides").await;
    assert!(
        hits.iter()
            .all(|h| h["operation_id"] == second["operation_id"])
    );
    assert_eq!(hits.len() as u64, second["annotations"].as_u64().unwrap());
    assert!(hits.len() > first_count, "2 fps finds more than 1 fps");
    let old = server.get(&format!("/v1/operations/{first_op}")).await;
    assert_eq!(old.expect(200)["active"], false);
}

/// A minimal HTTP server for one file, answering range requests the way CDNs do
/// (FFmpeg reads an MP4's index at its end with a range request). Hand-written: the
/// test needs only `GET` with one `Range: bytes=a-[b]`.
fn serve_file(path: &Path) -> (String, std::thread::JoinHandle<()>) {
    use std::io::{BufRead, BufReader, Write};
    let bytes = std::fs::read(path).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/media/clip.mp4?sig=abc",
        listener.local_addr().unwrap()
    );
    let handle = std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let bytes = bytes.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut range: Option<(usize, usize)> = None;
                    let mut line = String::new();
                    let mut first = true;
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if first {
                            first = false;
                            continue;
                        }
                        let l = line.trim_end().to_ascii_lowercase();
                        if l.is_empty() {
                            break;
                        }
                        if let Some(r) = l.strip_prefix("range: bytes=") {
                            let (a, b) = r.split_once('-').unwrap_or((r, ""));
                            let a: usize = a.parse().unwrap_or(0);
                            let b: usize = b.parse().unwrap_or(bytes.len() - 1);
                            range = Some((a, b.min(bytes.len() - 1)));
                        }
                    }
                    let (status, a, b) = match range {
                        Some((a, b)) => ("206 Partial Content", a, b),
                        None => ("200 OK", 0, bytes.len() - 1),
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: video/mp4\r\n\
                         Accept-Ranges: bytes\r\nContent-Range: bytes {a}-{b}/{}\r\n\r\n",
                        b - a + 1,
                        bytes.len()
                    );
                    if stream.write_all(head.as_bytes()).is_err()
                        || stream.write_all(&bytes[a..=b]).is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (url, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_is_read_from_an_http_url_and_named_after_its_file() {
    let server = Server::start();
    let (url, _srv) = serve_file(&shared("media/slideshow_720p.mp4"));
    let report = &reports(&ingest(&server, &[&url, "--segment-seconds", "12"]))[0];
    assert_eq!(report["status"], "FINISHED");
    assert_eq!(report["media_id"], "clip.mp4");
    assert_eq!(report["pivot_id"], url.as_str());
    let hits = server
        .search_all(&json!({"media_id": "clip.mp4", "label": "motorcycle"}), 100)
        .await;
    assert_eq!(
        hits.len(),
        4 * hits.iter().filter(|h| h["start_ms"] == 12_000).count()
    );
}

/// Bad input: each a clear error and a non-zero exit, and never a visible run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_fails_clearly_and_leaves_no_visible_run() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();

    // A missing file: refused before any run starts.
    let out = ingest(&server, &["/nonexistent/movie.mp4"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("/nonexistent/movie.mp4: no such file"),
        "{}",
        stderr(&out)
    );

    // A file that is not a video.
    let text = tmp.path().join("notes.mp4");
    std::fs::write(&text, "not a video\n".repeat(1000)).unwrap();
    let out = ingest(&server, &[text.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("notes.mp4: cannot open"),
        "{}",
        stderr(&out)
    );

    // A model whose tensors do not fit: the classifier given as the detector.
    let out = server.cli(&[
        "ingest",
        &slideshow(),
        "--detector",
        shared("models/mobilenetv2_imagenet.onnx").to_str().unwrap(),
        "--classes",
        shared("models/coco_classes.txt").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no output has a detector layout"),
        "{}",
        stderr(&out)
    );
    let all = server.get("/v1/operations?limit=100").await;
    assert_eq!(
        all.expect(200)["operations"].as_array().unwrap().len(),
        0,
        "no run was started"
    );

    // A corrupt stream mid-file: the run starts, fails at the damage, and is cancelled.
    let mut bytes = std::fs::read(shared("media/slideshow_720p.mp4")).unwrap();
    let mid = bytes.len() / 2;
    let mut x: u32 = 7;
    for b in &mut bytes[mid..mid + 200_000] {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        *b = (x >> 16) as u8;
    }
    let corrupt = tmp.path().join("corrupt.mp4");
    std::fs::write(&corrupt, bytes).unwrap();
    let out = ingest(&server, &[corrupt.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("corrupt video stream"), "{err}");
    assert!(err.contains("cancelled"), "{err}");
    let cancelled = operations(&server, "CANCELLED").await;
    assert_eq!(cancelled.len(), 1);
    assert!(operations(&server, "STARTED").await.is_empty());
    assert!(visible(&server, "corrupt.mp4").await.is_empty());

    // Flags out of range.
    let out = ingest(&server, &[&slideshow(), "--fps", "0"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--fps must be above 0"),
        "{}",
        stderr(&out)
    );
    let out = ingest(&server, &[&slideshow(), "--embedder-std", "0.2,0,0.2"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--embedder-std must be above 0"),
        "{}",
        stderr(&out)
    );
    let out = ingest(&server, &[&slideshow(), &slideshow(), "--media-id", "x"]);
    assert!(
        stderr(&out).contains("--media-id names one video"),
        "{}",
        stderr(&out)
    );
}

/// Several videos in one command: one run each, keyed by file content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_videos_make_one_run_each() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    // A second, different clip: the slideshow's last 8 seconds.
    let tail = tmp.path().join("tail.mp4");
    let status = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-ss",
            "16",
            "-i",
            &slideshow(),
            "-t",
            "8",
        ])
        .args(["-c:v", "libx264", "-preset", "ultrafast"])
        .arg(&tail)
        .status()
        .expect("the ffmpeg CLI (scripts/setup-system installs it)");
    assert!(status.success());
    let out = ingest(&server, &[&slideshow(), tail.to_str().unwrap()]);
    let reports = reports(&out);
    assert_eq!(reports.len(), 2);
    let pivots: BTreeSet<&str> = reports
        .iter()
        .map(|r| r["pivot_id"].as_str().unwrap())
        .collect();
    assert_eq!(pivots.len(), 2);
    let by_media: BTreeMap<&str, u64> = reports
        .iter()
        .map(|r| {
            (
                r["media_id"].as_str().unwrap(),
                r["frames"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(by_media["slideshow_720p.mp4"], 24);
    assert_eq!(by_media["tail.mp4"], 8, "{by_media:?}");
    let persons = server
        .search_all(&json!({"media_id": "tail.mp4", "label": "person"}), 100)
        .await;
    assert!(!persons.is_empty());
    assert!(
        persons
            .iter()
            .all(|p| p["start_ms"].as_u64().unwrap() < 4_000)
    );
}

/// Ctrl-C during a run cancels it: the command exits non-zero and nothing shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_is_cancelled() {
    let server = Server::start();
    let mut child = spawn_ingest(&server, &["--fps", "10"]);
    // Interrupt once the run has started and is writing.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let started = operations(&server, "STARTED").await;
        if let Some(op) = started.first()
            && op["annotation_count"].as_u64().unwrap_or(0) > 0
        {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be interrupted"
        );
        assert!(Instant::now() < deadline, "the run never wrote");
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    assert_eq!(operations(&server, "CANCELLED").await.len(), 1);
    assert!(operations(&server, "STARTED").await.is_empty());
    assert!(visible(&server, "slideshow_720p.mp4").await.is_empty());
}
