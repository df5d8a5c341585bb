//! SPIFFE IDs of mesh workloads.

use std::fmt;
use std::str::FromStr;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// A workload identity: `spiffe://<trust-domain>/ns/<namespace>/sa/<sa>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

/// Why a string or certificate does not carry a workload SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeError {
    #[error("{0:?} is not a workload SPIFFE ID (expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>)")]
    Malformed(String),
    #[error("the certificate cannot be parsed: {0}")]
    Certificate(String),
    #[error("the certificate has no SPIFFE URI name")]
    Missing,
    #[error("the certificate has {0} SPIFFE URI names; an X.509-SVID has exactly one")]
    Several(usize),
}

impl SpiffeId {
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Self {
        SpiffeId {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        }
    }

    /// The SPIFFE ID named by the single `spiffe://` URI SAN of a DER
    /// certificate (an X.509-SVID carries exactly one).
    pub fn from_certificate(der: &[u8]) -> Result<Self, SpiffeError> {
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
            .map_err(|e| SpiffeError::Certificate(e.to_string()))?;
        let san = cert.subject_alternative_name().map_err(|e| SpiffeError::Certificate(e.to_string()))?;
        let uris: Vec<&str> = san
            .map(|ext| ext.value.general_names.iter())
            .into_iter()
            .flatten()
            .filter_map(|name| match name {
                GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(*uri),
                _ => None,
            })
            .collect();
        match uris.as_slice() {
            [] => Err(SpiffeError::Missing),
            [one] => one.parse(),
            many => Err(SpiffeError::Several(many.len())),
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}/ns/{}/sa/{}", self.trust_domain, self.namespace, self.service_account)
    }
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

impl FromStr for SpiffeId {
    type Err = SpiffeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || SpiffeError::Malformed(s.to_owned());
        let rest = s.strip_prefix("spiffe://").ok_or_else(malformed)?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [td, "ns", ns, "sa", sa]
                if valid_segment(td) && valid_segment(ns) && valid_segment(sa) && !td.contains("..") =>
            {
                Ok(SpiffeId::new(&td.to_ascii_lowercase(), ns, sa))
            }
            _ => Err(malformed()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_other_shapes() {
        let id: SpiffeId = "spiffe://default.weft.local/ns/shop/sa/cart".parse().unwrap();
        assert_eq!(id, SpiffeId::new("default.weft.local", "shop", "cart"));
        assert_eq!(id.to_string(), "spiffe://default.weft.local/ns/shop/sa/cart");
        for bad in [
            "https://default.weft.local/ns/shop/sa/cart",
            "spiffe://default.weft.local/ns/shop",
            "spiffe://default.weft.local/ns/shop/sa/cart/extra",
            "spiffe:///ns/shop/sa/cart",
            "spiffe://default.weft.local/ns//sa/cart",
            "spiffe://default.weft.local/namespace/shop/sa/cart",
            "spiffe://default.weft.local/ns/sh op/sa/cart",
        ] {
            assert!(bad.parse::<SpiffeId>().is_err(), "{bad} was accepted");
        }
    }
}
