//! `kiln drift`: has the data moved? Compares a current file with a reference file column by
//! column, with Evidently's `DataDriftPreset` rules (`kiln_monitor::drift`), and prints a table,
//! JSON, or writes a self-contained HTML page. `kiln drift --model NAME` shows a served model's
//! live drift instead ([`super::drift_live`]).
//!
//! Exit status: 0 when the report was made (drift or not); 1 on an error (a file that cannot be
//! read, a column missing or of different kinds in the two files, ...); with `--fail-on-drift`,
//! 2 when the dataset drifted, so a pipeline step can stop on it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_monitor::drift::{
    ColumnType, DriftOptions, DriftReport, Method, PreparedReference, drift, drift_datasets,
    drift_owned, html,
};
use serde::Serialize;

use super::{Ctx, Exit};
use crate::output::{Format, table};
use crate::tabular::{self, Table};

#[derive(clap::Args)]
pub struct DriftArgs {
    /// The reference data (the training set): Parquet, or CSV by its .csv extension.
    #[arg(long, required_unless_present = "model", conflicts_with = "model")]
    pub reference: Option<PathBuf>,
    /// The data to compare with it (same columns; Parquet or CSV).
    #[arg(long, required_unless_present = "model", conflicts_with = "model")]
    pub current: Option<PathBuf>,
    /// Show a served model's live drift instead: its recent traffic against its reference,
    /// as the running server last evaluated it.
    #[arg(long)]
    pub model: Option<String>,
    /// With --model: the version (default: the one that answers by default).
    #[arg(long, requires = "model")]
    pub version: Option<u32>,
    /// With --model: the server's URL (default: the project's serve.addr).
    #[arg(long, requires = "model")]
    pub server: Option<String>,
    /// Compare only these columns (comma-separated; default: every column of the current file
    /// that can be compared).
    #[arg(long, value_delimiter = ',')]
    pub columns: Option<Vec<String>>,
    /// One test for every column instead of the default choice: ks, chisquare, z,
    /// wasserstein, jensenshannon or psi.
    #[arg(long)]
    pub method: Option<Method>,
    /// One threshold for every column instead of each test's default.
    #[arg(long)]
    pub threshold: Option<f64>,
    /// The dataset drifts when at least this share of the columns drift.
    #[arg(long, default_value_t = 0.5)]
    pub drift_share: f64,
    /// Treat these columns as categorical (e.g. integer codes with more than 10 values).
    #[arg(long, value_delimiter = ',')]
    pub categorical: Vec<String>,
    /// Treat these columns as numerical.
    #[arg(long, value_delimiter = ',')]
    pub numerical: Vec<String>,
    /// Write the report (JSON, HTML or the table) to this file instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Exit with status 2 when the dataset drifted.
    #[arg(long)]
    pub fail_on_drift: bool,
}

/// The JSON output: the report and what was compared.
#[derive(Serialize)]
struct Output<'a> {
    reference: String,
    current: String,
    #[serde(flatten)]
    report: &'a DriftReport,
}

pub async fn run(ctx: &Ctx, a: DriftArgs) -> anyhow::Result<()> {
    if let Some(model) = &a.model {
        return super::drift_live::run(ctx, model, &a).await;
    }
    let quiet = ctx.quiet;
    let format = ctx.output;
    tokio::task::spawn_blocking(move || run_blocking(quiet, format, a))
        .await
        .context("the drift computation stopped unexpectedly")?
}

