//! TLS for the S3 and ops ports: rustls with the ring provider, a PEM certificate chain
//! and private key read from files, and reloading them in place (SIGHUP).
//!
//! A reload builds a whole new `ServerConfig` and swaps it in; each accepted connection
//! takes the config current at its accept. Open connections keep the session they
//! negotiated, so renewing a certificate drops nothing. A reload that fails (a file
//! half-written, a key that does not match) keeps the old config.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::{Error, Result};

/// The crypto every TLS config of medgate uses: ring (aws-lc-rs would need cmake and
/// nasm to build).
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate and key a listener serves, and where they are read from.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    /// The config new connections get; replaced whole by [`Tls::reload`].
    current: RwLock<Arc<ServerConfig>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads the PEM certificate chain (leaf first) and private key (PKCS#8, PKCS#1 or
    /// SEC1).
    ///
    /// # Errors
    /// `Error::Tls` naming the file that cannot be read or parsed, or a key that does
    /// not match the certificate.
    pub fn load(cert: &Path, key: &Path) -> Result<Self> {
        let config = server_config(cert, key)?;
        Ok(Tls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(config)),
        })
    }

    /// Reads the files again; new connections get the new certificate.
    ///
    /// # Errors
    /// As [`Tls::load`]; the old certificate stays in use then.
    pub fn reload(&self) -> Result<()> {
        let config = Arc::new(server_config(&self.cert, &self.key)?);
        match self.current.write() {
            Ok(mut current) => *current = config,
            // A writer never panics while holding the lock; should one have, the value
            // is a whole Arc either way, so replacing it is still sound.
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        Ok(())
    }

    /// An acceptor with the current certificate.
    pub fn acceptor(&self) -> TlsAcceptor {
        let config = match self.current.read() {
            Ok(c) => Arc::clone(&c),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        TlsAcceptor::from(config)
    }

    /// The certificate file.
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }
}

fn tls_error(what: String, source: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Tls {
        what,
        source: Box::new(source),
    }
}

fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| tls_error(format!("cannot read the certificate {}", cert.display()), e))?;
    if certs.is_empty() {
        return Err(tls_error(
            format!("no PEM certificate in {}", cert.display()),
            std::io::Error::from(std::io::ErrorKind::InvalidData),
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| tls_error(format!("cannot read the private key {}", key.display()), e))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("no usable TLS protocol version".into(), e))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| {
            tls_error(
                format!(
                    "the key {} does not fit the certificate {}",
                    key.display(),
                    cert.display()
                ),
                e,
            )
        })?;
    // The connection builder speaks HTTP/1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");
        let err = Tls::load(&cert, &key).unwrap_err().to_string();
        assert!(err.contains("tls.crt"), "{err}");
        std::fs::write(&cert, "not pem\n").unwrap();
        let err = Tls::load(&cert, &key).unwrap_err().to_string();
        assert!(
            err.contains("no PEM certificate in") && err.contains("tls.crt"),
            "{err}"
        );
    }
}
