//! The command line (clap). Every `serve` flag can also come from the config file and
//! `ANNOSTORE_*` variables; flags win.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "annostore",
    version,
    about = "An annotation store for media ML, with operation-managed runs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API on the configured engines (embedded by default).
    Serve(ServeArgs),
    /// Register and list annotation types on a running server.
    #[command(subcommand)]
    Types(TypesCommand),
    /// List, show and cancel operations on a running server.
    #[command(subcommand)]
    Ops(OpsCommand),
    /// Rebuild index entries from the store on a running server (after losing or
    /// damaging the index).
    Reindex(ReindexArgs),
    /// Run the reconciler on the configured engines: retry failed index work, re-enqueue
    /// forgotten work, audit the index against the store.
    Reconcile(ReconcileArgs),
    /// Create the tables, index templates, queues and topics the configured engines need.
    #[command(subcommand)]
    Schema(SchemaCommand),
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// One round (drain the queue, re-enqueue all pending work, audit), print what it
    /// did as JSON, and exit.
    #[arg(long)]
    pub once: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics while running.
    #[arg(long)]
    pub metrics_listen: Option<String>,
    #[command(flatten)]
    pub engines: EngineArgs,
}

#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Apply every schema the configuration's engines need (idempotent).
    Apply(EngineArgs),
}

/// Where the engines are: the configuration file and the embedded data directory.
#[derive(Debug, Args, Clone)]
pub struct EngineArgs {
    /// Directory of the embedded engines [default: ./annostore-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Configuration file [default: ./annostore.toml when it exists].
    #[arg(long, env = "ANNOSTORE_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["operation", "all"])))]
pub struct ReindexArgs {
    /// The operation to reindex.
    #[arg(long)]
    pub operation: Option<String>,
    /// Every STARTED and FINISHED operation.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long)]
    pub listen: Option<String>,
    #[command(flatten)]
    pub engines: EngineArgs,
}

#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// URL of the annostore server.
    #[arg(
        long,
        env = "ANNOSTORE_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub server: String,
    /// Print JSON (one object per line for lists) instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum TypesCommand {
    /// Register a type version (immutable once registered).
    Put {
        name: String,
        version: u32,
        /// JSON Schema file for the annotations' `data` [default: any object].
        #[arg(long)]
        schema: Option<PathBuf>,
        /// Length of the embeddings annotations of this type carry.
        #[arg(long)]
        embedding_dim: Option<u32>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List registered type versions.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum OpsCommand {
    /// List operations, newest first.
    List {
        /// STARTED, FINISHED, CANCELLED or EXPIRED.
        #[arg(long)]
        status: Option<String>,
        #[arg(long = "type")]
        annotation_type: Option<String>,
        #[arg(long)]
        pivot: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one operation.
    Show {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel a STARTED operation.
    Cancel {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}