fn run_blocking(quiet: bool, format: Format, a: DriftArgs) -> anyhow::Result<()> {
    let options = options(&a)?;
    let (Some(ref_path), Some(cur_path)) = (&a.reference, &a.current) else {
        anyhow::bail!("give --reference and --current (or --model)");
    };
    let t0 = Instant::now();
    let (reference, current) = read_both(ref_path, cur_path, a.columns.as_deref(), quiet)?;
    let read_s = t0.elapsed().as_secs_f64();
    let mut options = options;
    for c in &current.categorical {
        options
            .column_types
            .entry(c.clone())
            .or_insert(ColumnType::Categorical);
    }
    let spinner = bar(quiet, None, "comparing");
    let t0 = Instant::now();
    // Both tables are done with once compared: hand their columns over (sorted in place).
    let report = drift_owned(reference.dataset, current.dataset, &options).with_context(|| {
        format!(
            "cannot compare {} with {}",
            cur_path.display(),
            ref_path.display()
        )
    })?;
    let compare_s = t0.elapsed().as_secs_f64();
    spinner.finish_and_clear();
    tracing::debug!(read_s, compare_s, "kiln drift stages");
    let (rname, cname) = (
        ref_path.display().to_string(),
        cur_path.display().to_string(),
    );
    let text = match format {
        Format::Json => {
            let out = Output {
                reference: rname,
                current: cname,
                report: &report,
            };
            serde_json::to_string_pretty(&out)? + "\n"
        }
        Format::Html => html::render(&report, "Kiln drift report", &rname, &cname),
        Format::Table => render_table(&report, &rname, &cname),
    };
    match &a.out {
        Some(path) => write_atomic(path, &text)?,
        None => print!("{text}"),
    }
    if a.fail_on_drift && report.dataset_drift {
        return Err(Exit {
            code: 2,
            message: format!(
                "dataset drift: {} of {} columns drifted",
                report.number_of_drifted_columns, report.number_of_columns
            ),
        }
        .into());
    }
    Ok(())
}

fn options(a: &DriftArgs) -> anyhow::Result<DriftOptions> {
    let mut o = DriftOptions {
        columns: a.columns.clone(),
        method: a.method,
        threshold: a.threshold,
        drift_share: a.drift_share,
        ..DriftOptions::default()
    };
    for c in &a.categorical {
        o.column_types.insert(c.clone(), ColumnType::Categorical);
    }
    for c in &a.numerical {
        if o.column_types
            .insert(c.clone(), ColumnType::Numerical)
            .is_some()
        {
            anyhow::bail!("column {c:?} is given both as --categorical and as --numerical");
        }
    }
    Ok(o)
}

/// Reads both files at once (each with its columns spread over the cores), with one progress
/// bar counting values read.
fn read_both(
    reference: &Path,
    current: &Path,
    cols: Option<&[String]>,
    quiet: bool,
) -> anyhow::Result<(Table, Table)> {
    let progress = bar(quiet, Some(0), "reading");
    let (r, c) = rayon::join(
        || tabular::read(reference, "reference", cols, &progress),
        || tabular::read(current, "current", cols, &progress),
    );
    progress.finish_and_clear();
    Ok((r?, c?))
}

fn bar(quiet: bool, len: Option<u64>, msg: &'static str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
    let template = match len {
        Some(_) => "{msg:12} [{bar:30}] {human_pos}/{human_len} values ({per_sec}, {eta} left)",
        None => "{msg:12} {spinner} {elapsed}",
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        b.set_style(style.progress_chars("=> "));
    }
    b.set_message(msg);
    if len.is_none() {
        b.enable_steady_tick(Duration::from_millis(120));
    }
    b
}

/// The table's first line: the verdict and the share that made it.
pub(super) fn headline(
    dataset_drift: bool,
    drifted: usize,
    columns: usize,
    share: f64,
    drift_share: f64,
) -> String {
    format!(
        "{}: {drifted} of {columns} columns drifted ({:.1}%; the dataset drifts at {:.0}% or more)",
        if dataset_drift {
            "DATASET DRIFT"
        } else {
            "no dataset drift"
        },
        share * 100.0,
        drift_share * 100.0,
    )
}

fn render_table(r: &DriftReport, reference: &str, current: &str) -> String {
    let mut s = format!(
        "{}\nreference: {reference} ({} rows), current: {current} ({} rows)\n",
        headline(
            r.dataset_drift,
            r.number_of_drifted_columns,
            r.number_of_columns,
            r.share_of_drifted_columns,
            r.drift_share
        ),
        r.reference_rows,
        r.current_rows,
    );
    let rows = r
        .columns
        .iter()
        .map(|c| {
            column_row(
                &c.name,
                &c.column_type.to_string(),
                c.method_name,
                c.score,
                c.threshold,
                c.drifted,
            )
        })
        .collect();
    s.push_str(&table(&TABLE_HEADER, rows));
    s.push('\n');
    for k in &r.skipped {
        s.push_str(&format!("not compared: {}: {}\n", k.name, k.reason));
    }
    s
}

