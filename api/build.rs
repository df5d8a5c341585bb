//! Compiles the .proto contract with protox (pure Rust), so no system
//! protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/weft/config/v1/config.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    // The descriptors travel with the crate so tools can show messages as
    // proto3 JSON (weftctl config-dump, the admin API).
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("weft_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
