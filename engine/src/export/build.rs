//! Building the exported ONNX model from a compression: the exact protobuf that is evaluated
//! for the preview and written to disk, so what is previewed is what ships.

mod bias;
mod dynamic;
mod planned;
mod weights;

pub use planned::{PlannedFile, planned_file};

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::compress::compressor::{Compression, Compressor};
use crate::compress::plan::Precision;
use crate::error::{Error, Result};
use crate::model::graph_edit::{
    constant_node, float_tensor, half_tensor, int_attr, node, top_level_names, uint8_tensor, unique,
};
use crate::model::load::LoadedModel;
use crate::model::proto::{GraphProto, ModelProto, NodeProto};

/// How the exported file stores weights (and activations).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExportFormat {
    /// float32 weights with the plan's pruning (and, for integer layers, the dequantized
    /// values: the same outputs as the int8 file, at float size).
    #[default]
    Fp32,
    /// float16 weights followed by a `Cast` to float32.
    Fp16,
    /// Integer layers as int8 codes + `Cast` and `Mul` (a size format: runtimes fold them into
    /// float weights when the model loads, and compute in float).
    WeightsInt8,
    /// As `WeightsInt8`, plus int8 activations: `QuantizeLinear`/`DequantizeLinear` pairs on the
    /// inputs and outputs of integer layers, with ranges calibrated on data.
    QdqInt8,
    /// Integer MatMul/Gemm layers as int8 codes run by `MatMulInteger` on their input
    /// quantized to uint8 at run time (`DynamicQuantizeLinear`), as onnxruntime's
    /// `quantize_dynamic` writes them: integer kernels without calibration data. Other
    /// integer layers are stored as in `WeightsInt8` and compute in float.
    DynamicInt8,
}

impl ExportFormat {
    /// All formats, in CLI order.
    pub const ALL: [ExportFormat; 5] = [
        Self::Fp32,
        Self::Fp16,
        Self::WeightsInt8,
        Self::QdqInt8,
        Self::DynamicInt8,
    ];

    /// The CLI/JSON name (`fp32`, `fp16`, `weights-int8`, `qdq-int8`, `dynamic-int8`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Fp32 => "fp32",
            Self::Fp16 => "fp16",
            Self::WeightsInt8 => "weights-int8",
            Self::QdqInt8 => "qdq-int8",
            Self::DynamicInt8 => "dynamic-int8",
        }
    }

    /// Parses a CLI/JSON name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Whether no activation ranges need calibrating (dynamic int8 measures them at run
    /// time): such a file can be written without running the model.
    pub fn is_weight_only(self) -> bool {
        !matches!(self, Self::QdqInt8)
    }

    /// Whether integer layers run as integer kernels on int8 activations (QDQ and dynamic
    /// int8): their weight codes obey the target's range
    /// ([`crate::compress::plan::Recipe::integer_kernel_bits_cap`]).
    pub fn has_integer_kernels(self) -> bool {
        matches!(self, Self::QdqInt8 | Self::DynamicInt8)
    }
}

/// Calibrated activation ranges, by tensor name: (min, max).
pub type ActivationRanges = HashMap<String, (f32, f32)>;

/// Re-estimated BatchNormalization statistics, by node name: (mean, variance) per channel.
pub type BatchNormStats = HashMap<String, (Vec<f32>, Vec<f32>)>;

/// The model to export and what building it did.
#[derive(Clone, Debug)]
pub struct BuiltModel {
    pub proto: ModelProto,
    pub format: ExportFormat,
    /// Layers whose stored weights changed.
    pub layers_changed: usize,
    /// Activations given int8 QuantizeLinear/DequantizeLinear pairs (qdq-int8), or quantized
    /// at run time by `DynamicQuantizeLinear` (dynamic-int8).
    pub quantized_activations: Vec<String>,
    pub notes: Vec<String>,
}

