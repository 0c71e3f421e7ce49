//! `kiln bench`: the deterministic benchmark data generator (read by Kiln and by the Feast
//! harness alike) and an HTTP load generator that measures any server the same way.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper::Method;
use hyper::body::Bytes;
use kiln_core::time::{now_micros, parse_duration, parse_timestamp};
use kiln_features::Progress;
use kiln_features::example::{DriverStats, write_driver_stats, write_entity_rows};
use serde::Serialize;

use super::Ctx;
use crate::http::{Conn, Url};
use crate::progress::Bars;

#[derive(clap::Subcommand)]
pub enum BenchCmd {
    /// Write driver_stats.parquet and entities.parquet (deterministic).
    GenData(GenArgs),
    /// Load an HTTP endpoint with a fixed request body and report throughput and latency.
    Http(HttpArgs),
    /// Time `kiln drift`'s stages on two files (reading, preparing the reference, comparing
    /// one-off and against a prepared reference); prints JSON.
    Drift(super::drift::DriftBenchArgs),
    /// Streaming aggregation on the embedded log: throughput, or append-to-online freshness
    /// under load (--freshness); prints JSON.
    Stream(super::bench_stream::StreamBenchArgs),
}

#[derive(clap::Args)]
pub struct GenArgs {
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 10_000)]
    pub drivers: u64,
    #[arg(long, default_value_t = 24)]
    pub hours: u64,
    /// Entity rows for training-set benchmarks.
    #[arg(long, default_value_t = 100_000)]
    pub entity_rows: u64,
    /// Last hour of the data (default: the current hour).
    #[arg(long)]
    pub anchor: Option<String>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// File name of the entity rows.
    #[arg(long, default_value = "entities_100k.parquet")]
    pub entities_file: String,
}

#[derive(clap::Args)]
pub struct HttpArgs {
    /// http://host:port/path
    #[arg(long)]
    pub url: String,
    /// File holding the JSON request body (POST); GET when absent.
    #[arg(long, conflicts_with = "bodies")]
    pub body: Option<PathBuf>,
    /// File of request bodies, one JSON document per line, sent in turn (cycling) over all
    /// connections: e.g. to control how often a cache sees the same request.
    #[arg(long)]
    pub bodies: Option<PathBuf>,
    /// Concurrent connections, each sending its next request when the previous answered. A
    /// list (`1,8`) runs one measurement per value, one after the other.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub connections: Vec<usize>,
    #[arg(long, default_value = "10s")]
    pub duration: String,
    #[arg(long, default_value = "1s")]
    pub warmup: String,
}

#[derive(Serialize)]
struct HttpReport {
    url: String,
    connections: usize,
    seconds: f64,
    requests: u64,
    errors: u64,
    requests_per_second: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    response_bytes: usize,
}

pub async fn run(ctx: &Ctx, cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::GenData(a) => gen_data(ctx, a).await,
        BenchCmd::Http(a) => http(ctx, a).await,
        BenchCmd::Drift(a) => super::drift::bench(a).await,
        BenchCmd::Stream(a) => super::bench_stream::run(a).await,
    }
}

async fn gen_data(ctx: &Ctx, a: GenArgs) -> anyhow::Result<()> {
    let anchor = match &a.anchor {
        Some(t) => parse_timestamp(t)?,
        None => now_micros(),
    };
    let hour = 3_600_000_000;
    let spec = DriverStats {
        drivers: a.drivers,
        hours: a.hours,
        anchor: anchor - anchor.rem_euclid(hour),
        first_id: 1001,
        seed: a.seed,
        stale_every: 0,
        stale_hours: 0,
    };
    let quiet = ctx.quiet || ctx.json();
    let out = a.out.clone();
    let entities_file = a.entities_file.clone();
    let entity_rows = a.entity_rows;
    let (rows, ents) = tokio::task::spawn_blocking(move || -> anyhow::Result<(u64, u64)> {
        let bars = Bars::new(quiet);
        bars.begin("driver_stats.parquet", spec.rows(), "rows");
        let mut last = 0;
        let rows = write_driver_stats(&out.join("driver_stats.parquet"), &spec, |n| {
            bars.inc(n - last);
            last = n;
        })?;
        bars.end();
        bars.begin(&entities_file, entity_rows, "rows");
        let mut last = 0;
        let ents = write_entity_rows(&out.join(&entities_file), entity_rows, &spec, |n| {
            bars.inc(n - last);
            last = n;
        })?;
        bars.end();
        Ok((rows, ents))
    })
    .await??;
    if ctx.json() {
        return crate::output::json(
            &serde_json::json!({ "out": a.out, "feature_rows": rows, "entity_rows": ents, "first_hour": spec.first_hour(), "anchor": spec.anchor }),
        );
    }
    println!(
        "Wrote {rows} feature rows and {ents} entity rows to {}",
        a.out.display()
    );
    Ok(())
}

