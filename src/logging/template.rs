//! Access-log templates in nginx's `log_format` style: `$remote_addr - [$time_local]
//! "$request" $status $cache_status $request_time`. Variables are nginx's names where nginx
//! has one, so a template moves between the two; `${name}` sets a name off from text right
//! after it. Parsed once, when the configuration is read: an unknown variable is a
//! configuration error, never a `-` in every line.

use std::fmt::Write as _;

use super::line::{Line, squid_result};

/// One variable a template can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    RemoteAddr,
    RemotePort,
    TimeLocal,
    TimeIso8601,
    Msec,
    Request,
    RequestMethod,
    RequestUri,
    Host,
    ServerProtocol,
    Status,
    BodyBytesSent,
    RequestTime,
    HttpReferer,
    HttpUserAgent,
    UpstreamStatus,
    CacheStatus,
    SquidResult,
    RequestId,
    Mode,
    BytesUp,
    BytesDown,
    RequestCompletion,
    Peer,
}

/// Each variable's name, as written after `$`.
const FIELDS: [(&str, Field); 24] = [
    ("remote_addr", Field::RemoteAddr),
    ("remote_port", Field::RemotePort),
    ("time_local", Field::TimeLocal),
    ("time_iso8601", Field::TimeIso8601),
    ("msec", Field::Msec),
    ("request", Field::Request),
    ("request_method", Field::RequestMethod),
    ("request_uri", Field::RequestUri),
    ("host", Field::Host),
    ("server_protocol", Field::ServerProtocol),
    ("status", Field::Status),
    ("body_bytes_sent", Field::BodyBytesSent),
    ("request_time", Field::RequestTime),
    ("http_referer", Field::HttpReferer),
    ("http_user_agent", Field::HttpUserAgent),
    ("upstream_status", Field::UpstreamStatus),
    ("cache_status", Field::CacheStatus),
    ("squid_result", Field::SquidResult),
    ("request_id", Field::RequestId),
    ("mode", Field::Mode),
    ("bytes_up", Field::BytesUp),
    ("bytes_down", Field::BytesDown),
    ("request_completion", Field::RequestCompletion),
    ("peer", Field::Peer),
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(Field),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error(
        "unknown log variable ${name}{}; known: {}",
        suggestion(name),
        known_names()
    )]
    UnknownVariable { name: String },
    #[error("unclosed ${{ in log template")]
    Unclosed,
}

/// ` (did you mean $status?)` for a near miss.
fn suggestion(name: &str) -> String {
    FIELDS
        .iter()
        .map(|(known, _)| (strsim::jaro_winkler(name, known), known))
        .filter(|(score, _)| *score > 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map_or_else(String::new, |(_, known)| {
            format!(" (did you mean ${known}?)")
        })
}

fn known_names() -> String {
    FIELDS
        .iter()
        .map(|(name, _)| format!("${name}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(dollar) = rest.find('$') {
            literal.push_str(&rest[..dollar]);
            let after = &rest[dollar + 1..];
            let (name, next) = if let Some(braced) = after.strip_prefix('{') {
                let end = braced.find('}').ok_or(TemplateError::Unclosed)?;
                (&braced[..end], &braced[end + 1..])
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                if !after.starts_with(|c: char| c.is_ascii_alphabetic()) {
                    literal.push('$');
                    rest = after;
                    continue;
                }
                (&after[..end], &after[end..])
            };
            let field = FIELDS
                .iter()
                .find(|(known, _)| *known == name)
                .map(|(_, field)| *field)
                .ok_or_else(|| TemplateError::UnknownVariable {
                    name: name.to_owned(),
                })?;
            if !literal.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut literal)));
            }
            pieces.push(Piece::Field(field));
            rest = next;
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template { pieces })
    }

    /// The line for one request, newline-terminated. A value the request does not have is
    /// `-`, as in nginx.
    pub(super) fn render(&self, line: &Line<'_>) -> String {
        let mut out = String::with_capacity(160);
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Field(field) => write_field(&mut out, *field, line),
            }
        }
        out.push('\n');
        out
    }
}

fn write_field(out: &mut String, field: Field, line: &Line<'_>) {
    let record = line.record;
    let or_dash = |out: &mut String, value: Option<String>| match value {
        Some(value) => out.push_str(&value),
        None => out.push('-'),
    };
    // Writing into a String cannot fail.
    let _ = match field {
        Field::RemoteAddr => write!(out, "{}", record.client.ip()),
        Field::RemotePort => write!(out, "{}", record.client.port()),
        Field::TimeLocal => write!(out, "{}", super::line::apache_time(record.started_at)),
        Field::TimeIso8601 => write!(out, "{}", super::line::rfc3339(record.started_at)),
        Field::Msec => write!(out, "{}", super::line::epoch_millis(record.started_at)),
        Field::Request => write!(out, "{} {} {:?}", record.method, record.uri, record.version),
        Field::RequestMethod => write!(out, "{}", record.method),
        Field::RequestUri => write!(out, "{}", record.uri),
        Field::Host => {
            or_dash(out, record.uri.host().map(str::to_owned));
            Ok(())
        }
        Field::ServerProtocol => write!(out, "{:?}", record.version),
        Field::Status => write!(out, "{}", record.status.as_u16()),
        Field::BodyBytesSent => write!(out, "{}", line.bytes),
        Field::RequestTime => write!(out, "{:.3}", line.elapsed.as_secs_f64()),
        Field::HttpReferer => write!(out, "{}", super::line::header_text(record.referer.as_ref())),
        Field::HttpUserAgent => write!(
            out,
            "{}",
            super::line::header_text(record.user_agent.as_ref())
        ),
        Field::UpstreamStatus => {
            or_dash(out, record.upstream_status.map(|s| s.to_string()));
            Ok(())
        }
        Field::CacheStatus => write!(
            out,
            "{}",
            record
                .cache
                .map_or("NONE", crate::cache::CacheOutcome::as_str)
        ),
        Field::SquidResult => write!(out, "{}", squid_result(record)),
        Field::RequestId => write!(out, "{}", record.id),
        Field::Mode => write!(out, "{:?}", record.mode),
        Field::BytesUp => {
            or_dash(out, record.tunnel.map(|(up, _)| up.to_string()));
            Ok(())
        }
        Field::BytesDown => {
            or_dash(out, record.tunnel.map(|(_, down)| down.to_string()));
            Ok(())
        }
        // nginx: "OK" when the whole response went, else empty.
        Field::RequestCompletion => {
            if line.complete {
                out.push_str("OK");
            }
            Ok(())
        }
        Field::Peer => {
            or_dash(out, record.peer.as_deref().map(str::to_owned));
            Ok(())
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_name_known_variables_only() {
        let template = Template::parse("$remote_addr ${status}x $$ $ costs $5").unwrap();
        assert_eq!(
            template.pieces,
            vec![
                Piece::Field(Field::RemoteAddr),
                Piece::Text(" ".into()),
                Piece::Field(Field::Status),
                Piece::Text("x $$ $ costs $5".into()),
            ]
        );
        let unknown = Template::parse("$remote_addr $stauts").unwrap_err();
        assert_eq!(
            unknown,
            TemplateError::UnknownVariable {
                name: "stauts".into()
            }
        );
        assert!(
            unknown.to_string().contains("(did you mean $status?)"),
            "{unknown}"
        );
        assert_eq!(Template::parse("${status"), Err(TemplateError::Unclosed));
    }
}
