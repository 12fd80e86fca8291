//! The checks after a restart, against the record: what search shows before anything
//! else, the lifecycle state of every key (resolving requests that were in flight at the
//! kill), each key's active run whole by search, by id and by media, the replay of index
//! work pending at the crash (previews converge on the store), and runs left STARTED
//! finished or cancelled.

use super::model::{End, Model, Rng, Run, Stats, TYPE, knn_filter, media, version_of};
use annostore_tests::{Api, eventually, s};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How long index work pending at a crash may take to be replayed.
const REPLAY_DEADLINE: Duration = Duration::from_secs(30);

pub struct Check {
    pub api: Api,
    pub model: Arc<Mutex<Model>>,
    pub stats: Arc<Stats>,
}

impl Check {
    fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Everything after one restart. With `last`, every run left STARTED is ended. With
    /// `hurry`, previews are not awaited: index work pending at the crash is replayed
    /// while runs are ended and the next workload runs (its searches check the views).
    pub async fn after_restart(&self, rng: &mut Rng, last: bool, hurry: bool) {
        // Before anything else touches the server: no partial, stale or unfinished run.
        let first_look = self.catalogue().await;
        let keys = self.model().keys.len();
        for key in 0..keys {
            self.operations(key).await;
        }
        // A run visible then had its finish land (a finish in flight at the kill may not).
        for id in first_look {
            let m = self.model();
            let run = &m.runs[&id];
            assert_eq!(
                run.end,
                End::Finished,
                "run #{} visible, not finished",
                run.number
            );
        }
        for key in 0..keys {
            self.key_exactly(key).await;
        }
        if !hurry {
            self.replayed().await;
        }
        self.end_leftovers(rng, last).await;
    }

    /// A catalogue-wide search, every key checked against the record; the runs it showed.
    pub async fn catalogue(&self) -> BTreeSet<String> {
        let sent_at = self.model().seq;
        let all = self
            .api
            .search_all(&json!({"annotation_type": TYPE}), 1000)
            .await;
        let n = self
            .model()
            .check_all_views(&all, sent_at)
            .unwrap_or_else(|e| panic!("a search after the restart: {e}"));
        Stats::add(&self.stats.checked, n);
        Stats::add(&self.stats.searches, 1);
        all.iter().map(|a| s(a, "operation_id")).collect()
    }

    /// The key's operations as the store lists them: numbered 1..n, statuses from the
    /// lifecycle, the newest finished one the only active one, every acknowledged request
    /// applied, every in-flight one applied or not; resolves the record accordingly.
    async fn operations(&self, key: usize) {
        let pivot = self.model().keys[key].pivot.clone();
        let page = self
            .api
            .get(&format!(
                "/v1/operations?annotation_type={TYPE}&pivot_id={pivot}&limit=1000"
            ))
            .await;
        let page = page.expect(200);
        assert!(page["next_page_token"].is_null(), "more than 1000 runs");
        let mut listed: Vec<Value> = page["operations"].as_array().unwrap().clone();
        listed.sort_by_key(|o| o["operation_number"].as_u64().unwrap());
        let numbers: Vec<u64> = listed
            .iter()
            .map(|o| o["operation_number"].as_u64().unwrap())
            .collect();
        assert!(
            numbers.iter().copied().eq(1..=numbers.len() as u64),
            "key {pivot}: operation numbers are not 1..n: {numbers:?}"
        );
        let newest_finished = listed
            .iter()
            .filter(|o| o["status"] == "FINISHED")
            .map(|o| o["operation_number"].as_u64().unwrap())
            .max();
        let by_id: BTreeMap<String, &Value> = listed.iter().map(|o| (s(o, "id"), o)).collect();
        {
            let mut m = self.model();
            let mut adopted = 0;
            for op in &listed {
                let (id, number) = (s(op, "id"), op["operation_number"].as_u64().unwrap());
                let status = op["status"].as_str().unwrap();
                let what = format!("key {pivot}, run #{number}: {op}");
                assert!(
                    ["STARTED", "FINISHED", "CANCELLED"].contains(&status),
                    "{what}: not a status its requests (and an hour's lease) allow"
                );
                let newest = status == "FINISHED" && Some(number) == newest_finished;
                assert_eq!(
                    op["active"],
                    json!(newest),
                    "{what}: active iff newest finished"
                );
                assert_eq!(op["finished_at"].is_null(), status != "FINISHED", "{what}");
                if status == "FINISHED" && !newest {
                    let by = by_id.get(op["superseded_by"].as_str().unwrap_or_default());
                    assert!(
                        by.is_some_and(|b| b["status"] == "FINISHED"
                            && b["operation_number"].as_u64() > Some(number)),
                        "{what}: inactive, not superseded by a newer finished run"
                    );
                } else {
                    assert!(op["superseded_by"].is_null(), "{what}: superseded_by set");
                }
                let Some(run) = m.runs.get_mut(&id) else {
                    // A start in flight at the kill that landed.
                    assert!(status == "STARTED" && op["annotation_count"] == 0, "{what}");
                    adopted += 1;
                    m.add_run(Run::new(id, key, number));
                    continue;
                };
                assert_eq!(run.number, number, "{what}: its number changed");
                run.end = match (run.end, status) {
                    (End::Open | End::FinishSent | End::CancelSent, "STARTED") => End::Open,
                    (End::FinishSent | End::Finished, "FINISHED") => End::Finished,
                    (End::CancelSent | End::Cancelled, "CANCELLED") => End::Cancelled,
                    (end, _) => panic!("{what}: the record says {end:?}"),
                };
                let count = op["annotation_count"].as_u64().unwrap() as usize;
                assert!(
                    run.acked_count() <= count && count <= run.possible_count(),
                    "{what}: {count} annotations stored; {} acknowledged, {} possible",
                    run.acked_count(),
                    run.possible_count()
                );
                if run.end == End::Finished && run.finish_acked.is_none() {
                    m.seq += 1;
                    let seq = m.seq;
                    m.runs.get_mut(&id).unwrap().finish_acked = Some(seq);
                }
            }
            assert!(
                adopted <= m.keys[key].starts_in_flight,
                "key {pivot}: {adopted} runs nobody started"
            );
            m.keys[key].starts_in_flight = 0;
            for id in &m.keys[key].runs {
                assert!(
                    by_id.contains_key(id),
                    "key {pivot}: acknowledged run {id} lost"
                );
            }
        }
        // The single operation reads (through the cache) agree with the listing.
        for op in &listed {
            let one = self.api.op_ok(&s(op, "id")).await;
            for field in [
                "status",
                "active",
                "operation_number",
                "annotation_count",
                "superseded_by",
            ] {
                assert_eq!(
                    one[field], op[field],
                    "key {pivot}: GET and list differ on {field}"
                );
            }
        }
    }

