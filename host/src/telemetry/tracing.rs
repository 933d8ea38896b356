//! Logs to stdout (filtered by `RUST_LOG`) and, when an OTLP endpoint is configured, spans
//! exported over OTLP/gRPC with W3C trace context. `OTLP_ENDPOINT`, `OTLP_AUTH` and
//! `OTLP_ORGANIZATION` are the original's names; the standard `OTEL_*` variables (endpoint,
//! headers, service name, resource attributes) are honoured by the exporter and SDK.

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const DEFAULT_LOG: &str = "info,h2=off,hyper=off,tower=off,symphonia=warn,openmls=warn,davey=warn";
const EXPORT_FILTER: &str = "debug,h2=off,hyper=off,tower=off,tonic=off,symphonia=warn,openmls=warn,davey=warn";

/// Where spans go.
#[derive(Debug, Clone, Default)]
pub struct OtlpSettings {
    /// `OTLP_ENDPOINT` (a gRPC URL such as `http://collector:4317`).
    pub endpoint: Option<String>,
    /// `OTLP_AUTH`, sent as the `authorization` metadata.
    pub auth: Option<String>,
    /// `OTLP_ORGANIZATION`, sent as the `organization` metadata.
    pub organization: Option<String>,
    /// Whether a standard `OTEL_EXPORTER_OTLP_*ENDPOINT` variable is set.
    pub standard_endpoint: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("{0} is not a valid header value")]
    Header(&'static str),
    #[error("OTLP exporter: {0}")]
    Exporter(String),
}

/// Flushes and stops span export when dropped.
pub struct TracingGuard(Option<SdkTracerProvider>);

impl Drop for TracingGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            let _ = provider.shutdown();
        }
    }
}

fn metadata(settings: &OtlpSettings) -> Result<MetadataMap, TelemetryError> {
    let mut headers = axum::http::HeaderMap::new();
    for (name, value, var) in
        [("authorization", &settings.auth, "OTLP_AUTH"), ("organization", &settings.organization, "OTLP_ORGANIZATION")]
    {
        if let Some(v) = value {
            let v = v.parse().map_err(|_| TelemetryError::Header(var))?;
            headers.insert(name, v);
        }
    }
    Ok(MetadataMap::from_headers(headers))
}

fn provider(settings: &OtlpSettings) -> Result<Option<SdkTracerProvider>, TelemetryError> {
    if settings.endpoint.is_none() && !settings.standard_endpoint {
        return Ok(None);
    }
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic().with_metadata(metadata(settings)?);
    if let Some(endpoint) = &settings.endpoint {
        builder = builder.with_endpoint(endpoint.clone());
    }
    let exporter = builder.build().map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let resource = Resource::builder()
        .with_service_name("mesastream")
        .with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(Some(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build()))
}

/// Installs logging and, if configured, span export. Call once, inside the tokio runtime.
pub fn init(settings: &OtlpSettings) -> Result<TracingGuard, TelemetryError> {
    let provider = provider(settings)?;
    let fmt = tracing_subscriber::fmt::layer()
        .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG)));
    let otel = provider.as_ref().map(|p| {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        tracing_opentelemetry::layer().with_tracer(p.tracer("mesastream")).with_filter(EnvFilter::new(EXPORT_FILTER))
    });
    tracing_subscriber::registry().with(fmt).with(otel).init();
    Ok(TracingGuard(provider))
}

/// Reads W3C trace context from request headers.
struct Headers<'a>(&'a axum::http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The span of one HTTP request, a child of the caller's trace when it sent `traceparent`.
pub fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| request.uri().path().to_string());
    let span = tracing::info_span!("http request", http.request.method = %request.method(), http.route = %route);
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(request.headers())));
    let _ = span.set_parent(parent);
    span
}

use tracing_subscriber::Layer as _;
