//! The `annostore` command.

use annostore_api::auth::command as keys;
use annostore_api::cli::{Cli, Command, EngineArgs, KeysCommand, SchemaCommand};
use annostore_api::config::Config;
use annostore_api::{client, engines, ingest, server};
use anyhow::Context;
use clap::Parser;
use figment::Figment;
use figment::providers::Serialized;
use tracing_subscriber::EnvFilter;

// mimalloc: measured on the upsert path (annostore-bench), glibc's allocator spent about a
// fifth of the CPU in malloc/free and in zeroing pages that tantivy's arenas returned.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("ANNOSTORE_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => {
                let mut flags = Figment::new();
                if let Some(listen) = args.listen {
                    flags = flags.merge(Serialized::default("listen", listen));
                }
                if args.insecure {
                    flags = flags.merge(Serialized::default("auth.insecure", true));
                }
                let config = engine_config(&args.engines, flags)?;
                server::run(config).await
            }
            Command::Types(cmd) => client::types(cmd).await,
            Command::Ops(cmd) => client::ops(cmd).await,
            Command::Admin(cmd) => client::admin(cmd).await,
            Command::Runs(cmd) => client::runs(cmd).await,
            Command::Reindex(args) => client::reindex(args).await,
            Command::Search(args) => client::search(args).await,
            Command::Cooccur(args) => client::cooccur(args).await,
            Command::Reconcile(args) => {
                let config = engine_config(&args.engines, Figment::new())?;
                server::reconcile(config, args.once, args.metrics_listen).await
            }
            Command::Schema(SchemaCommand::Apply(args)) => {
                let config = engine_config(&args, Figment::new())?;
                engines::apply_schema(&config).await
            }
            Command::Keys(cmd) => match cmd {
                KeysCommand::Create {
                    name,
                    role,
                    json,
                    engines,
                } => keys::create(
                    &engine_config(&engines, Figment::new())?.keys_file(),
                    &name,
                    role,
                    json,
                ),
                KeysCommand::List { json, engines } => {
                    keys::list(&engine_config(&engines, Figment::new())?.keys_file(), json)
                }
                KeysCommand::Revoke { key, engines } => {
                    keys::revoke(&engine_config(&engines, Figment::new())?.keys_file(), &key)
                }
            },
            Command::Ingest(args) => ingest::ingest(args).await,
            Command::Submit(args) => ingest::submit(args).await,
            Command::Worker(args) => ingest::worker(args).await,
        }
    })
}

/// The layered configuration for a command that opens the engines itself, with its
/// own `flags` on top.
fn engine_config(args: &EngineArgs, mut flags: Figment) -> anyhow::Result<Config> {
    if let Some(dir) = &args.data_dir {
        flags = flags.merge(Serialized::default("data_dir", dir));
    }
    Config::load(args.config.as_deref(), flags).context("reading the configuration")
}
