//! The random workload of one server lifetime: per key, rounds of runs (start or resume,
//! concurrent producers upserting random batches, sometimes rewriting their ids, then
//! finish, cancel or leave open; sometimes a cancel while producers write), and a
//! searcher checking every answer against the record. Every task stops at the first
//! request that fails, which only the kill may cause.

use super::model::{Ann, End, Model, Rng, Run, Stats, TYPE, body, knn_filter, media};
use annostore_tests::{Api, Resp, s};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// What every task of one server lifetime shares. `None` from a task: the server died.
#[derive(Clone)]
pub struct Ctx {
    pub api: Api,
    pub model: Arc<Mutex<Model>>,
    pub stats: Arc<Stats>,
    /// Set just before the kill: only then may a request fail.
    pub killing: Arc<AtomicBool>,
    /// Acknowledged upserts of this lifetime (what the kill may wait for: right after
    /// one, other batches are on their way and this one is not indexed yet).
    pub upsert_acks: Arc<watch::Sender<u64>>,
    /// Upserts sent in this lifetime.
    pub upserts_sent: Arc<watch::Sender<u64>>,
    /// Upserts and finishes sent and not answered (where the kill lands).
    pub upserts_in_flight: Arc<AtomicUsize>,
    pub finishes_in_flight: Arc<AtomicUsize>,
}

impl Ctx {
    pub fn new(api: Api, model: Arc<Mutex<Model>>, stats: Arc<Stats>) -> Ctx {
        Ctx {
            api,
            model,
            stats,
            killing: Arc::default(),
            upsert_acks: Arc::new(watch::Sender::new(0)),
            upserts_sent: Arc::new(watch::Sender::new(0)),
            upserts_in_flight: Arc::default(),
            finishes_in_flight: Arc::default(),
        }
    }

    pub fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a request; `None` once the server is gone (which only the kill may do).
    async fn send(&self, req: reqwest::RequestBuilder) -> Option<Resp> {
        self.send_then(req, || ()).await
    }

    /// [`Ctx::send`], calling `sent` once the request is on its way (its first poll).
    async fn send_then(&self, req: reqwest::RequestBuilder, sent: impl FnOnce()) -> Option<Resp> {
        let mut request = std::pin::pin!(self.api.try_send(req));
        let first = std::future::poll_fn(|cx| match request.as_mut().poll(cx) {
            std::task::Poll::Ready(r) => std::task::Poll::Ready(Some(r)),
            std::task::Poll::Pending => std::task::Poll::Ready(None),
        })
        .await;
        sent();
        let answer = match first {
            Some(r) => r,
            None => request.await,
        };
        match answer {
            Ok(r) => Some(r),
            Err(e) => {
                assert!(
                    self.killing.load(Ordering::SeqCst),
                    "a request failed while the server was up: {e}"
                );
                None
            }
        }
    }

    fn acked(&self) {
        Stats::add(&self.stats.acked_requests, 1);
    }

    /// Every page of a search (or of a media listing when `media` is given).
    async fn search_all(&self, filter: &Value, media: Option<&str>) -> Option<Vec<Value>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let req = match media {
                Some(m) => {
                    let mut url = self
                        .api
                        .url(&format!("/v1/media/{m}/annotations?limit=1000"));
                    if let Some(t) = &token {
                        url.push_str(&format!("&page_token={t}"));
                    }
                    self.api.http.get(url)
                }
                None => {
                    let mut body = filter.clone();
                    body["limit"] = json!(1000);
                    if let Some(t) = &token {
                        body["page_token"] = json!(t);
                    }
                    self.api
                        .http
                        .post(self.api.url("/v1/annotations/search"))
                        .json(&body)
                }
            };
            let r = self.send(req).await?;
            let page = r.expect(200);
            out.extend(
                page["annotations"]
                    .as_array()
                    .expect("annotations")
                    .iter()
                    .cloned(),
            );
            match page["next_page_token"].as_str() {
                Some(t) => token = Some(t.to_owned()),
                None => return Some(out),
            }
        }
    }
}

