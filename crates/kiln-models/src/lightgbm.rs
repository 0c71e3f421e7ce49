//! LightGBM's text model format (`Booster.save_model("model.txt")`), evaluated as LightGBM's
//! `Tree::Predict` does, in f64:
//!
//! - `decision_type` bits: 1 = categorical, 2 = default left, bits 3-4 = missing type
//!   (0 none, 1 zero, 2 NaN).
//! - Inputs within 1e-35 (as f32) of zero are read as 0.
//! - Numerical split: a NaN becomes 0 unless the missing type is NaN; a missing value (zero
//!   with missing type zero, NaN with missing type NaN) follows the default direction; else
//!   `x <= threshold` goes left.
//! - Categorical split: the value is truncated to an integer; NaN, negative and out-of-range
//!   values go right; otherwise it goes left
//!   when its bit is set in the node's `cat_threshold` bitset (`cat_boundaries` delimits each
//!   node's words).
//! - Multiclass models store `num_tree_per_iteration` trees per iteration, tree `i` scoring
//!   class `i % K`; `average_output` (random forest) divides the sum by the iteration count.
//! - The objective line gives the link (`binary sigmoid:1`, `multiclass num_class:3`, ...).

use std::collections::{HashMap, VecDeque};

use crate::objective::Link;
use crate::{Format, Model, ModelError, ModelInfo, predict_blocks};

const LEAF: u32 = u32::MAX;
const CATEGORICAL: u8 = 1;
const DEFAULT_LEFT: u8 = 2;
/// LightGBM's `kZeroThreshold` (1e-35f): inputs this close to zero are zero.
const ZERO_THRESHOLD: f64 = 1.000_000_018_002_509_5e-35;

/// One node; children adjacent (`left`, `left + 1`). A leaf has `feature == LEAF` and its value
/// in `value`; a categorical split has its bitset index in `value`.
#[derive(Debug, Clone, Copy)]
struct Node {
    feature: u32,
    decision: u8,
    value: f64,
    left: u32,
}

/// A loaded LightGBM model.
#[derive(Debug, Clone)]
pub struct LightGbmModel {
    info: ModelInfo,
    nodes: Vec<Node>,
    roots: Vec<u32>,
    classes: usize,
    average_output: bool,
    cat_sets: Vec<(u32, u32)>,
    cat_words: Vec<u32>,
}

fn invalid(message: impl Into<String>) -> ModelError {
    ModelError::Invalid {
        format: "lightgbm",
        message: message.into(),
    }
}

fn unsupported(message: impl Into<String>) -> ModelError {
    ModelError::Unsupported {
        format: "lightgbm",
        message: message.into(),
    }
}

/// The `key=value` lines of one section, with their line numbers.
struct Section<'a> {
    name: String,
    values: HashMap<&'a str, (usize, &'a str)>,
}

impl<'a> Section<'a> {
    fn get(&self, key: &str) -> Result<(usize, &'a str), ModelError> {
        self.values
            .get(key)
            .copied()
            .ok_or_else(|| invalid(format!("{}: no {key}= line", self.name)))
    }

    fn opt(&self, key: &str) -> Option<&'a str> {
        self.values.get(key).map(|(_, v)| *v)
    }

    fn list<T: std::str::FromStr>(&self, key: &str) -> Result<Vec<T>, ModelError> {
        let (line, v) = self.get(key)?;
        v.split_whitespace()
            .map(|x| {
                x.parse::<T>().map_err(|_| {
                    invalid(format!("line {line}: {key}: {x:?} is not a valid number"))
                })
            })
            .collect()
    }
}

