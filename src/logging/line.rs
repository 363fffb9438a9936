//! The access log's line formats: Squid's native one, Apache's combined, JSON lines, and
//! templates (`template.rs`). Each turns one finished request's `Line` into text; none
//! does I/O.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, StatusCode};

use super::template::{Template, TemplateError};
use crate::cache::CacheOutcome;
use crate::exchange::Exchange;

/// The access log's line format: a name, or a template with `$variables`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogFormat {
    /// Squid's native format: time, duration, client, result/status, bytes, method, URL,
    /// hierarchy/origin (tunnels add their bytes each way).
    Squid,
    /// Apache/nginx combined, followed by the cache outcome, duration, upstream status and
    /// request id.
    Combined,
    /// One JSON object per line, times in RFC 3339.
    Json,
    /// nginx `log_format` style: `'$remote_addr [$time_iso8601] "$request" $status'`.
    Template(std::sync::Arc<Template>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogFormatError {
    #[error(
        "unknown log format `{0}`: use squid, combined, json, or a template with $variables \
         such as '$remote_addr [$time_iso8601] \"$request\" $status $cache_status'"
    )]
    Unknown(String),
    #[error(transparent)]
    Template(#[from] TemplateError),
}

impl std::str::FromStr for LogFormat {
    type Err = LogFormatError;

    fn from_str(text: &str) -> Result<LogFormat, LogFormatError> {
        match text {
            "squid" => Ok(LogFormat::Squid),
            "combined" => Ok(LogFormat::Combined),
            "json" => Ok(LogFormat::Json),
            _ if text.contains('$') => Ok(LogFormat::Template(std::sync::Arc::new(
                Template::parse(text)?,
            ))),
            _ => Err(LogFormatError::Unknown(text.to_owned())),
        }
    }
}

/// One finished request as a log line sees it.
pub(super) struct Line<'a> {
    pub(super) record: &'a Exchange,
    /// Body bytes sent to the client (a tunnel's: both ways).
    pub(super) bytes: u64,
    /// Whether all of the response went.
    pub(super) complete: bool,
    /// From the request's arrival to its last byte (a tunnel's: to its close).
    pub(super) elapsed: Duration,
}

impl LogFormat {
    pub(super) fn line(&self, line: &Line<'_>) -> String {
        match self {
            LogFormat::Squid => squid_line(line),
            LogFormat::Combined => combined_line(line),
            LogFormat::Json => json_line(line),
            LogFormat::Template(template) => template.render(line),
        }
    }
}

/// ` up=12 down=34` for a tunnel, nothing otherwise.
fn tunnel_text(record: &Exchange) -> String {
    record
        .tunnel
        .map_or_else(String::new, |(up, down)| format!(" up={up} down={down}"))
}

/// Squid's result code for the cache outcome.
pub(super) fn squid_result(record: &Exchange) -> &'static str {
    match record.cache {
        Some(CacheOutcome::Hit) => "TCP_HIT",
        Some(CacheOutcome::Stale) => "TCP_STALE_HIT",
        Some(CacheOutcome::Revalidated) => "TCP_REFRESH_UNMODIFIED",
        Some(CacheOutcome::Refreshed) => "TCP_REFRESH_MODIFIED",
        Some(CacheOutcome::NotCached) => "TCP_OFFLINE_MISS",
        Some(_) => "TCP_MISS",
        None if record.method == Method::CONNECT && record.status.is_success() => "TCP_TUNNEL",
        None if record.status == StatusCode::FORBIDDEN => "TCP_DENIED",
        None => "NONE",
    }
}

pub(super) fn header_text(value: Option<&http::HeaderValue>) -> std::borrow::Cow<'_, str> {
    value.map_or("-".into(), |v| String::from_utf8_lossy(v.as_bytes()))
}

fn upstream_text(record: &Exchange) -> String {
    record
        .upstream_status
        .map_or_else(|| "-".to_owned(), |s| s.to_string())
}

fn aborted(complete: bool) -> &'static str {
    if complete { "" } else { " aborted" }
}

