//! Configuration: defaults, then `annostore.toml` (or `--config FILE`), then
//! `ANNOSTORE_*` environment variables (`__` separates sections, as in
//! `ANNOSTORE_LIMITS__MAX_BATCH=500`), then command-line flags.

use annostore_cassandra::CassandraConfig;
use annostore_core::validate::Limits;
use annostore_elastic::ElasticConfig;
use annostore_kafka::KafkaConfig;
use annostore_reconciler::ReconcilerConfig;
use annostore_sqs::SqsConfig;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// Where the embedded engines keep their files.
    pub data_dir: PathBuf,
    /// Seconds between sweeps that expire operations whose lease lapsed.
    pub expiry_sweep_seconds: u64,
    /// Seconds between reloads of the active operations from the store: the safety net
    /// for operation events this node missed.
    pub visibility_refresh_seconds: u64,
    /// Annotations that may be acknowledged and not yet indexed; producers wait beyond.
    pub index_in_flight: u32,
    /// The longest one index call may take: past it a search is a 503 and a write
    /// stays pending for the reconciler.
    pub index_timeout_ms: u64,
    pub limits: Limits,
    pub store: StoreConfig,
    pub index: IndexConfig,
    pub queue: QueueConfig,
    pub events: EventsConfig,
    pub reconciler: ReconcilerConfig,
    pub search: SearchConfig,
    pub auth: AuthConfig,
    pub tls: TlsConfig,
    pub http: HttpConfig,
    pub runs: RunsConfig,
    pub gc: GcConfig,
    pub ui: UiConfig,
}

/// `[auth]`: who may call the API (`annostore keys ...` manages the keys file).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The API keys file [default: `data_dir/keys.json`]. With no key in it the API is
    /// open, and `serve` listens on loopback only unless `insecure`.
    pub keys_file: Option<PathBuf>,
    /// Serve an address beyond loopback with no keys: anyone who reaches it may do
    /// anything (flag `--insecure`).
    pub insecure: bool,
}

impl Config {
    pub fn keys_file(&self) -> PathBuf {
        self.auth
            .keys_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys.json"))
    }
}

/// `[tls]`: HTTPS (rustls) when both PEM files are set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, PEM.
    pub cert: Option<PathBuf>,
    /// Private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

/// `[http]`: how much work the API takes on at once, and for how long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Requests handled at once (health and metrics aside).
    pub max_in_flight: usize,
    /// Requests that may wait for a slot; beyond, 503 with `Retry-After` at once.
    pub max_queued: usize,
    /// The longest a request waits for a slot before its 503.
    pub queue_timeout_ms: u64,
    /// The longest a request may take once admitted (reading its body included);
    /// beyond, 503. Work it started in the store completes or is replayed.
    pub request_timeout_seconds: u64,
    /// What `Retry-After` says on a 503 of this layer.
    pub retry_after_seconds: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_in_flight: 256,
            max_queued: 1024,
            queue_timeout_ms: 2_000,
            request_timeout_seconds: 60,
            retry_after_seconds: 1,
        }
    }
}

/// `[runs]`: one-call runs (`POST /v1/runs`): a whole run in one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunsConfig {
    /// The directory whose files `{"file": "relative/path.ndjson"}` may name; none by
    /// default (the server reads no files then).
    pub file_root: Option<PathBuf>,
    /// Largest run, in bytes of NDJSON (413 past it, and the run is cancelled).
    pub max_bytes: u64,
    /// Longest a run may take, from its first byte to its finish; past it the run is
    /// cancelled. Replaces `[http] request_timeout_seconds` for `POST /v1/runs`.
    pub timeout_seconds: u64,
}

impl Default for RunsConfig {
    fn default() -> Self {
        RunsConfig {
            file_root: None,
            max_bytes: 1024 * 1024 * 1024,
            timeout_seconds: 3_600,
        }
    }
}

/// `[ui]`: the web viewer at `/ui/`, and the media files it plays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UiConfig {
    /// Serve the page (false: no `/ui` routes at all, 404).
    pub enabled: bool,
    /// The directory `GET /v1/media/{media_id}/file` serves `<media_id>` from; none by
    /// default (404).
    pub media_root: Option<PathBuf>,
    /// Where the page finds a media item's video instead, `{media_id}` standing for its
    /// id: `https://cdn.example/videos/{media_id}` or a path on this server.
    pub media_url_template: Option<String>,
    /// How often the page looks for new runs, in seconds (1 to 3600).
    pub poll_seconds: u32,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            enabled: true,
            media_root: None,
            media_url_template: None,
            poll_seconds: 5,
        }
    }
}

