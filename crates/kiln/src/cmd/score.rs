//! `kiln models score`: offline (batch) scoring of a Parquet file with a registered version.
//!
//! It exists so that offline scores are the online ones: the version's artifact is read from
//! the artifact store, its SHA-256 checked, and loaded with the same `kiln_models::load` the
//! server uses, so a pipeline's preprocessing and ensembling run through the same code. Input
//! columns are found by name (numeric or boolean; nulls are missing values); every input
//! column is copied to the output (keys and all) and the prediction column(s) appended.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{ArrayRef, Float64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use kiln_core::spec::ModelVersion;
use kiln_features::Progress;
use kiln_models::{Format, Model};
use kiln_store::artifacts::sha256_hex;
use kiln_store::offline::{ParquetScan, ScanRequest, column_list, read_schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::Ctx;
use crate::progress::Bars;

#[derive(clap::Args)]
pub struct ScoreArgs {
    pub name: String,
    /// The version to score with (default: the production version, else the latest).
    #[arg(long)]
    pub version: Option<u32>,
    /// Parquet file (or directory of them) holding the model's input columns by name.
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the input columns plus the prediction column(s) (Parquet). (`--out`, as
    /// in `kiln dataset build`: `--output` is the global output format.)
    #[arg(long)]
    pub out: PathBuf,
    /// Name of the prediction column; with several outputs, NAME_0, NAME_1, ...
    #[arg(long, default_value = "prediction")]
    pub prediction_column: String,
    /// Rows read and scored at a time.
    #[arg(long, default_value_t = 8192)]
    pub batch_size: usize,
}

pub async fn run(
    ctx: &Ctx,
    project: &crate::project::Project,
    state: &kiln_registry::State,
    a: ScoreArgs,
) -> anyhow::Result<()> {
    let spec = state.model_version(&a.name, a.version)?.spec.clone();
    let what = format!("{}@v{}", spec.name, spec.version);
    let bytes = project
        .artifacts()?
        .get(&spec.artifact)
        .await
        .with_context(|| format!("{what}: cannot read its artifact"))?;
    let sha = sha256_hex(&bytes);
    if sha != spec.sha256 {
        anyhow::bail!(
            "{what}: artifact {} has SHA-256 {sha}, registered as {}; it was changed after registration",
            spec.artifact,
            spec.sha256
        );
    }
    let format: Format = spec.format.parse()?;
    let (label, out) = (what.clone(), a.out.clone());
    let started = Instant::now();
    let quiet = ctx.quiet || ctx.json();
    let rows = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        let model = kiln_models::load(format, &bytes).context(what)?;
        score_file(&spec, model.as_ref(), &a, &Bars::new(quiet))
    })
    .await??;
    let secs = started.elapsed().as_secs_f64();
    if ctx.json() {
        return crate::output::json(&serde_json::json!({
            "model": label, "rows": rows, "output": out, "seconds": secs
        }));
    }
    println!(
        "Scored {rows} rows with {label} into {} in {secs:.2}s",
        out.display()
    );
    Ok(())
}

/// The output column names for `k` outputs.
fn output_names(prefix: &str, k: usize) -> Vec<String> {
    if k == 1 {
        vec![prefix.to_string()]
    } else {
        (0..k).map(|i| format!("{prefix}_{i}")).collect()
    }
}

/// Scores `a.input` into `a.out` (written to a temporary file, renamed at the end).
fn score_file(
    spec: &ModelVersion,
    model: &dyn Model,
    a: &ScoreArgs,
    progress: &dyn Progress,
) -> anyhow::Result<u64> {
    let input = &a.input;
    let schema = read_schema(input)?;
    let inputs = &spec.inputs;
    for name in inputs {
        let field = schema.field_with_name(name).map_err(|_| {
            anyhow::anyhow!(
                "{}: no column {name:?}, an input of {}@v{} (columns: {})",
                input.display(),
                spec.name,
                spec.version,
                column_list(&schema)
            )
        })?;
        if !numeric(field.data_type()) {
            anyhow::bail!(
                "{}: column {name:?} is {}; model inputs must be numeric or boolean",
                input.display(),
                field.data_type()
            );
        }
    }
    let k = model.info().n_outputs;
    let outputs = output_names(&a.prediction_column, k);
    if let Some(c) = outputs.iter().find(|c| schema.field_with_name(c).is_ok()) {
        anyhow::bail!(
            "{}: already has a column {c:?}; choose another name with --prediction-column",
            input.display()
        );
    }
    let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
    fields.extend(
        outputs
            .iter()
            .map(|n| Arc::new(Field::new(n, DataType::Float64, false))),
    );
    let out_schema: SchemaRef = Arc::new(Schema::new(fields));

    let scan = ParquetScan::plan(
        input,
        &ScanRequest {
            columns: Vec::new(),
            time_column: String::new(),
            time_range: None,
            batch_size: a.batch_size.max(1),
        },
    )?;
    progress.begin("scoring", scan.total_rows, "rows");
    let tmp = a.out.with_extension("parquet.partial");
    let result = write_scores(&tmp, scan, &out_schema, inputs, model, k, progress);
    progress.end();
    let rows = match result {
        Ok(rows) => rows,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, &a.out).with_context(|| format!("cannot write {}", a.out.display()))?;
    Ok(rows)
}

fn numeric(t: &DataType) -> bool {
    t.is_numeric() || *t == DataType::Boolean || *t == DataType::Null
}

fn write_scores(
    tmp: &Path,
    scan: ParquetScan,
    out_schema: &SchemaRef,
    inputs: &[String],
    model: &dyn Model,
    k: usize,
    progress: &dyn Progress,
) -> anyhow::Result<u64> {
    let file = File::create(tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer = ArrowWriter::try_new(file, out_schema.clone(), Some(props))?;
    let mut total = 0u64;
    let (mut rows, mut out) = (Vec::new(), Vec::new());
    for item in scan {
        let (path, batch) = item?;
        let n = batch.num_rows();
        rows.clear();
        rows.resize(n * inputs.len(), f64::NAN);
        for (j, name) in inputs.iter().enumerate() {
            let col = batch.column_by_name(name).ok_or_else(|| {
                anyhow::anyhow!("{}: no column {name:?} in this file", path.display())
            })?;
            let col = arrow_cast::cast(col, &DataType::Float64)
                .with_context(|| format!("{}: column {name:?}", path.display()))?;
            let col = col.as_primitive::<Float64Type>();
            for (i, v) in col.iter().enumerate() {
                // A null is a missing value, as NaN is.
                rows[i * inputs.len() + j] = v.unwrap_or(f64::NAN);
            }
        }
        out.clear();
        out.resize(n * k, 0.0);
        model.predict(&rows, &mut out)?;
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        for o in 0..k {
            let values: Float64Array = (0..n).map(|i| Some(out[i * k + o])).collect();
            columns.push(Arc::new(values));
        }
        let scored = RecordBatch::try_new(out_schema.clone(), columns)
            .with_context(|| format!("{}: columns differ from the first file's", path.display()))?;
        writer.write(&scored)?;
        total += n as u64;
        progress.inc(n as u64);
    }
    writer.close()?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_columns_are_numbered_only_when_there_are_several() {
        assert_eq!(output_names("p", 1), ["p"]);
        assert_eq!(output_names("p", 3), ["p_0", "p_1", "p_2"]);
        assert!(numeric(&DataType::Int32) && numeric(&DataType::Boolean));
        assert!(!numeric(&DataType::Utf8));
    }
}