/// How one weight is stored in the export.
enum Storage<'a> {
    Float32(&'a [f32]),
    Float16(&'a [f32]),
    Int8(&'a crate::compress::compressor::QuantizedWeight),
}

/// A layer whose activations the QDQ export quantizes.
#[derive(Clone, Debug, PartialEq)]
pub struct ActivationTarget {
    /// Index of the layer's node in the graph view.
    pub node: usize,
    /// The data input that gets a QuantizeLinear/DequantizeLinear pair.
    pub input: String,
    /// The layer's own output.
    pub output: String,
    /// The tensor that gets a pair after the layer: the output of a `Relu` that alone reads
    /// the layer's output (quantizing both would round twice; onnxruntime fuses layer + Relu
    /// \+ QuantizeLinear into one integer kernel that rounds once), else the layer's output.
    /// `None` when nothing reads it (e.g. the graph's `logits`): a pair there is dead code.
    pub quantized_output: Option<String>,
}

impl ActivationTarget {
    /// The tensors whose ranges calibration must measure.
    pub fn tensors(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.input).chain(self.quantized_output.as_ref())
    }
}

/// The layers whose activations the QDQ export quantizes.
pub fn activation_tensors(
    model: &LoadedModel,
    compressor: &Compressor,
    compression: &Compression,
) -> Vec<ActivationTarget> {
    let graph = &model.graph;
    let readers = |tensor: &str| graph.consumers.get(tensor).map_or(&[][..], Vec::as_slice);
    let is_graph_output = |tensor: &str| graph.outputs.iter().any(|o| o.name == tensor);
    let mut out = Vec::new();
    for (layer, result) in compressor.layers.iter().zip(&compression.layers) {
        let s = result.report.settings;
        if s.exclude || !matches!(s.precision, Precision::Int { .. }) {
            continue;
        }
        let node = &graph.nodes[layer.node];
        let data_slot = match node.op_type.as_str() {
            "Conv" | "ConvTranspose" | "Gemm" => 0,
            "MatMul" if node.inputs.get(1) == Some(&layer.weight) => 0,
            "MatMul" => 1,
            _ => continue, // Gather reads indices; recurrent ops keep float activations.
        };
        if let (Some(input), Some(output)) = (node.inputs.get(data_slot), node.outputs.first()) {
            let relu = match readers(output) {
                [only] if !is_graph_output(output) => {
                    let reader = &graph.nodes[*only];
                    (reader.op_type == "Relu" && reader.domain.is_empty())
                        .then(|| reader.outputs.first().cloned())
                        .flatten()
                }
                _ => None,
            };
            let after = relu.unwrap_or_else(|| output.clone());
            out.push(ActivationTarget {
                node: layer.node,
                input: input.clone(),
                output: output.clone(),
                quantized_output: (!readers(&after).is_empty()).then_some(after),
            });
        }
    }
    out
}

/// Scale and zero point of a uint8 activation with the calibrated range `[lo, hi]` (widened
/// to include 0, so that 0.0 — padding, Relu's floor — is exact).
pub fn activation_params(lo: f32, hi: f32) -> (f32, u8) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    // A tensor that was always exactly 0 on the calibration data: any scale represents it;
    // a fine one (2^-10) keeps a following layer's bias, quantized at input scale × weight
    // scale, as fine as its weights (a scale of 1 cost a real model's GRU head 4.7 dB).
    let scale = if hi > lo {
        (hi - lo) / 255.0
    } else {
        1.0 / 1024.0
    };
    let zero_point = (-lo / scale).round().clamp(0.0, 255.0) as u8;
    (scale, zero_point)
}