impl UiConfig {
    /// Checks what serde cannot: the template's shape and the poll period.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=3_600).contains(&self.poll_seconds) {
            return Err(format!(
                "[ui] poll_seconds must be between 1 and 3600, not {}",
                self.poll_seconds
            ));
        }
        if let Some(template) = &self.media_url_template {
            media_origin(template).map_err(|why| {
                format!("[ui] media_url_template {template:?} is not usable: {why}")
            })?;
        }
        Ok(())
    }

    /// The origin the page loads media from besides this server, for the
    /// Content-Security-Policy: the template's scheme and host, when it names one.
    pub fn media_origin(&self) -> Option<String> {
        self.media_url_template
            .as_deref()
            .and_then(|t| media_origin(t).ok().flatten())
    }
}

/// The origin of a media URL template (`None` for a path on this server), or why the
/// template cannot be used: it must hold `{media_id}` and be an http(s) URL or an
/// absolute path, and `{media_id}` may not stand in its host (the origin goes into the
/// page's Content-Security-Policy).
fn media_origin(template: &str) -> Result<Option<String>, &'static str> {
    if !template.contains("{media_id}") {
        return Err("it must contain {media_id}");
    }
    if template
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("it may not contain spaces or control characters");
    }
    if template.starts_with('/') && !template.starts_with("//") {
        return Ok(None);
    }
    let url = url::Url::parse(template).map_err(|_| "it must start with http://, https:// or /")?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("only http:// and https:// URLs are allowed");
    }
    match url.host_str() {
        Some(host) if !host.contains(['{', '}']) => {}
        _ => return Err("its host must be a plain host name (and port), without {media_id}"),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("it may not hold a user name or password");
    }
    Ok(Some(url.origin().ascii_serialization()))
}

/// `[gc]`: retention of runs that can no longer be visible, and the background garbage
/// collection that deletes their annotations from index and store after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// Run passes in the background of `serve`.
    pub enabled: bool,
    /// Seconds between passes.
    pub interval_seconds: u64,
    /// How long a superseded (or rolled back from) FINISHED run keeps its
    /// annotations, so that a rollback can bring it back.
    pub superseded_retention_hours: u64,
    /// How long a CANCELLED or EXPIRED run keeps its annotations.
    pub ended_retention_hours: u64,
    /// Annotations deleted at most per pass (the rest waits for the next one).
    pub max_annotations_per_pass: usize,
    /// Annotations deleted per store call.
    pub batch: usize,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            enabled: true,
            interval_seconds: 3_600,
            superseded_retention_hours: 7 * 24,
            ended_retention_hours: 24,
            max_annotations_per_pass: 100_000,
            batch: 1_000,
        }
    }
}

impl GcConfig {
    pub fn options(&self) -> annostore_core::service::GcOptions {
        use std::time::Duration;
        annostore_core::service::GcOptions {
            retention: annostore_core::service::Retention {
                superseded: Duration::from_secs(self.superseded_retention_hours * 3_600),
                ended: Duration::from_secs(self.ended_retention_hours * 3_600),
            },
            max_annotations: self.max_annotations_per_pass,
            batch: self.batch.max(1),
            dry_run: false,
        }
    }
}

/// `[search]`: what search needs beyond the index.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// Turns `knn.text` queries into vectors (text-to-image search).
    pub text_encoder: TextEncoderConfig,
}

/// `[search.text_encoder]`: none by default (`knn.text` answers 422).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TextEncoderConfig {
    #[default]
    None,
    /// A BERT-style or CLIP text ONNX model and its `tokenizer.json`: MiniLM for the
    /// bridge that `annostore ingest --text-encoder` writes, or a CLIP text tower for
    /// runs embedded by the matching CLIP image tower.
    Onnx(OnnxTextEncoderConfig),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxTextEncoderConfig {
    pub model: PathBuf,
    pub tokenizer: PathBuf,
    /// libonnxruntime.so [default: ORT_DYLIB_PATH, then the venv's onnxruntime wheel].
    #[serde(default)]
    pub onnxruntime: Option<PathBuf>,
}

