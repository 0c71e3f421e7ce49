//! XGBoost's JSON model format (`Booster.save_model("model.json")`), evaluated as XGBoost's CPU
//! predictor does: features and thresholds as f32, `x < threshold` goes left, a missing value
//! (NaN) follows the node's default direction, leaf values summed per output group in tree
//! order in f32 starting from the base margin, then the objective's link in f32.
//!
//! Categorical splits (`split_type` 1) send the categories listed for the node to the right
//! child and everything else (including values that are not valid categories) to the left.
//! `base_score` is read as 2.x writes it (`"5E-1"`) and as 3.x does (`"[5E-1]"`, one value per
//! output group), in the objective's output space, and turned into a margin.

use std::collections::VecDeque;

use serde_json::Value;

use crate::objective::Link;
use crate::{Format, Model, ModelError, ModelInfo, predict_blocks};

const LEAF: u32 = u32::MAX;
const DEFAULT_LEFT: u32 = 1 << 31;
const CATEGORICAL: u32 = 1 << 30;
const FEATURE: u32 = CATEGORICAL - 1;

/// One node. Children are adjacent (`left`, `left + 1`), so a decision is an index add.
/// For a leaf, `feature` is [`LEAF`] and `value` the leaf value; for a categorical split,
/// `value`'s bits index [`XgboostModel::cat_sets`].
#[derive(Debug, Clone, Copy)]
struct Node {
    feature: u32,
    value: f32,
    left: u32,
}

/// The same tree for the branch-free path of models without categorical splits and with at
/// most [`FAST_MAX_FEATURES`] features. The row is expanded into [`FAST_ROW`] slots: feature
/// `f` at `f` with a missing value as +inf (so it goes right) and at `64 + f` with a missing
/// value as -inf (so it goes left), and -inf at [`FAST_LEAF`]. A split reads the slot that
/// gives its default direction; a leaf reads the -inf slot and loops to itself. One step of
/// any node is then `left + (x[slot] >= value)`, with no test for NaN or for leaves, so a
/// fixed number of steps walks every tree, several trees in lock step.
#[derive(Debug, Clone, Copy)]
struct FastNode {
    slot: u32,
    /// The threshold of a split, the value of a leaf.
    value: f32,
    /// Left child, or the node itself for a leaf.
    left: u32,
}

const FAST_MAX_FEATURES: usize = 63;
const FAST_ROW: usize = 128;
const FAST_LEAF: u32 = 127;

/// Trees walked together in the branch-free path.
const LANES: usize = 8;

/// A loaded XGBoost model.
#[derive(Debug, Clone)]
pub struct XgboostModel {
    info: ModelInfo,
    nodes: Vec<Node>,
    roots: Vec<u32>,
    tree_group: Vec<u32>,
    /// DART's per-tree weights; all 1 for gbtree.
    tree_weight: Option<Vec<f32>>,
    base_margin: Vec<f32>,
    /// Present when the model has no categorical split: the branch-free layout, and each
    /// tree's depth.
    fast: Option<(Vec<FastNode>, Vec<u32>)>,
    /// (first word, word count) of each categorical split's category bitset.
    cat_sets: Vec<(u32, u32)>,
    cat_words: Vec<u32>,
}

fn invalid(message: impl Into<String>) -> ModelError {
    ModelError::Invalid {
        format: "xgboost",
        message: message.into(),
    }
}

fn unsupported(message: impl Into<String>) -> ModelError {
    ModelError::Unsupported {
        format: "xgboost",
        message: message.into(),
    }
}

fn get<'a>(v: &'a Value, path: &str, key: &str) -> Result<&'a Value, ModelError> {
    v.get(key)
        .ok_or_else(|| invalid(format!("{path}.{key} is missing")))
}

