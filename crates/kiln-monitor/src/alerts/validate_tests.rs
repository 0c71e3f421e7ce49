//! Tests of `[alerts]` parsing and validation: the documented example parses, every problem
//! is reported at once with its rule and field, and secrets stay out of `Debug`.

use super::*;
use crate::alerts::types::Severity;

/// The `[alerts]` example of docs/alerts.md (its first TOML block), so the documentation
/// cannot drift from what parses.
fn documented_example() -> AlertsConfig {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/alerts.md");
    let doc = std::fs::read_to_string(path).expect("docs/alerts.md is readable");
    let start = doc.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = start + doc[start..].find("```").expect("the block ends");
    let table: toml::Table = toml::from_str(&doc[start..end]).expect("the example parses");
    table
        .get("alerts")
        .cloned()
        .expect("an [alerts] section")
        .try_into()
        .expect("the example is an AlertsConfig")
}

fn env(name: &str) -> Option<String> {
    (name == "KILN_PAGERDUTY_ROUTING_KEY").then(|| "R0UTING-KEY-123".to_string())
}

fn parse(text: &str) -> AlertsConfig {
    toml::from_str(text).expect("parses")
}

fn problems(config: &AlertsConfig) -> Vec<String> {
    match config.validate(&env) {
        Err(AlertError::InvalidConfig { problems }) => problems,
        other => panic!("expected invalid config, got {other:?}"),
    }
}

#[test]
fn the_documented_example_validates_with_defaults_filled_in() {
    let plan = documented_example().validate(&env).expect("valid");
    assert_eq!(plan.interval.as_secs(), 30);
    assert_eq!(plan.source, "kiln-prod-eu");
    assert_eq!(plan.rules.len(), 6);
    let pd = plan
        .webhooks
        .iter()
        .find(|w| w.name == "oncall")
        .expect("oncall");
    assert_eq!(pd.url.expose(), PAGERDUTY_EVENTS_URL);
    assert_eq!(
        pd.routing_key.as_ref().map(Secret::expose),
        Some("R0UTING-KEY-123")
    );
    let latency = &plan.rules[0];
    assert_eq!(latency.hold, Dur::secs(120));
    assert_eq!(latency.severity, Severity::Critical);
    assert_eq!(latency.notify, vec!["oncall", "team"]);
    let errors = &plan.rules[1];
    assert_eq!(errors.signal.window.map(|w| w.as_secs()), Some(300));
    assert_eq!(errors.resolve_threshold, 0.01);
    assert_eq!(errors.runbook, "docs/runbooks/error-rate.md");
    assert_eq!(
        errors.notify,
        vec!["oncall", "team"],
        "default: every webhook"
    );
    let auc = &plan.rules[4];
    assert_eq!(
        auc.signal,
        SignalQuery::windowed(
            SignalKind::Metric("auc".into()),
            std::time::Duration::from_secs(6 * 3600)
        )
    );
    assert!(plan.rules[5].notify.is_empty());
}

#[test]
fn secrets_never_show_in_debug_output() {
    let config = documented_example();
    let plan = config.validate(&env).expect("valid");
    let shown = format!("{config:?} {plan:?}");
    for secret in ["R0UTING-KEY-123", "s3cr3t-t0ken", "T0K3N"] {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }
}

#[test]
fn every_problem_is_reported_at_once_with_rule_and_field() {
    let text = r#"
interval = "0"

[webhooks.pd]
kind = "pagerduty"
routing_key_env = "UNSET_VAR"

[webhooks.hook]
kind = "generic"
max_attempts = 0

[[rules]]
name = "lat"
kind = "latency_p99"
threshold = 0.2
resolve_threshold = 0.3
features = ["x"]
notify = ["nobody"]

[[rules]]
name = "lat"
kind = "drift_share"
window = "5m"
threshold = 1.5

[[rules]]
kind = "error_rate"
labels = { model = "x" }
"#;
    let got = problems(&parse(text));
    let expect = [
        "alerts.interval: must be more than 0",
        "alerts.webhooks.hook.url: required for kind = \"generic\"",
        "alerts.webhooks.hook.max_attempts: must be at least 1",
        "alerts.webhooks.pd.routing_key_env: environment variable UNSET_VAR is not set",
        "alerts.rules[0] (\"lat\"): `features` does not apply to kind = \"latency_p99\"",
        "alerts.rules[0] (\"lat\").resolve_threshold: 0.3 is above threshold (0.2)",
        "alerts.rules[0] (\"lat\").notify: no webhook named \"nobody\" (defined: hook, pd;",
        "alerts.rules[1] (\"lat\"): `name` \"lat\" is already used by alerts.rules[0]",
        "alerts.rules[1] (\"lat\"): `window` does not apply to kind = \"drift_share\"",
        "alerts.rules[1] (\"lat\").threshold: 1.5 is out of range for drift_share",
        "alerts.rules[2]: `name` is required",
        "alerts.rules[2].threshold: required (a share from 0 to 1, e.g. 0.01)",
        "alerts.rules[2].labels: \"model\" is set from the alert's subject",
    ];
    for e in expect {
        assert!(
            got.iter().any(|p| p.starts_with(e)),
            "missing {e:?} in:\n{}",
            got.join("\n")
        );
    }
    assert_eq!(got.len(), expect.len(), "{}", got.join("\n"));
    let message = AlertError::InvalidConfig { problems: got }.to_string();
    assert!(message.contains("\n  - alerts.rules[2]"), "{message}");
}

#[test]
fn unknown_fields_and_kinds_are_refused_by_name() {
    let err = toml::from_str::<AlertsConfig>("[[rules]]\nname = \"x\"\nkind = \"p99\"\n")
        .expect_err("unknown kind");
    assert!(err.to_string().contains("latency_p99"), "{err}");
    let err = toml::from_str::<AlertsConfig>(
        "[[rules]]\nname = \"x\"\nkind = \"error_rate\"\nthreshhold = 0.1\n",
    )
    .expect_err("typo");
    assert!(err.to_string().contains("threshhold"), "{err}");
    let err = toml::from_str::<AlertsConfig>(
        "[[rules]]\nname = \"x\"\nkind = \"error_rate\"\nfor = \"5\"\n",
    )
    .expect_err("no unit");
    assert!(err.to_string().contains("needs a unit"), "{err}");
}

#[test]
fn direction_below_is_for_p_values_and_flips_the_resolve_check() {
    let mut config = AlertsConfig::default();
    let mut r = RuleConfig::new("p", RuleKind::FeatureDrift);
    r.direction = Direction::Below;
    r.threshold = Some(0.05);
    r.resolve_threshold = Some(0.01);
    config.rules.push(r);
    let mut r = RuleConfig::new("lat", RuleKind::LatencyP99);
    r.direction = Direction::Below;
    r.threshold = Some(0.1);
    config.rules.push(r);
    let got = problems(&config);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].contains("it must be higher or equal"), "{got:?}");
    assert!(
        got[1].contains("only for kind = \"feature_drift\""),
        "{got:?}"
    );
}
