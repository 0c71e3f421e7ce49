//! Small value types the alert configuration is written in: durations as Kiln writes them
//! elsewhere (plus milliseconds, for retry back-off), secrets that never reach a log, webhook
//! URLs whose path (often a token, as in Slack's) is hidden when printed, and the severity and
//! direction enums.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as elsewhere in Kiln (`"0"`, `"30s"`, `"5m"`, `"1h30m"`, `"1d"`) or in
/// whole milliseconds (`"250ms"`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }

    pub const fn millis(ms: u64) -> Dur {
        Dur(Duration::from_millis(ms))
    }

    /// Parses `input`; the error says what is wrong and how to write it.
    pub fn parse(input: &str) -> Result<Dur, String> {
        let s = input.trim();
        if let Some(ms) = s.strip_suffix("ms") {
            return ms.trim().parse::<u64>().map(Dur::millis).map_err(|_| {
                format!("invalid duration {input:?}: milliseconds are written \"250ms\"")
            });
        }
        kiln_core::time::parse_duration(s)
            .map(Dur::secs)
            .map_err(|e| e.to_string())
    }

    /// In microseconds, the unit of Kiln's timestamps (saturating: a duration past 292,000 years
    /// is forever).
    pub fn micros(self) -> i64 {
        i64::try_from(self.0.as_micros()).unwrap_or(i64::MAX)
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.subsec_nanos() == 0 {
            f.write_str(&kiln_core::time::format_duration(self.0.as_secs()))
        } else {
            write!(f, "{}ms", self.0.as_millis())
        }
    }
}

impl fmt::Debug for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
        let text = String::deserialize(d)?;
        Dur::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A secret (a PagerDuty routing key, an `Authorization` header): printed and serialized as
/// `<redacted>`, so neither a debug log nor a dump of the effective configuration shows it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// A webhook URL. Chat and incident tools put the credential in the path (Slack's
/// `hooks.slack.com/services/T000/B000/XXXX`), so `Debug` and `Display` show only the scheme,
/// host and port.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WebhookUrl(String);

impl WebhookUrl {
    pub fn new(url: impl Into<String>) -> WebhookUrl {
        WebhookUrl(url.into())
    }

    /// The full URL, for the one place that sends to it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `scheme://host:port`, without path, query or user info.
    pub fn origin(&self) -> String {
        let (scheme, rest) = self.0.split_once("://").unwrap_or(("", &self.0));
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = authority.rsplit('@').next().unwrap_or(authority);
        format!("{scheme}://{host}")
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = self.origin();
        if origin.len() + 1 < self.0.len() {
            write!(f, "{origin}/…")
        } else {
            f.write_str(&origin)
        }
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// How bad it is; PagerDuty's four levels, which the generic body uses too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Error,
    #[default]
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// Which side of the threshold is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Fires when the value is above the threshold (latency, error rate, drift distance, age).
    #[default]
    Above,
    /// Fires when the value is below the threshold (a drift test's p-value).
    Below,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_kiln_syntax_and_milliseconds() {
        assert_eq!(Dur::parse("90s"), Ok(Dur::secs(90)));
        assert_eq!(Dur::parse("1h30m"), Ok(Dur::secs(5400)));
        assert_eq!(Dur::parse("250ms"), Ok(Dur::millis(250)));
        assert_eq!(Dur::parse("0"), Ok(Dur::secs(0)));
        for bad in ["", "5", "fast", "-1s", "1.5ms"] {
            assert!(Dur::parse(bad).is_err(), "{bad:?} should not parse");
        }
        for d in [
            Dur::secs(0),
            Dur::secs(3600),
            Dur::millis(1500),
            Dur::secs(90),
        ] {
            assert_eq!(Dur::parse(&d.to_string()), Ok(d));
        }
    }

    #[test]
    fn secrets_and_url_paths_stay_out_of_debug_and_serialization() {
        let key = Secret::new("R0UT1NGKEY");
        assert_eq!(format!("{key:?}"), "<redacted>");
        assert_eq!(
            serde_json::to_string(&key).expect("serializes"),
            "\"<redacted>\""
        );
        let url = WebhookUrl::new("https://user:pw@hooks.example.com:8443/services/T0/B0/XXXX?x=1");
        let shown = format!("{url:?} {url}");
        assert!(!shown.contains("XXXX") && !shown.contains("pw"), "{shown}");
        assert_eq!(url.origin(), "https://hooks.example.com:8443");
        assert_eq!(
            WebhookUrl::new("http://127.0.0.1:9").to_string(),
            "http://127.0.0.1:9"
        );
    }
}
