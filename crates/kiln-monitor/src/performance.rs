//! Model performance from labelled predictions: the numbers a data scientist checks first,
//! computed the way scikit-learn computes them (the fixtures in `tests/fixtures/performance/`
//! come from scikit-learn), so a dashboard in Kiln and a notebook agree.
//!
//! Binary classifiers (one output, the positive-class probability): accuracy, precision, recall
//! and F1 at a threshold, ROC AUC (ties count half, as the trapezoid rule does), log loss
//! (probabilities clipped to `[eps, 1 - eps]`), Brier score, a reliability curve with
//! expected calibration error, and the business counts (predicted- and label-positive rates).
//! Multiclass (one probability per class): accuracy of the arg-max, macro precision and recall,
//! log loss. Regression: MAE, RMSE, mean prediction and mean label.

use serde::Serialize;

/// What kind of predictions a model makes, which decides the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// One output: the probability of the positive class (label 1).
    Binary,
    /// One probability per class (labels are class indices `0..k`).
    Multiclass { classes: usize },
    /// One output: a number.
    Regression,
}

impl Task {
    /// The task of a model from its objective (as the model file names it) and its outputs per
    /// row: XGBoost `binary:logistic`, LightGBM `binary`, `multi:softprob`, `multiclass`, ...
    pub fn infer(objective: &str, n_outputs: usize) -> Task {
        let o = objective.to_ascii_lowercase();
        if n_outputs >= 2 {
            Task::Multiclass { classes: n_outputs }
        } else if o.contains("binary") || o.contains("logistic") || o.contains("classif") {
            Task::Binary
        } else {
            Task::Regression
        }
    }
}

/// The probability threshold of a positive prediction, unless configured otherwise.
pub const DEFAULT_THRESHOLD: f64 = 0.5;
/// Bins of the reliability curve.
pub const CALIBRATION_BINS: usize = 10;

/// One bin of the reliability curve (only bins that hold predictions are listed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalibrationBin {
    /// The bin's range of predicted probability.
    pub lower: f64,
    pub upper: f64,
    pub count: usize,
    /// Mean predicted probability in the bin.
    pub mean_predicted: f64,
    /// Share of positive labels in the bin.
    pub fraction_positive: f64,
}

/// Performance over a set of labelled predictions; a field is absent where it is undefined
/// (e.g. AUC with one class only).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Performance {
    pub count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recall: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f1: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auc: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brier: Option<f64>,
    /// Expected calibration error: the count-weighted mean gap between predicted probability
    /// and observed frequency over the calibration bins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration_error: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub calibration: Vec<CalibrationBin>,
    /// Share of predictions at or above the threshold (binary).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted_positive_rate: Option<f64>,
    /// Share of positive labels (binary).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_positive_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_prediction: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_label: Option<f64>,
}

/// Performance of `outputs` (row-major, the task's outputs per row) against `labels`.
pub fn compute(task: Task, outputs: &[f64], labels: &[f64], threshold: f64) -> Performance {
    match task {
        Task::Binary => binary(outputs, labels, threshold),
        Task::Multiclass { classes } => multiclass(outputs, labels, classes),
        Task::Regression => regression(outputs, labels),
    }
}

fn ratio(num: usize, den: usize) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// scikit-learn's clipping of probabilities in `log_loss` (machine epsilon of f64).
fn clip(p: f64) -> f64 {
    p.clamp(f64::EPSILON, 1.0 - f64::EPSILON)
}

