//! The command line: `mesastream` serves; `mesastream plugins list` and `mesastream plugins
//! check <path>` inspect plugins offline, with the same loader and grants the server uses;
//! `mesastream plugins new` starts a plugin in Rust, Python or JavaScript.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::plugins::grants::OperatorConfig;
use crate::plugins::manifest::Kind;
use crate::plugins::{Change, LoadedPlugin, PluginHost, PluginSettings, Services, info_of};
use crate::scaffold::{self, Lang};
use crate::store::StateStore;

/// A Discord audio streaming host whose resolvers and filters are WebAssembly plugins.
/// Without a command it runs the server, configured by environment variables (see README).
#[derive(Debug, Parser)]
#[command(name = "mesastream", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect plugins without starting the server.
    #[command(subcommand)]
    Plugins(PluginsCommand),
}

#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// Loads every plugin in PLUGINS_DIR as the server would and lists them, with failures.
    List {
        /// Print what `GET /plugins` would return instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Checks one plugin (its folder, its plugin.toml or its component beside a plugin.toml):
    /// manifest, WIT version, component imports against requested capabilities and grants.
    Check {
        path: PathBuf,
        /// Operator grants to check against (default: PLUGINS_CONFIG, else none).
        #[arg(long)]
        grants: Option<PathBuf>,
    },
    /// Writes a new plugin folder NAME (manifest, WIT, source, build.sh, a test) to build,
    /// check and drop into PLUGINS_DIR.
    New {
        /// The plugin's id: lower case letters, digits and '-'.
        name: String,
        #[arg(long, value_enum)]
        kind: Kind,
        #[arg(long, value_enum, default_value = "rust")]
        lang: Lang,
        /// Where the folder goes (default: here).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

/// Runs a plugins command; the exit code is non-zero when a plugin would not load.
pub fn run_plugins(command: PluginsCommand, config: &Config) -> ExitCode {
    match run(command, config) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mesastream: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(command: PluginsCommand, config: &Config) -> Result<ExitCode, String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    match command {
        PluginsCommand::List { json } => {
            let dir = config.plugins_dir.clone().ok_or("PLUGINS_DIR is not set")?;
            let host = host(&runtime, Some(dir), config.plugins_config.clone(), config)?;
            let changes = host.scan();
            let plugins = host.plugins();
            if json {
                let infos: Vec<_> = plugins.iter().map(|p| info_of(p)).collect();
                println!("{}", serde_json::to_string_pretty(&infos).map_err(|e| e.to_string())?);
            } else {
                print_table(&plugins);
            }
            let failed: Vec<_> = changes
                .into_iter()
                .filter_map(|c| match c {
                    Change::Failed { path, error } => Some((path, error)),
                    _ => None,
                })
                .collect();
            for (path, error) in &failed {
                eprintln!("not loaded: {}: {error}", path.display());
            }
            Ok(if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        PluginsCommand::New { name, kind, lang, dir } => {
            let folder = scaffold::create(&dir, &name, kind, lang).map_err(|e| e.to_string())?;
            println!("wrote {}", folder.display());
            println!("next: {}/build.sh && mesastream plugins check {}", folder.display(), folder.display());
            Ok(ExitCode::SUCCESS)
        }
        PluginsCommand::Check { path, grants } => {
            let folder = plugin_folder(&path)?;
            let grants_file = grants.or_else(|| config.plugins_config.clone());
            let operator = match &grants_file {
                Some(file) => OperatorConfig::read(file).map_err(|e| e.to_string())?,
                None => OperatorConfig::default(),
            };
            let host = host(&runtime, None, None, config)?;
            match host.load(&folder, &operator) {
                Ok(plugin) => {
                    print_check(&plugin, grants_file.as_deref());
                    println!("ok: {} {} would load", plugin.id(), plugin.manifest.version);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    println!("error: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

/// A plugin host like the server's, without a watcher and with a store kept in memory.
fn host(
    runtime: &tokio::runtime::Runtime,
    dir: Option<PathBuf>,
    grants: Option<PathBuf>,
    config: &Config,
) -> Result<Arc<PluginHost>, String> {
    let settings = PluginSettings {
        dir,
        config: grants,
        cache_dir: Some(config.data_dir.join("plugin-cache")),
        reload_interval: std::time::Duration::ZERO,
        pool_instances: 16,
    };
    let store = StateStore::in_memory(&config.redis_prefix).map_err(|e| e.to_string())?;
    let services = Services::offline(runtime.handle().clone(), store).map_err(|e| e.to_string())?;
    PluginHost::new(settings, services).map_err(|e| e.to_string())
}

/// The folder holding the plugin `path` names.
fn plugin_folder(path: &Path) -> Result<PathBuf, String> {
    let folder = if path.is_dir() { path.to_path_buf() } else { path.parent().unwrap_or(Path::new(".")).to_path_buf() };
    if folder.join("plugin.toml").is_file() {
        Ok(folder)
    } else {
        Err(format!("no plugin.toml in {}", folder.display()))
    }
}

fn names(caps: &[crate::plugins::manifest::Capability]) -> String {
    let mut caps = caps.to_vec();
    caps.sort();
    if caps.is_empty() { "-".into() } else { caps.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(",") }
}

fn print_table(plugins: &[Arc<LoadedPlugin>]) {
    println!("{:<24} {:<10} {:<9} {:<28} {:<28}", "ID", "VERSION", "KIND", "REQUESTED", "GRANTED");
    for p in plugins {
        let info = info_of(p);
        println!(
            "{:<24} {:<10} {:<9} {:<28} {:<28}",
            info.id,
            info.version,
            p.manifest.kind.as_str(),
            names(&info.requested),
            names(&info.granted)
        );
    }
}

fn print_check(plugin: &LoadedPlugin, grants_file: Option<&Path>) {
    let info = info_of(plugin);
    println!("manifest:   {} {} ({}), WIT {}", info.id, info.version, plugin.manifest.kind.as_str(), info.wit_version);
    println!("component:  {} (sha256 {})", plugin.manifest.component_file(), info.digest);
    let (own, wasi): (Vec<&String>, Vec<&String>) = plugin.imports.iter().partition(|i| i.starts_with("mesastream:"));
    let own: Vec<&str> = own.iter().map(|i| i.as_str()).collect();
    println!(
        "imports:    {} (+{} WASI interfaces)",
        if own.is_empty() { "-".into() } else { own.join(", ") },
        wasi.len()
    );
    println!("requested:  {}", names(&info.requested));
    let source = grants_file.map_or("no grants file".to_string(), |f| f.display().to_string());
    println!("granted:    {} ({source})", names(&info.granted));
    let missing: Vec<_> = info.requested.iter().filter(|c| !info.granted.contains(c)).copied().collect();
    if !missing.is_empty() {
        println!("not granted: {} (calls to these are denied)", names(&missing));
    }
    if !plugin.unrequested.is_empty() {
        println!(
            "not asked:  {} (imported but not in the manifest's capabilities: calls to these are denied)",
            names(&plugin.unrequested)
        );
    }
    println!("limits:     {} MiB memory, {} ms per call", info.limits.memory_bytes >> 20, info.limits.call_timeout_ms);
    if !info.patterns.is_empty() {
        println!("patterns:   {}", info.patterns.join(" "));
    }
    for f in &info.filters {
        println!("filter:     {}", f.name);
    }
}
