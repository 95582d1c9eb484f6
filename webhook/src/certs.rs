//! Certificates: generating a CA and serving certificates with rcgen, reading their expiry,
//! and a rustls certificate resolver whose certificate can be swapped while serving.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;

/// Errors of certificate generation and loading.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen could not build or sign a certificate.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file or string held no usable certificate.
    #[error("{what}: no PEM certificate found")]
    NoCertificate {
        /// Which input.
        what: String,
    },
    /// A PEM file or string held no usable private key.
    #[error("{what}: no usable PEM private key: {detail}")]
    BadKey {
        /// Which input.
        what: String,
        /// Why.
        detail: String,
    },
    /// The certificate could not be parsed as X.509.
    #[error("{what}: not an X.509 certificate: {detail}")]
    Parse {
        /// Which input.
        what: String,
        /// Why.
        detail: String,
    },
    /// rustls refused the certificate and key (e.g. they do not match).
    #[error("{what}: certificate and key are not usable together: {source}")]
    Rustls {
        /// Which input.
        what: String,
        /// The rustls error.
        source: rustls::Error,
    },
}

/// A PEM certificate and its PEM private key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PemPair {
    /// The certificate (chain), PEM.
    pub cert_pem: String,
    /// The PKCS#8 private key, PEM.
    pub key_pem: String,
}

/// Generates a self-signed CA valid for `validity` from now.
pub fn generate_ca(common_name: &str, validity: Duration) -> Result<PemPair, CertError> {
    let mut params = named_params(Vec::new(), common_name, validity)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    sign(&params, None)
}

/// Issues a serving certificate for `sans` (DNS names or IP addresses; the first is the
/// common name) signed by the CA `ca`.
pub fn issue_serving_cert(
    ca: &PemPair,
    sans: &[String],
    validity: Duration,
) -> Result<PemPair, CertError> {
    let issuer = ca_issuer(ca)?;
    let common_name = sans.first().map(String::as_str).unwrap_or("kaito-webhook");
    let mut params = named_params(sans.to_vec(), common_name, validity)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    sign(&params, Some(&issuer))
}

/// Issues a client certificate with common name `common_name` signed by the CA `ca` (tests,
/// and local runs of a caller).
pub fn issue_client_cert(
    ca: &PemPair,
    common_name: &str,
    validity: Duration,
) -> Result<PemPair, CertError> {
    let issuer = ca_issuer(ca)?;
    let mut params = named_params(Vec::new(), common_name, validity)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    sign(&params, Some(&issuer))
}

/// The issuer of certificates signed by the CA `ca`.
fn ca_issuer(ca: &PemPair) -> Result<Issuer<'static, KeyPair>, CertError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(|e| CertError::BadKey {
        what: "CA key".to_owned(),
        detail: e.to_string(),
    })?;
    Ok(Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?)
}

/// Parameters of a certificate for `sans` named `common_name`, valid for `validity` from now.
fn named_params(
    sans: Vec<String>,
    common_name: &str,
    validity: Duration,
) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::new(sans)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    set_validity(&mut params, validity);
    Ok(params)
}

/// Signs `params` for a new key: by `issuer`, or self-signed without one.
fn sign(
    params: &CertificateParams,
    issuer: Option<&Issuer<'_, KeyPair>>,
) -> Result<PemPair, CertError> {
    let key = KeyPair::generate()?;
    let cert = match issuer {
        Some(issuer) => params.signed_by(&key, issuer)?,
        None => params.self_signed(&key)?,
    };
    Ok(PemPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn set_validity(params: &mut CertificateParams, validity: Duration) {
    let now = OffsetDateTime::now_utc();
    // Backdate a little for clock skew between the webhook and the apiserver.
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + validity;
}

/// Validity window of the first certificate in `pem`.
pub fn validity(pem: &str, what: &str) -> Result<(OffsetDateTime, OffsetDateTime), CertError> {
    let der = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| CertError::NoCertificate {
            what: what.to_owned(),
        })?
        .map_err(|e| CertError::Parse {
            what: what.to_owned(),
            detail: e.to_string(),
        })?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| CertError::Parse {
        what: what.to_owned(),
        detail: e.to_string(),
    })?;
    let v = cert.validity();
    Ok((v.not_before.to_datetime(), v.not_after.to_datetime()))
}

/// True when the certificate in `pem` expires within `margin` from now (or cannot be read).
pub fn expires_within(pem: &str, margin: Duration) -> bool {
    match validity(pem, "certificate") {
        Ok((_, not_after)) => not_after - OffsetDateTime::now_utc() < margin,
        Err(_) => true,
    }
}

/// Builds a rustls certified key from PEM certificate chain and key.
pub fn certified_key(pair: &PemPair, what: &str) -> Result<Arc<CertifiedKey>, CertError> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| CertError::Parse {
                what: what.to_owned(),
                detail: e.to_string(),
            })?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate {
            what: what.to_owned(),
        });
    }
    let key =
        PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).map_err(|e| CertError::BadKey {
            what: what.to_owned(),
            detail: e.to_string(),
        })?;
    let provider = provider();
    let ck = CertifiedKey::from_der(chain, key, &provider).map_err(|source| CertError::Rustls {
        what: what.to_owned(),
        source,
    })?;
    Ok(Arc::new(ck))
}

