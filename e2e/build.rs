//! Generates the gRPC echo services the conformance cases call: the
//! Gateway API conformance echo (`conformance/echo/grpcecho.proto`,
//! vendored byte for byte) and the mesh echo (`proto/mesh_echo.proto`).
//! protox compiles them in Rust, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["../conformance/echo/grpcecho.proto", "proto/mesh_echo.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["../conformance/echo", "proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
