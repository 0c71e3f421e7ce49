//! ai.onnx.ml `TreeEnsembleClassifier` / `TreeEnsembleRegressor` (sklearn trees and forests,
//! gradient boosting, and XGBoost / LightGBM through onnxmltools), on flat node arrays.
//!
//! The semantics follow onnxruntime, the reference runtime: a branch node sends `x` to its
//! true child when `x MODE threshold` holds, or when `x` is NaN and the node's
//! `missing_value_tracks_true` is set; leaf weights are summed per target/class in the
//! operator's precision (f32 unless the `_as_tensor` double attributes are used); base values
//! and the post transform come last, with onnxruntime's special cases for two classes.

use std::collections::HashMap;

use super::attrs::{Attrs, describe, unsupported};
use super::post::{Post, f32r, logistic};
use crate::{BLOCK, ModelError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
    Leaf,
}

#[derive(Debug)]
enum Kind {
    Regressor {
        average: bool,
    },
    Classifier {
        binary_case: bool,
        all_positive: bool,
    },
}

#[derive(Debug)]
pub(super) struct TreeEnsemble {
    // One entry per node, all trees in one array; children are indices into it.
    mode: Vec<Mode>,
    feature: Vec<u32>,
    threshold: Vec<f64>,
    /// Branch: the true child. Leaf: the start of its weights in `weights`.
    yes: Vec<u32>,
    /// Branch: the false child. Leaf: the end of its weights.
    no: Vec<u32>,
    missing_yes: Vec<bool>,
    roots: Vec<u32>,
    /// `(target or class, weight)` of every leaf, leaf by leaf.
    weights: Vec<(u32, f64)>,
    base: Vec<f64>,
    n_targets: usize,
    n_features: usize,
    kind: Kind,
    post: Post,
    /// Scores are accumulated in f32 (float attributes), as onnxruntime does.
    f32_sums: bool,
}

