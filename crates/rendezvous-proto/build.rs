//! Generates the Rust types from `proto/rendezvous/v1` with protox (a pure
//! Rust protobuf compiler), so a fresh machine needs no `protoc`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let file = root.join("rendezvous/v1/rendezvous.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let descriptors = protox::compile([&file], [&root])?;
    tonic_prost_build::configure()
        .bytes(".rendezvous.v1")
        .compile_fds(descriptors)?;
    Ok(())
}
