//! Checks parsed definitions against each other and against the Parquet data, collecting every
//! problem instead of stopping at the first.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use arrow_schema::SchemaRef;
use kiln_core::spec::{EntitySpec, FeatureServiceSpec, FeatureViewSpec, Field, Meta, SourceSpec};
use kiln_core::time::parse_duration;
use kiln_core::{FeatureRef, ValueType};
use kiln_store::offline::column_list;
use toml::Spanned;

use super::raw::{Loc, ParsedFile, RawField};
use super::{Definitions, Diagnostic, aggregate};

/// Collects diagnostics while validating.
pub(super) struct Checker {
    diags: Vec<Diagnostic>,
}

impl Checker {
    pub(super) fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// Names become table names and output columns: keep them to identifiers.
    pub(super) fn name(&mut self, loc: &Loc, name: &Spanned<String>, field: &str) -> bool {
        let n = name.get_ref();
        let ok = !n.is_empty()
            && n.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            self.push(loc.diag(
                name.span(),
                field,
                format!("{n:?} is not a valid name (use letters, digits and '_', not starting with a digit)"),
            ));
        }
        ok
    }

    fn dtype(&mut self, loc: &Loc, f: &RawField, field: &str) -> Option<ValueType> {
        match f.dtype.get_ref().parse::<ValueType>() {
            Ok(t) => Some(t),
            Err(e) => {
                self.push(loc.diag(f.dtype.span(), format!("{field}.dtype"), e.to_string()));
                None
            }
        }
    }

    /// Reports a duplicate name; returns true if `name` was seen before.
    fn duplicate(
        &mut self,
        seen: &mut HashMap<String, (Loc, usize)>,
        loc: &Loc,
        name: &Spanned<String>,
        what: &str,
    ) -> bool {
        match seen.get(name.get_ref()) {
            Some((first, offset)) => {
                let (line, _) = first.index.locate(*offset);
                self.push(loc.diag(
                    name.span(),
                    format!("{what}[{}].name", name.get_ref()),
                    format!(
                        "duplicate {what} name {:?} (first defined at {}:{line})",
                        name.get_ref(),
                        first.path.display()
                    ),
                ));
                true
            }
            None => {
                seen.insert(name.get_ref().clone(), (loc.clone(), name.span().start));
                false
            }
        }
    }
}

