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

/// How a model's traffic is routed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// The versions that answer, each with its weight; the weights sum to [`FULL`].
    pub arms: Vec<Arm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<Sticky>,
    /// Versions that get a copy of every routed request; their answers are discarded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shadow: Vec<u32>,
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
        Ok(())
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
        assert!("header:".parse::<Sticky>().is_err());
        assert!("cookie".parse::<Sticky>().is_err());
    }
}
