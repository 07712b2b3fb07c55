//! One configuration in three forms: every flag of every subcommand is
//! also an environment variable `RENDEZVOUS_<FLAG>` (the long name in
//! capitals, `-` as `_`) and a key of an optional TOML file given with
//! `--config FILE` (the long name itself: `listen = "127.0.0.1:8080"`).
//! The precedence is flag > environment > file > default, as in upterm's
//! and most twelve-factor servers'.
//!
//! clap does the layering: the environment through its `env` feature, the
//! file by becoming the flags' defaults (what clap falls back to after the
//! flag and the environment). Values are clap's to check, so a value is
//! checked the same way whatever its source; an error names the key, the
//! source and, from clap, what is allowed.
//!
//! `--print-config` prints the effective configuration as a TOML file
//! that `--config` takes back, each value with its source; values of
//! secrets (the flags whose environment values clap hides) are redacted.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};

/// Prefix of every flag's environment variable.
pub const ENV_PREFIX: &str = "RENDEZVOUS_";

/// Environment variable of `--config`.
pub const CONFIG_ENV: &str = "RENDEZVOUS_CONFIG";

/// What `--print-config` shows in place of a secret.
pub const REDACTED: &str = "<redacted>";

/// Flags that are not configuration: never read from the environment or
/// a file, never printed.
const NOT_CONFIGURATION: &[&str] = &["help", "version", "config", "print-config"];

/// The environment variable of flag `long`: `RENDEZVOUS_` and the name
/// in capitals, `-` as `_` (`--tls-cert` is `RENDEZVOUS_TLS_CERT`).
pub fn env_name(long: &str) -> String {
    format!("{ENV_PREFIX}{}", long.to_uppercase().replace('-', "_"))
}

/// Gives every long flag of `cmd` and its subcommands an environment
/// variable (`RENDEZVOUS_<FLAG>`), keeping those that name their own.
///
/// An on/off flag whose variable is set to off (`false`, `0`, `no`,
/// `off`, or empty) is left as if the variable were unset: clap counts a
/// flag from the environment as given, whatever its value, so
/// `RENDEZVOUS_INSECURE=false` would otherwise conflict with `--tls-cert`
/// (as an image's or a chart's default might set it).
pub fn with_env(cmd: Command) -> Command {
    let cmd = cmd.mut_args(|arg| {
        let Some(long) = arg.get_long().map(str::to_owned) else {
            return arg;
        };
        if NOT_CONFIGURATION.contains(&long.as_str()) {
            return arg;
        }
        let arg = match arg.get_env() {
            Some(_) => arg,
            None => arg.env(env_name(&long)),
        };
        let switch = matches!(arg.get_action(), ArgAction::SetTrue);
        let off = arg
            .get_env()
            .and_then(std::env::var_os)
            .is_some_and(|v| is_off(&v.to_string_lossy()));
        if switch && off { arg.env(None) } else { arg }
    });
    cmd.mut_subcommands(with_env)
}

/// Whether an on/off flag's variable says off, as clap's own reading of
/// such values does.
fn is_off(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "" | "false" | "0" | "no" | "n" | "off" | "f"
    )
}

/// A configuration file that was read: its path and the flags it set.
#[derive(Debug, Default)]
pub struct FileLayer {
    /// Where it was read from.
    pub path: Option<PathBuf>,
    /// Long names of the flags it set.
    pub keys: BTreeSet<String>,
}

