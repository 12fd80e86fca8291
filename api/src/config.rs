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
    pub limits: Limits,
    pub store: StoreConfig,
    pub index: IndexConfig,
    pub queue: QueueConfig,
    pub events: EventsConfig,
    pub reconciler: ReconcilerConfig,
    pub search: SearchConfig,
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
            limits: Limits::default(),
            store: StoreConfig::default(),
            index: IndexConfig::default(),
            queue: QueueConfig::default(),
            events: EventsConfig::default(),
            reconciler: ReconcilerConfig::default(),
            search: SearchConfig::default(),
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
/// `CONFIG`, `LOG`) and the test suite's (`TEST_*`, `REQUIRE_*`, `VENV`, `MOTO_SERVER`).
fn not_configuration(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["server", "config", "log", "venv", "moto_server"].contains(&key.as_str())
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
    fn unknown_keys_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("annostore.toml", "lisen = \"x\"\n")?;
            assert!(Config::load(None, Figment::new()).is_err());
            Ok(())
        });
    }
}
