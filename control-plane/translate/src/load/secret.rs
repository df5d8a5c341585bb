//! Summarising a Secret without keeping its data.

use std::collections::BTreeSet;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use weft_k8s_api::k8s_openapi::api::core::v1::Secret;

use crate::snapshot::SecretInfo;

/// A `kubernetes.io/tls` Secret's certificate chain and key (PEM). Its
/// `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsMaterial {
    pub chain_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("chain_pem", &format_args!("{} bytes", self.chain_pem.len()))
            .finish_non_exhaustive()
    }
}

/// The chain and key of a TLS Secret, as text.
pub fn material(secret: &Secret) -> Option<TlsMaterial> {
    let value = |key: &str| -> Option<String> {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .or_else(|| secret.string_data.as_ref().and_then(|d| d.get(key)).cloned())
    };
    Some(TlsMaterial { chain_pem: value("tls.crt")?, key_pem: value("tls.key")? })
}

/// The Secret type of TLS certificates.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// Reduces a Secret to what translation needs. For TLS Secrets the
/// certificate chain and key are parsed here, once, so that a malformed
/// Secret is reported as `InvalidCertificateRef` instead of failing later in
/// a proxy.
pub fn summarize(secret: &Secret) -> SecretInfo {
    let type_ = secret.type_.clone().unwrap_or_else(|| "Opaque".to_string());
    let mut keys = BTreeSet::new();
    if let Some(data) = &secret.data {
        keys.extend(data.keys().cloned());
    }
    if let Some(data) = &secret.string_data {
        keys.extend(data.keys().cloned());
    }
    let tls =
        (type_ == TLS_SECRET_TYPE).then(|| {
            let value =
                |key: &str| -> Option<Vec<u8>> {
                    secret.data.as_ref().and_then(|d| d.get(key)).map(|b| b.0.clone()).or_else(|| {
                        secret.string_data.as_ref().and_then(|d| d.get(key)).map(|s| s.clone().into_bytes())
                    })
                };
            check_tls_pair(value("tls.crt").as_deref(), value("tls.key").as_deref())
        });
    SecretInfo { type_, keys, tls }
}

/// Checks that `crt` holds an X.509 certificate chain and `key` the private
/// key of its first certificate, both PEM-encoded, in a form the proxies'
/// TLS stack accepts. Messages never include the data.
pub fn check_tls_pair(crt: Option<&[u8]>, key: Option<&[u8]>) -> Result<(), String> {
    let crt = crt.ok_or("key tls.crt is missing")?;
    let key = key.ok_or("key tls.key is missing")?;
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(crt).collect::<Result<_, _>>().map_err(|_| "tls.crt is not valid PEM")?;
    let Some(leaf) = certs.first() else {
        return Err("tls.crt holds no PEM certificate".into());
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|_| "tls.crt does not hold a valid X.509 certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|_| "tls.key holds no PEM private key")?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|_| "tls.key is not a usable private key (ECDSA P-256/P-384, Ed25519 or RSA)")?;
    let public = signing_key.public_key().ok_or("tls.key has no public key")?;
    if public.as_ref() != parsed.tbs_certificate.subject_pki.raw {
        return Err("tls.key is not the private key of the certificate in tls.crt".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example".to_string()]).unwrap().self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_matching_pair_is_accepted_and_mismatches_are_not() {
        let (crt, key) = pair();
        let (_, other_key) = pair();
        assert_eq!(check_tls_pair(Some(crt.as_bytes()), Some(key.as_bytes())), Ok(()));
        let err = check_tls_pair(Some(crt.as_bytes()), Some(other_key.as_bytes())).unwrap_err();
        assert!(err.contains("not the private key"), "{err}");
        let zeros =
            "-----BEGIN PRIVATE KEY-----\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n-----END PRIVATE KEY-----\n";
        assert!(check_tls_pair(Some(crt.as_bytes()), Some(zeros.as_bytes())).unwrap_err().contains("not a usable"));
        assert!(check_tls_pair(Some(b"Hello"), Some(key.as_bytes())).is_err());
        assert!(check_tls_pair(Some(crt.as_bytes()), None).is_err());
    }
}
