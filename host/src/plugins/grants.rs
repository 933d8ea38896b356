//! The operator's side: which plugins run, what each may touch, and how far it may go.
//! Read from `PLUGINS_CONFIG` (TOML); a plugin without an entry runs with `log` only.
//!
//! ```toml
//! [plugins.ytdlp]
//! process = ["yt-dlp"]          # programs it may run, by name
//! kv = true
//! http = { hosts = ["*.example.com"], private = false }
//! limits = { memory-mb = 64, call-timeout-ms = 20000, process-concurrency = 4 }
//!
//! [plugins.ytdlp.programs.yt-dlp] # optional: how that program runs
//! path = "/opt/yt-dlp/bin/yt-dlp"
//! refuse-options = ["--write-comments"]
//! cpu-seconds = 600
//!
//! [plugins.ytdlp.settings]       # optional: values the plugin reads (WIT 0.2.0 `settings`)
//! region = "eu"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::PluginError;
use super::manifest::{Capability, Kind};

/// Per-plugin bounds, from the operator's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    pub memory_bytes: usize,
    /// Guest compute time per call.
    pub call_time: Duration,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    #[serde(default)]
    pub plugins: BTreeMap<String, Grants>,
}

impl OperatorConfig {
    pub fn read(path: &Path) -> Result<Self, PluginError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PluginError::Invalid(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| PluginError::Invalid(format!("{}: {}", path.display(), e.message())))
    }

    /// The grants for `id`; deny-by-default when the operator did not mention it.
    pub fn grants(&self, id: &str) -> Grants {
        self.plugins.get(id).cloned().unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Grants {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "yes")]
    pub log: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpGrant>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub process: Vec<String>,
    /// How granted programs run; a program named here is granted too.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub programs: BTreeMap<String, ProgramPolicy>,
    #[serde(default)]
    pub kv: bool,
    #[serde(default)]
    pub library: bool,
    #[serde(default)]
    pub delegate: bool,
    /// Extra queries a resolver should handle beyond its manifest's patterns (globs), e.g.
    /// a site yt-dlp supports that its manifest does not list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patterns: Vec<String>,
    #[serde(default)]
    pub limits: LimitSettings,
    /// Values the plugin reads through `settings` (WIT 0.2.0). Never shown by the API: they
    /// may hold keys.
    #[serde(default, skip_serializing)]
    pub settings: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

impl Default for Grants {
    fn default() -> Self {
        Self {
            enabled: true,
            log: true,
            http: None,
            process: Vec::new(),
            programs: BTreeMap::new(),
            kv: false,
            library: false,
            delegate: false,
            patterns: Vec::new(),
            limits: LimitSettings::default(),
            settings: BTreeMap::new(),
        }
    }
}

impl Grants {
    pub fn allows(&self, capability: Capability) -> bool {
        match capability {
            Capability::Log => self.log,
            Capability::Http => self.http.is_some(),
            Capability::Process => !self.process.is_empty() || !self.programs.is_empty(),
            Capability::Kv => self.kv,
            Capability::Library => self.library,
            Capability::Delegate => self.delegate,
        }
    }

    pub fn granted(&self) -> Vec<Capability> {
        Capability::ALL.into_iter().filter(|c| self.allows(*c)).collect()
    }

    /// These grants without the capabilities the plugin did not ask for (`log` aside, which
    /// the operator alone decides): a plugin gets what it asked for and was granted.
    pub fn limited_to(mut self, requested: &[Capability]) -> Self {
        let asked = |c: Capability| requested.contains(&c);
        if !asked(Capability::Http) {
            self.http = None;
        }
        if !asked(Capability::Process) {
            self.process.clear();
            self.programs.clear();
        }
        self.kv &= asked(Capability::Kv);
        self.library &= asked(Capability::Library);
        self.delegate &= asked(Capability::Delegate);
        self
    }

    /// Whether `program` is granted.
    pub fn grants_program(&self, program: &str) -> bool {
        self.process.iter().any(|p| p == program) || self.programs.contains_key(program)
    }