fn binary(p: &[f64], y: &[f64], threshold: f64) -> Performance {
    let n = p.len().min(y.len());
    let (p, y) = (&p[..n], &y[..n]);
    let positive = |label: f64| label >= 0.5;
    let (mut tp, mut fp, mut tn, mut f_n) = (0usize, 0usize, 0usize, 0usize);
    let (mut loss, mut brier) = (0.0, 0.0);
    for (&pi, &yi) in p.iter().zip(y) {
        match (pi >= threshold, positive(yi)) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, false) => tn += 1,
            (false, true) => f_n += 1,
        }
        let q = clip(pi);
        loss -= if positive(yi) { q.ln() } else { (1.0 - q).ln() };
        let target = if positive(yi) { 1.0 } else { 0.0 };
        brier += (pi - target).powi(2);
    }
    let precision = ratio(tp, tp + fp);
    let recall = ratio(tp, tp + f_n);
    let f1 = match (precision, recall) {
        (Some(pr), Some(re)) if pr + re > 0.0 => Some(2.0 * pr * re / (pr + re)),
        (Some(_), Some(_)) => Some(0.0),
        _ => None,
    };
    let calibration = calibration(p, y);
    let calibration_error = (n > 0).then(|| {
        calibration
            .iter()
            .map(|b| b.count as f64 * (b.mean_predicted - b.fraction_positive).abs())
            .sum::<f64>()
            / n as f64
    });
    Performance {
        count: n,
        accuracy: ratio(tp + tn, n),
        precision,
        recall,
        f1,
        auc: auc(p, y),
        log_loss: (n > 0).then(|| loss / n as f64),
        brier: (n > 0).then(|| brier / n as f64),
        calibration_error,
        calibration,
        predicted_positive_rate: ratio(tp + fp, n),
        label_positive_rate: ratio(tp + f_n, n),
        ..Performance::default()
    }
}

/// ROC AUC as the Mann-Whitney statistic with average ranks for ties (equal to the area under
/// the trapezoid ROC curve); undefined with one class only.
pub fn auc(p: &[f64], y: &[f64]) -> Option<f64> {
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let positives = y.iter().filter(|&&v| v >= 0.5).count();
    let negatives = p.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && p[order[j + 1]] == p[order[i]] {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their average.
        let average = (i + j + 2) as f64 / 2.0;
        rank_sum += average * order[i..=j].iter().filter(|&&k| y[k] >= 0.5).count() as f64;
        i = j + 1;
    }
    let pos = positives as f64;
    Some((rank_sum - pos * (pos + 1.0) / 2.0) / (pos * negatives as f64))
}

/// The reliability curve over [`CALIBRATION_BINS`] equal-width bins; a probability on an
/// inner edge belongs to the bin below it (scikit-learn's `calibration_curve`).
fn calibration(p: &[f64], y: &[f64]) -> Vec<CalibrationBin> {
    let k = CALIBRATION_BINS;
    let mut count = vec![0usize; k];
    let mut sum_p = vec![0.0; k];
    let mut sum_y = vec![0.0; k];
    for (&pi, &yi) in p.iter().zip(y) {
        let inner_edges_below = (1..k).filter(|&e| (e as f64 / k as f64) < pi).count();
        count[inner_edges_below] += 1;
        sum_p[inner_edges_below] += pi;
        sum_y[inner_edges_below] += if yi >= 0.5 { 1.0 } else { 0.0 };
    }
    (0..k)
        .filter(|&b| count[b] > 0)
        .map(|b| CalibrationBin {
            lower: b as f64 / k as f64,
            upper: (b + 1) as f64 / k as f64,
            count: count[b],
            mean_predicted: sum_p[b] / count[b] as f64,
            fraction_positive: sum_y[b] / count[b] as f64,
        })
        .collect()
}

fn multiclass(p: &[f64], y: &[f64], k: usize) -> Performance {
    let k = k.max(1);
    let n = (p.len() / k).min(y.len());
    let mut correct = 0;
    let mut loss = 0.0;
    let mut tp = vec![0usize; k];
    let mut predicted = vec![0usize; k];
    let mut actual = vec![0usize; k];
    for (row, &label) in p.chunks_exact(k).zip(y).take(n) {
        let guess = row
            .iter()
            .enumerate()
            .fold(0, |best, (i, &v)| if v > row[best] { i } else { best });
        let truth = label.round().clamp(0.0, (k - 1) as f64) as usize;
        predicted[guess] += 1;
        actual[truth] += 1;
        if guess == truth {
            correct += 1;
            tp[truth] += 1;
        }
        // scikit-learn clips, then renormalises each row.
        let total: f64 = row.iter().map(|&v| clip(v)).sum();
        loss -= (clip(row[truth]) / total).ln();
    }
    // Macro averages over the classes that appear in the labels or the predictions.
    let present: Vec<usize> = (0..k)
        .filter(|&c| predicted[c] > 0 || actual[c] > 0)
        .collect();
    let macro_of = |den: &[usize]| {
        (!present.is_empty()).then(|| {
            present
                .iter()
                .map(|&c| ratio(tp[c], den[c]).unwrap_or(0.0))
                .sum::<f64>()
                / present.len() as f64
        })
    };
    Performance {
        count: n,
        accuracy: ratio(correct, n),
        precision: macro_of(&predicted),
        recall: macro_of(&actual),
        log_loss: (n > 0).then(|| loss / n as f64),
        ..Performance::default()
    }
}