fn objective_link(objective: &str) -> Result<Link, ModelError> {
    let mut parts = objective.split_whitespace();
    let name = parts.next().unwrap_or("");
    let param = |key: &str| {
        objective
            .split_whitespace()
            .find_map(|p| p.strip_prefix(key).and_then(|v| v.strip_prefix(':')))
            .and_then(|v| v.parse::<f64>().ok())
    };
    if objective.split_whitespace().any(|p| p == "sqrt") {
        return Err(unsupported(format!(
            "objective {objective:?} with the sqrt transform"
        )));
    }
    Ok(match name {
        "binary" => Link::Sigmoid {
            scale: param("sigmoid").unwrap_or(1.0),
        },
        "cross_entropy" | "xentropy" => Link::Sigmoid { scale: 1.0 },
        "multiclass" | "softmax" => Link::Softmax,
        "multiclassova" | "multiclass_ova" | "ova" | "ovr" => Link::SigmoidPerClass {
            scale: param("sigmoid").unwrap_or(1.0),
        },
        "poisson" | "gamma" | "tweedie" => Link::Exp,
        "regression"
        | "regression_l2"
        | "l2"
        | "mean_squared_error"
        | "mse"
        | "l2_root"
        | "root_mean_squared_error"
        | "rmse"
        | "regression_l1"
        | "l1"
        | "mean_absolute_error"
        | "mae"
        | "huber"
        | "fair"
        | "quantile"
        | "mape"
        | "mean_absolute_percentage_error"
        | "lambdarank"
        | "rank_xendcg"
        | "xendcg"
        | "custom"
        | "none" => Link::Identity,
        other => return Err(unsupported(format!("objective {other:?}"))),
    })
}