/// Validates parsed files; `project_dir` anchors relative source paths.
pub(crate) fn validate(
    files: &[ParsedFile],
    project_dir: &Path,
) -> Result<Definitions, Vec<Diagnostic>> {
    let mut c = Checker { diags: Vec::new() };
    let mut out = Definitions::default();

    // Entities.
    let mut seen = HashMap::new();
    let mut entity_keys: HashMap<String, Vec<Field>> = HashMap::new();
    for (loc, e) in items(files, |f| &f.raw.entity) {
        let e = e.get_ref();
        let what = format!("entity[{}]", e.name.get_ref());
        let named = c.name(&loc, &e.name, &format!("{what}.name"));
        if c.duplicate(&mut seen, &loc, &e.name, "entity") {
            continue;
        }
        if e.join_keys.get_ref().is_empty() {
            c.push(loc.diag(
                e.join_keys.span(),
                format!("{what}.join_keys"),
                "an entity needs at least one join key",
            ));
        }
        let keys = fields(
            &mut c,
            &loc,
            e.join_keys.get_ref(),
            &format!("{what}.join_keys"),
        );
        // Keys are compared for equality and hashed: floats (NaN, -0.0) and bytes (no agreed
        // JSON form) would make online and offline disagree.
        for (i, k) in keys.iter().flatten().enumerate() {
            if !matches!(
                k.dtype,
                ValueType::Int32 | ValueType::Int64 | ValueType::String
            ) {
                let span = e.join_keys.get_ref()[i].get_ref().dtype.span();
                c.push(loc.diag(
                    span,
                    format!("{what}.join_keys[{i}].dtype"),
                    format!("join keys must be int32, int64 or string, not {}", k.dtype),
                ));
            }
        }
        if let (true, Some(keys)) = (named, keys) {
            entity_keys.insert(e.name.get_ref().clone(), keys.clone());
            out.entities.push(EntitySpec {
                name: e.name.get_ref().clone(),
                join_keys: keys,
                description: e.description.clone(),
                tags: e.tags.clone(),
            });
        }
    }

    // Sources, with their Parquet schemas.
    let mut seen = HashMap::new();
    let mut schemas: HashMap<String, Option<(SchemaRef, String)>> = HashMap::new();
    for (loc, s) in items(files, |f| &f.raw.source) {
        let s = s.get_ref();
        let what = format!("source[{}]", s.name.get_ref());
        c.name(&loc, &s.name, &format!("{what}.name"));
        if c.duplicate(&mut seen, &loc, &s.name, "source") {
            continue;
        }
        let path = project_dir.join(s.path.get_ref());
        let schema = match kiln_store::offline::read_schema(&path) {
            Ok(schema) => Some(schema),
            Err(e) => {
                c.push(loc.diag(
                    s.path.span(),
                    format!("{what}.path"),
                    format!("unreadable source: {e}"),
                ));
                None
            }
        };
        if let Some(schema) = &schema {
            let mut check_ts =
                |col: &Spanned<String>, field: &str| match schema.field_with_name(col.get_ref()) {
                    Ok(f) if ValueType::Timestamp.accepts(f.data_type()) => {}
                    Ok(f) => c.push(loc.diag(
                        col.span(),
                        format!("{what}.{field}"),
                        format!(
                            "column {:?} is {}, not a timestamp",
                            col.get_ref(),
                            f.data_type()
                        ),
                    )),
                    Err(_) => c.push(loc.diag(
                        col.span(),
                        format!("{what}.{field}"),
                        format!(
                            "column {:?} is not in {} (columns: {})",
                            col.get_ref(),
                            s.path.get_ref(),
                            column_list(schema)
                        ),
                    )),
                };
            check_ts(&s.timestamp_field, "timestamp_field");
            if let Some(created) = &s.created_timestamp_column {
                check_ts(created, "created_timestamp_column");
            }
        }
        schemas.insert(
            s.name.get_ref().clone(),
            schema.map(|sc| (sc, s.path.get_ref().clone())),
        );
        out.sources.push(SourceSpec {
            name: s.name.get_ref().clone(),
            path: s.path.get_ref().clone(),
            timestamp_field: s.timestamp_field.get_ref().clone(),
            created_timestamp_column: s
                .created_timestamp_column
                .as_ref()
                .map(|c| c.get_ref().clone()),
            description: s.description.clone(),
            tags: s.tags.clone(),
        });
    }

    // Feature views.
    let mut seen = HashMap::new();
    let mut view_features: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (loc, v) in items(files, |f| &f.raw.feature_view) {
        let v = v.get_ref();
        let what = format!("feature_view[{}]", v.name.get_ref());
        c.name(&loc, &v.name, &format!("{what}.name"));
        if c.duplicate(&mut seen, &loc, &v.name, "feature_view") {
            continue;
        }
        let mut ok = true;
        let mut join_keys = Vec::new();
        if v.entities.get_ref().is_empty() {
            c.push(loc.diag(
                v.entities.span(),
                format!("{what}.entities"),
                "a feature view needs at least one entity",
            ));
            ok = false;
        }
        for e in v.entities.get_ref() {
            match entity_keys.get(e.get_ref()) {
                Some(keys) => join_keys.extend(keys.iter().cloned()),
                None => {
                    let known: Vec<&str> = entity_keys.keys().map(String::as_str).collect();
                    c.push(loc.diag(
                        e.span(),
                        format!("{what}.entities"),
                        format!(
                            "unknown entity {:?} (defined: {})",
                            e.get_ref(),
                            list_or_none(known)
                        ),
                    ));
                    ok = false;
                }
            }
        }
        let source = schemas.get(v.source.get_ref());
        if source.is_none() {
            let known: Vec<&str> = schemas.keys().map(String::as_str).collect();
            c.push(loc.diag(
                v.source.span(),
                format!("{what}.source"),
                format!(
                    "unknown source {:?} (defined: {})",
                    v.source.get_ref(),
                    list_or_none(known)
                ),
            ));
            ok = false;
        }
        let ttl_seconds = match &v.ttl {
            None => 0,
            Some(t) => match ttl(t.get_ref()) {
                Ok(s) => s,
                Err(msg) => {
                    c.push(loc.diag(t.span(), format!("{what}.ttl"), msg));
                    ok = false;
                    0
                }
            },
        };
        let raw_schema: &[Spanned<RawField>] = v.schema.as_ref().map_or(&[], |s| s.get_ref());
        if raw_schema.is_empty() && v.aggregations.is_empty() {
            let span = v.schema.as_ref().map_or(v.name.span(), |s| s.span());
            c.push(loc.diag(
                span,
                format!("{what}.schema"),
                "a feature view needs at least one feature (a schema of columns, or aggregations)",
            ));
            ok = false;
        }
        let features = fields(&mut c, &loc, raw_schema, &format!("{what}.schema"));
        let Some(mut features) = features else {
            continue;
        };
        let mut aggregations = Vec::new();
        if !v.aggregations.is_empty() {
            let source = source.and_then(|s| s.as_ref());
            let ctx = aggregate::Context {
                what: &what,
                join_keys: &join_keys,
                source: source.map(|(schema, path)| (schema, path.as_str())),
            };
            if let Some(schema) = v.schema.as_ref().filter(|s| !s.get_ref().is_empty()) {
                c.push(loc.diag(
                    schema.span(),
                    format!("{what}.schema"),
                    "a feature view has either a schema of columns or aggregations, not both: declare them in two views",
                ));
                ok = false;
            }
            if let Some(t) = &v.ttl {
                c.push(loc.diag(
                    t.span(),
                    format!("{what}.ttl"),
                    "a view of aggregations takes no ttl: each window says how far back it looks",
                ));
                ok = false;
            }
            match aggregate::check(&mut c, &loc, &ctx, &v.aggregations) {
                Some((fs, aggs)) => {
                    features.extend(fs);
                    aggregations = aggs;
                }
                None => ok = false,
            }
        }
        // Column checks against the source's data.
        if let Some(Some((schema, path))) = source {
            let key_names: HashSet<&str> = join_keys.iter().map(|k| k.name.as_str()).collect();
            for (i, f) in raw_schema.iter().enumerate() {
                let f = f.get_ref();
                let field = format!("{what}.schema[{i}]");
                if key_names.contains(f.name.get_ref().as_str()) {
                    c.push(loc.diag(
                        f.name.span(),
                        format!("{field}.name"),
                        format!("{:?} is a join key, not a feature", f.name.get_ref()),
                    ));
                    ok = false;
                    continue;
                }
                ok &= column_fits(
                    &mut c,
                    &loc,
                    &f.name,
                    features[i].dtype,
                    schema,
                    path,
                    &format!("{field}.name"),
                );
            }
            for key in &join_keys {
                let name = Spanned::new(v.entities.span(), key.name.clone());
                ok &= column_fits(
                    &mut c,
                    &loc,
                    &name,
                    key.dtype,
                    schema,
                    path,
                    &format!("{what}.entities"),
                );
            }
        }
        if ok {
            view_features.insert(
                v.name.get_ref().clone(),
                features.iter().map(|f| f.name.clone()).collect(),
            );
            out.views.push(FeatureViewSpec {
                name: v.name.get_ref().clone(),
                entities: v
                    .entities
                    .get_ref()
                    .iter()
                    .map(|e| e.get_ref().clone())
                    .collect(),
                source: v.source.get_ref().clone(),
                ttl_seconds,
                online: v.online,
                features,
                aggregations,
                meta: Meta {
                    description: v.description.clone(),
                    owner: v.owner.clone(),
                    tags: v.tags.clone(),
                },
            });
        }
    }
    // Feature services.
    let mut seen = HashMap::new();
    for (loc, s) in items(files, |f| &f.raw.feature_service) {
        let s = s.get_ref();
        let what = format!("feature_service[{}]", s.name.get_ref());
        c.name(&loc, &s.name, &format!("{what}.name"));
        if c.duplicate(&mut seen, &loc, &s.name, "feature_service") {
            continue;
        }
        if s.features.get_ref().is_empty() {
            c.push(loc.diag(
                s.features.span(),
                format!("{what}.features"),
                "a feature service needs at least one feature",
            ));
        }
        let mut refs: Vec<FeatureRef> = Vec::new();
        for (i, r) in s.features.get_ref().iter().enumerate() {
            let field = format!("{what}.features[{i}]");
            let text = r.get_ref();
            let wanted: Vec<FeatureRef> = if !text.contains(':') {
                match view_features.get(text) {
                    Some(fs) => fs
                        .iter()
                        .map(|f| FeatureRef::new(text.clone(), f.clone()))
                        .collect(),
                    None => {
                        if !seen_view(files, text) {
                            c.push(loc.diag(r.span(), field, unknown_view(text, &view_features)));
                        }
                        continue;
                    }
                }
            } else {
                match text.parse::<FeatureRef>() {
                    Ok(fr) => match view_features.get(&fr.view) {
                        Some(fs) if fs.contains(&fr.feature) => vec![fr],
                        Some(fs) => {
                            c.push(loc.diag(
                                r.span(),
                                field,
                                format!(
                                    "feature view {:?} has no feature {:?} (it has: {})",
                                    fr.view,
                                    fr.feature,
                                    fs.join(", ")
                                ),
                            ));
                            continue;
                        }
                        None => {
                            if !seen_view(files, &fr.view) {
                                c.push(loc.diag(
                                    r.span(),
                                    field,
                                    unknown_view(&fr.view, &view_features),
                                ));
                            }
                            continue;
                        }
                    },
                    Err(e) => {
                        c.push(loc.diag(r.span(), field, e.to_string()));
                        continue;
                    }
                }
            };
            for w in wanted {
                if refs.contains(&w) {
                    c.push(loc.diag(
                        r.span(),
                        format!("{what}.features[{i}]"),
                        format!("{w} is listed twice"),
                    ));
                } else {
                    refs.push(w);
                }
            }
        }
        out.services.push(FeatureServiceSpec {
            name: s.name.get_ref().clone(),
            features: refs,
            meta: Meta {
                description: s.description.clone(),
                owner: s.owner.clone(),
                tags: s.tags.clone(),
            },
        });
    }

    if c.diags.is_empty() {
        Ok(out)
    } else {
        Err(c.diags)
    }
}