/// Parses the command line with the environment and the file of
/// `--config` (or `RENDEZVOUS_CONFIG`) beneath it. Returns the matches,
/// the command they came from, and the file layer.
///
/// # Errors
/// A clap error (exit code 2) for a file that cannot be read or is not
/// TOML, an unknown key, a value of the wrong type, or any value clap
/// refuses; it names the key or variable and its source.
pub fn parse(
    cmd: Command,
    args: Vec<OsString>,
) -> Result<(ArgMatches, Command, FileLayer), clap::Error> {
    // Not built yet: a built command's lookup of flags by name does not
    // follow the changes below.
    let mut cmd = with_env(cmd);
    // Which subcommand runs, and which file it names: a first pass that
    // tolerates what the file may still supply (a missing required flag).
    let first = cmd
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(args.clone());
    let (path, leaf) = match &first {
        Ok(m) => (config_path(m), leaf_names(m)),
        Err(_) => (None, Vec::new()),
    };
    let mut layer = FileLayer::default();
    if let Some(path) = path
        && !leaf.is_empty()
    {
        let root = cmd.get_name().to_owned();
        // Global flags (`--log-format`) live on the root command until it
        // is built: their keys go there.
        let globals: Vec<String> = cmd
            .get_arguments()
            .filter(|a| a.is_global_set())
            .filter_map(|a| a.get_long())
            .filter(|l| !NOT_CONFIGURATION.contains(l))
            .map(str::to_owned)
            .collect();
        let sub = leaf_mut(&mut cmd, &leaf).expect("the subcommand just matched");
        sub.set_bin_name(format!("{root} {}", leaf.join(" ")));
        let table = read_file(sub, &path)?;
        let (global, own): (toml::Table, toml::Table) = table
            .into_iter()
            .partition(|(key, _)| globals.contains(key));
        layer = apply_table(sub, &path, own, &globals)?;
        let global = apply_table(&mut cmd, &path, global, &[])?;
        layer.keys.extend(global.keys);
    }
    let matches = cmd
        .clone()
        .try_get_matches_from(args)
        .map_err(|e| name_source(e, &cmd, &leaf, &layer))?;
    Ok((matches, cmd, layer))
}

/// The `--config` of the deepest subcommand matched (global, so every
/// level has it).
fn config_path(matches: &ArgMatches) -> Option<PathBuf> {
    let mut m = matches;
    let mut path = m.get_one::<PathBuf>("config").cloned();
    while let Some((_, sub)) = m.subcommand() {
        m = sub;
        if let Ok(Some(p)) = m.try_get_one::<PathBuf>("config") {
            path = Some(p.clone());
        }
    }
    path
}

fn leaf_names(matches: &ArgMatches) -> Vec<String> {
    let mut names = Vec::new();
    let mut m = matches;
    while let Some((name, sub)) = m.subcommand() {
        names.push(name.to_owned());
        m = sub;
    }
    names
}

fn leaf_mut<'a>(cmd: &'a mut Command, names: &[String]) -> Option<&'a mut Command> {
    let mut c = cmd;
    for name in names {
        c = c.find_subcommand_mut(name)?;
    }
    Some(c)
}

fn leaf<'a>(cmd: &'a Command, names: &[String]) -> Option<&'a Command> {
    let mut c = cmd;
    for name in names {
        c = c.find_subcommand(name)?;
    }
    Some(c)
}

/// The matches of the deepest subcommand.
pub fn leaf_matches(matches: &ArgMatches) -> (Vec<String>, &ArgMatches) {
    let mut m = matches;
    let mut names = Vec::new();
    while let Some((name, sub)) = m.subcommand() {
        names.push(name.to_owned());
        m = sub;
    }
    (names, m)
}

/// Reads the TOML file at `path` as a table.
fn read_file(cmd: &mut Command, path: &Path) -> Result<toml::Table, clap::Error> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        cmd.error(
            ErrorKind::Io,
            format!("cannot read the configuration file {shown}: {e}"),
        )
    })?;
    text.parse().map_err(|e: toml::de::Error| {
        cmd.error(
            ErrorKind::Io,
            format!(
                "the configuration file {shown} is not valid TOML: {}",
                e.message()
            ),
        )
    })
}

