//! The command-line client: `types`, `reindex`, `search` and `cooccur` against a
//! running server (`ops` and `admin` in `client/ops.rs`, `runs` in `client/runs.rs`).

mod ops;
mod runs;
pub use ops::{admin, ops};
pub use runs::runs;

use crate::cli::{ClientArgs, CooccurArgs, ReindexArgs, SearchArgs, TypesCommand};
use anyhow::{Context, bail};
use serde_json::{Value, json};

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(args: &ClientArgs) -> Client {
        Client {
            http: reqwest::Client::builder()
                .default_headers(annostore_ingest::api::key_headers(args.api_key.as_deref()))
                .build()
                .unwrap_or_default(),
            base: args.server.trim_end_matches('/').to_owned(),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the annostore server at {}", self.base))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let detail = body["detail"].as_str().unwrap_or("no detail");
            bail!("server answered {status}: {detail}");
        }
        Ok(body)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

pub async fn types(cmd: TypesCommand) -> anyhow::Result<()> {
    match cmd {
        TypesCommand::Put {
            name,
            version,
            schema,
            embedding_dim,
            client,
        } => {
            let schema: Value = match schema {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    serde_json::from_str(&text)
                        .with_context(|| format!("{} is not JSON", path.display()))?
                }
                None => json!({"type": "object"}),
            };
            let c = Client::new(&client);
            let body = json!({"schema": schema, "embedding_dim": embedding_dim});
            let ty = c
                .send(
                    c.http
                        .put(c.url(&format!("/v1/types/{name}/versions/{version}")))
                        .json(&body),
                )
                .await?;
            print_rows(&client, &[ty], TYPE_COLUMNS);
        }
        TypesCommand::List { client } => {
            let c = Client::new(&client);
            let page = c.send(c.http.get(c.url("/v1/types"))).await?;
            print_rows(
                &client,
                page["types"].as_array().map_or(&[], Vec::as_slice),
                TYPE_COLUMNS,
            );
        }
    }
    Ok(())
}

pub async fn reindex(args: ReindexArgs) -> anyhow::Result<()> {
    let c = Client::new(&args.client);
    let body = match &args.operation {
        Some(id) => json!({"operation_id": id}),
        None => json!({}),
    };
    let done = c
        .send(c.http.post(c.url("/v1/admin/reindex")).json(&body))
        .await?;
    print_rows(&args.client, &[done], &["operations", "annotations"]);
    Ok(())
}

const TYPE_COLUMNS: &[&str] = &["name", "version", "embedding_dim", "created_at"];
const OP_COLUMNS: &[&str] = &[
    "id",
    "annotation_type",
    "annotation_type_version",
    "pivot_id",
    "operation_number",
    "status",
    "active",
    "annotation_count",
    "created_at",
];

/// The search body the flags describe.
fn search_filter(a: &SearchArgs) -> anyhow::Result<serde_json::Map<String, Value>> {
    let mut f = serde_json::Map::new();
    let list = |v: &Vec<String>| json!(v);
    match a.media.len() {
        0 => {}
        1 => {
            f.insert("media_id".into(), json!(a.media[0]));
        }
        _ => {
            f.insert("media_ids".into(), list(&a.media));
        }
    }
    match a.types.len() {
        0 => {}
        1 => {
            f.insert("annotation_type".into(), json!(a.types[0]));
        }
        _ => {
            f.insert("annotation_types".into(), list(&a.types));
        }
    }
    if let Some(v) = a.version {
        f.insert("annotation_type_version".into(), json!(v));
    }
    if !a.labels.is_empty() {
        f.insert("labels".into(), list(&a.labels));
    }
    if let Some(t) = &a.text {
        f.insert("text".into(), json!({"query": t, "fuzzy": !a.exact}));
    }
    if a.count
        .as_deref()
        .is_some_and(|c| c.starts_with("histogram"))
        && a.from_ms.is_some() != a.to_ms.is_some()
    {
        bail!("a histogram over a time range needs both --from-ms and --to-ms");
    }
    if a.from_ms.is_some() || a.to_ms.is_some() {
        f.insert(
            "time_range".into(),
            json!({"start_ms": a.from_ms.unwrap_or(0), "end_ms": a.to_ms.unwrap_or(i64::MAX)}),
        );
    }
    if let Some(r) = &a.region {
        f.insert(
            "region".into(),
            json!({"x": r[0], "y": r[1], "w": r[2], "h": r[3]}),
        );
    }
    if let Some(c) = a.min_confidence {
        f.insert("min_confidence".into(), json!(c));
    }
    Ok(f)
}

