//! Generates the ONNX protobuf binding from `proto/onnx-ml.proto` (ONNX's own proto2 file)
//! with rust-protobuf's pure-Rust parser: no `protoc` needed on the machine.

fn main() {
    println!("cargo:rerun-if-changed=proto/onnx-ml.proto");
    let result = protobuf_codegen::Codegen::new()
        .pure()
        .include("proto")
        .input("proto/onnx-ml.proto")
        .cargo_out_dir("onnx_proto")
        .run();
    if let Err(error) = result {
        // A build script reports failure by panicking; this only runs at build time.
        panic!("generating the ONNX protobuf binding failed: {error:#}");
    }
}