    /// The key shows exactly its newest finished run, whole, by search, by media, by kNN
    /// and by id; annotations of its other runs are not found by id.
    pub async fn key_exactly(&self, key: usize) {
        let (pivot, sent_at) = {
            let m = self.model();
            (m.keys[key].pivot.clone(), m.seq)
        };
        let filter = json!({"annotation_type": TYPE, "pivot_id": pivot});
        let shown = self.api.search_all(&filter, 1000).await;
        let by_media = self.api.media_all(&media(key), "", 1000).await;
        let knn = self.api.search_all(&knn_filter(&pivot), 1000).await;
        let views = [(&shown, false), (&by_media, false), (&knn, true)];
        let probes = self.key_view(key, &pivot, views, sent_at);
        // The store agrees: the active run holds exactly what is visible.
        let active = {
            let m = self.model();
            let newest = m
                .runs_of(key)
                .filter(|r| r.end == End::Finished)
                .max_by_key(|r| r.number);
            newest.map(|r| r.id.clone())
        };
        if let Some(id) = active {
            let op = self.api.op_ok(&id).await;
            assert_eq!(
                op["annotation_count"].as_u64(),
                Some(shown.len() as u64),
                "key {pivot}: the active run stores {} annotations, search shows {}",
                op["annotation_count"],
                shown.len()
            );
        }
        for (run, id, v, visible) in probes {
            let r = self.api.get(&format!("/v1/annotations/{id}")).await;
            if visible {
                let got = version_of(r.expect(200), &run, &pivot).unwrap_or_else(|e| panic!("{e}"));
                assert!(
                    v.contains(&got),
                    "annotation {id}: read version {got}, expected one of {v:?}"
                );
                Stats::add(&self.stats.checked, 1);
            } else {
                assert_eq!(
                    r.status, 404,
                    "annotation {id} of run #{} ({:?}) readable",
                    run.number, run.end
                );
            }
        }
    }

    /// Checks three views of a key (by search, by media, by kNN) against the record: the newest
    /// finished run, whole. Returns ids to probe: (run, id, version, visible).
    fn key_view(
        &self,
        key: usize,
        pivot: &str,
        views: [(&Vec<Value>, bool); 3],
        sent_at: u64,
    ) -> Vec<(Run, String, BTreeSet<u64>, bool)> {
        let mut m = self.model();
        for (view, knn) in views {
            let n = m
                .check_view(key, &view.iter().collect::<Vec<_>>(), sent_at, knn)
                .unwrap_or_else(|e| panic!("after the restart: {e}"));
            Stats::add(&self.stats.checked, n);
        }
        let active = m
            .runs_of(key)
            .filter(|r| r.end == End::Finished)
            .max_by_key(|r| r.number);
        if let Some(a) = views[0].0.first() {
            assert_eq!(
                Some(s(a, "operation_id")),
                active.map(|r| r.id.clone()),
                "key {pivot}: the visible run is not the newest finished one"
            );
        }
        // A few ids of every run: found iff their run is the active one.
        let mut probes = Vec::new();
        for run in m.runs_of(key) {
            let is_active = active.is_some_and(|a| a.id == run.id);
            // The version it must have: pinned by a view, else the last acknowledged
            // (unless a rewrite in flight at a kill may have landed: then either).
            let acked = run.anns.iter().filter_map(|(id, a)| {
                let pinned = run.pinned.as_ref().map(|p| p.get(id).copied());
                let allowed: BTreeSet<u64> = match pinned {
                    Some(v) => v.into_iter().collect(),
                    None => a.acked.into_iter().chain(a.maybe.iter().copied()).collect(),
                };
                a.acked.map(|_| (id.clone(), allowed))
            });
            for (id, allowed) in acked.take(3) {
                probes.push((run.clone(), id, allowed, is_active));
            }
        }
        probes
    }

