//! The optimize job end to end: compress, calibrate, build the export, measure it against the
//! original on the same samples, write it atomically with its recipe and report, then reload
//! the written file and check it reproduces the measured outputs.

mod optimize;
pub mod quality;
pub mod report;
mod unmeasured;

// The jobs' façade: what the CLI and the studio call, from the stages below.
pub use crate::export::verify::{
    OriginalRef, RuntimeVerdict, SchemaVerdict, Verification, VerifyInputs, verify_export,
    verify_written, verify_written_in,
};
pub use crate::measure::generate::{AutoInputs, GENERATED_SAMPLES, auto_inputs, generated_for};
pub use crate::measure::inputs::{
    InputSetting, InputShapes, ResolvedInputs, concrete_input_shape, generated_data,
    merge_input_settings, parse_input_shape, parse_input_value, resolve_input_shape,
    resolve_inputs,
};
pub use crate::recover::calibration::{
    batchnorm_statistics, batchnorm_statistics_in, calibrate, observe_tensors,
    recalibrate_batchnorm,
};
pub use optimize::optimize;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::compress::compressor::{Compression, Compressor, LayerCompression, SkippedLayer};
use crate::compress::plan::{BatchNormRecalibration, Recipe};
use crate::compress::structured::{ChannelPlan, ChannelRemoval, remove_channels};
use crate::error::Result;
use crate::export::build::{BuiltModel, ExportFormat, activation_tensors, build_export};
use crate::job::{CancelToken, ProgressSink};
use crate::measure::dataset::Dataset;
use crate::measure::eval::{Accuracy, Fidelity, Latency};
use crate::measure::runtime::{BuildOptions, FixedInput, RunnableModel, RuntimeKind};
use crate::model::load::LoadedModel;
use crate::model::proto::Message;

/// How long an export spends timing each model (at least 5 runs): the figure is a median of
/// what fits in it.
const LATENCY_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);

/// Measurements of one model on the evaluation samples.
#[derive(Clone, Debug, Serialize)]
pub struct Measured {
    /// When the data is labelled.
    pub accuracy: Option<Accuracy>,
    pub latency_ms: Option<Latency>,
    pub size_bytes: u64,
}

/// The `schema` of [`OptimizeReport`].
pub const REPORT_SCHEMA: &str = "edgefit.optimize/1";

/// The full report of an optimize run (written beside the model as JSON and Markdown).
#[derive(Clone, Debug, Serialize)]
pub struct OptimizeReport {
    /// `edgefit.optimize/N`: what this JSON is and its version (raised when a field changes
    /// meaning or goes away).
    pub schema: &'static str,
    /// The edgefit version that wrote it.
    pub edgefit_version: &'static str,
    pub model: String,
    pub output: String,
    pub format: ExportFormat,
    pub data: String,
    /// `Dataset::fingerprint` of the samples (and labels) measured, in hex: two reports with
    /// the same fingerprint measured the same data.
    pub data_fingerprint: String,
    /// The onnxruntime library used, when one was loaded (its file name carries its version).
    pub onnxruntime_library: Option<String>,
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
    /// The compressed model's outputs against the original's on the same samples (`null`
    /// when they could not be measured: see `not_measured`).
    pub fidelity: Option<Fidelity>,
    /// Why the outputs were not measured (a weight-only file written for a model that no
    /// available runtime could run at a known shape).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_measured: Option<String>,
    /// Every tensor output compared with the original's (the evaluated one first).
    pub outputs: Vec<quality::OutputFidelity>,
    /// The outputs held against the recipe's quality floor (`null` when not measured).
    pub quality: Option<quality::Quality>,
    /// Float tensors of 1,024 elements or more that the export leaves float, and why.
    pub uncompressed: Vec<quality::UncompressedTensor>,
    pub layers: Vec<LayerCompression>,
    pub skipped: Vec<SkippedLayer>,
    /// Channels physically removed by structured pruning, per planned layer.
    pub structured: Vec<ChannelRemoval>,
    /// Per pruned layer, the output error before and after reconstruction (when the recipe
    /// asks for it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reconstruction: Vec<crate::recover::reconstruct::LayerReconstruction>,
    /// Total MACs of the original and of the exported model (structured pruning lowers it).
    pub macs_before: u64,
    pub macs_after: u64,
    pub quantized_activations: Vec<String>,
    /// For a QDQ export: the CPU it was made for and the weight range of its integer layers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integer_kernels: Option<IntegerKernels>,
    pub notes: Vec<String>,
    pub verification: Verification,
    pub recipe: Recipe,
}

