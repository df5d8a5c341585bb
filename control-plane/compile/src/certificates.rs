//! Listener certificates: the key material of the Secrets that accepted
//! TLS-terminating listeners reference, compiled into `cert/<ns>/<name>`
//! resources for the gateway proxies of those listeners only.

use std::collections::BTreeMap;

use weft_api as api;
use weft_k8s_api::crds::{MeshGatewaySpec, TlsMode};
use weft_translate::ObjectKey;

use crate::SharedResource;
use crate::version::versioned;

pub use weft_translate::load::secret::TlsMaterial;

/// The Secrets a gateway's terminating listeners reference.
pub fn referenced(spec: &MeshGatewaySpec) -> Vec<ObjectKey> {
    let mut out: Vec<ObjectKey> = spec
        .listeners
        .iter()
        .filter_map(|l| l.tls.as_ref())
        .filter(|t| t.mode == TlsMode::Terminate)
        .flat_map(|t| t.certificates.iter().map(|c| ObjectKey::new(c.namespace.clone(), c.name.clone())))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The certificate resources of one gateway (those whose material is
/// known), by Secret.
pub fn compile(
    spec: &MeshGatewaySpec,
    materials: &BTreeMap<ObjectKey, TlsMaterial>,
    shared: &mut BTreeMap<ObjectKey, SharedResource>,
) -> BTreeMap<ObjectKey, SharedResource> {
    let mut out = BTreeMap::new();
    for key in referenced(spec) {
        let Some(m) = materials.get(&key) else { continue };
        let res = shared
            .entry(key.clone())
            .or_insert_with(|| {
                versioned(
                    api::certificate_resource(&key.namespace, &key.name),
                    api::resource::Kind::Certificate(api::TlsCertificate {
                        namespace: key.namespace.clone(),
                        name: key.name.clone(),
                        chain_pem: m.chain_pem.clone(),
                        key_pem: m.key_pem.clone(),
                    }),
                )
            })
            .clone();
        out.insert(key, res);
    }
    out
}
