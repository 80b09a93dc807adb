//! Which layers a recipe can compress: the ops, their weight inputs and channel axes.

use super::*;

/// Ops that the QDQ export gives int8 activations, so that runtimes run them as integer
/// kernels (their weight codes obey [`Recipe::integer_kernel_bits_cap`]).
pub const INTEGER_KERNEL_OPS: &[&str] = &["Conv", "ConvTranspose", "Gemm", "MatMul"];

/// Ops whose main weight the engine compresses.
const COMPRESSIBLE_OPS: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "Gemm",
    "MatMul",
    "Gather",
    "LSTM",
    "GRU",
    "RNN",
];

/// The first main-graph node of each (name, op): built once for [`compressible`], which
/// looked each layer's node up with a scan of every node (quadratic: 0.2 s of a 20,000-node
/// model's open, on the studio's UI thread).
pub(super) fn main_nodes_by_name(model: &LoadedModel) -> HashMap<(&str, &str), usize> {
    let mut by_name = HashMap::new();
    for n in model.graph.main_nodes() {
        by_name
            .entry((n.name.as_str(), n.op_type.as_str()))
            .or_insert(n.index);
    }
    by_name
}

pub(super) fn compressible(
    model: &LoadedModel,
    report: &LayerReport,
    nodes: &HashMap<(&str, &str), usize>,
) -> std::result::Result<CompressibleLayer, String> {
    if !report.graph.is_empty() {
        return Err("inside a subgraph: not compressed".to_owned());
    }
    if !COMPRESSIBLE_OPS.contains(&report.op.as_str()) {
        return Err(match report.op.as_str() {
            "BatchNormalization" | "InstanceNormalization" | "LayerNormalization" => {
                "normalization parameters stay float32 (small, and sensitive)".to_owned()
            }
            op if op.starts_with("QLinear") || op.ends_with("Integer") => {
                "already quantized".to_owned()
            }
            op => format!("{op} weights are not compressed"),
        });
    }
    let weight_name = report.weight.clone().ok_or("no weight")?;
    let node = nodes
        .get(&(report.name.as_str(), report.op.as_str()))
        .and_then(|&i| model.graph.nodes.get(i))
        .ok_or("node not found")?;
    if !node.inputs.contains(&weight_name) {
        return Err(
            "weight is read through another op (e.g. already dequantized): not compressed"
                .to_owned(),
        );
    }
    let weight_index = *model
        .weight_index
        .get(&weight_name)
        .ok_or("weight not found")?;
    let weight = &model.weights[weight_index];
    if weight.dtype != DType::FLOAT32 {
        return Err(format!(
            "weight is {}, only float32 weights are compressed",
            weight.dtype
        ));
    }
    if !matches!(
        weight.origin,
        WeightOrigin::Initializer | WeightOrigin::ConstantNode
    ) || weight.values.is_none()
    {
        return Err("weight could not be decoded".to_owned());
    }
    // Every size the kernels compute comes from the dims: they must describe the data held.
    let declared = weight.dims.iter().try_fold(1usize, |a, &d| {
        usize::try_from(d).ok().and_then(|d| a.checked_mul(d))
    });
    let held = weight.values.as_ref().map_or(0, Vec::len);
    if held == 0 || declared != Some(held) {
        return Err(format!(
            "weight dims {:?} do not describe its {held} values: not compressed",
            weight.dims
        ));
    }
    let consumers = model.graph.consumers.get(&weight_name).map_or(0, Vec::len);
    if consumers > 1 {
        return Err(format!(
            "weight `{weight_name}` is shared by {consumers} nodes: not compressed"
        ));
    }
    let (channel_axis, structured_ok) = channel_axis(node, &weight_name, &weight.dims);
    let opset = model
        .proto
        .opset_import
        .iter()
        .find(|o| o.domain().is_empty() || o.domain() == "ai.onnx")
        .map_or(0, |o| o.version());
    Ok(CompressibleLayer {
        name: report.name.clone(),
        op: report.op.clone(),
        node: node.index,
        weight: weight_name,
        weight_index,
        dims: weight.dims.clone(),
        channel_axis,
        structured_ok,
        opset,
        macs: report.macs,
    })
}

fn attr_int(node: &NodeDesc, name: &str, default: i64) -> i64 {
    node.attributes
        .iter()
        .find(|a| a.name == name)
        .and_then(|a| a.value.parse().ok())
        .unwrap_or(default)
}

/// The output-channel axis of a layer's weight, and whether channel removal applies.
fn channel_axis(node: &NodeDesc, weight: &str, dims: &[i64]) -> (Option<usize>, bool) {
    let rank = dims.len();
    match node.op_type.as_str() {
        // W·X with the weight on the left: its rows make the output's rows (axis rank − 2);
        // the last axis is the reduction. Removing rows would change the output's rows, not
        // a channel dimension downstream layers can follow.
        "MatMul" if rank >= 2 && node.inputs.first().map(String::as_str) == Some(weight) => {
            (Some(rank - 2), false)
        }
        "Conv" if rank >= 3 => (Some(0), true),
        "ConvTranspose" if rank >= 3 => (Some(1), false),
        "Gemm" if rank == 2 => {
            let weight_is_b = node.inputs.get(1).is_some();
            if weight_is_b && attr_int(node, "transB", 0) != 0 {
                (Some(0), true)
            } else {
                (Some(1), true)
            }
        }
        "MatMul" if rank >= 2 && node.inputs.get(1).is_some() => (Some(rank - 1), true),
        "Gather" if rank == 2 => (Some(0), false),
        // W [directions, gates × hidden, inputs]: one scale per gate row (the rows' ranges
        // differ by gate; one scale for the tensor cost the GRU of a real model 3.6 dB).
        "LSTM" | "GRU" | "RNN" if rank == 3 => (Some(1), false),
        _ => (None, false),
    }
}