/// The ring crypto provider (the only one compiled in).
pub fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// A rustls certificate resolver whose certificate is replaced at run time (file change,
/// rotation); new handshakes use the new certificate, open connections keep theirs.
#[derive(Debug, Default)]
pub struct ReloadingResolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl ReloadingResolver {
    /// An empty resolver (handshakes fail until [`Self::set`] is called).
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the certificate served to new connections.
    pub fn set(&self, key: Arc<CertifiedKey>) {
        match self.current.write() {
            Ok(mut guard) => *guard = Some(key),
            Err(poisoned) => *poisoned.into_inner() = Some(key),
        }
    }

    /// True once a certificate is loaded.
    pub fn is_loaded(&self) -> bool {
        match self.current.read() {
            Ok(guard) => guard.is_some(),
            Err(poisoned) => poisoned.into_inner().is_some(),
        }
    }

    /// The DER of the certificate served now, if any.
    pub fn current_der(&self) -> Option<Vec<u8>> {
        self.get()
            .and_then(|k| k.cert.first().map(|c| c.as_ref().to_vec()))
    }

    fn get(&self) -> Option<Arc<CertifiedKey>> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.get()
    }
}

/// A rustls server config (HTTP/2 and HTTP/1.1 via ALPN) serving `resolver`'s certificate,
/// with no client authentication.
pub fn server_config(
    resolver: Arc<ReloadingResolver>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Errors of the client-authentication setup.
#[derive(Debug, thiserror::Error)]
pub enum ClientAuthError {
    /// The client CA file holds no usable certificate.
    #[error(
        "--client-ca-file {path}: {detail}: give the PEM CA that signs the API server's webhook client certificate"
    )]
    Ca {
        /// The file.
        path: String,
        /// Why.
        detail: String,
    },
    /// rustls refused the verifier or the config.
    #[error("client authentication: {0}")]
    Rustls(String),
}

/// Who may call the admission endpoints: a client certificate signed by one of `ca_pem`'s CAs
/// and, unless `allowed_names` is empty, naming one of them as its subject common name or a
/// DNS subject alternative name (the CA of a cluster signs users' certificates too).
#[derive(Clone, Debug)]
pub struct ClientAuth {
    /// PEM CA bundle.
    pub ca_pem: String,
    /// Where `ca_pem` came from, for messages.
    pub source: String,
    /// Accepted names; empty: any certificate the CA signed.
    pub allowed_names: Vec<String>,
}

/// A rustls server config like [`server_config`] that requires a client certificate
/// verified against `auth`: a TLS client without one, or with another, fails the handshake.
pub fn server_config_with_client_auth(
    resolver: Arc<ReloadingResolver>,
    auth: &ClientAuth,
) -> Result<rustls::ServerConfig, ClientAuthError> {
    let ca_error = |detail: String| ClientAuthError::Ca {
        path: auth.source.clone(),
        detail,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(auth.ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| ca_error(format!("not PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| ca_error(format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(ca_error("no PEM certificate found".to_owned()));
    }
    let provider = Arc::new(provider());
    let inner = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| ClientAuthError::Rustls(e.to_string()))?;
    let verifier = Arc::new(NamedClientVerifier {
        inner,
        allowed: auth.allowed_names.clone(),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientAuthError::Rustls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The subject common names and DNS subject alternative names of a certificate.
pub fn certificate_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push((*dns).to_owned());
            }
        }
    }
    names
}

/// The webpki chain check, then the name check of [`ClientAuth::allowed_names`].
#[derive(Debug)]
struct NamedClientVerifier {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    allowed: Vec<String>,
}

impl rustls::server::danger::ClientCertVerifier for NamedClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if self.allowed.is_empty() {
            return Ok(verified);
        }
        let names = certificate_names(end_entity.as_ref());
        if names.iter().any(|n| self.allowed.contains(n)) {
            Ok(verified)
        } else {
            tracing::warn!(
                ?names,
                allowed = ?self.allowed,
                "admission client certificate refused: its names are not in --client-allowed-names"
            );
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_signs_a_serving_cert_with_ip_and_dns_sans() -> Result<(), CertError> {
        let ca = generate_ca("test CA", Duration::from_secs(3600))?;
        let serving = issue_serving_cert(
            &ca,
            &["svc.ns.svc".to_owned(), "127.0.0.1".to_owned()],
            Duration::from_secs(600),
        )?;
        let (nb, na) = validity(&serving.cert_pem, "serving")?;
        assert!(na - nb > time::Duration::minutes(14));
        assert!(!expires_within(&serving.cert_pem, Duration::from_secs(60)));
        assert!(expires_within(&serving.cert_pem, Duration::from_secs(3600)));
        certified_key(&serving, "serving")?;
        // A key that does not belong to the certificate is refused.
        let other = issue_serving_cert(&ca, &["x".to_owned()], Duration::from_secs(600))?;
        let mixed = PemPair {
            cert_pem: serving.cert_pem,
            key_pem: other.key_pem,
        };
        assert!(certified_key(&mixed, "mixed").is_err());
        Ok(())
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let pair = PemPair {
            cert_pem: "not pem".to_owned(),
            key_pem: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_owned(),
        };
        assert!(certified_key(&pair, "garbage").is_err());
        assert!(validity("nothing", "garbage").is_err());
        assert!(expires_within("nothing", Duration::from_secs(1)));
    }
}
