//! `kiln consistency VIEW`: do the online values of an aggregated view agree with a batch
//! recomputation? For a sample of the view's keys (taken from its source, in a fixed
//! hash order so reruns pick the same keys), read each key's online row and its time, compute
//! the same features as of that time with `kiln dataset build`'s kernel from the offline
//! events, and count the differences (floats within a relative 1e-9).
//!
//! Run it on a stream that has checkpointed (events reach the offline store at checkpoints),
//! e.g. after `kiln stream run --until-idle`. Exit status 2 with --fail-on-mismatch when
//! anything differs.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field as ArrowField, Schema, TimeUnit};
use kiln_core::Value;
use kiln_core::key::entity_key;
use kiln_core::time::format_timestamp;
use kiln_features::pit::{DatasetOptions, FeatureInput, ViewRequest, join_batches};
use kiln_features::{cast_to, value_at};
use kiln_store::offline::{ParquetScan, ScanRequest};
use serde::Serialize;

use super::{Ctx, Exit};

#[derive(clap::Args)]
pub struct ConsistencyArgs {
    /// An online feature view with windowed aggregations.
    pub view: String,
    /// Keys compared at most.
    #[arg(long, default_value_t = 1000)]
    pub sample: usize,
    /// Exit with status 2 when any value differs.
    #[arg(long)]
    pub fail_on_mismatch: bool,
}

#[derive(Debug, Serialize)]
struct Mismatch {
    key: String,
    feature: String,
    at: String,
    online: String,
    batch: String,
}

#[derive(Debug, Serialize)]
struct Report {
    view: String,
    version: u32,
    keys_sampled: usize,
    keys_online: usize,
    values_compared: usize,
    mismatches: usize,
    mismatch_rate: f64,
    examples: Vec<Mismatch>,
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float64(x), Value::Float64(y)) => {
            x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        _ => a == b,
    }
}

pub async fn run(ctx: &Ctx, a: ConsistencyArgs) -> anyhow::Result<()> {
    let project = ctx.project()?;
    let state = project.registry().await?.state().await?;
    let view = state.view(&a.view)?.current().clone();
    if view.aggregations.is_empty() {
        anyhow::bail!(
            "feature view {:?} has no windowed aggregations: there is no batch recomputation to compare with",
            a.view
        );
    }
    let path = project.dir.join(&view.source.path);
    // The keys, from the source.
    let key_names: Vec<String> = view.join_keys.iter().map(|k| k.name.clone()).collect();
    let scan = ParquetScan::plan(
        &path,
        &ScanRequest {
            columns: key_names.clone(),
            time_column: view.source.timestamp_field.clone(),
            time_range: None,
            batch_size: 65_536,
        },
    )?;
    let mut keys: HashMap<Vec<u8>, Vec<Value>> = HashMap::new();
    for batch in scan {
        let (_, batch) = batch?;
        let cols = view
            .join_keys
            .iter()
            .map(|k| {
                let c = batch
                    .column_by_name(&k.name)
                    .ok_or_else(|| anyhow::anyhow!("source has no column {:?}", k.name))?;
                Ok(cast_to(c, &k.dtype.arrow_type())?)
            })
            .collect::<anyhow::Result<Vec<ArrayRef>>>()?;
        for r in 0..batch.num_rows() {
            let vals: Vec<Value> = cols.iter().map(|c| value_at(c, r)).collect();
            if vals.iter().all(|v| !v.is_null()) {
                keys.entry(entity_key(&vals)).or_insert(vals);
            }
        }
    }
    let mut sample: Vec<(Vec<u8>, Vec<Value>)> = keys.into_iter().collect();
    sample.sort_by_key(|(k, _)| xxhash_rust::xxh3::xxh3_64(k));
    sample.truncate(a.sample);
    // Their online rows.
    let store = project.online_store().await?;
    let key_bytes: Vec<Vec<u8>> = sample.iter().map(|(k, _)| k.clone()).collect();
    let rows = store.get_many(&view.name, &key_bytes).await?;
    let mut online: Vec<(&Vec<Value>, i64, Vec<Value>)> = Vec::new();
    for ((_, vals), row) in sample.iter().zip(&rows) {
        let Some(row) = row else { continue };
        let (version, values) = row.decode_payload().map_err(anyhow::Error::msg)?;
        if version == view.version {
            online.push((vals, row.event_ts, values));
        }
    }
    let mut report = Report {
        view: view.name.clone(),
        version: view.version,
        keys_sampled: sample.len(),
        keys_online: online.len(),
        values_compared: 0,
        mismatches: 0,
        mismatch_rate: 0.0,
        examples: Vec::new(),
    };
    if !online.is_empty() {
        // The batch values at the same times.
        let mut fields: Vec<ArrowField> = view
            .join_keys
            .iter()
            .map(|k| ArrowField::new(&k.name, k.dtype.arrow_type(), true))
            .collect();
        fields.push(ArrowField::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ));
        let mut cols: Vec<ArrayRef> = view
            .join_keys
            .iter()
            .enumerate()
            .map(|(i, k)| kiln_stream::sink::column(k.dtype, online.iter().map(|o| &o.0[i])))
            .collect();
        let times: Vec<Value> = online.iter().map(|o| Value::Timestamp(o.1)).collect();
        cols.push(kiln_stream::sink::column(
            kiln_core::ValueType::Timestamp,
            times.iter(),
        ));
        let entities = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?;
        let features: Vec<String> = view.features.iter().map(|f| f.name.clone()).collect();
        let req = ViewRequest {
            view: view.clone(),
            features: features.clone(),
        };
        let opts = DatasetOptions {
            timestamp_column: Some("event_timestamp".into()),
            spill_dir: project.spill_dir(),
            ..DatasetOptions::default()
        };
        let (batch, _) = tokio::task::spawn_blocking(move || {
            join_batches(&[entities], vec![(req, FeatureInput::Parquet(path))], &opts)
        })
        .await??;
        for (row, (key, at, values)) in online.iter().enumerate() {
            for (f, name) in features.iter().enumerate() {
                let col = batch
                    .column_by_name(name)
                    .ok_or_else(|| anyhow::anyhow!("batch result has no column {name:?}"))?;
                let want = value_at(col, row);
                let got = values.get(f).cloned().unwrap_or(Value::Null);
                report.values_compared += 1;
                if !same(&got, &want) {
                    report.mismatches += 1;
                    if report.examples.len() < 10 {
                        report.examples.push(Mismatch {
                            key: key
                                .iter()
                                .map(Value::to_string)
                                .collect::<Vec<_>>()
                                .join(","),
                            feature: name.clone(),
                            at: format_timestamp(*at),
                            online: got.to_string(),
                            batch: want.to_string(),
                        });
                    }
                }
            }
        }
        report.mismatch_rate = report.mismatches as f64 / report.values_compared.max(1) as f64;
    }
    if ctx.json() {
        crate::output::json(&report)?;
    } else {
        println!(
            "{}@v{}: {} keys sampled, {} online, {} values compared, {} differ (mismatch rate {:.6})",
            report.view,
            report.version,
            report.keys_sampled,
            report.keys_online,
            report.values_compared,
            report.mismatches,
            report.mismatch_rate
        );
        for m in &report.examples {
            println!(
                "  key {} {} as of {}: online {} batch {}",
                m.key, m.feature, m.at, m.online, m.batch
            );
        }
    }
    if a.fail_on_mismatch && report.mismatches > 0 {
        return Err(Exit {
            code: 2,
            message: format!("{} values differ", report.mismatches),
        }
        .into());
    }
    Ok(())
}