pub async fn search(args: SearchArgs) -> anyhow::Result<()> {
    let c = Client::new(&args.client);
    let mut body = search_filter(&args)?;
    if args.count.is_some() && (args.sort.is_some() || args.like.is_some()) {
        bail!("--count counts what the filters match; --sort and --like do not apply");
    }
    if let Some(count) = &args.count {
        let aggs = match count.split_once(':') {
            None if count == "label" => json!({"labels": 100}),
            None if count == "type" => json!({"types": true}),
            Some(("histogram", ms)) => {
                let interval: i64 = ms
                    .parse()
                    .with_context(|| format!("histogram interval {ms:?} is not a number"))?;
                json!({"histogram": {"interval_ms": interval}})
            }
            _ => bail!("--count takes label, type or histogram:<interval_ms>"),
        };
        body.insert("aggregations".into(), aggs);
        let out = c
            .send(c.http.post(c.url("/v1/annotations/aggregate")).json(&body))
            .await?;
        let rows: Vec<Value> = if let Some(l) = out["labels"].as_array() {
            l.clone()
        } else if let Some(t) = out["types"].as_array() {
            t.clone()
        } else {
            out["histogram"].as_array().cloned().unwrap_or_default()
        };
        let columns: &[&str] = if out["labels"].is_array() {
            &["label", "count"]
        } else if out["types"].is_array() {
            &["annotation_type", "annotation_type_version", "count"]
        } else {
            &["start_ms", "count"]
        };
        print_rows(&args.client, &rows, columns);
        eprintln!("{} annotations matched", out["total"]);
        return Ok(());
    }
    if let Some(s) = &args.sort {
        body.insert("sort".into(), json!(s));
    }
    if let Some(like) = &args.like {
        body.insert("knn".into(), json!({"text": like, "k": args.k}));
    }
    let mut rows: Vec<Value> = Vec::new();
    loop {
        body.insert(
            "limit".into(),
            json!((args.limit - rows.len()).clamp(1, 1_000)),
        );
        let page = c
            .send(c.http.post(c.url("/v1/annotations/search")).json(&body))
            .await?;
        let scores = page["scores"].as_array().cloned();
        for (i, a) in page["annotations"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let mut a = a.clone();
            if let Some(s) = scores.as_ref().and_then(|s| s.get(i)) {
                a["score"] = s.clone();
            }
            if let Some(o) = a.as_object_mut() {
                o.remove("embedding");
            }
            rows.push(a);
        }
        match page["next_page_token"].as_str() {
            Some(t) if rows.len() < args.limit => {
                body.insert("page_token".into(), json!(t));
            }
            _ => break,
        }
    }
    rows.truncate(args.limit);
    let columns: &[&str] = if args.like.is_some() {
        &[
            "media_id",
            "start_ms",
            "end_ms",
            "label",
            "score",
            "annotation_type",
            "id",
        ]
    } else {
        &[
            "media_id",
            "start_ms",
            "end_ms",
            "label",
            "confidence",
            "annotation_type",
            "id",
        ]
    };
    print_rows(&args.client, &rows, columns);
    Ok(())
}

pub async fn cooccur(args: CooccurArgs) -> anyhow::Result<()> {
    let c = Client::new(&args.client);
    let conditions: Vec<Value> = args
        .with
        .iter()
        .map(|w| match w.strip_prefix("text:") {
            Some(t) => json!({"text": {"query": t}}),
            None => json!({"label": w}),
        })
        .collect();
    let body = json!({
        "media_id": args.media,
        "conditions": conditions,
        "slack_ms": args.slack_ms,
    });
    let out = c
        .send(
            c.http
                .post(c.url("/v1/annotations/cooccurrence"))
                .json(&body),
        )
        .await?;
    let rows = out["intervals"].as_array().cloned().unwrap_or_default();
    print_rows(&args.client, &rows, &["start_ms", "end_ms"]);
    eprintln!("annotations matched per condition: {}", out["matched"]);
    Ok(())
}

/// JSON lines, or an aligned table of the named columns. Hand-written: a table of a
/// few columns does not need a crate.
fn print_rows(args: &ClientArgs, rows: &[Value], columns: &[&str]) {
    if args.json {
        for r in rows {
            println!("{r}");
        }
        return;
    }
    let cell = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|c| cell(&r[*c])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            table
                .iter()
                .map(|r| r[i].len())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(columns.iter().map(|c| c.to_uppercase()).collect());
    for r in table {
        line(r);
    }
}
