//! Writing the bench's catalogue: the one-annotation runs on other media items, and the
//! long item's run (upserts of `--batch`, `--writers` at a time, sent again on 503).

use super::{Args, LABELS, MEDIA, send};
use anyhow::{Context, bail};
use serde_json::json;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The body of one upsert of the long run: annotations `from..to` (sample = i / boxes),
/// the embedding written out as f32s, as an embedder's output would be.
pub(super) fn upsert_body(args: &Args, from: usize, to: usize) -> anyhow::Result<String> {
    let mut rng = fastrand::Rng::with_seed(from as u64);
    let step_ms = 1_000.0 / args.fps;
    let mut body = String::from(r#"{"annotations":["#);
    for i in from..to {
        let sample = (i / args.boxes) as f64;
        let start = (sample * step_ms).round() as u64;
        let end = ((sample + 1.0) * step_ms).round() as u64;
        let (w, h) = (0.05 + rng.f64() * 0.2, 0.05 + rng.f64() * 0.3);
        let item = json!({
            "id": Uuid::from_u64_pair(0x7669_6577_6572, i as u64),
            "media_id": MEDIA,
            "start_ms": start,
            "end_ms": end.max(start + 1),
            "label": LABELS[rng.usize(..LABELS.len())],
            "confidence": (rng.f64() * 1000.0).round() / 1000.0,
            "bbox": {"x": rng.f64() * (1.0 - w), "y": rng.f64() * (1.0 - h), "w": w, "h": h},
        });
        let item = serde_json::to_string(&item)?;
        if i > from {
            body.push(',');
        }
        body.push_str(&item[..item.len() - 1]);
        body.push_str(r#","embedding":["#);
        for d in 0..args.embedding_dim {
            if d > 0 {
                body.push(',');
            }
            write!(body, "{}", rng.f32() * 2.0 - 1.0)?;
        }
        body.push_str("]}");
    }
    body.push_str("]}");
    Ok(body)
}

/// The one-annotation runs on other media items, `writers` at a time.
pub(super) async fn write_others(
    http: &reqwest::Client,
    base: &str,
    args: &Args,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.writers {
        let (http, base, next, n) = (
            http.clone(),
            base.to_owned(),
            next.clone(),
            args.other_operations,
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(());
                }
                let media = other_media(i);
                let start = json!({"annotation_type": "other", "annotation_type_version": 1,
                                   "pivot_id": media});
                let item = json!({"media_id": media, "start_ms": 0, "end_ms": 1000,
                                  "label": LABELS[i % LABELS.len()], "confidence": 0.5});
                let run = format!("{start}\n{item}\n");
                send(
                    http.post(format!("{base}/v1/runs"))
                        .header("content-type", "application/x-ndjson")
                        .body(run),
                )
                .await
                .with_context(|| format!("run {i} on {media}"))?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

pub(super) fn other_media(i: usize) -> String {
    format!("clip-{i:05}.mp4")
}

/// The long item's run: started, upserted by `writers` at a time, finished.
pub(super) async fn write_long(
    http: &reqwest::Client,
    base: &str,
    args: &Arc<Args>,
) -> anyhow::Result<()> {
    let (op, _) = send(http.post(format!("{base}/v1/operations")).json(&json!({
        "annotation_type": "viewer", "annotation_type_version": 1,
        "pivot_id": MEDIA, "lease_seconds": 3600,
    })))
    .await?;
    let id = op["id"].as_str().context("operation id")?.to_owned();
    let total = total_annotations(args);
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.writers {
        let (http, url, next, done, args) = (
            http.clone(),
            format!("{base}/v1/operations/{id}/annotations"),
            next.clone(),
            done.clone(),
            args.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut retried = 0;
            loop {
                let from = next.fetch_add(args.batch, Ordering::Relaxed);
                if from >= total {
                    return anyhow::Ok(retried);
                }
                let to = (from + args.batch).min(total);
                let body = upsert_body(&args, from, to)?;
                // The annotations have ids: an upsert sent twice writes them once.
                retried += retrying(|| {
                    http.post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                })
                .await
                .with_context(|| format!("upsert from {from}"))?;
                let before = done.fetch_add(to - from, Ordering::Relaxed);
                let tenth = total.div_ceil(10);
                if (before + to - from) / tenth > before / tenth {
                    println!(
                        "  {} of {total} annotations upserted in {:.1} s",
                        before + to - from,
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        }));
    }
    let mut retried = 0;
    for t in tasks {
        retried += t.await??;
    }
    let t = Instant::now();
    // Finish waits for the index to hold every annotation; it is idempotent.
    let finish_retried =
        retrying(|| http.post(format!("{base}/v1/operations/{id}/finish"))).await?;
    println!(
        "  upserts answered 503 and sent again: {retried}; finish took {:.1} s ({finish_retried} x 503 first)",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Sends the request `make` builds until it answers 2xx, again after a second while it
/// answers 503 (past the server's request deadline, say); returns how many 503s.
pub(super) async fn retrying(make: impl Fn() -> reqwest::RequestBuilder) -> anyhow::Result<u32> {
    let mut retried = 0;
    loop {
        let r = make().send().await?;
        let status = r.status();
        let text = r.text().await?;
        if status.is_success() {
            return Ok(retried);
        }
        if status != reqwest::StatusCode::SERVICE_UNAVAILABLE || retried == 100 {
            bail!("{status}: {text}");
        }
        retried += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

pub(super) fn total_annotations(args: &Args) -> usize {
    (args.hours * 3600.0 * args.fps).round() as usize * args.boxes
}
