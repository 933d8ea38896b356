//! What the host reports about itself: Prometheus metrics (`/metrics`) and logs/traces.

pub mod metrics;
pub mod tracing;

pub use metrics::Metrics;
