//! The command line (clap). Every `serve` flag can also come from the config file and
//! `ANNOSTORE_*` variables; flags win.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

mod ops;
pub use ops::{
    AdminCommand, DeadLetterCommand, EndArgs, KeyArgs, MoveArgs, OpFilterArgs, OpsCommand,
};

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
    /// Operations on a running server: list (by status, type, version, pivot,
    /// producer, metadata, age), count, show, cancel or expire (one or in bulk),
    /// rollback, roll forward, activation history.
    #[command(subcommand)]
    Ops(OpsCommand),
    /// Upkeep of a running server: garbage collection, dead letters, consistency.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Write a whole run in one call (`POST /v1/runs`): start, upsert, finish, or
    /// cancel on the first error.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Search a running server's visible annotations (the common cases of
    /// `POST /v1/annotations/search`; `--count` aggregates instead).
    Search(SearchArgs),
    /// When do several labels (or text queries) appear together in one media item?
    Cooccur(CooccurArgs),
    /// Rebuild index entries from the store on a running server (after losing or
    /// damaging the index).
    Reindex(ReindexArgs),
    /// Run the reconciler on the configured engines: retry failed index work, re-enqueue
    /// forgotten work, audit the index against the store.
    Reconcile(ReconcileArgs),
    /// Create the tables, index templates, queues and topics the configured engines need.
    #[command(subcommand)]
    Schema(SchemaCommand),
    /// Manage the API keys file (roles producer, reader, admin); a running server
    /// notices changes on its next request.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Detect objects in videos and write each video's run to a server: decode, detect,
    /// embed crops, upsert, finish (cancelled on failure).
    Ingest(IngestArgs),
    /// Start runs for videos and publish one Kafka task per segment for `worker`s.
    Submit(SubmitArgs),
    /// Process segment tasks from Kafka (stateless; run as many as you like) and finish
    /// runs whose segments are all done.
    Worker(WorkerArgs),
}

/// The models a run uses.
#[derive(Debug, Args, Clone)]
pub struct ModelArgs {
    /// Detector ONNX model: CenterNet-style [1,N,6] or YOLOv8-style [1,4+C,anchors] output.
    #[arg(long, env = "ANNOSTORE_DETECTOR")]
    pub detector: PathBuf,
    /// Class names, one per line [default: coco_classes.txt beside the detector].
    #[arg(long, env = "ANNOSTORE_CLASSES")]
    pub classes: Option<PathBuf>,
    /// Drop detections scoring below this.
    #[arg(long, default_value_t = 0.3)]
    pub score_threshold: f32,
    /// Input size of a detector whose input size is dynamic (frames are stretched to
    /// it); a fixed size in the model wins.
    #[arg(long, default_value_t = 640)]
    pub detector_size: u32,
    /// Image embedder ONNX model ([N,3,H,W] in, [N,D] out) for crop embeddings; none
    /// when absent.
    #[arg(long, env = "ANNOSTORE_EMBEDDER")]
    pub embedder: Option<PathBuf>,
    /// The embedder's output holding the vector [default: `embedding`, else the first].
    #[arg(long)]
    pub embedder_output: Option<String>,
    /// Crop size fed to an embedder whose input size is dynamic (a fixed size wins).
    #[arg(long, default_value_t = 224)]
    pub embedder_size: u32,
    /// Per-channel (R,G,B) mean subtracted from crops scaled to 0..1.
    #[arg(long, value_delimiter = ',', default_values_t = [0.485, 0.456, 0.406])]
    pub embedder_mean: Vec<f32>,
    /// Per-channel (R,G,B) standard deviation crops are divided by, after the mean.
    #[arg(long, value_delimiter = ',', default_values_t = [0.229, 0.224, 0.225])]
    pub embedder_std: Vec<f32>,
    /// Text encoder ONNX model (BERT-style, mean-pooled, or a CLIP-style text tower with a
    /// pooled output): each crop's vector becomes the mix of the text vectors of "a photo
    /// of a <class>" for its top embedder classes and its detector label, so that text
    /// queries encoded by the same model find it. Needs --embedder with class logits.
    #[arg(long, env = "ANNOSTORE_TEXT_ENCODER", requires = "embedder")]
    pub text_encoder: Option<PathBuf>,
    /// The text encoder's tokenizer.json [default: tokenizer.json beside the model].
    #[arg(long, requires = "text_encoder")]
    pub tokenizer: Option<PathBuf>,
    /// The embedder's class names for --text-encoder, one per line, line N = logit N
    /// [default: imagenet_classes.txt beside the embedder].
    #[arg(long, requires = "text_encoder")]
    pub embedder_classes: Option<PathBuf>,
    /// The embedder's output of class logits ([N, classes]) for --text-encoder.
    #[arg(long, default_value = "logits")]
    pub embedder_logits: String,
    /// Classes mixed into a crop's text-space vector, the most probable first.
    #[arg(long, default_value_t = 5)]
    pub text_top_classes: usize,
    /// Weight of the detector label's text vector in a crop's text-space vector (the
    /// classes' weights, their probabilities, add up to at most 1).
    #[arg(long, default_value_t = annostore_ingest::textspace::DEFAULT_LABEL_WEIGHT)]
    pub text_label_weight: f32,
    /// libonnxruntime.so [default: ORT_DYLIB_PATH, then the onnxruntime wheel in
    /// /var/tmp/annostore-venv].
    #[arg(long, env = "ANNOSTORE_ONNXRUNTIME")]
    pub onnxruntime: Option<PathBuf>,
}

