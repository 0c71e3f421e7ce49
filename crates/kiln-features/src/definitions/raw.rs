//! The definition files as written, with a source span on every field a diagnostic may point
//! at. Unknown keys are errors (`deny_unknown_fields`), so a typo like `tll = "1d"` is caught
//! instead of silently giving a view no ttl.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::Diagnostic;
use super::diagnostic::LineIndex;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    #[serde(default)]
    pub entity: Vec<Spanned<RawEntity>>,
    #[serde(default)]
    pub source: Vec<Spanned<RawSource>>,
    #[serde(default)]
    pub feature_view: Vec<Spanned<RawView>>,
    #[serde(default)]
    pub feature_service: Vec<Spanned<RawService>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawField {
    pub name: Spanned<String>,
    pub dtype: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEntity {
    pub name: Spanned<String>,
    pub join_keys: Spanned<Vec<Spanned<RawField>>>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSource {
    pub name: Spanned<String>,
    pub path: Spanned<String>,
    pub timestamp_field: Spanned<String>,
    #[serde(default)]
    pub created_timestamp_column: Option<Spanned<String>>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawView {
    pub name: Spanned<String>,
    pub entities: Spanned<Vec<Spanned<String>>>,
    pub source: Spanned<String>,
    /// A duration string ("1d", "2h30m") or 0.
    #[serde(default)]
    pub ttl: Option<Spanned<toml::Value>>,
    #[serde(default = "yes")]
    pub online: bool,
    /// Plain columns of the source; absent in a view of aggregations.
    #[serde(default, alias = "features")]
    pub schema: Option<Spanned<Vec<Spanned<RawField>>>>,
    /// Windowed aggregations over the source's events.
    #[serde(default)]
    pub aggregations: Vec<Spanned<RawAggregation>>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// `[[feature_view.aggregations]]`: one function of one column over one or more windows.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAggregation {
    /// The source column; may be left out for `count` (of events).
    #[serde(default)]
    pub column: Option<Spanned<String>>,
    pub function: Spanned<String>,
    /// Durations such as "10m", "1h", "7d".
    pub windows: Spanned<Vec<Spanned<String>>>,
    /// The windows' kind: "sliding" (the default), "tumbling" or "session".
    #[serde(default)]
    pub kind: Option<Spanned<String>>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub name: Spanned<String>,
    /// `view:feature` references, or a bare view name for all of its features.
    pub features: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// One parsed definition file and what is needed to point into it.
#[derive(Debug)]
pub(crate) struct ParsedFile {
    pub path: Arc<PathBuf>,
    pub index: Arc<LineIndex>,
    pub raw: RawFile,
}

/// Where something is: a file and a span in it. Diagnostics are made from these.
#[derive(Debug, Clone)]
pub(crate) struct Loc {
    pub path: Arc<PathBuf>,
    pub index: Arc<LineIndex>,
}

impl Loc {
    pub(crate) fn diag(
        &self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Diagnostic {
        let (line, column) = self.index.locate(span.start);
        Diagnostic {
            file: self.path.as_ref().clone(),
            line,
            column,
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Parses one file. A syntax or shape error is returned as a diagnostic at its location.
pub(crate) fn parse_file(path: PathBuf, text: &str) -> Result<ParsedFile, Diagnostic> {
    let index = Arc::new(LineIndex::new(text));
    match toml::from_str::<RawFile>(text) {
        Ok(raw) => Ok(ParsedFile {
            path: Arc::new(path),
            index,
            raw,
        }),
        Err(e) => {
            let (line, column) = e.span().map_or((0, 0), |s| index.locate(s.start));
            Err(Diagnostic {
                file: path,
                line,
                column,
                field: String::new(),
                message: e.message().trim().to_string(),
            })
        }
    }
}
