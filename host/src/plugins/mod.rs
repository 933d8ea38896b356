//! The plugin host: loads resolver and filter components from the plugins directory,
//! grants them what the operator allows, and reloads them when their files change.
//!
//! Layout of the directory: one folder per plugin holding `plugin.toml` and its component.

pub mod capabilities;
pub mod engine;
pub mod filter;
pub mod grants;
mod guest_stderr;
mod host_functions;
pub mod manifest;
mod memory_watch;
pub mod resolver;
mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::RwLock;
use serde::Serialize;
use wasmtime::Engine;
use wasmtime::component::Linker;

use engine::PluginState;
use grants::Limits;
use grants::{Grants, OperatorConfig};
use manifest::{Capability, Kind, Manifest};

pub use capabilities::Services;
pub use watch::spawn_watcher;

#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    #[error("{0}")]
    Invalid(String),
    #[error("plugin engine: {0}")]
    Engine(String),
}

/// Where plugins come from.
#[derive(Debug, Clone, Default)]
pub struct PluginSettings {
    /// The plugins directory; none runs without plugins.
    pub dir: Option<PathBuf>,
    /// The operator's grants (TOML).
    pub config: Option<PathBuf>,
    /// Compiled components are cached here.
    pub cache_dir: Option<PathBuf>,
    /// How often the directory is checked for changes; zero turns reloading off.
    pub reload_interval: Duration,
    /// Size of the instance pool.
    pub pool_instances: u32,
}

/// A component ready to instantiate, with what it was granted.
pub struct LoadedPlugin {
    pub manifest: Manifest,
    pub grants: Grants,
    pub limits: Limits,
    /// The interfaces the component imports.
    pub imports: Vec<String>,
    /// Capabilities it imports without asking for them in its manifest (denied).
    pub unrequested: Vec<Capability>,
    /// sha256 of the component file.
    pub digest: String,
    /// The operator's settings, shared with every instance.
    settings: Arc<BTreeMap<String, String>>,
    id: Arc<str>,
    pre: Pre,
}

enum Pre {
    Filter(filter::FilterPre<PluginState>),
    Resolver(resolver::ResolverPre<PluginState>),
}

impl LoadedPlugin {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn id_arc(&self) -> Arc<str> {
        self.id.clone()
    }

    pub(crate) fn filter_pre(&self) -> Option<&filter::FilterPre<PluginState>> {
        match &self.pre {
            Pre::Filter(p) => Some(p),
            Pre::Resolver(_) => None,
        }
    }

    pub(crate) fn resolver_pre(&self) -> Option<&resolver::ResolverPre<PluginState>> {
        match &self.pre {
            Pre::Resolver(p) => Some(p),
            Pre::Filter(_) => None,
        }
    }

    /// Whether this resolver handles `query`, by its manifest or the operator's extra patterns.
    pub fn matches(&self, query: &str) -> bool {
        self.manifest.kind == Kind::Resolver
            && (self.manifest.matches(query) || self.grants.patterns.iter().any(|p| glob_match::glob_match(p, query)))
    }

    /// Whether this resolver takes `query` once the ones that match it declined.
    pub fn falls_back_on(&self, query: &str) -> bool {
        self.manifest.kind == Kind::Resolver && self.manifest.falls_back_on(query)
    }

    pub fn provides_filter(&self, name: &str) -> bool {
        self.manifest.kind == Kind::Filter && self.manifest.filters.iter().any(|f| f.name == name)
    }
}

/// What `GET /plugins` shows of a plugin.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    pub id: String,
    pub version: String,
    pub kind: Kind,
    pub wit_version: String,
    pub description: String,
    pub digest: String,
    pub requested: Vec<Capability>,
    pub granted: Vec<Capability>,
    pub limits: LimitsInfo,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub patterns: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fallback_patterns: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<manifest::FilterDecl>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct LimitsInfo {
    pub memory_bytes: usize,
    pub call_timeout_ms: u64,
}

