//! Weft's control-plane ↔ proxy contract, generated from
//! `proto/weft/config/v1/config.proto` at build time.

#![allow(missing_debug_implementations)]

/// Version 1 of the configuration API.
pub mod config {
    #![allow(clippy::all, missing_docs, rust_2018_idioms)]
    tonic::include_proto!("weft.config.v1");
}

pub use config::*;

/// The control plane's side of the contract: the same services, with the
/// config stream sending [`EncodedConfigUpdate`]s (see `build.rs`).
pub mod server {
    #![allow(clippy::all, missing_docs, rust_2018_idioms)]
    include!(concat!(env!("OUT_DIR"), "/server/weft.config.v1.rs"));
}

/// The encoded `FileDescriptorSet` of the contract, for rendering messages
/// as proto3 JSON.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/weft_descriptor.bin"));

/// Resource name of the proxy's mesh settings.
pub const MESH_RESOURCE: &str = "mesh";
/// Resource name of the proxy's own ports.
pub const INBOUND_RESOURCE: &str = "inbound";

/// Resource name of a Service: `svc/<namespace>/<name>`.
pub fn service_resource(namespace: &str, name: &str) -> String {
    format!("svc/{namespace}/{name}")
}

/// Resource name of a Service's endpoints: `ep/<namespace>/<name>`.
pub fn endpoints_resource(namespace: &str, name: &str) -> String {
    format!("ep/{namespace}/{name}")
}

/// Resource name of a listener certificate: `cert/<namespace>/<name>` (the
/// Secret's).
pub fn certificate_resource(namespace: &str, name: &str) -> String {
    format!("cert/{namespace}/{name}")
}

/// Resource name of a gateway's listeners: `gw/<meshgateway>`.
pub fn gateway_resource(mesh_gateway: &str) -> String {
    format!("gw/{mesh_gateway}")
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// Proxies decode what the server sends as a plain `ConfigUpdate`.
    #[test]
    fn an_encoded_update_decodes_as_a_config_update() {
        let resources = vec![
            Resource {
                name: MESH_RESOURCE.into(),
                version: "1".into(),
                kind: Some(resource::Kind::Mesh(MeshSettings { name: "default".into(), ..Default::default() })),
            },
            Resource { name: service_resource("ns", "a"), version: "2".into(), kind: None },
        ];
        let encoded = EncodedConfigUpdate {
            nonce: 7,
            resources: resources.iter().map(|r| r.encode_to_vec().into()).collect(),
            removed: vec![endpoints_resource("ns", "b")],
        };
        let decoded = ConfigUpdate::decode(encoded.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, ConfigUpdate { nonce: 7, resources, removed: vec!["ep/ns/b".into()] });
    }
}
