//! `annostore ops ...` and `annostore admin ...`: the admin API from the command line.
//! Lists print a table, or JSON lines with `--json`; reports print as JSON.

use super::{Client, OP_COLUMNS, print_rows};
use crate::cli::{
    AdminCommand, ClientArgs, DeadLetterCommand, EndArgs, KeyArgs, MoveArgs, OpFilterArgs,
    OpsCommand,
};
use anyhow::{Context, bail};
use serde_json::{Map, Value, json};

const HISTORY_COLUMNS: &[&str] = &[
    "sequence",
    "operation_number",
    "operation_id",
    "reason",
    "previous",
    "actor",
    "at",
];
const DEAD_LETTER_COLUMNS: &[&str] = &[
    "work_id",
    "operation_id",
    "annotations",
    "receive_count",
    "pending",
    "created_at",
];
const CONSISTENCY_COLUMNS: &[&str] = &[
    "operation_id",
    "pivot_id",
    "operation_number",
    "status",
    "active",
    "store",
    "index",
    "pending_work",
    "agrees",
    "repaired",
    "note",
];

/// The selection part of an admin request body: `filter` and the ages.
fn selection(f: &OpFilterArgs) -> anyhow::Result<Map<String, Value>> {
    let mut filter = Map::new();
    if let Some(s) = &f.status {
        filter.insert("status".into(), json!(s.to_uppercase()));
    }
    if let Some(t) = &f.annotation_type {
        filter.insert("annotation_type".into(), json!(t));
    }
    if let Some(v) = f.annotation_type_version {
        filter.insert("annotation_type_version".into(), json!(v));
    }
    if let Some(p) = &f.pivot {
        filter.insert("pivot_id".into(), json!(p));
    }
    if let Some(p) = &f.producer {
        filter.insert("producer".into(), json!(p));
    }
    if let Some(a) = f.active {
        filter.insert("active".into(), json!(a));
    }
    let mut metadata = Map::new();
    for kv in &f.metadata {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--metadata {kv}: expected KEY=VALUE"))?;
        let value = serde_json::from_str(v).unwrap_or_else(|_| json!(v));
        metadata.insert(k.to_owned(), value);
    }
    if !metadata.is_empty() {
        filter.insert("metadata".into(), Value::Object(metadata));
    }
    let mut body = Map::new();
    body.insert("filter".into(), Value::Object(filter));
    if let Some(d) = f.older_than {
        body.insert("older_than_seconds".into(), json!(d.as_secs()));
    }
    if let Some(d) = f.idle_for {
        body.insert("idle_seconds".into(), json!(d.as_secs()));
    }
    Ok(body)
}

