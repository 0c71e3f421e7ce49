//! CSV for `kiln drift`, typed as `pandas.read_csv` types it (so Evidently's verdict on
//! `pd.read_csv` of the same file is the one to expect): a header row of names; empty fields
//! and pandas' default missing markers (`NA`, `NaN`, `null`, `None`, `N/A`, ...) are missing;
//! a column of integers is integer (float if one is missing), of numbers float, of
//! `True`/`False` boolean (untyped if one is missing, as pandas then holds objects), anything
//! else strings. RFC 4180 quoting ("a, b", "say ""hi"""). Two passes over the text: one to
//! type each column, one to convert.

use std::borrow::Cow;
use std::path::Path;

use anyhow::{Context, bail};
use indicatif::ProgressBar;
use kiln_monitor::drift::{ColumnData, Dataset, Strings};

use crate::tabular::Table;

/// pandas' default `na_values` (plus the empty field).
const NA: &[&str] = &[
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Nothing but missing values so far (an all-missing column is float, as in pandas).
    Empty,
    Int,
    Float,
    Bool,
    Str,
}

pub fn read(
    path: &Path,
    role: &str,
    columns: Option<&[String]>,
    bar: &ProgressBar,
) -> anyhow::Result<Table> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {role} file {}", path.display()))?;
    let mut records = Records::new(&text);
    let Some(header) = records.next_record() else {
        bail!(
            "the {role} file {} is empty (a CSV file needs a header row)",
            path.display()
        );
    };
    let header: Vec<String> = header.into_iter().map(|c| c.into_owned()).collect();
    let names: Vec<&str> = header.iter().map(String::as_str).collect();
    let wanted = crate::tabular::wanted_columns(&names, columns, role, path)?;
    // Pass 1: the kind of each column, and whether it has missing values.
    let mut kinds = vec![Kind::Empty; header.len()];
    let mut missing = vec![false; header.len()];
    let mut rows = 0u64;
    while let Some(rec) = records.next_record() {
        rows += 1;
        if rec.len() != header.len() {
            bail!(
                "the {role} file {} has {} fields on data row {rows}, but {} columns in its header",
                path.display(),
                rec.len(),
                header.len()
            );
        }
        for &i in &wanted {
            let f = rec[i].as_ref();
            if NA.contains(&f) {
                missing[i] = true;
            } else {
                kinds[i] = widen(kinds[i], f);
            }
        }
    }
    bar.set_length(bar.length().unwrap_or(0) + rows * wanted.len() as u64);
    // Pass 2: convert.
    let mut acc: Vec<Column> = wanted
        .iter()
        .map(|&i| Column::new(kinds[i], missing[i]))
        .collect();
    let mut records = Records::new(&text);
    records.next_record();
    while let Some(rec) = records.next_record() {
        for (a, &i) in acc.iter_mut().zip(&wanted) {
            a.push(rec[i].as_ref());
        }
        bar.inc(wanted.len() as u64);
    }
    let mut dataset = Dataset::new();
    for (a, &i) in acc.into_iter().zip(&wanted) {
        dataset
            .push(header[i].clone(), a.finish())
            .with_context(|| format!("in the {role} file {}", path.display()))?;
    }
    Ok(Table {
        dataset,
        categorical: Vec::new(),
    })
}

/// The narrowest kind that still holds `f` and everything seen before.
fn widen(k: Kind, f: &str) -> Kind {
    let is_int = || f.parse::<i64>().is_ok();
    let is_float = || parse_float(f).is_some();
    let is_bool = || matches!(f, "True" | "False" | "TRUE" | "FALSE" | "true" | "false");
    match k {
        Kind::Empty if is_int() => Kind::Int,
        Kind::Empty if is_float() => Kind::Float,
        Kind::Empty if is_bool() => Kind::Bool,
        Kind::Int if is_int() => Kind::Int,
        Kind::Int | Kind::Float if is_float() => Kind::Float,
        Kind::Bool if is_bool() => Kind::Bool,
        _ => Kind::Str,
    }
}

fn parse_float(f: &str) -> Option<f64> {
    match f {
        "inf" | "+inf" | "Inf" | "Infinity" | "+Infinity" => Some(f64::INFINITY),
        "-inf" | "-Inf" | "-Infinity" => Some(f64::NEG_INFINITY),
        _ => f.parse::<f64>().ok().filter(|v| v.is_finite()),
    }
}

enum Column {
    Int(Vec<i64>),
    Float(Vec<f64>),
    Bool(Vec<bool>),
    BoolWithMissing(usize),
    Str(Strings),
}

impl Column {
    fn new(kind: Kind, missing: bool) -> Column {
        match (kind, missing) {
            (Kind::Int, false) => Column::Int(Vec::new()),
            (Kind::Int | Kind::Float | Kind::Empty, _) => Column::Float(Vec::new()),
            (Kind::Bool, false) => Column::Bool(Vec::new()),
            (Kind::Bool, true) => Column::BoolWithMissing(0),
            (Kind::Str, _) => Column::Str(Strings::new()),
        }
    }

