//! `mesastream plugins new`: a plugin folder to start from, in Rust, Python or JavaScript.
//! Each holds `plugin.toml`, the WIT it is built against (a copy, so the folder builds on
//! its own), the source of a working plugin, a `build.sh` that puts the component beside the
//! manifest (where `mesastream plugins check .` and a plugins directory expect it), and a
//! test the language's own runner runs.

use std::path::{Path, PathBuf};

use crate::plugins::manifest::{Kind, SUPPORTED_WIT};

/// The WIT a new plugin targets, as `wit/` holds it.
const WIT: [(&str, &str); 2] = [
    ("wit/plugin.wit", include_str!("../../../wit/plugin.wit")),
    ("wit/deps/plugin-0.1.0/plugin.wit", include_str!("../../../wit/deps/plugin-0.1.0/plugin.wit")),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("{0:?} is not a plugin id: use 1-64 lower case letters, digits or '-', starting with a letter")]
    BadId(String),
    #[error("{} already exists and is not empty", .0.display())]
    NotEmpty(PathBuf),
    #[error("cannot write {}: {error}", .path.display())]
    Write { path: PathBuf, error: std::io::Error },
}

/// One file of a new plugin: where it goes, its text, whether it runs.
struct File {
    path: &'static str,
    text: &'static str,
    executable: bool,
}

const fn file(path: &'static str, text: &'static str) -> File {
    File { path, text, executable: false }
}

/// The files of a `lang` plugin of `kind`, before their names are filled in.
fn templates(lang: Lang, kind: Kind) -> Vec<File> {
    let build = |text| File { path: "build.sh", text, executable: true };
    let mut files = match lang {
        Lang::Rust => vec![
            file("Cargo.toml", include_str!("templates/rust/Cargo.toml")),
            build(include_str!("templates/rust/build.sh")),
            file(".gitignore", "target/\n*.wasm\n"),
        ],
        Lang::Python => vec![
            file("requirements.txt", include_str!("templates/python/requirements.txt")),
            build(include_str!("templates/python/build.sh")),
            file(".gitignore", "wit_world/\ncomponentize_py_*\npoll_loop.py\ndata/\n__pycache__/\n*.wasm\n"),
        ],
        Lang::Js => vec![
            file("package.json", include_str!("templates/js/package.json")),
            build(include_str!("templates/js/build.sh")),
            file(".gitignore", "node_modules/\n*.wasm\n"),
        ],
    };
    files.extend(match (lang, kind) {
        (Lang::Rust, Kind::Filter) => vec![file("src/lib.rs", include_str!("templates/rust/filter.rs"))],
        (Lang::Rust, Kind::Resolver) => vec![file("src/lib.rs", include_str!("templates/rust/resolver.rs"))],
        (Lang::Python, Kind::Filter) => vec![
            file("app.py", include_str!("templates/python/filter.py")),
            file("test_app.py", include_str!("templates/python/test_filter.py")),
        ],
        (Lang::Python, Kind::Resolver) => vec![
            file("app.py", include_str!("templates/python/resolver.py")),
            file("test_app.py", include_str!("templates/python/test_resolver.py")),
        ],
        (Lang::Js, Kind::Filter) => vec![
            file("plugin.js", include_str!("templates/js/filter.js")),
            file("plugin.test.js", include_str!("templates/js/filter.test.js")),
        ],
        // The resolver's logic lives apart from the host's imports, so node can test it.
        (Lang::Js, Kind::Resolver) => vec![
            file("plugin.js", include_str!("templates/js/resolver.js")),
            file("track.js", include_str!("templates/js/track.js")),
            file("track.test.js", include_str!("templates/js/resolver.test.js")),
        ],
    });
    files
}

/// The names a template refers to.
struct Names {
    id: String,
    /// The id as a Rust crate and a file name: `-` becomes `_`.
    crate_name: String,
    /// The filter a filter plugin provides: the id in camelCase.
    filter: String,
    kind: Kind,
}