/// `1732595544.123     12 127.0.0.1 TCP_MISS/200 1234 GET http://h/x - HIER_DIRECT/h -`
fn squid_line(line: &Line<'_>) -> String {
    let (record, bytes, complete, elapsed) = (line.record, line.bytes, line.complete, line.elapsed);
    let time = epoch_millis(record.started_at);
    // Squid names a peer picked by hashing the URL `CARP/peer`.
    let hierarchy = match (record.upstream_status, record.uri.authority()) {
        _ if record.peer.is_some() => format!(
            "CARP/{}",
            record
                .peer
                .as_deref()
                .unwrap_or("-")
                .trim_start_matches("http://")
        ),
        (Some(_), Some(authority)) => format!("HIER_DIRECT/{}", authority.host()),
        (Some(_), None) => "HIER_DIRECT/-".to_owned(),
        (None, _) => "HIER_NONE/-".to_owned(),
    };
    format!(
        "{time} {:>6} {} {}/{} {bytes} {} {} - {hierarchy} -{}{}\n",
        elapsed.as_millis(),
        record.client.ip(),
        squid_result(record),
        record.status.as_u16(),
        record.method,
        record.uri,
        tunnel_text(record),
        aborted(complete)
    )
}

/// `1732595544.123`: seconds since the epoch and milliseconds (Squid's time, nginx's `$msec`).
pub(super) fn epoch_millis(at: SystemTime) -> EpochMillis {
    EpochMillis(at.duration_since(UNIX_EPOCH).unwrap_or_default())
}

pub(super) struct EpochMillis(Duration);

impl std::fmt::Display for EpochMillis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Integer formatting: `{:.3}` of an f64 costs more than the rest of the line.
        write!(f, "{}.{:03}", self.0.as_secs(), self.0.subsec_millis())
    }
}

/// `26/Nov/2026:04:52:24 +0000`, Apache's and nginx's `$time_local` (in UTC).
pub(super) fn apache_time(at: SystemTime) -> String {
    // "Thu, 26 Nov 2026 04:52:24 GMT" → "26/Nov/2026:04:52:24 +0000"
    let date = httpdate::fmt_http_date(at);
    let parts: Vec<&str> = date.split(' ').collect();
    match parts.as_slice() {
        [_, day, month, year, clock, _] => format!("{day}/{month}/{year}:{clock} +0000"),
        _ => date.clone(),
    }
}

/// `2026-11-26T04:52:24.123Z`: RFC 3339 in UTC with milliseconds.
pub(super) fn rfc3339(at: SystemTime) -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_millis(at)
}

/// Apache's combined format, then the cache outcome, the duration in ms, the upstream
/// status and the request id.
fn combined_line(line: &Line<'_>) -> String {
    let (record, bytes, complete, elapsed) = (line.record, line.bytes, line.complete, line.elapsed);
    let time = apache_time(record.started_at);
    format!(
        "{} - - [{time}] \"{} {} {:?}\" {} {bytes} \"{}\" \"{}\" {} {:.1} {} {}{}{}\n",
        record.client.ip(),
        record.method,
        record.uri,
        record.version,
        record.status.as_u16(),
        header_text(record.referer.as_ref()),
        header_text(record.user_agent.as_ref()),
        record.cache.map_or("NONE", CacheOutcome::as_str),
        elapsed.as_secs_f64() * 1000.0,
        upstream_text(record),
        record.id,
        tunnel_text(record),
        aborted(complete)
    )
}

