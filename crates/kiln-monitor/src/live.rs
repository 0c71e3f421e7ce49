//! Live drift: a model version's recent traffic (its [`Window`] of logged features and
//! outputs) compared with its reference, the data it was trained on (recorded at registration)
//! or a window of its own traffic pinned as the baseline.
//!
//! The reference is prepared once ([`LiveReference`]) and every evaluation does the current
//! side's work only. Column types come from the reference's storage: a server sees every
//! value as a double, so typing the window as Evidently would type a file (floats are
//! numerical) would make an integer code with three values numerical on one day and
//! categorical in `kiln drift` on the training file. The reference decides, once.
//!
//! The reference is stored as a Parquet artifact next to the model ([`encode_reference`],
//! [`decode_reference`]): numeric columns only (model inputs are numbers), kinds preserved.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, RecordBatchReader,
};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::Serialize;

use crate::drift::{
    ColumnData, ColumnType, Dataset, DriftOptions, DriftReport, PreparedReference, drift,
    reference_type,
};
use crate::error::MonitorError;
use crate::window::Window;

/// Where a live reference came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReferenceOrigin {
    /// Recorded at registration (`kiln models register --reference FILE`).
    Registered {
        /// The artifact's key in the artifact store.
        artifact: String,
        /// The file it was read from.
        source: String,
    },
    /// A window of the version's own traffic, pinned as its baseline.
    Pinned {
        /// When it was pinned, microseconds since the Unix epoch.
        at_micros: i64,
        /// The artifact it was saved to, if it was saved.
        #[serde(skip_serializing_if = "Option::is_none")]
        artifact: Option<String>,
    },
}

/// A reference ready to compare windows with.
#[derive(Debug)]
pub struct LiveReference {
    prepared: PreparedReference,
    /// The reference's column types, imposed on the window's doubles.
    column_types: HashMap<String, ColumnType>,
    pub origin: ReferenceOrigin,
}

impl LiveReference {
    /// Prepares `dataset` (numeric columns; booleans are compared as 0/1 codes, which drift
    /// types categorical as it types booleans).
    pub fn new(dataset: &Dataset, origin: ReferenceOrigin) -> Result<LiveReference, MonitorError> {
        let mut numeric = Dataset::new();
        let mut column_types = HashMap::new();
        for c in dataset.columns() {
            let data = match &c.data {
                ColumnData::Bool(v) => ColumnData::Int(v.iter().map(|&b| i64::from(b)).collect()),
                ColumnData::Float(_) | ColumnData::Int(_) => c.data.clone(),
                other => {
                    return Err(MonitorError::Reference(format!(
                        "column {:?} holds {} values; a live reference holds numbers (model \
                         inputs and outputs)",
                        c.name,
                        other.dtype()
                    )));
                }
            };
            if let Some(t) = reference_type(&data) {
                column_types.insert(c.name.clone(), t);
            }
            numeric.push(c.name.clone(), data)?;
        }
        Ok(LiveReference {
            prepared: PreparedReference::new(&numeric),
            column_types,
            origin,
        })
    }

    /// A window pinned as the reference.
    pub fn pinned(window: &Window, at_micros: i64) -> Result<LiveReference, MonitorError> {
        LiveReference::new(
            &window.to_dataset(),
            ReferenceOrigin::Pinned {
                at_micros,
                artifact: None,
            },
        )
    }

    pub fn rows(&self) -> usize {
        self.prepared.rows()
    }

    pub fn column_names(&self) -> impl Iterator<Item = &str> {
        self.prepared.column_names()
    }

    /// Compares `window` with this reference: the window's columns that the reference has,
    /// typed as the reference types them. A column with no value on one side is listed as
    /// skipped (a short window may not have seen one yet).
    pub fn compare(&self, window: &Window, histograms: bool) -> Result<DriftReport, MonitorError> {
        let columns: Vec<String> = window
            .columns
            .iter()
            .filter(|c| self.prepared.get(c).is_some())
            .cloned()
            .collect();
        if columns.is_empty() {
            return Err(MonitorError::NoColumns(format!(
                "the reference has none of the served columns ({})",
                window.columns.join(", ")
            )));
        }
        let column_types = columns
            .iter()
            .filter_map(|c| self.column_types.get(c).map(|t| (c.clone(), *t)))
            .collect();
        let options = DriftOptions {
            columns: Some(columns),
            column_types,
            histograms,
            skip_empty: true,
            ..DriftOptions::default()
        };
        drift(&self.prepared, &window.to_dataset(), &options)
    }
}

