//! A model's deployment: which of its versions answer the requests that do not name one, and
//! how traffic is split between them (`kiln deploy`). It is data in the registry, so every
//! change is an event and every replica of `kiln serve` routes the same way.
//!
//! Weights are in basis points (hundredths of a percent) so that splits like 99.5/0.5 are
//! exact; they sum to [`FULL`]. A sticky deployment keeps each caller on one arm: the caller's
//! key (an entity key, or a header's value) is placed on a consistent-hash ring, so a caller
//! keeps their arm across restarts and replicas, and growing an arm's weight only moves
//! callers onto it.

use serde::{Deserialize, Serialize};

/// All of the traffic, in basis points.
pub const FULL: u32 = 10_000;

/// One version's share of the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arm {
    pub version: u32,
    /// Basis points of the traffic (1 to [`FULL`]).
    pub weight: u32,
}

/// What keeps a caller on one arm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Sticky {
    /// The entity keys of a predict-by-entity request (other requests: the
    /// `x-kiln-route-key` header, else a random arm).
    Entity,
    /// The value of a request header.
    Header { name: String },
}

impl std::fmt::Display for Sticky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sticky::Entity => f.write_str("entity"),
            Sticky::Header { name } => write!(f, "header:{name}"),
        }
    }
}

impl std::str::FromStr for Sticky {
    type Err = String;

    fn from_str(s: &str) -> Result<Sticky, String> {
        if s == "entity" {
            return Ok(Sticky::Entity);
        }
        match s.strip_prefix("header:") {
            Some(name)
                if !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)) =>
            {
                Ok(Sticky::Header {
                    name: name.to_ascii_lowercase(),
                })
            }
            Some(name) => Err(format!(
                "{name:?} is not a header name (letters, digits, '-' and '_')"
            )),
            None => Err(format!(
                "sticky must be \"entity\" or \"header:NAME\", not {s:?}"
            )),
        }
    }
}

/// A canary rollout: the canary's weight walks up `steps` against one baseline, each step held
/// for `bake_seconds`; `kiln serve` compares the two on live traffic, rolls back as soon as the
/// canary is worse by the gates, advances when a step has baked, and promotes the canary to
/// production after the last one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Canary {
    pub version: u32,
    pub baseline: u32,
    /// The canary's weight at each step, in basis points, rising, each below [`FULL`].
    pub steps: Vec<u32>,
    /// The current step (an index into `steps`).
    pub step: usize,
    pub bake_seconds: u64,
    pub gates: Gates,
}

/// When a canary is worse than its baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gates {
    /// Its error rate (server errors, timeouts, sheds, fallback answers) is higher by more
    /// than this (0.01: one percentage point).
    pub max_error_increase: f64,
    /// Its p99 latency is more than this many times the baseline's (plus 1 ms).
    pub max_latency_ratio: f64,
    /// The two-sample Kolmogorov-Smirnov distance between its predictions (each row's first
    /// output) and the baseline's is above this (0 to 1).
    pub max_prediction_shift: f64,
    /// Requests each version needs in a step before it is judged.
    pub min_requests: u64,
    /// Its quality on the labels posted during the step is lower by more than this:
    /// accuracy points for a classifier (0.02: two points), a relative RMSE increase for a
    /// regressor (0.02: 2% higher).
    #[serde(default = "default_max_accuracy_drop")]
    pub max_accuracy_drop: f64,
    /// Labels each version needs in a step before its quality is judged.
    #[serde(default = "default_min_labels")]
    pub min_labels: u64,
}

fn default_max_accuracy_drop() -> f64 {
    0.02
}

fn default_min_labels() -> u64 {
    50
}

impl Default for Gates {
    fn default() -> Gates {
        Gates {
            max_error_increase: 0.01,
            max_latency_ratio: 1.5,
            max_prediction_shift: 0.25,
            min_requests: 50,
            max_accuracy_drop: default_max_accuracy_drop(),
            min_labels: default_min_labels(),
        }
    }
}