impl TreeEnsemble {
    pub(super) fn new(a: &Attrs, n_features: usize) -> Result<Self, ModelError> {
        let node = a.node();
        let classifier = node.op_type == "TreeEnsembleClassifier";
        let prefix = if classifier { "class" } else { "target" };
        let tree_ids = a.ints("nodes_treeids");
        let node_ids = a.ints("nodes_nodeids");
        let features = a.ints("nodes_featureids");
        let modes = a.strings("nodes_modes");
        let (values, doubles) = a.reals("nodes_values")?;
        let yes_ids = a.ints("nodes_truenodeids");
        let no_ids = a.ints("nodes_falsenodeids");
        let missing = a.ints("nodes_missing_value_tracks_true");
        let n = tree_ids.len();
        for (what, len) in [
            ("nodes_nodeids", node_ids.len()),
            ("nodes_featureids", features.len()),
            ("nodes_modes", modes.len()),
            ("nodes_values", values.len()),
            ("nodes_truenodeids", yes_ids.len()),
            ("nodes_falsenodeids", no_ids.len()),
        ] {
            if len != n {
                return Err(a.err(format!("{what} has {len} entries, nodes_treeids {n}")));
            }
        }
        if !missing.is_empty() && missing.len() != n {
            return Err(a.err("nodes_missing_value_tracks_true has the wrong length"));
        }
        let l_tree = a.ints(&format!("{prefix}_treeids"));
        let l_node = a.ints(&format!("{prefix}_nodeids"));
        let l_id = a.ints(&format!("{prefix}_ids"));
        let (l_w, _) = a.reals(&format!("{prefix}_weights"))?;
        if l_node.len() != l_tree.len() || l_id.len() != l_tree.len() || l_w.len() != l_tree.len() {
            return Err(a.err(format!("the {prefix}_* attributes differ in length")));
        }
        let (base, _) = a.reals("base_values")?;
        let post = a.post_transform()?;
        let (n_targets, kind) = if classifier {
            let k = a
                .ints("classlabels_int64s")
                .len()
                .max(a.strings("classlabels_strings").len());
            let mut classes: Vec<i64> = l_id.to_vec();
            classes.sort_unstable();
            classes.dedup();
            (
                k,
                Kind::Classifier {
                    binary_case: k == 2 && classes.len() == 1,
                    all_positive: l_w.iter().all(|w| *w >= 0.0),
                },
            )
        } else {
            let average = match a.string("aggregate_function").as_deref().unwrap_or("SUM") {
                "SUM" => false,
                "AVERAGE" => true,
                other => {
                    return Err(unsupported(format!(
                        "{}: aggregate_function {other:?} (SUM and AVERAGE are supported)",
                        describe(node)
                    )));
                }
            };
            let k = a.int("n_targets").unwrap_or(1).max(1) as usize;
            if k == 1 && post != Post::None {
                return Err(unsupported(format!(
                    "{}: post_transform {post:?} on a single-target regressor",
                    describe(node)
                )));
            }
            (k, Kind::Regressor { average })
        };
        if n_targets == 0 {
            return Err(a.err("no classes"));
        }
        if l_id.iter().any(|&c| c < 0 || c as usize >= n_targets) {
            return Err(a.err(format!("{prefix}_ids out of range 0..{n_targets}")));
        }
        if !base.is_empty() && base.len() != n_targets && !(classifier && base.len() == 1) {
            return Err(a.err(format!(
                "{} base_values for {n_targets} outputs",
                base.len()
            )));
        }

        // Flat index of every (tree, node); trees in order of first appearance.
        let mut index: HashMap<(i64, i64), u32> = HashMap::with_capacity(n);
        let mut tree_pos: HashMap<i64, usize> = HashMap::new();
        let mut tree_nodes: Vec<(i64, Vec<u32>)> = Vec::new();
        for i in 0..n {
            if index.insert((tree_ids[i], node_ids[i]), i as u32).is_some() {
                return Err(a.err(format!(
                    "node {} of tree {} appears twice",
                    node_ids[i], tree_ids[i]
                )));
            }
            let pos = *tree_pos.entry(tree_ids[i]).or_insert_with(|| {
                tree_nodes.push((tree_ids[i], Vec::new()));
                tree_nodes.len() - 1
            });
            tree_nodes[pos].1.push(i as u32);
        }
        let mut leaf_weights: HashMap<u32, Vec<(u32, f64)>> = HashMap::new();
        for j in 0..l_tree.len() {
            let &i = index.get(&(l_tree[j], l_node[j])).ok_or_else(|| {
                a.err(format!(
                    "a weight names node {} of tree {}, which does not exist",
                    l_node[j], l_tree[j]
                ))
            })?;
            leaf_weights
                .entry(i)
                .or_default()
                .push((l_id[j] as u32, l_w[j]));
        }
        let mut t = TreeEnsemble {
            mode: Vec::with_capacity(n),
            feature: Vec::with_capacity(n),
            threshold: values,
            yes: Vec::with_capacity(n),
            no: Vec::with_capacity(n),
            missing_yes: (0..n)
                .map(|i| missing.get(i).is_some_and(|&m| m != 0))
                .collect(),
            roots: Vec::new(),
            weights: Vec::with_capacity(l_w.len()),
            base,
            n_targets,
            n_features,
            kind,
            post,
            f32_sums: !doubles,
        };
        for i in 0..n {
            let mode = match modes[i].as_str() {
                "BRANCH_LEQ" => Mode::Leq,
                "BRANCH_LT" => Mode::Lt,
                "BRANCH_GTE" => Mode::Gte,
                "BRANCH_GT" => Mode::Gt,
                "BRANCH_EQ" => Mode::Eq,
                "BRANCH_NEQ" => Mode::Neq,
                "LEAF" => Mode::Leaf,
                other => return Err(a.err(format!("unknown node mode {other:?}"))),
            };
            t.mode.push(mode);
            if mode == Mode::Leaf {
                let start = t.weights.len() as u32;
                t.weights
                    .extend(leaf_weights.remove(&(i as u32)).unwrap_or_default());
                t.feature.push(0);
                t.yes.push(start);
                t.no.push(t.weights.len() as u32);
            } else {
                let f = features[i];
                if f < 0 || f as usize >= n_features {
                    return Err(a.err(format!(
                        "node {} uses feature {f} of {n_features}",
                        node_ids[i]
                    )));
                }
                t.feature.push(f as u32);
                for (child, v) in [(yes_ids[i], &mut t.yes), (no_ids[i], &mut t.no)] {
                    let &c = index.get(&(tree_ids[i], child)).ok_or_else(|| {
                        a.err(format!(
                            "node {} of tree {} points to missing node {child}",
                            node_ids[i], tree_ids[i]
                        ))
                    })?;
                    v.push(c);
                }
            }
        }
        // The root is the node no other node points to; each tree must be a tree (no node
        // reached twice), which also rules out cycles.
        let mut pointed = vec![false; n];
        let mut seen = vec![false; n];
        for (tree, nodes) in tree_nodes {
            for &i in &nodes {
                if t.mode[i as usize] != Mode::Leaf {
                    pointed[t.yes[i as usize] as usize] = true;
                    pointed[t.no[i as usize] as usize] = true;
                }
            }
            let roots: Vec<u32> = nodes
                .iter()
                .copied()
                .filter(|&i| !pointed[i as usize])
                .collect();
            let [root] = roots[..] else {
                return Err(a.err(format!("tree {tree} has {} roots", roots.len())));
            };
            let mut stack = vec![root];
            while let Some(i) = stack.pop() {
                if std::mem::replace(&mut seen[i as usize], true) {
                    return Err(a.err(format!("tree {tree} is not a tree (node reached twice)")));
                }
                if t.mode[i as usize] != Mode::Leaf {
                    stack.push(t.yes[i as usize]);
                    stack.push(t.no[i as usize]);
                }
            }
            t.roots.push(root);
        }
        Ok(t)
    }