    /// The limits for a plugin of `kind`, defaults filled in.
    pub fn limits(&self, kind: Kind) -> Limits {
        let (memory_mb, call_ms) = match kind {
            Kind::Filter => (32, 20),
            Kind::Resolver => (64, 10_000),
        };
        Limits {
            memory_bytes: self.limits.memory_mb.unwrap_or(memory_mb) << 20,
            call_time: Duration::from_millis(self.limits.call_timeout_ms.unwrap_or(call_ms)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpGrant {
    /// Host globs: `example.com`, `*.example.com`, `*` for any.
    pub hosts: Vec<String>,
    /// Whether loopback, private and link-local addresses may be reached.
    #[serde(default)]
    pub private: bool,
}

impl HttpGrant {
    pub fn allows_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts.iter().any(|p| glob_match::glob_match(&p.to_ascii_lowercase(), &host))
    }
}

/// How one granted program runs. Every field is optional; unset ones take the defaults
/// (the program found on PATH, the built-in option refusals, the rlimits below).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ProgramPolicy {
    /// What runs when the plugin names this program.
    pub path: Option<PathBuf>,
    /// Options refused on top of the built-in ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refuse_options: Vec<String>,
    /// When set, the only options a plugin may pass.
    pub allow_options: Option<Vec<String>>,
    /// A cookies file copied into each run's directory and passed as `--cookies` (yt-dlp),
    /// so the program never writes the operator's file.
    pub cookies: Option<PathBuf>,
    /// RLIMIT_CPU (600).
    pub cpu_seconds: Option<u64>,
    /// RLIMIT_AS in MiB (2048).
    pub memory_mb: Option<u64>,
    /// RLIMIT_FSIZE in MiB (256): the largest file it may write.
    pub file_size_mb: Option<u64>,
    /// RLIMIT_NPROC (unset: counted per user, so it would include the server's own threads).
    pub processes: Option<u64>,
}

impl ProgramPolicy {
    /// This policy, with `defaults` filling what it leaves unset.
    pub fn over(&self, defaults: &ProgramPolicy) -> ProgramPolicy {
        let mut refuse = defaults.refuse_options.clone();
        refuse.extend(self.refuse_options.iter().cloned());
        ProgramPolicy {
            path: self.path.clone().or_else(|| defaults.path.clone()),
            refuse_options: refuse,
            allow_options: self.allow_options.clone().or_else(|| defaults.allow_options.clone()),
            cookies: self.cookies.clone().or_else(|| defaults.cookies.clone()),
            cpu_seconds: self.cpu_seconds.or(defaults.cpu_seconds),
            memory_mb: self.memory_mb.or(defaults.memory_mb),
            file_size_mb: self.file_size_mb.or(defaults.file_size_mb),
            processes: self.processes.or(defaults.processes),
        }
    }
}

/// Optional overrides of the defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LimitSettings {
    pub memory_mb: Option<usize>,
    pub call_timeout_ms: Option<u64>,
    pub http_timeout_ms: Option<u64>,
    pub http_max_bytes: Option<usize>,
    pub process_timeout_ms: Option<u64>,
    pub process_max_output_bytes: Option<usize>,
    /// Programs this plugin may have running at once through `process.run` (4).
    pub process_concurrency: Option<usize>,
    pub kv_max_value_bytes: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denies_by_default_and_reads_grants() {
        let config: OperatorConfig = toml::from_str(
            r#"
            [plugins.ytdlp]
            process = ["yt-dlp"]
            kv = true
            http = { hosts = ["*.example.com"] }
            limits = { memory-mb = 16 }
            "#,
        )
        .unwrap();
        let other = config.grants("nobody");
        assert_eq!(other.granted(), vec![Capability::Log]);
        let ytdlp = config.grants("ytdlp");
        assert_eq!(ytdlp.granted(), vec![Capability::Log, Capability::Http, Capability::Process, Capability::Kv]);
        let http = ytdlp.http.as_ref().unwrap();
        assert!(http.allows_host("cdn.example.com") && !http.allows_host("example.org") && !http.private);
        assert_eq!(ytdlp.limits(Kind::Resolver).memory_bytes, 16 << 20);
        assert!(toml::from_str::<OperatorConfig>("[plugins.x]\nnetwork = true").is_err());

        let config: OperatorConfig = toml::from_str(
            r#"
            [plugins.fetcher.programs.curl]
            path = "/usr/bin/curl"
            refuse-options = ["--output"]
            cpu-seconds = 5
            "#,
        )
        .unwrap();
        let fetcher = config.grants("fetcher");
        assert!(fetcher.grants_program("curl") && !fetcher.grants_program("wget"));
        assert!(fetcher.allows(Capability::Process));
        let defaults = ProgramPolicy { memory_mb: Some(100), cpu_seconds: Some(60), ..Default::default() };
        let merged = fetcher.programs["curl"].over(&defaults);
        assert_eq!((merged.cpu_seconds, merged.memory_mb), (Some(5), Some(100)));
    }
}

/// The operator's grants file is parsed whenever it changes: any text is a configuration or
/// an error, and the grants it yields answer without panicking.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    const VALID: &str = "[plugins.ytdlp]\nprocess = [\"yt-dlp\"]\nkv = true\nlimits = { process-timeout-ms = 60000 }\n\
                         [plugins.ytdlp.programs.yt-dlp]\ncpu-seconds = 5\n[plugins.direct]\nhttp = { hosts = [\"*\"], private = false }\n";

    proptest! {
        #[test]
        fn any_text_is_grants_or_an_error(text in ".{0,600}", at in any::<prop::sample::Index>(), with in any::<char>()) {
            let _ = toml::from_str::<OperatorConfig>(&text);
            let mut chars: Vec<char> = VALID.chars().collect();
            let i = at.index(chars.len());
            chars[i] = with;
            let mutated: String = chars.into_iter().collect();
            if let Ok(config) = toml::from_str::<OperatorConfig>(&mutated) {
                for id in config.plugins.keys() {
                    let grants = config.grants(id);
                    let _ = (grants.granted(), grants.limits(Kind::Resolver), grants.limits(Kind::Filter));
                    if let Some(http) = &grants.http {
                        let _ = http.allows_host("example.com");
                    }
                }
            }
        }
    }
}