/// The target of a QDQ export's integer kernels and the weight range that follows from it.
#[derive(Clone, Debug, Serialize)]
pub struct IntegerKernels {
    pub target: crate::compress::plan::Target,
    /// Bits of the int8 weight codes of the integer layers (7 = onnxruntime's `reduce_range`).
    pub weight_bits: u8,
    /// Where the file computes what the preview showed.
    pub exact_on: String,
}

impl IntegerKernels {
    /// What `recipe` (with int8 activations) resolves to.
    pub fn of(recipe: &Recipe) -> Option<Self> {
        if !recipe.activations.int8 {
            return None;
        }
        let cap = recipe.integer_kernel_bits_cap();
        Some(Self {
            target: recipe.target,
            weight_bits: cap.unwrap_or(8),
            exact_on: if cap.is_some() {
                "every CPU (x86-64 with or without VNNI, ARM64)".to_owned()
            } else {
                format!(
                    "{} (onnxruntime's integer kernels on x86-64 without VNNI saturate full-range weights)",
                    recipe.target.describe()
                )
            },
        })
    }
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

impl<'a> From<&OptimizeOptions<'a>> for crate::recover::calibration::CalibrationData<'a> {
    fn from(options: &OptimizeOptions<'a>) -> Self {
        Self {
            data: options.data,
            calibration: options.calibration,
            runtime: options.runtime,
            input_shapes: options.input_shapes,
        }
    }
}

/// The compression as previewed: built model plus its outputs on the evaluation samples.
pub struct Preview {
    pub compression: Compression,
    pub built: BuiltModel,
    /// The evaluated output (the first, or the one asked for) of both models per sample.
    pub original_outputs: Vec<Vec<f32>>,
    pub outputs: Vec<Vec<f32>>,
    /// Every tensor output of the model (the evaluated one first) compared with the original.
    pub output_fidelity: Vec<quality::OutputFidelity>,
    pub input_shape: Vec<usize>,
    /// Inputs held at a value.
    pub fixed_inputs: Vec<FixedInput>,
    /// Single-sample latency of the original and of the compressed model, measured on the
    /// preview's own runtimes (when `latency_runs > 0` and there is data).
    pub original_latency: Option<Latency>,
    pub latency: Option<Latency>,
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
    analysis: &crate::analyse::analysis::ModelAnalysis,
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
    let shrunk =
        crate::model::load::from_proto(proto, model.path.clone(), size, &crate::job::NoProgress)?;
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
    let CompareOutputs {
        names,
        float,
        mut class_scores,
        extra,
    } = CompareOutputs::of(model, options.output);
    // The labels index the evaluated output: class scores, unless its declared shape says
    // otherwise (a detector's `[1, 1, H, W]` map given a labelled image folder).
    let declared_rank = names.first().and_then(|n| {
        let o = model.graph.outputs.iter().find(|o| &o.name == n)?;
        Some(o.shape.as_ref()?.len())
    });
    if options.data.labels.is_some()
        && declared_rank.is_none_or(|rank| rank == 2)
        && let Some(first) = class_scores.first_mut()
    {
        *first = true;
    }
    // One model in a runtime at a time: each is built, run on the samples, timed, and dropped
    // before the next (a runtime holds its own copy of the weights, often two).
    let run_and_time = |proto: &crate::model::proto::ModelProto, dir: Option<&Path>| -> Result<_> {
        let runnable =
            RunnableModel::build_with(runtime, proto, dir, &input_shape, &extra, &build_options)?;
        let outputs =
            crate::measure::eval::run_dataset_outputs(&runnable, options.data, progress, cancel)?;
        let latency = if options.latency_runs > 0 && !options.data.is_empty() {
            Some(crate::measure::eval::latency_within(
                &runnable,
                options.data.sample(0),
                options.latency_runs,
                options.latency_runs.div_ceil(5),
                LATENCY_BUDGET,
                progress,
                cancel,
            )?)
        } else {
            None
        };
        Ok((outputs, latency))
    };
    let (original_all, original_latency) =
        run_and_time(&*original.runnable_proto()?, dir.as_deref())?;
    let (all, latency) = run_and_time(&built.proto, None)?;
    let output_fidelity =
        quality::output_fidelity(&names, &float, &class_scores, &original_all, &all);
    let first = |all: Vec<Vec<Vec<f32>>>| -> Vec<Vec<f32>> {
        all.into_iter().map(|mut s| s.swap_remove(0)).collect()
    };
    Ok(Preview {
        compression,
        built,
        original_outputs: first(original_all),
        outputs: first(all),
        output_fidelity,
        input_shape,
        fixed_inputs: fixed,
        original_latency,
        latency,
    })
}