    /// Previews of STARTED runs converge on the store (the index work pending at the crash
    /// was replayed), with every acknowledged annotation, and each batch in flight at the
    /// kill landed whole or not at all. The record then takes what the store holds.
    async fn replayed(&self) {
        let open: Vec<String> = {
            let m = self.model();
            (0..m.keys.len())
                .flat_map(|k| {
                    m.runs_of(k)
                        .filter(|r| r.end == End::Open)
                        .map(|r| r.id.clone())
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        for id in open {
            let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
            eventually(
                REPLAY_DEADLINE,
                "index work pending at the crash is replayed",
                || {
                    let (seen, id) = (seen.clone(), id.clone());
                    async move {
                        // Meanwhile no search may show a partial or stale run.
                        let _ = self.catalogue().await;
                        let count = self.api.op_ok(&id).await["annotation_count"]
                            .as_u64()
                            .unwrap();
                        let shown = self
                            .api
                            .search_all(&json!({"operation_id": id}), 1000)
                            .await;
                        annostore_tests::assert_search_order(&shown);
                        let done = shown.len() as u64 == count;
                        *seen.lock().unwrap() = shown;
                        done
                    }
                },
            )
            .await;
            let shown = std::mem::take(&mut *seen.lock().unwrap());
            let mut m = self.model();
            let pivot = {
                let run = &m.runs[&id];
                m.keys[run.key].pivot.clone()
            };
            let run = m.runs.get_mut(&id).unwrap();
            let mut found = BTreeMap::new();
            for a in &shown {
                let v = version_of(a, run, &pivot).unwrap_or_else(|e| panic!("preview: {e}"));
                let ann = &run.anns[&s(a, "id")];
                assert!(
                    ann.acked == Some(v) || ann.maybe.contains(&v),
                    "preview of run #{}: {} at version {v}, acknowledged {:?}, in flight {:?}",
                    run.number,
                    s(a, "id"),
                    ann.acked,
                    ann.maybe
                );
                found.insert(s(a, "id"), v);
            }
            for (aid, ann) in &run.anns {
                assert!(
                    ann.acked.is_none() || found.contains_key(aid),
                    "run #{} of {pivot}: acknowledged annotation {aid} lost",
                    run.number
                );
            }
            for batch in &run.unknown {
                let landed: Vec<bool> = batch
                    .iter()
                    .map(|(aid, v)| found.get(aid) == Some(v))
                    .collect();
                assert!(
                    landed.iter().all(|l| *l) || landed.iter().all(|l| !*l),
                    "run #{} of {pivot}: a batch in flight at the kill landed in part: {landed:?}",
                    run.number
                );
            }
            Stats::add(&self.stats.checked, found.len());
            run.unknown.clear();
            run.anns.retain(|aid, _| found.contains_key(aid));
            for (aid, ann) in run.anns.iter_mut() {
                ann.acked = found.get(aid).copied();
                ann.maybe.clear();
                ann.next_v = ann.next_v.max(ann.acked.unwrap_or(0) + 1);
            }
        }
    }

    /// Runs left STARTED can still be ended: some finished (then visible whole if
    /// newest), some cancelled, some left for the next lifetime (none when `last`).
    async fn end_leftovers(&self, rng: &mut Rng, last: bool) {
        let open: Vec<(usize, String)> = {
            let m = self.model();
            (0..m.keys.len())
                .flat_map(|k| {
                    m.runs_of(k)
                        .filter(|r| r.end == End::Open)
                        .map(|r| (k, r.id.clone()))
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        for (key, id) in open {
            let roll = rng.range(0, 99);
            if roll < 50 || (last && roll < 80) {
                let sent_at = {
                    let mut m = self.model();
                    m.runs.get_mut(&id).unwrap().end = End::FinishSent;
                    m.seq
                };
                let r = self.api.finish(&id).await;
                self.model()
                    .record_finish(&id, r.expect(200), sent_at)
                    .unwrap_or_else(|e| panic!("after the restart: {e}"));
            } else if roll < 70 || last {
                let r = self.api.cancel(&id).await;
                assert_eq!(r.expect(200)["status"], "CANCELLED");
                let mut m = self.model();
                m.seq += 1;
                m.runs.get_mut(&id).unwrap().end = End::Cancelled;
            } else {
                continue;
            }
            self.key_exactly(key).await;
        }
    }
}
