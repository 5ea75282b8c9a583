//! Compiles `proto/rpc.proto` (CRIU's RPC protocol) with prost, using
//! protox so that no `protoc` binary is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=proto/rpc.proto");
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.open_files(["proto/rpc.proto"])?;
    prost_build::Config::new().compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
