//! Checks a view's `[[feature_view.aggregations]]` and expands them into one feature per
//! (function, column, window), named `{column}_{function}_{window}` (`count_{window}` for a
//! count of events; `_tumbling` or `_session` appended for those kinds of window), with its
//! output type.
//!
//! Input columns are read widened: integers as int64, floats as float64. Output types:
//! `count` and `count_distinct` int64; `mean` and `stddev` float64; `sum`, `min`, `max` and
//! `last` the input's (widened) type. A feature is named with its window as written (spaces
//! removed): `"24h"` gives `amount_sum_24h`; two windows of the same length (`"60m"` and
//! `"1h"`) for the same function and column are reported as a duplicate.

use std::collections::HashSet;

use arrow_schema::{DataType, SchemaRef};
use kiln_core::ValueType;
use kiln_core::spec::{AggFunction, AggregationSpec, Field, WindowKind};
use kiln_core::time::parse_duration;
use kiln_store::offline::column_list;
use toml::Spanned;

use super::raw::{Loc, RawAggregation};
use super::validate::Checker;

/// The longest window accepted: a century, like ttls.
const MAX_WINDOW_SECONDS: u64 = 100 * 365 * 86_400;

/// What the checks need to know about the view.
pub(super) struct Context<'a> {
    /// `feature_view[name]`, the prefix of every field path.
    pub what: &'a str,
    pub join_keys: &'a [Field],
    /// The source's schema and path, when it could be read.
    pub source: Option<(&'a SchemaRef, &'a str)>,
}

/// The type a source column is read as for aggregation, or `None` if it cannot be.
pub fn input_type(t: &DataType) -> Option<ValueType> {
    use DataType as D;
    Some(match t {
        D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32 => {
            ValueType::Int64
        }
        D::Float16 | D::Float32 | D::Float64 => ValueType::Float64,
        D::Utf8 | D::LargeUtf8 | D::Utf8View => ValueType::String,
        D::Binary | D::LargeBinary | D::BinaryView => ValueType::Bytes,
        D::Boolean => ValueType::Bool,
        D::Timestamp(_, _) => ValueType::Timestamp,
        _ => return None,
    })
}

/// Whether `function` can aggregate a column of type `t`.
fn accepts(function: AggFunction, t: ValueType) -> Result<(), &'static str> {
    let numeric = matches!(t, ValueType::Int64 | ValueType::Float64);
    match function {
        AggFunction::Count | AggFunction::Last => Ok(()),
        AggFunction::Sum
        | AggFunction::Mean
        | AggFunction::Stddev
        | AggFunction::Min
        | AggFunction::Max
            if !numeric =>
        {
            Err("needs a numeric (integer or float) column")
        }
        AggFunction::CountDistinct | AggFunction::ApproxCountDistinct
            if t == ValueType::Float64 =>
        {
            Err(
                "does not take float columns (float equality is rarely what is meant); count distinct integers or strings",
            )
        }
        _ => Ok(()),
    }
}

/// The output feature of one (function, column, window as written, window kind).
pub(crate) fn feature_name(
    function: AggFunction,
    column: Option<&str>,
    window: &str,
    kind: WindowKind,
) -> String {
    let window: String = window.chars().filter(|c| !c.is_whitespace()).collect();
    let suffix = match kind {
        WindowKind::Sliding => "",
        WindowKind::Tumbling => "_tumbling",
        WindowKind::Session => "_session",
    };
    match column {
        Some(c) => format!("{c}_{function}_{window}{suffix}"),
        None => format!("{function}_{window}{suffix}"),
    }
}

fn window_kind(text: &str) -> Result<WindowKind, String> {
    match text {
        "sliding" => Ok(WindowKind::Sliding),
        "tumbling" => Ok(WindowKind::Tumbling),
        "session" => Ok(WindowKind::Session),
        other => Err(format!(
            "unknown window kind {other:?}: \"sliding\" (the window's length before each time), \"tumbling\" (the epoch-aligned bucket holding it) or \"session\" (the key's current session; the window is the gap that ends one)"
        )),
    }
}

fn window(text: &str) -> Result<u64, String> {
    let secs = parse_duration(text).map_err(|e| e.to_string())?;
    if secs == 0 {
        return Err(format!(
            "window {text:?} is empty: write e.g. \"10m\", \"1h\" or \"7d\""
        ));
    }
    if secs > MAX_WINDOW_SECONDS {
        return Err(format!("window {text:?} is longer than 100 years"));
    }
    Ok(secs)
}

