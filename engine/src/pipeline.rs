//! The optimize job end to end: compress, calibrate, build the export, measure it against the
//! original on the same samples, write it atomically with its recipe and report, then reload
//! the written file and check it reproduces the measured outputs.

mod calibration;
mod generate;
mod inputs;
pub mod quality;
mod unmeasured;
mod verify;

pub use calibration::{
    batchnorm_statistics, batchnorm_statistics_in, calibrate, observe_tensors,
    recalibrate_batchnorm,
};
pub use generate::{AutoInputs, GENERATED_SAMPLES, auto_inputs, generated_for};
pub use inputs::{
    InputSetting, InputShapes, ResolvedInputs, concrete_input_shape, generated_data,
    merge_input_settings, parse_input_shape, parse_input_value, resolve_input_shape,
    resolve_inputs,
};
pub use verify::{
    OriginalRef, RuntimeVerdict, SchemaVerdict, Verification, VerifyInputs, verify_export,
    verify_written, verify_written_in,
};

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::compress::{Compression, Compressor, LayerCompression, SkippedLayer};
use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::eval::{Accuracy, Fidelity, Latency, accuracy, fidelity};
use crate::export::{BuiltModel, ExportFormat, activation_tensors, build_export};
use crate::job::{CancelToken, ProgressSink, report};
use crate::load::LoadedModel;
use crate::plan::{BatchNormRecalibration, Recipe};
use crate::proto::{Message, ModelProto};
use crate::runtime::{BuildOptions, FixedInput, RunnableModel, RuntimeKind};
use crate::structured::{ChannelPlan, ChannelRemoval, remove_channels};
use crate::write::OutputSet;

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
    pub reconstruction: Vec<crate::reconstruct::LayerReconstruction>,
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
    pub target: crate::plan::Target,
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
    // Every other tensor output is compared too: a model's first output may be an echo of
    // its input (sentence-transformers exports return the token ids first).
    let first_name = options
        .output
        .map(str::to_owned)
        .or_else(|| model.graph.outputs.first().map(|o| o.name.clone()))
        .unwrap_or_default();
    let is_float = |o: &crate::graph::ValueDesc| {
        o.kind == "tensor"
            && o.dtype.is_none_or(|d| {
                [
                    crate::dtype::DType::FLOAT32,
                    crate::dtype::DType::FLOAT16,
                    crate::dtype::DType::FLOAT64,
                    crate::dtype::DType::BFLOAT16,
                ]
                .contains(&d)
            })
    };
    let extra: Vec<String> = if options.output.is_some() {
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
    let mut names = vec![first_name.clone()];
    names.extend(extra.iter().cloned());
    let float: Vec<bool> = names
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
    let original = RunnableModel::build_with(
        runtime,
        &original.self_contained_proto()?,
        dir.as_deref(),
        &input_shape,
        &extra,
        &build_options,
    )?;
    let compressed = RunnableModel::build_with(
        runtime,
        &built.proto,
        None,
        &input_shape,
        &extra,
        &build_options,
    )?;
    let original_all = crate::eval::run_dataset_outputs(&original, options.data, progress, cancel)?;
    let all = crate::eval::run_dataset_outputs(&compressed, options.data, progress, cancel)?;
    let output_fidelity = quality::output_fidelity(&names, &float, &original_all, &all);
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
    })
}

