//! What a plugin may pass to a program it is granted. A grant names options to refuse (or
//! the only ones allowed); yt-dlp comes with built-in refusals for every option that runs a
//! command, reads or writes a file outside the run's own directory, loads code, changes the
//! network path or updates the program.
//!
//! Parsing is conservative, in the way getopt-style programs read their arguments: after
//! `--` everything is an operand; `--name` and `--name=value` are long options, and any
//! abbreviation of a refused long option counts as that option (yt-dlp accepts unambiguous
//! prefixes); a short cluster (`-xo/tmp/f`) is read letter by letter until a letter that
//! takes a value.

use std::path::{Component, Path};

/// The option policy of one program.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OptionPolicy {
    /// Refused options, long (`--exec`) or short (`-P`).
    pub refused: Vec<String>,
    /// When set, only these options may be given.
    pub allowed: Option<Vec<String>>,
    /// Options whose value must name a place inside the run's directory (or `-`, stdout).
    pub inside_workdir: Vec<String>,
    /// Short option letters that take a value (the rest of the cluster or the next word).
    pub value_letters: String,
}

/// yt-dlp's refusals: commands (`--exec`, `--netrc-cmd`, downloaders, postprocessors),
/// files (`--batch-file`, `--load-info-json`, config, cookies, archives, certificates,
/// `--paths`, `--print-to-file`, `--cache-dir`, file URLs), code (`--plugin-dirs`,
/// `--use-postprocessor`, `--ffmpeg-location`), the network path (`--proxy`), aliases that
/// could spell any of these, and updating itself.
const YT_DLP_REFUSED: &[&str] = &[
    "--exec",
    "--exec-before-download",
    "--config-locations",
    "--config-location",
    "--batch-file",
    "-a",
    "--load-info-json",
    "--load-info",
    "--plugin-dirs",
    "--paths",
    "-P",
    "--proxy",
    "--geo-verification-proxy",
    "--cookies",
    "--cookies-from-browser",
    "--netrc-location",
    "--netrc-cmd",
    "--ffmpeg-location",
    "--downloader",
    "--external-downloader",
    "--downloader-args",
    "--external-downloader-args",
    "--postprocessor-args",
    "--ppa",
    "--use-postprocessor",
    "--print-to-file",
    "--cache-dir",
    "--download-archive",
    "--client-certificate",
    "--client-certificate-key",
    "--enable-file-urls",
    "--alias",
    "--update",
    "--update-to",
    "-U",
];

/// The built-in policy for a program, by its name.
pub fn builtin(program: &str) -> OptionPolicy {
    match program {
        "yt-dlp" => OptionPolicy {
            refused: YT_DLP_REFUSED.iter().map(|s| s.to_string()).collect(),
            allowed: None,
            inside_workdir: vec!["-o".into(), "--output".into()],
            value_letters: "afIiNoPprRStu".into(),
        },
        _ => OptionPolicy::default(),
    }
}

impl OptionPolicy {
    /// Adds an operator's refusals and allowances to this policy.
    pub fn with(mut self, refused: &[String], allowed: Option<&[String]>) -> Self {
        self.refused.extend(refused.iter().cloned());
        if let Some(allowed) = allowed {
            self.allowed = Some(allowed.to_vec());
        }
        self
    }