    fn push(&mut self, f: &str) {
        let na = NA.contains(&f);
        match self {
            Column::Int(v) => v.push(f.parse().unwrap_or_default()),
            Column::Float(v) => v.push(if na {
                f64::NAN
            } else {
                parse_float(f).unwrap_or(f64::NAN)
            }),
            Column::Bool(v) => v.push(matches!(f, "True" | "TRUE" | "true")),
            Column::BoolWithMissing(n) => *n += 1,
            Column::Str(s) => s.push((!na).then_some(f)),
        }
    }

    fn finish(self) -> ColumnData {
        match self {
            Column::Int(v) => ColumnData::Int(v),
            Column::Float(v) => ColumnData::Float(v),
            Column::Bool(v) => ColumnData::Bool(v),
            Column::BoolWithMissing(len) => ColumnData::Unsupported {
                dtype: "boolean with missing values".into(),
                len,
            },
            Column::Str(s) => ColumnData::Str(s),
        }
    }
}

/// RFC 4180 records over the whole text (quoted fields may hold commas, quotes and newlines).
struct Records<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Records<'a> {
    fn new(text: &'a str) -> Records<'a> {
        Records {
            text: text.strip_prefix('\u{feff}').unwrap_or(text),
            pos: 0,
        }
    }

    fn next_record(&mut self) -> Option<Vec<Cow<'a, str>>> {
        let bytes = self.text.as_bytes();
        // Skip blank lines, as pandas does.
        while self.pos < bytes.len() && (bytes[self.pos] == b'\n' || bytes[self.pos] == b'\r') {
            self.pos += 1;
        }
        if self.pos >= bytes.len() {
            return None;
        }
        let mut fields = Vec::new();
        loop {
            let (field, end) = self.field();
            fields.push(field);
            match bytes.get(end) {
                Some(b',') => self.pos = end + 1,
                Some(b'\r') => {
                    self.pos = end
                        + if bytes.get(end + 1) == Some(&b'\n') {
                            2
                        } else {
                            1
                        };
                    return Some(fields);
                }
                Some(_) => {
                    self.pos = end + 1;
                    return Some(fields);
                }
                None => {
                    self.pos = end;
                    return Some(fields);
                }
            }
        }
    }

    /// The field at `pos` and the index of the delimiter (or end) after it.
    fn field(&self) -> (Cow<'a, str>, usize) {
        let bytes = self.text.as_bytes();
        let start = self.pos;
        if bytes.get(start) != Some(&b'"') {
            let end = bytes[start..]
                .iter()
                .position(|&b| b == b',' || b == b'\n' || b == b'\r')
                .map_or(bytes.len(), |p| start + p);
            return (Cow::Borrowed(&self.text[start..end]), end);
        }
        let mut out = String::new();
        let mut i = start + 1;
        let mut seg = i;
        while i < bytes.len() {
            if bytes[i] == b'"' {
                out.push_str(&self.text[seg..i]);
                if bytes.get(i + 1) == Some(&b'"') {
                    out.push('"');
                    i += 2;
                    seg = i;
                    continue;
                }
                // Closing quote: anything up to the delimiter is kept as pandas keeps it.
                let rest = bytes[i + 1..]
                    .iter()
                    .position(|&b| b == b',' || b == b'\n' || b == b'\r')
                    .map_or(bytes.len(), |p| i + 1 + p);
                out.push_str(&self.text[i + 1..rest]);
                return (Cow::Owned(out), rest);
            }
            i += 1;
        }
        out.push_str(&self.text[seg..]);
        (Cow::Owned(out), bytes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<Vec<String>> {
        let mut r = Records::new(text);
        let mut out = Vec::new();
        while let Some(rec) = r.next_record() {
            out.push(rec.into_iter().map(|c| c.into_owned()).collect());
        }
        out
    }

    #[test]
    fn quoting_and_line_endings() {
        let rows = parse("a,b\r\n\"x, y\",\"say \"\"hi\"\"\"\r\n1,\n\n\"multi\nline\",2");
        assert_eq!(rows[0], ["a", "b"]);
        assert_eq!(rows[1], ["x, y", "say \"hi\""]);
        assert_eq!(rows[2], ["1", ""]);
        assert_eq!(rows[3], ["multi\nline", "2"]);
    }

    #[test]
    fn kinds_widen_like_pandas() {
        let k = |vals: &[&str]| vals.iter().fold(Kind::Empty, |k, v| widen(k, v));
        assert_eq!(k(&["1", "2"]), Kind::Int);
        assert_eq!(k(&["1", "2.5"]), Kind::Float);
        assert_eq!(k(&["True", "False"]), Kind::Bool);
        assert_eq!(k(&["True", "1"]), Kind::Str);
        assert_eq!(k(&["1", "x"]), Kind::Str);
        assert_eq!(k(&["inf", "2"]), Kind::Float);
        assert_eq!(k(&["1", "True"]), Kind::Str);
    }
}
