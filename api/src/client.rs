//! The command-line client: `types`, `ops` and `reindex` against a running server.

use crate::cli::{ClientArgs, OpsCommand, ReindexArgs, TypesCommand};
use anyhow::{Context, bail};
use serde_json::{Value, json};

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(args: &ClientArgs) -> Client {
        Client {
            http: reqwest::Client::new(),
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

pub async fn ops(cmd: OpsCommand) -> anyhow::Result<()> {
    match cmd {
        OpsCommand::List {
            status,
            annotation_type,
            pivot,
            limit,
            client,
        } => {
            let c = Client::new(&client);
            let mut query: Vec<(&str, String)> = vec![("limit", limit.to_string())];
            query.extend(status.map(|s| ("status", s)));
            query.extend(annotation_type.map(|t| ("annotation_type", t)));
            query.extend(pivot.map(|p| ("pivot_id", p)));
            let page = c
                .send(c.http.get(c.url("/v1/operations")).query(&query))
                .await?;
            print_rows(
                &client,
                page["operations"].as_array().map_or(&[], Vec::as_slice),
                OP_COLUMNS,
            );
        }
        OpsCommand::Show { id, client } => {
            let c = Client::new(&client);
            let op = c
                .send(c.http.get(c.url(&format!("/v1/operations/{id}"))))
                .await?;
            print_rows(&client, &[op], OP_COLUMNS);
        }
        OpsCommand::Cancel { id, client } => {
            let c = Client::new(&client);
            let op = c
                .send(c.http.post(c.url(&format!("/v1/operations/{id}/cancel"))))
                .await?;
            print_rows(&client, &[op], OP_COLUMNS);
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
