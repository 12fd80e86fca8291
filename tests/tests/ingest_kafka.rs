//! The Kafka-distributed ingest path, black box: `annostore submit` publishes one task per
//! segment to librdkafka's mock cluster (in this process, on real localhost ports), and
//! `annostore worker` child processes compute them against an `annostore serve`.
//!
//! - Two workers, one aborted (the test-only failpoint) right after its second upsert,
//!   before it reports or commits it: the run still finishes, with exactly the
//!   annotations a local `annostore ingest` of the same video gives.
//! - A file that is not a video: `submit` fails and starts no run.
//! - A run cancelled before its tasks are taken: workers skip them without computing.
//! - A video deleted after `submit`: the worker's media error cancels the run (and the
//!   worker goes on, until SIGTERM makes it exit 0).
//!
//! Needs the shared test media and models and ONNX Runtime (as `annostore ingest`'s own
//! tests do); without them the tests fail, saying what is missing.

use annostore_tests::{Api, Server, command, s};
use rdkafka::mocking::MockCluster;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

fn shared(rel: &str) -> String {
    annostore_ingest::testkit::shared(rel).display().to_string()
}

fn video() -> String {
    shared("media/slideshow_720p.mp4")
}

fn detector() -> String {
    shared("models/centernet.onnx")
}

fn embedder() -> String {
    shared("models/mobilenetv2_imagenet.onnx")
}

/// Short sessions: a dead worker's partitions move within seconds.
const SESSION_TIMEOUT_MS: &str = "6000";

/// A mock cluster with fresh tasks (4 partitions) and progress (2) topics.
struct Kafka {
    cluster: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    tasks: String,
    progress: String,
    group: String,
}

impl Kafka {
    fn new() -> Kafka {
        let cluster = MockCluster::new(1).expect("librdkafka mock cluster");
        let tag = Uuid::new_v4().simple().to_string();
        let k = Kafka {
            cluster,
            tasks: format!("tasks-{tag}"),
            progress: format!("progress-{tag}"),
            group: format!("workers-{tag}"),
        };
        // The mock cluster has no CreateTopics: the topics exist before `submit`, whose
        // ensure_topic finds them.
        k.cluster.create_topic(&k.tasks, 4, 1).expect("tasks topic");
        k.cluster
            .create_topic(&k.progress, 2, 1)
            .expect("progress topic");
        k
    }

    fn brokers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--kafka".into(),
            self.brokers(),
            "--tasks-topic".into(),
            self.tasks.clone(),
            "--progress-topic".into(),
            self.progress.clone(),
        ]
    }
}

