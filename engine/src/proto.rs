//! The ONNX protobuf binding, generated at build time from ONNX's own `onnx-ml.proto`
//! (proto2, so field presence and unknown fields survive a read/write round trip).

#[allow(
    clippy::all,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unused_qualifications,
    non_camel_case_types
)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/onnx_proto/mod.rs"));
}

pub use generated::onnx_ml::*;
pub use protobuf::Message;
