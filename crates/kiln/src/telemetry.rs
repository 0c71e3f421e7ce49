//! Logging and trace export for the binary: log lines to stderr (`KILN_LOG` filter) for every
//! command, and for `kiln serve`, when `[tracing]` names an OTLP collector, request spans
//! exported as OpenTelemetry traces.
//!
//! `kiln serve` sets its subscriber up itself, after reading `kiln.toml` (the exporter's gRPC
//! channel also needs the async runtime); every other command gets [`init_logs`] from `main`.
//! The exporter sits behind the SDK's batch span processor: a bounded queue drained by its own
//! thread, so a request never waits for the collector (a full queue drops spans), and
//! [`Telemetry::shutdown`] flushes it when the server stops.
//!
//! Log lines leave spans out: the request spans of `kiln_serve::trace` are for the exporter, so
//! with no exporter configured no layer enables them and they cost one atomic load each.
//! The provider is held here and handed to the layer, never installed as OpenTelemetry's
//! global; the W3C propagator is used directly by `kiln_serve::trace`.

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use serde::{Deserialize, Serialize};
use tracing::Subscriber;
use tracing_subscriber::filter::{EnvFilter, FilterExt, Targets, filter_fn};
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// The log filter when `KILN_LOG` is unset.
const DEFAULT_LOG: &str = "warn,kiln=info,kiln_serve=info";

/// The standard variable read when `tracing.otlp_endpoint` is unset.
pub const OTEL_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// `[tracing]`: OpenTelemetry traces of `kiln serve`'s requests, exported over OTLP/gRPC.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// The OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`. Unset: `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// if that is set, else no export; empty: no export, whatever the environment says.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// The `service.name` resource attribute of every span.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Share of new traces recorded, 0.0 to 1.0; a request with a `traceparent` follows its
    /// caller's sampling decision instead (parent-based).
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
}

fn default_service_name() -> String {
    "kiln".into()
}

fn default_sample_ratio() -> f64 {
    1.0
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            otlp_endpoint: None,
            service_name: default_service_name(),
            sample_ratio: default_sample_ratio(),
        }
    }
}

impl TracingConfig {
    /// Where spans go, if anywhere.
    pub fn endpoint(&self) -> Option<&str> {
        self.otlp_endpoint.as_deref().filter(|e| !e.is_empty())
    }

    /// Takes the endpoint from `OTEL_EXPORTER_OTLP_ENDPOINT` in `env` when the configuration
    /// leaves it unset; a bad value is reported into `errors`, naming the variable.
    pub fn apply_env(&mut self, env: &[(String, String)], errors: &mut Vec<String>) {
        if self.otlp_endpoint.is_some() {
            return;
        }
        let Some((_, v)) = env
            .iter()
            .find(|(k, v)| k == OTEL_ENDPOINT_ENV && !v.is_empty())
        else {
            return;
        };
        match check_endpoint(v) {
            Ok(()) => self.otlp_endpoint = Some(v.clone()),
            Err(e) => errors.push(format!(
                "environment variable {OTEL_ENDPOINT_ENV}={v:?}: {e}"
            )),
        }
    }

    /// Adds what is wrong with these settings to `errors`.
    pub fn validate(&self, errors: &mut Vec<String>) {
        if let Some(endpoint) = self.endpoint()
            && let Err(e) = check_endpoint(endpoint)
        {
            errors.push(format!("tracing.otlp_endpoint {endpoint:?}: {e}"));
        }
        if self.service_name.trim().is_empty() {
            errors.push("tracing.service_name: must not be empty".to_string());
        }
        let ratio = self.sample_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            errors.push(format!(
                "tracing.sample_ratio {ratio}: must be between 0.0 and 1.0"
            ));
        }
    }
}

/// Checks an OTLP endpoint: `http://HOST:PORT` (no TLS to the collector in this build).
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let uri: hyper::Uri = endpoint
        .parse()
        .map_err(|e| format!("not a URL ({e}); expected http://HOST:PORT"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(_)) => Ok(()),
        (Some("https"), _) => Err(
            "https is not supported (this build has no TLS for the OTLP exporter); send to a local collector or agent over http://HOST:PORT".into(),
        ),
        _ => Err("expected http://HOST:PORT, e.g. http://127.0.0.1:4317".into()),
    }
}

/// The log filter: `KILN_LOG`, else [`DEFAULT_LOG`].
fn log_filter() -> EnvFilter {
    EnvFilter::try_from_env("KILN_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG))
}

/// Log lines to stderr, filtered by `filter`; spans are left out (see the module docs).
fn log_layer<S>(filter: EnvFilter) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter.and(filter_fn(|meta| !meta.is_span())))
}

/// Logging only: every command but `kiln serve`.
pub fn init_logs() {
    tracing_subscriber::registry()
        .with(log_layer(log_filter()))
        .init();
}