/// Items of one kind across all files, each with its location.
fn items<'a, T: 'a>(
    files: &'a [ParsedFile],
    get: impl Fn(&'a ParsedFile) -> &'a Vec<T>,
) -> impl Iterator<Item = (Loc, &'a T)> {
    files.iter().flat_map(move |f| {
        let loc = Loc {
            path: f.path.clone(),
            index: f.index.clone(),
        };
        get(f).iter().map(move |item| (loc.clone(), item))
    })
}

/// Whether a view of that name is defined at all (it may have failed validation, in which case
/// its own errors were reported and the service need not repeat them).
fn seen_view(files: &[ParsedFile], name: &str) -> bool {
    files.iter().any(|f| {
        f.raw
            .feature_view
            .iter()
            .any(|v| v.get_ref().name.get_ref() == name)
    })
}

fn unknown_view(name: &str, views: &BTreeMap<String, Vec<String>>) -> String {
    format!(
        "unknown feature view {name:?} (defined: {})",
        list_or_none(views.keys().map(String::as_str).collect())
    )
}

fn fields(c: &mut Checker, loc: &Loc, raw: &[Spanned<RawField>], what: &str) -> Option<Vec<Field>> {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    let mut ok = true;
    for (i, f) in raw.iter().enumerate() {
        let field = format!("{what}[{i}]");
        let f = f.get_ref();
        ok &= c.name(loc, &f.name, &format!("{field}.name"));
        if !names.insert(f.name.get_ref().clone()) {
            c.push(loc.diag(
                f.name.span(),
                format!("{field}.name"),
                format!("{:?} is listed twice", f.name.get_ref()),
            ));
            ok = false;
        }
        match c.dtype(loc, f, &field) {
            Some(dtype) => out.push(Field {
                name: f.name.get_ref().clone(),
                dtype,
            }),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// The longest ttl accepted: a century. Longer is a typo; `0` means no expiry.
const MAX_TTL_SECONDS: u64 = 100 * 365 * 86_400;

fn ttl(v: &toml::Value) -> Result<u64, String> {
    match v {
        toml::Value::String(s) => {
            let secs = parse_duration(s).map_err(|e| e.to_string())?;
            if secs > MAX_TTL_SECONDS {
                return Err(format!(
                    "ttl {s:?} is longer than 100 years; use \"0\" for no expiry"
                ));
            }
            Ok(secs)
        }
        toml::Value::Integer(0) => Ok(0),
        toml::Value::Integer(n) => Err(format!(
            "ttl {n} has no unit: write e.g. \"{n}s\", \"1h\" or \"1d\" (0 means no expiry)"
        )),
        other => Err(format!(
            "ttl must be a duration string like \"1d\", not {}",
            other.type_str()
        )),
    }
}

#[allow(clippy::too_many_arguments)]
fn column_fits(
    c: &mut Checker,
    loc: &Loc,
    name: &Spanned<String>,
    dtype: ValueType,
    schema: &SchemaRef,
    path: &str,
    field: &str,
) -> bool {
    match schema.field_with_name(name.get_ref()) {
        Ok(col) if dtype.accepts(col.data_type()) => true,
        Ok(col) => {
            c.push(loc.diag(
                name.span(),
                field,
                format!(
                    "{:?} is declared {dtype} but the column in {path} is {}; change the dtype or the data",
                    name.get_ref(),
                    col.data_type()
                ),
            ));
            false
        }
        Err(_) => {
            c.push(loc.diag(
                name.span(),
                field,
                format!(
                    "column {:?} is not in {path} (columns: {})",
                    name.get_ref(),
                    column_list(schema)
                ),
            ));
            false
        }
    }
}

fn list_or_none(mut names: Vec<&str>) -> String {
    names.sort_unstable();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}