/// A change found by a scan of the plugins directory.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Loaded { id: String, version: String },
    Unloaded { id: String },
    Failed { path: PathBuf, error: String },
}

/// Identifies the files a plugin was loaded from, to notice edits.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint(Vec<(PathBuf, Option<SystemTime>, u64)>);

impl Fingerprint {
    fn of(paths: &[PathBuf]) -> Self {
        Self(
            paths
                .iter()
                .map(|p| {
                    let meta = std::fs::metadata(p).ok();
                    (p.clone(), meta.as_ref().and_then(|m| m.modified().ok()), meta.map_or(0, |m| m.len()))
                })
                .collect(),
        )
    }
}

#[derive(Default)]
struct Registry {
    /// By folder: the plugin and the files it came from.
    by_folder: BTreeMap<PathBuf, (Arc<LoadedPlugin>, Fingerprint)>,
    /// Folders that failed to load, so they are not retried until they change.
    failed: BTreeMap<PathBuf, Fingerprint>,
    operator: Option<Fingerprint>,
}

pub struct PluginHost {
    engine: Engine,
    settings: PluginSettings,
    filter_linker: Linker<PluginState>,
    resolver_linker: Linker<PluginState>,
    registry: RwLock<Registry>,
    /// Bumped whenever the set of loaded plugins changes; pipelines compare it per frame.
    generation: AtomicU64,
    pub(crate) services: Services,
}

