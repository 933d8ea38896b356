//! TLS trust for `wss://` voice gateways: the public web roots plus any PEM certificates the
//! operator adds (the standard `SSL_CERT_FILE`).

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;

#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("cannot read certificate file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("no usable certificate in {0}")]
    Empty(String),
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds the client configuration used for every voice gateway connection.
pub fn client_config(extra_pem_files: &[&Path]) -> Result<Arc<rustls::ClientConfig>, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for path in extra_pem_files {
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|source| TlsConfigError::Read { path: shown.clone(), source })?;
        let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice()).filter_map(Result::ok).collect();
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(TlsConfigError::Empty(shown));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
