//! Compiles `proto/augur/v1/*.proto` with protox (pure Rust, no protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto");
    let file = format!("{proto_root}/augur/v1/augur.proto");
    println!("cargo:rerun-if-changed={file}");
    let descriptors = protox::compile([file.as_str()], [proto_root])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
