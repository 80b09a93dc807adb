//! Whole-model analysis: totals, the layers that own weights (with MACs), and statistics and
//! histograms of every weight tensor, computed in parallel.

use std::collections::{BTreeMap, HashMap};

use rayon::prelude::*;
use serde::Serialize;

use crate::analyse::macs::node_macs;
use crate::analyse::stats::{Histogram, TensorStats, histogram, tensor_stats};
use crate::error::Result;
use crate::job::{CancelToken, ProgressSink, report};
use crate::model::dtype::DType;
use crate::model::graph::{Dim, NodeDesc, ValueDesc};
use crate::model::load::{LoadedModel, Weight, WeightOrigin};

/// Knobs of [`analyse`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnalysisOptions {
    /// Bins per weight histogram (at least 1).
    pub histogram_bins: usize,
}

impl Default for AnalysisOptions {
    fn default() -> Self {
        Self { histogram_bins: 64 }
    }
}

/// Quantization parameters of a weight that feeds a `DequantizeLinear` or a QLinear op.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QuantInfo {
    /// One scale per tensor, or one per channel along `axis`.
    pub scales: Vec<f32>,
    pub zero_points: Vec<f32>,
    pub axis: Option<i64>,
}

/// One stored tensor with its statistics.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TensorReport {
    pub name: String,
    /// Empty for the main graph, else the subgraph path.
    pub graph: String,
    pub origin: WeightOrigin,
    pub dtype: DType,
    pub shape: Vec<i64>,
    pub elements: u64,
    pub bytes: u64,
    pub external: bool,
    /// `None` for types without a numeric reading.
    pub stats: Option<TensorStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub histogram: Option<Histogram>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantization: Option<QuantInfo>,
}

/// A node that owns weights: the unit the studio compresses.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerReport {
    pub name: String,
    pub op: String,
    /// Empty for the main graph, else the subgraph path.
    pub graph: String,
    /// Elements of all weight tensors the layer reads.
    pub parameters: u64,
    /// Bytes of those tensors as stored.
    pub bytes: u64,
    /// `None` when a needed dimension is unknown; `macs_note` says which.
    pub macs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub macs_note: Option<String>,
    /// The main weight (e.g. a Conv's `W`), whose statistics are `stats`.
    pub weight: Option<String>,
    /// Every weight tensor the layer reads, main weight first.
    pub weights: Vec<String>,
    pub stats: Option<TensorStats>,
    pub output_shape: Option<Vec<Dim>>,
    /// Set when the main weight is stored quantized.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantization: Option<QuantInfo>,
}

/// Everything [`analyse`] finds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelAnalysis {
    pub path: String,
    pub file_size_bytes: u64,
    pub ir_version: i64,
    pub producer: String,
    /// Operator set per domain (`""` is the default `ai.onnx`).
    pub opsets: BTreeMap<String, i64>,
    pub metadata: BTreeMap<String, String>,
    /// Elements of every initializer and `Constant` tensor, main graph and subgraphs.
    pub parameters: u64,
    /// Bytes of those tensors as stored.
    pub weight_bytes: u64,
    pub bytes_by_dtype: BTreeMap<String, u64>,
    /// Nodes in the main graph and all subgraphs.
    pub nodes: usize,
    /// Op type → count, over the same nodes.
    pub ops: BTreeMap<String, usize>,
    pub inputs: Vec<ValueDesc>,
    pub outputs: Vec<ValueDesc>,
    /// Sum of the layers' known MACs.
    pub macs: u64,
    /// False when some layer's MACs are unknown.
    pub macs_complete: bool,
    pub layers: Vec<LayerReport>,
    pub tensors: Vec<TensorReport>,
    pub warnings: Vec<String>,
    /// The model checked against the ONNX operator schemas of its opsets.
    pub validity: crate::model::schema::SchemaReport,
}

/// Ops treated as layers when they read a weight.
const LAYER_OPS: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "Gemm",
    "MatMul",
    "LSTM",
    "GRU",
    "RNN",
    "Gather",
    "BatchNormalization",
    "InstanceNormalization",
    "LayerNormalization",
    "QLinearConv",
    "QLinearMatMul",
    "ConvInteger",
    "MatMulInteger",
    "Einsum",
];