impl LightGbmModel {
    /// Parses a model saved with `save_model("*.txt")`.
    pub fn from_text(bytes: &[u8]) -> Result<LightGbmModel, ModelError> {
        let text =
            std::str::from_utf8(bytes).map_err(|e| invalid(format!("not UTF-8 text: {e}")))?;
        let mut sections: Vec<Section<'_>> = vec![Section {
            name: "header".into(),
            values: HashMap::new(),
        }];
        let mut flags = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line == "end of trees" {
                break;
            }
            if let Some(n) = line.strip_prefix("Tree=") {
                sections.push(Section {
                    name: format!("Tree={n} (line {})", i + 1),
                    values: HashMap::new(),
                });
                continue;
            }
            match line.split_once('=') {
                Some((k, v)) => {
                    if let Some(s) = sections.last_mut() {
                        s.values.insert(k, (i + 1, v));
                    }
                }
                None if sections.len() == 1 && !line.is_empty() => flags.push(line),
                None => {}
            }
        }
        let header = sections.remove(0);
        if header.opt("version").is_none() && header.opt("max_feature_idx").is_none() {
            return Err(invalid(
                "no LightGBM header (version=, max_feature_idx=): is this a model saved with save_model(\"*.txt\")?",
            ));
        }
        let n_features = header
            .list::<usize>("max_feature_idx")?
            .first()
            .copied()
            .unwrap_or(0)
            + 1;
        let classes = header
            .opt("num_tree_per_iteration")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1usize)
            .max(1);
        let objective = header
            .opt("objective")
            .unwrap_or("regression")
            .trim()
            .to_string();
        let link = objective_link(&objective)?;
        let average_output = flags.contains(&"average_output");
        let feature_names = match header.opt("feature_names") {
            Some(names) if names.split_whitespace().count() == n_features => {
                names.split_whitespace().map(str::to_string).collect()
            }
            _ => (0..n_features).map(|i| format!("Column_{i}")).collect(),
        };
        if sections.is_empty() {
            return Err(invalid("the model has no trees"));
        }
        if !sections.len().is_multiple_of(classes) {
            return Err(invalid(format!(
                "{} trees is not a multiple of num_tree_per_iteration={classes}",
                sections.len()
            )));
        }
        let mut m = LightGbmModel {
            info: ModelInfo {
                format: Format::Lightgbm,
                objective,
                feature_names,
                n_outputs: link.n_outputs(classes),
                link,
                n_trees: sections.len(),
            },
            nodes: Vec::new(),
            roots: Vec::with_capacity(sections.len()),
            classes,
            average_output,
            cat_sets: Vec::new(),
            cat_words: Vec::new(),
        };
        for s in &sections {
            m.add_tree(s, n_features)?;
        }
        Ok(m)
    }

    fn add_tree(&mut self, s: &Section<'_>, n_features: usize) -> Result<(), ModelError> {
        if s.opt("is_linear").is_some_and(|v| v.trim() == "1") {
            return Err(unsupported(format!(
                "{}: linear trees (linear_tree=true)",
                s.name
            )));
        }
        let num_leaves: usize = s.list::<usize>("num_leaves")?.first().copied().unwrap_or(0);
        let leaf_value: Vec<f64> = s.list("leaf_value")?;
        if leaf_value.len() != num_leaves || num_leaves == 0 {
            return Err(invalid(format!(
                "{}: {} leaf values for num_leaves={num_leaves}",
                s.name,
                leaf_value.len()
            )));
        }
        let root = self.nodes.len();
        self.roots.push(root as u32);
        if num_leaves == 1 {
            self.nodes.push(Node {
                feature: LEAF,
                decision: 0,
                value: leaf_value[0],
                left: 0,
            });
            return Ok(());
        }
        let internal = num_leaves - 1;
        let feature: Vec<usize> = s.list("split_feature")?;
        let threshold: Vec<f64> = s.list("threshold")?;
        let decision: Vec<u8> = s.list("decision_type")?;
        let left: Vec<i64> = s.list("left_child")?;
        let right: Vec<i64> = s.list("right_child")?;
        for (k, len) in [
            ("split_feature", feature.len()),
            ("threshold", threshold.len()),
            ("decision_type", decision.len()),
            ("left_child", left.len()),
            ("right_child", right.len()),
        ] {
            if len != internal {
                return Err(invalid(format!(
                    "{}: {k} has {len} entries, expected {internal}",
                    s.name
                )));
            }
        }
        let num_cat = s
            .opt("num_cat")
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let (bounds, words): (Vec<usize>, Vec<u32>) = if num_cat > 0 {
            (s.list("cat_boundaries")?, s.list("cat_threshold")?)
        } else {
            (Vec::new(), Vec::new())
        };
        // First bitset index of this tree in the model-wide table.
        let cat_base = self.cat_sets.len();
        for c in 0..num_cat {
            let (a, b) = (
                *bounds.get(c).unwrap_or(&usize::MAX),
                *bounds.get(c + 1).unwrap_or(&usize::MAX),
            );
            if a > b || b > words.len() {
                return Err(invalid(format!(
                    "{}: cat_boundaries[{c}..{}] is outside cat_threshold",
                    s.name,
                    c + 1
                )));
            }
            let start = self.cat_words.len();
            self.cat_words.extend_from_slice(&words[a..b]);
            self.cat_sets.push((start as u32, (b - a) as u32));
        }

        // Children: >= 0 an internal node, < 0 the leaf !child. Lay out breadth first, with
        // each node's children adjacent.
        enum Old {
            Internal(usize),
            Leaf(usize),
        }
        let child = |c: i64| -> Result<Old, ModelError> {
            if c >= 0 {
                let c = c as usize;
                if c >= internal {
                    return Err(invalid(format!(
                        "{}: child {c} is outside 0..{internal}",
                        s.name
                    )));
                }
                Ok(Old::Internal(c))
            } else {
                let l = (!c) as usize;
                if l >= num_leaves {
                    return Err(invalid(format!(
                        "{}: leaf {l} is outside 0..{num_leaves}",
                        s.name
                    )));
                }
                Ok(Old::Leaf(l))
            }
        };
        self.nodes.push(Node {
            feature: LEAF,
            decision: 0,
            value: 0.0,
            left: 0,
        });
        let mut queue = VecDeque::from([(Old::Internal(0), root)]);
        let mut visited = 0;
        while let Some((old, new)) = queue.pop_front() {
            visited += 1;
            if visited > internal + num_leaves {
                return Err(invalid(format!("{}: the children form a cycle", s.name)));
            }
            let o = match old {
                Old::Leaf(l) => {
                    self.nodes[new] = Node {
                        feature: LEAF,
                        decision: 0,
                        value: leaf_value[l],
                        left: 0,
                    };
                    continue;
                }
                Old::Internal(o) => o,
            };
            if feature[o] >= n_features {
                return Err(invalid(format!(
                    "{}: node {o} splits on feature {}, beyond max_feature_idx",
                    s.name, feature[o]
                )));
            }
            let value = if decision[o] & CATEGORICAL != 0 {
                let c = threshold[o] as usize;
                if c >= num_cat {
                    return Err(invalid(format!(
                        "{}: node {o} uses category set {c} of {num_cat}",
                        s.name
                    )));
                }
                (cat_base + c) as f64
            } else {
                threshold[o]
            };
            let children = self.nodes.len();
            self.nodes.push(Node {
                feature: LEAF,
                decision: 0,
                value: 0.0,
                left: 0,
            });
            self.nodes.push(Node {
                feature: LEAF,
                decision: 0,
                value: 0.0,
                left: 0,
            });
            self.nodes[new] = Node {
                feature: feature[o] as u32,
                decision: decision[o],
                value,
                left: children as u32,
            };
            queue.push_back((child(left[o])?, children));
            queue.push_back((child(right[o])?, children + 1));
        }
        Ok(())
    }

    fn in_set(&self, set: usize, x: f64) -> bool {
        let (start, words) = self.cat_sets[set];
        let c = x as i64 as u64;
        let w = c / 32;
        w < u64::from(words) && (self.cat_words[start as usize + w as usize] >> (c % 32)) & 1 == 1
    }

    #[inline]
    fn leaf(&self, root: u32, row: &[f64]) -> f64 {
        let mut i = root as usize;
        loop {
            let n = self.nodes[i];
            if n.feature == LEAF {
                return n.value;
            }
            let mut x = row[n.feature as usize];
            // LightGBM reads values within its zero threshold as exactly 0.
            if x.abs() <= ZERO_THRESHOLD {
                x = 0.0;
            }
            let right = if n.decision & CATEGORICAL != 0 {
                // As `static_cast<int>`: truncation toward zero, then NaN, negatives and values
                // beyond an int are not categories (right).
                let c = x.trunc();
                !(0.0..2_147_483_648.0).contains(&c) || !self.in_set(n.value as usize, c)
            } else {
                let missing = (n.decision >> 2) & 3;
                if x.is_nan() && missing != 2 {
                    x = 0.0;
                }
                let is_missing = (missing == 1 && x == 0.0) || (missing == 2 && x.is_nan());
                if is_missing {
                    n.decision & DEFAULT_LEFT == 0
                } else {
                    x > n.value
                }
            };
            i = n.left as usize + usize::from(right);
        }
    }

    fn run(&self, rows: &[f64], out: &mut [f64], margin_only: bool) -> Result<(), ModelError> {
        let k = self.classes;
        let nf = self.info.n_features();
        let per_row = if margin_only { k } else { self.info.n_outputs };
        let iterations = (self.roots.len() / k) as f64;
        let margins = |block: &[f64], m: &mut [f64]| {
            m.fill(0.0);
            for (t, root) in self.roots.iter().enumerate() {
                for (r, row) in block.chunks_exact(nf).enumerate() {
                    m[r * k + t % k] += self.leaf(*root, row);
                }
            }
            if self.average_output {
                m.iter_mut().for_each(|v| *v /= iterations);
            }
        };
        let link = if margin_only {
            Link::Identity
        } else {
            self.info.link
        };
        predict_blocks(rows, out, nf, k, per_row, margins, |m, o| {
            link.apply_f64(m, o)
        })
    }
}

impl Model for LightGbmModel {
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
        self.classes
    }
}
