//! HTTPS: a rustls server configuration from PEM files.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;
use crate::error::ServerError;

/// The rustls configuration for `tls.cert` and `tls.key`.
pub fn server_config(tls: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let invalid = |file: &str, what: &str, error: &dyn std::fmt::Display| {
        ServerError::Config(format!("{what} '{file}': {error}"))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(Path::new(&tls.cert))
        .and_then(|certs| certs.collect())
        .map_err(|e| invalid(&tls.cert, "tls.cert", &e))?;
    if certs.is_empty() {
        return Err(invalid(
            &tls.cert,
            "tls.cert",
            &"no certificate in the file",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(Path::new(&tls.key))
        .map_err(|e| invalid(&tls.key, "tls.key", &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Config(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Config(format!("TLS certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
