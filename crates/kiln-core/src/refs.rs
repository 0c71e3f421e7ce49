//! `view:feature` references, as feature services and requests name features.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::CoreError;

/// A reference to one feature of one feature view, written `view:feature` (Feast's form).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FeatureRef {
    pub view: String,
    pub feature: String,
}

impl FeatureRef {
    pub fn new(view: impl Into<String>, feature: impl Into<String>) -> Self {
        FeatureRef {
            view: view.into(),
            feature: feature.into(),
        }
    }

    /// The output column name: `feature`, or `view__feature` with full feature names (Feast's
    /// naming).
    pub fn column_name(&self, full_feature_names: bool) -> String {
        if full_feature_names {
            format!("{}__{}", self.view, self.feature)
        } else {
            self.feature.clone()
        }
    }
}

impl fmt::Display for FeatureRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.view, self.feature)
    }
}

impl FromStr for FeatureRef {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| CoreError::InvalidFeatureRef {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        let (view, feature) = s.split_once(':').ok_or_else(|| err("missing ':'"))?;
        if view.trim().is_empty() {
            return Err(err("the view name is empty"));
        }
        if feature.trim().is_empty() {
            return Err(err("the feature name is empty"));
        }
        if feature.contains(':') {
            return Err(err("more than one ':'"));
        }
        Ok(FeatureRef::new(view.trim(), feature.trim()))
    }
}

impl Serialize for FeatureRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FeatureRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_name() {
        let r: FeatureRef = "driver_hourly_stats:conv_rate".parse().expect("valid");
        assert_eq!(r.view, "driver_hourly_stats");
        assert_eq!(r.column_name(false), "conv_rate");
        assert_eq!(r.column_name(true), "driver_hourly_stats__conv_rate");
        assert_eq!(r.to_string(), "driver_hourly_stats:conv_rate");
        for bad in ["conv_rate", ":x", "v:", "a:b:c"] {
            assert!(bad.parse::<FeatureRef>().is_err(), "{bad}");
        }
    }
}
