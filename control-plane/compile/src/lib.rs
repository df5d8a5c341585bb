//! Per-proxy compilation, pure like translation: the translator's output
//! (Weft mesh resources), the snapshot (Services, EndpointSlices, Meshes) and
//! the connected workloads in; the named, versioned resources each proxy
//! needs out.
//!
//! Compilation is incremental: [`Compiler::update`] recomputes only the
//! resources whose inputs changed, and reports their names so that only the
//! proxies that hold them are sent anything.

#![forbid(unsafe_code)]

mod certificates;
mod compiler;
mod endpoints;
mod gateways;
mod proxy;
mod routes;
mod services;
mod version;
mod vips;

pub use certificates::{TlsMaterial, referenced as referenced_certificates};
pub use compiler::{Change, Compiled, Compiler, ServiceVariants};
pub use endpoints::EndpointSource;
pub use proxy::{ProxyView, desired_resources, resource_for};
pub use version::versioned;

use std::collections::BTreeMap;

/// Connected workloads by proxy id (`namespace/name`).
pub type Workloads = BTreeMap<String, weft_api::Workload>;

/// A resource shared by every proxy that needs it.
pub type SharedResource = std::sync::Arc<CompiledResource>;

/// A compiled resource with its wire encoding: encoded once, then sent as
/// is to every proxy that holds it.
#[derive(Debug, PartialEq)]
pub struct CompiledResource {
    resource: weft_api::Resource,
    encoded: prost::bytes::Bytes,
}

impl CompiledResource {
    /// The resource, with its name and version.
    pub fn resource(&self) -> &weft_api::Resource {
        &self.resource
    }

    /// The encoded `Resource` message.
    pub fn encoded(&self) -> &prost::bytes::Bytes {
        &self.encoded
    }
}

impl std::ops::Deref for CompiledResource {
    type Target = weft_api::Resource;

    fn deref(&self) -> &weft_api::Resource {
        &self.resource
    }
}

/// SPIFFE ID of a workload identity.
pub fn spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

/// The trust domain of a mesh when its Mesh object names none: distinct per
/// mesh, so meshes never trust each other's identities.
pub fn default_trust_domain(mesh: &str) -> String {
    format!("{mesh}.weft.local")
}
