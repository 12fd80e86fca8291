//! `annostore serve`: opens the engines, starts the background tasks and serves HTTP.

use crate::admission::Admission;
use crate::auth::Authenticator;
use crate::auth::keys::KeyFile;
use crate::config::{Config, TextEncoderConfig};
use crate::routes::{self, AppState};
use crate::ui::Ui;
use annostore_core::clock::{Clock, SystemClock};
use annostore_core::encode::TextEncoder;
use annostore_core::service::Service;
use annostore_ingest::text::OnnxTextEncoder;
use annostore_reconciler::Worker;
use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::{info, warn};

/// Opens the engines and the service over them, follows the other nodes' operation
/// events and loads the active operations (what `serve` and `reconcile` share).
pub async fn open_service(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<Service>> {
    let engines = crate::engines::open(config).await?;
    let mut service = Service::new(engines, config.limits.clone(), clock.clone())
        .with_index_in_flight(config.index_in_flight)
        .with_index_timeout(Duration::from_millis(config.index_timeout_ms.max(1)))
        .with_gc_options(config.gc.options());
    if let Some(encoder) = text_encoder(config).await? {
        service = service.with_text_encoder(encoder);
    }
    let service = Arc::new(service);
    // Follow the other nodes' operation events from before the active set is read, so
    // no change falls between the two.
    service.follow_events();
    let active = service
        .warm_up()
        .await
        .context("loading the active operations")?;
    service
        .recover()
        .await
        .context("refilling the index from the store")?;
    info!(active, "engines open");
    Ok(service)
}

/// The configured text encoder for `knn.text`, loaded off the async workers.
async fn text_encoder(config: &Config) -> anyhow::Result<Option<Arc<dyn TextEncoder>>> {
    let TextEncoderConfig::Onnx(c) = &config.search.text_encoder else {
        return Ok(None);
    };
    let c = c.clone();
    let encoder = tokio::task::spawn_blocking(move || {
        OnnxTextEncoder::open(&c.model, Some(&c.tokenizer), c.onnxruntime.as_deref())
            .with_context(|| format!("loading the text encoder {}", c.model.display()))
    })
    .await??;
    info!(dim = encoder.dim(), "text encoder loaded");
    Ok(Some(Arc::new(encoder)))
}

/// Re-enqueues every pending piece of index work: what a crash interrupted is replayed
/// before anything else (the sweep loop's first pass is one period away).
async fn sweep_at_start(service: &Service, clock: &dyn Clock) -> anyhow::Result<()> {
    let replay = service
        .reconciler()
        .sweep(clock.now(), usize::MAX)
        .await
        .context("re-enqueueing pending index work")?;
    info!(replay, "pending index work re-enqueued");
    Ok(())
}

fn install_metrics() -> Option<PrometheusHandle> {
    match PrometheusBuilder::new().install_recorder() {
        Ok(handle) => Some(handle),
        Err(e) => {
            warn!(error = %e, "metrics recorder not installed");
            None
        }
    }
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    let ui = Arc::new(Ui::new(config.ui.clone())?);
    crate::ui::check(&ui)?;
    let auth = Arc::new(authenticator(&config).await?);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let service = open_service(&config, clock.clone()).await?;
    sweep_at_start(&service, clock.as_ref()).await?;
    let metrics = install_metrics();
    spawn_expiry(service.clone(), &config);
    spawn_gc(service.clone(), &config);
    service.spawn_visibility_refresh(Duration::from_secs(
        config.visibility_refresh_seconds.max(1),
    ));
    // Held until shutdown: dropping the set stops the loops.
    let _reconciler = if config.reconciler.in_process {
        Some(
            Arc::new(Worker::new(
                service.clone(),
                clock,
                config.reconciler.clone(),
            ))
            .spawn(),
        )
    } else {
        info!(
            "reconciler not in process ([reconciler] in_process = false): run `annostore reconcile`"
        );
        None
    };

    let listener = TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let app = routes::router(AppState {
        service,
        metrics,
        auth,
        admission: Arc::new(Admission::new(config.http.clone()).with_runs_timeout(
            // The handler cancels a run past its own deadline; the request's timeout
            // leaves room for that cancel.
            Duration::from_secs(
                config.runs.timeout_seconds.max(1) + config.http.request_timeout_seconds.max(1),
            ),
        )),
        runs: Arc::new(config.runs.clone()),
        ui,
    });
    match tls(&config).await? {
        None => {
            // Tests and scripts read this line to learn the port when listening on :0.
            println!("annostore listening on http://{addr}");
            info!(%addr, data_dir = %config.data_dir.display(), "serving");
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown_signal())
                .await
                .context("serving HTTP")?;
        }
        Some(tls) => {
            println!("annostore listening on https://{addr}");
            info!(%addr, data_dir = %config.data_dir.display(), "serving HTTPS");
            let handle = axum_server::Handle::new();
            let stop = handle.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                stop.graceful_shutdown(Some(Duration::from_secs(30)));
            });
            axum_server::from_tcp_rustls(listener.into_std()?, tls)
                .handle(handle)
                .serve(app.into_make_service())
                .await
                .context("serving HTTPS")?;
        }
    }
    info!("shut down");
    Ok(())
}