/// Builds the export of `compression` in `format`. `ranges` are required for `QdqInt8`.
pub fn build_export(
    model: &LoadedModel,
    compressor: &Compressor,
    compression: &Compression,
    format: ExportFormat,
    ranges: Option<&ActivationRanges>,
    batchnorm: Option<&BatchNormStats>,
) -> Result<BuiltModel> {
    let mut proto = model.self_contained_proto()?;
    let mut notes = Vec::new();
    let graph = proto.graph.as_mut().ok_or_else(|| Error::InvalidArgument {
        what: "model",
        reason: "no graph".to_owned(),
    })?;
    if let Some(stats) = batchnorm {
        replace_batchnorm_stats(graph, stats)?;
        notes.push(format!(
            "re-estimated the statistics of {} BatchNormalization layers on calibration data",
            stats.len()
        ));
    }
    let mut names = top_level_names(graph);
    let mut prelude: Vec<NodeProto> = Vec::new();
    let mut layers_changed = 0;
    let mut any_f16_from_int = false;
    let mut dynamic_layers = Vec::new();
    let mut float_integer_layers = Vec::new();

    for (layer, result) in compressor.layers.iter().zip(&compression.layers) {
        let s = result.report.settings;
        let untouched = s.exclude || (s.prune_ratio == 0.0 && s.precision == Precision::Float32);
        if untouched {
            continue;
        }
        let storage = match (format, s.precision, &result.quantized) {
            (ExportFormat::Fp32, _, _) => Storage::Float32(&result.values),
            (ExportFormat::Fp16, precision, _) => {
                any_f16_from_int |= matches!(precision, Precision::Int { .. });
                Storage::Float16(&result.values)
            }
            (_, Precision::Int { .. }, Some(q)) => Storage::Int8(q),
            (_, Precision::Float16, _) => Storage::Float16(&result.values),
            _ => Storage::Float32(&result.values),
        };
        take_weight(graph, &layer.weight)?;
        let w = layer.weight.as_str();
        match storage {
            Storage::Float32(values) => {
                graph.initializer.push(float_tensor(w, &layer.dims, values))
            }
            Storage::Float16(values) => {
                let stored = unique(&mut names, &format!("{w}_fp16"));
                graph
                    .initializer
                    .push(half_tensor(&stored, &layer.dims, values));
                prelude.push(node(
                    "Cast",
                    &unique(&mut names, &format!("{w}_cast")),
                    &[&stored],
                    w,
                    &[int_attr("to", 1)],
                ));
            }
            Storage::Int8(q) if format == ExportFormat::QdqInt8 => {
                weights::dequantize_linear(graph, &mut names, &mut prelude, w, &layer.dims, q)
            }
            Storage::Int8(q) if format == ExportFormat::DynamicInt8 => {
                match dynamic::plan_layer(model, layer, q, graph, &mut names) {
                    Ok(plan) => dynamic_layers.push(plan),
                    Err(reason) => {
                        float_integer_layers.push((layer.name.clone(), reason));
                        weights::cast_and_scale(graph, &mut names, &mut prelude, w, &layer.dims, q)
                    }
                }
            }
            Storage::Int8(q) => {
                weights::cast_and_scale(graph, &mut names, &mut prelude, w, &layer.dims, q)
            }
        }
        layers_changed += 1;
    }
    if any_f16_from_int {
        notes.push(
            "fp16 export stores integer-planned layers as their dequantized values in float16"
                .to_owned(),
        );
    }

    let mut quantized_activations = Vec::new();
    let body: Vec<NodeProto> = if format == ExportFormat::QdqInt8 {
        let ranges = ranges.ok_or_else(|| Error::InvalidArgument {
            what: "export",
            reason: "qdq-int8 needs calibration data for activation ranges (--data)".to_owned(),
        })?;
        let targets = activation_tensors(model, compressor, compression);
        let biases = bias::quantize_biases(
            model,
            graph,
            compressor,
            compression,
            &targets,
            ranges,
            &mut names,
            &mut prelude,
        )?;
        if biases.quantized > 0 {
            notes.push(format!(
                "quantized the biases of {} integer layers to int32 at the input scale × weight \
                 scale, as integer kernels add them (the preview computes the same sums)",
                biases.quantized
            ));
        }
        notes.extend(biases.notes);
        insert_activation_qdq(
            std::mem::take(&mut graph.node),
            &targets,
            ranges,
            &mut names,
            &mut quantized_activations,
        )?
    } else if format == ExportFormat::DynamicInt8 {
        dynamic::notes(&mut notes, dynamic_layers.len(), &float_integer_layers);
        let (body, inputs) = dynamic::rewrite(
            std::mem::take(&mut graph.node),
            dynamic_layers,
            graph,
            &mut names,
        );
        quantized_activations = inputs;
        body
    } else {
        std::mem::take(&mut graph.node)
    };
    prelude.extend(body);
    graph.node = prelude;
    Ok(BuiltModel {
        proto,
        format,
        layers_changed,
        quantized_activations,
        notes,
    })
}

