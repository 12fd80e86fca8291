//! The web viewer's media routes (issue 8), as black-box scenarios shared by
//! `operating.rs` (embedded engines) and `distributed_operating.rs` (Cassandra on
//! kassandra, SQS on moto): `GET /v1/media` and `GET /v1/media/{media_id}/runs`.

use annostore_tests::{Api, Resp, Server, eventually, s};
use serde_json::{Value, json};
use std::time::Duration;

async fn run(api: &Api, ty: &str, pivot: &str, metadata: Value, end: &str) -> Value {
    let op = api
        .start_op_with(ty, 1, pivot, json!({ "metadata": metadata }))
        .await;
    let id = s(&op, "id");
    match end {
        "finish" => {
            api.finish(&id).await.expect(200);
        }
        "cancel" => {
            api.cancel(&id).await.expect(200);
        }
        _ => {}
    }
    api.op_ok(&id).await
}

#[track_caller]
fn at(v: &Value, key: &str) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(&s(v, key), &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{key} of {v}: {e}"))
}

fn ids(list: &Resp) -> Vec<String> {
    list.body["media"]
        .as_array()
        .unwrap_or_else(|| panic!("no media array: {}", list.text))
        .iter()
        .map(|m| s(m, "media_id"))
        .collect()
}

/// Media are listed from their runs (metadata `media_id`, else the pivot), newest change
/// first, narrowed by `q`; each lists every run of its keys, as `GET /v1/operations/{id}`
/// shows them. Needs a server of its own: it checks the whole listing.
pub async fn listed_from_their_runs(srv: &Server) {
    srv.register("objects", 1).await;
    srv.register("faces", 1).await;
    let alpha = json!({"media_id": "Alpha.mp4"});

    let gamma = run(
        srv,
        "objects",
        "sha-ccc",
        json!({"media_id": "gamma.mp4"}),
        "cancel",
    )
    .await;
    let beta1 = run(srv, "objects", "beta.mp4", json!({}), "finish").await;
    let a1 = run(srv, "objects", "sha-aaa", alpha.clone(), "finish").await;
    let a2 = run(srv, "objects", "sha-aaa", alpha.clone(), "finish").await;
    let faces = run(srv, "faces", "sha-aaa", alpha.clone(), "finish").await;
    let a3 = run(srv, "objects", "sha-aaa", alpha.clone(), "").await;
    // A media_id that is not a string: the pivot names the media.
    let beta2 = run(srv, "objects", "beta.mp4", json!({"media_id": 7}), "").await;

    let list = srv.get("/v1/media").await;
    list.expect(200);
    assert_eq!(
        ids(&list),
        ["beta.mp4", "Alpha.mp4", "gamma.mp4"],
        "{}",
        list.text
    );
    assert_eq!(list.body["truncated"], false);
    let media = list.body["media"].as_array().unwrap();
    assert_eq!(
        media
            .iter()
            .map(|m| m["runs"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [2, 4, 1]
    );
    // last_run_at is the newest change of the media's runs.
    assert_eq!(media[0]["last_run_at"], beta2["updated_at"]);
    assert_eq!(media[2]["last_run_at"], gamma["updated_at"]);
    let newest_alpha = [&a1, &a2, &faces, &a3]
        .iter()
        .map(|o| at(o, "updated_at"))
        .max()
        .unwrap();
    assert_eq!(at(&media[1], "last_run_at"), newest_alpha);

    let only = srv.get("/v1/media?q=ALPHA").await;
    assert_eq!(ids(&only), ["Alpha.mp4"], "{}", only.text);
    let two = srv.get("/v1/media?q=.MP4&limit=2").await;
    assert_eq!(ids(&two), ["beta.mp4", "Alpha.mp4"], "{}", two.text);
    assert!(ids(&srv.get("/v1/media?q=nothing-like-it").await).is_empty());
    srv.get("/v1/media?limit=0").await.problem(422);
    srv.get("/v1/media?limit=100000").await.problem(422);
    srv.get("/v1/media?limt=2").await.problem(400);

    // Alpha's keys, by metadata: objects (three runs) and faces; no other media's.
    let runs = srv.get("/v1/media/Alpha.mp4/runs").await;
    let body = runs.expect(200);
    assert_eq!(body["media_id"], "Alpha.mp4");
    let keys = body["keys"].as_array().unwrap();
    let key_names: Vec<_> = keys
        .iter()
        .map(|k| {
            (
                s(k, "annotation_type"),
                k["annotation_type_version"].clone(),
                s(k, "pivot_id"),
            )
        })
        .collect();
    assert_eq!(
        key_names,
        [
            ("faces".to_owned(), json!(1), "sha-aaa".to_owned()),
            ("objects".to_owned(), json!(1), "sha-aaa".to_owned())
        ],
        "{}",
        runs.text
    );
    let objects = keys[1]["runs"].as_array().unwrap();
    let shown: Vec<_> = objects
        .iter()
        .map(|o| (s(o, "id"), s(o, "status"), o["active"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        shown,
        [
            (s(&a3, "id"), "STARTED".to_owned(), false),
            (s(&a2, "id"), "FINISHED".to_owned(), true),
            (s(&a1, "id"), "FINISHED".to_owned(), false),
        ]
    );
    assert_eq!(objects[2]["superseded_by"], a2["id"]);
    // Each run as GET /v1/operations/{id} shows it.
    for op in objects.iter().chain(keys[0]["runs"].as_array().unwrap()) {
        assert_eq!(op, &srv.op_ok(&s(op, "id")).await);
    }
    assert_eq!(keys[0]["runs"][0]["id"], faces["id"]);
    assert_eq!(keys[0]["runs"].as_array().unwrap().len(), 1);

    let newest = srv.get("/v1/media/Alpha.mp4/runs?per_key=1").await;
    assert_eq!(newest.expect(200)["keys"][1]["runs"], json!([objects[0]]));
    srv.get("/v1/media/Alpha.mp4/runs?per_key=0")
        .await
        .problem(422);
    srv.get("/v1/media/Alpha.mp4/runs?per_key=101")
        .await
        .problem(422);

    // Beta, by pivot: one key, its two runs (the newest STARTED), none of Alpha's.
    let beta = srv.get("/v1/media/beta.mp4/runs").await;
    let keys = beta.expect(200)["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 1, "{}", beta.text);
    assert_eq!(keys[0]["pivot_id"], "beta.mp4");
    let beta_runs: Vec<_> = keys[0]["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].clone())
        .collect();
    assert_eq!(beta_runs, [beta2["id"].clone(), beta1["id"].clone()]);

    // A media item nothing was written for has no keys.
    let none = srv.get("/v1/media/nothing.mp4/runs").await;
    assert_eq!(none.expect(200)["keys"], json!([]));

    // A STARTED run whose lease lapsed shows EXPIRED, as GET /v1/operations/{id} shows it.
    let lapsing = srv
        .start_op_with("objects", 1, "delta.mp4", json!({"lease_seconds": 1}))
        .await;
    let shown = |r: Resp| r.body["keys"][0]["runs"][0]["status"].clone();
    assert_eq!(shown(srv.get("/v1/media/delta.mp4/runs").await), "STARTED");
    eventually(
        Duration::from_secs(20),
        "the lapsed run shows EXPIRED",
        || {
            let srv = srv.api();
            async move { shown(srv.get("/v1/media/delta.mp4/runs").await) == "EXPIRED" }
        },
    )
    .await;
    assert_eq!(srv.op_ok(&s(&lapsing, "id")).await["status"], "EXPIRED");
}

/// A key's pivot and its runs' (id, status, active), as `/v1/media/{id}/runs` lists them.
type KeyRuns = (String, Vec<(String, String, bool)>);

/// The keys of a media item follow its runs: a finish moves the active mark, and a key
/// started after the first listing shows at once (the service caches a media item's keys
/// until a run naming it starts).
pub async fn keys_follow_runs(srv: &Server) {
    srv.register("objects", 1).await;
    let media = json!({"media_id": "follow.mp4"});
    let path = "/v1/media/follow.mp4/runs";
    let first = run(srv, "objects", "follow-sha-1", media.clone(), "finish").await;
    let second = run(srv, "objects", "follow-sha-1", media.clone(), "").await;
    let shown = |r: Resp| -> Vec<KeyRuns> {
        r.expect(200)["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| {
                let runs = k["runs"]
                    .as_array()
                    .expect("runs")
                    .iter()
                    .map(|o| (s(o, "id"), s(o, "status"), o["active"] == true))
                    .collect();
                (s(k, "pivot_id"), runs)
            })
            .collect()
    };
    let (a, b) = (s(&first, "id"), s(&second, "id"));
    assert_eq!(
        shown(srv.get(path).await),
        [(
            "follow-sha-1".to_owned(),
            vec![
                (b.clone(), "STARTED".to_owned(), false),
                (a.clone(), "FINISHED".to_owned(), true)
            ]
        )]
    );
    srv.finish(&b).await.expect(200);
    assert_eq!(
        shown(srv.get(path).await)[0].1,
        [
            (b, "FINISHED".to_owned(), true),
            (a, "FINISHED".to_owned(), false)
        ]
    );
    let third = run(srv, "objects", "follow-sha-2", media, "").await;
    let now = shown(srv.get(path).await);
    assert_eq!(now.len(), 2, "{now:?}");
    assert_eq!(
        now[1],
        (
            "follow-sha-2".to_owned(),
            vec![(s(&third, "id"), "STARTED".to_owned(), false)]
        )
    );
}
