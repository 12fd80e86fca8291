//! `annostore serve`: opens the engines, starts the background tasks and serves HTTP.

use crate::config::Config;
use crate::routes::{self, AppState};
use annostore_core::clock::{Clock, SystemClock};
use annostore_core::service::{DEFAULT_VISIBILITY_REFRESH, Engines, Service};
use anyhow::{Context, bail};
use metrics_exporter_prometheus::PrometheusBuilder;
use std::sync::Arc;
use std::time::Duration;
use time::Duration as TimeDuration;
use tokio::net::TcpListener;
use tracing::{info, warn};

/// Opens the engines the configuration names.
pub fn open_engines(config: &Config) -> anyhow::Result<Engines> {
    for (seam, engine) in [
        ("store", &config.store),
        ("index", &config.index),
        ("queue", &config.queue),
    ] {
        if engine.kind != "embedded" {
            bail!(
                "[{seam}] kind = {:?} is not available in this build; use \"embedded\"",
                engine.kind
            );
        }
    }
    annostore_embedded::open(&config.data_dir).with_context(|| {
        format!(
            "opening the embedded engines in {}",
            config.data_dir.display()
        )
    })
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    let engines = open_engines(&config)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let service = Arc::new(
        Service::new(engines, config.limits.clone(), clock.clone())
            .with_index_in_flight(config.index_in_flight),
    );
    // Other nodes' operation events, followed from before the warm-up so none falls
    // between the two; the periodic refresh covers events the transport lost.
    service.follow_events();
    service.spawn_visibility_refresh(DEFAULT_VISIBILITY_REFRESH);
    let active = service
        .warm_up()
        .await
        .context("loading the active operations")?;
    // Index work that a crash interrupted is replayed before anything else.
    let replay = service
        .reconciler()
        .sweep(clock.now(), usize::MAX)
        .await
        .context("re-enqueueing pending index work")?;
    info!(active, replay, "engines open");

    let metrics = match PrometheusBuilder::new().install_recorder() {
        Ok(handle) => Some(handle),
        Err(e) => {
            warn!(error = %e, "metrics recorder not installed");
            None
        }
    };
    spawn_background(service.clone(), &config, clock);

    let listener = TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    // Tests and scripts read this line to learn the port when listening on :0.
    println!("annostore listening on http://{addr}");
    info!(%addr, data_dir = %config.data_dir.display(), "serving");
    let app = routes::router(AppState { service, metrics });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP")?;
    info!("shut down");
    Ok(())
}

fn spawn_background(service: Arc<Service>, config: &Config, clock: Arc<dyn Clock>) {
    let s = service.clone();
    let every = Duration::from_secs(config.expiry_sweep_seconds.max(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            match s.expire_lapsed().await {
                Ok(0) => {}
                Ok(n) => info!(expired = n, "expired operations whose lease lapsed"),
                Err(e) => warn!(error = %e, "expiry sweep failed"),
            }
            record_backlog(&s).await;
        }
    });
    let s = service.clone();
    let every = Duration::from_millis(config.reconcile_interval_ms.max(10));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = s.reconciler().run_queue_once(100).await {
                warn!(error = %e, "reconciler pass failed");
            }
        }
    });
    let age = config.pending_sweep_seconds.max(1);
    tokio::spawn(async move {
        // The first sweep is one period away: start-up has just swept everything.
        let every = Duration::from_secs(age);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tick.tick().await;
            let cutoff = clock.now() - TimeDuration::seconds(age as i64);
            if let Err(e) = service.reconciler().sweep(cutoff, 10_000).await {
                warn!(error = %e, "pending-work sweep failed");
            }
        }
    });
}

/// Gauges of the index work still to do: annotations on their way through the index
/// pipeline, the retry queue's depth and dead letters, and the age of the oldest
/// pending record in the store.
async fn record_backlog(service: &Service) {
    metrics::gauge!("annostore_index_in_flight").set(service.index_in_flight() as f64);
    let engines = service.engines();
    if let Ok(depth) = engines.queue.depth().await {
        metrics::gauge!("annostore_retry_queue_depth").set(depth as f64);
    }
    if let Ok(dead) = engines.queue.dead_letter_count().await {
        metrics::gauge!("annostore_retry_dead_letters").set(dead as f64);
    }
    if let Ok(oldest) = engines.store.pending_work(None, 1).await {
        let age = oldest
            .first()
            .and_then(|w| w.created_at())
            .map_or(0.0, |t| {
                (time::OffsetDateTime::now_utc() - t)
                    .as_seconds_f64()
                    .max(0.0)
            });
        metrics::gauge!("annostore_pending_index_work_oldest_seconds").set(age);
    }
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
