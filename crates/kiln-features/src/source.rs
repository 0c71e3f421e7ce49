//! Reading a view's rows from its source in one normalised form: join keys and features cast
//! to their declared types, timestamps as UTC microseconds. The point-in-time join and
//! materialization both read through here, so they cannot disagree about what a row says.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch};
use arrow_cast::{CastOptions, cast_with_options};
use arrow_schema::{DataType, Field as ArrowField, Schema, SchemaRef};
use kiln_core::spec::{Field, ViewVersion};
use kiln_store::offline::timestamps_micros;

use crate::FeatureError;

/// The columns of a view that a job needs, and how to read them.
#[derive(Debug, Clone)]
pub(crate) struct SourceColumns {
    pub keys: Vec<Field>,
    pub timestamp: String,
    pub created: Option<String>,
    pub features: Vec<Field>,
}

/// One batch of a view's rows, normalised.
#[derive(Debug, Clone)]
pub(crate) struct Normalized {
    pub keys: Vec<ArrayRef>,
    pub event_ts: Int64Array,
    pub created_ts: Option<Int64Array>,
    pub features: Vec<ArrayRef>,
}

pub(crate) const EVENT_TS: &str = "__event_ts";
pub(crate) const CREATED_TS: &str = "__created_ts";

impl SourceColumns {
    /// The columns for `features` of `view` (all features when `features` is `None`).
    pub fn for_view(
        view: &ViewVersion,
        features: Option<&[String]>,
    ) -> Result<SourceColumns, FeatureError> {
        let features = match features {
            None => view.features.clone(),
            Some(names) => names
                .iter()
                .map(|n| {
                    view.feature(n).cloned().ok_or_else(|| {
                        FeatureError::BadRequest(format!(
                            "feature view {}@v{} has no feature {n:?} (it has: {})",
                            view.name,
                            view.version,
                            view.features
                                .iter()
                                .map(|f| f.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(SourceColumns {
            keys: view.join_keys.clone(),
            timestamp: view.source.timestamp_field.clone(),
            created: view.source.created_timestamp_column.clone(),
            features,
        })
    }

    /// Source column names to read.
    pub fn scan_columns(&self) -> Vec<String> {
        let mut cols: Vec<String> = self.keys.iter().map(|k| k.name.clone()).collect();
        cols.push(self.timestamp.clone());
        cols.extend(self.created.iter().cloned());
        cols.extend(self.features.iter().map(|f| f.name.clone()));
        cols
    }

    /// Normalises one raw source batch read from `path`.
    pub fn normalize(&self, batch: &RecordBatch, path: &Path) -> Result<Normalized, FeatureError> {
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .cloned()
                .ok_or_else(|| FeatureError::Data {
                    path: path.to_path_buf(),
                    message: format!("column {name:?} is missing"),
                })
        };
        let typed = |f: &Field| -> Result<ArrayRef, FeatureError> {
            cast_to(&col(&f.name)?, &f.dtype.arrow_type()).map_err(|e| FeatureError::Data {
                path: path.to_path_buf(),
                message: format!("column {:?} cannot be read as {}: {e}", f.name, f.dtype),
            })
        };
        let ts = |name: &str| {
            timestamps_micros(&col(name)?).map_err(|message| FeatureError::Data {
                path: path.to_path_buf(),
                message: format!("column {name:?}: {message}"),
            })
        };
        Ok(Normalized {
            keys: self.keys.iter().map(typed).collect::<Result<_, _>>()?,
            event_ts: ts(&self.timestamp)?,
            created_ts: self.created.as_deref().map(ts).transpose()?,
            features: self.features.iter().map(typed).collect::<Result<_, _>>()?,
        })
    }

    /// The schema of a normalised batch as one record batch: keys, event time, created time
    /// (if any), features.
    pub fn normalized_schema(&self) -> SchemaRef {
        let mut fields: Vec<ArrowField> = self
            .keys
            .iter()
            .map(|k| ArrowField::new(&k.name, k.dtype.arrow_type(), true))
            .collect();
        fields.push(ArrowField::new(EVENT_TS, DataType::Int64, true));
        if self.created.is_some() {
            fields.push(ArrowField::new(CREATED_TS, DataType::Int64, true));
        }
        fields.extend(
            self.features
                .iter()
                .map(|f| ArrowField::new(&f.name, f.dtype.arrow_type(), true)),
        );
        Arc::new(Schema::new(fields))
    }
}

impl Normalized {
    pub fn len(&self) -> usize {
        self.event_ts.len()
    }

    /// As one record batch of [`SourceColumns::normalized_schema`].
    pub fn into_batch(self, schema: &SchemaRef) -> Result<RecordBatch, FeatureError> {
        let mut cols = self.keys;
        cols.push(Arc::new(self.event_ts));
        if let Some(c) = self.created_ts {
            cols.push(Arc::new(c));
        }
        cols.extend(self.features);
        RecordBatch::try_new(schema.clone(), cols)
            .map_err(|e| FeatureError::internal("normalising", e))
    }

    /// Splits a batch of [`SourceColumns::normalized_schema`] back into its parts.
    pub fn from_batch(batch: &RecordBatch, cols: &SourceColumns) -> Normalized {
        let nk = cols.keys.len();
        let has_created = cols.created.is_some();
        let int64 = |a: &ArrayRef| {
            a.as_any()
                .downcast_ref::<Int64Array>()
                .cloned()
                .unwrap_or_else(|| Int64Array::new_null(a.len()))
        };
        let c = batch.columns();
        let first_feature = nk + 1 + usize::from(has_created);
        Normalized {
            keys: c[..nk].to_vec(),
            event_ts: int64(&c[nk]),
            created_ts: has_created.then(|| int64(&c[nk + 1])),
            features: c[first_feature..].to_vec(),
        }
    }
}

/// Casts without silently turning unconvertible values into nulls.
pub fn cast_to(array: &ArrayRef, to: &DataType) -> Result<ArrayRef, arrow_schema::ArrowError> {
    if array.data_type() == to {
        return Ok(array.clone());
    }
    cast_with_options(
        array,
        to,
        &CastOptions {
            safe: false,
            ..Default::default()
        },
    )
}
