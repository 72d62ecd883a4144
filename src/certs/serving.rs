//! TLS: the serving pair lives in memory and is chosen per handshake, so a
//! reload (from disk or from the certificate manager) never needs a restart
//! and never drops open connections. The resolver ignores SNI: the apiserver
//! sends none when the webhook URL host is an IP address.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::telemetry::probes::Gate;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no certificate in PEM")]
    NoCertificate,
    #[error("certificate PEM is invalid: {0}")]
    BadCertificate(String),
    #[error("private key PEM is invalid: {0}")]
    BadKey(String),
    #[error("certificate and key do not match: {0}")]
    Mismatch(String),
    #[error("client CA bundle: {0}")]
    ClientCa(String),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A loaded serving pair and what we report about it.
#[derive(Debug)]
pub struct ServingCert {
    pub key: Arc<CertifiedKey>,
    /// Serial of the leaf, hex.
    pub serial: String,
    /// notAfter of the leaf, unix seconds.
    pub not_after: i64,
    /// notBefore of the leaf, unix seconds.
    pub not_before: i64,
}

/// Parse a PEM pair and check that the key belongs to the certificate.
pub fn load_pair(cert_pem: &[u8], key_pem: &[u8]) -> Result<ServingCert, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let leaf = chain.first().ok_or(TlsError::NoCertificate)?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let serial = hex(parsed.raw_serial());
    let not_after = parsed.validity().not_after.timestamp();
    let not_before = parsed.validity().not_before.timestamp();
    let key_der =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::BadKey(e.to_string()))?;
    let provider = rustls::crypto::ring::default_provider();
    let key = CertifiedKey::from_der(chain, key_der, &provider)
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    // from_der tolerates "unknown" consistency; be strict.
    key.keys_match()
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    Ok(ServingCert {
        key: Arc::new(key),
        serial,
        not_after,
        not_before,
    })
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The current serving pair, swapped atomically.
#[derive(Debug, Default)]
pub struct CertStore {
    current: ArcSwapOption<ServingCert>,
}

impl CertStore {
    pub fn new() -> Arc<Self> {
        Arc::new(CertStore::default())
    }

    pub fn set(&self, cert: ServingCert) {
        self.current.store(Some(Arc::new(cert)));
    }

    pub fn current(&self) -> Option<Arc<ServingCert>> {
        self.current.load_full()
    }

    pub fn is_loaded(&self) -> bool {
        self.current.load().is_some()
    }
}

impl Gate for CertStore {
    fn not_ready(&self) -> Option<&'static str> {
        (!self.is_loaded()).then_some("no serving certificate loaded")
    }
}

#[derive(Debug)]
struct Resolver(Arc<CertStore>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.current.load().as_ref().map(|c| c.key.clone())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MinTlsVersion {
    #[value(name = "1.2")]
    Tls12,
    #[value(name = "1.3")]
    Tls13,
}

#[derive(Clone, Debug)]
pub struct TlsOptions {
    pub min_version: MinTlsVersion,
    pub http2: bool,
    /// PEM bundle of CAs whose client certificates are required.
    pub client_ca_pem: Option<Vec<u8>>,
}

pub fn server_config(
    store: Arc<CertStore>,
    opts: &TlsOptions,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] = match opts.min_version {
        MinTlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinTlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder =
        ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(versions)?;
    let builder = match &opts.client_ca_pem {
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| TlsError::ClientCa(e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| TlsError::ClientCa(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(TlsError::ClientCa("no certificate in bundle".into()));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::ClientCa(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(Resolver(store)));
    config.alpn_protocols = if opts.http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}