/// A running `annostore worker`; its stderr is collected (and echoed). Killed on drop.
struct Worker {
    child: Child,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Worker {
    fn spawn(
        name: &str,
        server: &Server,
        kafka: &Kafka,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Worker {
        let dir = tempfile::tempdir().unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut child = command(dir.path(), &env)
            .arg("worker")
            .args(kafka.args())
            .args(["--group", &kafka.group])
            .args(["--session-timeout-ms", SESSION_TIMEOUT_MS])
            .args(["--detector", &detector(), "--embedder", &embedder()])
            .args(["--server", &server.base])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning annostore worker");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let name = name.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[worker {name}] {line}");
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Worker {
            child,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the worker exits; panics after `timeout`.
    async fn exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the worker did not exit; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `annostore ARGS --server URL` to completion.
fn run(server: &Server, args: &[String]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    command(dir.path(), &[])
        .args(args)
        .args(["--server", &server.base])
        .output()
        .expect("running annostore")
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// `annostore submit VIDEO --media-id MEDIA --segment-seconds 4` on `kafka`: the started
/// run's JSON line.
fn submit(server: &Server, kafka: &Kafka, video: &str, media: &str) -> Value {
    let mut args = strings(&["submit", video, "--media-id", media]);
    args.extend(strings(&["--segment-seconds", "4", "--partitions", "4"]));
    args.extend(kafka.args());
    let out = run(server, &args);
    assert!(
        out.status.success(),
        "submit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one line per run: {stdout}");
    serde_json::from_str(lines[0]).expect("a JSON line")
}

/// Polls the operation until it is no longer STARTED; its final state.
async fn settled(api: &Api, op: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let run = api.op_ok(op).await;
        if run["status"] != json!("STARTED") {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "operation {op} did not settle: {run}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The comparable content of annotations: (start, end, label, confidence, bbox), with
/// floats rounded to 1e-4, counted as a multiset.
fn content(anns: &[Value]) -> BTreeMap<String, usize> {
    let r = |v: &Value| (v.as_f64().unwrap() * 1e4).round() as i64;
    let mut out = BTreeMap::new();
    for a in anns {
        let b = &a["bbox"];
        let key = format!(
            "{} {} {} {} [{} {} {} {}]",
            a["start_ms"],
            a["end_ms"],
            s(a, "label"),
            r(&a["confidence"]),
            r(&b["x"]),
            r(&b["y"]),
            r(&b["w"]),
            r(&b["h"]),
        );
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_task_changes_nothing() {
    let started = Instant::now();
    let kafka = Kafka::new();
    let server = Server::start();
    let api = server.api();

    // The reference: the same video ingested on this machine. Its run and the Kafka run
    // share the operation key (type `objects`, pivot = the file's SHA-256), so the Kafka
    // run supersedes it when it finishes: its annotations are read now, while visible.
    let clean = run(
        &server,
        &strings(&[
            "ingest",
            &video(),
            "--media-id",
            "clean",
            "--segment-seconds",
            "4",
            "--detector",
            &detector(),
            "--embedder",
            &embedder(),
        ]),
    );
    assert!(
        clean.status.success(),
        "ingest failed: {}",
        String::from_utf8_lossy(&clean.stderr)
    );
    let reference = api.search_all(&json!({"media_id": "clean"}), 500).await;
    assert!(!reference.is_empty(), "the slideshow has detections");
    eprintln!(
        "clean run: {} annotations in {:.1}s",
        reference.len(),
        started.elapsed().as_secs_f64()
    );

    let submitted = submit(&server, &kafka, &video(), "dist");
    assert_eq!(submitted["segments"], json!(6), "{submitted}");
    let op = s(&submitted, "operation_id");
    let t0 = Instant::now();

    // A is alone in the group at first: it completes one segment (upserted, reported,
    // committed), then dies right after upserting its second, before reporting or
    // committing it. B joins while A computes that second one and, once A's session
    // times out, owns every task partition (A's half-done task included) and every
    // progress partition: its finisher must count A's first report, re-read from the
    // finishers' committed offset.
    let mut a = Worker::spawn(
        "A",
        &server,
        &kafka,
        &[("ANNOSTORE_FAULT_ABORT_AFTER_UPSERT", "2")],
        &[],
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    while a.log().matches("processing segment").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "worker A did not take a second task:\n{}",
            a.log()
        );
        assert!(
            a.child.try_wait().unwrap().is_none(),
            "A exited early:\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // B computes two segments at once (two consumers in the group).
    let b = Worker::spawn("B", &server, &kafka, &[], &["--jobs", "2"]);
    let status = a.exit(Duration::from_secs(120)).await;
    assert_eq!(
        status.signal(),
        Some(6),
        "A must die by abort (SIGABRT), not {status:?}:\n{}",
        a.log()
    );
    assert!(a.log().contains("aborting after upserting"), "{}", a.log());
    let killed_after = t0.elapsed();

    let run = settled(&api, &op, Duration::from_secs(180)).await;
    assert_eq!(run["status"], json!("FINISHED"), "{run}\nB:\n{}", b.log());
    eprintln!(
        "kafka run finished {:.1}s after submit (A aborted after {:.1}s); whole test {:.1}s",
        t0.elapsed().as_secs_f64(),
        killed_after.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );

    // A completed one segment and B the five others (A's half-done one included): B's
    // finisher counted A's report of the first, re-read from Kafka.
    assert_eq!(a.log().matches("segment done").count(), 1, "{}", a.log());
    assert_eq!(b.log().matches("segment done").count(), 5, "{}", b.log());

    let dist = api.search_all(&json!({"media_id": "dist"}), 500).await;
    let mut ids: Vec<String> = dist.iter().map(|a| s(a, "id")).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), dist.len(), "no annotation twice");
    assert_eq!(dist.len(), reference.len(), "as many as the clean run");
    assert_eq!(
        content(&dist),
        content(&reference),
        "the clean run's content"
    );
    assert_eq!(
        run["annotation_count"],
        json!(reference.len()),
        "the segment computed twice is counted once: {run}"
    );
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_a_video_starts_no_run() {
    let kafka = Kafka::new();
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("notes.mp4");
    std::fs::write(&fake, "these are meeting notes, not a video\n").unwrap();
    let fake = fake.to_str().unwrap().to_owned();
    let mut args = strings(&["submit", &fake]);
    args.extend(kafka.args());
    let out = run(&server, &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "submit of a text file must fail");
    assert!(
        stderr.contains("notes.mp4") && stderr.contains("no run started"),
        "the message names the file and says nothing started: {stderr}"
    );
    let ops = server.api().get("/v1/operations").await;
    assert_eq!(ops.expect(200)["operations"], json!([]), "{}", ops.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_gone_before_its_worker_cancels_the_run() {
    let kafka = Kafka::new();
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("gone.mp4");
    std::fs::copy(video(), &copy).unwrap();
    // `submit --wait`: it waits for the run, and fails because it was cancelled.
    let mut args = strings(&["submit", copy.to_str().unwrap(), "--media-id", "gone"]);
    args.extend(strings(&["--segment-seconds", "4", "--wait"]));
    args.extend(kafka.args());
    let waiting = command(dir.path(), &[])
        .args(&args)
        .args(["--server", &server.base])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning annostore submit --wait");
    // Once its run has started, the video is not read again by submit: delete it.
    let api = server.api();
    let deadline = Instant::now() + Duration::from_secs(60);
    let op = loop {
        let ops = api.get("/v1/operations").await.expect(200).clone();
        if let Some(op) = ops["operations"].as_array().and_then(|a| a.first()) {
            break s(op, "id");
        }
        assert!(Instant::now() < deadline, "submit started no run");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    std::fs::remove_file(&copy).unwrap();

    let mut worker = Worker::spawn("W", &server, &kafka, &[], &[]);
    let run = settled(&api, &op, Duration::from_secs(120)).await;
    assert_eq!(run["status"], json!("CANCELLED"), "{run}\n{}", worker.log());
    let out = tokio::task::spawn_blocking(move || waiting.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "submit --wait fails: {stdout}");
    let line: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(line["operation_id"], json!(op), "{line}");
    assert_eq!(line["status"], json!("CANCELLED"), "{line}");
    assert_eq!(line["media_id"], json!("gone"), "{line}");
    // A media error fails the run, not the worker.
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "the worker keeps running:\n{}",
        worker.log()
    );
    // SIGTERM: it stops taking tasks and exits 0.
    let term = std::process::Command::new("kill")
        .args(["-TERM", &worker.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = worker.exit(Duration::from_secs(60)).await;
    assert!(status.success(), "{status:?}:\n{}", worker.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_of_a_cancelled_run_are_skipped() {
    let kafka = Kafka::new();
    let server = Server::start();
    let api = server.api();
    let submitted = submit(&server, &kafka, &video(), "dropped");
    let op = s(&submitted, "operation_id");
    api.cancel(&op).await.expect(200);

    let worker = Worker::spawn("C", &server, &kafka, &[], &[]);
    let deadline = Instant::now() + Duration::from_secs(90);
    while worker.log().matches("skipping a segment").count() < 6 {
        assert!(
            Instant::now() < deadline,
            "the worker did not skip all six tasks:\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !worker.log().contains("processing segment"),
        "{}",
        worker.log()
    );
    // The finisher took note: the run holds no progress offset back.
    while !worker.log().contains("a run that is already over") {
        assert!(
            Instant::now() < deadline,
            "the finisher did not settle the run:\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(api.op_ok(&op).await["status"], json!("CANCELLED"));
}
