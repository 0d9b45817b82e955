//! TLS for `couchbases://` and `dcps://` (KV over TLS, REST over HTTPS), as cbbackupmgr offers it.
//!
//! ```text
//! --cacert FILE      trust the PEM certificates of FILE (a cluster's CA, or a node's own)
//! (neither)          trust the system's roots (/etc/ssl/certs/ca-certificates.crt)
//! --no-ssl-verify    trust any certificate: encryption without authentication of the server
//! ```
//!
//! rustls with the ring provider (as reqwest's rustls-tls uses it). The server's name is the
//! host of the address dialled: an IP address is checked against the certificate's IP SANs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::ClientError;

/// Where the system keeps its trusted roots (Debian's ca-certificates).
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// How a client trusts servers.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    /// What it trusts, for messages.
    trust: String,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsClient({})", self.trust)
    }
}

#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    // ring, as reqwest's rustls-tls uses it (aws-lc-rs would add a large C build).
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(what: String) -> ClientError {
    ClientError::Tls { what }
}

/// Reads the PEM certificates of `path`.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let text = std::fs::read(path).map_err(|e| tls_error(format!("{}: {e}", path.display())))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<_, _>>()
        .map_err(|e| tls_error(format!("{}: not PEM certificates: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(tls_error(format!(
            "{}: no certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

impl TlsClient {
    /// Trusts `cacert` (or the system's roots), or nothing at all with `no_verify`.
    pub fn new(cacert: Option<&Path>, no_verify: bool) -> Result<TlsClient, ClientError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(format!("TLS versions: {e}")))?;
        if no_verify {
            let config = builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
                .with_no_client_auth();
            return Ok(TlsClient {
                config: Arc::new(config),
                trust: "any certificate (--no-ssl-verify)".into(),
            });
        }
        let path: PathBuf = cacert
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(SYSTEM_ROOTS));
        let mut roots = RootCertStore::empty();
        for c in read_certs(&path)? {
            roots
                .add(c)
                .map_err(|e| tls_error(format!("{}: {e}", path.display())))?;
        }
        let config = builder.with_root_certificates(roots).with_no_client_auth();
        Ok(TlsClient {
            config: Arc::new(config),
            trust: format!("the certificates of {}", path.display()),
        })
    }

    /// The rustls configuration (for an HTTPS client too).
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    /// What this client trusts.
    pub fn trust(&self) -> &str {
        &self.trust
    }

    /// A connector for tokio streams.
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.config.clone())
    }

    /// The name to check the certificate of `addr` (`host:port`) against.
    pub fn server_name(addr: &str) -> Result<ServerName<'static>, ClientError> {
        let host = addr
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(addr)
            .trim_start_matches('[')
            .trim_end_matches(']');
        ServerName::try_from(host.to_string())
            .map_err(|e| tls_error(format!("{addr}: not a host name for TLS: {e}")))
    }
}

/// `--no-ssl-verify`: accepts any certificate, still checks the handshake's signatures.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