/// A number that XGBoost may have written as a JSON number or as a string (`null` stands for
/// the `NaN` that [`sanitize`] replaced).
fn number(v: &Value, path: &str) -> Result<f64, ModelError> {
    match v {
        Value::Null => Ok(f64::NAN),
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| invalid(format!("{path}: {n} is not a number"))),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| invalid(format!("{path}: {s:?} is not a number"))),
        Value::Bool(b) => Ok(f64::from(u8::from(*b))),
        other => Err(invalid(format!("{path}: expected a number, found {other}"))),
    }
}

fn numbers(v: &Value, path: &str) -> Result<Vec<f64>, ModelError> {
    v.as_array()
        .ok_or_else(|| invalid(format!("{path}: expected an array")))?
        .iter()
        .enumerate()
        .map(|(i, x)| number(x, &format!("{path}[{i}]")))
        .collect()
}

/// XGBoost 2.x writes `NaN` (and could write `Infinity`) as bare tokens, which JSON does not
/// have, e.g. in the `split_conditions` of categorical nodes. Outside strings they become
/// `null`.
fn sanitize(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let has = |t: &[u8]| bytes.windows(t.len()).any(|w| w == t);
    if !has(b"NaN") && !has(b"Infinity") {
        return std::borrow::Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let (mut i, mut in_string, mut escaped) = (0, false, false);
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            out.push(b);
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        let token = [&b"-Infinity"[..], b"Infinity", b"NaN"]
            .into_iter()
            .find(|t| bytes[i..].starts_with(t));
        match (b, token) {
            (b'"', _) => {
                in_string = true;
                out.push(b);
                i += 1;
            }
            (_, Some(t)) => {
                out.extend_from_slice(b"null");
                i += t.len();
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `base_score`: `"5E-1"` (2.x), `"[5E-1]"` or `"[1E-1,2E-1,7E-1]"` (3.x), or a number.
fn base_scores(v: &Value) -> Result<Vec<f64>, ModelError> {
    let path = "learner.learner_model_param.base_score";
    match v {
        Value::String(s) => s
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split(',')
            .map(|x| {
                x.trim().parse::<f64>().map_err(|_| {
                    invalid(format!("{path}: {s:?} is not a number or list of numbers"))
                })
            })
            .collect(),
        other => Ok(vec![number(other, path)?]),
    }
}

/// The link and how `base_score` becomes a margin, per objective.
/// Turns a `base_score` (in output space) into a margin.
type ToMargin = fn(f32) -> f32;

fn objective(name: &str) -> Result<(Link, ToMargin), ModelError> {
    fn identity(x: f32) -> f32 {
        x
    }
    fn logit(p: f32) -> f32 {
        -(1.0f32 / p - 1.0f32).ln()
    }
    fn ln(x: f32) -> f32 {
        x.ln()
    }
    Ok(match name {
        "reg:squarederror"
        | "reg:linear"
        | "reg:squaredlogerror"
        | "reg:absoluteerror"
        | "reg:pseudohubererror"
        | "reg:quantileerror"
        | "rank:pairwise"
        | "rank:ndcg"
        | "rank:map" => (Link::Identity, identity),
        "reg:logistic" | "binary:logistic" => (Link::Sigmoid { scale: 1.0 }, logit),
        // logitraw takes base_score as a margin already (checked against xgboost 2.1 and 3.x).
        "binary:logitraw" => (Link::Identity, identity),
        "count:poisson" | "reg:gamma" | "reg:tweedie" | "survival:cox" => (Link::Exp, ln),
        "multi:softprob" => (Link::Softmax, identity),
        "multi:softmax" => (Link::ArgMax, identity),
        other => {
            return Err(unsupported(format!(
                "objective {other:?} (supported: reg:squarederror, reg:logistic, reg:absoluteerror, reg:pseudohubererror, reg:quantileerror, reg:squaredlogerror, binary:logistic, binary:logitraw, count:poisson, reg:gamma, reg:tweedie, survival:cox, multi:softprob, multi:softmax, rank:*)"
            )));
        }
    })
}

impl XgboostModel {
    /// Parses a model saved with `save_model("*.json")`.
    pub fn from_json(bytes: &[u8]) -> Result<XgboostModel, ModelError> {
        let doc: Value = serde_json::from_slice(&sanitize(bytes))
            .map_err(|e| invalid(format!("not JSON: {e}")))?;
        let learner = get(&doc, "", "learner").map_err(|_| {
            invalid(
                "no \"learner\" object: is this an XGBoost JSON model (save_model(\"*.json\"))?",
            )
        })?;
        let params = get(learner, "learner", "learner_model_param")?;
        let n_features = number(
            get(params, "learner.learner_model_param", "num_feature")?,
            "learner.learner_model_param.num_feature",
        )? as usize;
        let num_class = params
            .get("num_class")
            .map(|v| number(v, "learner.learner_model_param.num_class"))
            .transpose()?
            .unwrap_or(0.0) as usize;
        let num_target = params
            .get("num_target")
            .map(|v| number(v, "learner.learner_model_param.num_target"))
            .transpose()?
            .unwrap_or(1.0) as usize;
        let groups = num_class.max(num_target).max(1);

        let objective_name = get(
            get(learner, "learner", "objective")?,
            "learner.objective",
            "name",
        )?
        .as_str()
        .ok_or_else(|| invalid("learner.objective.name is not a string"))?
        .to_string();
        let (link, to_margin) = objective(&objective_name)?;

        let base = base_scores(get(params, "learner.learner_model_param", "base_score")?)?;
        let base_margin: Vec<f32> = match base.len() {
            1 => vec![to_margin(base[0] as f32); groups],
            n if n == groups => base.iter().map(|b| to_margin(*b as f32)).collect(),
            n => {
                return Err(invalid(format!(
                    "base_score has {n} values for {groups} output groups"
                )));
            }
        };

        let booster = get(learner, "learner", "gradient_booster")?;
        let booster_name = booster
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("gbtree");
        let (model, tree_weight) = match booster_name {
            "gbtree" => (get(booster, "learner.gradient_booster", "model")?, None),
            "dart" => {
                let inner = get(booster, "learner.gradient_booster", "gbtree")?;
                let weights = numbers(
                    get(booster, "learner.gradient_booster", "weight_drop")?,
                    "learner.gradient_booster.weight_drop",
                )?;
                (
                    get(inner, "learner.gradient_booster.gbtree", "model")?,
                    Some(weights.iter().map(|w| *w as f32).collect::<Vec<_>>()),
                )
            }
            "gblinear" => {
                return Err(unsupported(
                    "the gblinear booster (a linear model); only tree boosters (gbtree, dart) are evaluated",
                ));
            }
            other => return Err(unsupported(format!("booster {other:?}"))),
        };
        let path = "learner.gradient_booster.model";
        let trees = get(model, path, "trees")?
            .as_array()
            .ok_or_else(|| invalid(format!("{path}.trees is not an array")))?;
        let tree_info = numbers(get(model, path, "tree_info")?, &format!("{path}.tree_info"))?;
        if tree_info.len() != trees.len() {
            return Err(invalid(format!(
                "{path}.tree_info has {} entries for {} trees",
                tree_info.len(),
                trees.len()
            )));
        }
        if let Some(w) = &tree_weight
            && w.len() != trees.len()
        {
            return Err(invalid(format!(
                "weight_drop has {} entries for {} trees",
                w.len(),
                trees.len()
            )));
        }

        let mut m = XgboostModel {
            info: ModelInfo {
                format: Format::Xgboost,
                objective: objective_name,
                feature_names: Vec::new(),
                n_outputs: link.n_outputs(groups),
                link,
                n_trees: trees.len(),
            },
            nodes: Vec::new(),
            roots: Vec::with_capacity(trees.len()),
            tree_group: Vec::with_capacity(trees.len()),
            tree_weight,
            base_margin,
            fast: None,
            cat_sets: Vec::new(),
            cat_words: Vec::new(),
        };
        for (t, tree) in trees.iter().enumerate() {
            let group = tree_info[t] as usize;
            if group >= groups {
                return Err(invalid(format!(
                    "{path}.tree_info[{t}] = {group}, but the model has {groups} output groups"
                )));
            }
            m.add_tree(tree, &format!("{path}.trees[{t}]"), n_features)?;
            m.tree_group.push(group as u32);
        }
        let names = learner
            .get("feature_names")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            });
        m.info.feature_names = match names {
            Some(n) if n.len() == n_features => n,
            _ => (0..n_features).map(|i| format!("f{i}")).collect(),
        };
        if m.cat_sets.is_empty() && n_features <= FAST_MAX_FEATURES {
            m.fast = Some(m.fast_layout());
        }
        Ok(m)
    }

    /// The branch-free layout (same indices as `nodes`) and each tree's depth.
    fn fast_layout(&self) -> (Vec<FastNode>, Vec<u32>) {
        let mut nodes: Vec<FastNode> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                if n.feature == LEAF {
                    FastNode {
                        slot: FAST_LEAF,
                        value: n.value,
                        left: i as u32,
                    }
                } else {
                    let f = n.feature & FEATURE;
                    let slot = if n.feature & DEFAULT_LEFT != 0 {
                        64 + f
                    } else {
                        f
                    };
                    FastNode {
                        slot,
                        value: n.value,
                        left: n.left,
                    }
                }
            })
            .collect();
        let pad = nodes.len() as u32;
        nodes.push(FastNode {
            slot: FAST_LEAF,
            value: 0.0,
            left: pad,
        });
        let depths = self
            .roots
            .iter()
            .map(|root| {
                let mut depth = 0;
                let mut level = vec![*root as usize];
                while level.iter().any(|i| self.nodes[*i].feature != LEAF) {
                    depth += 1;
                    level = level
                        .iter()
                        .filter(|i| self.nodes[**i].feature != LEAF)
                        .flat_map(|i| {
                            [
                                self.nodes[*i].left as usize,
                                self.nodes[*i].left as usize + 1,
                            ]
                        })
                        .collect();
                }
                depth
            })
            .collect();
        (nodes, depths)
    }

    /// Adds every tree's leaf for `row` to `margins`, walking [`LANES`] trees at a time in lock
    /// step so their independent memory loads overlap. Sums still run in tree order.
    fn add_trees_fast(&self, nodes: &[FastNode], depths: &[u32], row: &[f64], margins: &mut [f32]) {
        let mut x = [f32::NEG_INFINITY; FAST_ROW];
        for (f, v) in row.iter().enumerate() {
            let v = *v as f32;
            x[f] = if v.is_nan() { f32::INFINITY } else { v };
            x[64 + f] = if v.is_nan() { f32::NEG_INFINITY } else { v };
        }
        // The last node is a padding leaf (value 0) that fills lanes past the last tree.
        let pad = (nodes.len() - 1) as u32;
        for first in (0..self.roots.len()).step_by(LANES) {
            let lanes = LANES.min(self.roots.len() - first);
            let mut at = [pad; LANES];
            at[..lanes].copy_from_slice(&self.roots[first..first + lanes]);
            let steps = depths[first..first + lanes]
                .iter()
                .copied()
                .max()
                .unwrap_or(0);
            for _ in 0..steps {
                for i in &mut at {
                    let n = nodes[*i as usize];
                    *i = n.left + u32::from(x[n.slot as usize & (FAST_ROW - 1)] >= n.value);
                }
            }
            for (lane, i) in at.iter().take(lanes).enumerate() {
                let t = first + lane;
                let v = nodes[*i as usize].value;
                margins[self.tree_group[t] as usize] += match &self.tree_weight {
                    Some(w) => v * w[t],
                    None => v,
                };
            }
        }
    }

    fn add_tree(&mut self, tree: &Value, path: &str, n_features: usize) -> Result<(), ModelError> {
        if let Some(size) = tree
            .get("tree_param")
            .and_then(|p| p.get("size_leaf_vector"))
        {
            let size = number(size, &format!("{path}.tree_param.size_leaf_vector"))?;
            if size > 1.0 {
                return Err(unsupported(format!(
                    "{path}: vector-leaf (multi-target) trees"
                )));
            }
        }
        let arr = |key: &str| numbers(get(tree, path, key)?, &format!("{path}.{key}"));
        let left = arr("left_children")?;
        let right = arr("right_children")?;
        let feature = arr("split_indices")?;
        let cond = arr("split_conditions")?;
        let default_left = arr("default_left")?;
        let n = left.len();
        for (k, v) in [
            ("right_children", &right),
            ("split_indices", &feature),
            ("split_conditions", &cond),
            ("default_left", &default_left),
        ] {
            if v.len() != n {
                return Err(invalid(format!(
                    "{path}.{k} has {} entries, left_children has {n}",
                    v.len()
                )));
            }
        }
        if n == 0 {
            return Err(invalid(format!("{path} has no nodes")));
        }
        let split_type = match tree.get("split_type") {
            Some(v) => numbers(v, &format!("{path}.split_type"))?,
            None => vec![0.0; n],
        };
        // Categorical splits: the categories of node categories_nodes[k] are
        // categories[categories_segments[k] .. + categories_sizes[k]].
        let mut node_cats: std::collections::HashMap<usize, Vec<u32>> =
            std::collections::HashMap::new();
        if split_type.contains(&1.0) {
            let nodes = arr("categories_nodes")?;
            let segments = arr("categories_segments")?;
            let sizes = arr("categories_sizes")?;
            let cats = arr("categories")?;
            for (k, node) in nodes.iter().enumerate() {
                let (start, len) = (
                    *segments.get(k).unwrap_or(&-1.0),
                    *sizes.get(k).unwrap_or(&-1.0),
                );
                if start < 0.0 || len < 0.0 || (start + len) as usize > cats.len() {
                    return Err(invalid(format!(
                        "{path}: category segment {k} is out of range"
                    )));
                }
                let set = cats[start as usize..(start + len) as usize]
                    .iter()
                    .map(|c| *c as u32)
                    .collect();
                node_cats.insert(*node as usize, set);
            }
        }

        // Lay the tree out breadth first with each node's children adjacent.
        let root = self.nodes.len();
        self.roots.push(root as u32);
        self.nodes.push(Node {
            feature: LEAF,
            value: 0.0,
            left: 0,
        });
        let mut queue = VecDeque::from([(0usize, root)]);
        let mut visited = 0usize;
        while let Some((old, new)) = queue.pop_front() {
            visited += 1;
            if visited > n {
                return Err(invalid(format!("{path}: the children arrays form a cycle")));
            }
            let l = left[old];
            if l < 0.0 {
                self.nodes[new] = Node {
                    feature: LEAF,
                    value: cond[old] as f32,
                    left: 0,
                };
                continue;
            }
            let (l, r) = (l as usize, right[old]);
            if l >= n || r < 0.0 || r as usize >= n {
                return Err(invalid(format!(
                    "{path}: node {old} has children {l} and {r}, outside 0..{n}"
                )));
            }
            let f = feature[old] as usize;
            if f >= n_features {
                return Err(invalid(format!(
                    "{path}: node {old} splits on feature {f}, but the model has {n_features} features"
                )));
            }
            let mut flags = f as u32;
            if default_left[old] != 0.0 {
                flags |= DEFAULT_LEFT;
            }
            let value = if split_type[old] == 1.0 {
                flags |= CATEGORICAL;
                let set = node_cats.get(&old).ok_or_else(|| {
                    invalid(format!("{path}: categorical node {old} has no categories"))
                })?;
                f32::from_bits(self.add_cat_set(set))
            } else {
                cond[old] as f32
            };
            let children = self.nodes.len();
            self.nodes.push(Node {
                feature: LEAF,
                value: 0.0,
                left: 0,
            });
            self.nodes.push(Node {
                feature: LEAF,
                value: 0.0,
                left: 0,
            });
            self.nodes[new] = Node {
                feature: flags,
                value,
                left: children as u32,
            };
            queue.push_back((l, children));
            queue.push_back((r as usize, children + 1));
        }
        Ok(())
    }

    fn add_cat_set(&mut self, cats: &[u32]) -> u32 {
        let words = cats.iter().map(|c| c / 32 + 1).max().unwrap_or(0);
        let start = self.cat_words.len();
        self.cat_words.resize(start + words as usize, 0);
        for c in cats {
            self.cat_words[start + (c / 32) as usize] |= 1 << (c % 32);
        }
        self.cat_sets.push((start as u32, words));
        (self.cat_sets.len() - 1) as u32
    }

    /// Whether category `x` is in set `set` (XGBoost sends members right). Negative values and
    /// values of 2^24 or more are not categories (left); others are truncated, as XGBoost casts.
    fn in_set(&self, set: u32, x: f64) -> bool {
        let x = x as f32;
        if !(0.0..16_777_216.0).contains(&x) {
            return false;
        }
        let (start, words) = self.cat_sets[set as usize];
        let c = x as u32;
        let w = c / 32;
        w < words && (self.cat_words[(start + w) as usize] >> (c % 32)) & 1 == 1
    }

    /// The leaf value that `row` reaches in the tree at `root`.
    #[inline]
    fn leaf(&self, root: u32, row: &[f64]) -> f32 {
        let mut i = root as usize;
        loop {
            let n = self.nodes[i];
            if n.feature == LEAF {
                return n.value;
            }
            let x = row[(n.feature & FEATURE) as usize];
            let right = if x.is_nan() {
                n.feature & DEFAULT_LEFT == 0
            } else if n.feature & CATEGORICAL != 0 {
                self.in_set(n.value.to_bits(), x)
            } else {
                // Not NaN here, so this is `!(x < threshold)`.
                (x as f32) >= n.value
            };
            i = n.left as usize + usize::from(right);
        }
    }

    /// Margins for up to [`crate::BLOCK`] rows: trees outside, rows inside, so a tree's nodes stay in
    /// cache across the block. Each row's sum still runs in tree order, as XGBoost's.
    fn margins(&self, rows: &[f64], margins: &mut [f32]) {
        let nf = self.info.n_features();
        let groups = self.base_margin.len();
        for m in margins.chunks_mut(groups) {
            m.copy_from_slice(&self.base_margin);
        }
        if let Some((nodes, depths)) = &self.fast {
            for (row, m) in rows.chunks_exact(nf).zip(margins.chunks_mut(groups)) {
                self.add_trees_fast(nodes, depths, row, m);
            }
            return;
        }
        for (t, root) in self.roots.iter().enumerate() {
            let g = self.tree_group[t] as usize;
            let w = self.tree_weight.as_ref().map(|w| w[t]);
            for (r, row) in rows.chunks_exact(nf).enumerate() {
                let v = self.leaf(*root, row);
                margins[r * groups + g] += match w {
                    Some(w) => v * w,
                    None => v,
                };
            }
        }
    }

    fn run(&self, rows: &[f64], out: &mut [f64], margin_only: bool) -> Result<(), ModelError> {
        let groups = self.base_margin.len();
        let per_row = if margin_only {
            groups
        } else {
            self.info.n_outputs
        };
        let link = if margin_only {
            Link::Identity
        } else {
            self.info.link
        };
        predict_blocks(
            rows,
            out,
            self.info.n_features(),
            groups,
            per_row,
            |block, m| self.margins(block, m),
            |m, o| link.apply_f32(m, o),
        )
    }
}

impl Model for XgboostModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn predict(&self, rows: &[f64], out: &mut [f64]) -> Result<(), ModelError> {
        self.run(rows, out, false)
    }

    fn predict_margin(&self, rows: &[f64], out: &mut [f64]) -> Result<(), ModelError> {
        self.run(rows, out, true)
    }

    fn n_margins(&self) -> usize {
        self.base_margin.len()
    }
}