/// What `kiln serve` must shut down: the trace pipeline, when there is one.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Logging, plus trace export when `config` names a collector. Call inside the runtime.
    pub fn init(config: &TracingConfig) -> anyhow::Result<Telemetry> {
        let Some(endpoint) = config.endpoint() else {
            init_logs();
            return Ok(Telemetry { provider: None });
        };
        let provider = provider(config, endpoint)?;
        let spans = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("kiln"))
            // Only the attributes Kiln sets: no source location, thread, target or busy/idle
            // timings (each costs work per span and says little in a trace view).
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(Targets::new().with_target("kiln_serve", tracing::Level::INFO));
        tracing_subscriber::registry()
            .with(log_layer(log_filter()))
            .with(spans)
            .init();
        tracing::info!(endpoint, "exporting traces over OTLP");
        Ok(Telemetry {
            provider: Some(provider),
        })
    }

    /// Flushes the spans still queued and stops the exporter (on a blocking thread: the flush
    /// waits for the collector, up to the exporter's timeout).
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "flushing traces at shutdown failed"),
            Err(e) => tracing::warn!(error = %e, "flushing traces at shutdown failed"),
        }
    }
}

/// The SDK pipeline: OTLP/gRPC exporter, batch span processor, parent-based ratio sampler.
fn provider(config: &TracingConfig, endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .with_context(|| {
            format!("tracing.otlp_endpoint {endpoint:?}: cannot set up the OTLP exporter")
        })?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sample_ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(config.service_name.clone())
                .build(),
        )
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn load(text: &str, env: &[(&str, &str)]) -> anyhow::Result<Config> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(crate::config::CONFIG_FILE);
        std::fs::write(&path, text).expect("write");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load(&path, &env)
    }

    #[test]
    fn tracing_is_off_by_default_and_layered_like_the_rest() {
        let c = load("project = \"p\"\n", &[]).expect("loads");
        assert_eq!(c.tracing.endpoint(), None);
        assert_eq!(c.tracing.service_name, "kiln");
        assert_eq!(c.tracing.sample_ratio, 1.0);

        let c = load(
            "[tracing]\notlp_endpoint = \"http://127.0.0.1:4317\"\nsample_ratio = 0.25\n",
            &[("KILN__TRACING__SERVICE_NAME", "fraud-scorer")],
        )
        .expect("loads");
        assert_eq!(c.tracing.endpoint(), Some("http://127.0.0.1:4317"));
        assert_eq!(c.tracing.sample_ratio, 0.25);
        assert_eq!(c.tracing.service_name, "fraud-scorer");
    }

    #[test]
    fn the_standard_variable_is_used_only_when_kiln_leaves_the_endpoint_unset() {
        let otel = [(OTEL_ENDPOINT_ENV, "http://collector:4317")];
        let c = load("", &otel).expect("loads");
        assert_eq!(c.tracing.endpoint(), Some("http://collector:4317"));
        let c = load("[tracing]\notlp_endpoint = \"http://mine:4317\"\n", &otel).expect("loads");
        assert_eq!(c.tracing.endpoint(), Some("http://mine:4317"));
        // Empty turns export off, whatever the environment says.
        let c = load("[tracing]\notlp_endpoint = \"\"\n", &otel).expect("loads");
        assert_eq!(c.tracing.endpoint(), None);
    }

    #[test]
    fn bad_settings_are_named_all_at_once() {
        let e = load(
            "[tracing]\notlp_endpoint = \"https://collector:4317\"\nsample_ratio = 1.5\nservice_name = \"\"\n",
            &[],
        )
        .expect_err("invalid")
        .to_string();
        assert!(
            e.contains("tracing.otlp_endpoint") && e.contains("https is not supported"),
            "{e}"
        );
        assert!(e.contains("tracing.sample_ratio 1.5"), "{e}");
        assert!(e.contains("tracing.service_name"), "{e}");
        let e = load("", &[(OTEL_ENDPOINT_ENV, "collector:4317")])
            .expect_err("invalid")
            .to_string();
        assert!(
            e.contains("environment variable OTEL_EXPORTER_OTLP_ENDPOINT"),
            "{e}"
        );
        let e = load("[tracing]\nendpoint = \"http://x:1\"\n", &[])
            .expect_err("unknown key")
            .to_string();
        assert!(e.contains("kiln.toml:2") && e.contains("endpoint"), "{e}");
    }

    #[test]
    fn with_logs_only_request_spans_are_disabled_and_log_events_are_not() {
        for filter in [DEFAULT_LOG, "trace"] {
            let subscriber = tracing_subscriber::registry().with(log_layer(EnvFilter::new(filter)));
            tracing::subscriber::with_default(subscriber, || {
                let span = tracing::info_span!(target: kiln_serve::trace::TARGET, "request");
                assert!(
                    span.is_disabled(),
                    "{filter}: a request span is built with no exporter"
                );
                assert!(
                    !kiln_serve::trace::enabled(),
                    "{filter}: the middleware is added"
                );
                assert!(tracing::enabled!(target: "kiln_serve", tracing::Level::INFO));
            });
        }
    }
}