/// Makes the keys of `table` (read from `path`) the defaults of `cmd`'s
/// flags of the same long names. `also` are keys taken elsewhere (the
/// global flags), named in the error for an unknown key.
fn apply_table(
    cmd: &mut Command,
    path: &Path,
    table: toml::Table,
    also: &[String],
) -> Result<FileLayer, clap::Error> {
    let shown = path.display().to_string();
    let known: Vec<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| !NOT_CONFIGURATION.contains(l))
        .map(str::to_owned)
        .chain(also.iter().cloned())
        .collect();
    let mut layer = FileLayer {
        path: Some(path.to_owned()),
        keys: BTreeSet::new(),
    };
    for (key, value) in &table {
        if !known.iter().any(|k| k == key) || also.contains(key) {
            let name = cmd.get_name().to_owned();
            return Err(cmd.error(
                ErrorKind::UnknownArgument,
                format!(
                    "unknown key `{key}` in the configuration file {shown}: `rendezvous {name}` takes {}",
                    known.join(", ")
                ),
            ));
        }
        let (id, flag, many) = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()))
            .map(|a| {
                let action = a.get_action();
                (
                    a.get_id().clone(),
                    matches!(action, ArgAction::SetTrue | ArgAction::SetFalse),
                    matches!(action, ArgAction::Append),
                )
            })
            .expect("a known key");
        let values = match (value, flag, many) {
            (toml::Value::Boolean(b), true, _) => vec![b.to_string()],
            (_, true, _) => {
                return Err(cmd.error(
                    ErrorKind::InvalidValue,
                    format!("key `{key}` in the configuration file {shown} must be true or false"),
                ));
            }
            (toml::Value::Array(items), _, true) => items
                .iter()
                .map(|v| scalar(v).ok_or(()))
                .collect::<Result<Vec<_>, ()>>()
                .map_err(|()| {
                    cmd.error(
                        ErrorKind::InvalidValue,
                        format!(
                            "key `{key}` in the configuration file {shown} must be a list of strings or numbers"
                        ),
                    )
                })?,
            (v, _, _) => match scalar(v) {
                Some(s) => vec![s],
                None => {
                    let what = if many { "a string, a number or a list of them" } else { "a string or a number" };
                    return Err(cmd.error(
                        ErrorKind::InvalidValue,
                        format!("key `{key}` in the configuration file {shown} must be {what}"),
                    ));
                }
            },
        };
        let taken = std::mem::take(cmd);
        *cmd = taken.mut_arg(id, |a| a.required(false).default_values(values));
        layer.keys.insert(key.clone());
    }
    Ok(layer)
}

/// A TOML string, number or boolean as the text clap parses.
fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Adds to clap's error for a bad value where the value came from: the
/// environment or the configuration file (a flag's clap names itself).
fn name_source(
    e: clap::Error,
    cmd: &Command,
    leaf_path: &[String],
    layer: &FileLayer,
) -> clap::Error {
    if !matches!(
        e.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return e;
    }
    let (Some(ContextValue::String(invalid_arg)), Some(ContextValue::String(value))) = (
        e.get(ContextKind::InvalidArg),
        e.get(ContextKind::InvalidValue),
    ) else {
        return e;
    };
    // Built, so that the leaf has the global flags too.
    let mut built = cmd.clone();
    built.build();
    let Some(sub) = leaf(&built, leaf_path) else {
        return e;
    };
    // InvalidArg reads "--listen <ADDR>".
    let long = invalid_arg
        .trim_start_matches('-')
        .split([' ', '='])
        .next()
        .unwrap_or_default()
        .to_owned();
    let Some(arg) = sub
        .get_arguments()
        .find(|a| a.get_long() == Some(long.as_str()))
    else {
        return e;
    };
    let from_env = arg
        .get_env()
        .and_then(std::env::var_os)
        .is_some_and(|v| v.to_string_lossy() == *value);
    let source = if from_env {
        format!(
            "the environment variable {}",
            arg.get_env()
                .map(|v| v.to_string_lossy())
                .unwrap_or_default()
        )
    } else if layer.keys.contains(&long) {
        format!(
            "key `{long}` in the configuration file {}",
            layer
                .path
                .as_deref()
                .map(Path::display)
                .map(|d| d.to_string())
                .unwrap_or_default()
        )
    } else {
        return e;
    };
    let rendered = e.render().to_string();
    let first = rendered
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ");
    let shown_value = if arg.is_hide_env_values_set() {
        REDACTED.to_owned()
    } else {
        format!("'{value}'")
    };
    let first = first.replacen(&format!("'{value}'"), &shown_value, 1);
    let mut sub = sub.clone();
    sub.set_bin_name(format!("{} {}", cmd.get_name(), leaf_path.join(" ")));
    sub.error(
        e.kind(),
        format!("{first}\n  (the value comes from {source})"),
    )
}

