//! What the host reports about itself: Prometheus metrics (`/metrics`), logs/traces, and the
//! process figures protocols show their clients.

pub mod metrics;
pub mod process;
pub mod tracing;

pub use metrics::Metrics;