impl Canary {
    /// The deployment of the current step.
    pub fn arms(&self) -> Vec<Arm> {
        let w = self.steps[self.step];
        vec![
            Arm {
                version: self.baseline,
                weight: FULL - w,
            },
            Arm {
                version: self.version,
                weight: w,
            },
        ]
    }

    fn check(&self, arms: &[Arm]) -> Result<(), String> {
        if self.version == self.baseline {
            return Err("a canary needs a baseline other than itself".into());
        }
        if self.steps.is_empty() || self.step >= self.steps.len() {
            return Err("a canary needs at least one step below 100%".into());
        }
        if self.steps.windows(2).any(|w| w[0] >= w[1])
            || self.steps.iter().any(|s| *s == 0 || *s >= FULL)
        {
            return Err(format!(
                "canary steps must rise between 0% and 100% (100% is the promotion), not {}",
                self.steps
                    .iter()
                    .map(|s| format!("{}%", percent(*s)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if self.bake_seconds == 0 {
            return Err("a canary step needs a bake time".into());
        }
        let g = &self.gates;
        if !(g.max_error_increase >= 0.0 && g.max_error_increase <= 1.0) {
            return Err("max error increase must be between 0 and 1".into());
        }
        if !(g.max_latency_ratio >= 1.0 && g.max_latency_ratio.is_finite()) {
            return Err("max latency ratio must be at least 1".into());
        }
        if !(g.max_prediction_shift > 0.0 && g.max_prediction_shift <= 1.0) {
            return Err("max prediction shift must be above 0 and at most 1".into());
        }
        if g.min_requests == 0 || g.min_labels == 0 {
            return Err("min requests and min labels must be at least 1".into());
        }
        if !(g.max_accuracy_drop >= 0.0 && g.max_accuracy_drop.is_finite()) {
            return Err("max accuracy drop must be at least 0".into());
        }
        if arms != self.arms() {
            return Err("a canary deployment's arms are its baseline and its step".into());
        }
        Ok(())
    }
}

/// How a model's traffic is routed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// The versions that answer, each with its weight; the weights sum to [`FULL`].
    pub arms: Vec<Arm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<Sticky>,
    /// Versions that get a copy of every routed request; their answers are discarded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shadow: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
}

impl Deployment {
    /// All traffic to one version.
    pub fn single(version: u32) -> Deployment {
        Deployment {
            arms: vec![Arm {
                version,
                weight: FULL,
            }],
            sticky: None,
            shadow: Vec::new(),
            canary: None,
        }
    }

    /// The weight of `version` (0 when it is not an arm).
    pub fn weight(&self, version: u32) -> u32 {
        self.arms
            .iter()
            .find(|a| a.version == version)
            .map_or(0, |a| a.weight)
    }

    /// The versions the deployment names (arms, then shadows).
    pub fn versions(&self) -> impl Iterator<Item = u32> + '_ {
        self.arms
            .iter()
            .map(|a| a.version)
            .chain(self.shadow.iter().copied())
    }

    /// Checks the shape of the deployment alone (the registry checks the versions).
    pub fn check(&self) -> Result<(), String> {
        if self.arms.is_empty() {
            return Err("a deployment needs at least one version".into());
        }
        let mut seen = Vec::new();
        for v in self.versions() {
            if seen.contains(&v) {
                return Err(format!("version {v} is named twice"));
            }
            seen.push(v);
        }
        if let Some(a) = self.arms.iter().find(|a| a.weight == 0) {
            return Err(format!(
                "version {} has weight 0; leave it out instead",
                a.version
            ));
        }
        let total: u64 = self.arms.iter().map(|a| u64::from(a.weight)).sum();
        if total != u64::from(FULL) {
            return Err(format!(
                "the weights add up to {}%, not 100%",
                percent(total.min(u64::from(u32::MAX)) as u32)
            ));
        }
        match &self.canary {
            Some(c) => c.check(&self.arms),
            None => Ok(()),
        }
    }

    /// `1=90,2=10` style, with percentages.
    pub fn split_text(&self) -> String {
        self.arms
            .iter()
            .map(|a| format!("v{}={}%", a.version, percent(a.weight)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Basis points as a percentage without needless decimals: 500 -> "5", 50 -> "0.5".
pub fn percent(bp: u32) -> String {
    let whole = bp / 100;
    match bp % 100 {
        0 => whole.to_string(),
        frac if frac % 10 == 0 => format!("{whole}.{}", frac / 10),
        frac => format!("{whole}.{frac:02}"),
    }
}

/// A percentage with at most two decimals ("5", "0.5", "12.25") as basis points.
pub fn parse_percent(s: &str) -> Result<u32, String> {
    let s = s.trim().trim_end_matches('%');
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !(frac.is_empty() || digits(frac) && frac.len() <= 2) {
        return Err(format!(
            "{s:?} is not a percentage (a number with at most two decimals)"
        ));
    }
    let whole: u32 = whole
        .parse()
        .ok()
        .filter(|w| *w <= 100)
        .ok_or_else(|| format!("{s}% is more than 100%"))?;
    let frac: u32 = format!("{frac:0<2}").parse().unwrap_or(0);
    let bp = whole * 100 + frac;
    if bp > FULL {
        return Err(format!("{s}% is more than 100%"));
    }
    Ok(bp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_read_and_print_in_basis_points() {
        for (text, bp) in [("5", 500), ("0.5", 50), ("12.25", 1225), ("100", 10_000)] {
            assert_eq!(parse_percent(text), Ok(bp));
            assert_eq!(percent(bp), text);
        }
        assert_eq!(parse_percent("7%"), Ok(700));
        for bad in ["", "x", "1.234", "101", "100.5", "-1", "1e2"] {
            assert!(parse_percent(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_deployment_names_each_version_once_and_splits_all_traffic() {
        let arms = |w: &[(u32, u32)]| Deployment {
            arms: w
                .iter()
                .map(|&(version, weight)| Arm { version, weight })
                .collect(),
            sticky: None,
            shadow: Vec::new(),
            canary: None,
        };
        assert_eq!(arms(&[(1, 9000), (2, 1000)]).check(), Ok(()));
        assert!(
            arms(&[(1, 9000), (2, 500)])
                .check()
                .expect_err("short")
                .contains("95%")
        );
        assert!(
            arms(&[(1, 5000), (1, 5000)])
                .check()
                .expect_err("twice")
                .contains("twice")
        );
        assert!(arms(&[]).check().is_err());
        let mut d = Deployment::single(1);
        d.shadow = vec![1];
        assert!(d.check().expect_err("shadow arm").contains("twice"));
        assert_eq!("entity".parse(), Ok(Sticky::Entity));
        assert_eq!(
            "header:X-User".parse(),
            Ok(Sticky::Header {
                name: "x-user".into()
            })
        );
        let canary = Canary {
            version: 2,
            baseline: 1,
            steps: vec![500, 2_500],
            step: 1,
            bake_seconds: 60,
            gates: Gates::default(),
        };
        let mut d = Deployment {
            arms: canary.arms(),
            canary: Some(canary.clone()),
            ..Deployment::single(1)
        };
        assert_eq!(arms(&[(1, 7_500), (2, 2_500)]).arms, d.arms);
        assert_eq!(d.check(), Ok(()));
        d.arms = arms(&[(1, 9_500), (2, 500)]).arms;
        assert!(d.check().expect_err("not its step").contains("its step"));
        let mut falling = canary.clone();
        falling.steps = vec![2_500, 500];
        d.arms = falling.arms();
        d.canary = Some(falling);
        assert!(d.check().expect_err("falling").contains("must rise"));
        assert!("header:".parse::<Sticky>().is_err());
        assert!("cookie".parse::<Sticky>().is_err());
    }
}
