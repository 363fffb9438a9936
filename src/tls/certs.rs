//! The listener's certificates: PEM chains and keys loaded from files, and the choice among
//! them by the name a client asks for (SNI), the first pair being the default. Loading only;
//! accepting connections is `mod.rs`'s.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, DnsName, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::TlsError;

/// One `--tls-cert`/`--tls-key` pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Reads a PEM chain and its private key (PKCS#8, PKCS#1 RSA or SEC1 EC) and checks that they
/// belong together.
pub(super) fn load_pair(
    pair: &CertPair,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let failed = |reason: String| TlsError::Certificate {
        path: pair.cert.clone(),
        reason,
    };
    let chain = read_chain(&pair.cert).map_err(failed)?;
    let key = read_key(&pair.key).map_err(|reason| TlsError::Certificate {
        path: pair.key.clone(),
        reason,
    })?;
    let signing = provider.key_provider.load_private_key(key).map_err(|e| {
        failed(format!(
            "the key in {} is not usable: {e}",
            pair.key.display()
        ))
    })?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| {
        failed(format!(
            "the key in {} does not belong to this certificate",
            pair.key.display()
        ))
    })?;
    Ok(Arc::new(certified))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| e.to_string())?;
    let chain = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM: {e}"))?;
    if chain.is_empty() {
        return Err("no PEM certificate in it".to_owned());
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = std::fs::read(path).map_err(|e| e.to_string())?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| format!("not PEM: {e}"))?
        .ok_or_else(|| "no PEM private key in it".to_owned())
}

/// Picks the certificate for the client's SNI name: the first whose names cover it (wildcards
/// as certificates define them), else the first one, as nginx's default server does.
#[derive(Debug)]
pub(super) struct BySni {
    pub(super) keys: Vec<Arc<CertifiedKey>>,
}

impl BySni {
    fn covers(key: &CertifiedKey, name: &ServerName<'_>) -> bool {
        key.end_entity_cert()
            .ok()
            .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
            .is_some_and(|cert| cert.verify_is_valid_for_subject_name(name).is_ok())
    }
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let first = self.keys.first()?;
        if self.keys.len() == 1 {
            return Some(first.clone());
        }
        let chosen = hello
            .server_name()
            .and_then(|name| DnsName::try_from(name).ok())
            .map(|name| ServerName::DnsName(name.to_owned()))
            .and_then(|name| self.keys.iter().find(|key| Self::covers(key, &name)));
        Some(chosen.unwrap_or(first).clone())
    }
}
