//! The TOML config file (`--config`): the same settings as the flags, under the flags' names
//! without the leading dashes (`connect-timeout = "10s"`). Each key is turned into the flag it
//! names and put before the command line, so clap parses and checks both alike and every
//! setting is defined once, in `Args`. A flag given on the command line wins over the file;
//! the file wins over the built-in default. Unknown keys are errors.

use std::ffi::OsString;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};

/// Flags that make no sense in a file.
const FLAG_ONLY: [&str; 4] = ["config", "check-config", "help", "version"];

/// The file's settings as command-line arguments (without the program name), leaving out
/// those the command line in `given` sets itself.
pub(super) fn as_arguments(
    text: &str,
    command: &Command,
    given: &ArgMatches,
) -> Result<Vec<OsString>, String> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| syntax_error(text, &e, command))?;
    let mut positional = Vec::new();
    let mut flags = Vec::new();
    for (key, value) in table {
        let arg = command
            .get_arguments()
            .find(|arg| setting_name(arg) == key && is_setting(arg))
            .ok_or_else(|| unknown_key(&key, command))?;
        if given.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine) {
            continue;
        }
        let values = match value {
            toml::Value::Array(items) => items,
            single => vec![single],
        };
        for value in values {
            let shown = value.to_string();
            let integer = value.is_integer();
            let text = match value {
                toml::Value::String(text) => text,
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Float(x) => x.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Table(table) if key == "rule" => super::rule::from_table(&table)?,
                other => return Err(format!("{key}: unexpected {}", other.type_str())),
            };
            let Some(long) = arg.get_long() else {
                positional.push(OsString::from(text));
                continue;
            };
            match arg.get_action() {
                ArgAction::SetTrue => match text.as_str() {
                    "true" => flags.push(format!("--{long}").into()),
                    "false" => {}
                    _ => return Err(format!("{key}: expected true or false, got {text:?}")),
                },
                ArgAction::Count => {
                    let times: u8 = text
                        .parse()
                        .map_err(|_| format!("{key}: expected a count, got {text:?}"))?;
                    flags.extend((0..times).map(|_| OsString::from(format!("--{long}"))));
                }
                _ => {
                    check_value(command, arg, &key, &shown, &text, integer)?;
                    flags.push(format!("--{long}={text}").into());
                }
            }
        }
    }
    // Positional values (the port) first, where the command line would have them.
    positional.extend(flags);
    Ok(positional)
}

/// A value the flag's parser refuses, told in the file's terms: the key as written, the
/// parser's reason, and for a number where a duration goes, the line to write instead.
fn check_value(
    command: &Command,
    arg: &clap::Arg,
    key: &str,
    shown: &str,
    text: &str,
    integer: bool,
) -> Result<(), String> {
    // The flag alone, parsed as the command line would: only its value can fail.
    let alone = format!("--{}={text}", arg.get_long().unwrap_or_default());
    let Err(error) = command
        .clone()
        .try_get_matches_from(["hoard", alone.as_str()])
    else {
        return Ok(());
    };
    let message = error.to_string();
    let first = message.lines().next().unwrap_or_default();
    // "error: invalid value 'x' for '--flag <V>': REASON" → REASON
    let reason = first.split_once("': ").map_or(first, |(_, reason)| reason);
    let is_duration = arg
        .get_value_names()
        .is_some_and(|names| names.iter().any(|name| name == "DURATION"));
    if is_duration && integer {
        return Err(format!(
            "{key} = {shown}: a duration needs a unit; write {key} = \"{text}s\" (or \"{text}ms\", \"{text}m\")"
        ));
    }
    if reason.contains("invalid digit") || reason.contains("too large") {
        return Err(format!(
            "{key} = {shown}: {key} is a whole number, e.g. {key} = {}",
            arg.get_default_values()
                .first()
                .map_or("100".into(), |v| v.to_string_lossy())
        ));
    }
    Err(format!("{key} = {shown}: {reason}"))
}

/// An unknown key, with the setting it most likely meant.
fn unknown_key(key: &str, command: &Command) -> String {
    let wanted = key.replace('_', "-").to_ascii_lowercase();
    let closest = command
        .get_arguments()
        .filter(|arg| is_setting(arg))
        .map(setting_name)
        .map(|name| (strsim::damerau_levenshtein(&wanted, &name), name))
        .min();
    match closest {
        Some((distance, name)) if distance <= 3 || name.replace('-', "") == wanted => {
            format!("unknown key `{key}`; did you mean `{name}`?")
        }
        _ => format!("unknown key `{key}` (docs/configuration.md lists every key)"),
    }
}

/// A TOML syntax error, with how the line is written when its value was left bare: text goes
/// in double quotes, a list in brackets.
fn syntax_error(text: &str, error: &toml::de::Error, command: &Command) -> String {
    let message = error.message().to_owned();
    let Some(span) = error.span() else {
        return message;
    };
    let start = text[..span.start].rfind('\n').map_or(0, |at| at + 1);
    let end = text[span.start..]
        .find('\n')
        .map_or(text.len(), |at| span.start + at);
    let line = &text[start..end];
    let number = text[..start].matches('\n').count() + 1;
    let Some((key, value)) = line.split_once('=') else {
        return format!("line {number}: {message}");
    };
    let (key, value) = (key.trim(), value.trim());
    let list = command
        .get_arguments()
        .find(|arg| setting_name(arg) == key)
        .is_some_and(|arg| matches!(arg.get_action(), ArgAction::Append));
    let value = value.trim_matches(['[', ']', '"']);
    let suggestion = if list {
        format!("{key} is a list: {key} = [\"{value}\"]")
    } else {
        format!("write {key} = \"{value}\"")
    };
    format!("line {number}: {message}: {suggestion}")
}

/// A setting's name in the file: its long flag, or its id for the positional port.
pub(super) fn setting_name(arg: &clap::Arg) -> String {
    arg.get_long()
        .map_or_else(|| arg.get_id().to_string(), str::to_owned)
}

/// Whether an argument is a setting (one the file may hold), not a command-line action nor
/// `--port`, which is the file's `port` written as a flag.
pub(super) fn is_setting(arg: &clap::Arg) -> bool {
    !FLAG_ONLY.contains(&setting_name(arg).as_str()) && arg.get_id() != "port_flag"
}
