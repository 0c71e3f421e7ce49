//! `kiln models`: the model registry. A registered version is immutable: its artifact is copied
//! into the artifact store, checked to load, and recorded with its input signature; stages
//! (none, staging, production, archived) move by registry events.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use indicatif::ProgressBar;
use kiln_core::ValueType;
use kiln_core::spec::{ModelVersion, Stage};
use kiln_core::time::{format_timestamp, now_micros};
use kiln_models::Format;
use kiln_registry::{Event, State};
use kiln_store::artifacts::sha256_hex;

use super::Ctx;
use crate::output::{json, table};

#[derive(clap::Subcommand)]
pub enum ModelsCmd {
    /// Register a new version of a model from a file.
    Register(RegisterArgs),
    /// All models, or the versions of one.
    List { name: Option<String> },
    /// One version in full (default: the production version, else the latest).
    Show {
        name: String,
        #[arg(long)]
        version: Option<u32>,
    },
    /// Move a version to a stage (default production; the previous production version is archived).
    Promote {
        name: String,
        #[arg(long)]
        version: u32,
        #[arg(long, default_value = "production")]
        stage: String,
    },
    /// Archive a version.
    Archive {
        name: String,
        #[arg(long)]
        version: u32,
    },
    /// Score a Parquet file offline with a version, as serving scores it.
    Score(super::score::ScoreArgs),
}

#[derive(clap::Args)]
pub struct RegisterArgs {
    pub name: String,
    /// The model file (XGBoost JSON, LightGBM text or ONNX), a pipeline definition (TOML)
    /// with --format pipeline (its member files are bundled into the artifact), or a remote
    /// model's descriptor (TOML: url, protocol) with --format remote.
    #[arg(long)]
    pub path: PathBuf,
    #[arg(long)]
    pub format: String,
    /// The feature service that provides the model's inputs; checked against them now.
    #[arg(long)]
    pub feature_service: Option<String>,
    /// The input features in order, when the model file does not name them.
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<String>,
    /// Metrics to record, as key=value (repeatable).
    #[arg(long = "metrics", value_delimiter = ',')]
    pub metrics: Vec<String>,
    #[arg(long, default_value = "")]
    pub description: String,
    /// Scoring by entity, when an input is not found or expired: missing (the model's default
    /// direction), reject, or default:VALUE.
    #[arg(long, default_value = "missing")]
    pub on_missing: String,
    /// The training data (Parquet or CSV with the model's input columns by name): live drift
    /// compares the version's traffic with it, and with the model's outputs on it.
    #[arg(long)]
    pub reference: Option<PathBuf>,
}

