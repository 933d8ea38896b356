//! A program's options as the program itself reads them: each option's names (a short
//! letter, long names and aliases) and how many words of value it takes. The argument
//! policy walks a command line with it, so a cluster like `-iP/dir` is read letter by
//! letter exactly as the program would, and an option's value is never taken for an option
//! (or an option for a value).
//!
//! Tables are text, one option per line: its names, then one `=` for each value it takes
//! (`-o --output =`, `--alias = =`). yt-dlp's table is generated from its own `--help` (see
//! [`OptionTable::from_help`]); a test compares it with the installed yt-dlp's.

use std::collections::HashMap;
use std::sync::OnceLock;

/// yt-dlp's options, as checked in (its first line names the version it was made from).
pub const YT_DLP_TABLE: &str = include_str!("yt-dlp.options");

/// The parsed table of yt-dlp's options.
pub fn yt_dlp() -> &'static OptionTable {
    static TABLE: OnceLock<OptionTable> = OnceLock::new();
    TABLE.get_or_init(|| OptionTable::parse(YT_DLP_TABLE))
}

/// One option: every name it answers to, and the words of value it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionSpec {
    pub names: Vec<String>,
    pub values: usize,
}

/// Where a name written on a command line leads.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    Found(&'a OptionSpec),
    Unknown,
    /// A long-option prefix that several options share: the program refuses it too.
    Ambiguous,
}

/// The options of one program.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OptionTable {
    options: Vec<OptionSpec>,
    by_name: HashMap<String, usize>,
}

impl OptionTable {
    /// Reads a table in the text form above (`#` starts a comment line).
    pub fn parse(text: &str) -> Self {
        let mut table = Self::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let words: Vec<&str> = line.split_whitespace().collect();
            let values = words.iter().filter(|w| **w == "=").count();
            let names = words.iter().filter(|w| **w != "=").map(|w| w.to_string()).collect();
            table.add(OptionSpec { names, values });
        }
        table
    }

    /// Builds the table from yt-dlp's `--help` (printed with a wide `COLUMNS`, so each
    /// option's description is on its line). An option line is indented four spaces and
    /// reads `-x, --name METAVAR...`; `(Alias: --other)` in its description adds a name.
    pub fn from_help(help: &str) -> Self {
        let mut table = Self::default();
        for line in help.lines().filter_map(|l| l.strip_prefix("    ")).filter(|l| l.starts_with('-')) {
            let (spec, description) = line.split_once("  ").unwrap_or((line, ""));
            let mut names = Vec::new();
            let mut values = 0;
            for word in spec.split_whitespace() {
                match word.trim_end_matches(',') {
                    name if name.starts_with('-') && values == 0 => names.push(name.to_string()),
                    _ => values += 1,
                }
            }
            for alias in description.split("(Alias: ").skip(1) {
                let alias = alias.split(')').next().unwrap_or_default();
                names.extend(alias.split(", ").map(|a| a.trim().to_string()).filter(|a| a.starts_with('-')));
            }
            // The preset list repeats `-t NAME` lines of the `-t` option itself.
            let known = names.iter().any(|n| table.by_name.contains_key(n));
            if !known {
                table.add(OptionSpec { names, values });
            }
        }
        table
    }

    /// The table in its text form, options in the order they were added.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for spec in &self.options {
            text.push_str(&spec.names.join(" "));
            text.push_str(&" =".repeat(spec.values));
            text.push('\n');
        }
        text
    }

    pub fn is_empty(&self) -> bool {
        self.options.is_empty()
    }

    /// The option a short letter (`-x`) or a long name names; a long name may be any
    /// unambiguous prefix of one, as getopt-style parsers accept.
    pub fn lookup(&self, name: &str) -> Lookup<'_> {
        if let Some(&at) = self.by_name.get(name) {
            return Lookup::Found(&self.options[at]);
        }
        if !name.starts_with("--") || name.len() <= 2 {
            return Lookup::Unknown;
        }
        // Two names of one option (a name and its alias) sharing the prefix are no ambiguity.
        let mut options: Vec<usize> =
            self.by_name.iter().filter(|(n, _)| n.starts_with(name)).map(|(_, &at)| at).collect();
        options.sort_unstable();
        options.dedup();
        match options[..] {
            [] => Lookup::Unknown,
            [at] => Lookup::Found(&self.options[at]),
            _ => Lookup::Ambiguous,
        }
    }

    fn add(&mut self, spec: OptionSpec) {
        let at = self.options.len();
        for name in &spec.names {
            self.by_name.insert(name.clone(), at);
        }
        self.options.push(spec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELP: &str = "Usage: yt-dlp [OPTIONS] URL [URL...]\n\nOptions:\n  General Options:\n\
        \x20   -h, --help                      Print this help text and exit\n\
        \x20   -i, --ignore-errors             Ignore errors\n\
        \x20   --abort-on-error                Abort (Alias: --no-ignore-errors)\n\
        \x20   --alias ALIASES OPTIONS         Create aliases\n\
        \x20   -P, --paths [TYPES:]PATH        The paths\n\
        \x20   -t, --preset-alias PRESET       Applies a predefined set of options. e.g.\n\
        \x20                                   --preset-alias mp3. The following presets\n\
        \x20   -t mp3                          -f 'ba[acodec^=mp3]/ba/b' -x\n";

    #[test]
    fn help_lines_become_options_with_their_aliases_and_value_counts() {
        let table = OptionTable::from_help(HELP);
        assert_eq!(
            table.to_text(),
            "-h --help\n-i --ignore-errors\n--abort-on-error --no-ignore-errors\n--alias = =\n\
             -P --paths =\n-t --preset-alias =\n"
        );
        assert_eq!(OptionTable::parse(&table.to_text()), table);
    }

    #[test]
    fn long_names_resolve_by_unambiguous_prefix() {
        let table = OptionTable::from_help(HELP);
        let names = |l: Lookup<'_>| match l {
            Lookup::Found(spec) => spec.names.join(" "),
            other => format!("{other:?}"),
        };
        assert_eq!(names(table.lookup("-P")), "-P --paths");
        assert_eq!(names(table.lookup("--pa")), "-P --paths");
        assert_eq!(names(table.lookup("--no-ig")), "--abort-on-error --no-ignore-errors");
        assert_eq!(names(table.lookup("--a")), "Ambiguous");
        assert_eq!(names(table.lookup("-x")), "Unknown");
        assert_eq!(names(table.lookup("--exec")), "Unknown");
    }
}
