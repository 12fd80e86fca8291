//! Crash harness: kill -9 the server at random points of random workloads, restart it on
//! the same data directory, and check against a record of every acknowledged (and every
//! in-flight) request that nothing acknowledged is lost, no partial, superseded or
//! unfinished run is ever visible, every operation is in a legal state, index work
//! pending at the crash is replayed, and runs left STARTED can still be ended.
//!
//! `ANNOSTORE_CRASH_ITERATIONS` (default 3) sets the iterations; `ANNOSTORE_CRASH_SEED`
//! the base seed (iteration i uses seed + i; a failure prints the seed to replay it). A
//! seed fixes every choice (workload, kill point); thread timing still varies.
//! `scripts/stress-crash` runs 1,000 iterations on a release build.

#[path = "crash/model.rs"]
mod model;
#[path = "crash/verify.rs"]
mod verify;
#[path = "crash/workload.rs"]
mod workload;

use annostore_tests::Server;
use model::{Model, Rng, Stats, TYPE};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use verify::Check;
use workload::Ctx;

const DEFAULT_ITERATIONS: u64 = 3;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_acknowledged_is_lost_and_no_partial_run_shows_across_kill_9() {
    let iterations = env_u64("ANNOSTORE_CRASH_ITERATIONS").unwrap_or(DEFAULT_ITERATIONS);
    let base = env_u64("ANNOSTORE_CRASH_SEED").unwrap_or_else(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        Rng::new(t.unwrap().as_nanos() as u64).next_u64() >> 1
    });
    println!("crash: base seed {base}, {iterations} iterations");
    let stats = Arc::new(Stats::default());
    let began = Instant::now();
    for i in 0..iterations {
        let seed = base.wrapping_add(i);
        let t0 = Instant::now();
        if let Err(e) = tokio::spawn(iteration(seed, stats.clone())).await {
            eprintln!(
                "crash iteration {i} failed; replay it with \
                 ANNOSTORE_CRASH_SEED={seed} ANNOSTORE_CRASH_ITERATIONS=1"
            );
            std::panic::resume_unwind(e.into_panic());
        }
        println!(
            "crash: iteration {i} (seed {seed}) passed in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
    }
    let crashes = stats.crashes.load(Ordering::Relaxed);
    let checked = stats.checked.load(Ordering::Relaxed);
    println!(
        "crash summary: iterations {iterations}, crashes {crashes}, annotations checked \
         {checked}, searches checked {}, acknowledged requests {}, kills mid-upsert {}, \
         kills mid-finish {}, {:.1} s",
        stats.searches.load(Ordering::Relaxed),
        stats.acked_requests.load(Ordering::Relaxed),
        stats.kills_mid_upsert.load(Ordering::Relaxed),
        stats.kills_mid_finish.load(Ordering::Relaxed),
        began.elapsed().as_secs_f64()
    );
    assert!(
        crashes >= 2 * iterations,
        "every iteration crashes at least twice"
    );
    assert!(
        iterations == 0 || checked > 0,
        "no annotation was ever checked"
    );
}

/// One server: one to three lifetimes of random work, each ended by kill -9 and checked
/// after the restart; then a last kill at rest and the checks again.
async fn iteration(seed: u64, stats: Arc<Stats>) {
    let mut rng = Rng::new(seed);
    let mut srv = Server::start();
    let _log = LogOnPanic(srv.data_dir().with_file_name("server.log"));
    srv.put_type(TYPE, 1, &serde_json::json!({"embedding_dim": 4}))
        .await
        .expect(201);
    let model = Arc::new(Mutex::new(Model::new(rng.range(1, 3) as usize)));
    let lifetimes = rng.range(1, 3);
    for life in 1..=lifetimes {
        lifetime(&mut srv, &model, &stats, &mut rng).await;
        let check = Check {
            api: srv.api(),
            model: model.clone(),
            stats: stats.clone(),
        };
        let last = life == lifetimes;
        let hurry = !last && rng.chance(0.5);
        check.after_restart(&mut rng, last, hurry).await;
    }
    // At rest now (every run ended): one more crash changes nothing.
    srv.restart();
    Stats::add(&stats.crashes, 1);
    let check = Check {
        api: srv.api(),
        model: model.clone(),
        stats,
    };
    check.catalogue().await;
    let keys = model.lock().unwrap().keys.len();
    for key in 0..keys {
        check.key_exactly(key).await;
    }
}

/// Runs the workload, kills the server at a point drawn from `rng` (after a delay, or
/// after some number of acknowledged requests), waits for every task, and restarts.
async fn lifetime(srv: &mut Server, model: &Arc<Mutex<Model>>, stats: &Arc<Stats>, rng: &mut Rng) {
    let ctx = Ctx::new(srv.api(), model.clone(), stats.clone());
    let keys = {
        let mut m = ctx.model();
        m.runs.values_mut().for_each(|r| r.busy = false);
        m.keys.len()
    };
    let mut work = JoinSet::new();
    for key in 0..keys {
        work.spawn(workload::key_task(ctx.clone(), key, rng.fork()));
    }
    let mut searchers = JoinSet::new();
    searchers.spawn(workload::searcher(ctx.clone(), rng.fork()));
    // Where to crash: a delay picks a point in time (often among finishes, which wait
    // for the index); a count of upserts a point in the request stream: right after
    // the n-th is sent (in flight for sure) or answered (not indexed yet).
    let mode = rng.range(0, 2);
    let delay = Duration::from_millis(rng.range(5, 700));
    let nth = rng.range(1, 60);
    let mut sent = ctx.upserts_sent.subscribe();
    let mut acked = ctx.upsert_acks.subscribe();
    let trigger = async {
        match mode {
            0 => tokio::time::sleep(delay).await,
            1 => drop(sent.wait_for(|n| *n >= nth).await),
            _ => drop(acked.wait_for(|n| *n >= nth).await),
        }
    };
    tokio::pin!(trigger);
    loop {
        tokio::select! {
            () = &mut trigger => break,
            done = work.join_next() => match done {
                None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => std::panic::resume_unwind(e.into_panic()),
            },
        }
    }
    ctx.killing.store(true, Ordering::SeqCst);
    let upserts = ctx.upserts_in_flight.load(Ordering::SeqCst);
    let finishes = ctx.finishes_in_flight.load(Ordering::SeqCst);
    srv.kill9();
    Stats::add(&stats.kills_mid_upsert, usize::from(upserts > 0));
    Stats::add(&stats.kills_mid_finish, usize::from(finishes > 0));
    Stats::add(&stats.crashes, 1);
    workload::join_all(work).await;
    workload::join_all(searchers).await;
    srv.restart();
}

/// Prints the end of the server's log when an iteration fails.
struct LogOnPanic(std::path::PathBuf);

impl Drop for LogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.0).unwrap_or_default();
            let tail: String = log
                .chars()
                .rev()
                .take(4000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            eprintln!("server log ({}), last lines:\n{tail}", self.0.display());
        }
    }
}
