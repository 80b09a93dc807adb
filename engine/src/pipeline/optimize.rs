//! The optimize job end to end: move the opset where needed, structured pruning,
//! reconstruction, BatchNorm folding, compression, the preview, the quality floor, then the
//! model and its sidecars written together and verified.

use std::path::{Path, PathBuf};

use super::quality;
use super::unmeasured;
use super::{
    IntegerKernels, Measured, OptimizeOptions, OptimizeReport, REPORT_SCHEMA, preview,
    resolve_inputs, sidecar_paths, structured_pass,
};
use crate::compress::compressor::{Compressor, SkippedLayer};
use crate::error::{Error, Result};
use crate::export::build::ExportFormat;
use crate::export::verify::{self, VerifyInputs, verify_export};
use crate::job::{CancelToken, ProgressSink, report};
use crate::measure::eval::{accuracy, fidelity};
use crate::measure::runtime::BuildOptions;
use crate::model::load::LoadedModel;
use crate::model::proto::Message;
use crate::model::write::OutputSet;

/// The model moved to the opset `format` needs, when it imports an older one: QDQ needs
/// `QuantizeLinear` (opset 10) and per-axis `DequantizeLinear` (13); dynamic int8 needs
/// `DynamicQuantizeLinear` (11) and is moved to 13 where it can be, as the integer layers'
/// per-channel scales are planned there; the weight-only int8 form needs numpy broadcasting
/// (7); fp16's `Cast` takes an integer `to` from opset 6. Moved only when no op's meaning
/// changes (see [`crate::model::opset`]); for QDQ and dynamic int8, the minimum stays with
/// per-tensor weights when 13 is out of reach. Below the minimum: a clear error.
fn opset_stage(
    model: &LoadedModel,
    format: ExportFormat,
    input_shape: Option<&[usize]>,
) -> Result<Option<(LoadedModel, crate::model::opset::Upgrade)>> {
    let current = crate::model::opset::default_opset(&model.proto);
    let (wanted, minimum) = match format {
        ExportFormat::QdqInt8 => (13, 10),
        // DynamicQuantizeLinear is opset 11 (MatMulInteger 10).
        ExportFormat::DynamicInt8 => (13, 11),
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
        match crate::model::opset::upgrade(&model.proto, target, &rank_of) {
            Ok((proto, up)) => {
                let size = Message::compute_size(&proto);
                let moved = crate::model::load::from_proto(
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
        .with_int8_activations(options.format.has_integer_kernels());
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
    let analysis = crate::analyse::analysis::analyse(base, &Default::default(), progress, cancel)?;
    let structured = structured_pass(base, &analysis, options.recipe, cancel)?;
    let (working, recipe) = match &structured {
        Some(pass) => (&pass.model, &pass.recipe),
        None => (base, options.recipe),
    };
    let reconstructed =
        crate::recover::reconstruct::reconstruct_pass(working, recipe, options, progress, cancel)?;
    let working = reconstructed.as_ref().map_or(working, |r| &r.model);
    let calibration_data = options.calibration.unwrap_or(options.data);
    let folded = if options.format == ExportFormat::QdqInt8 {
        let inputs = resolve_inputs(model, Some(options.data), options.input_shapes)?;
        crate::recover::staged::fold_stage(
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
        crate::analyse::analysis::analyse(working, &Default::default(), progress, cancel)?
    } else {
        analysis.clone()
    };
    let mut compressor = Compressor::new(working, &working_analysis);
    let working_options = OptimizeOptions { recipe, ..*options };
    crate::recover::reconstruct::attach_input_grams(
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
    report(progress, "measuring", 0, 3);
    // Top-1 (accuracy, agreement) means something only for class scores: the labels index
    // the evaluated output, and its shape does not say otherwise.
    let class_scores = preview
        .output_fidelity
        .first()
        .filter(|o| o.class_scores && options.data.labels.is_some())
        .map(|o| o.name.as_str());
    let labels = options
        .data
        .labels
        .as_deref()
        .filter(|_| class_scores.is_some());
    let original_proto = model.runnable_proto()?;
    let original = Measured {
        accuracy: labels.map(|l| accuracy(&preview.original_outputs, l)),
        latency_ms: preview.original_latency.clone(),
        size_bytes: model.file_size_bytes,
    };
    let compressed = Measured {
        accuracy: labels.map(|l| accuracy(&preview.outputs, l)),
        latency_ms: preview.latency.clone(),
        size_bytes: Message::compute_size(&preview.built.proto),
    };
    cancel.check()?;

    // An export the user's runtime would reject is not written at all.
    let original_schema = crate::model::schema::check_model(&model.proto);
    let new_problems =
        crate::model::schema::check_model(&preview.built.proto).new_since(&original_schema);
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
    let staged = outputs.stage(
        output,
        &crate::model::write::serialize(&preview.built.proto)?,
    )?;
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
            integer_kernels: options.format.has_integer_kernels(),
            original: Some(verify::OriginalRef {
                proto: &original_proto,
                dir: model.path.parent(),
                outputs: &preview.original_outputs,
            }),
        },
        cancel,
    );

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
        edgefit_version: env!("CARGO_PKG_VERSION"),
        data_fingerprint: format!("{:016x}", options.data.fingerprint()),
        onnxruntime_library: crate::measure::runtime::onnxruntime::loaded_library()
            .map(|p| p.display().to_string()),
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
pub(super) fn write_sidecars(
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
    outputs.stage(
        &md_path,
        crate::pipeline::report::markdown(report).as_bytes(),
    )?;
    cancel.check()?;
    outputs.commit()
}
