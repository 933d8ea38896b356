//! Resolver components: a fresh instance per query, called on a blocking thread, tried in
//! priority order among those whose patterns match until one claims the query.

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use super::capabilities::{Capabilities, CapabilityLimits};
use super::engine::{self, PluginState};
use super::{LoadedPlugin, PluginHost};
use crate::telemetry::metrics::PluginCallLabels;

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        world: "resolver",
        path: "../wit",
        with: {
            "mesastream:plugin/log@0.1.0": crate::plugins::filter::bindings::mesastream::plugin0_1_0::log,
            "mesastream:plugin/settings@0.2.0": crate::plugins::filter::bindings::mesastream::plugin0_2_0::settings,
        },
    });
}

pub(super) use bindings::ResolverPre;
use bindings::mesastream::plugin0_1_0::types::{self as wit, ResolveError};

/// Delegation deeper than this is refused, so plugins cannot delegate in a circle forever.
const MAX_DEPTH: u8 = 2;

pub(super) fn add_to_linker(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    bindings::Resolver::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
}

/// Where a track's media comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Locator {
    Http { url: String, headers: Vec<(String, String)> },
    Process { plugin: String, program: String, args: Vec<String> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedTrack {
    pub identifier: String,
    pub title: String,
    pub author: String,
    pub duration_ms: Option<u64>,
    pub artwork_url: Option<String>,
    pub is_stream: bool,
    pub source_name: String,
    pub uri: String,
    pub locator: Option<Locator>,
    /// The plugin that produced it.
    pub plugin: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Resolved {
    Track(Box<ResolvedTrack>),
    Playlist { name: String, tracks: Vec<ResolvedTrack>, selected: Option<u32> },
    Search(Vec<ResolvedTrack>),
    Empty,
}

impl Resolved {
    /// Every track, in order.
    pub fn into_tracks(self) -> Vec<ResolvedTrack> {
        match self {
            Self::Track(t) => vec![*t],
            Self::Playlist { tracks, .. } | Self::Search(tracks) => tracks,
            Self::Empty => Vec::new(),
        }
    }
}

/// Why nothing could be resolved; maps onto the contract's errors.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResolveFailure {
    #[error("no source supports this URL")]
    Unsupported,
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Parse(String),
    #[error("{0}")]
    Busy(String),
    /// The plugin trapped, ran out of time or memory.
    #[error("resolver {plugin} failed: {message}")]
    Failed { plugin: String, message: String },
}

impl PluginHost {
    /// Whether some resolver's patterns match `query`.
    pub fn claims(&self, query: &str) -> bool {
        self.plugins().iter().any(|p| p.resolver_pre().is_some() && (p.matches(query) || p.falls_back_on(query)))
    }

    /// Resolves `query` with the matching resolvers, skipping `exclude`. Blocking.
    pub fn resolve(
        self: &Arc<Self>,
        query: &str,
        guild_id: Option<String>,
        exclude: Option<&str>,
        depth: u8,
    ) -> Result<Resolved, ResolveFailure> {
        let eligible: Vec<Arc<LoadedPlugin>> =
            self.plugins().into_iter().filter(|p| p.resolver_pre().is_some() && Some(p.id()) != exclude).collect();
        let by_priority = |a: &Arc<LoadedPlugin>, b: &Arc<LoadedPlugin>| {
            b.manifest.priority.cmp(&a.manifest.priority).then_with(|| a.id().cmp(b.id()))
        };
        // First the resolvers whose patterns match, then those that take what they declined.
        let mut matching: Vec<_> = eligible.iter().filter(|p| p.matches(query)).cloned().collect();
        matching.sort_by(by_priority);
        let mut fallbacks: Vec<_> =
            eligible.iter().filter(|p| !p.matches(query) && p.falls_back_on(query)).cloned().collect();
        fallbacks.sort_by(by_priority);
        for plugin in matching.into_iter().chain(fallbacks) {
            match self.call_resolver(&plugin, query, guild_id.clone(), depth) {
                Err(ResolveFailure::Unsupported) => continue,
                other => return other,
            }
        }
        Err(ResolveFailure::Unsupported)
    }

    fn call_resolver(
        self: &Arc<Self>,
        plugin: &Arc<LoadedPlugin>,
        query: &str,
        guild_id: Option<String>,
        depth: u8,
    ) -> Result<Resolved, ResolveFailure> {
        let pre = plugin.resolver_pre().ok_or(ResolveFailure::Unsupported)?;
        let caps = Capabilities {
            plugin_id: plugin.id().to_string(),
            grants: plugin.grants.clone(),
            limits: CapabilityLimits::from(plugin.grants.limits),
            services: self.services.clone(),
            host: Arc::downgrade(self),
            depth,
        };
        let mut store = engine::new_store(
            pre.engine(),
            plugin.id_arc(),
            plugin.limits,
            plugin.grants.log,
            Some(Arc::new(caps)),
            plugin.settings.clone(),
        );
        let outcome = pre.instantiate(&mut store).and_then(|b| {
            engine::begin_call(&mut store);
            b.mesastream_plugin0_1_0_resolve().call_resolve(&mut store, query, &wit::Context { guild_id })
        });
        let label = |outcome: &str| PluginCallLabels { plugin: plugin.id().to_string(), outcome: outcome.to_string() };
        let metrics = &self.services.metrics;
        match outcome {
            Err(e) => {
                let (kind, message) = engine::describe_call(&e, store.data());
                metrics.plugin_calls.get_or_create(&label(kind.as_str())).inc();
                tracing::warn!(plugin = plugin.id(), query, %message, "resolver failed");
                Err(ResolveFailure::Failed { plugin: plugin.id().to_string(), message })
            }
            Ok(Err(e)) => {
                metrics.plugin_calls.get_or_create(&label("error")).inc();
                Err(from_wit_error(e))
            }
            Ok(Ok(resolution)) => {
                metrics.plugin_calls.get_or_create(&label("ok")).inc();
                Ok(from_wit(resolution, plugin.id()))
            }
        }
    }
}

fn from_wit_error(e: ResolveError) -> ResolveFailure {
    match e {
        ResolveError::Unsupported => ResolveFailure::Unsupported,
        ResolveError::Unavailable(m) => ResolveFailure::Unavailable(m),
        ResolveError::Parse(m) => ResolveFailure::Parse(m),
        ResolveError::Busy(m) => ResolveFailure::Busy(m),
    }
}

fn to_wit_error(e: ResolveFailure) -> ResolveError {
    match e {
        ResolveFailure::Unsupported => ResolveError::Unsupported,
        ResolveFailure::Unavailable(m) => ResolveError::Unavailable(m),
        ResolveFailure::Parse(m) => ResolveError::Parse(m),
        ResolveFailure::Busy(m) => ResolveError::Busy(m),
        f @ ResolveFailure::Failed { .. } => ResolveError::Busy(f.to_string()),
    }
}

fn track_from_wit(t: wit::Track, plugin: &str) -> ResolvedTrack {
    let locator = t.locator.map(|l| match l {
        wit::StreamLocator::Http(h) => Locator::Http { url: h.url, headers: h.headers },
        wit::StreamLocator::Process(p) => {
            Locator::Process { plugin: plugin.to_string(), program: p.program, args: p.args }
        }
    });
    ResolvedTrack {
        identifier: t.identifier,
        title: t.title,
        author: t.author,
        duration_ms: t.duration_ms,
        artwork_url: t.artwork_url,
        is_stream: t.is_stream,
        source_name: t.source_name,
        uri: t.uri,
        locator,
        plugin: plugin.to_string(),
    }
}

fn track_to_wit(t: ResolvedTrack) -> wit::Track {
    wit::Track {
        identifier: t.identifier,
        title: t.title,
        author: t.author,
        duration_ms: t.duration_ms,
        artwork_url: t.artwork_url,
        is_stream: t.is_stream,
        source_name: t.source_name,
        uri: t.uri,
        locator: t.locator.map(|l| match l {
            Locator::Http { url, headers } => wit::StreamLocator::Http(wit::HttpStream { url, headers }),
            Locator::Process { program, args, .. } => wit::StreamLocator::Process(wit::ProcessStream { program, args }),
        }),
    }
}

fn from_wit(r: wit::Resolution, plugin: &str) -> Resolved {
    match r {
        wit::Resolution::Track(t) => Resolved::Track(Box::new(track_from_wit(t, plugin))),
        wit::Resolution::Playlist(p) => Resolved::Playlist {
            name: p.name,
            tracks: p.tracks.into_iter().map(|t| track_from_wit(t, plugin)).collect(),
            selected: p.selected,
        },
        wit::Resolution::Search(ts) => Resolved::Search(ts.into_iter().map(|t| track_from_wit(t, plugin)).collect()),
        wit::Resolution::Empty => Resolved::Empty,
    }
}

fn to_wit(r: Resolved) -> wit::Resolution {
    match r {
        Resolved::Track(t) => wit::Resolution::Track(track_to_wit(*t)),
        Resolved::Playlist { name, tracks, selected } => wit::Resolution::Playlist(wit::Playlist {
            name,
            tracks: tracks.into_iter().map(track_to_wit).collect(),
            selected,
        }),
        Resolved::Search(ts) => wit::Resolution::Search(ts.into_iter().map(track_to_wit).collect()),
        Resolved::Empty => wit::Resolution::Empty,
    }
}

impl bindings::mesastream::plugin0_1_0::types::Host for PluginState {}

impl bindings::mesastream::plugin0_1_0::delegate::Host for PluginState {
    fn resolve(&mut self, query: String, context: wit::Context) -> Result<wit::Resolution, ResolveError> {
        let Some(caps) = self.caps.clone() else { return Err(ResolveError::Busy("not available to filters".into())) };
        if !caps.grants.delegate {
            return Err(ResolveError::Busy("the delegate capability is not granted".into()));
        }
        if caps.depth >= MAX_DEPTH {
            return Err(ResolveError::Busy("delegation nested too deep".into()));
        }
        let Some(host) = caps.host.upgrade() else {
            return Err(ResolveError::Busy("the host is shutting down".into()));
        };
        self.in_host(|| {
            host.resolve(&query, context.guild_id, Some(&caps.plugin_id), caps.depth + 1)
                .map(to_wit)
                .map_err(to_wit_error)
        })
    }
}
