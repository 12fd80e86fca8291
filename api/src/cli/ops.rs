//! The `ops` and `admin` commands' arguments: operation scans, counts, bulk ends,
//! rollback and history; garbage collection, dead letters and consistency.

use super::ClientArgs;
use clap::{Args, Subcommand};
use std::time::Duration;

/// Which operations: the filters of an admin scan (all optional; all must hold).
#[derive(Debug, Args, Clone, Default)]
pub struct OpFilterArgs {
    /// STARTED, FINISHED, CANCELLED or EXPIRED.
    #[arg(long)]
    pub status: Option<String>,
    #[arg(long = "type")]
    pub annotation_type: Option<String>,
    #[arg(long = "type-version")]
    pub annotation_type_version: Option<u32>,
    #[arg(long)]
    pub pivot: Option<String>,
    /// The API key id that started the run.
    #[arg(long)]
    pub producer: Option<String>,
    /// Only active (true) or inactive (false) runs.
    #[arg(long)]
    pub active: Option<bool>,
    /// A metadata property that must equal a value, KEY=VALUE (VALUE as JSON when it
    /// parses as JSON, else as a string); repeat for more.
    #[arg(long = "metadata", value_name = "KEY=VALUE")]
    pub metadata: Vec<String>,
    /// Started more than this long ago (6h, 2d, 90m, ...).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub older_than: Option<Duration>,
    /// Not changed for this long (a STARTED run's upserts change it).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub idle_for: Option<Duration>,
}

/// One operation key.
#[derive(Debug, Args, Clone)]
pub struct KeyArgs {
    #[arg(long = "type")]
    pub annotation_type: String,
    #[arg(long = "type-version")]
    pub annotation_type_version: u32,
    #[arg(long)]
    pub pivot: String,
}

/// A rollback or roll forward of one key.
#[derive(Debug, Args)]
pub struct MoveArgs {
    #[command(flatten)]
    pub key: KeyArgs,
    /// The run to make active [default: the next FINISHED one in that direction].
    #[arg(long)]
    pub to: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// A bulk cancel or expire, or one run by id.
#[derive(Debug, Args)]
pub struct EndArgs {
    /// One operation; without it, every STARTED run the filters match (oldest first).
    pub id: Option<String>,
    #[command(flatten)]
    pub filter: OpFilterArgs,
    /// List what would be ended, end nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Runs ended at most in one call.
    #[arg(long, default_value_t = 1_000)]
    pub limit: usize,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum OpsCommand {
    /// List operations, newest first (oldest first with --oldest-first: abandoned runs
    /// with `--status STARTED --oldest-first`).
    List {
        #[command(flatten)]
        filter: OpFilterArgs,
        #[arg(long)]
        oldest_first: bool,
        /// Operations per page.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Continue a listing where a previous page ended.
        #[arg(long)]
        page_token: Option<String>,
        /// Follow every page to the end.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// How many operations match, per status.
    Counts {
        #[command(flatten)]
        filter: OpFilterArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one operation.
    Show {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel a STARTED operation, or in bulk the STARTED runs the filters match
    /// (`--older-than 6h`, `--idle-for 1h`, ...).
    Cancel(EndArgs),
    /// Expire a STARTED operation now, or in bulk as `cancel` does.
    Expire(EndArgs),
    /// Make an older FINISHED run of a key active again (the newest one older than the
    /// active run, or --to).
    Rollback(MoveArgs),
    /// Make a newer FINISHED run of a key active again after a rollback.
    Rollforward(MoveArgs),
    /// The activations of a key, newest first (finishes, rollbacks, roll forwards).
    History {
        #[command(flatten)]
        key: KeyArgs,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Run a garbage collection pass now (the server's retention), or show the
    /// retention and the last pass with --status.
    Gc {
        /// Report what would go, delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Annotations deleted at most in this pass.
        #[arg(long)]
        max_annotations: Option<usize>,
        /// Show the retention and the last pass instead.
        #[arg(long, conflicts_with_all = ["dry_run", "max_annotations"])]
        status: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The retry queue's dead letters: index work the reconciler gave up on.
    #[command(subcommand)]
    DeadLetters(DeadLetterCommand),
    /// Per operation, annotations in the store against documents in the index.
    Consistency {
        #[command(flatten)]
        filter: OpFilterArgs,
        /// Rebuild the index entries of every run that disagrees.
        #[arg(long)]
        repair: bool,
        /// Show only the runs that disagree.
        #[arg(long)]
        only_disagreeing: bool,
        /// Operations checked at most (newest first).
        #[arg(long, default_value_t = 1_000)]
        limit: usize,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeadLetterCommand {
    /// List dead letters.
    List {
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one dead letter, with its annotation ids and its run.
    Show {
        work_id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Put dead letters back in the retry queue (after fixing the index).
    Redrive {
        /// Work ids; or --all.
        work_ids: Vec<String>,
        #[arg(long, conflicts_with = "work_ids")]
        all: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete dead letters (their pending work stays, and is retried later, unless its
    /// run is gone or garbage collected).
    Purge {
        work_ids: Vec<String>,
        #[arg(long, conflicts_with = "work_ids")]
        all: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}
