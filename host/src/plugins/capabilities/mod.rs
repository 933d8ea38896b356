//! Host capabilities for resolvers. Each checks the plugin's grant first and answers
//! `denied` when it is missing; none ever traps the guest. Calls run on the resolver's
//! blocking thread and wait on the media runtime for their I/O.

mod arguments;
mod http;
mod kv;
pub mod option_table;
pub(crate) mod process;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use super::grants::{Grants, LimitSettings, ProgramPolicy};
use crate::egress::Egress;
use crate::store::StateStore;
use crate::telemetry::metrics::Metrics;

/// What capabilities need from the rest of the host.
#[derive(Clone)]
pub struct Services {
    pub runtime: tokio::runtime::Handle,
    pub store: StateStore,
    pub metrics: Arc<Metrics>,
    /// The guarded client plugins' requests go through.
    pub egress: Egress,
    /// Points the programs plugins run at the guard proxy.
    pub proxy_environment: Arc<Vec<(&'static str, String)>>,
    /// How a program runs when a grant does not say (`YT_DLP_PATH`, `YT_DLP_COOKIES`).
    pub program_defaults: Arc<BTreeMap<String, ProgramPolicy>>,
    /// Programs each plugin has running through `process.run`.
    pub process_runs: Arc<Mutex<HashMap<String, usize>>>,
}

impl Services {
    /// Services for loading plugins without serving (the CLI, benchmarks): the default
    /// egress checks and no proxy for programs.
    pub fn offline(runtime: tokio::runtime::Handle, store: StateStore) -> Result<Self, crate::egress::EgressError> {
        Ok(Self {
            runtime,
            store,
            metrics: Arc::new(Metrics::new()),
            egress: Egress::new(Default::default())?,
            proxy_environment: Arc::default(),
            program_defaults: Arc::default(),
            process_runs: Arc::default(),
        })
    }
}

/// One resolver call's view of what its plugin may do.
pub struct Capabilities {
    pub plugin_id: String,
    pub grants: Grants,
    pub limits: CapabilityLimits,
    pub services: Services,
    /// For `delegate`: the host, and how deep in delegation this call is.
    pub host: Weak<super::PluginHost>,
    pub depth: u8,
}

/// Bounds on capability use, defaults filled in from the operator's settings.
#[derive(Debug, Clone, Copy)]
pub struct CapabilityLimits {
    pub http_timeout: Duration,
    pub http_max_bytes: usize,
    pub process_timeout: Duration,
    pub process_max_output: usize,
    pub kv_max_value: usize,
}

impl From<LimitSettings> for CapabilityLimits {
    fn from(s: LimitSettings) -> Self {
        Self {
            http_timeout: Duration::from_millis(s.http_timeout_ms.unwrap_or(15_000)),
            http_max_bytes: s.http_max_bytes.unwrap_or(8 << 20),
            process_timeout: Duration::from_millis(s.process_timeout_ms.unwrap_or(60_000)),
            process_max_output: s.process_max_output_bytes.unwrap_or(16 << 20),
            kv_max_value: s.kv_max_value_bytes.unwrap_or(1 << 20),
        }
    }
}

/// The shorter of what the guest asked for and what it is allowed.
fn bounded(asked_ms: Option<u32>, limit: Duration) -> Duration {
    asked_ms.map_or(limit, |ms| Duration::from_millis(u64::from(ms)).min(limit))
}
