//! Weft's custom resources, `weft.io/v1alpha1`.
//!
//! The Rust types are the source of truth: `crds/` at the repository root is
//! rendered from [`all`] and a test fails when the files are stale or a schema
//! is not structural.

mod common;
mod mesh;
mod mesh_gateway;
mod mesh_gateway_config;
mod mesh_gateway_instance;
mod mesh_http_route;
mod mesh_tcp_route;

pub use common::*;
pub use mesh::*;
pub use mesh_gateway::*;
pub use mesh_gateway_config::*;
pub use mesh_gateway_instance::*;
pub use mesh_http_route::*;
pub use mesh_tcp_route::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// API version of every Weft resource.
pub const API_VERSION: &str = "weft.io/v1alpha1";

/// Every Weft CRD, in a fixed order (file names in `crds/` follow it).
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        Mesh::crd(),
        MeshGatewayConfig::crd(),
        MeshGatewayInstance::crd(),
        MeshGateway::crd(),
        MeshHTTPRoute::crd(),
        MeshTCPRoute::crd(),
    ]
}