fn key_body(key: &KeyArgs, to: Option<&str>) -> Value {
    let mut body = json!({
        "annotation_type": key.annotation_type,
        "annotation_type_version": key.annotation_type_version,
        "pivot_id": key.pivot,
    });
    if let Some(to) = to {
        body["to"] = json!(to);
    }
    body
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn ops(cmd: OpsCommand) -> anyhow::Result<()> {
    match cmd {
        OpsCommand::List {
            filter,
            oldest_first,
            limit,
            page_token,
            all,
            client,
        } => {
            let c = Client::new(&client);
            let mut body = selection(&filter)?;
            body.insert(
                "order".into(),
                json!(if oldest_first {
                    "oldest_first"
                } else {
                    "newest_first"
                }),
            );
            body.insert("limit".into(), json!(limit));
            let mut token = page_token;
            loop {
                if let Some(t) = &token {
                    body.insert("page_token".into(), json!(t));
                }
                let page = c
                    .send(c.http.post(c.url("/v1/admin/operations/scan")).json(&body))
                    .await?;
                print_rows(
                    &client,
                    page["operations"].as_array().map_or(&[], Vec::as_slice),
                    OP_COLUMNS,
                );
                token = page["next_page_token"].as_str().map(str::to_owned);
                match &token {
                    Some(_) if all => continue,
                    Some(t) => eprintln!("more: --page-token {t}"),
                    None => {}
                }
                return Ok(());
            }
        }
        OpsCommand::Counts { filter, client } => {
            let c = Client::new(&client);
            let counts = c
                .send(
                    c.http
                        .post(c.url("/v1/admin/operations/counts"))
                        .json(&selection(&filter)?),
                )
                .await?;
            print_json(&counts)
        }
        OpsCommand::Show { id, client } => {
            let c = Client::new(&client);
            let op = c
                .send(c.http.get(c.url(&format!("/v1/operations/{id}"))))
                .await?;
            print_rows(&client, &[op], OP_COLUMNS);
            Ok(())
        }
        OpsCommand::Cancel(args) => end(args, "cancel").await,
        OpsCommand::Expire(args) => end(args, "expire").await,
        OpsCommand::Rollback(args) => move_active(args, "/v1/admin/rollback").await,
        OpsCommand::Rollforward(args) => move_active(args, "/v1/admin/rollforward").await,
        OpsCommand::History { key, limit, client } => {
            let c = Client::new(&client);
            let query = [
                ("annotation_type", key.annotation_type.clone()),
                (
                    "annotation_type_version",
                    key.annotation_type_version.to_string(),
                ),
                ("pivot_id", key.pivot.clone()),
                ("limit", limit.to_string()),
            ];
            let history = c
                .send(c.http.get(c.url("/v1/admin/activations")).query(&query))
                .await?;
            print_rows(
                &client,
                history["activations"].as_array().map_or(&[], Vec::as_slice),
                HISTORY_COLUMNS,
            );
            Ok(())
        }
    }
}

async fn move_active(args: MoveArgs, path: &str) -> anyhow::Result<()> {
    let client = &args.client;
    let body = key_body(&args.key, args.to.as_deref());
    let c = Client::new(client);
    let moved = c.send(c.http.post(c.url(path)).json(&body)).await?;
    if client.json {
        println!("{moved}");
        return Ok(());
    }
    let mut rows = vec![moved["operation"].clone()];
    if !moved["deactivated"].is_null() {
        rows.push(moved["deactivated"].clone());
    }
    print_rows(client, &rows, OP_COLUMNS);
    if moved["activation"].is_null() {
        eprintln!("nothing changed: that run was already active");
    }
    Ok(())
}

/// `ops cancel` / `ops expire`: one run by id, or in bulk.
async fn end(args: EndArgs, action: &str) -> anyhow::Result<()> {
    let c = Client::new(&args.client);
    if let Some(id) = &args.id {
        let path = match action {
            "cancel" => format!("/v1/operations/{id}/cancel"),
            _ => format!("/v1/admin/operations/{id}/expire"),
        };
        let op = c.send(c.http.post(c.url(&path))).await?;
        print_rows(&args.client, &[op], OP_COLUMNS);
        return Ok(());
    }
    let f = &args.filter;
    if f.older_than.is_none()
        && f.idle_for.is_none()
        && f.annotation_type.is_none()
        && f.pivot.is_none()
        && f.producer.is_none()
        && f.metadata.is_empty()
    {
        bail!(
            "give an operation id, or filters for a bulk {action} (--older-than 6h, --idle-for 1h, --type, --pivot, --producer, --metadata)"
        );
    }
    let mut body = selection(f)?;
    body.insert("action".into(), json!(action));
    body.insert("dry_run".into(), json!(args.dry_run));
    body.insert("limit".into(), json!(args.limit));
    let report = c
        .send(c.http.post(c.url("/v1/admin/operations/end")).json(&body))
        .await?;
    if args.client.json {
        println!("{report}");
        return Ok(());
    }
    let rows: Vec<Value> = report["operations"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|e| {
            let mut op = e["operation"].clone();
            op["error"] = e["error"].clone();
            op
        })
        .collect();
    let mut columns = OP_COLUMNS.to_vec();
    columns.push("error");
    print_rows(&args.client, &rows, &columns);
    eprintln!(
        "{}: {} matched, {} ended, {} failed{}",
        if args.dry_run { "dry run" } else { action },
        report["matched"],
        report["ended"],
        report["failed"],
        if report["truncated"] == json!(true) {
            " (more match: run it again)"
        } else {
            ""
        }
    );
    Ok(())
}

pub async fn admin(cmd: AdminCommand) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::Gc {
            dry_run,
            max_annotations,
            status,
            client,
        } => {
            let c = Client::new(&client);
            let report = if status {
                c.send(c.http.get(c.url("/v1/admin/gc"))).await?
            } else {
                let mut body = json!({"dry_run": dry_run});
                if let Some(m) = max_annotations {
                    body["max_annotations"] = json!(m);
                }
                c.send(c.http.post(c.url("/v1/admin/gc")).json(&body))
                    .await?
            };
            print_json(&report)
        }
        AdminCommand::DeadLetters(cmd) => dead_letters(cmd).await,
        AdminCommand::Consistency {
            filter,
            repair,
            only_disagreeing,
            limit,
            client,
        } => {
            let c = Client::new(&client);
            let mut body = selection(&filter)?;
            body.remove("older_than_seconds");
            body.remove("idle_seconds");
            body.insert("repair".into(), json!(repair));
            body.insert("only_disagreeing".into(), json!(only_disagreeing));
            body.insert("limit".into(), json!(limit));
            let report = c
                .send(c.http.post(c.url("/v1/admin/consistency")).json(&body))
                .await?;
            if client.json {
                println!("{report}");
                return Ok(());
            }
            print_rows(
                &client,
                report["operations"].as_array().map_or(&[], Vec::as_slice),
                CONSISTENCY_COLUMNS,
            );
            eprintln!(
                "{} checked, {} disagree, {} repaired",
                report["checked"], report["disagreeing"], report["repaired"]
            );
            Ok(())
        }
    }
}

async fn dead_letters(cmd: DeadLetterCommand) -> anyhow::Result<()> {
    match cmd {
        DeadLetterCommand::List { limit, client } => {
            let c = Client::new(&client);
            let list = c
                .send(
                    c.http
                        .get(c.url("/v1/admin/dead-letters"))
                        .query(&[("limit", limit)]),
                )
                .await?;
            print_rows(
                &client,
                list["dead_letters"].as_array().map_or(&[], Vec::as_slice),
                DEAD_LETTER_COLUMNS,
            );
            eprintln!("{} dead letters in all", list["total"]);
            Ok(())
        }
        DeadLetterCommand::Show { work_id, client } => {
            let c = Client::new(&client);
            let letter = c
                .send(
                    c.http
                        .get(c.url(&format!("/v1/admin/dead-letters/{work_id}"))),
                )
                .await?;
            print_json(&letter)
        }
        DeadLetterCommand::Redrive {
            work_ids,
            all,
            client,
        } => which(&client, "/v1/admin/dead-letters/redrive", work_ids, all).await,
        DeadLetterCommand::Purge {
            work_ids,
            all,
            client,
        } => which(&client, "/v1/admin/dead-letters/purge", work_ids, all).await,
    }
}

async fn which(
    client: &ClientArgs,
    path: &str,
    work_ids: Vec<String>,
    all: bool,
) -> anyhow::Result<()> {
    let body = match (work_ids.is_empty(), all) {
        (true, true) => json!({"all": true}),
        (false, false) => json!({"work_ids": work_ids}),
        _ => bail!("give work ids, or --all"),
    };
    let c = Client::new(client);
    let answer = c.send(c.http.post(c.url(path)).json(&body)).await?;
    print_json(&answer)
}
