//! Pipelines: a preprocessing chain in front of one model or an ensemble, as one [`Model`].
//!
//! This exists so that everything between raw feature values and a prediction is part of the
//! registered, versioned artifact and runs in one place. A pipeline is written as a TOML
//! definition (docs/models.md), turned by [`build_bundle`] into one self-contained JSON file
//! (the definition plus every member model file embedded) and registered like any model file:
//! the artifact store, its SHA-256 and serving need nothing new. [`PipelineModel`] is a
//! composite: it implements [`Model`] over member `Model`s, so online serving, predict-by-entity
//! and offline scoring (`kiln models score`) all run the same preprocessing code.
//!
//! Members see the preprocessed columns. A member whose model file names its features (or
//! whose definition gives `features = [...]`) takes its columns **by name**, in its own order,
//! and may use a subset; a member without names (`f0..`, `Column_0..`) takes all preprocessed
//! columns **by position**. Mismatches are errors at build time, naming the member.

pub mod definition;
pub mod ensemble;
pub mod preprocess;

use definition::{Combine, Definition, StackLink, member_format, member_label};
use ensemble::Combiner;
use preprocess::{Chain, Step};

use crate::{Format, Link, Model, ModelError, ModelInfo, check_shape};

pub use definition::build_bundle;

/// Rows preprocessed and scored together: bounds the scratch memory of a large offline batch.
const CHUNK: usize = 1024;

pub(crate) fn invalid(message: impl Into<String>) -> ModelError {
    ModelError::Invalid {
        format: "pipeline",
        message: message.into(),
    }
}

struct Member {
    model: Box<dyn Model>,
    /// The member's inputs as indices into the preprocessed columns; `None` when they are all
    /// of them in order (no gather needed).
    columns: Option<Vec<usize>>,
}

/// A loaded pipeline.
pub struct PipelineModel {
    info: ModelInfo,
    chain: Chain,
    members: Vec<Member>,
    combiner: Combiner,
    n_margins: usize,
}

impl std::fmt::Debug for PipelineModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineModel")
            .field("info", &self.info)
            .field("columns", &self.chain.names())
            .field("members", &self.members.len())
            .field("combiner", &self.combiner)
            .finish()
    }
}

/// Names a library gives when the training data had none.
fn generic_names(names: &[String]) -> bool {
    names
        .iter()
        .enumerate()
        .all(|(i, n)| *n == format!("f{i}") || *n == format!("Column_{i}"))
}

impl PipelineModel {
    /// Loads a bundle written by [`build_bundle`].
    pub fn from_bundle(bytes: &[u8]) -> Result<PipelineModel, ModelError> {
        let def: Definition = serde_json::from_slice(bytes).map_err(|e| {
            invalid(format!(
                "not a pipeline bundle ({e}); build one from a TOML definition with `kiln models register --format pipeline`"
            ))
        })?;
        match def.kiln_pipeline {
            Some(definition::BUNDLE_VERSION) => {}
            Some(v) => {
                return Err(ModelError::Unsupported {
                    format: "pipeline",
                    message: format!(
                        "bundle version {v}; this Kiln reads version {}",
                        definition::BUNDLE_VERSION
                    ),
                });
            }
            None => return Err(invalid("not a pipeline bundle: no kiln_pipeline version")),
        }
        Self::from_definition(def, "bundle")
    }