/// The model moved to the opset `format` needs, when it imports an older one: QDQ needs
/// `QuantizeLinear` (opset 10) and per-axis `DequantizeLinear` (13); the weight-only int8
/// form needs numpy broadcasting (7); fp16's `Cast` takes an integer `to` from opset 6. Moved
/// only when no op's meaning changes (see [`crate::opset`]); for QDQ, 10–12 stays with
/// per-tensor weights when 13 is out of reach. Below the minimum: a clear error.
fn opset_stage(
    model: &LoadedModel,
    format: ExportFormat,
    input_shape: Option<&[usize]>,
) -> Result<Option<(LoadedModel, crate::opset::Upgrade)>> {
    let current = crate::opset::default_opset(&model.proto);
    let (wanted, minimum) = match format {
        ExportFormat::QdqInt8 => (13, 10),
        ExportFormat::WeightsInt8 => (7, 7),
        ExportFormat::Fp16 => (6, 6),
        ExportFormat::Fp32 => return Ok(None),
    };
    if current >= wanted || current == 0 {
        return Ok(None);
    }
    // Ranks from the model's shape facts, else from shape inference at the concrete input
    // shape the job runs at (exporters such as Paddle2ONNX leave -1 dims that hide them).
    let concrete = std::cell::OnceCell::new();
    let rank_of = |t: &str| {
        model
            .shapes
            .get(t)
            .and_then(|v| v.shape.as_ref())
            .map(Vec::len)
            .or_else(|| {
                let shape = input_shape?;
                concrete
                    .get_or_init(|| model.with_input_shape(shape))
                    .shapes
                    .get(t)
                    .and_then(|v| v.shape.as_ref())
                    .map(Vec::len)
            })
    };
    let mut blocked = Vec::new();
    for target in [wanted, minimum] {
        if target <= current {
            return Ok(None);
        }
        match crate::opset::upgrade(&model.proto, target, &rank_of) {
            Ok((proto, up)) => {
                let size = Message::compute_size(&proto);
                let moved = crate::load::from_proto(
                    proto,
                    model.path.clone(),
                    size,
                    &crate::job::NoProgress,
                )?;
                return Ok(Some((moved, up)));
            }
            Err(b) => blocked = b,
        }
        if wanted == minimum {
            break;
        }
    }
    Err(Error::InvalidArgument {
        what: "opset",
        reason: format!(
            "{} needs opset {minimum} or later, and this model imports opset {current}; it cannot be \
             moved there without changing what these ops compute: {}. Export it as {}, or convert \
             it first (e.g. onnx.version_converter.convert_version(model, 13)) and check the result",
            format.name(),
            blocked.join("; "),
            if format == ExportFormat::Fp16 {
                "fp32"
            } else {
                "fp16 or fp32"
            }
        ),
    })
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
    if crate::runtime::onnxruntime::load(library).is_err() {
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

/// The optimize job: preview, write (atomically, never over the opened model), report, verify.
pub fn optimize(
    model: &LoadedModel,
    options: &OptimizeOptions<'_>,
    output: &Path,
    progress: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<OptimizeReport> {
    // Every file this job writes, checked against the model it reads (and its external data)
    // and each other before any work: an output never replaces an input.
    let mut outputs = output_set(model, output)?;
    // The format decides whether activations are int8 (and so the integer layers' weight
    // range), whatever the recipe file said.
    let normalized = options
        .recipe
        .clone()
        .with_int8_activations(options.format == ExportFormat::QdqInt8);
    let options = &OptimizeOptions {
        recipe: &normalized,
        ..*options
    };
    let job_shape = resolve_inputs(model, Some(options.data), options.input_shapes)
        .ok()
        .map(|r| r.shape);
    let upgraded = opset_stage(model, options.format, job_shape.as_deref())?;
    let base = upgraded.as_ref().map_or(model, |(m, _)| m);
    let mut stage_notes = Vec::new();
    if let Some((_, up)) = &upgraded {
        stage_notes.push(format!(
            "moved the model from opset {} to {} for {} (no op used changes meaning between them{})",
            up.from,
            up.to,
            options.format.name(),
            if up.rewritten.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} nodes rewritten with attributes as inputs",
                    up.rewritten.len()
                )
            }
        ));
    }
    let analysis = crate::analysis::analyse(base, &Default::default(), progress, cancel)?;
    let structured = structured_pass(base, &analysis, options.recipe, cancel)?;
    let (working, recipe) = match &structured {
        Some(pass) => (&pass.model, &pass.recipe),
        None => (base, options.recipe),
    };
    let reconstructed =
        crate::reconstruct::reconstruct_pass(working, recipe, options, progress, cancel)?;
    let working = reconstructed.as_ref().map_or(working, |r| &r.model);
    let calibration_data = options.calibration.unwrap_or(options.data);
    let folded = if options.format == ExportFormat::QdqInt8 {
        let inputs = resolve_inputs(model, Some(options.data), options.input_shapes)?;
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
    let preview = match preview(
        model,
        working,
        &mut compressor,
        &working_options,
        progress,
        cancel,
    ) {
        Ok(p) => p,
        // A weight-only file needs no run to be written: the model is written, checked
        // against the schemas, and the report says plainly that nothing was measured.
        Err(e) if options.format.is_weight_only() && unmeasured::cannot_run(&e) => {
            return unmeasured::write(
                &unmeasured::Unmeasured {
                    original: model,
                    working,
                    options: &working_options,
                    output,
                    reason: e.to_string(),
                    notes: stage_notes,
                    macs_before: analysis.macs,
                    macs_after: working_analysis.macs,
                },
                &mut compressor,
                outputs,
                cancel,
            );
        }
        Err(e) => return Err(e),
    };
    report(progress, "measuring latency", 0, 3);
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
                Some(crate::eval::latency_within(
                    &runnable,
                    options.data.sample(0),
                    options.latency_runs,
                    options.latency_runs.div_ceil(5),
                    LATENCY_BUDGET,
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

    // An export the user's runtime would reject is not written at all.
    let original_schema = crate::schema::check_model(&model.proto);
    let new_problems = crate::schema::check_model(&preview.built.proto).new_since(&original_schema);
    if !new_problems.is_empty() {
        let listed: Vec<String> = new_problems
            .iter()
            .take(5)
            .map(ToString::to_string)
            .collect();
        return Err(Error::InvalidExport {
            reason: format!(
                "{}{}",
                listed.join("; "),
                if new_problems.len() > 5 {
                    format!(" (and {} more)", new_problems.len() - 5)
                } else {
                    String::new()
                }
            ),
        });
    }

    report(progress, "writing", 1, 3);
    let staged = outputs.stage(output, &crate::write::serialize(&preview.built.proto)?)?;
    let written_size = std::fs::metadata(&staged)
        .map(|m| m.len())
        .unwrap_or(compressed.size_bytes);
    report(progress, "verifying", 2, 3);
    let verify_build = BuildOptions {
        fixed_inputs: preview.fixed_inputs.clone(),
        output: options.output.map(str::to_owned),
        ..BuildOptions::default()
    };
    // The file as written (still under its temporary name) is what is verified.
    let verification = verify_export(
        &staged,
        &VerifyInputs {
            runtime: options.runtime,
            data: options.data,
            expected: &preview.outputs,
            input_shape: &preview.input_shape,
            build: &verify_build,
            original_schema: &original_schema,
            integer_kernels: options.format == ExportFormat::QdqInt8,
            original: Some(verify::OriginalRef {
                proto: &original_proto,
                dir: model.path.parent(),
                outputs: &preview.original_outputs,
            }),
        },
        cancel,
    );

    let class_scores = options
        .data
        .labels
        .is_some()
        .then(|| preview.output_fidelity.first().map(|o| o.name.as_str()))
        .flatten();
    let mut quality = quality::judge(&preview.output_fidelity, recipe.quality, class_scores);
    // A runtime that computes the integer layers its own way has its own quality: the floor
    // holds for it too.
    for v in &verification.runtimes {
        if let (Some(db), Some(first)) = (v.fidelity_sqnr_db, preview.output_fidelity.first())
            && db < recipe.quality.min_output_sqnr_db
            && quality.passed
        {
            quality.passed = false;
            quality.message = format!(
                "BELOW THE FLOOR of {} dB output SQNR in {}: `{}` at {db:.1} dB there ({} in the preview)",
                recipe.quality.min_output_sqnr_db,
                v.runtime,
                first.name,
                first.fidelity.sqnr_text()
            );
        }
    }
    if !quality.passed {
        report(progress, "finding the layers that add the most error", 2, 3);
        // Against the model as it was before compression (after folding and structured
        // pruning), so that only the compression of each layer is measured.
        quality.layers = working
            .self_contained_proto()
            .and_then(|before| {
                quality::layer_errors(
                    &before,
                    working.path.parent(),
                    &preview.built.proto,
                    working,
                    &compressor,
                    options.runtime,
                    options.data,
                    &preview.input_shape,
                    &verify_build,
                    cancel,
                )
            })
            .unwrap_or_default();
    }
    let uncompressed = quality::uncompressed_tensors(working, &preview.compression);
    let mut notes = stage_notes;
    notes.extend(preview.built.notes.iter().cloned());
    if options.data.generated {
        notes.push(
            "no data given: fidelity is measured on generated inputs, not real data".to_owned(),
        );
    }
    if options.format == ExportFormat::WeightsInt8 {
        notes.push("weights-only int8 makes the file smaller, not faster: runtimes fold the codes back into float weights when the model loads".to_owned());
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
        schema: REPORT_SCHEMA,
        model: model.path.display().to_string(),
        output: output.display().to_string(),
        format: options.format,
        data: options.data.description.clone(),
        runtime: options.runtime,
        input_shape: preview.input_shape.clone(),
        fixed_inputs: preview.fixed_inputs.clone(),
        evaluated_output: options.output.map(str::to_owned),
        fidelity: Some(fidelity(&preview.original_outputs, &preview.outputs)),
        not_measured: None,
        outputs: preview.output_fidelity.clone(),
        quality: Some(quality),
        uncompressed,
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
        integer_kernels: IntegerKernels::of(options.recipe),
        notes,
        verification,
        recipe: options.recipe.clone(),
    };
    write_sidecars(output, &report_, outputs, cancel)?;
    Ok(report_)
}

/// The outputs of an optimize job to `output`: the model and its three sidecars, checked
/// against `model`'s file and external data.
fn output_set(model: &LoadedModel, output: &Path) -> Result<OutputSet> {
    let (recipe_path, json_path, md_path) = sidecar_paths(output);
    let external = model.external_data_files();
    let mut inputs: Vec<&Path> = vec![&model.path];
    inputs.extend(external.iter().map(PathBuf::as_path));
    OutputSet::new(
        &[output.to_path_buf(), recipe_path, json_path, md_path],
        &inputs,
    )
}

/// Stages `OUT.recipe.json`, `OUT.report.json` and `OUT.report.md` beside `output`, then
/// moves them and the staged model into place together (or, cancelled, none of them).
fn write_sidecars(
    output: &Path,
    report: &OptimizeReport,
    mut outputs: OutputSet,
    cancel: &CancelToken,
) -> Result<()> {
    let (recipe_path, json_path, md_path) = sidecar_paths(output);
    outputs.stage(&recipe_path, report.recipe.to_json().as_bytes())?;
    let json = serde_json::to_string_pretty(report).map_err(|e| Error::InvalidArgument {
        what: "report",
        reason: e.to_string(),
    })?;
    outputs.stage(&json_path, json.as_bytes())?;
    outputs.stage(&md_path, crate::report::markdown(report).as_bytes())?;
    cancel.check()?;
    outputs.commit()
}
