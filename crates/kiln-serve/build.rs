//! Compiles the Open Inference Protocol's gRPC definition with protox (pure Rust: the machines
//! have no protoc) into the server and client stubs that `grpc.rs` includes.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/inference.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