    /// Validates a definition whose members are embedded and loads it; `file` names it in
    /// errors.
    pub fn from_definition(def: Definition, file: &str) -> Result<PipelineModel, ModelError> {
        let err = |m: String| invalid(format!("{file}: {m}"));
        let steps: Vec<Step> = def
            .preprocess
            .iter()
            .enumerate()
            .map(|(i, v)| Step::parse(i, v))
            .collect::<Result<_, _>>()
            .map_err(err)?;
        let chain = Chain::compile(&def.inputs, &steps).map_err(err)?;
        let names = chain.names();
        let column_list = names.join(", ");

        let defs = match (&def.model, &def.ensemble) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "give either [model] or [ensemble], not both".to_string()
                ));
            }
            (None, None) => {
                return Err(err(
                    "no model: add a [model] table (path, format) or an [ensemble]".to_string(),
                ));
            }
            _ => def.members(),
        };
        if defs.is_empty() {
            return Err(err(
                "ensemble.members is empty; add [[ensemble.members]] tables".to_string(),
            ));
        }
        let mut members = Vec::with_capacity(defs.len());
        for (i, m) in defs.iter().enumerate() {
            let label = member_label(&def, i);
            let format = member_format(&def, i, m).map_err(err)?;
            let bytes = m
                .data
                .as_ref()
                .ok_or_else(|| err(format!("{label}: the model file is not embedded")))?
                .bytes()
                .map_err(|e| err(format!("{label}: {e}")))?;
            let model = crate::load(format, &bytes)
                .map_err(|e| err(format!("{label}: does not load as a {format} model: {e}")))?;
            let mf = &model.info().feature_names;
            let columns = match &m.features {
                Some(given) if given.len() != mf.len() => {
                    return Err(err(format!(
                        "{label}: features lists {} names but the model takes {} inputs",
                        given.len(),
                        mf.len()
                    )));
                }
                Some(given) => Some(given.clone()),
                None if generic_names(mf) => None,
                None => Some(mf.clone()),
            };
            let columns = match columns {
                None => {
                    if mf.len() != names.len() {
                        return Err(err(format!(
                            "{label}: the model does not name its features, so it takes the {} preprocessed columns by position, but it has {} inputs (columns: {column_list}); name them with features = [...]",
                            names.len(),
                            mf.len()
                        )));
                    }
                    None
                }
                Some(wanted) => {
                    let mut idx = Vec::with_capacity(wanted.len());
                    for w in &wanted {
                        let pos = names.iter().position(|n| n == w).ok_or_else(|| {
                            err(format!(
                                "{label}: the model's feature {w:?} is not a column after preprocessing (columns: {column_list})"
                            ))
                        })?;
                        idx.push(pos);
                    }
                    let identity =
                        idx.len() == names.len() && idx.iter().enumerate().all(|(i, p)| i == *p);
                    (!identity).then_some(idx)
                }
            };
            members.push(Member { model, columns });
        }
        let k = members[0].model.info().n_outputs;
        for (i, m) in members.iter().enumerate().skip(1) {
            if m.model.info().n_outputs != k {
                return Err(err(format!(
                    "{}: gives {} outputs per row but {} gives {k}; ensemble members must agree",
                    member_label(&def, i),
                    m.model.info().n_outputs,
                    member_label(&def, 0)
                )));
            }
        }
        let combiner = combiner(&def, k).map_err(err)?;
        let n_outputs = combiner.n_outputs(k);
        let (link, n_margins) = match &combiner {
            Combiner::Single => (members[0].model.info().link, members[0].model.n_margins()),
            Combiner::Weighted(_) => (Link::Identity, n_outputs),
            Combiner::Stack { link, .. } => (
                match link {
                    StackLink::Identity => Link::Identity,
                    StackLink::Logistic => Link::Sigmoid { scale: 1.0 },
                },
                1,
            ),
        };
        let describe =
            |m: &Member| format!("{} {}", m.model.info().format, m.model.info().objective);
        let objective = match combiner.kind() {
            None => describe(&members[0]),
            Some(c) => format!(
                "{} of {} ({})",
                match c {
                    Combine::Mean => "mean",
                    Combine::Weighted => "weighted mean",
                    Combine::Stack => "stack",
                },
                members.len(),
                members.iter().map(describe).collect::<Vec<_>>().join(", ")
            ),
        };
        let info = ModelInfo {
            format: Format::Pipeline,
            objective,
            feature_names: def.inputs.clone(),
            n_outputs,
            link,
            n_trees: members.iter().map(|m| m.model.info().n_trees).sum(),
        };
        Ok(PipelineModel {
            info,
            chain,
            members,
            combiner,
            n_margins,
        })
    }

    /// The columns members see, after preprocessing.
    pub fn preprocessed_columns(&self) -> Vec<String> {
        self.chain.names()
    }

    /// Preprocesses rows (`n_features` wide) into `out` (`preprocessed_columns().len()` wide).
    pub fn preprocess(&self, rows: &[f64], out: &mut [f64]) -> Result<(), ModelError> {
        check_shape(rows, out, self.chain.n_inputs, self.chain.width())?;
        self.chain.apply(rows, out);
        Ok(())
    }

    fn run(&self, rows: &[f64], out: &mut [f64], margin: bool) -> Result<(), ModelError> {
        let per_row = if margin {
            self.n_margins
        } else {
            self.info.n_outputs
        };
        let n_in = self.chain.n_inputs;
        check_shape(rows, out, n_in, per_row)?;
        // A single model's margins are its own; an ensemble's members give outputs.
        let member_margin = margin && self.combiner == Combiner::Single;
        let w = self.chain.width();
        let mut pre = Vec::new();
        let mut gathered = Vec::new();
        let mut outs: Vec<Vec<f64>> = vec![Vec::new(); self.members.len()];
        for (rows, out) in rows
            .chunks(CHUNK * n_in)
            .zip(out.chunks_mut(CHUNK * per_row))
        {
            let n = rows.len() / n_in;
            pre.resize(n * w, 0.0);
            self.chain.apply(rows, &mut pre);
            for (m, o) in self.members.iter().zip(outs.iter_mut()) {
                let k = if member_margin {
                    m.model.n_margins()
                } else {
                    m.model.info().n_outputs
                };
                o.resize(n * k, 0.0);
                let input: &[f64] = match &m.columns {
                    None => &pre,
                    Some(cols) => {
                        gathered.clear();
                        for row in pre.chunks_exact(w) {
                            gathered.extend(cols.iter().map(|c| row[*c]));
                        }
                        &gathered
                    }
                };
                if member_margin {
                    m.model.predict_margin(input, o)?;
                } else {
                    m.model.predict(input, o)?;
                }
            }
            let k = self.members[0].model.info().n_outputs;
            self.combiner.combine(&outs, k, out, margin);
        }
        Ok(())
    }
}