/// Checks the aggregations and expands them into features; `None` if anything was wrong (every
/// problem is reported).
pub(super) fn check(
    c: &mut Checker,
    loc: &Loc,
    ctx: &Context<'_>,
    raw: &[Spanned<RawAggregation>],
) -> Option<(Vec<Field>, Vec<AggregationSpec>)> {
    let mut ok = true;
    let mut fields = Vec::new();
    let mut specs = Vec::new();
    let mut names: HashSet<String> = ctx.join_keys.iter().map(|k| k.name.clone()).collect();
    let mut same: HashSet<(AggFunction, Option<String>, u64, WindowKind)> = HashSet::new();
    for (i, a) in raw.iter().enumerate() {
        let a = a.get_ref();
        let at = format!("{}.aggregations[{i}]", ctx.what);
        let function = match a.function.get_ref().parse::<AggFunction>() {
            Ok(f) => Some(f),
            Err(e) => {
                c.push(loc.diag(a.function.span(), format!("{at}.function"), e));
                ok = false;
                None
            }
        };
        // The input column, typed from the source's data.
        let mut column: Option<Field> = None;
        match (&a.column, function) {
            (None, Some(f)) if f != AggFunction::Count => {
                c.push(loc.diag(
                    a.function.span(),
                    format!("{at}.column"),
                    format!("{f} needs a column: add column = \"...\""),
                ));
                ok = false;
            }
            (None, _) => {}
            (Some(col), f) => match ctx.source {
                // The source's own error was reported; nothing to check against.
                None => ok = false,
                Some((schema, path)) => match schema.field_with_name(col.get_ref()) {
                    Err(_) => {
                        c.push(loc.diag(
                            col.span(),
                            format!("{at}.column"),
                            format!(
                                "column {:?} is not in {path} (columns: {})",
                                col.get_ref(),
                                column_list(schema)
                            ),
                        ));
                        ok = false;
                    }
                    Ok(found) => match input_type(found.data_type()) {
                        None => {
                            c.push(loc.diag(
                                col.span(),
                                format!("{at}.column"),
                                format!(
                                    "column {:?} is {}, which cannot be aggregated",
                                    col.get_ref(),
                                    found.data_type()
                                ),
                            ));
                            ok = false;
                        }
                        Some(t) => {
                            if let Some(f) = f
                                && let Err(why) = accepts(f, t)
                            {
                                c.push(loc.diag(
                                    col.span(),
                                    format!("{at}.column"),
                                    format!(
                                        "{f} {why}, and {:?} is {}",
                                        col.get_ref(),
                                        found.data_type()
                                    ),
                                ));
                                ok = false;
                            }
                            column = Some(Field {
                                name: col.get_ref().clone(),
                                dtype: t,
                            });
                        }
                    },
                },
            },
        }
        let kind = match a.kind.as_ref().map(|k| (k, window_kind(k.get_ref()))) {
            None => WindowKind::Sliding,
            Some((_, Ok(kind))) => kind,
            Some((k, Err(msg))) => {
                c.push(loc.diag(k.span(), format!("{at}.kind"), msg));
                ok = false;
                WindowKind::Sliding
            }
        };
        if a.windows.get_ref().is_empty() {
            c.push(loc.diag(
                a.windows.span(),
                format!("{at}.windows"),
                "an aggregation needs at least one window, e.g. windows = [\"1h\"]",
            ));
            ok = false;
        }
        for (j, w) in a.windows.get_ref().iter().enumerate() {
            let field = format!("{at}.windows[{j}]");
            let secs = match window(w.get_ref()) {
                Ok(s) => s,
                Err(msg) => {
                    c.push(loc.diag(w.span(), field, msg));
                    ok = false;
                    continue;
                }
            };
            let Some(f) = function else { continue };
            let col_name = a.column.as_ref().map(|c| c.get_ref().as_str());
            let name = feature_name(f, col_name, w.get_ref(), kind);
            let valid = Spanned::new(
                a.column.as_ref().map_or(w.span(), |c| c.span()),
                name.clone(),
            );
            if !c.name(loc, &valid, &format!("{at}.column")) {
                ok = false;
                continue;
            }
            if !names.insert(name.clone()) {
                c.push(loc.diag(
                    w.span(),
                    field,
                    format!("the feature {name:?} is declared twice in this view (or is named like a join key)"),
                ));
                ok = false;
                continue;
            }
            if !same.insert((f, col_name.map(str::to_string), secs, kind)) {
                c.push(loc.diag(
                    w.span(),
                    field,
                    format!(
                        "window {:?} has the same length as another window of {f} over {} in this view",
                        w.get_ref(),
                        col_name.unwrap_or("events")
                    ),
                ));
                ok = false;
                continue;
            }
            if a.column.is_some() && column.is_none() {
                continue;
            }
            let input = column.as_ref().map(|c| c.dtype);
            fields.push(Field {
                name: name.clone(),
                dtype: f.output_type(input),
            });
            specs.push(AggregationSpec {
                name,
                function: f,
                column: column.clone(),
                window_seconds: secs,
                kind,
            });
        }
    }
    ok.then_some((fields, specs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_are_named_by_window_as_written() {
        assert_eq!(
            feature_name(AggFunction::Sum, Some("amount"), "24h", WindowKind::Sliding),
            "amount_sum_24h"
        );
        assert_eq!(
            feature_name(
                AggFunction::CountDistinct,
                Some("merchant"),
                "1d 12h",
                WindowKind::Sliding
            ),
            "merchant_count_distinct_1d12h"
        );
        assert_eq!(
            feature_name(AggFunction::Count, None, "10m", WindowKind::Sliding),
            "count_10m"
        );
        assert_eq!(
            feature_name(AggFunction::Count, None, "1d", WindowKind::Tumbling),
            "count_1d_tumbling"
        );
        assert_eq!(window_kind("tumbling"), Ok(WindowKind::Tumbling));
        assert_eq!(window_kind("session"), Ok(WindowKind::Session));
        assert!(window_kind("hopping").is_err());
        assert!(window("0").is_err());
        assert!(window("1x").is_err());
        assert_eq!(window("1h"), Ok(3_600));
    }
}