impl Names {
    fn new(id: &str, kind: Kind) -> Self {
        let mut filter = String::new();
        for (i, part) in id.split('-').filter(|p| !p.is_empty()).enumerate() {
            let mut chars = part.chars();
            if let Some(first) = chars.next() {
                filter.extend(if i == 0 {
                    first.to_lowercase().collect::<Vec<_>>()
                } else {
                    first.to_uppercase().collect()
                });
                filter.push_str(chars.as_str());
            }
        }
        Self { id: id.to_string(), crate_name: id.replace('-', "_"), filter, kind }
    }

    fn component(&self) -> String {
        format!("{}.wasm", self.crate_name)
    }

    fn fill(&self, template: &str) -> String {
        template
            .replace("{{id}}", &self.id)
            .replace("{{crate}}", &self.crate_name)
            .replace("{{component}}", &self.component())
            .replace("{{filter}}", &self.filter)
            .replace("{{kind}}", self.kind.as_str())
    }

    fn manifest(&self, lang: Lang) -> String {
        let wit = SUPPORTED_WIT.last().copied().unwrap_or("0.1.0");
        let language = match lang {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
        };
        let mut manifest = format!(
            "id = \"{id}\"\nversion = \"0.1.0\"\nkind = \"{kind}\"\nwit-version = \"{wit}\"\n\
             description = \"A {kind} in {language}\"\ncomponent = \"{component}\"\n",
            id = self.id,
            kind = self.kind.as_str(),
            component = self.component(),
        );
        match self.kind {
            Kind::Resolver => manifest.push_str(&format!(
                "# The queries this resolver is asked about (globs).\npatterns = [\"{}:*\"]\n\
                 # What it asks the operator for: log, http, process, kv, library, delegate.\n\
                 capabilities = [\"log\"]\n",
                self.id
            )),
            Kind::Filter => manifest.push_str(&format!(
                "\n[[filters]]\nname = \"{}\"\ndescription = \"Multiplies every sample by gain\"\n\
                 parameters.gain = {{ type = \"number\", min = 0, max = 4, default = 1 }}\n",
                self.filter
            )),
        }
        manifest
    }
}

/// Whether `id` is a plugin id (the manifest's rule) that also names a crate and a module.
fn valid_id(id: &str) -> bool {
    id.len() <= 64
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Writes a new `lang` plugin of `kind` named `id` into `parent/id`; returns the folder.
pub fn create(parent: &Path, id: &str, kind: Kind, lang: Lang) -> Result<PathBuf, ScaffoldError> {
    if !valid_id(id) {
        return Err(ScaffoldError::BadId(id.to_string()));
    }
    let folder = parent.join(id);
    if std::fs::read_dir(&folder).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(ScaffoldError::NotEmpty(folder));
    }
    let names = Names::new(id, kind);
    write(&folder.join("plugin.toml"), &names.manifest(lang), false)?;
    for (path, text) in WIT {
        write(&folder.join(path), text, false)?;
    }
    for template in templates(lang, kind) {
        write(&folder.join(template.path), &names.fill(template.text), template.executable)?;
    }
    Ok(folder)
}

fn write(path: &Path, text: &str, executable: bool) -> Result<(), ScaffoldError> {
    let failed = |error| ScaffoldError::Write { path: path.to_path_buf(), error };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    std::fs::write(path, text).map_err(failed)?;
    if executable {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(failed)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_id() {
        let names = Names::new("my-cool-echo", Kind::Filter);
        assert_eq!((names.crate_name.as_str(), names.filter.as_str()), ("my_cool_echo", "myCoolEcho"));
        assert_eq!(names.component(), "my_cool_echo.wasm");
        assert!(valid_id("echo2") && !valid_id("2echo") && !valid_id("Echo") && !valid_id("e_cho"));
    }
}