impl PluginHost {
    pub fn new(settings: PluginSettings, services: Services) -> Result<Arc<Self>, PluginError> {
        let engine = engine::build(settings.pool_instances.max(16))?;
        let link = |e: wasmtime::Error| PluginError::Engine(e.to_string());
        let mut filter_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut filter_linker).map_err(link)?;
        filter::bindings::Filter::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut filter_linker, |s| s)
            .map_err(link)?;
        let mut resolver_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut resolver_linker).map_err(link)?;
        resolver::add_to_linker(&mut resolver_linker).map_err(link)?;
        Ok(Arc::new(Self {
            engine,
            settings,
            filter_linker,
            resolver_linker,
            registry: RwLock::new(Registry::default()),
            generation: AtomicU64::new(0),
            services,
        }))
    }

    pub fn settings(&self) -> &PluginSettings {
        &self.settings
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Every loaded plugin, ordered by id.
    pub fn plugins(&self) -> Vec<Arc<LoadedPlugin>> {
        let mut all: Vec<_> = self.registry.read().by_folder.values().map(|(p, _)| p.clone()).collect();
        all.sort_by(|a, b| a.id().cmp(b.id()));
        all
    }

    pub fn info(&self) -> Vec<PluginInfo> {
        self.plugins().iter().map(|p| info_of(p)).collect()
    }

    pub fn has_resolvers(&self) -> bool {
        self.registry.read().by_folder.values().any(|(p, _)| p.manifest.kind == Kind::Resolver)
    }

    /// The confined command for a process stream locator from `plugin`, if its current
    /// grants still allow `program` with these arguments.
    pub fn stream_command(
        &self,
        plugin: &str,
        program: &str,
        args: &[String],
    ) -> Result<capabilities::process::PreparedRun, String> {
        let loaded = self.plugins().into_iter().find(|p| p.id() == plugin);
        let loaded = loaded.ok_or_else(|| format!("plugin {plugin} is no longer loaded"))?;
        capabilities::process::prepare(&self.services, &loaded.grants, plugin, program, args)
            .map_err(|why| format!("{plugin}: {why}"))
    }

    /// The plugin providing filter `name`.
    pub fn filter(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.plugins().into_iter().find(|p| p.provides_filter(name))
    }

    /// Loads what changed in the plugins directory since the last scan. Blocking (compiles).
    pub fn scan(&self) -> Vec<Change> {
        let Some(dir) = self.settings.dir.clone() else { return Vec::new() };
        let operator_print = self.settings.config.as_ref().map(|p| Fingerprint::of(std::slice::from_ref(p)));
        let operator_changed = self.registry.read().operator != operator_print;
        let operator = match &self.settings.config {
            Some(path) if path.exists() => match OperatorConfig::read(path) {
                Ok(c) => c,
                Err(e) => {
                    // Keep running what is loaded rather than dropping every grant.
                    tracing::error!(error = %e, "plugin grants unreadable; keeping the loaded plugins");
                    return vec![Change::Failed { path: path.clone(), error: e.to_string() }];
                }
            },
            _ => OperatorConfig::default(),
        };
        let folders = plugin_folders(&dir);
        let mut changes = Vec::new();
        let mut registry = self.registry.write();
        if operator_changed {
            registry.failed.clear();
        }
        let gone: Vec<PathBuf> = registry.by_folder.keys().filter(|f| !folders.contains(f)).cloned().collect();
        for folder in gone {
            if let Some((plugin, _)) = registry.by_folder.remove(&folder) {
                changes.push(Change::Unloaded { id: plugin.id().to_string() });
            }
        }
        for folder in folders {
            let print = Fingerprint::of(&files_of(&folder));
            let current = registry.by_folder.get(&folder).map(|(_, p)| p);
            if !operator_changed && current == Some(&print) || registry.failed.get(&folder) == Some(&print) {
                continue;
            }
            match self.load(&folder, &operator) {
                Ok(plugin) => {
                    let clash = registry
                        .by_folder
                        .iter()
                        .find(|(f, (p, _))| **f != folder && p.id() == plugin.id())
                        .map(|(f, _)| f.clone());
                    if let Some(other) = clash {
                        let error = format!("plugin id {:?} is already loaded from {}", plugin.id(), other.display());
                        registry.failed.insert(folder.clone(), print);
                        changes.push(Change::Failed { path: folder, error });
                        continue;
                    }
                    registry.failed.remove(&folder);
                    changes
                        .push(Change::Loaded { id: plugin.id().to_string(), version: plugin.manifest.version.clone() });
                    registry.by_folder.insert(folder, (Arc::new(plugin), print));
                }
                Err(e) => {
                    registry.failed.insert(folder.clone(), print);
                    changes.push(Change::Failed { path: folder, error: e.to_string() });
                }
            }
        }
        registry.operator = operator_print;
        if changes.iter().any(|c| !matches!(c, Change::Failed { .. })) {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        drop(registry);
        for change in &changes {
            match change {
                Change::Loaded { id, version } => tracing::info!(plugin = %id, %version, "plugin loaded"),
                Change::Unloaded { id } => tracing::info!(plugin = %id, "plugin unloaded"),
                Change::Failed { path, error } => tracing::error!(path = %path.display(), %error, "plugin not loaded"),
            }
        }
        changes
    }

    /// Reads, checks, compiles and links one plugin folder, as loading it would. Used by
    /// scans and by `mesastream plugins check`.
    pub fn load(&self, folder: &Path, operator: &OperatorConfig) -> Result<LoadedPlugin, PluginError> {
        let manifest = Manifest::read(&folder.join("plugin.toml"))?;
        let grants = operator.grants(&manifest.id);
        if !grants.enabled {
            return Err(PluginError::Invalid(format!("{} is disabled by the operator", manifest.id)));
        }
        let wasm = folder.join(manifest.component_file());
        let bytes =
            std::fs::read(&wasm).map_err(|e| PluginError::Invalid(format!("cannot read {}: {e}", wasm.display())))?;
        self.link(manifest, grants, &bytes)
    }

    /// Checks a component against its manifest and links it.
    fn link(&self, manifest: Manifest, grants: Grants, bytes: &[u8]) -> Result<LoadedPlugin, PluginError> {
        use sha2::Digest;
        let component = engine::load_component(&self.engine, bytes, self.settings.cache_dir.as_deref())?;
        let imports: Vec<String> =
            component.component_type().imports(&self.engine).map(|(name, _)| name.to_string()).collect();
        // Toolchains that import a whole world (componentize-py, ComponentizeJS) import
        // capabilities a plugin never calls: those stay denied, whatever the grants say.
        let unrequested: Vec<Capability> = Capability::ALL
            .into_iter()
            .filter(|c| *c != Capability::Log && !manifest.capabilities.contains(c))
            .filter(|c| imports.iter().any(|i| i.starts_with(c.interface())))
            .collect();
        let grants = grants.limited_to(&manifest.capabilities);
        if let Some(newer) = imports.iter().find_map(|i| newer_wit(i, &manifest.wit_version)) {
            return Err(PluginError::Invalid(format!(
                "{} imports {newer} but its manifest says wit-version = \"{}\"; set it to the version it was built against",
                manifest.id, manifest.wit_version
            )));
        }
        let wrong_world = |e: wasmtime::Error| {
            PluginError::Invalid(format!("{} does not fit the {:?} world: {e:#}", manifest.id, manifest.kind))
        };
        let pre = match manifest.kind {
            Kind::Filter => Pre::Filter(
                filter::FilterPre::new(self.filter_linker.instantiate_pre(&component).map_err(wrong_world)?)
                    .map_err(wrong_world)?,
            ),
            Kind::Resolver => Pre::Resolver(
                resolver::ResolverPre::new(self.resolver_linker.instantiate_pre(&component).map_err(wrong_world)?)
                    .map_err(wrong_world)?,
            ),
        };
        let digest = sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
        Ok(LoadedPlugin {
            limits: grants.limits(manifest.kind),
            settings: Arc::new(grants.settings.clone()),
            id: manifest.id.as_str().into(),
            manifest,
            grants,
            imports,
            unrequested,
            digest,
            pre,
        })
    }
}

/// `import` when it is an interface of a `mesastream:plugin` version later than `declared`
/// (versions compare in the order [`manifest::SUPPORTED_WIT`] lists them).
fn newer_wit<'a>(import: &'a str, declared: &str) -> Option<&'a str> {
    let version = import.strip_prefix("mesastream:plugin/")?.split_once('@')?.1;
    let rank = |v: &str| manifest::SUPPORTED_WIT.iter().position(|s| *s == v);
    (rank(version) > rank(declared)).then_some(import)
}

