//! Certificates with rcgen: a CA, and serving certificates it signs
//! (ECDSA P-256). Pure apart from [`write_dir`].

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

/// The Service the manifests install.
pub const SERVICE_NAME: &str = "agentic-webhook";
pub const SERVICE_NAMESPACE: &str = "agentic-system";

/// DNS names the apiserver may use to reach the Service.
pub fn default_dns_names() -> Vec<String> {
    let svc = format!("{SERVICE_NAME}.{SERVICE_NAMESPACE}.svc");
    vec![
        SERVICE_NAME.to_owned(),
        format!("{SERVICE_NAME}.{SERVICE_NAMESPACE}"),
        svc.clone(),
        format!("{svc}.cluster.local"),
    ]
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("invalid DNS name {0:?}")]
    DnsName(String),
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// A CA: its certificate (PEM) and key (PKCS#8 PEM).
#[derive(Clone, Debug)]
pub struct CaPem {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A serving pair: leaf certificate (PEM) and key (PKCS#8 PEM).
#[derive(Clone, Debug)]
pub struct PairPem {
    pub cert_pem: String,
    pub key_pem: String,
}

fn validity(params: &mut CertificateParams, now: OffsetDateTime, lifetime: Duration) {
    // Small back-dating absorbs clock skew between us and the apiserver.
    params.not_before = now - time::Duration::minutes(5);
    params.not_after =
        now + time::Duration::try_from(lifetime).unwrap_or(time::Duration::days(365));
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // rustls' provider RNG (ring's SystemRandom); a failure leaves zeros,
    // which only costs serial uniqueness, never validity.
    let _ = rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes);
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // and without a leading zero byte
    SerialNumber::from_slice(&bytes)
}

/// A new self-signed CA.
pub fn generate_ca(common_name: &str, lifetime: Duration) -> Result<CaPem, CertError> {
    generate_ca_at(common_name, OffsetDateTime::now_utc(), lifetime)
}

/// A new self-signed CA valid from `now` (less a little skew) for `lifetime`.
pub fn generate_ca_at(
    common_name: &str,
    now: OffsetDateTime,
    lifetime: Duration,
) -> Result<CaPem, CertError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    validity(&mut params, now, lifetime);
    let cert = params.self_signed(&key)?;
    Ok(CaPem {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A serving certificate for `dns_names` and `ips`, signed by `ca`.
pub fn issue_serving(
    ca: &CaPem,
    dns_names: &[String],
    ips: &[IpAddr],
    lifetime: Duration,
) -> Result<PairPem, CertError> {
    issue_serving_at(ca, dns_names, ips, OffsetDateTime::now_utc(), lifetime)
}

/// [`issue_serving`] valid from `now`.
pub fn issue_serving_at(
    ca: &CaPem,
    dns_names: &[String],
    ips: &[IpAddr],
    now: OffsetDateTime,
    lifetime: Duration,
) -> Result<PairPem, CertError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let cn = dns_names
        .first()
        .cloned()
        .or_else(|| ips.first().map(ToString::to_string))
        .unwrap_or_else(|| SERVICE_NAME.to_owned());
    params.distinguished_name.push(DnType::CommonName, cn);
    for name in dns_names {
        let dns = name
            .clone()
            .try_into()
            .map_err(|_| CertError::DnsName(name.clone()))?;
        params.subject_alt_names.push(SanType::DnsName(dns));
    }
    for ip in ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    validity(&mut params, now, lifetime);
    let cert = params.signed_by(&key, &issuer)?;
    Ok(PairPem {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A client certificate signed by `ca` (for `serve --client-ca`: the
/// apiserver presents it through its admission kubeconfig).
pub fn issue_client(
    ca: &CaPem,
    common_name: &str,
    lifetime: Duration,
) -> Result<PairPem, CertError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    validity(&mut params, OffsetDateTime::now_utc(), lifetime);
    let cert = params.signed_by(&key, &issuer)?;
    Ok(PairPem {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A CA plus a serving pair for local use (`serve --self-signed`).
pub fn self_signed_localhost(lifetime: Duration) -> Result<(CaPem, PairPem), CertError> {
    let ca = generate_ca("agentic-webhook local CA", lifetime)?;
    let pair = issue_serving(
        &ca,
        &["localhost".to_owned()],
        &[
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
        ],
        lifetime,
    )?;
    Ok((ca, pair))
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), CertError> {
    use std::io::Write as _;
    let io = |source| CertError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(mode);
    }
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    // `mode` applies only on create; enforce it on an existing file too.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    }
    Ok(())
}

/// What the certificate manager reads from a PEM certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub not_before: i64,
    pub not_after: i64,
    pub serial: String,
    pub der: Vec<u8>,
}

impl CertInfo {
    /// Just a validity window (for timing decisions).
    pub fn window(not_before: i64, not_after: i64) -> Self {
        CertInfo {
            not_before,
            not_after,
            serial: String::new(),
            der: Vec::new(),
        }
    }
}

/// Parse the first certificate of a PEM text.
pub fn cert_info(pem_text: &str) -> Option<CertInfo> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    Some(CertInfo {
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        serial: cert
            .raw_serial()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        der: pem.contents.clone(),
    })
}

/// Why a PEM file cannot serve as a CA.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CaCheckError {
    #[error("holds no PEM certificate")]
    NoCertificate,
    #[error("certificate {index} does not parse: {reason}")]
    Unparsable { index: usize, reason: String },
    #[error(
        "certificate {index} ({subject}) is not a CA certificate (no basicConstraints CA:TRUE); give the CA that signed the serving certificate, not the serving certificate"
    )]
    NotCa { index: usize, subject: String },
    #[error("the key is not a PEM private key: {0}")]
    Key(String),
    #[error("the key does not belong to the CA certificate")]
    KeyMismatch,
}

/// Every certificate in `pem_text` is a CA (a caBundle may hold a chain).
pub fn check_ca_bundle(pem_text: &str) -> Result<usize, CaCheckError> {
    let mut count = 0;
    for (index, pem) in x509_parser::pem::Pem::iter_from_buffer(pem_text.as_bytes()).enumerate() {
        let pem = pem.map_err(|e| CaCheckError::Unparsable {
            index,
            reason: e.to_string(),
        })?;
        if pem.label != "CERTIFICATE" {
            continue;
        }
        let cert = pem.parse_x509().map_err(|e| CaCheckError::Unparsable {
            index,
            reason: e.to_string(),
        })?;
        if !cert.is_ca() {
            return Err(CaCheckError::NotCa {
                index,
                subject: cert.subject().to_string(),
            });
        }
        count += 1;
    }
    if count == 0 {
        return Err(CaCheckError::NoCertificate);
    }
    Ok(count)
}

/// An existing CA from its certificate and key: the certificate must be a
/// CA and the key its own.
pub fn load_ca(cert_pem: &str, key_pem: &str) -> Result<CaPem, CaCheckError> {
    check_ca_bundle(cert_pem)?;
    let key = KeyPair::from_pem(key_pem).map_err(|e| CaCheckError::Key(e.to_string()))?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).map_err(|e| {
        CaCheckError::Unparsable {
            index: 0,
            reason: e.to_string(),
        }
    })?;
    let cert = pem.parse_x509().map_err(|e| CaCheckError::Unparsable {
        index: 0,
        reason: e.to_string(),
    })?;
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(CaCheckError::KeyMismatch);
    }
    Ok(CaPem {
        cert_pem: cert_pem.to_owned(),
        key_pem: key_pem.to_owned(),
    })
}

