//! `kiln drift --model NAME`: a served model's live drift, as the running server last evaluated
//! it (`GET /v1/models/{name}/drift`): its recent traffic against its reference. The server is
//! the project's (`serve.addr`) unless `--server` names another. Table, JSON or the HTML report.

use anyhow::Context;
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use serde::Deserialize;

use super::drift::DriftArgs;
use super::{Ctx, Exit};
use crate::http::{Conn, Url};
use crate::output::{Format, table};

/// The parts of the server's answer the table shows.
#[derive(Deserialize)]
struct Live {
    model: String,
    version: u32,
    evaluated_at_micros: i64,
    reference: Reference,
    window_rows: usize,
    report: Report,
}

#[derive(Deserialize)]
struct Reference {
    rows: usize,
    kind: String,
    #[serde(default)]
    source: Option<String>,
}

#[derive(Deserialize)]
struct Report {
    dataset_drift: bool,
    drift_share: f64,
    share_of_drifted_columns: f64,
    number_of_columns: usize,
    number_of_drifted_columns: usize,
    columns: Vec<Column>,
    #[serde(default)]
    skipped: Vec<Skipped>,
}

#[derive(Deserialize)]
struct Column {
    name: String,
    column_type: String,
    method_name: String,
    score: f64,
    threshold: f64,
    drifted: bool,
}

#[derive(Deserialize)]
struct Skipped {
    name: String,
    reason: String,
}

pub async fn run(ctx: &Ctx, model: &str, a: &DriftArgs) -> anyhow::Result<()> {
    let base = match &a.server {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            let addr = ctx.project()?.config.serve.addr;
            // A server listening on every interface is reached on loopback.
            format!("http://{}", addr.replace("0.0.0.0", "127.0.0.1"))
        }
    };
    let mut path = format!("/v1/models/{model}/drift");
    if let Some(v) = a.version {
        path.push_str(&format!("?version={v}"));
    }
    let url = Url::parse(&format!("{base}{path}"))?;
    let mut conn = Conn::open(&url.authority).await.with_context(|| {
        format!("is `kiln serve` running at {base}? (--server URL names another)")
    })?;
    let body = get(&mut conn, &base, &url.path).await?;
    let live: Live = serde_json::from_slice(&body)
        .with_context(|| format!("{base} answered something that is not a drift evaluation"))?;
    let text = match ctx.output {
        Format::Html => {
            let sep = if url.path.contains('?') { '&' } else { '?' };
            let page = get(&mut conn, &base, &format!("{}{sep}format=html", url.path)).await?;
            String::from_utf8_lossy(&page).to_string()
        }
        Format::Json => {
            let v: serde_json::Value = serde_json::from_slice(&body)?;
            serde_json::to_string_pretty(&v)? + "\n"
        }
        Format::Table => render(&live),
    };
    match &a.out {
        Some(path) => super::drift::write_atomic(path, &text)?,
        None => print!("{text}"),
    }
    if a.fail_on_drift && live.report.dataset_drift {
        return Err(Exit {
            code: 2,
            message: format!(
                "{} v{}: dataset drift, {} of {} columns drifted",
                live.model,
                live.version,
                live.report.number_of_drifted_columns,
                live.report.number_of_columns
            ),
        }
        .into());
    }
    Ok(())
}

/// GETs `path`; a non-200 answer is an error with the server's message.
async fn get(conn: &mut Conn, base: &str, path: &str) -> anyhow::Result<Bytes> {
    let (status, body) = conn.request(Method::GET, path, Bytes::new()).await?;
    if status != StatusCode::OK {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).to_string());
        anyhow::bail!("{base}: {status}: {message}");
    }
    Ok(body)
}

fn render(l: &Live) -> String {
    let r = &l.report;
    let reference = match (l.reference.kind.as_str(), &l.reference.source) {
        ("registered", Some(source)) => format!("training data {source}"),
        ("pinned", _) => "a pinned window of its traffic".into(),
        (kind, _) => kind.to_string(),
    };
    let mut s = format!(
        "{} v{}: {}\n\
         reference: {reference} ({} rows), current: the last {} rows served, evaluated {}\n",
        l.model,
        l.version,
        super::drift::headline(
            r.dataset_drift,
            r.number_of_drifted_columns,
            r.number_of_columns,
            r.share_of_drifted_columns,
            r.drift_share
        ),
        l.reference.rows,
        l.window_rows,
        kiln_core::time::format_timestamp(l.evaluated_at_micros),
    );
    let rows = r
        .columns
        .iter()
        .map(|c| {
            super::drift::column_row(
                &c.name,
                &c.column_type,
                &c.method_name,
                c.score,
                c.threshold,
                c.drifted,
            )
        })
        .collect();
    s.push_str(&table(&super::drift::TABLE_HEADER, rows));
    s.push('\n');
    for k in &r.skipped {
        s.push_str(&format!("not compared: {}: {}\n", k.name, k.reason));
    }
    s
}