    /// Checks `args`; the error names the first argument refused and why.
    pub fn check(&self, args: &[String]) -> Result<(), String> {
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            i += 1;
            if arg == "--" {
                return Ok(());
            }
            if let Some(long) = arg.strip_prefix("--") {
                let (name, attached) = match long.split_once('=') {
                    Some((name, value)) => (format!("--{name}"), Some(value.to_string())),
                    None => (format!("--{long}"), None),
                };
                self.check_option(&name)?;
                if self.inside_workdir.iter().any(|o| o.starts_with(&name) && name.len() > 2) {
                    let value = attached.or_else(|| args.get(i).cloned()).unwrap_or_default();
                    check_inside(&name, &value)?;
                }
            } else if let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.is_empty()) {
                for (at, letter) in cluster.char_indices() {
                    let name = format!("-{letter}");
                    self.check_option(&name)?;
                    if self.value_letters.contains(letter) {
                        let rest = &cluster[at + letter.len_utf8()..];
                        let value =
                            if rest.is_empty() { args.get(i).cloned().unwrap_or_default() } else { rest.into() };
                        if self.inside_workdir.contains(&name) {
                            check_inside(&name, &value)?;
                        }
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    fn check_option(&self, name: &str) -> Result<(), String> {
        let long = name.starts_with("--");
        // A long option is refused when it abbreviates a refused one.
        let refused =
            self.refused.iter().find(|r| if long { r.starts_with(name) && name.len() > 2 } else { *r == name });
        if let Some(refused) = refused {
            return Err(format!("option {name} is refused ({refused} is not allowed for plugins)"));
        }
        if let Some(allowed) = &self.allowed
            && !allowed.iter().any(|a| a == name)
        {
            return Err(format!("option {name} is not among the allowed options"));
        }
        Ok(())
    }
}

/// `-` (standard output) or a relative path that stays inside the run's directory. yt-dlp's
/// `TYPE:` output prefixes and `~` expansion are refused with absolute paths and `..`.
fn check_inside(option: &str, value: &str) -> Result<(), String> {
    if value == "-" {
        return Ok(());
    }
    let path = Path::new(value);
    let escapes = value.is_empty()
        || value.contains(':')
        || value.starts_with('~')
        || path.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if escapes {
        return Err(format!("{option} {value:?} is outside the run's directory (use - or a relative path)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(args: &[&str]) -> Result<(), String> {
        builtin("yt-dlp").check(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn the_first_party_plugins_arguments_pass() {
        let resolve = [
            "--ignore-config",
            "--no-warnings",
            "--no-cache-dir",
            "--dump-single-json",
            "--flat-playlist",
            "--format",
            "bestaudio/best",
            "--socket-timeout",
            "15",
            "--",
            "https://example.com/--exec",
        ];
        assert_eq!(check(&resolve), Ok(()));
        assert_eq!(check(&["--quiet", "-f", "251", "-o", "-", "--", "https://x"]), Ok(()));
        assert_eq!(check(&["-o", "%(id)s.%(ext)s", "--output=sub/a.webm", "-xo-"]), Ok(()));
    }

    #[test]
    fn commands_files_and_code_are_refused_in_every_spelling() {
        for args in [
            &["--exec", "touch /tmp/x"][..],
            &["--exec=touch /tmp/x"],
            &["--exe", "touch /tmp/x"],
            &["--config-locations", "/etc/passwd"],
            &["--confi", "/x"],
            &["--batch-file", "/etc/shadow"],
            &["-a", "/etc/shadow"],
            &["-xa/etc/shadow"],
            &["--load-info-json", "/x.json"],
            &["--plugin-dirs", "/x"],
            &["--proxy", ""],
            &["--netrc-cmd", "sh"],
            &["-U"],
            &["-P", "/var/lib/mesastream/plugins"],
            &["--cookies", "/etc/mesastream/cookies.txt"],
        ] {
            assert!(check(args).is_err(), "{args:?} passed");
        }
        let e = check(&["--quiet", "--exec", "id"]).unwrap_err();
        assert_eq!(e, "option --exec is refused (--exec is not allowed for plugins)");
    }

    #[test]
    fn output_stays_inside_the_run_directory() {
        for value in ["/elsewhere/x", "../x", "a/../../x", "~/x", "infojson:/tmp/x", ""] {
            assert!(check(&["-o", value]).is_err(), "-o {value:?} passed");
            assert!(check(&[&format!("--output={value}")]).is_err(), "--output={value:?} passed");
        }
        assert!(check(&["-xo/tmp/x"]).is_err());
        assert!(check(&["--outp", "/tmp/x"]).is_err(), "abbreviations of --output are checked too");
    }

    #[test]
    fn operators_add_refusals_or_allow_only_some_options() {
        let policy = OptionPolicy::default().with(&["--danger".into()], None);
        assert!(policy.check(&["--danger".into()]).is_err());
        assert!(policy.check(&["--safe".into()]).is_ok());
        let only = OptionPolicy::default().with(&[], Some(&["--version".into(), "-q".into()]));
        assert!(only.check(&["--version".into(), "-q".into()]).is_ok());
        assert!(only.check(&["--verbose".into()]).is_err());
        assert!(only.check(&["-qv".into()]).is_err());
    }
}