fn regression(p: &[f64], y: &[f64]) -> Performance {
    let n = p.len().min(y.len());
    if n == 0 {
        return Performance::default();
    }
    let (mut abs, mut sq, mut sp, mut sy) = (0.0, 0.0, 0.0, 0.0);
    for (&pi, &yi) in p.iter().zip(y) {
        abs += (pi - yi).abs();
        sq += (pi - yi).powi(2);
        sp += pi;
        sy += yi;
    }
    let n_f = n as f64;
    Performance {
        count: n,
        mae: Some(abs / n_f),
        rmse: Some((sq / n_f).sqrt()),
        mean_prediction: Some(sp / n_f),
        mean_label: Some(sy / n_f),
        ..Performance::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AUC by definition: the share of (positive, negative) pairs ranked right, ties half.
    fn auc_brute(p: &[f64], y: &[f64]) -> Option<f64> {
        let (mut good, mut pairs) = (0.0, 0usize);
        for i in (0..p.len()).filter(|&i| y[i] >= 0.5) {
            for j in (0..p.len()).filter(|&j| y[j] < 0.5) {
                pairs += 1;
                good += if p[i] > p[j] {
                    1.0
                } else if p[i] == p[j] {
                    0.5
                } else {
                    0.0
                };
            }
        }
        (pairs > 0).then(|| good / pairs as f64)
    }

    #[test]
    fn auc_matches_the_pairwise_definition_with_ties() {
        // A small deterministic generator; coarse probabilities make many ties.
        let mut state = 7u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as f64 / (1u64 << 31) as f64
        };
        for n in [1, 2, 5, 30, 200] {
            let p: Vec<f64> = (0..n).map(|_| (next() * 10.0).floor() / 10.0).collect();
            let y: Vec<f64> = p
                .iter()
                .map(|&pi| if next() < pi { 1.0 } else { 0.0 })
                .collect();
            match (auc(&p, &y), auc_brute(&p, &y)) {
                (Some(a), Some(b)) => assert!((a - b).abs() < 1e-12, "n={n}: {a} vs {b}"),
                (a, b) => assert_eq!(a, b, "n={n}"),
            }
        }
    }

    #[test]
    fn binary_counts_and_rates() {
        let p = [0.9, 0.8, 0.3, 0.6, 0.1];
        let y = [1.0, 0.0, 0.0, 1.0, 1.0];
        let m = compute(Task::Binary, &p, &y, 0.5);
        assert_eq!(m.count, 5);
        assert_eq!(m.accuracy, Some(3.0 / 5.0));
        assert_eq!(m.precision, Some(2.0 / 3.0));
        assert_eq!(m.recall, Some(2.0 / 3.0));
        assert_eq!(m.predicted_positive_rate, Some(3.0 / 5.0));
        assert_eq!(m.label_positive_rate, Some(3.0 / 5.0));
        let bins: usize = m.calibration.iter().map(|b| b.count).sum();
        assert_eq!(bins, 5);
    }

    #[test]
    fn undefined_metrics_are_absent_not_zero() {
        let m = compute(Task::Binary, &[0.2, 0.4], &[0.0, 0.0], 0.5);
        assert_eq!(m.auc, None);
        assert_eq!(m.precision, None, "nothing predicted positive");
        assert_eq!(compute(Task::Regression, &[], &[], 0.5).count, 0);
    }

    #[test]
    fn tasks_from_objectives() {
        assert_eq!(Task::infer("binary:logistic", 1), Task::Binary);
        assert_eq!(Task::infer("binary", 1), Task::Binary);
        assert_eq!(Task::infer("reg:squarederror", 1), Task::Regression);
        assert_eq!(
            Task::infer("multi:softprob", 3),
            Task::Multiclass { classes: 3 }
        );
    }
}
