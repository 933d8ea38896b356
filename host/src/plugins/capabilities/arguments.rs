//! What a plugin may pass to a program it is granted. A grant names options to refuse (or
//! the only ones allowed); yt-dlp comes with built-in refusals for every option that runs a
//! command, reads or writes a file outside the run's own directory, loads code, changes the
//! network path or updates the program.
//!
//! A program with an option table (yt-dlp's is generated from its `--help`) has its command
//! line read exactly as the program reads it: every option is looked up in the table (a long
//! name by any unambiguous prefix; an option it does not list is refused), a short cluster
//! (`-iP/dir`) letter by letter until a letter that takes a value, and an option's value
//! words are values even when they look like options or like `--`. An option is refused
//! when any of its names (short letter, long name, alias) is refused.
//!
//! A program without a table is read conservatively: after `--` everything is an operand,
//! every word that starts with `-` is checked as an option, any abbreviation of a refused
//! long option counts as that option, and every letter of a short cluster is an option.

use std::path::{Component, Path};

use super::option_table::{self, Lookup, OptionSpec, OptionTable};

/// The option policy of one program.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OptionPolicy {
    /// Refused options, long (`--exec`) or short (`-P`).
    pub refused: Vec<String>,
    /// When set, only these options may be given.
    pub allowed: Option<Vec<String>>,
    /// Options whose value must name a place inside the run's directory (or `-`, stdout).
    pub inside_workdir: Vec<String>,
    /// How the program reads its command line, when known.
    pub table: Option<&'static OptionTable>,
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
            table: Some(option_table::yt_dlp()),
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
                    Some((name, value)) => (format!("--{name}"), Some(value)),
                    None => (format!("--{long}"), None),
                };
                let spec = self.check_option(&name)?;
                let bound = match spec {
                    Some(spec) => names_any(spec, &self.inside_workdir),
                    None => self.inside_workdir.iter().any(|o| o.starts_with(&name) && name.len() > 2),
                };
                if bound {
                    // Without a table the next word is checked as the value (conservative).
                    let value = attached.or_else(|| args.get(i).map(String::as_str)).unwrap_or_default();
                    check_inside(&name, value)?;
                }
                // Value words are skipped: the program reads them as values whatever they say.
                let words = spec.map_or(0, |s| s.values);
                i += words.saturating_sub(usize::from(attached.is_some()));
            } else if let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.is_empty()) {
                for (at, letter) in cluster.char_indices() {
                    let name = format!("-{letter}");
                    let spec = self.check_option(&name)?;
                    let words = spec.map_or(0, |s| s.values);
                    if words == 0 {
                        continue;
                    }
                    // The rest of the cluster is the first value, or else the next word is.
                    let rest = &cluster[at + letter.len_utf8()..];
                    let value = if rest.is_empty() { args.get(i).map_or("", String::as_str) } else { rest };
                    if spec.is_some_and(|spec| names_any(spec, &self.inside_workdir)) {
                        check_inside(&name, value)?;
                    }
                    i += words - usize::from(!rest.is_empty());
                    break;
                }
            }
        }
        Ok(())
    }

    /// Checks one option name as written; answers its table entry when the program has one.
    fn check_option(&self, name: &str) -> Result<Option<&'static OptionSpec>, String> {
        let spec = match self.table {
            Some(table) => match table.lookup(name) {
                Lookup::Found(spec) => Some(spec),
                Lookup::Unknown => return Err(format!("option {name} is not an option of the program")),
                Lookup::Ambiguous => return Err(format!("option {name} is ambiguous (spell it out)")),
            },
            None => None,
        };
        let long = name.starts_with("--");
        // A long option is refused when it abbreviates a refused one, and any option when
        // one of its other names is refused.
        let refused = self
            .refused
            .iter()
            .find(|r| if long { r.starts_with(name) && name.len() > 2 } else { *r == name })
            .or_else(|| spec.and_then(|spec| self.refused.iter().find(|r| spec.names.contains(r))));
        if let Some(refused) = refused {
            return Err(format!("option {name} is refused ({refused} is not allowed for plugins)"));
        }
        if let Some(allowed) = &self.allowed {
            let listed = match spec {
                Some(spec) => names_any(spec, allowed),
                None => allowed.iter().any(|a| a == name),
            };
            if !listed {
                return Err(format!("option {name} is not among the allowed options"));
            }
        }
        Ok(spec)
    }
}

/// Whether one of the option's names is in `list`.
fn names_any(spec: &OptionSpec, list: &[String]) -> bool {
    spec.names.iter().any(|n| list.contains(n))
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
    fn short_clusters_are_read_as_yt_dlp_reads_them() {
        // `-i` (--ignore-errors) takes no value: the rest of the cluster is more options.
        for args in [&["-iP/tmp/elsewhere"][..], &["-ia/etc/hostname"], &["-iU"], &["-ixP", "/tmp"], &["-iqa-"]] {
            assert!(check(args).is_err(), "{args:?} passed");
        }
        // A letter that takes a value ends the cluster: the rest is its value.
        assert_eq!(check(&["-if", "bestaudio", "-iqf", "-U"]), Ok(()), "-U here is -f's value");
        assert_eq!(check(&["-ixo-"]), Ok(()));
        assert!(check(&["-ixo/tmp/x"]).is_err());
        // Every refused short option in the first, a middle and the last place of a cluster.
        let refused_letters: Vec<char> = YT_DLP_REFUSED
            .iter()
            .filter_map(|r| r.strip_prefix('-').filter(|l| l.len() == 1).and_then(|l| l.chars().next()))
            .collect();
        assert_eq!(refused_letters, ['a', 'P', 'U']);
        for letter in refused_letters {
            for cluster in [format!("-{letter}ix"), format!("-i{letter}x"), format!("-ix{letter}")] {
                let e = check(&[&cluster, "value"]).unwrap_err();
                assert!(e.contains(&format!("option -{letter} is refused")), "{cluster}: {e}");
            }
        }
    }

    #[test]
    fn a_refused_option_is_refused_by_every_name_and_values_are_never_options() {
        // The long name refused, the short letter written (and the other way round).
        assert!(builtin("yt-dlp").with(&["--quiet".into()], None).check(&["-q".into()]).is_err());
        assert!(builtin("yt-dlp").with(&["-q".into()], None).check(&["--quiet".into()]).is_err());
        // Aliases from yt-dlp's help are the same option.
        assert!(check(&["--ppa", "x"]).is_err());
        assert!(check(&["--external-downloader", "sh"]).is_err());
        // An option's value is a value even when it reads `--`: what follows is options.
        let e = check(&["--format", "--", "--exec", "id", "https://x"]).unwrap_err();
        assert!(e.contains("--exec is refused"), "{e}");
        let e = check(&["-f", "--", "-U"]).unwrap_err();
        assert!(e.contains("-U is refused"), "{e}");
        // --alias takes two words.
        assert!(check(&["--alias", "a", "b", "--exec", "id"]).is_err());
        // Options yt-dlp does not have, and ambiguous prefixes, are refused as yt-dlp does.
        assert!(check(&["--no-such-option"]).unwrap_err().contains("not an option"));
        assert!(check(&["-Z"]).unwrap_err().contains("not an option"));
        assert!(check(&["--no"]).unwrap_err().contains("ambiguous"));
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
