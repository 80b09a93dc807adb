//! No silent destruction: every float output of the compressed model compared with the
//! original's, the lowest SQNR held against a floor (top-1 agreement may vouch instead for
//! an output the labels say is class scores), and — when the floor is not met — the layers
//! that add the most error, measured by running both models once more with each layer's
//! input and output as extra outputs.

use serde::Serialize;

use crate::compress::compressor::Compressor;
pub use crate::compress::plan::QualityFloor;
use crate::error::Result;
use crate::job::CancelToken;
use crate::measure::dataset::Dataset;
use crate::measure::eval::{Difference, Fidelity, fidelity, run_dataset_outputs};
use crate::measure::runtime::{BuildOptions, RunnableModel, RuntimeKind};
use crate::model::load::LoadedModel;
use crate::model::proto::ModelProto;

impl LayerError {
    /// `stem.conv (Conv): SQNR 200.0 → 12.1 dB` for people.
    pub fn describe(&self) -> String {
        let db = |v: Option<f64>| v.map_or("∞".to_owned(), |d| format!("{d:.1}"));
        format!(
            "{} ({}): SQNR {} → {} dB across the layer",
            self.layer,
            self.op,
            db(self.input_sqnr_db),
            db(self.output_sqnr_db)
        )
    }
}

/// One output of the model compared with the original's.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutputFidelity {
    pub name: String,
    /// Whether the output holds floats (others — ids, labels — are compared but not judged).
    pub float: bool,
    /// Whether it is a class score vector per sample (see [`CompareOutputs`]): only then
    /// does top-1 agreement with the original mean something.
    ///
    /// [`CompareOutputs`]: crate::pipeline::CompareOutputs
    pub class_scores: bool,
    pub fidelity: Fidelity,
}

/// How much error one layer adds: the SQNR of its input and of its output against the
/// original model's, on the same samples.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerError {
    pub layer: String,
    pub op: String,
    #[serde(serialize_with = "crate::measure::eval::json_db")]
    pub input_sqnr_db: Option<f64>,
    #[serde(serialize_with = "crate::measure::eval::json_db")]
    pub output_sqnr_db: Option<f64>,
    /// The noise this layer adds, as a fraction of its output's power: `10^(−out/10) −
    /// 10^(−in/10)` (the layers are ranked by it).
    pub added_noise: f64,
}

/// The verdict on the compressed model's outputs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Quality {
    pub passed: bool,
    pub floor: QualityFloor,
    /// The float output with the lowest SQNR, and that SQNR (`null`: identical).
    pub worst_output: Option<String>,
    #[serde(serialize_with = "crate::measure::eval::json_db")]
    pub worst_sqnr_db: Option<f64>,
    pub message: String,
    /// When the floor is not met: the compressed layers that add the most error, worst first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerError>,
}

/// Per-output fidelity of `outputs` against `original` (`[sample][output][value]`).
pub fn output_fidelity(
    names: &[String],
    float: &[bool],
    class_scores: &[bool],
    original: &[Vec<Vec<f32>>],
    outputs: &[Vec<Vec<f32>>],
) -> Vec<OutputFidelity> {
    names
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let pick = |all: &[Vec<Vec<f32>>]| -> Vec<Vec<f32>> {
                all.iter()
                    .map(|s| s.get(k).cloned().unwrap_or_default())
                    .collect()
            };
            OutputFidelity {
                name: name.clone(),
                float: float.get(k).copied().unwrap_or(true),
                class_scores: class_scores.get(k).copied().unwrap_or(false),
                fidelity: fidelity(&pick(original), &pick(outputs)),
            }
        })
        .collect()
}

