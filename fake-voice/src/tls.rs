//! A throwaway certificate authority so the fake gateway can speak `wss://` to clients that
//! trust the CA through `SSL_CERT_FILE` (or an explicit extra root).

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::FakeError;

/// A CA certificate plus a `localhost`/`127.0.0.1` server certificate signed by it.
pub struct TestCa {
    /// The CA certificate, PEM encoded: what a client must trust.
    pub ca_pem: String,
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
}

impl TestCa {
    pub fn generate() -> Result<Self, FakeError> {
        let tls = |e: rcgen::Error| FakeError::Tls(e.to_string());
        let ca_key = KeyPair::generate().map_err(tls)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).map_err(tls)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().map_err(tls)?;
        let server_params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).map_err(tls)?;
        let server_cert = server_params.signed_by(&server_key, &issuer).map_err(tls)?;

        let chain =
            vec![CertificateDer::from(server_cert.der().to_vec()), CertificateDer::from(ca_cert.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| FakeError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| FakeError::Tls(e.to_string()))?;
        Ok(Self { ca_pem: ca_cert.pem(), acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)) })
    }
}