/// `[store]`: where the truth lives.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum StoreConfig {
    /// fjall, in `data_dir/store`.
    #[default]
    Embedded,
    /// Cassandra or ScyllaDB.
    Cassandra(Box<CassandraConfig>),
}

/// `[index]`: what answers searches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum IndexConfig {
    /// tantivy, in `data_dir/index`.
    #[default]
    Embedded,
    /// Elasticsearch (8.x, 9.x).
    Elasticsearch(Box<ElasticConfig>),
}

/// `[queue]`: where failed index work waits for a retry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum QueueConfig {
    /// In the embedded store's fjall database, `data_dir/store`.
    #[default]
    Embedded,
    /// Amazon SQS, or an SQS-compatible server (`endpoint`).
    Sqs(Box<SqsConfig>),
}

/// `[events]`: how operation changes reach the other API nodes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum EventsConfig {
    /// In-process only: one node.
    #[default]
    Embedded,
    /// A Kafka topic every node consumes.
    Kafka(Box<KafkaConfig>),
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./annostore-data"),
            expiry_sweep_seconds: 5,
            visibility_refresh_seconds: 30,
            index_in_flight: annostore_core::service::DEFAULT_INDEX_IN_FLIGHT,
            index_timeout_ms: annostore_core::service::DEFAULT_INDEX_TIMEOUT.as_millis() as u64,
            limits: Limits::default(),
            store: StoreConfig::default(),
            index: IndexConfig::default(),
            queue: QueueConfig::default(),
            events: EventsConfig::default(),
            reconciler: ReconcilerConfig::default(),
            search: SearchConfig::default(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            http: HttpConfig::default(),
            runs: RunsConfig::default(),
            gc: GcConfig::default(),
            ui: UiConfig::default(),
        }
    }
}

impl Config {
    /// Loads the layered configuration. `file` is the `--config` flag: when given it
    /// must exist; when absent, `./annostore.toml` is read if it exists.
    pub fn load(file: Option<&Path>, overrides: Figment) -> Result<Config, Box<figment::Error>> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => {
                if !path.exists() {
                    return Err(Box::new(figment::Error::from(format!(
                        "config file {} does not exist",
                        path.display()
                    ))));
                }
                fig = fig.merge(Toml::file(path));
            }
            None => fig = fig.merge(Toml::file("annostore.toml")),
        }
        fig.merge(
            Env::prefixed("ANNOSTORE_")
                .split("__")
                .filter(|key| !not_configuration(key.as_str())),
        )
        .merge(overrides)
        .extract()
        .map_err(Box::new)
    }
}

