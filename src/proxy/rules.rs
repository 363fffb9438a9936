//! `Rules`: who may do what, the settings a SIGHUP reload swaps whole while hoard runs.

use std::sync::Arc;

use super::auth;
use super::{AccessSettings, ServerName};

/// Who may do what: the settings a SIGHUP reload replaces while hoard runs.
pub struct Rules {
    pub allow: Vec<ipnet::IpNet>,
    pub admin_allow: Vec<ipnet::IpNet>,
    /// `--auth-file` users; `None`: no authentication.
    pub users: Option<Arc<auth::Users>>,
    pub connect_ports: Vec<u16>,
    pub max_request_body: u64,
    pub follow_redirects: bool,
    /// Reverse mode: the Host names answered for (empty: any).
    pub server_names: Vec<ServerName>,
    /// Clients whose forwarding headers are believed.
    pub trust_forwarded: Vec<ipnet::IpNet>,
    pub reject_get_body: bool,
    pub tunnel_idle_timeout: std::time::Duration,
}

impl Rules {
    /// The rules for these settings (loading the auth file, if any).
    pub fn load(config: &AccessSettings) -> Result<Rules, auth::AuthFileError> {
        let users = match &config.auth_file {
            Some(path) => Some(Arc::new(auth::Users::load(path)?)),
            None => None,
        };
        Ok(Rules {
            allow: config.allow.clone(),
            admin_allow: config.admin_allow.clone(),
            users,
            connect_ports: config.connect_ports.clone(),
            max_request_body: config.max_request_body,
            follow_redirects: config.follow_redirects,
            server_names: config.server_names.clone(),
            trust_forwarded: config.trust_forwarded.clone(),
            reject_get_body: config.reject_get_body,
            tunnel_idle_timeout: config.tunnel_idle_timeout,
        })
    }
}