/// Ops that pass a weight through unchanged in meaning (a weight read through them is still
/// the layer's weight).
const WEIGHT_PASSTHROUGH: &[&str] = &[
    "DequantizeLinear",
    "Cast",
    "Transpose",
    "Identity",
    "Reshape",
    "Unsqueeze",
    "Squeeze",
];

/// Input positions of a layer's main weight, tried in order.
fn main_weight_inputs(op: &str) -> &'static [usize] {
    match op {
        "QLinearConv" => &[3],
        "QLinearMatMul" => &[3, 0],
        "MatMul" | "MatMulInteger" | "Einsum" => &[1, 0],
        "Gather" => &[0],
        _ => &[1],
    }
}

/// Analyses `model`: totals, layers, per-tensor statistics and histograms.
pub fn analyse(
    model: &LoadedModel,
    options: &AnalysisOptions,
    progress: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<ModelAnalysis> {
    let total = model.weights.len() as u64;
    let done = std::sync::atomic::AtomicU64::new(0);
    report(progress, "statistics", 0, total);
    let quant = quantization_by_weight(model);
    let tensors: Vec<TensorReport> = model
        .weights
        .par_iter()
        .map(|w| {
            cancel.check()?;
            let report_ = tensor_report(w, options.histogram_bins, quant.get(&w.name).cloned());
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            report(progress, "statistics", n, total);
            Ok(report_)
        })
        .collect::<Result<_>>()?;
    cancel.check()?;

    let mut warnings = model.warnings.clone();
    let validity = crate::model::schema::check_model(&model.proto);
    warnings.extend(
        validity
            .problems
            .iter()
            .map(|p| format!("not valid against the ONNX operator schemas: {p}")),
    );
    for t in &tensors {
        if let Some(s) = &t.stats
            && (s.nan_count > 0 || s.inf_count > 0)
        {
            warnings.push(format!(
                "tensor `{}` holds {} NaN and {} infinite value(s): outputs that depend on it are not meaningful",
                t.name, s.nan_count, s.inf_count
            ));
        }
    }
    for input in &model.graph.inputs {
        if let Some(dims) = &input.shape {
            let known: Vec<i64> = dims.iter().filter_map(Dim::known).collect();
            if matches!(
                crate::model::tensor::element_count(&input.name, &known),
                Err(crate::Error::DimensionOverflow { .. })
            ) {
                warnings.push(format!(
                    "input `{}` has shape {} whose element count overflows 64 bits",
                    input.name,
                    crate::model::graph::format_shape(Some(dims))
                ));
            }
        }
    }

    let tensor_index: HashMap<(&str, &str), usize> = tensors
        .iter()
        .enumerate()
        .map(|(i, t)| ((t.graph.as_str(), t.name.as_str()), i))
        .collect();
    let layers: Vec<LayerReport> = model
        .graph
        .nodes
        .iter()
        .filter_map(|node| layer_report(model, node, &tensors, &tensor_index))
        .collect();

    let mut ops = BTreeMap::new();
    for node in &model.graph.nodes {
        *ops.entry(node.op_type.clone()).or_insert(0) += 1;
    }
    let mut bytes_by_dtype = BTreeMap::new();
    for w in &model.weights {
        let total = bytes_by_dtype.entry(w.dtype.name()).or_insert(0u64);
        *total = total.saturating_add(w.bytes);
    }
    let proto = &model.proto;
    Ok(ModelAnalysis {
        path: model.path.display().to_string(),
        file_size_bytes: model.file_size_bytes,
        ir_version: proto.ir_version(),
        producer: format!("{} {}", proto.producer_name(), proto.producer_version())
            .trim()
            .to_owned(),
        opsets: proto
            .opset_import
            .iter()
            .map(|o| (o.domain().to_owned(), o.version()))
            .collect(),
        metadata: proto
            .metadata_props
            .iter()
            .map(|p| (p.key().to_owned(), p.value().to_owned()))
            .collect(),
        // Saturating: declared dims of a hostile file can sum past 64 bits.
        parameters: model
            .weights
            .iter()
            .fold(0u64, |a, w| a.saturating_add(w.elements)),
        weight_bytes: model
            .weights
            .iter()
            .fold(0u64, |a, w| a.saturating_add(w.bytes)),
        bytes_by_dtype,
        nodes: model.graph.nodes.len(),
        ops,
        inputs: with_inferred(&model.graph.inputs, model),
        outputs: with_inferred(&model.graph.outputs, model),
        macs: layers
            .iter()
            .filter_map(|l| l.macs)
            .fold(0u64, u64::saturating_add),
        macs_complete: layers.iter().all(|l| l.macs.is_some()),
        layers,
        tensors,
        warnings,
        validity,
    })
}

/// Declared inputs/outputs, with unknown parts filled in from tract's inference.
fn with_inferred(declared: &[ValueDesc], model: &LoadedModel) -> Vec<ValueDesc> {
    declared
        .iter()
        .map(|d| {
            let mut d = d.clone();
            if let Some(fact) = model.shapes.get(&d.name) {
                let declared_complete = d
                    .shape
                    .as_ref()
                    .is_some_and(|s| s.iter().all(|x| !matches!(x, Dim::Unknown(()))));
                if !declared_complete && fact.shape.is_some() {
                    d.shape = fact.shape.clone();
                }
                if d.dtype.is_none() {
                    d.dtype = fact.dtype;
                }
            }
            d
        })
        .collect()
}

fn tensor_report(w: &Weight, bins: usize, quantization: Option<QuantInfo>) -> TensorReport {
    let (stats, hist) = match &w.values {
        Some(values) => {
            let stats = tensor_stats(values);
            let hist = histogram(values, stats.min, stats.max, bins);
            (Some(stats), Some(hist))
        }
        None => (None, None),
    };
    TensorReport {
        name: w.name.clone(),
        graph: w.graph.clone(),
        origin: w.origin.clone(),
        dtype: w.dtype,
        shape: w.dims.clone(),
        elements: w.elements,
        bytes: w.bytes,
        external: w.external,
        stats,
        histogram: hist,
        quantization,
    }
}

/// Scale and zero point of weights read by `DequantizeLinear` or a QLinear/Integer op.
fn quantization_by_weight(model: &LoadedModel) -> HashMap<String, QuantInfo> {
    let values = |name: Option<&String>| -> Vec<f32> {
        name.and_then(|n| model.weight(n))
            .and_then(|w| w.values.clone())
            .unwrap_or_default()
    };
    let mut out = HashMap::new();
    for node in model.graph.main_nodes() {
        // (weight input, scale input, zero-point input)
        let slots: &[(usize, usize, usize)] = match node.op_type.as_str() {
            "DequantizeLinear" => &[(0, 1, 2)],
            "QLinearConv" => &[(3, 4, 5)],
            "QLinearMatMul" => &[(3, 4, 5), (0, 1, 2)],
            _ => &[],
        };
        for &(w, s, z) in slots {
            let Some(weight) = node.inputs.get(w).filter(|n| model.weight(n).is_some()) else {
                continue;
            };
            let axis = node
                .attributes
                .iter()
                .find(|a| a.name == "axis")
                .and_then(|a| a.value.parse().ok());
            let scales = values(node.inputs.get(s));
            let per_channel = scales.len() > 1;
            // Without an `axis` attribute: DequantizeLinear's default is 1; QLinearConv's
            // weight scales run along the output channels (axis 0); QLinearMatMul's along
            // the last axis of the operand (its columns).
            let rank = model.weight(weight).map_or(2, |w| w.dims.len() as i64);
            let default_axis = match node.op_type.as_str() {
                "QLinearConv" => 0,
                "QLinearMatMul" => rank - 1,
                _ => 1,
            };
            out.insert(
                weight.clone(),
                QuantInfo {
                    zero_points: values(node.inputs.get(z)),
                    axis: if per_channel {
                        axis.or(Some(default_axis))
                    } else {
                        None
                    },
                    scales,
                },
            );
        }
    }
    out
}

/// Finds the weight a node input reads: directly, in an enclosing graph, or through a chain of
/// pass-through ops (`DequantizeLinear`, `Cast`, …) in the main graph.
fn resolve_weight<'a>(
    model: &LoadedModel,
    node: &NodeDesc,
    input: &str,
    tensor_index: &HashMap<(&'a str, &'a str), usize>,
) -> Option<usize> {
    let mut scope = node.graph.as_str();
    loop {
        if let Some(&i) = tensor_index.get(&(scope, input)) {
            return Some(i);
        }
        if scope.is_empty() {
            break;
        }
        // A subgraph path is `…/node/attribute`: drop the last two segments.
        scope = scope.rsplitn(3, '/').nth(2).unwrap_or("");
    }
    let mut name = input;
    for _ in 0..8 {
        let producer = &model.graph.nodes[*model.graph.producer.get(name)?];
        if !WEIGHT_PASSTHROUGH.contains(&producer.op_type.as_str()) {
            return None;
        }
        name = producer.inputs.first()?;
        if let Some(&i) = tensor_index.get(&("", name)) {
            return Some(i);
        }
    }
    None
}

