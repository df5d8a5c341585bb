//! Compiles the .proto contract with protox (pure Rust), so no system
//! protoc is needed.
//!
//! The server is generated a second time from an adjusted descriptor: its
//! config stream sends `EncodedConfigUpdate`, which is wire-identical to
//! `ConfigUpdate` but carries each resource as bytes encoded once by the
//! control plane, instead of re-encoding the same resource for every proxy.
//! Clients (proxies, tests) see plain `ConfigUpdate`s.

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::source_code_info::Location;
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorProto};

const PACKAGE: &str = "weft.config.v1";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/weft/config/v1/config.proto";
    println!("cargo:rerun-if-changed={proto}");
    let mut fds = protox::compile([proto], ["proto"])?;
    // The descriptors travel with the crate so tools can show messages as
    // proto3 JSON (weftctl config-dump, the admin API).
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("weft_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;

    let file = fds.file.iter_mut().find(|f| f.package() == PACKAGE).ok_or("the contract's package is missing")?;
    add_encoded_config_update(file);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .bytes(format!(".{PACKAGE}.EncodedConfigUpdate.resources"))
        .compile_fds(fds.clone())?;

    let file = fds.file.iter_mut().find(|f| f.package() == PACKAGE).ok_or("the contract's package is missing")?;
    let stream = file
        .service
        .iter_mut()
        .find(|s| s.name() == "ProxyConfig")
        .and_then(|s| s.method.iter_mut().find(|m| m.name() == "Stream"))
        .ok_or("ProxyConfig.Stream is missing")?;
    stream.output_type = Some(format!(".{PACKAGE}.EncodedConfigUpdate"));
    let server_out = out.join("server");
    std::fs::create_dir_all(&server_out)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .out_dir(&server_out)
        .extern_path(format!(".{PACKAGE}"), "crate::config")
        .compile_fds(fds)?;
    Ok(())
}

/// Adds `EncodedConfigUpdate`: `ConfigUpdate` with `resources` as bytes
/// (the same wire encoding as an embedded message), with its doc comments.
fn add_encoded_config_update(file: &mut FileDescriptorProto) {
    let index = file.message_type.len() as i32;
    file.message_type.push(encoded_config_update());
    let info = file.source_code_info.get_or_insert_with(Default::default);
    let doc = |path: Vec<i32>, text: &str| Location {
        path,
        span: vec![0, 0, 0],
        leading_comments: Some(format!(" {text}\n")),
        ..Default::default()
    };
    info.location.push(doc(
        vec![4, index],
        "The server's view of ConfigUpdate: the same bytes on the wire, with each resource encoded once.",
    ));
    info.location.push(doc(vec![4, index, 2, 0], "As ConfigUpdate.nonce."));
    info.location.push(doc(vec![4, index, 2, 1], "Encoded Resource messages."));
    info.location.push(doc(vec![4, index, 2, 2], "As ConfigUpdate.removed."));
}

fn encoded_config_update() -> DescriptorProto {
    let field = |name: &str, number: i32, kind: Type, label: Label| FieldDescriptorProto {
        name: Some(name.into()),
        json_name: Some(name.into()),
        number: Some(number),
        r#type: Some(kind as i32),
        label: Some(label as i32),
        ..Default::default()
    };
    DescriptorProto {
        name: Some("EncodedConfigUpdate".into()),
        field: vec![
            field("nonce", 1, Type::Uint64, Label::Optional),
            field("resources", 2, Type::Bytes, Label::Repeated),
            field("removed", 3, Type::String, Label::Repeated),
        ],
        ..Default::default()
    }
}
