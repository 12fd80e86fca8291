//! Background work yields the CPU to requests.
//!
//! The engines' own threads (tantivy's indexing, merge and segment-updater threads, the
//! index committer, fjall's flush and compaction worker) do work that can wait a few
//! milliseconds; a search or a finish waiting behind them cannot. On a machine with two
//! cores a commit or a merge took a whole core for tens of milliseconds, and requests
//! queued behind it: p99s ten times the p50s. These threads run at a lower priority
//! (nice 10), so the scheduler runs a request's thread first and gives the background
//! the rest. tantivy and fjall start their threads themselves, so they are found by
//! name in `/proc/self/task` after the engines open (and after tantivy restarts its
//! indexing threads). Where that cannot be done (not Linux), nothing changes.

/// Thread names (as the kernel keeps them: at most 15 bytes) of background work.
const BACKGROUND: &[&str] = &[
    "thrd-tantivy-in",
    "merge_thread_",
    "segment_updater",
    "annostore-index",
    "fjall:worker",
];

/// How much lower than the rest background threads run.
const NICE: i32 = 10;

/// Lowers the priority of every background thread of this process that runs now.
pub(crate) fn lower_background_threads() {
    #[cfg(target_os = "linux")]
    {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return;
        };
        for task in tasks.flatten() {
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(name) = std::fs::read_to_string(task.path().join("comm")) else {
                continue;
            };
            if BACKGROUND.iter().any(|b| name.trim_end().starts_with(b)) {
                // SAFETY: setpriority reads its arguments only; a thread that has
                // exited since the listing makes it fail with ESRCH, which is fine.
                let done = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, NICE) };
                if done != 0 {
                    tracing::debug!(
                        tid,
                        name = name.trim_end(),
                        "could not lower a thread's priority"
                    );
                }
            }
        }
    }
}