/// Waits for every task of `set`; re-raises a panic of any. `None` if any saw the kill.
pub async fn join_all(mut set: JoinSet<Option<()>>) -> Option<()> {
    let mut alive = true;
    while let Some(r) = set.join_next().await {
        match r {
            Ok(x) => alive &= x.is_some(),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    alive.then_some(())
}

/// One key's rounds of runs, one or two runs at a time.
pub async fn key_task(ctx: Ctx, key: usize, mut rng: Rng) -> Option<()> {
    for _ in 0..rng.range(1, 3) {
        let mut set = JoinSet::new();
        for _ in 0..rng.range(1, 2) {
            let resume = if rng.chance(0.5) {
                let mut m = ctx.model();
                let open: Vec<String> = m
                    .runs_of(key)
                    .filter(|r| r.end == End::Open && !r.busy)
                    .map(|r| r.id.clone())
                    .collect();
                let pick = (!open.is_empty())
                    .then(|| open[rng.range(0, open.len() as u64 - 1) as usize].clone());
                if let Some(id) = &pick {
                    m.runs.get_mut(id).unwrap().busy = true;
                }
                pick
            } else {
                None
            };
            set.spawn(run_task(ctx.clone(), key, resume, rng.fork()));
        }
        join_all(set).await?;
    }
    Some(())
}

async fn run_task(ctx: Ctx, key: usize, resume: Option<String>, mut rng: Rng) -> Option<()> {
    let run_id = match resume {
        Some(id) => id,
        None => start(&ctx, key).await?,
    };
    let cancel_early = rng.chance(0.1).then(|| rng.range(0, 3));
    let mut set = JoinSet::new();
    for p in 0..rng.range(1, 3) {
        let owner = {
            let mut m = ctx.model();
            let run = m.runs.get_mut(&run_id).unwrap();
            run.next_owner += 1;
            run.next_owner
        };
        let cancel_after = if p == 0 { cancel_early } else { None };
        set.spawn(producer(
            ctx.clone(),
            run_id.clone(),
            owner,
            rng.fork(),
            cancel_after,
        ));
    }
    join_all(set).await?;
    {
        let mut m = ctx.model();
        let run = m.runs.get_mut(&run_id).unwrap();
        // Later producers (another round, another lifetime) may rewrite any of them.
        run.anns.values_mut().for_each(|a| a.owner = None);
        if run.end != End::Open {
            run.busy = false;
            return Some(());
        }
    }
    match rng.range(0, 99) {
        0..70 => finish(&ctx, &run_id).await?,
        70..85 => cancel(&ctx, &run_id).await?,
        _ => {}
    }
    ctx.model().runs.get_mut(&run_id).unwrap().busy = false;
    Some(())
}

async fn start(ctx: &Ctx, key: usize) -> Option<String> {
    let pivot = {
        let mut m = ctx.model();
        m.keys[key].starts_in_flight += 1;
        m.keys[key].pivot.clone()
    };
    let body = json!({
        "annotation_type": TYPE,
        "annotation_type_version": 1,
        "pivot_id": pivot,
        "lease_seconds": 3600,
    });
    let r = ctx
        .send(ctx.api.http.post(ctx.api.url("/v1/operations")).json(&body))
        .await?;
    let op = r.expect(201);
    assert_eq!(op["status"], "STARTED", "{op}");
    let mut run = Run::new(s(op, "id"), key, op["operation_number"].as_u64().unwrap());
    run.busy = true;
    let id = run.id.clone();
    let mut m = ctx.model();
    m.keys[key].starts_in_flight -= 1;
    m.seq += 1;
    m.add_run(run);
    drop(m);
    ctx.acked();
    Some(id)
}

/// Upserts 1 to 5 batches of 1 to 25 items into a run, each item a new id or a rewrite
/// of one of its own. With `cancel_after`, cancels the run after that many batches
/// instead (while the run's other producers write).
async fn producer(
    ctx: Ctx,
    run_id: String,
    owner: u64,
    mut rng: Rng,
    cancel_after: Option<u64>,
) -> Option<()> {
    for b in 0..rng.range(1, 5) {
        if cancel_after == Some(b) {
            return cancel(&ctx, &run_id).await;
        }
        let (items, sent) = {
            let mut m = ctx.model();
            let run = m.runs.get_mut(&run_id).unwrap();
            let mine: Vec<String> = run
                .anns
                .iter()
                .filter(|(_, a)| a.owner.is_none_or(|o| o == owner))
                .map(|(id, _)| id.clone())
                .collect();
            let mut items = Vec::new();
            let mut sent = BTreeMap::new();
            for _ in 0..rng.range(1, 25) {
                let id = if !mine.is_empty() && rng.chance(0.25) {
                    mine[rng.range(0, mine.len() as u64 - 1) as usize].clone()
                } else {
                    let id = rng.uuid();
                    let ann = Ann {
                        n: run.next_n,
                        acked: None,
                        maybe: BTreeSet::new(),
                        next_v: 1,
                        owner: None,
                    };
                    run.next_n += 1;
                    run.anns.insert(id.clone(), ann);
                    id
                };
                let ann = run.anns.get_mut(&id).unwrap();
                ann.owner = Some(owner);
                let v = ann.next_v;
                ann.next_v += 1;
                items.push(body(run.key, &run.id, &id, ann.n, v));
                // Within a batch the last copy of an id wins.
                sent.insert(id, v);
            }
            for (id, v) in &sent {
                run.anns.get_mut(id).unwrap().maybe.insert(*v);
            }
            (items, sent)
        };
        let req = ctx
            .api
            .http
            .post(ctx.api.url(&format!("/v1/operations/{run_id}/annotations")))
            .json(&json!({ "annotations": items }));
        ctx.upserts_in_flight.fetch_add(1, Ordering::SeqCst);
        let r = ctx
            .send_then(req, || ctx.upserts_sent.send_modify(|n| *n += 1))
            .await;
        if r.is_some() {
            ctx.upserts_in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        let mut m = ctx.model();
        let run = m.runs.get_mut(&run_id).unwrap();
        match r {
            None => {
                run.unknown.push(sent.into_iter().collect());
                return None;
            }
            Some(r) if r.status == 200 => {
                assert_eq!(r.body["upserted"], json!(items.len()), "{}", r.text);
                for (id, v) in sent {
                    let ann = run.anns.get_mut(&id).unwrap();
                    ann.acked = Some(v);
                    // Older versions in flight at a kill no longer matter, and no longer
                    // tell whether their batch landed.
                    ann.maybe.clear();
                    run.unknown
                        .iter_mut()
                        .for_each(|b| b.retain(|(i, _)| *i != id));
                }
                m.seq += 1;
                drop(m);
                ctx.acked();
                ctx.upsert_acks.send_modify(|n| *n += 1);
            }
            Some(r) if r.status == 409 && matches!(run.end, End::CancelSent | End::Cancelled) => {
                for (id, v) in sent {
                    run.anns.get_mut(&id).unwrap().maybe.remove(&v);
                }
                run.anns
                    .retain(|_, a| a.acked.is_some() || !a.maybe.is_empty());
                return Some(());
            }
            Some(r) => panic!(
                "upsert into run #{} ({:?}) answered {}: {}",
                run.number, run.end, r.status, r.text
            ),
        }
    }
    Some(())
}

pub async fn finish(ctx: &Ctx, run_id: &str) -> Option<()> {
    let sent_at = {
        let mut m = ctx.model();
        m.runs.get_mut(run_id).unwrap().end = End::FinishSent;
        m.seq
    };
    let url = ctx.api.url(&format!("/v1/operations/{run_id}/finish"));
    ctx.finishes_in_flight.fetch_add(1, Ordering::SeqCst);
    let r = ctx.send(ctx.api.http.post(url)).await?;
    ctx.finishes_in_flight.fetch_sub(1, Ordering::SeqCst);
    let op = r.expect(200);
    ctx.model()
        .record_finish(run_id, op, sent_at)
        .unwrap_or_else(|e| panic!("{e}"));
    ctx.acked();
    Some(())
}

pub async fn cancel(ctx: &Ctx, run_id: &str) -> Option<()> {
    ctx.model().runs.get_mut(run_id).unwrap().end = End::CancelSent;
    let url = ctx.api.url(&format!("/v1/operations/{run_id}/cancel"));
    let r = ctx.send(ctx.api.http.post(url)).await?;
    let op = r.expect(200);
    assert_eq!(op["status"], "CANCELLED", "{op}");
    assert_eq!(op["active"], false, "{op}");
    let mut m = ctx.model();
    m.seq += 1;
    m.runs.get_mut(run_id).unwrap().end = End::Cancelled;
    drop(m);
    ctx.acked();
    Some(())
}

/// Searches until the server dies: catalogue-wide, by key, by kNN or by media; every answer is
/// checked against the record.
pub async fn searcher(ctx: Ctx, mut rng: Rng) -> Option<()> {
    loop {
        let (keys, sent_at) = {
            let m = ctx.model();
            (m.keys.len(), m.seq)
        };
        let key = rng.range(0, keys as u64 - 1) as usize;
        let pivot = ctx.model().keys[key].pivot.clone();
        let checked = match rng.range(0, 3) {
            0 => {
                let all = ctx
                    .search_all(&json!({"annotation_type": TYPE}), None)
                    .await?;
                ctx.model().check_all_views(&all, sent_at)
            }
            1 => {
                let filter = json!({"annotation_type": TYPE, "pivot_id": pivot});
                let shown = ctx.search_all(&filter, None).await?;
                ctx.model()
                    .check_view(key, &shown.iter().collect::<Vec<_>>(), sent_at, false)
            }
            2 => {
                let shown = ctx.search_all(&knn_filter(&pivot), None).await?;
                ctx.model()
                    .check_view(key, &shown.iter().collect::<Vec<_>>(), sent_at, true)
            }
            _ => {
                let shown = ctx.search_all(&Value::Null, Some(&media(key))).await?;
                ctx.model()
                    .check_view(key, &shown.iter().collect::<Vec<_>>(), sent_at, false)
            }
        };
        let checked = checked.unwrap_or_else(|e| panic!("a search during the workload: {e}"));
        Stats::add(&ctx.stats.checked, checked);
        Stats::add(&ctx.stats.searches, 1);
    }
}
