//! Int32 biases for the integer Conv/Gemm layers of a QDQ export.

use std::collections::{HashMap, HashSet};

use super::{ActivationRanges, ActivationTarget, activation_params, take_weight};
use crate::compress::compressor::{Compression, Compressor};
use crate::error::Result;
use crate::model::graph_edit::node as node_proto;
use crate::model::graph_edit::{float_tensor, int_attr, unique};
use crate::model::load::LoadedModel;
use crate::model::proto::{GraphProto, NodeProto};

/// What [`quantize_biases`] did.
pub(super) struct BiasQuantization {
    pub(super) quantized: usize,
    pub(super) notes: Vec<String>,
}

/// Replaces the float bias of every integer Conv/Gemm by int32 codes at the scale
/// `input scale × weight scale` (per channel) and a `DequantizeLinear`: the form onnxruntime's
/// quantizer writes and the one its integer kernels compute (they add the bias to the int32
/// accumulator). A float bias would be rounded to that grid inside the runtime (onnxruntime's
/// weight/bias quantization pass) but not in a runtime that simulates QDQ in float, so the
/// two would round some outputs differently; quantized here, both compute the same sums.
#[allow(clippy::too_many_arguments)]
pub(super) fn quantize_biases(
    model: &LoadedModel,
    graph: &mut GraphProto,
    compressor: &Compressor,
    compression: &Compression,
    targets: &[ActivationTarget],
    ranges: &ActivationRanges,
    names: &mut HashSet<String>,
    prelude: &mut Vec<NodeProto>,
) -> Result<BiasQuantization> {
    let mut done = BiasQuantization {
        quantized: 0,
        notes: Vec::new(),
    };
    let by_node: HashMap<usize, &ActivationTarget> = targets.iter().map(|t| (t.node, t)).collect();
    for (layer, result) in compressor.layers.iter().zip(&compression.layers) {
        let (Some(target), Some(q)) = (by_node.get(&layer.node), &result.quantized) else {
            continue;
        };
        let node = &model.graph.nodes[layer.node];
        let attr = |name: &str| {
            node.attributes
                .iter()
                .find(|a| a.name == name)
                .map(|a| a.value.as_str())
        };
        let plain = match node.op_type.as_str() {
            "Conv" => true,
            // alpha·A·B + beta·C: the integer kernel adds C unscaled.
            "Gemm" => {
                attr("alpha").is_none_or(|v| v.parse() == Ok(1.0f32))
                    && attr("beta").is_none_or(|v| v.parse() == Ok(1.0f32))
            }
            _ => false,
        };
        let Some(bias_name) = node.inputs.get(2).filter(|b| plain && !b.is_empty()) else {
            continue;
        };
        let Some(bias) = model.weight(bias_name) else {
            continue;
        };
        let channels = layer
            .channel_axis
            .map_or(0, |a| layer.dims[a].max(0) as usize);
        let readers = model.graph.consumers.get(bias_name).map_or(0, Vec::len);
        let Some(values) = bias.values.as_ref().filter(|v| {
            bias.dtype == crate::model::dtype::DType::FLOAT32
                && bias.dims.len() == 1
                && v.len() == channels
                && readers == 1
                && bias.graph.is_empty()
        }) else {
            continue;
        };
        let per_channel = q.params.len() == channels && q.axis == layer.channel_axis;
        if !(per_channel || q.params.len() == 1) {
            continue;
        }
        let Some(&(lo, hi)) = ranges.get(&target.input) else {
            continue;
        };
        let (input_scale, _) = activation_params(lo, hi);
        let scales: Vec<f32> = (0..channels)
            .map(|c| input_scale * q.params[if per_channel { c } else { 0 }].scale)
            .collect();
        let codes: Option<Vec<i32>> = values
            .iter()
            .zip(&scales)
            .map(|(&b, &scale)| {
                let code = (f64::from(b) / f64::from(scale)).round();
                (code.is_finite() && code.abs() <= f64::from(i32::MAX)).then_some(code as i32)
            })
            .collect();
        let Some(codes) = codes else {
            done.notes.push(format!(
                "the bias of `{}` does not fit int32 at its scale; it stays float",
                layer.name
            ));
            continue;
        };
        take_weight(graph, bias_name)?;
        let codes_name = unique(names, &format!("{bias_name}_quantized"));
        let scale_name = unique(names, &format!("{bias_name}_scale"));
        let group_dims: Vec<i64> = if per_channel {
            vec![channels as i64]
        } else {
            vec![]
        };
        let stored_scales = if per_channel {
            &scales[..]
        } else {
            &scales[..1]
        };
        graph
            .initializer
            .push(int32_tensor(&codes_name, &[channels as i64], &codes));
        graph
            .initializer
            .push(float_tensor(&scale_name, &group_dims, stored_scales));
        let attrs = if per_channel {
            vec![int_attr("axis", 0)]
        } else {
            vec![]
        };
        prelude.push(node_proto(
            "DequantizeLinear",
            &unique(names, &format!("{bias_name}_dequantize")),
            // No zero point: an int32 bias has zero point 0, the input's default.
            &[&codes_name, &scale_name],
            bias_name,
            &attrs,
        ));
        done.quantized += 1;
    }
    Ok(done)
}

fn int32_tensor(name: &str, dims: &[i64], values: &[i32]) -> crate::model::proto::TensorProto {
    crate::model::graph_edit::tensor(
        name,
        crate::model::dtype::DType::INT32,
        dims,
        values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
}