/// Inserts uint8 QuantizeLinear → DequantizeLinear pairs on the data input of each target
/// layer (before it) and on its quantized output (after the node producing it), rewiring
/// every later reader of a quantized tensor to its dequantized copy.
fn insert_activation_qdq(
    body: Vec<NodeProto>,
    targets: &[ActivationTarget],
    ranges: &ActivationRanges,
    names: &mut HashSet<String>,
    quantized: &mut Vec<String>,
) -> Result<Vec<NodeProto>> {
    // Layers are found by their output (unique in a valid graph): positions shift when
    // Constant-node weights are taken out.
    let before: HashMap<&str, &str> = targets
        .iter()
        .map(|t| (t.output.as_str(), t.input.as_str()))
        .collect();
    let after: HashSet<&str> = targets
        .iter()
        .filter_map(|t| t.quantized_output.as_deref())
        .collect();
    let mut replaced: HashMap<String, String> = HashMap::new();
    let mut out = Vec::with_capacity(body.len() + 4 * targets.len());
    let mut qdq = |tensor: &str,
                   out: &mut Vec<NodeProto>,
                   replaced: &mut HashMap<String, String>|
     -> Result<()> {
        if replaced.contains_key(tensor) {
            return Ok(());
        }
        let &(lo, hi) = ranges.get(tensor).ok_or_else(|| Error::InvalidArgument {
            what: "calibration",
            reason: format!("no activation range for `{tensor}`"),
        })?;
        let (scale, zero_point) = activation_params(lo, hi);
        let scale_name = unique(names, &format!("{tensor}_act_scale"));
        let zp_name = unique(names, &format!("{tensor}_act_zero_point"));
        let q_name = unique(names, &format!("{tensor}_act_quantized"));
        let dq_name = unique(names, &format!("{tensor}_act_dequantized"));
        out.push(constant_node(
            &unique(names, &format!("{scale_name}_const")),
            &scale_name,
            float_tensor(&scale_name, &[], &[scale]),
        ));
        out.push(constant_node(
            &unique(names, &format!("{zp_name}_const")),
            &zp_name,
            uint8_tensor(&zp_name, &[], &[zero_point]),
        ));
        out.push(node(
            "QuantizeLinear",
            &unique(names, &format!("{tensor}_quantize")),
            &[tensor, &scale_name, &zp_name],
            &q_name,
            &[],
        ));
        out.push(node(
            "DequantizeLinear",
            &unique(names, &format!("{tensor}_dequantize")),
            &[&q_name, &scale_name, &zp_name],
            &dq_name,
            &[],
        ));
        replaced.insert(tensor.to_owned(), dq_name);
        quantized.push(tensor.to_owned());
        Ok(())
    };
    for mut n in body {
        let input = n
            .output
            .first()
            .and_then(|o| before.get(o.as_str()).copied());
        if let Some(input) = input {
            qdq(input, &mut out, &mut replaced)?;
        }
        for input in n.input.iter_mut() {
            if let Some(r) = replaced.get(input.as_str()) {
                *input = r.clone();
            }
        }
        let produced: Vec<String> = n
            .output
            .iter()
            .filter(|o| after.contains(o.as_str()))
            .cloned()
            .collect();
        out.push(n);
        for tensor in produced {
            qdq(&tensor, &mut out, &mut replaced)?;
        }
    }
    Ok(out)
}

/// Replaces the mean and variance inputs of the named BatchNormalization nodes.
fn replace_batchnorm_stats(graph: &mut GraphProto, stats: &BatchNormStats) -> Result<()> {
    let mut names = top_level_names(graph);
    let mut replacements = Vec::new();
    let mut replaced = Vec::new();
    for node in graph
        .node
        .iter_mut()
        .filter(|n| n.op_type() == "BatchNormalization")
    {
        let Some((mean, var)) = stats.get(node.name()) else {
            continue;
        };
        let dims = [mean.len() as i64];
        let mean_name = unique(&mut names, &format!("{}_recalibrated_mean", node.name()));
        let var_name = unique(&mut names, &format!("{}_recalibrated_var", node.name()));
        if node.input.len() < 5 {
            return Err(Error::InvalidArgument {
                what: "BatchNormalization",
                reason: format!("`{}` has fewer than 5 inputs", node.name()),
            });
        }
        replaced.push(std::mem::replace(&mut node.input[3], mean_name.clone()));
        replaced.push(std::mem::replace(&mut node.input[4], var_name.clone()));
        replacements.push(float_tensor(&mean_name, &dims, mean));
        replacements.push(float_tensor(&var_name, &dims, var));
    }
    graph.initializer.extend(replacements);
    // Drop the old statistics when nothing reads them any more (a subgraph might: keep them then).
    let has_subgraphs = graph.node.iter().any(|n| {
        n.attribute
            .iter()
            .any(|a| a.g.is_some() || !a.graphs.is_empty())
    });
    if !has_subgraphs {
        let used: HashSet<&str> = graph
            .node
            .iter()
            .flat_map(|n| n.input.iter().map(String::as_str))
            .collect();
        let outputs: HashSet<&str> = graph.output.iter().map(|o| o.name()).collect();
        let unused: HashSet<String> = replaced
            .into_iter()
            .filter(|r| !used.contains(r.as_str()) && !outputs.contains(r.as_str()))
            .collect();
        graph.initializer.retain(|t| !unused.contains(t.name()));
    }
    Ok(())
}

/// Removes the stored weight `name` (an initializer, or the `Constant` node producing it).
fn take_weight(graph: &mut GraphProto, name: &str) -> Result<()> {
    if let Some(pos) = graph.initializer.iter().position(|t| t.name() == name) {
        graph.initializer.remove(pos);
        // Old exports list initializers as graph inputs too; a computed weight cannot be one.
        graph.input.retain(|i| i.name() != name);
        return Ok(());
    }
    if let Some(pos) = graph.node.iter().position(|n| {
        n.op_type() == "Constant" && n.output.first().map(String::as_str) == Some(name)
    }) {
        graph.node.remove(pos);
        return Ok(());
    }
    Err(Error::InvalidArgument {
        what: "export",
        reason: format!("weight `{name}` is not stored in the main graph"),
    })
}
