//! Definitions: what a user declares in TOML, and how it is checked.
//!
//! A project's definitions are every `*.toml` file in its definitions directory (`features/`
//! by default). Each file may hold any of `[[entity]]`, `[[source]]`, `[[feature_view]]` and
//! `[[feature_service]]` tables; names are global across files. The format is documented in
//! `docs/definitions.md`.
//!
//! Loading never stops at the first problem: syntax errors in one file do not hide semantic
//! errors in another, and every diagnostic carries file, line, column and field.

mod aggregate;
mod diagnostic;
mod raw;
mod validate;

use std::path::{Path, PathBuf};

use kiln_core::spec::{EntitySpec, FeatureServiceSpec, FeatureViewSpec, SourceSpec, ViewVersion};
use kiln_core::time::Micros;

pub use aggregate::input_type;
pub use diagnostic::Diagnostic;

use crate::FeatureError;

/// Validated definitions, in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Definitions {
    pub entities: Vec<EntitySpec>,
    pub sources: Vec<SourceSpec>,
    pub views: Vec<FeatureViewSpec>,
    pub services: Vec<FeatureServiceSpec>,
}

impl Definitions {
    /// The data-defining form of a declared view, as a registry version would record it: its
    /// entities' join keys and its source resolved. `None` if an entity or the source is
    /// missing (validation rules that out).
    pub fn resolve_view(
        &self,
        view: &FeatureViewSpec,
        version: u32,
        created_at: Micros,
    ) -> Option<ViewVersion> {
        let mut join_keys = Vec::new();
        for e in &view.entities {
            join_keys.extend(
                self.entities
                    .iter()
                    .find(|x| &x.name == e)?
                    .join_keys
                    .iter()
                    .cloned(),
            );
        }
        let source = self.sources.iter().find(|s| s.name == view.source)?.clone();
        Some(ViewVersion {
            name: view.name.clone(),
            version,
            entities: view.entities.clone(),
            join_keys,
            source,
            ttl_seconds: view.ttl_seconds,
            features: view.features.clone(),
            aggregations: view.aggregations.clone(),
            created_at,
        })
    }
}

/// The definition files in `dir`: every `*.toml`, sorted by name.
pub fn definition_files(dir: &Path) -> Result<Vec<PathBuf>, FeatureError> {
    let io = |source| FeatureError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Loads and validates every definition file in `dir`, reading sources relative to
/// `project_dir`. On failure, all problems found are returned.
pub fn load(project_dir: &Path, dir: &Path) -> Result<Definitions, FeatureError> {
    let files = definition_files(dir)?;
    let mut parsed = Vec::new();
    let mut diags = Vec::new();
    for path in files {
        let shown = path
            .strip_prefix(project_dir)
            .unwrap_or(&path)
            .to_path_buf();
        match std::fs::read_to_string(&path) {
            Ok(text) => match raw::parse_file(shown, &text) {
                Ok(p) => parsed.push(p),
                Err(d) => diags.push(d),
            },
            Err(e) => diags.push(Diagnostic {
                file: shown,
                line: 0,
                column: 0,
                field: String::new(),
                message: format!("cannot read: {e}"),
            }),
        }
    }
    match validate::validate(&parsed, project_dir) {
        Ok(defs) if diags.is_empty() => Ok(defs),
        Ok(_) => Err(FeatureError::Invalid(diags)),
        Err(more) => {
            diags.extend(more);
            Err(FeatureError::Invalid(diags))
        }
    }
}

/// Parses and validates definitions given as text (for tests and tools).
pub fn load_str(project_dir: &Path, file: &str, text: &str) -> Result<Definitions, FeatureError> {
    let parsed =
        raw::parse_file(PathBuf::from(file), text).map_err(|d| FeatureError::Invalid(vec![d]))?;
    validate::validate(&[parsed], project_dir).map_err(FeatureError::Invalid)
}