/// `ANNOSTORE_*` variables that are not configuration: the CLI's own (`SERVER`,
/// `CONFIG`, `LOG`, `API_KEY`, `UI_DIST`, `UI_PREBUILT`) and the test suite's (`TEST_*`, `REQUIRE_*`, `VENV`, `MOTO_SERVER`).
fn not_configuration(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "server",
        "config",
        "log",
        "api_key",
        "venv",
        "moto_server",
        // The web viewer's: a page on disk to serve instead (`ui.rs`), and one to embed
        // (`build.rs`).
        "ui_dist",
        "ui_prebuilt",
    ]
    .contains(&key.as_str())
        || key.starts_with("test_")
        || key.starts_with("require_")
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error by design.
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "annostore.toml",
                "listen = \"127.0.0.1:9000\"\n[limits]\nmax_batch = 50\n",
            )?;
            jail.set_env("ANNOSTORE_LIMITS__MAX_PAGE_SIZE", "20");
            let c = Config::load(None, Figment::new()).map_err(|e| e.to_string())?;
            assert_eq!(c.listen, "127.0.0.1:9000");
            assert_eq!(c.limits.max_batch, 50);
            assert_eq!(c.limits.max_page_size, 20);
            let flags = Figment::from(Serialized::default("listen", "127.0.0.1:1"));
            let c = Config::load(None, flags).map_err(|e| e.to_string())?;
            assert_eq!(c.listen, "127.0.0.1:1");
            Ok(())
        });
    }

    #[test]
    fn engines_are_chosen_by_kind_from_the_file_or_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "annostore.toml",
                "[store]\nkind = \"cassandra\"\nkeyspace = \"media\"\n[queue]\nkind = \"sqs\"\n",
            )?;
            jail.set_env("ANNOSTORE_INDEX__KIND", "elasticsearch");
            jail.set_env("ANNOSTORE_INDEX__URL", "http://es:9200");
            jail.set_env("ANNOSTORE_QUEUE__ENDPOINT", "http://sqs:9324");
            let c = Config::load(None, Figment::new()).map_err(|e| e.to_string())?;
            let StoreConfig::Cassandra(store) = &c.store else {
                panic!("store: {:?}", c.store)
            };
            assert_eq!(store.keyspace, "media");
            assert_eq!(
                store.contact_points,
                CassandraConfig::default().contact_points
            );
            let IndexConfig::Elasticsearch(index) = &c.index else {
                panic!("index: {:?}", c.index)
            };
            assert_eq!(index.url, "http://es:9200");
            let QueueConfig::Sqs(queue) = &c.queue else {
                panic!("queue: {:?}", c.queue)
            };
            assert_eq!(queue.endpoint.as_deref(), Some("http://sqs:9324"));
            assert_eq!(c.events, EventsConfig::Embedded);
            Ok(())
        });
    }

    #[test]
    fn an_unknown_engine_or_engine_key_is_an_error() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("annostore.toml", "[store]\nkind = \"mysql\"\n")?;
            let e = Config::load(None, Figment::new()).unwrap_err().to_string();
            assert!(e.contains("mysql"), "{e}");
            jail.create_file(
                "annostore.toml",
                "[store]\nkind = \"cassandra\"\nkeyspac = \"x\"\n",
            )?;
            let e = Config::load(None, Figment::new()).unwrap_err().to_string();
            assert!(e.contains("keyspac"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn test_settings_in_the_environment_are_not_configuration() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("ANNOSTORE_REQUIRE_MOTO", "1");
            jail.set_env("ANNOSTORE_TEST_ES_URL", "http://es:9200");
            jail.set_env("ANNOSTORE_VENV", "/tmp/venv");
            assert!(Config::load(None, Figment::new()).is_ok());
            jail.set_env("ANNOSTORE_LISEN", "x");
            assert!(Config::load(None, Figment::new()).is_err());
            Ok(())
        });
    }

    #[test]
    fn the_ui_section_reads_from_the_environment_and_checks_its_template() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("ANNOSTORE_UI__MEDIA_ROOT", "/srv/media");
            jail.set_env("ANNOSTORE_UI__POLL_SECONDS", "9");
            jail.set_env("ANNOSTORE_UI_DIST", "ui/dist");
            let c = Config::load(None, Figment::new()).map_err(|e| e.to_string())?;
            assert_eq!(c.ui.media_root, Some(PathBuf::from("/srv/media")));
            assert_eq!(c.ui.poll_seconds, 9);
            assert!(c.ui.enabled);
            assert_eq!(c.ui.validate(), Ok(()));
            assert_eq!(c.ui.media_origin(), None);
            Ok(())
        });
        let with = |t: &str| UiConfig {
            media_url_template: Some(t.into()),
            ..UiConfig::default()
        };
        for (ok, origin) in [
            (
                "https://cdn.example/v/{media_id}",
                Some("https://cdn.example"),
            ),
            (
                "http://127.0.0.1:9000/{media_id}?x=1",
                Some("http://127.0.0.1:9000"),
            ),
            (
                "https://cdn.example?m={media_id}",
                Some("https://cdn.example"),
            ),
            ("/media/{media_id}", None),
        ] {
            assert_eq!(with(ok).validate(), Ok(()), "{ok}");
            assert_eq!(with(ok).media_origin().as_deref(), origin, "{ok}");
        }
        for bad in [
            "https://cdn.example/v/",
            "ftp://cdn.example/{media_id}",
            "//cdn.example/{media_id}",
            "media/{media_id}",
            "https://{media_id}.cdn.example/",
            "https://cdn.example; script-src *;/{media_id}",
            "https:///{media_id}",
            "https://user@cdn.example/{media_id}",
        ] {
            assert!(with(bad).validate().is_err(), "{bad}");
        }
        for poll in [0, 3_601] {
            let c = UiConfig {
                poll_seconds: poll,
                ..UiConfig::default()
            };
            assert!(c.validate().is_err(), "{poll}");
        }
    }

    #[test]
    fn unknown_keys_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("annostore.toml", "lisen = \"x\"\n")?;
            assert!(Config::load(None, Figment::new()).is_err());
            Ok(())
        });
    }
}
