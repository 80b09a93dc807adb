//! The optimize job end to end: compress, calibrate, build the export, measure it against the
//! original on the same samples, write it atomically with its recipe and report, then reload
//! the written file and check it reproduces the measured outputs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::compress::{Compression, Compressor, LayerCompression, SkippedLayer};
use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::eval::{Accuracy, Fidelity, Latency, accuracy, fidelity, latency, run_dataset};
use crate::export::{
    ActivationRanges, BatchNormStats, BuiltModel, ExportFormat, activation_tensors, build_export,
};
use crate::job::{CancelToken, ProgressSink, report};
use crate::load::{LoadedModel, load_model};
use crate::plan::{ActivationCalibration, BatchNormRecalibration, Recipe};
use crate::proto::{Message, ModelProto};
use crate::quant::quantile;
use crate::runtime::{BuildOptions, FixedInput, Runnable, RunnableModel, RuntimeKind};
use crate::structured::{ChannelPlan, ChannelRemoval, remove_channels};
use crate::write::{write_bytes_atomic, write_model_atomic};

/// What is given for one model input: a concrete shape (batch included), a value to hold it
/// at for every sample, or both (from the command line's `--input-shape name=1,3,224,224` and
/// `--input-value name=0`, or a form in the studio).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InputSetting {
    pub name: String,
    pub shape: Option<Vec<usize>>,
    pub value: Option<f64>,
}

impl InputSetting {
    /// A concrete shape for input `name`.
    pub fn shape(name: &str, dims: Vec<usize>) -> Self {
        Self {
            name: name.to_owned(),
            shape: Some(dims),
            value: None,
        }
    }

    /// A constant value for input `name`.
    pub fn value(name: &str, value: f64) -> Self {
        Self {
            name: name.to_owned(),
            shape: None,
            value: Some(value),
        }
    }
}

/// Settings of model inputs (shapes for symbolic dims, values for inputs the data does not
/// feed); empty when the model's one input is fully described by the model or the data.
pub type InputShapes = [InputSetting];

fn split_setting<'t>(text: &'t str, example: &str) -> Result<(&'t str, &'t str)> {
    let bad = |reason: String| Error::InvalidArgument {
        what: "input setting",
        reason,
    };
    let (name, rest) = text
        .split_once('=')
        .ok_or_else(|| bad(format!("`{text}` is not NAME=… (e.g. {example})")))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(bad(format!("`{text}` has no input name before `=`")));
    }
    Ok((name, rest.trim()))
}

/// Parses `name=1,3,224,224` (dims separated by `,` or `x`; every dim at least 1; `name=`
/// alone is a scalar).
pub fn parse_input_shape(text: &str) -> Result<InputSetting> {
    let (name, dims) = split_setting(text, "input=1,3,224,224")?;
    if dims.is_empty() {
        return Ok(InputSetting::shape(name, Vec::new()));
    }
    let dims: Vec<usize> = dims
        .split([',', 'x'])
        .map(|d| match d.trim().parse::<usize>() {
            Ok(v) if v > 0 => Ok(v),
            _ => Err(Error::InvalidArgument {
                what: "input shape",
                reason: format!(
                    "`{text}`: `{}` is not a dimension (a whole number of at least 1)",
                    d.trim()
                ),
            }),
        })
        .collect::<Result<_>>()?;
    Ok(InputSetting::shape(name, dims))
}

/// Parses `name=16000` (a number; `true`/`false` for booleans).
pub fn parse_input_value(text: &str) -> Result<InputSetting> {
    let (name, value) = split_setting(text, "sr=16000")?;
    let value = match value {
        "true" => 1.0,
        "false" => 0.0,
        v => v
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| Error::InvalidArgument {
                what: "input value",
                reason: format!("`{text}`: `{v}` is not a number"),
            })?,
    };
    Ok(InputSetting::value(name, value))
}

/// Combines settings of the same input (a shape and a value); giving either twice is an error.
pub fn merge_input_settings(settings: Vec<InputSetting>) -> Result<Vec<InputSetting>> {
    let mut merged: Vec<InputSetting> = Vec::new();
    for s in settings {
        match merged.iter_mut().find(|m| m.name == s.name) {
            None => merged.push(s),
            Some(m) => {
                if (m.shape.is_some() && s.shape.is_some())
                    || (m.value.is_some() && s.value.is_some())
                {
                    return Err(Error::InvalidArgument {
                        what: "input setting",
                        reason: format!("input `{}` is given twice", s.name),
                    });
                }
                m.shape = m.shape.take().or(s.shape);
                m.value = m.value.take().or(s.value);
            }
        }
    }
    Ok(merged)
}