/// The effective configuration of the subcommand `matches` ran, as TOML
/// with each value's source in a comment; secrets redacted.
pub fn render(cmd: &Command, matches: &ArgMatches, layer: &FileLayer) -> String {
    let (names, m) = leaf_matches(matches);
    // Built, so that the leaf has the global flags too.
    let mut built = cmd.clone();
    built.build();
    let sub = leaf(&built, &names).unwrap_or(&built);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# rendezvous {}: effective configuration (flag > environment > file > default)",
        names.join(" ")
    );
    if let Some(path) = &layer.path {
        let _ = writeln!(out, "# configuration file: {}", path.display());
    }
    for arg in sub.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if NOT_CONFIGURATION.contains(&long) {
            continue;
        }
        let id = arg.get_id().as_str();
        let raw: Vec<String> = m
            .get_raw(id)
            .map(|vals| vals.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let source = match m.value_source(id) {
            Some(ValueSource::CommandLine) => "flag".to_owned(),
            Some(ValueSource::EnvVariable) => format!(
                "environment {}",
                arg.get_env()
                    .map(|v| v.to_string_lossy())
                    .unwrap_or_default()
            ),
            Some(ValueSource::DefaultValue) if layer.keys.contains(long) => "file".to_owned(),
            Some(_) => "default".to_owned(),
            None => {
                let _ = writeln!(out, "# {long}: not set");
                continue;
            }
        };
        let flag = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
        let quote = |v: &str| {
            if arg.is_hide_env_values_set() {
                format!("\"{REDACTED}\"")
            } else {
                toml::Value::String(v.to_owned()).to_string()
            }
        };
        let value = if flag {
            raw.first().map_or_else(|| "false".to_owned(), Clone::clone)
        } else if matches!(arg.get_action(), ArgAction::Append) {
            format!(
                "[{}]",
                raw.iter().map(|v| quote(v)).collect::<Vec<_>>().join(", ")
            )
        } else {
            raw.first().map_or_else(String::new, |v| quote(v))
        };
        let _ = writeln!(out, "{long} = {value}  # {source}");
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every subcommand, with its path (`bench scale`).
    fn every(cmd: &Command, path: String, out: &mut Vec<(String, Command)>) {
        for sub in cmd.get_subcommands() {
            let name = format!("{path} {}", sub.get_name()).trim().to_owned();
            out.push((name.clone(), sub.clone()));
            every(sub, name, out);
        }
    }

    fn subcommands() -> Vec<(String, Command)> {
        let mut cmd = with_env(crate::Cli::command());
        cmd.build();
        let mut out = Vec::new();
        every(&cmd, String::new(), &mut out);
        out
    }

    #[test]
    fn every_flag_of_every_subcommand_has_its_own_environment_variable_and_help() {
        for (name, sub) in subcommands() {
            let mut seen = BTreeSet::new();
            for arg in sub.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                if NOT_CONFIGURATION.contains(&long) {
                    continue;
                }
                let env = arg
                    .get_env()
                    .unwrap_or_else(|| panic!("{name} --{long} has no environment variable"));
                let env = env.to_string_lossy().into_owned();
                assert!(env.starts_with(ENV_PREFIX), "{name} --{long}: {env}");
                assert!(seen.insert(env.clone()), "{name}: {env} names two flags");
                assert!(
                    arg.get_help()
                        .is_some_and(|h| !h.to_string().trim().is_empty()),
                    "{name} --{long} has no help"
                );
            }
        }
    }

    #[test]
    fn every_secret_flag_is_redacted() {
        for (name, sub) in subcommands() {
            for arg in sub.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                let secret = long.contains("secret") || long.ends_with("token");
                if secret {
                    assert!(
                        arg.is_hide_env_values_set(),
                        "{name} --{long} carries a secret: give it hide_env_values"
                    );
                }
            }
        }
    }

    #[test]
    fn the_readme_documents_every_flag_of_serve_in_all_three_forms() {
        let readme = include_str!("../../README.md");
        let (_, serve) = subcommands()
            .into_iter()
            .find(|(name, _)| name == "serve")
            .expect("serve");
        for arg in serve.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if NOT_CONFIGURATION.contains(&long) {
                continue;
            }
            let row = format!("| `{long}` | `{}` |", env_name(long));
            assert!(
                readme.contains(&row),
                "README's configuration table lacks {row}"
            );
        }
    }

    #[test]
    fn the_environment_variable_of_a_flag_is_its_long_name_in_capitals() {
        assert_eq!(env_name("tls-cert"), "RENDEZVOUS_TLS_CERT");
        assert_eq!(env_name("listen"), "RENDEZVOUS_LISTEN");
    }
}