    pub(super) fn n_trees(&self) -> usize {
        self.roots.len()
    }

    pub(super) fn width(&self) -> usize {
        self.n_targets
    }

    /// The leaf a row reaches in the tree rooted at `i`.
    #[inline]
    fn leaf(&self, mut i: usize, row: &[f64]) -> usize {
        loop {
            let t = self.threshold[i];
            let x = row[self.feature[i] as usize];
            let yes = match self.mode[i] {
                Mode::Leaf => return i,
                Mode::Leq => x <= t,
                Mode::Lt => x < t,
                Mode::Gte => x >= t,
                Mode::Gt => x > t,
                Mode::Eq => x == t,
                Mode::Neq => x != t,
            } || (x.is_nan() && self.missing_yes[i]);
            i = if yes { self.yes[i] } else { self.no[i] } as usize;
        }
    }

    pub(super) fn eval(&self, x: &[f64], n: usize, out: &mut Vec<f64>) {
        let k = self.n_targets;
        out.clear();
        out.resize(n * k, 0.0);
        let mut has = vec![false; BLOCK.min(n.max(1)) * k];
        for (rows, scores) in x
            .chunks(BLOCK * self.n_features)
            .zip(out.chunks_mut(BLOCK * k))
        {
            let has = &mut has[..scores.len()];
            has.fill(false);
            for &root in &self.roots {
                for (r, row) in rows.chunks(self.n_features).enumerate() {
                    let leaf = self.leaf(root as usize, row);
                    let (s, e) = (self.yes[leaf] as usize, self.no[leaf] as usize);
                    for &(c, w) in &self.weights[s..e] {
                        let j = r * k + c as usize;
                        scores[j] += w;
                        if self.f32_sums {
                            scores[j] = f32r(scores[j]);
                        }
                        has[j] = true;
                    }
                }
            }
            for (s, h) in scores.chunks_mut(k).zip(has.chunks(k)) {
                self.finish(s, h);
                s.iter_mut().for_each(|v| *v = f32r(*v));
            }
        }
    }

    /// Base values and post transform for one row (onnxruntime's `FinalizeScores`).
    fn finish(&self, s: &mut [f64], has: &[bool]) {
        match self.kind {
            Kind::Regressor { average } => {
                if average {
                    let n = self.roots.len() as f64;
                    s.iter_mut().for_each(|v| *v /= n);
                }
                for (v, b) in s.iter_mut().zip(&self.base) {
                    *v += b;
                }
                self.post.apply(s);
            }
            Kind::Classifier { .. } if s.len() != 2 => {
                for (v, b) in s.iter_mut().zip(&self.base) {
                    *v += b;
                }
                self.post.apply(s);
            }
            Kind::Classifier {
                binary_case,
                all_positive,
            } => {
                match self.base.len() {
                    2 if has[1] => {
                        // onnxruntime uses class 0's score and base_values[1] here.
                        s[1] = self.base[1] + s[0];
                        s[0] = -s[1];
                    }
                    2 => {
                        s[0] += self.base[0];
                        s[1] += self.base[1];
                    }
                    1 => s[0] += self.base[0],
                    _ => {}
                }
                if has[1] || self.base.len() == 2 {
                    self.post.apply(s);
                    return;
                }
                // One score for two classes: the second column is derived from it.
                let x = s[0];
                if binary_case && all_positive {
                    s[0] = 1.0 - x;
                    s[1] = x;
                } else if self.post == Post::Logistic {
                    s[0] = logistic(-x);
                    s[1] = logistic(x);
                } else if binary_case && x > 0.0 {
                    s[0] = -x;
                    s[1] = x;
                } else {
                    s[0] = x;
                    s[1] = -x;
                }
            }
        }
    }
}
