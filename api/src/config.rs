//! Configuration: defaults, then `annostore.toml` (or `--config FILE`), then
//! `ANNOSTORE_*` environment variables (`__` separates sections, as in
//! `ANNOSTORE_LIMITS__MAX_BATCH=500`), then command-line flags.

use annostore_core::validate::Limits;
use annostore_reconciler::ReconcilerConfig;
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
    /// Annotations that may be acknowledged and not yet indexed; producers wait beyond.
    pub index_in_flight: u32,
    pub limits: Limits,
    pub store: EngineConfig,
    pub index: EngineConfig,
    pub queue: EngineConfig,
    pub events: EngineConfig,
    pub reconciler: ReconcilerConfig,
}

/// Which engine serves a seam. Only `embedded` exists yet; the distributed engines
/// come as further kinds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    pub kind: String,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            kind: "embedded".into(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./annostore-data"),
            expiry_sweep_seconds: 5,
            index_in_flight: annostore_core::service::DEFAULT_INDEX_IN_FLIGHT,
            limits: Limits::default(),
            store: EngineConfig::default(),
            index: EngineConfig::default(),
            queue: EngineConfig::default(),
            events: EngineConfig::default(),
            reconciler: ReconcilerConfig::default(),
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
                .ignore(&["server", "config", "log"]),
        )
        .merge(overrides)
        .extract()
        .map_err(Box::new)
    }
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
    fn unknown_keys_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("annostore.toml", "lisen = \"x\"\n")?;
            assert!(Config::load(None, Figment::new()).is_err());
            Ok(())
        });
    }
}
