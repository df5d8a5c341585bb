//! Summarising a Secret without keeping its data.

use std::collections::BTreeSet;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use weft_k8s_api::k8s_openapi::api::core::v1::Secret;

use crate::snapshot::SecretInfo;

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
    let tls = (type_ == TLS_SECRET_TYPE).then(|| {
        let value = |key: &str| -> Option<Vec<u8>> {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|b| b.0.clone())
                .or_else(|| {
                    secret
                        .string_data
                        .as_ref()
                        .and_then(|d| d.get(key))
                        .map(|s| s.clone().into_bytes())
                })
        };
        check_tls_pair(value("tls.crt").as_deref(), value("tls.key").as_deref())
    });
    SecretInfo { type_, keys, tls }
}

/// Checks that `crt` holds at least one X.509 certificate and `key` a private
/// key, both PEM-encoded. Messages never include the data.
pub fn check_tls_pair(crt: Option<&[u8]>, key: Option<&[u8]>) -> Result<(), String> {
    let crt = crt.ok_or("key tls.crt is missing")?;
    let key = key.ok_or("key tls.key is missing")?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(crt)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt is not valid PEM: {e}"))?;
    let Some(leaf) = certs.first() else {
        return Err("tls.crt holds no PEM certificate".into());
    };
    x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("tls.crt does not hold an X.509 certificate: {e}"))?;
    PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| format!("tls.key holds no PEM private key: {e}"))?;
    Ok(())
}