pub async fn run(ctx: &Ctx, cmd: ModelsCmd) -> anyhow::Result<()> {
    let project = ctx.project()?;
    let registry = project.registry().await?;
    let state = registry.state().await?;
    match cmd {
        ModelsCmd::Register(a) => {
            let version = register(&state, &project, &a).await?;
            registry
                .append(
                    state.last_seq,
                    &[Event::ModelVersionRegistered {
                        version: version.clone(),
                    }],
                )
                .await?;
            if ctx.json() {
                return json(&version);
            }
            println!(
                "Registered {}@v{} ({} {}, {} inputs{}; artifact {} in {})",
                version.name,
                version.version,
                version.format,
                version.objective,
                version.inputs.len(),
                version
                    .feature_service
                    .as_ref()
                    .map(|s| format!(" from feature service {s}"))
                    .unwrap_or_default(),
                version.artifact,
                project.artifacts()?.location()
            );
            if let Some(r) = &version.reference {
                println!(
                    "Drift reference: {} rows from {} ({})",
                    r.rows, r.source, r.artifact
                );
            }
        }
        ModelsCmd::List { name: None } => {
            if ctx.json() {
                return json(&state.models.values().collect::<Vec<_>>());
            }
            let rows = state
                .models
                .values()
                .map(|m| {
                    let latest = m.latest();
                    vec![
                        m.name.clone(),
                        m.versions.len().to_string(),
                        m.production()
                            .map_or("-".into(), |v| format!("v{}", v.spec.version)),
                        latest.spec.format.clone(),
                        latest.spec.feature_service.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(
                    &[
                        "model",
                        "versions",
                        "production",
                        "format",
                        "feature service"
                    ],
                    rows
                )
            );
        }
        ModelsCmd::List { name: Some(name) } => {
            let m = state.model(&name)?;
            if ctx.json() {
                return json(&m.versions);
            }
            let rows = m
                .versions
                .iter()
                .map(|v| {
                    vec![
                        format!("v{}", v.spec.version),
                        v.stage.to_string(),
                        v.spec.objective.clone(),
                        v.spec.inputs.len().to_string(),
                        v.spec
                            .metrics
                            .iter()
                            .map(|(k, x)| format!("{k}={x}"))
                            .collect::<Vec<_>>()
                            .join(" "),
                        v.spec
                            .reference
                            .as_ref()
                            .map_or("-".into(), |r| format!("{} rows", r.rows)),
                        format_timestamp(v.spec.created_at),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(
                    &[
                        "version",
                        "stage",
                        "objective",
                        "inputs",
                        "metrics",
                        "drift reference",
                        "registered"
                    ],
                    rows
                )
            );
        }
        ModelsCmd::Show { name, version } => {
            let v = state.model_version(&name, version)?;
            return json(v);
        }
        ModelsCmd::Promote {
            name,
            version,
            stage,
        } => {
            let stage: Stage = stage.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            change_stage(ctx, &registry, &state, &name, version, stage).await?;
        }
        ModelsCmd::Archive { name, version } => {
            change_stage(ctx, &registry, &state, &name, version, Stage::Archived).await?;
        }
        ModelsCmd::Score(a) => super::score::run(ctx, &project, &state, a).await?,
    }
    Ok(())
}

async fn change_stage(
    ctx: &Ctx,
    registry: &kiln_registry::Registry,
    state: &State,
    name: &str,
    version: u32,
    stage: Stage,
) -> anyhow::Result<()> {
    let before = state.model_version(name, Some(version))?.stage;
    let deployment = state.model(name)?.deployment.as_ref();
    if let Some(d) =
        deployment.filter(|d| stage == Stage::Archived && d.versions().any(|v| v == version))
    {
        anyhow::bail!(
            "{name}@v{version} is deployed ({}); route its traffic elsewhere first (kiln deploy {name} ...)",
            d.split_text()
        );
    }
    let previous = state
        .model(name)?
        .production()
        .map(|v| v.spec.version)
        .filter(|v| *v != version);
    registry
        .append(
            state.last_seq,
            &[Event::ModelStageChanged {
                name: name.to_string(),
                version,
                stage,
            }],
        )
        .await?;
    if ctx.json() {
        return json(
            &serde_json::json!({ "model": name, "version": version, "from": before, "to": stage }),
        );
    }
    println!("{name}@v{version}: {before} -> {stage}");
    if let (Stage::Production, Some(p)) = (stage, previous) {
        println!("{name}@v{p}: production -> archived");
    }
    if let (Stage::Production, Some(d)) = (stage, deployment) {
        println!(
            "{name}: deployment ended ({}); v{version} takes all traffic",
            d.split_text()
        );
    }
    Ok(())
}

/// Names a library gives when the training data had none.
fn generic_names(names: &[String]) -> bool {
    names
        .iter()
        .enumerate()
        .all(|(i, n)| *n == format!("f{i}") || *n == format!("Column_{i}"))
}

/// Checks the model and its signature and stores the artifact; returns the version to record.
async fn register(
    state: &State,
    project: &crate::project::Project,
    a: &RegisterArgs,
) -> anyhow::Result<ModelVersion> {
    let name = &a.name;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        anyhow::bail!("model name {name:?}: use letters, digits, '_' and '-'");
    }
    let format: Format = a.format.parse()?;
    // A pipeline definition becomes one self-contained bundle: the artifact that is stored,
    // hashed and served.
    let bytes = match format {
        Format::Pipeline => kiln_models::build_bundle(&a.path)?,
        _ => std::fs::read(&a.path).with_context(|| format!("cannot read {}", a.path.display()))?,
    };
    let model = kiln_models::load(format, &bytes)
        .with_context(|| format!("{} does not load as a {format} model", a.path.display()))?;
    let info = model.info();

    let service_inputs = match &a.feature_service {
        Some(s) => {
            let svc = state.service(s)?;
            let mut names = Vec::new();
            for f in &svc.features {
                let dtype = state
                    .view(&f.view)
                    .ok()
                    .and_then(|v| v.current().feature(&f.feature))
                    .map(|x| x.dtype);
                if matches!(
                    dtype,
                    Some(ValueType::String | ValueType::Bytes | ValueType::Timestamp)
                ) {
                    anyhow::bail!(
                        "feature service {s}: {f} is a {} feature; tree models take numbers (int, float, bool)",
                        dtype.map_or("?".into(), |d| d.to_string())
                    );
                }
                names.push(f.feature.clone());
            }
            Some(names)
        }
        None => None,
    };
    // A remote model's descriptor may leave its inputs to the flags.
    let n = match (&service_inputs, info.feature_names.is_empty()) {
        (_, false) => info.n_features(),
        (_, true) if !a.features.is_empty() => a.features.len(),
        (Some(names), true) => names.len(),
        (None, true) => anyhow::bail!(
            "{} does not list the model's inputs; give them with --features a,b,c or --feature-service S",
            a.path.display()
        ),
    };
    let inputs: Vec<String> = if !a.features.is_empty() {
        if a.features.len() != n {
            anyhow::bail!(
                "--features lists {} names but the model takes {n} inputs",
                a.features.len()
            );
        }
        a.features.clone()
    } else if !generic_names(&info.feature_names) {
        info.feature_names.clone()
    } else if let Some(names) = &service_inputs {
        names.clone()
    } else {
        anyhow::bail!(
            "{} does not name its {n} input features; give them with --features a,b,c or --feature-service S",
            a.path.display()
        );
    };
    if let (Some(names), Some(s)) = (&service_inputs, &a.feature_service) {
        if names.len() != n {
            anyhow::bail!(
                "the model takes {n} inputs but feature service {s} provides {} ({})",
                names.len(),
                names.join(", ")
            );
        }
        let diffs: Vec<String> = inputs
            .iter()
            .zip(names)
            .enumerate()
            .filter(|(_, (m, s))| m != s)
            .map(|(i, (m, s))| format!("input {i}: model {m:?}, service {s:?}"))
            .collect();
        if !diffs.is_empty() {
            anyhow::bail!(
                "the model's inputs do not match feature service {s} (in order):\n  {}\nreorder the service's features, or give --features if the model's names are wrong",
                diffs.join("\n  ")
            );
        }
    }
    let mut metrics = BTreeMap::new();
    for m in &a.metrics {
        let (k, v) = m
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--metrics {m:?}: write key=value"))?;
        let v: f64 = v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("--metrics {m:?}: {v:?} is not a number"))?;
        metrics.insert(k.trim().to_string(), v);
    }
    let on_missing = a
        .on_missing
        .parse::<kiln_core::spec::MissingPolicy>()
        .map_err(|e| anyhow::anyhow!("--on-missing: {e}"))?;
    let version = state
        .models
        .get(name)
        .map_or(1, |m| m.versions.len() as u32 + 1);
    let ext = match format {
        Format::Xgboost => "json",
        Format::Lightgbm => "txt",
        Format::Pipeline => "kiln.json",
        Format::Onnx => "onnx",
        Format::Remote => "remote.toml",
    };
    let reference = match &a.reference {
        Some(path) => {
            let (bytes, rows) = reference_file(path, model.as_ref(), &inputs)?;
            let artifact = format!("models/{name}/v{version}/reference.parquet");
            let sha256 = sha256_hex(&bytes);
            project.artifacts()?.put(&artifact, bytes).await?;
            Some(kiln_core::spec::DriftReference {
                artifact,
                sha256,
                rows,
                source: path.display().to_string(),
            })
        }
        None => None,
    };
    let artifact = format!("models/{name}/v{version}/model.{ext}");
    let sha256 = sha256_hex(&bytes);
    let size_bytes = bytes.len() as u64;
    project.artifacts()?.put(&artifact, bytes).await?;
    Ok(ModelVersion {
        name: name.clone(),
        version,
        format: format.to_string(),
        artifact,
        sha256,
        size_bytes,
        inputs,
        n_outputs: info.n_outputs,
        objective: info.objective.clone(),
        feature_service: a.feature_service.clone(),
        metrics,
        description: a.description.clone(),
        on_missing,
        created_at: now_micros(),
        reference,
    })
}

/// Reads a model's training data for live drift: its input columns (typed as `kiln drift`
/// types a file) named as the prediction log names them, plus the model's outputs on every
/// row. Returns the reference as Parquet, and its rows.
fn reference_file(
    path: &std::path::Path,
    model: &dyn kiln_models::Model,
    inputs: &[String],
) -> anyhow::Result<(Vec<u8>, u64)> {
    use kiln_monitor::drift::{ColumnData, Dataset};
    use kiln_monitor::predlog::writer::{feature_column, output_column};

    let what = format!("--reference {}", path.display());
    let table = crate::tabular::read(path, "reference", Some(inputs), &ProgressBar::hidden())
        .with_context(|| what.clone())?;
    let data = table.dataset;
    let rows = data.rows();
    if rows == 0 {
        anyhow::bail!("{what}: the file has no rows");
    }
    // Row-major doubles, as the model takes them.
    let f = inputs.len();
    let mut matrix = vec![f64::NAN; rows * f];
    let mut reference = Dataset::new();
    for (j, name) in inputs.iter().enumerate() {
        let column = data
            .column(name)
            .with_context(|| format!("{what}: no column {name:?}"))?;
        let mut set = |values: &mut dyn Iterator<Item = f64>| {
            for (i, v) in values.enumerate() {
                matrix[i * f + j] = v;
            }
        };
        match &column.data {
            ColumnData::Float(v) => set(&mut v.iter().copied()),
            ColumnData::Int(v) => set(&mut v.iter().map(|&x| x as f64)),
            ColumnData::Bool(v) => set(&mut v.iter().map(|&b| f64::from(u8::from(b)))),
            other => anyhow::bail!(
                "{what}: column {name:?} holds {} values; the model takes numbers",
                other.dtype()
            ),
        }
        reference.push(feature_column(name), column.data.clone())?;
    }
    let k = model.info().n_outputs.max(1);
    let mut outputs = vec![0.0; rows * k];
    for (chunk, out) in matrix
        .chunks(65_536 * f)
        .zip(outputs.chunks_mut(65_536 * k))
    {
        model
            .predict(chunk, out)
            .with_context(|| format!("{what}: the model cannot score it"))?;
    }
    for o in 0..k {
        let values = (0..rows).map(|i| outputs[i * k + o]).collect();
        reference
            .push(output_column(o, k), ColumnData::Float(values))
            .with_context(|| format!("{what}: an input is named like the model's output"))?;
    }
    Ok((
        kiln_monitor::live::encode_reference(&reference)?,
        rows as u64,
    ))
}