/// Write `ca.crt`, `ca.key`, `tls.crt`, `tls.key` (keys 0600).
pub fn write_dir(dir: &Path, ca: &CaPem, pair: &PairPem) -> Result<(), CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    write_file(&dir.join("ca.crt"), &ca.cert_pem, 0o644)?;
    write_file(&dir.join("ca.key"), &ca.key_pem, 0o600)?;
    write_file(&dir.join("tls.crt"), &pair.cert_pem, 0o644)?;
    write_file(&dir.join("tls.key"), &pair.key_pem, 0o600)?;
    Ok(())
}

/// Write only `tls.crt` and `tls.key` (a serving pair from an existing CA).
pub fn write_pair(dir: &Path, pair: &PairPem) -> Result<(), CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    write_file(&dir.join("tls.crt"), &pair.cert_pem, 0o644)?;
    write_file(&dir.join("tls.key"), &pair.key_pem, 0o600)
}

/// Write only the CA certificate (what `curl --cacert` needs).
pub fn write_ca_cert(path: &Path, ca: &CaPem) -> Result<(), CertError> {
    write_file(path, &ca.cert_pem, 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    #[test]
    fn a_ca_is_told_from_a_leaf_and_its_key_must_match() {
        let life = Duration::from_secs(86_400);
        let ca = generate_ca("t", life).unwrap_or_else(|e| panic!("{e}"));
        let other = generate_ca("u", life).unwrap_or_else(|e| panic!("{e}"));
        let leaf = issue_serving(&ca, &["x".into()], &[], life).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(check_ca_bundle(&ca.cert_pem), Ok(1));
        assert_eq!(
            check_ca_bundle(&format!("{}{}", ca.cert_pem, other.cert_pem)),
            Ok(2)
        );
        assert!(matches!(
            check_ca_bundle(&leaf.cert_pem),
            Err(CaCheckError::NotCa { index: 0, .. })
        ));
        assert!(matches!(
            check_ca_bundle(&format!("{}{}", ca.cert_pem, leaf.cert_pem)),
            Err(CaCheckError::NotCa { index: 1, .. })
        ));
        assert_eq!(
            check_ca_bundle("nothing here"),
            Err(CaCheckError::NoCertificate)
        );
        assert!(load_ca(&ca.cert_pem, &ca.key_pem).is_ok());
        assert_eq!(
            load_ca(&ca.cert_pem, &other.key_pem).err(),
            Some(CaCheckError::KeyMismatch)
        );
        assert!(matches!(
            load_ca(&leaf.cert_pem, &leaf.key_pem),
            Err(CaCheckError::NotCa { .. })
        ));
    }

    fn parse(pem_text: &str) -> (Vec<u8>, usize) {
        let (_, pem) =
            x509_parser::pem::parse_x509_pem(pem_text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        (pem.contents, 0)
    }

    #[test]
    fn serving_cert_is_signed_by_the_ca_and_names_the_service() {
        let day = Duration::from_secs(86_400);
        let ca = generate_ca("test CA", day).unwrap_or_else(|e| panic!("{e}"));
        let pair = issue_serving(
            &ca,
            &default_dns_names(),
            &["127.0.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))],
            day,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (ca_der, _) = parse(&ca.cert_pem);
        let (leaf_der, _) = parse(&pair.cert_pem);
        let (_, ca_cert) = X509Certificate::from_der(&ca_der).unwrap_or_else(|e| panic!("{e}"));
        let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap_or_else(|e| panic!("{e}"));
        assert!(ca_cert.is_ca());
        assert!(!leaf.is_ca());
        assert_eq!(leaf.issuer(), ca_cert.subject());
        assert!(leaf.verify_signature(Some(ca_cert.public_key())).is_ok());
        let sans: Vec<String> = leaf
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|ext| {
                ext.value
                    .general_names
                    .iter()
                    .map(|n| n.to_string())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            sans.iter()
                .any(|s| s.contains("agentic-webhook.agentic-system.svc.cluster.local")),
            "{sans:?}"
        );
        assert!(sans.iter().any(|s| s.contains("7f:00:00:01")), "{sans:?}");
        assert_ne!(ca_cert.raw_serial(), leaf.raw_serial());
        let lifetime =
            leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
        assert_eq!(lifetime, 86_400 + 300);
    }
}
