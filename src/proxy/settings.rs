//! What the proxy runs with, as `config` builds it: where requests go (`Mode`), who is held to
//! the safe destination defaults, and the access settings a reload replaces (`AccessSettings`,
//! turned into `Rules`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderValue, Uri};
use ipnet::IpNet;

use super::ServerName;
use crate::upstream::UpstreamSettings;

/// Where origin-form requests go.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// Absolute-form requests and CONNECT; origin-form requests are gateway requests.
    Forward,
    /// Every origin-form request goes to one origin.
    Reverse {
        upstream: Uri,
        upstream_host: Option<HeaderValue>,
    },
}

impl Mode {
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Forward => "forward proxy",
            Mode::Reverse { .. } => "reverse proxy",
        }
    }
}

/// The proxy's settings, fixed at start.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub mode: Mode,
    /// `--intercept`: CONNECTs are answered with TLS and served, except to these hosts.
    pub intercept: bool,
    pub intercept_skip: Vec<ServerName>,
    /// Clients held to `--deny-dest` only, not to the safe defaults.
    pub local_clients: Vec<IpNet>,
    pub admin_listen: Option<SocketAddr>,
    /// `None`: no limit.
    pub request_timeout: Option<Duration>,
    pub upstream: UpstreamSettings,
    pub access: AccessSettings,
}

/// Who may do what: the settings a SIGHUP reload replaces while hoard runs (as `Rules`).
#[derive(Debug, Clone)]
pub struct AccessSettings {
    /// Who may use the proxy.
    pub allow: Vec<IpNet>,
    /// Who may use `/_hoard/` and PURGE.
    pub admin_allow: Vec<IpNet>,
    pub auth_file: Option<PathBuf>,
    /// Reverse mode: the Host names answered for (empty: any).
    pub server_names: Vec<ServerName>,
    pub trust_forwarded: Vec<IpNet>,
    pub connect_ports: Vec<u16>,
    pub tunnel_idle_timeout: Duration,
    pub reject_get_body: bool,
    /// 0: no limit.
    pub max_request_body: u64,
    pub follow_redirects: bool,
}
