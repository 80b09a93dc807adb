//! Writes the ONNX protobuf binding `engine/src/model/proto/onnx_ml.rs` from ONNX's own
//! proto2 file `engine/proto/onnx-ml.proto`, with rust-protobuf's pure-Rust parser (no
//! `protoc`). The first line records the FNV-1a hash of the .proto it came from; a unit test
//! in the engine (`model::proto::tests`) fails when the .proto changes without regenerating.

use std::path::Path;

/// FNV-1a, 64 bits: the engine's test computes the same without any dependency.
fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let engine = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let proto_dir = engine.join("proto");
    let proto = proto_dir.join("onnx-ml.proto");
    let out = tempfile_dir()?;
    protobuf_codegen::Codegen::new()
        .pure()
        .include(&proto_dir)
        .input(&proto)
        .out_dir(&out)
        .run()?;
    let generated = std::fs::read_to_string(out.join("onnx_ml.rs"))?;
    let hash = fnv1a_64(&std::fs::read(&proto)?);
    let header = format!(
        "// @generated from engine/proto/onnx-ml.proto (fnv1a-64 {hash:#018x}) by\n\
         // `cargo run --manifest-path engine/proto/codegen/Cargo.toml`. Do not edit.\n"
    );
    let target = engine.join("src/model/proto/onnx_ml.rs");
    std::fs::write(&target, header + &generated)?;
    std::fs::remove_dir_all(&out)?;
    println!("wrote {}", target.display());
    Ok(())
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("edgefit-proto-codegen-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
