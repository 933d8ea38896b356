//! `plugin.toml`, the manifest beside each component: what the plugin is and what it asks for.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::PluginError;

/// The WIT package versions this host links, oldest first.
pub const SUPPORTED_WIT: &[&str] = &["0.1.0", "0.2.0"];

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Manifest {
    /// Lower case letters, digits and `-`; names the plugin in grants, kv and metrics.
    pub id: String,
    pub version: String,
    pub kind: Kind,
    /// The `mesastream:plugin` version the component was built against.
    pub wit_version: String,
    #[serde(default)]
    pub description: String,
    /// The component file beside the manifest; `<id>.wasm` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// Resolvers: the queries the plugin handles, as globs (`https://*.youtube.com/*`, `ytsearch:*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patterns: Vec<String>,
    /// Resolvers: queries tried only after every resolver whose `patterns` match declined
    /// them (answered `unsupported`), e.g. any web page for a general-purpose extractor.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback_patterns: Vec<String>,
    /// Resolvers: tried in descending priority among those whose patterns match.
    #[serde(default)]
    pub priority: i32,
    /// What the plugin asks the operator to grant.
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    /// Filters: the filters the component provides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<FilterDecl>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Resolver,
    Filter,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Resolver => "resolver",
            Self::Filter => "filter",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    Log,
    Http,
    Process,
    Kv,
    Library,
    Delegate,
}

impl Capability {
    pub const ALL: [Capability; 6] = [Self::Log, Self::Http, Self::Process, Self::Kv, Self::Library, Self::Delegate];

    /// The WIT interface that carries the capability.
    pub fn interface(self) -> &'static str {
        match self {
            Self::Log => "mesastream:plugin/log",
            Self::Http => "mesastream:plugin/http",
            Self::Process => "mesastream:plugin/process",
            Self::Kv => "mesastream:plugin/kv",
            Self::Library => "mesastream:plugin/library",
            Self::Delegate => "mesastream:plugin/delegate",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::Http => "http",
            Self::Process => "process",
            Self::Kv => "kv",
            Self::Library => "library",
            Self::Delegate => "delegate",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilterDecl {
    /// The name clients use in a filter chain.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The JSON config's fields, for people and `GET /plugins`; the plugin validates.
    #[serde(default)]
    pub parameters: BTreeMap<String, Parameter>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<toml::Value>,
    #[serde(default)]
    pub description: String,
}

impl Manifest {
    /// Reads and checks a manifest.
    pub fn read(path: &Path) -> Result<Self, PluginError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PluginError::Invalid(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| PluginError::Invalid(format!("{}: {e}", path.display())))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| e.message().to_string())?;
        manifest.check()?;
        Ok(manifest)
    }

    fn check(&self) -> Result<(), String> {
        let valid_id = !self.id.is_empty()
            && self.id.len() <= 64
            && self.id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid_id {
            return Err(format!("id {:?} must be 1-64 lower case letters, digits or '-'", self.id));
        }
        if !SUPPORTED_WIT.contains(&self.wit_version.as_str()) {
            return Err(format!(
                "wit-version {:?} is not supported by this host (supported: {})",
                self.wit_version,
                SUPPORTED_WIT.join(", ")
            ));
        }
        match self.kind {
            Kind::Resolver if self.patterns.is_empty() && self.fallback_patterns.is_empty() => {
                return Err("a resolver needs at least one pattern".into());
            }
            Kind::Filter if self.filters.is_empty() => {
                return Err("a filter plugin needs at least one [[filters]]".into());
            }
            Kind::Filter if self.capabilities.iter().any(|c| *c != Capability::Log) => {
                return Err("filters may only ask for the log capability".into());
            }
            _ => {}
        }
        if let Some(file) = &self.component
            && (file.contains('/') || file.contains('\\') || file.starts_with('.'))
        {
            return Err(format!("component {file:?} must be a file name beside the manifest"));
        }
        Ok(())
    }

    pub fn component_file(&self) -> String {
        self.component.clone().unwrap_or_else(|| format!("{}.wasm", self.id))
    }

    /// Whether this resolver handles `query`.
    pub fn matches(&self, query: &str) -> bool {
        self.patterns.iter().any(|p| glob_match::glob_match(p, query))
    }

    /// Whether this resolver takes `query` when the resolvers that match it declined.
    pub fn falls_back_on(&self, query: &str) -> bool {
        self.fallback_patterns.iter().any(|p| glob_match::glob_match(p, query))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESOLVER: &str = r#"
        id = "direct"
        version = "0.1.0"
        kind = "resolver"
        wit-version = "0.1.0"
        patterns = ["http://**", "https://**"]
        capabilities = ["http", "log"]
    "#;

    #[test]
    fn reads_a_resolver_and_matches_queries() {
        let m = Manifest::parse(RESOLVER).unwrap();
        assert!(m.matches("https://example.com/a/b.mp3?x=1"));
        assert!(!m.matches("ytsearch:cats"));
        assert_eq!(m.component_file(), "direct.wasm");
    }

    #[test]
    fn a_single_star_stops_at_a_slash_and_a_double_star_does_not() {
        let search =
            Manifest::parse(&RESOLVER.replace(r#"["http://**", "https://**"]"#, r#"["ytsearch*:**"]"#)).unwrap();
        assert!(search.matches("ytsearch:AC/DC"));
        assert!(search.matches("ytsearch5:cats"));
        let narrow =
            Manifest::parse(&RESOLVER.replace(r#"["http://**", "https://**"]"#, r#"["ytsearch*:*"]"#)).unwrap();
        assert!(!narrow.matches("ytsearch:AC/DC"));
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        let bad_wit = RESOLVER.replace("wit-version = \"0.1.0\"", "wit-version = \"9.0.0\"");
        assert!(Manifest::parse(&bad_wit).unwrap_err().contains("not supported"));
        let bad_id = RESOLVER.replace("id = \"direct\"", "id = \"Direct!\"");
        assert!(Manifest::parse(&bad_id).unwrap_err().contains("id"));
        let escape = format!("{RESOLVER}\ncomponent = \"../x.wasm\"");
        assert!(Manifest::parse(&escape).unwrap_err().contains("beside"));
        let greedy_filter = "id = \"f\"\nversion = \"1\"\nkind = \"filter\"\nwit-version = \"0.1.0\"\ncapabilities = [\"http\"]\n[[filters]]\nname = \"x\"\n";
        assert!(Manifest::parse(greedy_filter).unwrap_err().contains("log"));
    }
}

/// Manifests come with plugins from anywhere: any text parses to a manifest or an error.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    const VALID: &str = "id = \"direct\"\nversion = \"0.1.0\"\nkind = \"resolver\"\nwit-version = \"0.1.0\"\n\
                         patterns = [\"http://**\"]\npriority = -10\ncapabilities = [\"http\", \"log\"]\n";

    proptest! {
        #[test]
        fn any_text_is_a_manifest_or_an_error(text in ".{0,600}") {
            let _ = Manifest::parse(&text);
        }

        #[test]
        fn a_mutated_manifest_is_a_manifest_or_an_error(at in any::<prop::sample::Index>(), with in any::<char>(), cut in any::<prop::sample::Index>()) {
            let mut chars: Vec<char> = VALID.chars().collect();
            let i = at.index(chars.len());
            chars[i] = with;
            let mutated: String = chars.into_iter().collect();
            if let Ok(m) = Manifest::parse(&mutated) {
                let _ = (m.matches("http://x/y"), m.falls_back_on("http://x/y"), m.component_file());
            }
            let end = cut.index(VALID.len());
            let _ = Manifest::parse(&VALID[..end]);
        }
    }
}
