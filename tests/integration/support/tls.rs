//! A test CA and TLS origins made with rcgen, trusted by hoard through `--ca-file`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hoard::body::{self};
use http::Response;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

pub(crate) struct TestCa {
    pub pem_file: tempfile::NamedTempFile,
    issuer: rcgen::Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivatePkcs8KeyDer<'static>,
}

impl TestCa {
    /// A CA and a server certificate for `localhost` and `127.0.0.1` signed by it.
    pub(crate) fn new() -> TestCa {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        // Names of their own: OpenSSL (curl) takes a leaf whose issuer is its own subject
        // for self-signed.
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "hoard test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().unwrap();
        let mut server_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        server_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();

        let pem_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(pem_file.path(), ca_cert.pem()).unwrap();
        TestCa {
            pem_file,
            issuer,
            ca_der: ca_cert.der().clone(),
            server_chain: vec![server_cert.der().clone()],
            server_key: PrivatePkcs8KeyDer::from(server_key.serialize_der()),
        }
    }

    pub(crate) fn pem_path(&self) -> PathBuf {
        self.pem_file.path().to_path_buf()
    }

    /// A certificate for `names` signed by this CA, written to `dir` as `NAME.crt` and
    /// `NAME.key` (named after the first name): the paths, for `--tls-cert`/`--tls-key`.
    pub(crate) fn leaf_files(&self, names: &[&str], dir: &Path) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0].as_str());
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let cert_path = dir.join(format!("{}.crt", names[0]));
        let key_path = dir.join(format!("{}.key", names[0]));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    /// A client configuration trusting only this CA, offering `alpn`.
    pub(crate) fn client_config(&self, alpn: &[&[u8]]) -> rustls::ClientConfig {
        client_trusting(std::slice::from_ref(&self.ca_der), alpn)
    }

    /// An HTTPS origin answering every request with 200 and `body`.
    pub(crate) async fn origin(&self, body: &'static str) -> SocketAddr {
        self.origin_with(body, &[], Arc::default()).await
    }

    /// An HTTPS origin answering 200, `headers` and `body`, counting requests in `served`.
    pub(crate) async fn origin_with(
        &self,
        body: &'static str,
        headers: &'static [(&'static str, &'static str)],
        served: Arc<AtomicUsize>,
    ) -> SocketAddr {
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            self.server_chain.clone(),
            PrivateKeyDer::Pkcs8(self.server_key.clone_key()),
        )
        .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let served = served.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let served = served.clone();
                    let service = service_fn(move |_request| {
                        served.fetch_add(1, Ordering::SeqCst);
                        let mut response = Response::new(body::full(body));
                        for (name, value) in headers {
                            response.headers_mut().insert(*name, value.parse().unwrap());
                        }
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        addr
    }

    /// A TLS client that trusts only this CA, running over an already open stream (a tunnel).
    pub(crate) async fn connect(
        &self,
        stream: TcpStream,
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        TlsConnector::from(Arc::new(self.client_config(&[])))
            .connect(ServerName::try_from("localhost").unwrap(), stream)
            .await
            .unwrap()
    }
}

/// A TLS client configuration trusting only `roots`, offering `alpn`.
pub(crate) fn client_trusting(
    roots: &[CertificateDer<'static>],
    alpn: &[&[u8]],
) -> rustls::ClientConfig {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// The first certificate in a PEM file.
pub(crate) fn pem_cert(path: &Path) -> CertificateDer<'static> {
    let pem = std::fs::read(path).unwrap();
    rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .unwrap()
        .unwrap()
}

/// A TLS connection to `addr` as `name`, trusting `config`'s roots.
pub(crate) async fn connect_tls(
    addr: SocketAddr,
    name: &str,
    config: rustls::ClientConfig,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let stream = TcpStream::connect(addr).await?;
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(name.to_owned()).unwrap(), stream)
        .await
}