/// The combiner of a definition whose members give `k` outputs each.
fn combiner(def: &Definition, k: usize) -> Result<Combiner, String> {
    let Some(e) = &def.ensemble else {
        if def.model.as_ref().is_some_and(|m| m.weight.is_some()) {
            return Err("[model]: weight is only used by ensemble members".into());
        }
        return Ok(Combiner::Single);
    };
    let weight_only_for = |i: usize| {
        format!(
            "{}: weight is only used with combine = \"weighted\"",
            member_label(def, i)
        )
    };
    if e.stack.is_some() && e.combine != Combine::Stack {
        return Err(
            "[ensemble.stack] is only used with combine = \"stack\"; remove it or change combine"
                .into(),
        );
    }
    match e.combine {
        Combine::Mean => {
            if let Some(i) = e.members.iter().position(|m| m.weight.is_some()) {
                return Err(weight_only_for(i));
            }
            Ok(Combiner::Weighted(vec![1.0; e.members.len()]))
        }
        Combine::Weighted => {
            let mut w = Vec::with_capacity(e.members.len());
            for (i, m) in e.members.iter().enumerate() {
                let label = member_label(def, i);
                match m.weight {
                    None => {
                        return Err(format!(
                            "{label}: combine = \"weighted\" needs a weight on every member"
                        ));
                    }
                    Some(x) if !x.is_finite() || x < 0.0 => {
                        return Err(format!(
                            "{label}: weight must be a finite number >= 0, not {x}"
                        ));
                    }
                    Some(x) => w.push(x),
                }
            }
            if w.iter().sum::<f64>() <= 0.0 {
                return Err("ensemble.members: the weights add up to 0".into());
            }
            Ok(Combiner::Weighted(w))
        }
        Combine::Stack => {
            if let Some(i) = e.members.iter().position(|m| m.weight.is_some()) {
                return Err(format!(
                    "{}: with combine = \"stack\" the weights are [ensemble.stack] weights, not per member",
                    member_label(def, i)
                ));
            }
            let s = e.stack.as_ref().ok_or(
                "combine = \"stack\" needs an [ensemble.stack] table: weights = [...], bias, link",
            )?;
            if s.weights.len() != e.members.len() {
                return Err(format!(
                    "ensemble.stack.weights has {} values but there are {} members",
                    s.weights.len(),
                    e.members.len()
                ));
            }
            if let Some(i) = s.weights.iter().position(|w| !w.is_finite()) {
                return Err(format!(
                    "ensemble.stack.weights[{i}] must be a finite number, not {}",
                    s.weights[i]
                ));
            }
            if !s.bias.is_finite() {
                return Err(format!(
                    "ensemble.stack.bias must be a finite number, not {}",
                    s.bias
                ));
            }
            if k != 1 {
                return Err(format!(
                    "combine = \"stack\" takes members with one output each; these give {k} (use mean or weighted)"
                ));
            }
            Ok(Combiner::Stack {
                weights: s.weights.clone(),
                bias: s.bias,
                link: s.link,
            })
        }
    }
}

impl Model for PipelineModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn predict(&self, rows: &[f64], out: &mut [f64]) -> Result<(), ModelError> {
        self.run(rows, out, false)
    }

    /// A single model's margins (after preprocessing); a stack's linear score before its link;
    /// for a mean or weighted ensemble, the same as [`Model::predict`] (it has no link).
    fn predict_margin(&self, rows: &[f64], out: &mut [f64]) -> Result<(), ModelError> {
        self.run(rows, out, true)
    }

    fn n_margins(&self) -> usize {
        self.n_margins
    }
}

#[cfg(test)]
mod tests;
