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
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let mut positional = Vec::new();
    let mut flags = Vec::new();
    for (key, value) in table {
        let arg = command
            .get_arguments()
            .find(|arg| setting_name(arg) == key && is_setting(arg))
            .ok_or_else(|| format!("unknown key `{key}`"))?;
        if given.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine) {
            continue;
        }
        let values = match value {
            toml::Value::Array(items) => items,
            single => vec![single],
        };
        for value in values {
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
                _ => flags.push(format!("--{long}={text}").into()),
            }
        }
    }
    // Positional values (the port) first, where the command line would have them.
    positional.extend(flags);
    Ok(positional)
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