/// One live evaluation, as `GET /v1/models/{name}/drift` returns it.
#[derive(Debug, Clone, Serialize)]
pub struct LiveDrift {
    pub model: String,
    pub version: u32,
    /// When it was evaluated, microseconds since the Unix epoch.
    pub evaluated_at_micros: i64,
    pub reference: ReferenceInfo,
    /// Rows in the compared window, and rows the version has scored since the server started.
    pub window_rows: usize,
    pub rows_seen: u64,
    pub report: DriftReport,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReferenceInfo {
    pub rows: usize,
    #[serde(flatten)]
    pub origin: ReferenceOrigin,
}

impl ReferenceInfo {
    pub fn of(r: &LiveReference) -> ReferenceInfo {
        ReferenceInfo {
            rows: r.rows(),
            origin: r.origin.clone(),
        }
    }
}

/// Writes a reference dataset (float, integer and boolean columns) as Parquet.
pub fn encode_reference(dataset: &Dataset) -> Result<Vec<u8>, MonitorError> {
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for c in dataset.columns() {
        let (t, a): (DataType, ArrayRef) = match &c.data {
            ColumnData::Float(v) => (
                DataType::Float64,
                Arc::new(Float64Array::from(v.clone())) as ArrayRef,
            ),
            ColumnData::Int(v) => (DataType::Int64, Arc::new(Int64Array::from(v.clone()))),
            ColumnData::Bool(v) => (DataType::Boolean, Arc::new(BooleanArray::from(v.clone()))),
            other => {
                return Err(MonitorError::Reference(format!(
                    "column {:?} holds {} values; a reference holds numbers",
                    c.name,
                    other.dtype()
                )));
            }
        };
        if a.len() != dataset.rows() {
            return Err(MonitorError::Reference(format!(
                "column {:?} has {} rows, the others {}",
                c.name,
                a.len(),
                dataset.rows()
            )));
        }
        fields.push(Field::new(&c.name, t, false));
        arrays.push(a);
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), arrays)
        .map_err(|e| MonitorError::Reference(e.to_string()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema, Some(props))
        .map_err(|e| MonitorError::Reference(e.to_string()))?;
    writer
        .write(&batch)
        .and_then(|()| writer.close().map(drop))
        .map_err(|e| MonitorError::Reference(e.to_string()))?;
    Ok(out)
}

/// Reads a reference written by [`encode_reference`].
pub fn decode_reference(bytes: Vec<u8>) -> Result<Dataset, MonitorError> {
    let bad = |e: &dyn std::fmt::Display| {
        MonitorError::Reference(format!("not a readable reference Parquet file: {e}"))
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
        .map_err(|e| bad(&e))?
        .build()
        .map_err(|e| bad(&e))?;
    let schema = reader.schema();
    let mut columns: Vec<ColumnData> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Float64 => Ok(ColumnData::Float(Vec::new())),
            DataType::Int64 => Ok(ColumnData::Int(Vec::new())),
            DataType::Boolean => Ok(ColumnData::Bool(Vec::new())),
            t => Err(MonitorError::Reference(format!(
                "column {:?} is {t}; a reference holds float64, int64 and boolean columns",
                f.name()
            ))),
        })
        .collect::<Result<_, _>>()?;
    for batch in reader {
        let batch = batch.map_err(|e| bad(&e))?;
        for (data, a) in columns.iter_mut().zip(batch.columns()) {
            if a.null_count() > 0 {
                return Err(MonitorError::Reference(
                    "a reference column has nulls".into(),
                ));
            }
            match data {
                ColumnData::Float(v) => v.extend(a.as_primitive::<Float64Type>().values()),
                ColumnData::Int(v) => v.extend(a.as_primitive::<Int64Type>().values()),
                ColumnData::Bool(v) => v.extend(a.as_boolean().values().iter()),
                _ => unreachable!("only the kinds above are created"),
            }
        }
    }
    let mut dataset = Dataset::new();
    for (f, data) in schema.fields().iter().zip(columns) {
        dataset.push(f.name().clone(), data)?;
    }
    Ok(dataset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::drift_datasets;

    fn reference() -> Dataset {
        Dataset::new()
            .with(
                "amount",
                ColumnData::Float((0..2000).map(|i| f64::from(i) * 0.5).collect()),
            )
            .and_then(|d| {
                d.with(
                    "segment",
                    ColumnData::Int((0..2000).map(|i| i % 3).collect()),
                )
            })
            .and_then(|d| {
                d.with(
                    "vip",
                    ColumnData::Bool((0..2000).map(|i| i % 4 == 0).collect()),
                )
            })
            .expect("a dataset")
    }

    fn window(shift: f64, rows: usize) -> Window {
        Window::from_columns(
            vec![
                "amount".into(),
                "segment".into(),
                "vip".into(),
                "prediction".into(),
            ],
            vec![
                (0..rows)
                    .map(|i| i as f64 * 0.5 * (2000.0 / rows as f64) + shift)
                    .collect(),
                (0..rows).map(|i| (i % 3) as f64).collect(),
                (0..rows)
                    .map(|i| if i % 4 == 0 { 1.0 } else { 0.0 })
                    .collect(),
                vec![0.5; rows],
            ],
        )
    }

    #[test]
    fn the_reference_survives_its_parquet_round_trip() {
        let d = reference();
        let back = decode_reference(encode_reference(&d).expect("encoded")).expect("decoded");
        assert_eq!(back.rows(), 2000);
        for c in d.columns() {
            let b = back.column(&c.name).expect("column");
            assert_eq!(format!("{:?}", b.data), format!("{:?}", c.data));
        }
        let err = decode_reference(b"not parquet".to_vec()).expect_err("refused");
        assert!(
            err.to_string().contains("not a readable reference"),
            "{err}"
        );
    }

    #[test]
    fn a_window_is_typed_as_its_reference_and_agrees_with_the_file_report() {
        let live = LiveReference::new(
            &reference(),
            ReferenceOrigin::Pinned {
                at_micros: 0,
                artifact: None,
            },
        )
        .expect("prepared");
        let w = window(0.0, 500);
        let report = live.compare(&w, false).expect("compared");
        // The output column is not in the reference: left out, not an error.
        assert_eq!(report.number_of_columns, 3);
        assert_eq!(
            report.column("segment").expect("segment").column_type,
            ColumnType::Categorical
        );
        assert_eq!(
            report.column("vip").expect("vip").column_type,
            ColumnType::Categorical
        );
        assert!(!report.dataset_drift, "{report:#?}");
        // The same comparison as files with the reference's kinds: the same scores.
        let mut current = Dataset::new();
        current
            .push(
                "amount",
                ColumnData::Float(w.values[0].iter().copied().collect()),
            )
            .expect("amount");
        current
            .push(
                "segment",
                ColumnData::Int(w.values[1].iter().map(|&v| v as i64).collect()),
            )
            .expect("segment");
        current
            .push(
                "vip",
                ColumnData::Bool(w.values[2].iter().map(|&v| v == 1.0).collect()),
            )
            .expect("vip");
        let files =
            drift_datasets(&reference(), &current, &DriftOptions::default()).expect("file report");
        for c in &report.columns {
            let f = files.column(&c.name).expect("same column");
            assert_eq!((c.method, c.drifted), (f.method, f.drifted), "{}", c.name);
            assert!(
                (c.score - f.score).abs() <= 1e-12 * f.score.abs().max(1.0),
                "{}",
                c.name
            );
        }
        // A shifted amount drifts.
        let shifted = live.compare(&window(400.0, 500), false).expect("compared");
        assert!(shifted.column("amount").expect("amount").drifted);
        assert!(!shifted.column("segment").expect("segment").drifted);
    }

    #[test]
    fn string_references_are_refused_by_column() {
        let d = Dataset::new()
            .with(
                "city",
                ColumnData::Str(["a", "b"].into_iter().map(Some).collect()),
            )
            .expect("dataset");
        let err = LiveReference::new(
            &d,
            ReferenceOrigin::Pinned {
                at_micros: 0,
                artifact: None,
            },
        )
        .expect_err("refused");
        assert!(err.to_string().contains("\"city\""), "{err}");
        assert!(encode_reference(&d).is_err());
    }
}