/// The outputs a compressed model is compared on with the original.
pub struct CompareOutputs {
    /// The evaluated output first (the one asked for, else the model's first), then every
    /// other float graph output.
    pub names: Vec<String>,
    /// Parallel to `names`: whether it holds floats (others are compared, not judged).
    pub float: Vec<bool>,
    /// Parallel to `names`: whether it is declared as class scores — a float `[N, C]` with
    /// a known C ≥ 2 — where top-1 agreement with the original means something (a detector's
    /// `[1, 84, 8400]` or a voice model's `[N, 1]` is not).
    pub class_scores: Vec<bool>,
    /// `names` after the first: the extra outputs to build the runtimes with.
    pub extra: Vec<String>,
}

impl CompareOutputs {
    /// The outputs of `model` to compare when `output` (if any) is the evaluated one. Every
    /// other float output is compared too: a model's first output may be an echo of its
    /// input (sentence-transformers exports return the token ids first).
    pub fn of(model: &LoadedModel, output: Option<&str>) -> Self {
        let first_name = output
            .map(str::to_owned)
            .or_else(|| model.graph.outputs.first().map(|o| o.name.clone()))
            .unwrap_or_default();
        let is_float = |o: &crate::model::graph::ValueDesc| {
            o.kind == "tensor"
                && o.dtype.is_none_or(|d| {
                    [
                        crate::model::dtype::DType::FLOAT32,
                        crate::model::dtype::DType::FLOAT16,
                        crate::model::dtype::DType::FLOAT64,
                        crate::model::dtype::DType::BFLOAT16,
                    ]
                    .contains(&d)
                })
        };
        let extra: Vec<String> = if output.is_some() {
            Vec::new()
        } else {
            model
                .graph
                .outputs
                .iter()
                .skip(1)
                .filter(|o| is_float(o))
                .map(|o| o.name.clone())
                .collect()
        };
        let mut names = vec![first_name];
        names.extend(extra.iter().cloned());
        let float = names
            .iter()
            .map(|n| {
                model
                    .graph
                    .outputs
                    .iter()
                    .find(|o| &o.name == n)
                    .is_none_or(&is_float)
            })
            .collect();
        let class_scores = names
            .iter()
            .zip(&float)
            .map(|(n, &is_float)| {
                is_float
                    && model
                        .graph
                        .outputs
                        .iter()
                        .find(|o| &o.name == n)
                        .and_then(|o| o.shape.as_deref())
                        .is_some_and(is_class_score_shape)
            })
            .collect();
        Self {
            names,
            float,
            class_scores,
            extra,
        }
    }
}

/// `[N, C]` with a known C ≥ 2: one score per class and sample.
fn is_class_score_shape(shape: &[crate::model::graph::Dim]) -> bool {
    matches!(shape, [_, classes] if classes.known().is_some_and(|c| c >= 2))
}

/// The runtime to preview `model` in when the user did not choose: onnxruntime — the runtime
/// most deployments ship with, and 3–10× faster than tract on CNNs here — when its library
/// loads (from `library`, else the usual places) and it builds the model; else tract (built
/// in). The written file is verified in both either way. The reason, when a runtime was
/// passed over.
pub fn choose_runtime(
    model: &LoadedModel,
    data: &Dataset,
    settings: &InputShapes,
    library: Option<&Path>,
) -> (RuntimeKind, Option<String>) {
    let Ok(inputs) = resolve_inputs(model, Some(data), settings) else {
        return (RuntimeKind::Tract, None);
    };
    let Ok(proto) = model.self_contained_proto() else {
        return (RuntimeKind::Tract, None);
    };
    let build = BuildOptions {
        fixed_inputs: inputs.fixed.clone(),
        ..BuildOptions::default()
    };
    let dir = model.path.parent();
    if crate::measure::runtime::onnxruntime::load(library).is_err() {
        return (RuntimeKind::Tract, None);
    }
    match RunnableModel::build_with(
        RuntimeKind::OnnxRuntime,
        &proto,
        dir,
        &inputs.shape,
        &[],
        &build,
    ) {
        Ok(_) => (RuntimeKind::OnnxRuntime, None),
        Err(e) => (
            RuntimeKind::Tract,
            Some(format!("{e}; previewing in tract instead")),
        ),
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
