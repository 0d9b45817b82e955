//! The node's TLS identity: the certificate its TLS KV port and HTTPS REST present.
//!
//! ```text
//! --tls-cert FILE --tls-key FILE   a PEM certificate chain and its PEM private key
//! otherwise                        a self-signed certificate for 127.0.0.1 and localhost made
//!                                  at start (rcgen), written out for clients to trust
//! ```
//!
//! rustls with the ring provider; TLS 1.2 and 1.3, no client certificates.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate and key the node serves TLS with.
#[derive(Clone)]
pub struct TlsIdentity {
    /// The certificate chain in PEM, what a client trusts (`--cacert`).
    pub cert_pem: String,
    /// The private key in PEM, kept only for a generated identity (to write it out).
    key_pem: Option<String>,
    config: Arc<ServerConfig>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsIdentity(***)")
    }
}

fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, String> {
    // ring, as reqwest's rustls-tls uses it; aws-lc-rs would add a large C build for nothing
    // the reference node needs (post-quantum key exchange).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the certificate and key do not make a TLS identity: {e}"))?;
    Ok(Arc::new(config))
}

impl TlsIdentity {
    /// Reads a PEM certificate chain and private key.
    pub fn load(cert: &Path, key: &Path) -> Result<TlsIdentity, String> {
        let cert_pem = std::fs::read_to_string(cert)
            .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    format!("--tls-cert {}: not a PEM certificate: {e}", cert.display())
                })?;
        if certs.is_empty() {
            return Err(format!(
                "--tls-cert {}: no certificate in it",
                cert.display()
            ));
        }
        let key_der = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| format!("--tls-key {}: not a PEM private key: {e}", key.display()))?;
        Ok(TlsIdentity {
            config: server_config(certs, key_der)?,
            cert_pem,
            key_pem: None,
        })
    }

    /// A new self-signed certificate for 127.0.0.1 and localhost.
    pub fn self_signed() -> Result<TlsIdentity, String> {
        let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let ck = rcgen::generate_simple_self_signed(names)
            .map_err(|e| format!("generating a self-signed certificate: {e}"))?;
        let cert_pem = ck.cert.pem();
        let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der())
            .map_err(|e| format!("the generated key: {e}"))?;
        Ok(TlsIdentity {
            config: server_config(vec![ck.cert.der().clone()], key)?,
            cert_pem,
            key_pem: Some(ck.signing_key.serialize_pem()),
        })
    }

    /// Writes the certificate (PEM) to `path`, for clients to trust.
    pub fn write_cert(&self, path: &Path) -> std::io::Result<PathBuf> {
        std::fs::write(path, &self.cert_pem)?;
        Ok(path.to_path_buf())
    }

    /// Writes a generated identity's private key (PEM, mode 0600) to `path`; nothing for an
    /// identity read from files. Returns whether it wrote.
    pub fn write_key(&self, path: &Path) -> std::io::Result<bool> {
        let Some(k) = &self.key_pem else {
            return Ok(false);
        };
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        std::io::Write::write_all(&mut o.open(path)?, k.as_bytes())?;
        Ok(true)
    }

    /// The acceptor a listener wraps its connections in.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_identity_loads_back_from_its_files_and_bad_files_are_named() {
        let id = TlsIdentity::self_signed().unwrap();
        assert!(id.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let dir = tempfile::tempdir().unwrap();
        let cert = id.write_cert(&dir.path().join("cert.pem")).unwrap();
        let key = dir.path().join("pkey.pem");
        assert!(id.write_key(&key).unwrap());
        let again = TlsIdentity::load(&cert, &key).unwrap();
        assert_eq!(again.cert_pem, id.cert_pem);
        assert!(!again.write_key(&dir.path().join("none.pem")).unwrap());
        let garbage = dir.path().join("key.pem");
        std::fs::write(&garbage, "not a key").unwrap();
        let e = TlsIdentity::load(&cert, &garbage).unwrap_err();
        assert!(e.contains("--tls-key") && e.contains("key.pem"), "{e}");
        let e = TlsIdentity::load(&dir.path().join("missing.pem"), &garbage).unwrap_err();
        assert!(e.contains("--tls-cert"), "{e}");
    }
}
