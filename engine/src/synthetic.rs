//! Synthetic models for benchmarks and tests: large, deterministic, and valid ONNX.

use crate::proto::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TypeProto, ValueInfoProto,
    tensor_shape_proto, type_proto,
};

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
        ));
        graph.node.push(node(
            "Add",
            &format!("block{b}.bias_add"),
            &[&matmul_out, &bias],
            &add_out,
        ));
        graph.node.push(node(
            "Relu",
            &format!("block{b}.act"),
            &[&add_out],
            &relu_out,
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
    let mut t = TensorProto::new();
    t.set_name(name.to_owned());
    t.set_data_type(1);
    t.dims = dims.iter().map(|&d| d as i64).collect();
    t.set_raw_data(raw);
    t
}

fn node(op: &str, name: &str, inputs: &[&str], output: &str) -> NodeProto {
    let mut n = NodeProto::new();
    n.set_op_type(op.to_owned());
    n.set_name(name.to_owned());
    n.input = inputs.iter().map(|s| (*s).to_owned()).collect();
    n.output = vec![output.to_owned()];
    n
}

fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    let mut shape = crate::proto::TensorShapeProto::new();
    for &d in dims {
        let mut dim = tensor_shape_proto::Dimension::new();
        dim.set_dim_value(d);
        shape.dim.push(dim);
    }
    let mut tensor = type_proto::Tensor::new();
    tensor.set_elem_type(1);
    tensor.shape = Some(shape).into();
    let mut t = TypeProto::new();
    t.set_tensor_type(tensor);
    let mut info = ValueInfoProto::new();
    info.set_name(name.to_owned());
    info.type_ = Some(t).into();
    info
}
