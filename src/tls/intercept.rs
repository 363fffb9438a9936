//! The interception CA: `hoard ca init DIR` makes it (`ca.crt` to hand out, `ca.key` readable
//! by its owner only), and `--intercept DIR` loads it to mint, for each CONNECT target, a
//! leaf certificate on the fly, kept in a bounded cache. The CA key is read into memory and
//! never written anywhere else. Which CONNECTs are intercepted is the proxy's decision.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};

use super::{Accepted, HandshakeError, TlsError};
use crate::http1::Stream;

/// Leaf certificates minted and kept at once.
const MINTED: usize = 4096;
/// How long a minted leaf is valid, and how long it is used before a fresh one is minted.
const LEAF_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);
const LEAF_REUSE: Duration = Duration::from_secs(7 * 24 * 3600);

fn ca_error(dir: &Path, reason: impl ToString) -> TlsError {
    TlsError::Ca {
        dir: dir.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Creates `DIR/ca.crt` and `DIR/ca.key` (mode 0600); refuses to replace an existing key, as
/// every client trusting it would have to be told again. Returns what to tell the operator.
pub fn init_ca(dir: &Path) -> Result<String, TlsError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let key_path = dir.join("ca.key");
    let cert_path = dir.join("ca.crt");
    if key_path.exists() {
        return Err(ca_error(
            dir,
            "ca.key already exists; remove it first to make a new CA",
        ));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| ca_error(dir, e))?;
    let key = KeyPair::generate().map_err(|e| ca_error(dir, e))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| ca_error(dir, e))?;
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let name = format!("hoard interception CA ({})", host.trim());
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "hoard");
    // Path length 0: it may sign leaves only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    let cert = params.self_signed(&key).map_err(|e| ca_error(dir, e))?;
    let mut key_file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .map_err(|e| ca_error(dir, e))?;
    key_file
        .write_all(key.serialize_pem().as_bytes())
        .and_then(|()| key_file.sync_all())
        .map_err(|e| ca_error(dir, e))?;
    std::fs::write(&cert_path, cert.pem()).map_err(|e| ca_error(dir, e))?;
    let crt = cert_path.display();
    Ok(format!(
        "Created {crt} (give this to clients) and {} (keep it secret; mode 0600).\n\
         Then start hoard with --intercept {}.\n\n\
         Trust the CA on each client:\n\
         - Debian/Ubuntu: sudo cp {crt} /usr/local/share/ca-certificates/hoard-ca.crt && sudo update-ca-certificates\n\
         - Firefox: Settings > Privacy & Security > Certificates > View Certificates > Authorities > Import {crt}\n\
         - curl: curl --cacert {crt} --proxy http://HOARD:PORT https://example.org/\n\
         - Python requests/pip: export REQUESTS_CA_BUNDLE={crt} (pip: PIP_CERT={crt})\n\
         - Node.js/npm: export NODE_EXTRA_CA_CERTS={crt}\n\
         - cargo: export CARGO_HTTP_CAINFO={crt}\n",
        key_path.display(),
        dir.display()
    ))
}

/// A minted leaf's server configuration, and when it was minted.
#[derive(Clone)]
struct Minted {
    at: Instant,
    config: Arc<ServerConfig>,
}

/// The loaded CA, minting leaf certificates for the hosts clients CONNECT to.
pub struct InterceptCa {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    /// One key for every leaf, as mitmproxy does: minting then costs one signature.
    leaf_key: KeyPair,
    minted: quick_cache::sync::Cache<String, Minted>,
}

impl InterceptCa {
    pub fn open(dir: &Path) -> Result<InterceptCa, TlsError> {
        let read = |name: &str| -> Result<String, TlsError> {
            let path: PathBuf = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| {
                ca_error(
                    dir,
                    format!(
                        "{name}: {e} (make one with `hoard ca init {}`)",
                        dir.display()
                    ),
                )
            })
        };
        let cert_pem = read("ca.crt")?;
        let key = KeyPair::from_pem(&read("ca.key")?).map_err(|e| ca_error(dir, e))?;
        let ca_der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .next()
            .ok_or_else(|| ca_error(dir, "ca.crt holds no certificate"))?
            .map_err(|e| ca_error(dir, e))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| ca_error(dir, e))?;
        Ok(InterceptCa {
            issuer,
            ca_der,
            leaf_key: KeyPair::generate().map_err(|e| ca_error(dir, e))?,
            minted: quick_cache::sync::Cache::new(MINTED),
        })
    }

    /// The server configuration presenting a certificate for `host` (a name or an address).
    fn config_for(&self, host: &str) -> Result<Arc<ServerConfig>, TlsError> {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if let Some(minted) = self.minted.get(&host)
            && minted.at.elapsed() < LEAF_REUSE
        {
            return Ok(minted.config);
        }
        let config = Arc::new(self.mint(&host)?);
        self.minted.insert(
            host,
            Minted {
                at: Instant::now(),
                config: config.clone(),
            },
        );
        Ok(config)
    }

    fn mint(&self, host: &str) -> Result<ServerConfig, TlsError> {
        let failed = |reason: String| TlsError::Mint {
            host: host.to_owned(),
            reason,
        };
        let mut params =
            CertificateParams::new(vec![host.to_owned()]).map_err(|e| failed(e.to_string()))?;
        params.distinguished_name.push(DnType::CommonName, host);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + LEAF_VALIDITY;
        let mut serial = [0u8; 16];
        getrandom::getrandom(&mut serial).map_err(|e| failed(e.to_string()))?;
        serial[0] &= 0x7f;
        params.serial_number = Some(serial.to_vec().into());
        let leaf = params
            .signed_by(&self.leaf_key, &self.issuer)
            .map_err(|e| failed(e.to_string()))?;
        let provider = super::provider();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.serialize_der()));
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| failed(e.to_string()))?;
        let certified = CertifiedKey::new(vec![leaf.der().clone(), self.ca_der.clone()], signing);
        super::server_config(Arc::new(SingleCertAndKey::from(Arc::new(certified)))).map_err(failed)
    }

    /// The handshake with a client that CONNECTed to `host`, under a leaf minted for it.
    pub async fn accept(
        &self,
        host: &str,
        stream: Stream,
        timeout: Duration,
    ) -> Result<Accepted<Stream>, HandshakeError> {
        let config = self
            .config_for(host)
            .map_err(|e| HandshakeError::Failed(std::io::Error::other(e.to_string())))?;
        tokio::time::timeout(timeout, super::handshake(config, stream))
            .await
            .map_err(|_| HandshakeError::Timeout)?
    }
}