/// What `GET /plugins` shows of `p`.
pub fn info_of(p: &LoadedPlugin) -> PluginInfo {
    let m = &p.manifest;
    PluginInfo {
        id: m.id.clone(),
        version: m.version.clone(),
        kind: m.kind,
        wit_version: m.wit_version.clone(),
        description: m.description.clone(),
        digest: p.digest.clone(),
        requested: m.capabilities.clone(),
        granted: p.grants.granted(),
        limits: LimitsInfo {
            memory_bytes: p.limits.memory_bytes,
            call_timeout_ms: p.limits.call_time.as_millis() as u64,
        },
        patterns: m.patterns.iter().chain(&p.grants.patterns).cloned().collect(),
        fallback_patterns: m.fallback_patterns.clone(),
        filters: m.filters.clone(),
    }
}

/// Sub-folders of `dir` that hold a `plugin.toml`.
fn plugin_folders(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut folders: Vec<PathBuf> =
        entries.flatten().map(|e| e.path()).filter(|p| p.join("plugin.toml").is_file()).collect();
    folders.sort();
    folders
}

/// The files whose change means a reload: the manifest and every component beside it.
fn files_of(folder: &Path) -> Vec<PathBuf> {
    let mut files = vec![folder.join("plugin.toml")];
    if let Ok(entries) = std::fs::read_dir(folder) {
        let mut wasm: Vec<PathBuf> =
            entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "wasm")).collect();
        wasm.sort();
        files.extend(wasm);
    }
    files
}
