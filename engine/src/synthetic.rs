//! Synthetic models for benchmarks and tests: large, deterministic, and valid ONNX.

use crate::dtype::DType;
use crate::graph_edit::{node, tensor, value_info};
use crate::proto::{GraphProto, ModelProto, OperatorSetIdProto, TensorProto};

/// A chain of `MatMul → Add → Relu` blocks of width `width`, `blocks` long: about
/// `blocks × (width² + width)` parameters and `3 × blocks` nodes. Weights are pseudo-random
/// (a fixed-seed generator), stored as raw little-endian floats.
pub fn mlp_chain(width: usize, blocks: usize) -> ModelProto {
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        // xorshift64*: cheap, deterministic, good enough for weight-like values.
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        let bits = rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
        (bits as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
    };
    let mut graph = GraphProto::new();
    graph.set_name("synthetic_mlp_chain".into());
    let mut previous = "input".to_owned();
    for b in 0..blocks {
        let weight = format!("block{b}.weight");
        let bias = format!("block{b}.bias");
        graph
            .initializer
            .push(float_tensor(&weight, &[width, width], &mut next));
        graph
            .initializer
            .push(float_tensor(&bias, &[width], &mut next));
        let matmul_out = format!("block{b}.matmul");
        let add_out = format!("block{b}.add");
        let relu_out = format!("block{b}.relu");
        graph.node.push(node(
            "MatMul",
            &format!("block{b}.fc"),
            &[&previous, &weight],
            &matmul_out,
            &[],
        ));
        graph.node.push(node(
            "Add",
            &format!("block{b}.bias_add"),
            &[&matmul_out, &bias],
            &add_out,
            &[],
        ));
        graph.node.push(node(
            "Relu",
            &format!("block{b}.act"),
            &[&add_out],
            &relu_out,
            &[],
        ));
        previous = relu_out;
    }
    graph.input.push(value_info("input", &[1, width as i64]));
    graph.output.push(value_info(&previous, &[1, width as i64]));

    let mut model = ModelProto::new();
    model.set_ir_version(8);
    model.set_producer_name("edgefit-synthetic".into());
    let mut opset = OperatorSetIdProto::new();
    opset.set_domain(String::new());
    opset.set_version(13);
    model.opset_import.push(opset);
    model.graph = Some(graph).into();
    model
}

fn float_tensor(name: &str, dims: &[usize], next: &mut impl FnMut() -> f32) -> TensorProto {
    let count: usize = dims.iter().product();
    let mut raw = Vec::with_capacity(count * 4);
    for _ in 0..count {
        raw.extend_from_slice(&next().to_le_bytes());
    }
    let dims: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
    tensor(name, DType::FLOAT32, &dims, raw)
}
