//! Generates the tonic/prost code from `proto/` with protox (pure Rust), so
//! building raftq needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/raftq/v1/queue.proto",
        "proto/raftq/v1/cluster.proto",
        // KEDA's external scaler protocol, which the node also serves.
        "proto/keda/externalscaler.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        // Payloads stay reference-counted `Bytes` end to end: no copies.
        .bytes(".raftq.v1")
        .compile_fds(descriptors)?;
    Ok(())
}