fn json_line(line: &Line<'_>) -> String {
    let (record, bytes, complete, elapsed) = (line.record, line.bytes, line.complete, line.elapsed);
    let mut line = serde_json::json!({
        "time": rfc3339(record.started_at).to_string(),
        "request_id": record.id.to_string(),
        "mode": format!("{:?}", record.mode),
        "client": record.client.to_string(),
        "method": record.method.as_str(),
        "url": record.uri.to_string(),
        "version": format!("{:?}", record.version),
        "status": record.status.as_u16(),
        "bytes": bytes,
        "duration_ms": elapsed.as_secs_f64() * 1000.0,
        "cache": record.cache.map(CacheOutcome::as_str),
        "upstream_status": record.upstream_status,
        "complete": complete,
        "referer": record.referer.as_ref().and_then(|v| v.to_str().ok()),
        "user_agent": record.user_agent.as_ref().and_then(|v| v.to_str().ok()),
        "bytes_up": record.tunnel.map(|(up, _)| up),
        "bytes_down": record.tunnel.map(|(_, down)| down),
    })
    .to_string();
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::{RequestId, RequestMode};

    fn record(outcome: Option<CacheOutcome>, upstream_status: Option<u16>) -> Exchange {
        Exchange {
            id: RequestId::Made(0x0123_4567_89ab_cdef),
            client: "192.0.2.9:5555".parse().unwrap(),
            method: Method::GET,
            uri: "http://example.com/a?b".parse().unwrap(),
            version: http::Version::HTTP_11,
            status: StatusCode::OK,
            cache: outcome,
            upstream_status,
            mode: RequestMode::Forward,
            referer: Some(http::HeaderValue::from_static("http://ref.example/")),
            user_agent: Some(http::HeaderValue::from_static("curl/8")),
            started: std::time::Instant::now(),
            started_at: UNIX_EPOCH + Duration::from_millis(784_111_777_250),
            tunnel: None,
            peer: None,
        }
    }

    fn line(format: &LogFormat, record: &Exchange, complete: bool, millis: u64) -> String {
        format.line(&Line {
            record,
            bytes: 10,
            complete,
            elapsed: Duration::from_millis(millis),
        })
    }

    #[test]
    fn squid_lines_name_the_fleet_member_that_answered() {
        let mut via_peer = record(Some(CacheOutcome::Peer), Some(200));
        via_peer.peer = Some("http://10.0.0.6:8080".into());
        let line = line(&LogFormat::Squid, &via_peer, true, 3);
        assert!(line.contains(" TCP_MISS/200 "), "{line}");
        assert!(line.ends_with(" CARP/10.0.0.6:8080 -\n"), "{line}");
    }

    #[test]
    fn squid_lines_carry_result_code_and_hierarchy() {
        let hit = line(
            &LogFormat::Squid,
            &record(Some(CacheOutcome::Hit), None),
            true,
            3,
        );
        assert_eq!(
            hit,
            "784111777.250      3 192.0.2.9 TCP_HIT/200 10 GET http://example.com/a?b - HIER_NONE/- -\n"
        );
        let miss = line(
            &LogFormat::Squid,
            &record(Some(CacheOutcome::UriMiss), Some(200)),
            false,
            0,
        );
        assert!(miss.contains(" TCP_MISS/200 "), "{miss}");
        assert!(
            miss.ends_with(" HIER_DIRECT/example.com - aborted\n"),
            "{miss}"
        );
    }

    #[test]
    fn squid_tunnel_lines_carry_bytes_each_way_and_the_whole_duration() {
        let mut tunnel = record(None, None);
        tunnel.method = Method::CONNECT;
        tunnel.uri = "example.com:443".parse().unwrap();
        tunnel.tunnel = Some((517, 4096));
        let text = line(&LogFormat::Squid, &tunnel, true, 61_250);
        assert_eq!(
            text,
            "784111777.250  61250 192.0.2.9 TCP_TUNNEL/200 10 CONNECT example.com:443 - HIER_NONE/- - up=517 down=4096\n"
        );
    }

    #[test]
    fn combined_lines_follow_apache_then_add_cache_fields() {
        let text = line(
            &LogFormat::Combined,
            &record(Some(CacheOutcome::Revalidated), Some(304)),
            true,
            2,
        );
        assert_eq!(
            text,
            "192.0.2.9 - - [06/Nov/1994:08:49:37 +0000] \"GET http://example.com/a?b HTTP/1.1\" 200 10 \"http://ref.example/\" \"curl/8\" REVALIDATED 2.0 304 0123456789abcdef\n"
        );
    }

    #[test]
    fn json_lines_have_rfc3339_times_and_the_request_id() {
        let text = line(
            &LogFormat::Json,
            &record(Some(CacheOutcome::Hit), None),
            true,
            2,
        );
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["time"], "1994-11-06T08:49:37.250Z");
        assert_eq!(value["request_id"], "0123456789abcdef");
        assert_eq!(value["cache"], "HIT");
        assert_eq!(value["mode"], "Forward");
    }

    #[test]
    fn templates_fill_in_nginx_style_variables() {
        let format: LogFormat = "$remote_addr:$remote_port [$time_local] [$time_iso8601] $msec \
             \"$request\" $status $body_bytes_sent $request_time \"$http_referer\" \
             \"$http_user_agent\" $upstream_status $cache_status $squid_result $request_id \
             $host $mode $bytes_up/$bytes_down ${request_completion}! $peer"
            .parse()
            .unwrap();
        let text = line(&format, &record(Some(CacheOutcome::Hit), None), true, 1234);
        assert_eq!(
            text,
            "192.0.2.9:5555 [06/Nov/1994:08:49:37 +0000] [1994-11-06T08:49:37.250Z] \
             784111777.250 \"GET http://example.com/a?b HTTP/1.1\" 200 10 1.234 \
             \"http://ref.example/\" \"curl/8\" - HIT TCP_HIT 0123456789abcdef example.com \
             Forward -/- OK! -\n"
        );
        assert_eq!(
            "squid".parse::<LogFormat>(),
            Ok(LogFormat::Squid),
            "names stay names"
        );
        let unknown = "nginx".parse::<LogFormat>().unwrap_err().to_string();
        assert!(unknown.contains("squid, combined, json"), "{unknown}");
    }
}