async fn http(ctx: &Ctx, a: HttpArgs) -> anyhow::Result<()> {
    let url = Arc::new(Url::parse(&a.url)?);
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()));
    let all = match (&a.body, &a.bodies) {
        (Some(p), _) => vec![Bytes::from(read(p)?)],
        (None, Some(p)) => {
            let lines: Vec<Bytes> = read(p)?
                .split(|b| *b == b'\n')
                .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                .map(Bytes::copy_from_slice)
                .collect();
            if lines.is_empty() {
                anyhow::bail!("{}: no request bodies in it", p.display());
            }
            lines
        }
        (None, None) => Vec::new(),
    };
    let body = Bodies {
        all: Arc::new(all),
        next: Arc::new(AtomicUsize::new(0)),
    };
    let duration = Duration::from_secs(parse_duration(&a.duration)?);
    let warmup = Duration::from_secs(parse_duration(&a.warmup)?);
    // Check the endpoint answers successfully before measuring anything.
    let mut probe = Conn::open(&url.authority).await?;
    let (status, bytes) = send(&mut probe, &url, body.next()).await?;
    if !status.is_success() {
        anyhow::bail!(
            "{} answered {status}: {}",
            a.url,
            String::from_utf8_lossy(&bytes)
        );
    }
    drop(probe);
    let mut reports = Vec::new();
    for &connections in &a.connections {
        let r = measure(
            &url,
            &body,
            connections.max(1),
            warmup,
            duration,
            bytes.len(),
        )
        .await?;
        if !ctx.json() {
            println!(
                "{} conn(s), {:.0}s: {} requests, {:.0} req/s, p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms, {} errors",
                r.connections,
                r.seconds,
                r.requests,
                r.requests_per_second,
                r.p50_ms,
                r.p90_ms,
                r.p99_ms,
                r.max_ms,
                r.errors
            );
        }
        reports.push(r);
    }
    if ctx.json() {
        crate::output::json(&reports)?;
    }
    Ok(())
}

/// What requests send: nothing (GET), one body, or several in turn.
#[derive(Clone)]
struct Bodies {
    all: Arc<Vec<Bytes>>,
    next: Arc<AtomicUsize>,
}

impl Bodies {
    fn next(&self) -> Option<Bytes> {
        if self.all.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.all.len();
        Some(self.all[i].clone())
    }
}

/// Closed-loop load: each connection sends its next request when the previous one answered.
/// Requests started during the warm-up are not counted.
async fn measure(
    url: &Arc<Url>,
    body: &Bodies,
    connections: usize,
    warmup: Duration,
    duration: Duration,
    response_bytes: usize,
) -> anyhow::Result<HttpReport> {
    let measure_from = Instant::now() + warmup;
    let stop = measure_from + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (url, body) = (url.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&url.authority).await?;
            let mut lat = Vec::new();
            let mut errors = 0u64;
            loop {
                let t0 = Instant::now();
                if t0 >= stop {
                    break;
                }
                let ok = matches!(send(&mut conn, &url, body.next()).await, Ok((s, _)) if s.is_success());
                if t0 >= measure_from {
                    if ok {
                        lat.push(t0.elapsed().as_nanos() as u64);
                    } else {
                        errors += 1;
                    }
                }
                if !ok {
                    conn = Conn::open(&url.authority).await?;
                }
            }
            anyhow::Ok((lat, errors))
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await??;
        all.extend(lat);
        errors += e;
    }
    all.sort_unstable();
    let q = |p: f64| {
        all.get(((all.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |ns| *ns as f64 / 1e6)
    };
    let secs = duration.as_secs_f64();
    Ok(HttpReport {
        url: format!("http://{}{}", url.authority, url.path),
        connections,
        seconds: secs,
        requests: all.len() as u64,
        errors,
        requests_per_second: all.len() as f64 / secs,
        p50_ms: q(0.50),
        p90_ms: q(0.90),
        p99_ms: q(0.99),
        max_ms: all.last().map_or(0.0, |ns| *ns as f64 / 1e6),
        response_bytes,
    })
}

async fn send(
    conn: &mut Conn,
    url: &Url,
    body: Option<Bytes>,
) -> anyhow::Result<(hyper::StatusCode, Bytes)> {
    match body {
        Some(b) => conn.request(Method::POST, &url.path, b).await,
        None => conn.request(Method::GET, &url.path, Bytes::new()).await,
    }
}