/// How videos are cut and their runs written.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Sampled frames per second of video.
    #[arg(long, default_value_t = 1.0)]
    pub fps: f64,
    /// Longest segment in seconds (the unit of parallel work); `ingest` evens segments
    /// out to a multiple of its `--jobs`.
    #[arg(long, default_value_t = 10.0)]
    pub segment_seconds: f64,
    /// Annotation type of the runs (registered if missing) [default: `objects`, or
    /// `objects-text` with --text-encoder: a type version's embedding length never
    /// changes, so text-space vectors get a type of their own].
    #[arg(long = "type")]
    pub annotation_type: Option<String>,
    #[arg(long, default_value_t = 1)]
    pub type_version: u32,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Local files or http(s) URLs.
    #[arg(required = true)]
    pub videos: Vec<String>,
    /// Media id of the video [default: its file name]; only with one video.
    #[arg(long)]
    pub media_id: Option<String>,
    /// Segments computed at once [default: the number of CPUs].
    #[arg(long)]
    pub jobs: Option<usize>,
    #[command(flatten)]
    pub models: ModelArgs,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Where the segment tasks go.
#[derive(Debug, Args, Clone)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (host:port,...).
    #[arg(long, env = "ANNOSTORE_KAFKA_BROKERS")]
    pub kafka: String,
    /// Topic of segment tasks.
    #[arg(long, default_value = "annostore-ingest-tasks")]
    pub tasks_topic: String,
    /// Topic where workers report segments done or failed.
    #[arg(long, default_value = "annostore-ingest-progress")]
    pub progress_topic: String,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[arg(required = true)]
    pub videos: Vec<String>,
    #[arg(long)]
    pub media_id: Option<String>,
    /// Partitions of the task and progress topics when this creates them.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Replication factor of the topics when this creates them.
    #[arg(long, default_value_t = 1)]
    pub replication: i32,
    /// Length of the embeddings the workers' embedder gives (registers the type with
    /// it); 0 for workers without an embedder; the text encoder's length for workers
    /// with --text-encoder (384 for MiniLM), with `--type objects-text`.
    #[arg(long, default_value_t = 1280)]
    pub embedding_dim: usize,
    /// Wait until every run is finished or cancelled, and print them.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Consumer group shared by every worker.
    #[arg(long, default_value = "annostore-ingest-workers")]
    pub group: String,
    /// Segments this worker computes at once (each with its own consumer and models).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// A worker that stops heartbeating for this long loses its tasks to the others.
    #[arg(long, default_value_t = 10_000)]
    pub session_timeout_ms: u64,
    /// The longest one segment may take before the worker counts as stuck.
    #[arg(long, default_value_t = 300_000)]
    pub max_poll_interval_ms: u64,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub models: ModelArgs,
    #[command(flatten)]
    pub client: ClientArgs,
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
pub enum KeysCommand {
    /// Create a key and print it (its secret is shown only now).
    Create {
        /// A name for people: who or what uses the key.
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        role: crate::auth::Role,
        /// Print {id, name, role, key} as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        engines: EngineArgs,
    },
    /// List the keys (never their secrets).
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        engines: EngineArgs,
    },
    /// Revoke the key with this id, or every active key with this name.
    Revoke {
        key: String,
        #[command(flatten)]
        engines: EngineArgs,
    },
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
    /// Listen beyond loopback with no API keys configured: anyone who reaches the
    /// server may do anything.
    #[arg(long)]
    pub insecure: bool,
    #[command(flatten)]
    pub engines: EngineArgs,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Media item(s) to search (repeat for several).
    #[arg(long = "media")]
    pub media: Vec<String>,
    /// Annotation type(s) (repeat for several).
    #[arg(long = "type")]
    pub types: Vec<String>,
    /// Type version.
    #[arg(long)]
    pub version: Option<u32>,
    /// Exact label(s) (repeat for any of several).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Full-text query over labels and searchable data fields (fuzzy).
    #[arg(long)]
    pub text: Option<String>,
    /// Exact words only for --text.
    #[arg(long)]
    pub exact: bool,
    /// Start of the time range, in milliseconds.
    #[arg(long)]
    pub from_ms: Option<i64>,
    /// End of the time range, in milliseconds.
    #[arg(long)]
    pub to_ms: Option<i64>,
    /// Region of the frame as x,y,w,h (normalised); boxes intersecting it.
    #[arg(long, value_delimiter = ',', num_args = 4)]
    pub region: Option<Vec<f64>>,
    #[arg(long)]
    pub min_confidence: Option<f32>,
    /// time, confidence or score.
    #[arg(long)]
    pub sort: Option<String>,
    /// Nearest neighbours of this text's meaning (text-to-image), top --k.
    #[arg(long)]
    pub like: Option<String>,
    #[arg(long, default_value_t = 10)]
    pub k: u32,
    /// Most annotations to print (pages are followed).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Count instead of listing: by `label`, `type`, or `histogram:<interval_ms>`.
    #[arg(long)]
    pub count: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct CooccurArgs {
    /// The media item.
    #[arg(long = "media")]
    pub media: String,
    /// A condition: an exact label, or `text:<words>`; repeat for each (one alone gives
    /// the spans where it holds).
    #[arg(long = "with", required = true, num_args = 1)]
    pub with: Vec<String>,
    /// Widen each annotation by this many ms on each side (500: "in the same second").
    #[arg(long, default_value_t = 0)]
    pub slack_ms: i64,
    #[command(flatten)]
    pub client: ClientArgs,
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
    /// API key, when the server requires one.
    #[arg(long, env = "ANNOSTORE_API_KEY", global = true, hide_env_values = true)]
    pub api_key: Option<String>,
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
pub enum RunsCommand {
    /// Send a run file: NDJSON, line 1 the start request (the body of
    /// `POST /v1/operations`), then one annotation per line. Prints the finished
    /// operation; on failure, exits non-zero naming the first bad line.
    Put(RunsPutArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["file", "file_on_server"])))]
pub struct RunsPutArgs {
    /// The run file, streamed to the server (with a progress bar on a terminal).
    pub file: Option<PathBuf>,
    /// Have the server read the run from this path under its `[runs] file_root`
    /// instead.
    #[arg(long)]
    pub file_on_server: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}