/// The model's input shape with every dimension concrete (batch 1), from the analysis, else
/// from `data`. See [`resolve_input_shape`] to give shapes explicitly.
pub fn concrete_input_shape(model: &LoadedModel, data: Option<&Dataset>) -> Result<Vec<usize>> {
    resolve_input_shape(model, data, &[])
}

/// How a model's inputs are fed in a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ResolvedInputs {
    /// The input the data feeds.
    pub input: String,
    /// Its concrete shape, batch included.
    pub shape: Vec<usize>,
    /// The other inputs, held at a value.
    pub fixed: Vec<FixedInput>,
}

/// [`resolve_inputs`]' shape of the input the data feeds.
pub fn resolve_input_shape(
    model: &LoadedModel,
    data: Option<&Dataset>,
    settings: &InputShapes,
) -> Result<Vec<usize>> {
    resolve_inputs(model, data, settings).map(|r| r.shape)
}

/// Which input the data feeds and at what shape, and the values of the others.
///
/// The data feeds the one input without a value in `settings` (a one-input model: its input).
/// Its shape is
/// 1. the shape given for it in `settings` (it must agree with the known declared dims);
/// 2. the declared shape, when every dim is known;
/// 3. batch 1 followed by the shape of a sample of `data`, filling the symbolic dims (known
///    dims must agree).
///
/// Every other input needs a value, and a shape unless its declared one is fully known.
/// Otherwise an [`Error::InvalidArgument`] naming the input, its declared shape, and how to
/// give what is missing (`--input-shape NAME=DIMS`, `--input-value NAME=V`).
pub fn resolve_inputs(
    model: &LoadedModel,
    data: Option<&Dataset>,
    settings: &InputShapes,
) -> Result<ResolvedInputs> {
    let bad = |reason: String| Error::InvalidArgument {
        what: "input shape",
        reason,
    };
    let inputs = &model.graph.inputs;
    if inputs.is_empty() {
        return Err(Error::InvalidArgument {
            what: "model",
            reason: "it has no input".to_owned(),
        });
    }
    let listed = || {
        inputs
            .iter()
            .map(|i| format!("`{}`", i.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for s in settings {
        if !inputs.iter().any(|i| i.name == s.name) {
            return Err(bad(format!(
                "the model has no input `{}` (its inputs: {})",
                s.name,
                listed()
            )));
        }
    }
    let setting = |name: &str| settings.iter().find(|s| s.name == name);
    let fed: Vec<&crate::graph::ValueDesc> = inputs
        .iter()
        .filter(|i| setting(&i.name).is_none_or(|s| s.value.is_none()))
        .collect();
    let input = match fed.as_slice() {
        [one] => *one,
        [] => {
            return Err(bad(format!(
                "every input ({}) has a value; one must be left for the data",
                listed()
            )));
        }
        several => {
            let names: Vec<String> = several.iter().map(|i| format!("`{}`", i.name)).collect();
            return Err(bad(format!(
                "the model has {} inputs without a value ({}); the data feeds one: give the others a value (--input-value NAME=V, and --input-shape NAME=DIMS where their shape is not fixed)",
                names.len(),
                names.join(", ")
            )));
        }
    };
    let declared_of = |i: &crate::graph::ValueDesc| {
        model
            .shapes
            .get(&i.name)
            .and_then(|f| f.shape.clone())
            .or_else(|| i.shape.clone())
    };
    // Where `dims` disagrees with a known declared dim, which one.
    let clash = |declared: &Option<Vec<crate::graph::Dim>>, dims: &[usize]| -> Option<String> {
        let declared = declared.as_ref()?;
        if declared.len() != dims.len() {
            return Some(format!("rank {} instead of {}", dims.len(), declared.len()));
        }
        declared
            .iter()
            .zip(dims)
            .enumerate()
            .find_map(|(i, (d, &v))| {
                // Exporters write -1 (or 0) for a dynamic dim: only positive dims are fixed.
                d.known()
                    .filter(|&k| k > 0 && k != v as i64)
                    .map(|k| format!("dim {i} is {v} but the model fixes it to {k}"))
            })
    };
    let fully_known = |declared: &Option<Vec<crate::graph::Dim>>| -> Option<Vec<usize>> {
        declared
            .as_ref()?
            .iter()
            .map(|d| {
                d.known()
                    .filter(|&v| v > 0)
                    .and_then(|v| usize::try_from(v).ok())
            })
            .collect()
    };
    let example = |declared: &Option<Vec<crate::graph::Dim>>| -> String {
        let dims: Vec<String> = declared
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|d| {
                d.known()
                    .filter(|&v| v > 0)
                    .map_or("N".to_owned(), |v| v.to_string())
            })
            .collect();
        if dims.is_empty() {
            "1,3,224,224".to_owned()
        } else {
            dims.join(",")
        }
    };

    let mut fixed = Vec::new();
    for i in inputs.iter().filter(|i| i.name != input.name) {
        let Some(s) = setting(&i.name) else { continue };
        let Some(value) = s.value else { continue };
        let declared = declared_of(i);
        let shape = match &s.shape {
            Some(dims) => {
                if let Some(problem) = clash(&declared, dims) {
                    return Err(bad(format!(
                        "input `{}` is declared {}; the shape given, {dims:?}, does not fit it: {problem}",
                        i.name,
                        crate::graph::format_shape(declared.as_deref())
                    )));
                }
                dims.clone()
            }
            None => fully_known(&declared).ok_or_else(|| {
                bad(format!(
                    "input `{}` has shape {}; give the shape to hold it at (--input-shape {}={})",
                    i.name,
                    crate::graph::format_shape(declared.as_deref()),
                    i.name,
                    example(&declared)
                ))
            })?,
        };
        fixed.push(FixedInput {
            name: i.name.clone(),
            shape,
            value,
        });
    }

    let declared = declared_of(input);
    let shown = crate::graph::format_shape(declared.as_deref());
    let done = |shape: Vec<usize>| ResolvedInputs {
        input: input.name.clone(),
        shape,
        fixed: fixed.clone(),
    };
    if let Some(dims) = setting(&input.name).and_then(|s| s.shape.as_ref()) {
        if let Some(problem) = clash(&declared, dims) {
            return Err(bad(format!(
                "input `{}` is declared {shown}; the shape given, {dims:?}, does not fit it: {problem}",
                input.name
            )));
        }
        return Ok(done(dims.clone()));
    }
    if let Some(known) = fully_known(&declared) {
        return Ok(done(known));
    }
    if let Some(data) = data {
        let mut shape = vec![1];
        shape.extend(&data.sample_shape);
        // A model input without a batch dim takes a sample as it is.
        if declared
            .as_ref()
            .is_some_and(|d| d.len() == data.sample_shape.len())
        {
            shape.remove(0);
        }
        if let Some(problem) = clash(&declared, &shape) {
            return Err(bad(format!(
                "input `{}` is declared {shown} but the data's samples are {:?} ({problem}); give its shape with --input-shape {}=DIMS",
                input.name, data.sample_shape, input.name
            )));
        }
        return Ok(done(shape));
    }
    Err(bad(format!(
        "input `{}` has shape {shown} with unknown dimensions; give data of a fixed shape or a concrete shape (--input-shape {}={})",
        input.name,
        input.name,
        example(&declared)
    )))
}

/// Runs `proto` in `runtime` on every sample of `data` (the inputs of `fixed` held at their
/// values) with the extra outputs `tensors` and hands each sample's extra outputs to
/// `observe` (tensor index, values).
#[allow(clippy::too_many_arguments)]
pub fn observe_tensors(
    runtime: RuntimeKind,
    proto: &ModelProto,
    input_shape: &[usize],
    fixed: &[FixedInput],
    tensors: &[String],
    data: &Dataset,
    stage: &str,
    progress: &dyn ProgressSink,
    cancel: &CancelToken,
    mut observe: impl FnMut(usize, &[f32]),
) -> Result<()> {
    let runnable = RunnableModel::build_with(
        runtime,
        proto,
        None,
        input_shape,
        tensors,
        &BuildOptions {
            fixed_inputs: fixed.to_vec(),
            ..BuildOptions::default()
        },
    )?;
    for i in 0..data.len() {
        cancel.check()?;
        report(progress, stage, i as u64, data.len() as u64);
        let outputs = runnable.run(data.sample(i))?;
        for (t, out) in outputs.iter().skip(1).enumerate() {
            observe(t, out);
        }
    }
    Ok(())
}

/// Per-tensor activation ranges of `proto` on `data`, observed in `runtime`.
#[allow(clippy::too_many_arguments)]
pub fn calibrate(
    runtime: RuntimeKind,
    proto: &ModelProto,
    input_shape: &[usize],
    fixed: &[FixedInput],
    tensors: &[String],
    data: &Dataset,
    calibration: ActivationCalibration,
    progress: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<ActivationRanges> {
    let mut unique: Vec<String> = tensors.to_vec();
    unique.sort();
    unique.dedup();
    let mut values: Vec<Vec<f32>> = vec![Vec::new(); unique.len()];
    let mut bounds: Vec<(f32, f32)> = vec![(f32::INFINITY, f32::NEG_INFINITY); unique.len()];
    // Percentile calibration keeps a strided subsample per tensor to bound memory.
    const KEEP_PER_SAMPLE: usize = 4096;
    let percentile = matches!(calibration, ActivationCalibration::Percentile { .. });
    observe_tensors(
        runtime,
        proto,
        input_shape,
        fixed,
        &unique,
        data,
        "calibrating activations",
        progress,
        cancel,
        |t, out| {
            for &v in out.iter().filter(|v| v.is_finite()) {
                bounds[t].0 = bounds[t].0.min(v);
                bounds[t].1 = bounds[t].1.max(v);
            }
            if percentile {
                let step = out.len().div_ceil(KEEP_PER_SAMPLE).max(1);
                values[t].extend(out.iter().step_by(step).filter(|v| v.is_finite()));
            }
        },
    )?;
    let mut ranges = ActivationRanges::new();
    for (t, name) in unique.iter().enumerate() {
        let range = match calibration {
            ActivationCalibration::MinMax => bounds[t],
            ActivationCalibration::Percentile { percentile } => {
                let p = f64::from(percentile) / 100.0;
                let hi = quantile(&mut values[t], p);
                let lo = quantile(&mut values[t], 1.0 - p);
                (lo, hi)
            }
        };
        ranges.insert(name.clone(), range);
    }
    Ok(ranges)
}

/// Per-channel mean and variance of every main-graph BatchNormalization input, re-estimated
/// on `data` one layer at a time in graph order: each layer is measured with the layers
/// before it already re-estimated, as a training-mode forward pass would see them. The
/// activations are observed in tract; see [`batchnorm_statistics_in`].
pub fn batchnorm_statistics(
    model: &LoadedModel,
    build: impl Fn(&BatchNormStats) -> Result<ModelProto>,
    input_shape: &[usize],
    data: &Dataset,
    progress: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<BatchNormStats> {
    batchnorm_statistics_in(
        RuntimeKind::Tract,
        model,
        build,
        input_shape,
        &[],
        data,
        progress,
        cancel,
    )
}

/// Batch-norm statistics re-estimated for `compression` of `model` (built as its float
/// export), or `None` when `mode` does not ask for them or the model has no batch norm.
#[allow(clippy::too_many_arguments)]
pub fn recalibrate_batchnorm(
    runtime: RuntimeKind,
    model: &LoadedModel,
    compressor: &Compressor,
    compression: &Compression,
    mode: BatchNormRecalibration,
    input_shape: &[usize],
    fixed: &[FixedInput],
    data: &Dataset,
    progress: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<Option<BatchNormStats>> {
    let has_batchnorm = model
        .graph
        .main_nodes()
        .any(|n| n.op_type == "BatchNormalization");
    if !has_batchnorm || !mode.applies(compression.prunes_any()) {
        return Ok(None);
    }
    let build = |stats: &BatchNormStats| {
        build_export(
            model,
            compressor,
            compression,
            ExportFormat::Fp32,
            None,
            Some(stats),
        )
        .map(|b| b.proto)
    };
    batchnorm_statistics_in(
        runtime,
        model,
        build,
        input_shape,
        fixed,
        data,
        progress,
        cancel,
    )
    .map(Some)
}

/// [`batchnorm_statistics`] with the activations observed in `runtime`, the inputs of
/// `fixed` held at their values.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_statistics_in(
    runtime: RuntimeKind,
    model: &LoadedModel,
    build: impl Fn(&BatchNormStats) -> Result<ModelProto>,
    input_shape: &[usize],
    fixed: &[FixedInput],
    data: &Dataset,
    progress: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<BatchNormStats> {
    let nodes: Vec<(String, String, usize)> = model
        .graph
        .main_nodes()
        .filter(|n| n.op_type == "BatchNormalization")
        .filter_map(|n| {
            let x = n.inputs.first()?;
            let scale = model.weight(n.inputs.get(1)?)?;
            Some((n.name.clone(), x.clone(), scale.elements as usize))
        })
        .collect();
    let mut stats = BatchNormStats::new();
    for (name, x, channels) in nodes {
        let proto = build(&stats)?;
        let (mut sum, mut sum_sq, mut count) = (
            vec![0f64; channels.max(1)],
            vec![0f64; channels.max(1)],
            0u64,
        );
        observe_tensors(
            runtime,
            &proto,
            input_shape,
            fixed,
            std::slice::from_ref(&x),
            data,
            "re-estimating batch norm",
            progress,
            cancel,
            |_, out| {
                let inner = out.len() / sum.len();
                if inner == 0 {
                    return;
                }
                for (c, run) in out.chunks(inner).enumerate() {
                    let c = c % sum.len();
                    for &v in run {
                        sum[c] += f64::from(v);
                        sum_sq[c] += f64::from(v) * f64::from(v);
                    }
                }
                count += inner as u64;
            },
        )?;
        if count == 0 {
            continue;
        }
        let n = count as f64;
        let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
        let var: Vec<f32> = sum_sq
            .iter()
            .zip(&sum)
            .map(|(q, s)| ((q / n) - (s / n) * (s / n)).max(0.0) as f32)
            .collect();
        stats.insert(name, (mean, var));
    }
    Ok(stats)
}

/// Measurements of one model on the evaluation samples.
#[derive(Clone, Debug, Serialize)]
pub struct Measured {
    /// When the data is labelled.
    pub accuracy: Option<Accuracy>,
    pub latency_ms: Option<Latency>,
    pub size_bytes: u64,
}

/// Whether the written file reproduces the preview.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    pub passed: bool,
    /// The runtime the written file was reloaded and run in.
    pub runtime: &'static str,
    pub samples: usize,
    /// Largest difference between the reloaded file's outputs and the preview's.
    pub max_abs_diff: f64,
    pub tolerance: f64,
    pub message: String,
}

/// The full report of an optimize run (written beside the model as JSON and Markdown).
#[derive(Clone, Debug, Serialize)]
pub struct OptimizeReport {
    pub model: String,
    pub output: String,
    pub format: ExportFormat,
    pub data: String,
    /// The runtime of the preview, the latencies and the verification.
    pub runtime: RuntimeKind,
    /// The input shape the models were run at (batch included).
    pub input_shape: Vec<usize>,
    /// Inputs held at a value (several-input models).
    pub fixed_inputs: Vec<FixedInput>,
    /// The output evaluated when it is not the model's first (`--output`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evaluated_output: Option<String>,
    pub original: Measured,
    pub compressed: Measured,
    /// The compressed model's outputs against the original's on the same samples.
    pub fidelity: Fidelity,
    pub layers: Vec<LayerCompression>,
    pub skipped: Vec<SkippedLayer>,
    /// Channels physically removed by structured pruning, per planned layer.
    pub structured: Vec<ChannelRemoval>,
    /// Per pruned layer, the output error before and after reconstruction (when the recipe
    /// asks for it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reconstruction: Vec<crate::reconstruct::LayerReconstruction>,
    /// Total MACs of the original and of the exported model (structured pruning lowers it).
    pub macs_before: u64,
    pub macs_after: u64,
    pub quantized_activations: Vec<String>,
    pub notes: Vec<String>,
    pub verification: Verification,
    pub recipe: Recipe,
}

/// Options of [`optimize`].
#[derive(Clone, Copy)]
pub struct OptimizeOptions<'a> {
    pub recipe: &'a Recipe,
    pub format: ExportFormat,
    /// Evaluation data; `None` uses generated inputs (fidelity only).
    pub data: &'a Dataset,
    /// Calibration data for QDQ activations.
    pub calibration: Option<&'a Dataset>,
    pub latency_runs: usize,
    /// The runtime of the preview (accuracy, fidelity, calibration), latency and verification.
    pub runtime: RuntimeKind,
    /// Concrete shapes for inputs with symbolic dims (default: from the data, batch 1), and
    /// values for the inputs the data does not feed.
    pub input_shapes: &'a InputShapes,
    /// The output whose values are evaluated and verified (a graph output or an intermediate
    /// tensor) instead of the model's first.
    pub output: Option<&'a str>,
}

/// The compression as previewed: built model plus its outputs on the evaluation samples.
pub struct Preview {
    pub compression: Compression,
    pub built: BuiltModel,
    pub original_outputs: Vec<Vec<f32>>,
    pub outputs: Vec<Vec<f32>>,
    pub input_shape: Vec<usize>,
    /// Inputs held at a value.
    pub fixed_inputs: Vec<FixedInput>,
}

/// The model after structured pruning, with the recipe that finishes the job on it.
pub struct StructuredPass {
    pub model: LoadedModel,
    /// The recipe with the structurally pruned layers' prune ratio set to 0 (their channels
    /// are gone; nothing is left to zero).
    pub recipe: Recipe,
    pub removals: Vec<ChannelRemoval>,
}

/// Removes the channels that the recipe's structured pruning selects, where the graph allows
/// it (a model pass: model in, smaller model out). `None` when no layer asks for it.
pub fn structured_pass(
    model: &LoadedModel,
    analysis: &crate::analysis::ModelAnalysis,
    recipe: &Recipe,
    cancel: &CancelToken,
) -> Result<Option<StructuredPass>> {
    let mut ranking = Compressor::new(model, analysis);
    let compression = ranking.apply(recipe, cancel)?;
    let mut plan = ChannelPlan::new();
    let mut after = recipe.clone();
    for (layer, result) in ranking.layers.iter().zip(&compression.layers) {
        let s = result.report.settings;
        if s.exclude || !s.prune_method.is_structured() || s.prune_ratio <= 0.0 {
            continue;
        }
        if !result.removed_channels.is_empty() {
            plan.insert(layer.name.clone(), result.removed_channels.clone());
        }
        after
            .layers
            .entry(layer.name.clone())
            .or_default()
            .prune_ratio = Some(0.0);
    }
    if plan.is_empty() {
        return Ok(None);
    }
    // Removing channels is pruning: batch-norm statistics downstream move as much.
    if after.recalibrate_batchnorm == BatchNormRecalibration::WhenPruned {
        after.recalibrate_batchnorm = BatchNormRecalibration::Always;
    }
    let (proto, removals) = remove_channels(model, &plan)?;
    let size = Message::compute_size(&proto);
    let shrunk = crate::load::from_proto(proto, model.path.clone(), size, &crate::job::NoProgress)?;
    Ok(Some(StructuredPass {
        model: shrunk,
        recipe: after,
        removals,
    }))
}

/// Compresses, builds and runs the export on `data`, next to the original.
pub fn preview(
    original: &LoadedModel,
    model: &LoadedModel,
    compressor: &mut Compressor,
    options: &OptimizeOptions<'_>,
    progress: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<Preview> {
    let compression = compressor.apply(options.recipe, cancel)?;
    let inputs = resolve_inputs(model, Some(options.data), options.input_shapes)?;
    let (input_shape, fixed) = (inputs.shape, inputs.fixed);
    let runtime = options.runtime;
    let build_options = BuildOptions {
        fixed_inputs: fixed.clone(),
        output: options.output.map(str::to_owned),
        ..BuildOptions::default()
    };
    let calibration_data = options.calibration.unwrap_or(options.data);
    let batchnorm = recalibrate_batchnorm(
        runtime,
        model,
        compressor,
        &compression,
        options.recipe.recalibrate_batchnorm,
        &input_shape,
        &fixed,
        calibration_data,
        progress,
        cancel,
    )?;
    let ranges = if options.format == ExportFormat::QdqInt8 {
        let tensors: Vec<String> = activation_tensors(model, compressor, &compression)
            .iter()
            .flat_map(|t| t.tensors().cloned().collect::<Vec<_>>())
            .collect();
        // Ranges of the model as it will run before activation quantization: compressed
        // weights, re-estimated batch norm.
        let float = build_export(
            model,
            compressor,
            &compression,
            ExportFormat::Fp32,
            None,
            batchnorm.as_ref(),
        )?;
        Some(calibrate(
            runtime,
            &float.proto,
            &input_shape,
            &fixed,
            &tensors,
            calibration_data,
            options.recipe.activations.calibration,
            progress,
            cancel,
        )?)
    } else {
        None
    };
    let built = build_export(
        model,
        compressor,
        &compression,
        options.format,
        ranges.as_ref(),
        batchnorm.as_ref(),
    )?;
    let dir = original.path.parent().map(Path::to_path_buf);
    let original = RunnableModel::build_with(
        runtime,
        &original.self_contained_proto()?,
        dir.as_deref(),
        &input_shape,
        &[],
        &build_options,
    )?;
    let compressed = RunnableModel::build_with(
        runtime,
        &built.proto,
        None,
        &input_shape,
        &[],
        &build_options,
    )?;
    let original_outputs = run_dataset(&original, options.data, progress, cancel)?;
    let outputs = run_dataset(&compressed, options.data, progress, cancel)?;
    Ok(Preview {
        compression,
        built,
        original_outputs,
        outputs,
        input_shape,
        fixed_inputs: fixed,
    })
}

/// Reloads `path` from disk and checks its outputs on the first samples of `data` against
/// `expected` (the preview's), in tract.
pub fn verify_written(
    path: &Path,
    data: &Dataset,
    expected: &[Vec<f32>],
    input_shape: &[usize],
    cancel: &CancelToken,
) -> Verification {
    verify_written_in(
        RuntimeKind::Tract,
        path,
        data,
        expected,
        input_shape,
        &BuildOptions::default(),
        cancel,
    )
}

/// [`verify_written`] in `runtime` (the preview's runtime: outputs are compared with
/// outputs of the same runtime), built as `build` says (inputs held at a value, the output
/// read).
pub fn verify_written_in(
    runtime: RuntimeKind,
    path: &Path,
    data: &Dataset,
    expected: &[Vec<f32>],
    input_shape: &[usize],
    build: &BuildOptions,
    cancel: &CancelToken,
) -> Verification {
    const SAMPLES: usize = 64;
    const TOLERANCE: f64 = 1e-5;
    let fail = |message: String| Verification {
        passed: false,
        runtime: runtime.name(),
        samples: 0,
        max_abs_diff: f64::NAN,
        tolerance: TOLERANCE,
        message,
    };
    let reloaded = match load_model(path, &crate::job::NoProgress, cancel) {
        Ok(m) => m,
        Err(e) => return fail(format!("the written file does not load: {e}")),
    };
    let runnable = match RunnableModel::build_with(
        runtime,
        &reloaded.proto,
        path.parent(),
        input_shape,
        &[],
        build,
    ) {
        Ok(r) => r,
        Err(e) => return fail(format!("the written file does not run: {e}")),
    };
    let n = SAMPLES.min(data.len()).min(expected.len());
    let mut max_abs = 0f64;
    for (i, want) in expected.iter().enumerate().take(n) {
        let got = match runnable.run(data.sample(i)) {
            Ok(mut o) => o.swap_remove(0),
            Err(e) => return fail(format!("the written file fails on sample {i}: {e}")),
        };
        if got.len() != want.len() {
            return fail(format!(
                "sample {i}: {} outputs instead of {}",
                got.len(),
                want.len()
            ));
        }
        for (a, b) in got.iter().zip(want) {
            max_abs = max_abs.max((f64::from(*a) - f64::from(*b)).abs());
        }
    }
    let passed = max_abs <= TOLERANCE;
    Verification {
        passed,
        runtime: runtime.name(),
        samples: n,
        max_abs_diff: max_abs,
        tolerance: TOLERANCE,
        message: if passed {
            format!("reloaded file reproduces the preview on {n} samples")
        } else {
            format!("reloaded file differs from the preview by up to {max_abs:.3e} on {n} samples")
        },
    }
}

/// `OUT.onnx` → `OUT.recipe.json`, `OUT.report.json`, `OUT.report.md`.
pub fn sidecar_paths(output: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let stem = output.with_extension("");
    let with = |suffix: &str| PathBuf::from(format!("{}{suffix}", stem.display()));
    (
        with(".recipe.json"),
        with(".report.json"),
        with(".report.md"),
    )
}

/// The optimize job: preview, write (atomically, never over the opened model), report, verify.
pub fn optimize(
    model: &LoadedModel,
    options: &OptimizeOptions<'_>,
    output: &Path,
    progress: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<OptimizeReport> {
    let analysis = crate::analysis::analyse(model, &Default::default(), progress, cancel)?;
    let structured = structured_pass(model, &analysis, options.recipe, cancel)?;
    let (working, recipe) = match &structured {
        Some(pass) => (&pass.model, &pass.recipe),
        None => (model, options.recipe),
    };
    let reconstructed =
        crate::reconstruct::reconstruct_pass(working, recipe, options, progress, cancel)?;
    let working = reconstructed.as_ref().map_or(working, |r| &r.model);
    let inputs = resolve_inputs(model, Some(options.data), options.input_shapes)?;
    let calibration_data = options.calibration.unwrap_or(options.data);
    let folded = if options.format == ExportFormat::QdqInt8 {
        crate::staged::fold_stage(
            working,
            recipe,
            calibration_data,
            options.runtime,
            &inputs,
            progress,
            cancel,
        )?
    } else {
        None
    };
    let (working, recipe) = match &folded {
        Some(stage) => (&stage.model, &stage.recipe),
        None => (working, recipe),
    };
    let working_analysis = if structured.is_some() || folded.is_some() || reconstructed.is_some() {
        crate::analysis::analyse(working, &Default::default(), progress, cancel)?
    } else {
        analysis.clone()
    };
    let mut compressor = Compressor::new(working, &working_analysis);
    let working_options = OptimizeOptions { recipe, ..*options };
    crate::reconstruct::attach_input_grams(
        working,
        &mut compressor,
        recipe,
        &working_options,
        progress,
        cancel,
    )?;
    let preview = preview(
        model,
        working,
        &mut compressor,
        &working_options,
        progress,
        cancel,
    )?;
    report(progress, "measuring latency", 0, 2);
    let labels = options.data.labels.as_deref();
    let measure =
        |proto: &ModelProto, outputs: &[Vec<f32>], dir: Option<&Path>| -> Result<Measured> {
            let size_bytes = Message::compute_size(proto);
            let latency_ms = if options.latency_runs > 0 && !options.data.is_empty() {
                let runnable = RunnableModel::build_with(
                    options.runtime,
                    proto,
                    dir,
                    &preview.input_shape,
                    &[],
                    &BuildOptions {
                        fixed_inputs: preview.fixed_inputs.clone(),
                        output: options.output.map(str::to_owned),
                        ..BuildOptions::default()
                    },
                )?;
                Some(latency(
                    &runnable,
                    options.data.sample(0),
                    options.latency_runs,
                    options.latency_runs.div_ceil(5),
                    cancel,
                )?)
            } else {
                None
            };
            Ok(Measured {
                accuracy: labels.map(|l| accuracy(outputs, l)),
                latency_ms,
                size_bytes,
            })
        };
    let original_proto = model.self_contained_proto()?;
    let mut original = measure(
        &original_proto,
        &preview.original_outputs,
        model.path.parent(),
    )?;
    original.size_bytes = model.file_size_bytes;
    let compressed = measure(&preview.built.proto, &preview.outputs, None)?;
    cancel.check()?;

    report(progress, "writing", 1, 2);
    write_model_atomic(&preview.built.proto, output, &model.path)?;
    let written_size = std::fs::metadata(output)
        .map(|m| m.len())
        .unwrap_or(compressed.size_bytes);
    let verification = verify_written_in(
        options.runtime,
        output,
        options.data,
        &preview.outputs,
        &preview.input_shape,
        &BuildOptions {
            fixed_inputs: preview.fixed_inputs.clone(),
            output: options.output.map(str::to_owned),
            ..BuildOptions::default()
        },
        cancel,
    );

    let mut notes = preview.built.notes.clone();
    if options.data.generated {
        notes.push(
            "no data given: fidelity is measured on generated inputs, not real data".to_owned(),
        );
    }
    if options.format == ExportFormat::WeightsInt8 {
        notes.push("weights-only int8 makes the file smaller, not faster: runtimes dequantize it back to float".to_owned());
    }
    let mut layer_notes: Vec<String> = preview
        .compression
        .layers
        .iter()
        .flat_map(|l| l.report.notes.clone())
        .collect();
    layer_notes.sort();
    layer_notes.dedup();
    notes.extend(layer_notes);
    if let Some(stage) = &folded {
        notes.push(format!(
            "folded {} BatchNormalization layers into the layers before them before quantizing",
            stage.report.folded.len()
        ));
    }
    let mut skipped = preview.compression.skipped.clone();
    let reconstruction = reconstructed.map_or_else(Vec::new, |r| {
        skipped.extend(r.skipped);
        r.layers
    });
    let removals = structured.map(|p| p.removals).unwrap_or_default();
    for r in removals.iter().filter(|r| r.removed == 0) {
        skipped.push(SkippedLayer {
            name: r.layer.clone(),
            op: String::new(),
            reason: format!(
                "channels cannot be removed ({}); the layer was not pruned",
                r.reason.as_deref().unwrap_or("the graph does not allow it")
            ),
        });
    }
    let report_ = OptimizeReport {
        model: model.path.display().to_string(),
        output: output.display().to_string(),
        format: options.format,
        data: options.data.description.clone(),
        runtime: options.runtime,
        input_shape: preview.input_shape.clone(),
        fixed_inputs: preview.fixed_inputs.clone(),
        evaluated_output: options.output.map(str::to_owned),
        fidelity: fidelity(&preview.original_outputs, &preview.outputs),
        original,
        compressed: Measured {
            size_bytes: written_size,
            ..compressed
        },
        layers: preview
            .compression
            .layers
            .iter()
            .map(|l| l.report.clone())
            .collect(),
        skipped,
        structured: removals,
        reconstruction,
        macs_before: analysis.macs,
        macs_after: working_analysis.macs,
        quantized_activations: preview.built.quantized_activations.clone(),
        notes,
        verification,
        recipe: options.recipe.clone(),
    };
    let (recipe_path, json_path, md_path) = sidecar_paths(output);
    write_bytes_atomic(&recipe_path, options.recipe.to_json().as_bytes())?;
    let json = serde_json::to_string_pretty(&report_).map_err(|e| Error::InvalidArgument {
        what: "report",
        reason: e.to_string(),
    })?;
    write_bytes_atomic(&json_path, json.as_bytes())?;
    write_bytes_atomic(&md_path, crate::report::markdown(&report_).as_bytes())?;
    Ok(report_)
}
