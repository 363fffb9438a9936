//! CONNECT tunnels: check the port against the allowlist, dial the target, answer 200, then
//! copy bytes both ways until either side closes. hoard never looks inside a tunnel.

use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::ProxyError;
use crate::body::{self, ProxyBody};
use crate::upstream::{DenyList, UpstreamError};

pub async fn open(
    request: Request<Incoming>,
    allowed_ports: &[u16],
    deny: &DenyList,
    connect_timeout: Duration,
) -> Result<Response<ProxyBody>, ProxyError> {
    let authority = request
        .uri()
        .authority()
        .ok_or(ProxyError::BadRequest("CONNECT needs a host:port target"))?
        .clone();
    if authority.as_str().contains('@') {
        return Err(ProxyError::BadRequest(
            "CONNECT target must not contain user information",
        ));
    }
    let port = authority
        .port_u16()
        .ok_or(ProxyError::BadRequest("CONNECT target needs a port"))?;
    if !allowed_ports.contains(&port) {
        let allowed = allowed_ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",");
        return Err(ProxyError::ConnectPortDenied { port, allowed });
    }
    deny.check_target(authority.host(), port)
        .map_err(|denied| UpstreamError::Denied(denied.to_string()))?;
    let host = authority.as_str().to_owned();
    let target = dial(authority.host(), port, deny, connect_timeout).await?;

    let client = tracing::Span::current();
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(request).await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(parent: &client, "CONNECT {host}: client went away before the tunnel opened: {e}");
                return;
            }
        };
        let mut client_io = TokioIo::new(upgraded);
        let mut target = target;
        match tokio::io::copy_bidirectional(&mut client_io, &mut target).await {
            Ok((up, down)) => {
                tracing::debug!(parent: &client, "CONNECT {host}: closed, {up} bytes up, {down} bytes down");
            }
            Err(e) => tracing::debug!(parent: &client, "CONNECT {host}: ended: {e}"),
        }
    });

    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::OK;
    Ok(response)
}

/// Resolves (checking every address against the deny rules) and connects, keeping DNS
/// failures, denials, refusals and timeouts apart for the client.
async fn dial(
    name: &str,
    port: u16,
    deny: &DenyList,
    connect_timeout: Duration,
) -> Result<TcpStream, UpstreamError> {
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let host = format!("{name}:{port}");
    let host = host.as_str();
    let attempt = async {
        let addrs: Vec<SocketAddr> =
            crate::upstream::resolve(deny, name, port)
                .await
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::PermissionDenied => UpstreamError::Denied(e.to_string()),
                    _ => UpstreamError::Dns {
                        host: host.to_owned(),
                        reason: e.to_string(),
                    },
                })?;
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(UpstreamError::Connect {
            host: host.to_owned(),
            reason: last.map_or_else(|| "no addresses".to_owned(), |e| e.to_string()),
        })
    };
    tokio::time::timeout(connect_timeout, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(UpstreamError::ConnectTimeout {
                host: host.to_owned(),
                after: connect_timeout,
            })
        })
}