fn layer_report(
    model: &LoadedModel,
    node: &NodeDesc,
    tensors: &[TensorReport],
    tensor_index: &HashMap<(&str, &str), usize>,
) -> Option<LayerReport> {
    if !LAYER_OPS.contains(&node.op_type.as_str()) {
        return None;
    }
    let resolved: Vec<Option<usize>> = node
        .inputs
        .iter()
        .map(|input| {
            if input.is_empty() {
                None
            } else {
                resolve_weight(model, node, input, tensor_index)
            }
        })
        .collect();
    let main = main_weight_inputs(&node.op_type)
        .iter()
        .find_map(|&slot| resolved.get(slot).copied().flatten().map(|t| (slot, t)));
    // MatMul / Gather / Einsum without a constant operand are activations, not layers.
    let (main_slot, main_tensor) = main?;
    let mut weights: Vec<usize> = vec![main_tensor];
    for t in resolved.iter().flatten() {
        if !weights.contains(t) {
            weights.push(*t);
        }
    }
    // The shape the node reads: the stored tensor's when it reads the weight directly; through
    // a Transpose/Reshape/(Un)Squeeze, the shape after it (from shape inference), or unknown.
    let weight_dims = |slot: usize| -> Option<Vec<i64>> {
        let t = resolved.get(slot).copied().flatten()?;
        let input = node.inputs.get(slot)?;
        if *input == tensors[t].name {
            return Some(tensors[t].shape.clone());
        }
        model
            .shapes
            .get(input)
            .and_then(|v| v.shape.as_ref())
            .and_then(|dims| dims.iter().map(|d| d.known()).collect())
    };
    let (macs, macs_note) = if node.graph.is_empty() {
        match node_macs(node, &model.shapes, weight_dims) {
            Ok(m) => (Some(m), None),
            Err(note) => (None, Some(note)),
        }
    } else {
        (
            None,
            Some("inside a subgraph: shapes are not inferred there".to_owned()),
        )
    };
    let main_report = &tensors[main_tensor];
    let _ = main_slot;
    Some(LayerReport {
        name: node.name.clone(),
        op: node.op_type.clone(),
        graph: node.graph.clone(),
        parameters: weights
            .iter()
            .fold(0u64, |a, &t| a.saturating_add(tensors[t].elements)),
        bytes: weights
            .iter()
            .fold(0u64, |a, &t| a.saturating_add(tensors[t].bytes)),
        macs,
        macs_note,
        weight: Some(main_report.name.clone()),
        weights: weights.iter().map(|&t| tensors[t].name.clone()).collect(),
        stats: main_report.stats.clone(),
        output_shape: node
            .outputs
            .first()
            .and_then(|o| model.shapes.get(o))
            .and_then(|f| f.shape.clone()),
        quantization: main_report.quantization.clone(),
    })
}