/// Judges `outputs` against `floor`; `class_scores` is the output the labels index (the
/// first) when the data is labelled.
pub fn judge(
    outputs: &[OutputFidelity],
    floor: QualityFloor,
    class_scores: Option<&str>,
) -> Quality {
    let mut worst: Option<(&OutputFidelity, f64)> = None;
    let mut failing = Vec::new();
    for o in outputs.iter().filter(|o| o.float) {
        let db = o.fidelity.sqnr_db.unwrap_or(f64::INFINITY);
        if worst.is_none_or(|(_, w)| db < w) {
            worst = Some((o, db));
        }
        let vouched = class_scores == Some(o.name.as_str())
            && o.fidelity.nonfinite_values == 0
            && o.fidelity.agreement >= floor.min_top1_agreement;
        if !(db >= floor.min_output_sqnr_db || vouched) {
            failing.push(format!(
                "`{}` at {}{}",
                o.name,
                o.fidelity.sqnr_text(),
                if class_scores == Some(o.name.as_str()) {
                    format!(", top-1 agreement {:.2}%", o.fidelity.agreement * 100.0)
                } else {
                    String::new()
                }
            ));
        }
    }
    let passed = failing.is_empty();
    let message = match (&worst, passed) {
        (None, _) => "no float output to judge".to_owned(),
        (Some((o, _)), true) => format!(
            "every float output above the floor (lowest: `{}` at {})",
            o.name,
            o.fidelity.sqnr_text()
        ),
        (Some(_), false) => format!(
            "BELOW THE FLOOR of {} dB output SQNR{}: {}",
            floor.min_output_sqnr_db,
            class_scores.map_or(String::new(), |_| format!(
                " (or {:.0}% top-1 agreement for class scores)",
                floor.min_top1_agreement * 100.0
            )),
            failing.join("; ")
        ),
    };
    Quality {
        passed,
        floor,
        worst_output: worst.map(|(o, _)| o.name.clone()),
        worst_sqnr_db: worst.and_then(|(o, _)| o.fidelity.sqnr_db),
        message,
        layers: Vec::new(),
    }
}

/// Samples the per-layer attribution runs on.
const ATTRIBUTION_SAMPLES: usize = 2;

/// The compressed layers of `compressor` ranked by the error each adds (input SQNR minus
/// output SQNR against the original model), worst first, from one run of each model with
/// every layer's data input and output as extra outputs.
#[allow(clippy::too_many_arguments)]
pub fn layer_errors(
    original: &ModelProto,
    original_dir: Option<&std::path::Path>,
    compressed: &ModelProto,
    working: &LoadedModel,
    compressor: &Compressor,
    runtime: RuntimeKind,
    data: &Dataset,
    input_shape: &[usize],
    build: &BuildOptions,
    cancel: &CancelToken,
) -> Result<Vec<LayerError>> {
    // (layer, op, input tensor, output tensor) of layers both models still have.
    let mut probes = Vec::new();
    for layer in &compressor.layers {
        let node = &working.graph.nodes[layer.node];
        let data_input = node
            .inputs
            .iter()
            .find(|i| **i != layer.weight && !i.is_empty() && working.weight(i).is_none());
        if let (Some(input), Some(output)) = (data_input, node.outputs.first()) {
            probes.push((
                layer.name.clone(),
                layer.op.clone(),
                input.clone(),
                output.clone(),
            ));
        }
    }
    let mut tensors: Vec<String> = Vec::new();
    for (_, _, i, o) in &probes {
        for t in [i, o] {
            if !tensors.contains(t) {
                tensors.push(t.clone());
            }
        }
    }
    let sample = data.first(ATTRIBUTION_SAMPLES);
    let run = |proto: &ModelProto, dir| -> Result<Vec<Vec<Vec<f32>>>> {
        let model = RunnableModel::build_with(runtime, proto, dir, input_shape, &tensors, build)?;
        run_dataset_outputs(&model, &sample, &crate::job::NoProgress, cancel)
    };
    let before = run(original, original_dir)?;
    let after = run(compressed, None)?;
    let sqnr_of = |tensor: &str| -> Option<f64> {
        let k = 1 + tensors.iter().position(|t| t == tensor)?;
        let mut diff = Difference::default();
        for (b, a) in before.iter().zip(&after) {
            diff.add(b.get(k)?, a.get(k)?);
        }
        diff.sqnr_db()
    };
    let mut errors: Vec<LayerError> = probes
        .into_iter()
        .map(|(layer, op, input, output)| {
            let input_sqnr_db = sqnr_of(&input);
            let output_sqnr_db = sqnr_of(&output);
            let noise = |v: Option<f64>| v.map_or(0.0, |db| 10f64.powf(-db / 10.0));
            LayerError {
                layer,
                op,
                input_sqnr_db,
                output_sqnr_db,
                added_noise: noise(output_sqnr_db) - noise(input_sqnr_db),
            }
        })
        .collect();
    errors.sort_by(|a, b| b.added_noise.total_cmp(&a.added_noise));
    Ok(errors)
}

