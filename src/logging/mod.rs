//! Console and log output: the access-log line per request (stderr or `--access-log FILE`,
//! in Squid, combined, JSON or a template's format: `access.rs`, `line.rs`, `template.rs`)
//! and, with `-v`, a step-by-step trace of request and response heads on both sides (never
//! bodies), each step in a span naming the request's id.
//!
//! Logging observes; it must not change a request or a response.

mod access;
mod line;
mod template;

pub use access::{AccessLog, AccessRecord, FLUSH_EVERY, LoggedBody, NO_ACCESS_LOG};
pub use line::{LogFormat, LogFormatError};
pub use template::TemplateError;

use std::fmt::Write as _;

use http::{HeaderMap, Request, Response};
use tracing_subscriber::EnvFilter;

/// Starts the stderr subscriber. `RUST_LOG` overrides the level chosen by `-v`.
pub fn init(verbose: u8) {
    let default = match verbose {
        0 => "hoard=info",
        1 => "hoard=debug",
        _ => "hoard=trace,hyper=debug,hyper_util=debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Colour only for a person at a terminal: a file, a pipe or journald gets plain text, and
    // NO_COLOR (https://no-color.org: set and not empty) turns it off everywhere.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Logs a request head under `step` when the verbose trace is on.
pub fn trace_request<B>(step: &str, request: &Request<B>) {
    if tracing::enabled!(tracing::Level::DEBUG) {
        let start = format!(
            "{} {} {:?}",
            request.method(),
            request.uri(),
            request.version()
        );
        tracing::debug!("{step}:\n{}", head_text(&start, request.headers()));
    }
}

/// Logs a response head under `step` when the verbose trace is on.
pub fn trace_response<B>(step: &str, response: &Response<B>) {
    if tracing::enabled!(tracing::Level::DEBUG) {
        let start = format!("{:?} {}", response.version(), response.status());
        tracing::debug!("{step}:\n{}", head_text(&start, response.headers()));
    }
}

fn head_text(start_line: &str, headers: &HeaderMap) -> String {
    let mut text = format!("  {start_line}\n");
    for (name, value) in headers {
        let _ = writeln!(
            text,
            "  {name}: {}",
            String::from_utf8_lossy(value.as_bytes())
        );
    }
    text
}
