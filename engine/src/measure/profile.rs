//! Per-layer time profile: where a single inference spends its time, by ONNX node.

use serde::Serialize;

use crate::error::Result;
use crate::measure::runtime::TractModel;
use crate::model::graph::GraphView;

/// Time spent in one ONNX node (tract's optimized nodes mapped back by name).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerTime {
    pub name: String,
    pub op: String,
    /// Mean time per inference, milliseconds.
    pub ms: f64,
    /// Share of the total.
    pub fraction: f64,
}

/// The per-node profile of `model` on `sample`, averaged over `runs`, largest first. tract
/// renames and fuses nodes while optimizing (`conv.bias_add`, `relu.low`…); each of its nodes
/// is credited to the ONNX node whose name is the longest prefix of its name, and the rest
/// (inputs, reshapes tract adds) to "(other)".
pub fn layer_times(
    model: &TractModel,
    graph: &GraphView,
    sample: &[f32],
    runs: usize,
) -> Result<Vec<LayerTime>> {
    let nodes = model.profile(sample, runs)?;
    let runs = runs.max(1) as f64;
    let mut onnx: Vec<(&str, &str)> = graph
        .main_nodes()
        .map(|n| (n.name.as_str(), n.op_type.as_str()))
        .collect();
    // Longest names first, so `block1.dw.conv` wins over `block1.dw`.
    onnx.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    let mut by_name: std::collections::BTreeMap<(String, String), f64> = Default::default();
    for (tract_name, tract_op, ms) in nodes {
        let owner = onnx
            .iter()
            .find(|(name, _)| tract_name == *name || tract_name.starts_with(&format!("{name}.")))
            .map(|(name, op)| ((*name).to_owned(), (*op).to_owned()))
            .unwrap_or_else(|| ("(other)".to_owned(), tract_op));
        *by_name.entry(owner).or_default() += ms / runs;
    }
    let total: f64 = by_name.values().sum();
    let mut times: Vec<LayerTime> = by_name
        .into_iter()
        .map(|((name, op), ms)| LayerTime {
            name,
            op,
            ms,
            fraction: if total > 0.0 { ms / total } else { 0.0 },
        })
        .collect();
    times.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    Ok(times)
}
