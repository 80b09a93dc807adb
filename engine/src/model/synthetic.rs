//! Synthetic models for benchmarks and tests: large, deterministic, and valid ONNX.

use crate::model::dtype::DType;
use crate::model::graph_edit::{node, tensor, value_info};
use crate::model::proto::{GraphProto, ModelProto, OperatorSetIdProto, TensorProto};

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

/// A branching CNN-like DAG of about `target_nodes` nodes (at least one block): repeated
/// inception-style blocks (three parallel branches joined by `Concat`, a 1×1 projection,
/// batch normalization and a residual `Add`), then a pooled `Gemm` head. 8 channels of
/// 8×8, so it stays small (about 1,000 parameters a block) while the graph is large.
/// Deterministic weights; valid ONNX (opset 13).
pub fn branchy_cnn(target_nodes: usize) -> ModelProto {
    const C: usize = 8;
    const HW: i64 = 8;
    const PER_BLOCK: usize = 13;
    const HEAD: usize = 4;
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        let bits = rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
        (bits as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
    };
    let blocks = (target_nodes.saturating_sub(HEAD))
        .div_ceil(PER_BLOCK)
        .max(1);
    let mut graph = GraphProto::new();
    graph.set_name("synthetic_branchy_cnn".into());
    let mut x = "input".to_owned();
    for b in 0..blocks {
        let p = format!("block{b}");
        let mut conv = |graph: &mut GraphProto, name: &str, input: &str, cin: usize, k: usize| {
            let weight = format!("{p}.{name}.weight");
            let bias = format!("{p}.{name}.bias");
            graph
                .initializer
                .push(float_tensor(&weight, &[C, cin, k, k], &mut next));
            graph.initializer.push(float_tensor(&bias, &[C], &mut next));
            let out = format!("{p}.{name}");
            let pad = (k / 2) as i64;
            graph.node.push(node(
                "Conv",
                &out,
                &[input, &weight, &bias],
                &out,
                &[ints_attr("pads", &[pad, pad, pad, pad])],
            ));
            out
        };
        let relu = |graph: &mut GraphProto, input: &str| {
            let out = format!("{input}.relu");
            graph.node.push(node("Relu", &out, &[input], &out, &[]));
            out
        };
        let a = conv(&mut graph, "a.conv", &x, C, 1);
        let a = relu(&mut graph, &a);
        let b1 = conv(&mut graph, "b.reduce", &x, C, 1);
        let b1 = relu(&mut graph, &b1);
        let b2 = conv(&mut graph, "b.conv3x3", &b1, C, 3);
        let b2 = relu(&mut graph, &b2);
        let pool = format!("{p}.c.pool");
        graph.node.push(node(
            "MaxPool",
            &pool,
            &[&x],
            &pool,
            &[
                ints_attr("kernel_shape", &[3, 3]),
                ints_attr("pads", &[1, 1, 1, 1]),
            ],
        ));
        let c = conv(&mut graph, "c.conv", &pool, C, 1);
        let cat = format!("{p}.concat");
        graph.node.push(node(
            "Concat",
            &cat,
            &[&a, &b2, &c],
            &cat,
            &[crate::model::graph_edit::int_attr("axis", 1)],
        ));
        let proj = conv(&mut graph, "project", &cat, 3 * C, 1);
        let bn = format!("{p}.bn");
        let mut bn_inputs = vec![proj.clone()];
        for (what, base) in [("scale", 1.0), ("shift", 0.0), ("mean", 0.0), ("var", 1.0)] {
            let name = format!("{bn}.{what}");
            let values: Vec<f32> = (0..C).map(|_| base + next().abs()).collect();
            graph
                .initializer
                .push(crate::model::graph_edit::float_tensor(
                    &name,
                    &[C as i64],
                    &values,
                ));
            bn_inputs.push(name);
        }
        let bn_refs: Vec<&str> = bn_inputs.iter().map(String::as_str).collect();
        graph
            .node
            .push(node("BatchNormalization", &bn, &bn_refs, &bn, &[]));
        let add = format!("{p}.residual");
        graph.node.push(node("Add", &add, &[&x, &bn], &add, &[]));
        x = relu(&mut graph, &add);
    }
    graph.node.push(node(
        "GlobalAveragePool",
        "head.pool",
        &[&x],
        "head.pool",
        &[],
    ));
    graph.node.push(node(
        "Flatten",
        "head.flatten",
        &["head.pool"],
        "head.flatten",
        &[],
    ));
    graph
        .initializer
        .push(float_tensor("head.weight", &[10, C], &mut next));
    graph
        .initializer
        .push(float_tensor("head.bias", &[10], &mut next));
    graph.node.push(node(
        "Gemm",
        "head.fc",
        &["head.flatten", "head.weight", "head.bias"],
        "head.fc",
        &[crate::model::graph_edit::int_attr("transB", 1)],
    ));
    graph.node.push(node(
        "Softmax",
        "head.softmax",
        &["head.fc"],
        "probabilities",
        &[],
    ));
    graph
        .input
        .push(value_info("input", &[1, C as i64, HW, HW]));
    graph.output.push(value_info("probabilities", &[1, 10]));

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

fn ints_attr(name: &str, values: &[i64]) -> crate::model::proto::AttributeProto {
    let mut a = crate::model::proto::AttributeProto::new();
    a.set_name(name.to_owned());
    a.set_type(crate::model::proto::attribute_proto::AttributeType::INTS);
    a.ints = values.to_vec();
    a
}
