//! How an integer weight is written: int8 codes and the nodes that turn them back into the
//! float values the preview computed with.

use std::collections::HashSet;

use crate::compress::compressor::QuantizedWeight;
use crate::model::graph_edit::{float_tensor, int_attr, int8_tensor, node, unique};
use crate::model::proto::{GraphProto, NodeProto};

/// Codes + `DequantizeLinear` (per axis from opset 13): the form runtimes fuse into integer
/// kernels when the layer's input is quantized too (qdq-int8).
pub(super) fn dequantize_linear(
    graph: &mut GraphProto,
    names: &mut HashSet<String>,
    prelude: &mut Vec<NodeProto>,
    weight: &str,
    dims: &[i64],
    q: &QuantizedWeight,
) {
    let codes = unique(names, &format!("{weight}_quantized"));
    let scale = unique(names, &format!("{weight}_scale"));
    let zero_point = unique(names, &format!("{weight}_zero_point"));
    graph.initializer.push(int8_tensor(&codes, dims, &q.codes));
    let (scales, zps): (Vec<f32>, Vec<i8>) = q
        .params
        .iter()
        .map(|p| (p.scale, p.zero_point as i8))
        .unzip();
    let group_dims: Vec<i64> = if q.axis.is_some() {
        vec![scales.len() as i64]
    } else {
        vec![]
    };
    graph
        .initializer
        .push(float_tensor(&scale, &group_dims, &scales));
    graph
        .initializer
        .push(int8_tensor(&zero_point, &group_dims, &zps));
    let attrs = q
        .axis
        .map(|a| vec![int_attr("axis", a as i64)])
        .unwrap_or_default();
    prelude.push(node(
        "DequantizeLinear",
        &unique(names, &format!("{weight}_dequantize")),
        &[&codes, &scale, &zero_point],
        weight,
        &attrs,
    ));
}

/// Codes + `Cast` to float (− zero points) × scales, broadcast along the channel axis: the
/// weight-only form. Runtimes fold it into float weights when the model loads, so the layer
/// computes in float exactly what the preview did, at float speed, in any opset from 7.
///
/// `DequantizeLinear` would not do for a weight-only file: onnxruntime (1.32) fuses
/// `DequantizeLinear → MatMul` into `MatMulNBits`, which quantizes the activations to int8
/// (accuracy level 4) — outputs the preview never showed — and it does not fold a
/// `DequantizeLinear` of a Conv weight, which then runs ~4× slower than float.
pub(super) fn cast_and_scale(
    graph: &mut GraphProto,
    names: &mut HashSet<String>,
    prelude: &mut Vec<NodeProto>,
    weight: &str,
    dims: &[i64],
    q: &QuantizedWeight,
) {
    let codes = unique(names, &format!("{weight}_quantized"));
    let as_float = unique(names, &format!("{weight}_codes"));
    graph.initializer.push(int8_tensor(&codes, dims, &q.codes));
    prelude.push(node(
        "Cast",
        &unique(names, &format!("{weight}_cast")),
        &[&codes],
        &as_float,
        &[int_attr("to", 1)],
    ));
    // Scales (and zero points) shaped to broadcast along the channel axis: [C, 1, 1, 1] for a
    // Conv weight, [C] for the last axis.
    let group_dims: Vec<i64> = match q.axis {
        Some(axis) => dims
            .iter()
            .enumerate()
            .skip(axis)
            .map(|(i, &d)| if i == axis { d } else { 1 })
            .collect(),
        None => vec![],
    };
    let mut centred = as_float;
    if q.params.iter().any(|p| p.zero_point != 0) {
        let zps: Vec<f32> = q.params.iter().map(|p| p.zero_point as f32).collect();
        let zp_name = unique(names, &format!("{weight}_zero_point"));
        let out = unique(names, &format!("{weight}_centred"));
        graph
            .initializer
            .push(float_tensor(&zp_name, &group_dims, &zps));
        prelude.push(node(
            "Sub",
            &unique(names, &format!("{weight}_sub_zero_point")),
            &[&centred, &zp_name],
            &out,
            &[],
        ));
        centred = out;
    }
    let scales: Vec<f32> = q.params.iter().map(|p| p.scale).collect();
    let scale = unique(names, &format!("{weight}_scale"));
    graph
        .initializer
        .push(float_tensor(&scale, &group_dims, &scales));
    prelude.push(node(
        "Mul",
        &unique(names, &format!("{weight}_dequantize")),
        &[&centred, &scale],
        weight,
        &[],
    ));
}