/// A float tensor the export leaves float, and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UncompressedTensor {
    pub tensor: String,
    pub elements: u64,
    pub bytes: u64,
    pub reason: String,
}

/// Float tensors of at least this many elements are listed when left float (biases and
/// normalization scales below it are too small to matter for the size).
const LISTED_ELEMENTS: u64 = 1024;

/// Every float tensor of `model` of [`LISTED_ELEMENTS`] or more that `compression` leaves as
/// it was, with the reason: the reason its layer was skipped, or what reads it.
pub fn uncompressed_tensors(
    model: &LoadedModel,
    compression: &crate::compress::compressor::Compression,
) -> Vec<UncompressedTensor> {
    use std::collections::HashMap;
    let changed: std::collections::HashSet<&str> = compression
        .layers
        .iter()
        .filter(|l| {
            let s = l.report.settings;
            !s.exclude
                && (s.prune_ratio > 0.0 || s.precision != crate::compress::plan::Precision::Float32)
        })
        .map(|l| l.report.weight.as_str())
        .collect();
    let planned_float: std::collections::HashSet<&str> = compression
        .layers
        .iter()
        .filter(|l| !changed.contains(l.report.weight.as_str()))
        .map(|l| l.report.weight.as_str())
        .collect();
    let skipped: HashMap<&str, &str> = compression
        .skipped
        .iter()
        .map(|s| (s.name.as_str(), s.reason.as_str()))
        .collect();
    let mut out = Vec::new();
    for w in &model.weights {
        let float = [
            crate::model::dtype::DType::FLOAT32,
            crate::model::dtype::DType::FLOAT64,
        ]
        .contains(&w.dtype);
        if !float || w.elements < LISTED_ELEMENTS || changed.contains(w.name.as_str()) {
            continue;
        }
        let readers: Vec<&crate::model::graph::NodeDesc> = model
            .graph
            .nodes
            .iter()
            .filter(|n| n.graph == w.graph && n.inputs.contains(&w.name))
            .collect();
        let reason = if planned_float.contains(w.name.as_str()) {
            "its layer is planned to stay float (excluded or float32)".to_owned()
        } else if let Some(r) = readers.iter().find_map(|n| skipped.get(n.name.as_str())) {
            (*r).to_owned()
        } else if !w.graph.is_empty() {
            "inside a subgraph: not compressed".to_owned()
        } else if readers.is_empty() {
            "not read by any node".to_owned()
        } else {
            let ops: Vec<&str> = readers.iter().map(|n| n.op_type.as_str()).collect();
            format!(
                "read by {} (not the main weight of a Conv, Gemm, MatMul, Gather or recurrent layer)",
                ops.join(", ")
            )
        };
        out.push(UncompressedTensor {
            tensor: w.name.clone(),
            elements: w.elements,
            bytes: w.bytes,
            reason,
        });
    }
    out.sort_by_key(|u| std::cmp::Reverse(u.bytes));
    out
}
