//! The ONNX protobuf binding, generated from ONNX's own `onnx-ml.proto` (proto2, so field
//! presence and unknown fields survive a read/write round trip) and committed: clean builds do
//! not compile the generator. `engine/proto/codegen` regenerates it; the test below fails when
//! the .proto changed without regenerating.

#[allow(
    clippy::all,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unused_qualifications,
    non_camel_case_types
)]
mod onnx_ml;

pub use onnx_ml::*;
pub use protobuf::Message;

#[cfg(test)]
mod tests {
    /// FNV-1a, 64 bits, as `engine/proto/codegen` records it in the generated file's first line.
    fn fnv1a_64(bytes: &[u8]) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        hash
    }

    #[test]
    fn the_committed_binding_matches_the_proto_file() {
        let proto = include_bytes!("../../proto/onnx-ml.proto");
        let generated = include_str!("proto/onnx_ml.rs");
        let expected = format!("(fnv1a-64 {:#018x})", fnv1a_64(proto));
        let first_line = generated.lines().next().unwrap_or_default();
        assert!(
            first_line.contains(&expected),
            "engine/proto/onnx-ml.proto changed: regenerate with \
             `cargo run --manifest-path engine/proto/codegen/Cargo.toml` (first line: {first_line})"
        );
    }
}
