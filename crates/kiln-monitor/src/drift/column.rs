//! One column's comparison: check both sides hold the same kind of values, type the column
//! from the current side, drop missing values, count distinct values of both sides, pick the
//! test, score it, give the verdict.

use std::borrow::Cow;

use super::DriftOptions;
use super::binning::{Binned, HISTOGRAM_ABOVE, shares};
use super::chisquare::chisquare_p;
use super::dataset::ColumnData;
use super::histogram::{self, Histogram};
use super::jensenshannon::js_distance;
use super::ks;
use super::merge::{merge_stats, unique_and_w1};
use super::prepared::Prepared;
use super::psi::psi;
use super::report::{ColumnDrift, SideStats, SkippedColumn};
use super::rules::{ColumnType, Method, SMALL_REFERENCE, Typing, default_method, infer};
use super::sample::{KeyCounts, LabelCounts, NumericKind, NumericSample};
use super::ztest::z_test_p;
use crate::error::{MonitorError, Side};

pub(crate) enum Outcome {
    Compared(ColumnDrift),
    Skipped(SkippedColumn),
}

/// The kind of values, for the "same kind on both sides" check.
fn class(data: &ColumnData) -> &str {
    match data {
        ColumnData::Float(_) | ColumnData::Int(_) => "numeric",
        ColumnData::Bool(_) => "boolean",
        ColumnData::Str(_) => "string",
        ColumnData::Unsupported { dtype, .. } => dtype,
    }
}

fn prepared_class(p: &Prepared) -> &str {
    match p {
        Prepared::Numeric { sample, .. } if sample.kind == NumericKind::Bool => "boolean",
        Prepared::Numeric { .. } => "numeric",
        Prepared::Labels(_) => "string",
        Prepared::Unsupported { dtype } => dtype,
    }
}

/// Compares one column. `explicit`: the caller named the column, so a column that cannot be
/// compared is an error rather than a skipped entry. Current values handed over owned are
/// sorted in their own memory.
pub(crate) fn evaluate(
    name: &str,
    reference: &Prepared,
    current: Cow<'_, ColumnData>,
    options: &DriftOptions,
    explicit: bool,
) -> Result<Outcome, MonitorError> {
    let skip = |reason: String| -> Result<Outcome, MonitorError> {
        if explicit {
            Err(MonitorError::Unsupported {
                column: name.to_string(),
                reason,
            })
        } else {
            Ok(Outcome::Skipped(SkippedColumn {
                name: name.to_string(),
                reason,
            }))
        }
    };
    // Typing looks at the current side only: a column it cannot type is left out; a current
    // column it can type but a reference of another kind is an error (Evidently's too).
    if let ColumnData::Unsupported { dtype, .. } = current.as_ref() {
        return skip(format!("its current type ({dtype}) is not supported"));
    }
    let (rc, cc) = (prepared_class(reference), class(&current).to_string());
    let mismatch = || MonitorError::TypeMismatch {
        column: name.to_string(),
        reference: rc.to_string(),
        current: cc.clone(),
    };
    if rc != cc {
        return Err(mismatch());
    }
    let column_type = match options.column_types.get(name) {
        Some(&t) => t,
        None => match infer(&current) {
            Typing::Type(t) => t,
            Typing::Text => {
                return skip(
                    "it is a text column (strings, more than half of them distinct): Evidently \
                     compares those with a text classifier, which Kiln does not do"
                        .into(),
                );
            }
            Typing::Untyped(reason) => return skip(reason),
        },
    };
    if column_type == ColumnType::Numerical && matches!(current.as_ref(), ColumnData::Str(_)) {
        return Err(MonitorError::Unsupported {
            column: name.to_string(),
            reason: "it holds strings, so it cannot be numerical".into(),
        });
    }
    let empty = |side: Side, rows: usize| MonitorError::EmptyColumn {
        column: name.to_string(),
        side,
        rows,
    };
    let scored = match reference {
        Prepared::Numeric { sample, std } => {
            let cur = match current {
                Cow::Owned(ColumnData::Float(v)) => NumericSample::from_float_vec(v),
                Cow::Owned(ColumnData::Int(v)) => NumericSample::from_int_vec(v),
                Cow::Borrowed(ColumnData::Float(v)) => NumericSample::from_floats(v),
                Cow::Borrowed(ColumnData::Int(v)) => NumericSample::from_ints(v),
                Cow::Owned(ColumnData::Bool(v)) => NumericSample::from_bools(&v),
                Cow::Borrowed(ColumnData::Bool(v)) => NumericSample::from_bools(v),
                _ => return Err(mismatch()),
            };
            if sample.is_empty() {
                return empty_or_skip(empty(Side::Reference, sample.missing), options, name);
            }
            if cur.is_empty() {
                return empty_or_skip(empty(Side::Current, cur.missing), options, name);
            }
            score_numeric(name, column_type, sample, *std, &cur, options)?
        }
        Prepared::Labels(rl) => {
            let ColumnData::Str(s) = current.as_ref() else {
                return Err(mismatch());
            };
            let cl = LabelCounts::from_strings(s);
            if rl.total == 0 {
                return empty_or_skip(empty(Side::Reference, rl.missing), options, name);
            }
            if cl.total == 0 {
                return empty_or_skip(empty(Side::Current, cl.missing), options, name);
            }
            score_labels(name, column_type, rl, &cl, options)?
        }
        Prepared::Unsupported { .. } => return Err(mismatch()),
    };
    let threshold = options
        .threshold
        .unwrap_or(scored.method.default_threshold());
    Ok(Outcome::Compared(ColumnDrift {
        name: name.to_string(),
        column_type,
        method: scored.method,
        method_name: scored.method.display_name(),
        score: scored.score,
        threshold,
        drifted: scored.method.is_drift(scored.score, threshold),
        n_unique: scored.n_unique,
        reference: scored.reference,
        current: scored.current,
        histogram: scored.histogram,
    }))
}

