//! A mesh's certificate authority.

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use time::{Duration, OffsetDateTime};

/// The CA of one mesh: its root certificate (what every proxy of the mesh
/// trusts) and the key that signs workload certificates. The key stays in
/// the control plane.
pub struct MeshCa {
    pub trust_domain: String,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    key_pem: String,
    not_after: OffsetDateTime,
}

impl std::fmt::Debug for MeshCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("MeshCa").field("trust_domain", &self.trust_domain).field("not_after", &self.not_after).finish()
    }
}

/// Why a CA could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("generating the CA: {0}")]
    Generate(rcgen::Error),
    #[error("the CA certificate cannot be used: {0}")]
    Certificate(String),
    #[error("the CA key cannot be used: {0}")]
    Key(rcgen::Error),
    #[error("the CA key does not belong to the CA certificate")]
    KeyMismatch,
}

/// Default lifetime of a generated mesh root.
pub const ROOT_LIFETIME: Duration = Duration::days(3650);

impl MeshCa {
    /// A new self-signed root for `trust_domain`, valid from `now` for
    /// `lifetime`.
    pub fn generate(trust_domain: &str, now: OffsetDateTime, lifetime: Duration) -> Result<Self, CaError> {
        let key = KeyPair::generate().map_err(CaError::Generate)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "Weft");
        name.push(DnType::CommonName, format!("Weft mesh CA {trust_domain}"));
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + lifetime;
        let cert = params.self_signed(&key).map_err(CaError::Generate)?;
        let key_pem = key.serialize_pem();
        let not_after = params.not_after;
        Ok(MeshCa {
            trust_domain: trust_domain.to_owned(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
            key_pem,
            not_after,
        })
    }

    /// A CA from a PEM certificate and its PEM private key (a user-supplied
    /// CA, or one this crate generated earlier).
    pub fn from_pem(trust_domain: &str, cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(key_pem).map_err(CaError::Key)?;
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e: rustls_pki_types::pem::Error| CaError::Certificate(e.to_string()))?;
        let der: rustls_pki_types::CertificateDer<'static> = der;
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).map_err(|e| CaError::Certificate(e.to_string()))?;
        if !parsed.is_ca() {
            return Err(CaError::Certificate("it is not a CA certificate (basicConstraints cA is not set)".into()));
        }
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CaError::KeyMismatch);
        }
        let not_after = parsed.validity().not_after.to_datetime();
        let key_pem = key.serialize_pem();
        let issuer = Issuer::from_ca_cert_der(&der, key).map_err(|e| CaError::Certificate(e.to_string()))?;
        Ok(MeshCa { trust_domain: trust_domain.to_owned(), cert_pem: cert_pem.to_owned(), issuer, key_pem, not_after })
    }

    /// The root certificate, PEM: what proxies of the mesh trust.
    pub fn root_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key, PEM, for the state directory only.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ca_reloads_and_a_foreign_key_is_refused() {
        let now = OffsetDateTime::now_utc();
        let ca = MeshCa::generate("a.weft.local", now, ROOT_LIFETIME).unwrap();
        let again = MeshCa::from_pem("a.weft.local", ca.root_pem(), ca.key_pem()).unwrap();
        assert_eq!(again.root_pem(), ca.root_pem());
        let other = MeshCa::generate("b.weft.local", now, ROOT_LIFETIME).unwrap();
        assert!(matches!(MeshCa::from_pem("a.weft.local", ca.root_pem(), other.key_pem()), Err(CaError::KeyMismatch)));
        assert!(!format!("{ca:?}").contains("PRIVATE"));
    }
}
