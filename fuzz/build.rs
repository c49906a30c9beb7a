//! Compiles the wire contract in ../proto as the main crate's build.rs does.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTO: &str = "../proto/signalgate/v1/signalgate.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    let descriptors = protox::compile([PROTO], ["../proto"])?;
    prost_build::Config::new()
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