fn empty_or_skip(
    err: MonitorError,
    options: &DriftOptions,
    name: &str,
) -> Result<Outcome, MonitorError> {
    if options.skip_empty {
        Ok(Outcome::Skipped(SkippedColumn {
            name: name.to_string(),
            reason: err.to_string(),
        }))
    } else {
        Err(err)
    }
}

struct Scored {
    method: Method,
    score: f64,
    n_unique: usize,
    reference: SideStats,
    current: SideStats,
    histogram: Option<Histogram>,
}

fn pick(
    name: &str,
    column_type: ColumnType,
    reference_values: usize,
    n_unique: usize,
    options: &DriftOptions,
) -> Result<Method, MonitorError> {
    // Evidently's defaults apply chi-square and Z to low-cardinality numerical columns too;
    // only a method the caller forces is held to the types Evidently registers it for.
    let Some(method) = options.method else {
        return Ok(default_method(column_type, reference_values, n_unique));
    };
    if !method.applies_to(column_type) {
        return Err(MonitorError::MethodNotApplicable {
            method: method.name(),
            column: name.to_string(),
            column_type: column_type.as_str(),
            allowed: method.allowed_types(),
        });
    }
    Ok(method)
}

fn score_numeric(
    name: &str,
    column_type: ColumnType,
    r: &NumericSample,
    r_std: f64,
    c: &NumericSample,
    options: &DriftOptions,
) -> Result<Scored, MonitorError> {
    // The KS statistic is needed only where the test can be KS: forced, or Evidently's
    // default for a reference of at most 1000 values.
    let ks_possible = match options.method {
        Some(m) => m == Method::Ks,
        None => r.len() <= SMALL_REFERENCE,
    };
    let (n_unique, ks_d, w1) = if ks_possible {
        let m = merge_stats(r, c);
        (m.n_unique, m.ks_d, m.w1)
    } else {
        let m = unique_and_w1(r, c);
        (m.n_unique, f64::NAN, m.w1)
    };
    let method = pick(name, column_type, r.len(), n_unique, options)?;
    let kind = if r.kind == NumericKind::Bool {
        NumericKind::Bool
    } else {
        c.kind
    };
    let counts = || KeyCounts::numbers(&r.runs(), &c.runs(), kind);
    let mut kept_counts = None;
    let score = match method {
        Method::Ks => ks::p_value(r.len(), c.len(), ks_d),
        Method::Wasserstein => w1 / r_std.max(0.001),
        Method::Chisquare => chisquare_p(kept_counts.insert(counts())),
        Method::Z => z_test_p(kept_counts.insert(counts())),
        Method::Jensenshannon | Method::Psi => {
            let (p, q) = if column_type == ColumnType::Numerical && r.distinct > HISTOGRAM_ABOVE {
                shares(Binned::Histogram(r, c))
            } else {
                shares(Binned::Values(kept_counts.insert(counts())))
            };
            if method == Method::Psi {
                psi(p, q)
            } else {
                js_distance(&p, &q)
            }
        }
    };
    let histogram = options.histograms.then(|| {
        if column_type == ColumnType::Numerical && n_unique > HISTOGRAM_ABOVE {
            histogram::numeric(r, c)
        } else {
            histogram::values(kept_counts.get_or_insert_with(counts))
        }
    });
    Ok(Scored {
        method,
        score,
        n_unique,
        reference: SideStats {
            values: r.len(),
            missing: r.missing,
        },
        current: SideStats {
            values: c.len(),
            missing: c.missing,
        },
        histogram,
    })
}

fn score_labels(
    name: &str,
    column_type: ColumnType,
    r: &LabelCounts,
    c: &LabelCounts,
    options: &DriftOptions,
) -> Result<Scored, MonitorError> {
    let k = KeyCounts::labels(r, c);
    let n_unique = k.keys.len();
    let method = pick(name, column_type, r.total as usize, n_unique, options)?;
    let score = match method {
        Method::Chisquare => chisquare_p(&k),
        Method::Z => z_test_p(&k),
        Method::Jensenshannon | Method::Psi => {
            let (p, q) = shares(Binned::Values(&k));
            if method == Method::Psi {
                psi(p, q)
            } else {
                js_distance(&p, &q)
            }
        }
        // `pick` refused these for a categorical column.
        Method::Ks | Method::Wasserstein => f64::NAN,
    };
    Ok(Scored {
        method,
        score,
        n_unique,
        reference: SideStats {
            values: r.total as usize,
            missing: r.missing,
        },
        current: SideStats {
            values: c.total as usize,
            missing: c.missing,
        },
        histogram: options.histograms.then(|| histogram::values(&k)),
    })
}