/// Who may call: the keys file, and whether keys are required even while it has none
/// (an address beyond loopback, unless `--insecure`). Refuses to serve such an
/// address with no keys at all.
async fn authenticator(config: &Config) -> anyhow::Result<Authenticator> {
    let addrs: Vec<_> = tokio::net::lookup_host(&config.listen)
        .await
        .with_context(|| format!("resolving the listen address {}", config.listen))?
        .collect();
    let loopback = !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback());
    let required = !loopback && !config.auth.insecure;
    let auth = Authenticator::new(config.keys_file(), required);
    if required && KeyFile::load(auth.path())?.keys.is_empty() {
        anyhow::bail!(
            "refusing to listen on {} with no API keys: create one with \
             `annostore keys create --name NAME --role admin` ({}), listen on loopback, \
             or pass --insecure",
            config.listen,
            auth.path().display()
        );
    }
    if auth.enforcing() {
        info!(keys_file = %auth.path().display(), "API keys required");
    } else if loopback {
        info!(
            keys_file = %auth.path().display(),
            "no API keys: the API is open, on loopback only \
             (create keys with `annostore keys create` to serve beyond it)"
        );
    } else {
        warn!(
            listen = %config.listen,
            "no API keys and --insecure: anyone who reaches this address may do anything"
        );
    }
    Ok(auth)
}

/// The HTTPS configuration when `[tls]` names a certificate and a key.
async fn tls(config: &Config) -> anyhow::Result<Option<axum_server::tls_rustls::RustlsConfig>> {
    match (&config.tls.cert, &config.tls.key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => {
            // Err when a provider is installed already, which is as good.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .with_context(|| {
                    format!(
                        "loading the TLS certificate {} and key {}",
                        cert.display(),
                        key.display()
                    )
                })?;
            Ok(Some(tls))
        }
        _ => anyhow::bail!("[tls] needs both `cert` and `key`"),
    }
}

/// `annostore reconcile`: the reconciler as a process of its own. With `once`, drains
/// the retry queue, sweeps all pending work, audits, and exits; otherwise runs the loops
/// until a signal, serving `/metrics` on `metrics_listen` when given.
pub async fn reconcile(
    config: Config,
    once: bool,
    metrics_listen: Option<String>,
) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let service = open_service(&config, clock.clone()).await?;
    let worker = Arc::new(Worker::new(
        service.clone(),
        clock.clone(),
        config.reconciler.clone(),
    ));
    // One round sweeps everything itself.
    if once {
        let report = worker.run_once().await.context("reconciling")?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    sweep_at_start(&service, clock.as_ref()).await?;
    let metrics = install_metrics();
    let _loops = worker.spawn();
    match metrics_listen {
        Some(addr) => {
            let listener = TcpListener::bind(&addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            println!(
                "annostore reconcile metrics on http://{}",
                listener.local_addr()?
            );
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let text = metrics.as_ref().map(|m| m.render()).unwrap_or_default();
                    async move { text }
                }),
            );
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown_signal())
                .await
                .context("serving metrics")?;
        }
        None => shutdown_signal().await,
    }
    info!("reconciler shut down");
    Ok(())
}

/// Expires operations whose lease lapsed (lifecycle work: it stays with `serve`).
fn spawn_expiry(service: Arc<Service>, config: &Config) {
    let every = Duration::from_secs(config.expiry_sweep_seconds.max(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            match service.expire_lapsed().await {
                Ok(0) => {}
                Ok(n) => info!(expired = n, "expired operations whose lease lapsed"),
                Err(e) => warn!(error = %e, "expiry sweep failed"),
            }
        }
    });
}

/// Garbage collection passes (see `core/src/service/gc.rs`), every
/// `[gc] interval_seconds`; a failed pass is retried at the next tick, and a pass cut
/// short by a crash resumes where it stopped.
fn spawn_gc(service: Arc<Service>, config: &Config) {
    if !config.gc.enabled {
        info!("garbage collection is off ([gc] enabled = false)");
        return;
    }
    let every = Duration::from_secs(config.gc.interval_seconds.max(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let options = service.gc_options();
            if let Err(e) = service.collect_garbage(&options).await {
                warn!(error = %e, "garbage collection pass failed; retried at the next one");
            }
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