pub(super) const TABLE_HEADER: [&str; 6] =
    ["column", "type", "method", "score", "threshold", "drift"];

/// One column's line of the table.
pub(super) fn column_row(
    name: &str,
    column_type: &str,
    method: &str,
    score: f64,
    threshold: f64,
    drifted: bool,
) -> Vec<String> {
    vec![
        name.to_string(),
        column_type.to_string(),
        method.to_string(),
        format_score(score),
        threshold.to_string(),
        if drifted { "DRIFT" } else { "no" }.to_string(),
    ]
}

fn format_score(x: f64) -> String {
    if x == 0.0 || (1e-4..1e4).contains(&x.abs()) {
        format!("{x:.4}")
    } else {
        format!("{x:.3e}")
    }
}

/// Writes `text` to a temporary file next to `path`, then renames it over `path`.
pub(super) fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("kiln-tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

#[derive(clap::Args)]
pub struct DriftBenchArgs {
    #[arg(long)]
    pub reference: PathBuf,
    #[arg(long)]
    pub current: PathBuf,
    /// Timed repetitions of each comparison.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

/// Seconds per stage of `kiln drift`, inside one process.
#[derive(Serialize)]
struct DriftTimings {
    reference_rows: usize,
    current_rows: usize,
    columns: usize,
    threads: usize,
    /// Reading both files (in parallel).
    read_s: f64,
    /// Preparing the reference alone (sorting, counting): what live drift does once.
    prepare_s: f64,
    /// Preparing the reference and comparing, on borrowed data (`drift_datasets`).
    one_off_s: Vec<f64>,
    one_off_median_s: f64,
    /// Comparing against the prepared reference: live drift, every window.
    prepared_s: Vec<f64>,
    prepared_median_s: f64,
    /// Preparing and comparing with the columns handed over (`drift_owned`): what `kiln drift`
    /// does after reading.
    owned_s: Vec<f64>,
    owned_median_s: f64,
}

/// `kiln bench drift`: times the stages of a drift comparison on two files and prints JSON.
pub async fn bench(a: DriftBenchArgs) -> anyhow::Result<()> {
    let t = tokio::task::spawn_blocking(move || -> anyhow::Result<DriftTimings> {
        let t0 = Instant::now();
        let (reference, current) = read_both(&a.reference, &a.current, None, true)?;
        let read_s = t0.elapsed().as_secs_f64();
        let opts = DriftOptions::default();
        let t0 = Instant::now();
        let prepared = PreparedReference::new(&reference.dataset);
        let prepare_s = t0.elapsed().as_secs_f64();
        let mut one_off_s = Vec::new();
        let mut prepared_s = Vec::new();
        let mut owned_s = Vec::new();
        let mut columns = 0;
        for _ in 0..a.runs.max(1) {
            let t0 = Instant::now();
            columns =
                drift_datasets(&reference.dataset, &current.dataset, &opts)?.number_of_columns;
            one_off_s.push(t0.elapsed().as_secs_f64());
            let t0 = Instant::now();
            drift(&prepared, &current.dataset, &opts)?;
            prepared_s.push(t0.elapsed().as_secs_f64());
            let (r, c) = (reference.dataset.clone(), current.dataset.clone());
            let t0 = Instant::now();
            drift_owned(r, c, &opts)?;
            owned_s.push(t0.elapsed().as_secs_f64());
        }
        Ok(DriftTimings {
            reference_rows: reference.dataset.rows(),
            current_rows: current.dataset.rows(),
            columns,
            threads: rayon::current_num_threads(),
            read_s,
            prepare_s,
            one_off_median_s: median(&one_off_s),
            one_off_s,
            prepared_median_s: median(&prepared_s),
            prepared_s,
            owned_median_s: median(&owned_s),
            owned_s,
        })
    })
    .await
    .context("the drift benchmark stopped unexpectedly")??;
    crate::output::json(&t)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}
