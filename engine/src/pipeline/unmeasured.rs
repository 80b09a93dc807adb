//! A weight-only export of a model no available runtime can run at a known shape: written,
//! checked against the ONNX operator schemas, and reported as not measured — with why.

use std::path::Path;

use super::optimize::write_sidecars;
use super::{Measured, OptimizeOptions, OptimizeReport, SchemaVerdict, Verification};
use crate::compress::compressor::Compressor;
use crate::error::{Error, Result};
use crate::export::build::build_export;
use crate::job::CancelToken;
use crate::model::load::LoadedModel;
use crate::model::proto::Message;
use crate::model::write::OutputSet;

/// Whether `error` means the model could not be run here (so a weight-only file can still be
/// written), rather than a problem with the file, the recipe or the disk.
pub(super) fn cannot_run(error: &Error) -> bool {
    match error {
        Error::Runtime { .. } | Error::Dataset { .. } => true,
        Error::InvalidArgument { what, .. } => {
            matches!(*what, "input shape" | "input value" | "model")
        }
        _ => false,
    }
}

/// What [`write`] needs.
pub(super) struct Unmeasured<'a> {
    pub original: &'a LoadedModel,
    /// The model the weights are compressed in (after the opset move, if any).
    pub working: &'a LoadedModel,
    pub options: &'a OptimizeOptions<'a>,
    pub output: &'a Path,
    /// Why the model could not be run.
    pub reason: String,
    pub notes: Vec<String>,
    pub macs_before: u64,
    pub macs_after: u64,
}

/// Compresses, builds, schema-checks and writes the export without running it.
pub(super) fn write(
    job: &Unmeasured<'_>,
    compressor: &mut Compressor,
    mut outputs: OutputSet,
    cancel: &CancelToken,
) -> Result<OptimizeReport> {
    let options = job.options;
    let compression = compressor.apply(options.recipe, cancel)?;
    let built = build_export(
        job.working,
        compressor,
        &compression,
        options.format,
        None,
        None,
    )?;
    let original_schema = crate::model::schema::check_model(&job.original.proto);
    let written_schema = crate::model::schema::check_model(&built.proto);
    let new_problems = written_schema.new_since(&original_schema);
    if !new_problems.is_empty() {
        let listed: Vec<String> = new_problems
            .iter()
            .take(5)
            .map(ToString::to_string)
            .collect();
        return Err(Error::InvalidExport {
            reason: listed.join("; "),
        });
    }
    cancel.check()?;
    let staged = outputs.stage(job.output, &crate::model::write::serialize(&built.proto)?)?;
    let size_bytes = std::fs::metadata(&staged)
        .map(|m| m.len())
        .unwrap_or_else(|_| Message::compute_size(&built.proto));
    let schema = SchemaVerdict {
        passed: true,
        schemas: written_schema.schemas.clone(),
        problems: Vec::new(),
        inherited: original_schema
            .problems
            .iter()
            .map(ToString::to_string)
            .collect(),
        unchecked_ops: written_schema.unchecked_ops.clone(),
    };
    let not_measured = format!(
        "outputs not measured: the model could not be run ({}); the file was written from the \
         weights alone and checked against the {}. To measure it, give data or input shapes \
         and values (--data, --input-shape, --input-value) or another runtime (--runtime)",
        job.reason, schema.schemas
    );
    let mut notes = job.notes.clone();
    notes.push(not_measured.clone());
    notes.extend(built.notes.iter().cloned());
    let mut layer_notes: Vec<String> = compression
        .layers
        .iter()
        .flat_map(|l| l.report.notes.clone())
        .collect();
    layer_notes.sort();
    layer_notes.dedup();
    notes.extend(layer_notes);
    if compression.prunes_any() {
        notes.push(
            "BatchNormalization statistics were not re-estimated after pruning (that needs runs)"
                .to_owned(),
        );
    }
    let report = OptimizeReport {
        schema: super::REPORT_SCHEMA,
        edgefit_version: env!("CARGO_PKG_VERSION"),
        data_fingerprint: format!("{:016x}", options.data.fingerprint()),
        onnxruntime_library: crate::measure::runtime::onnxruntime::loaded_library()
            .map(|p| p.display().to_string()),
        model: job.original.path.display().to_string(),
        output: job.output.display().to_string(),
        format: options.format,
        data: options.data.description.clone(),
        runtime: options.runtime,
        input_shape: Vec::new(),
        fixed_inputs: Vec::new(),
        evaluated_output: options.output.map(str::to_owned),
        original: Measured {
            accuracy: None,
            latency_ms: None,
            size_bytes: job.original.file_size_bytes,
        },
        compressed: Measured {
            accuracy: None,
            latency_ms: None,
            size_bytes,
        },
        fidelity: None,
        not_measured: Some(job.reason.clone()),
        outputs: Vec::new(),
        quality: None,
        uncompressed: super::quality::uncompressed_tensors(job.working, &compression),
        layers: compression
            .layers
            .iter()
            .map(|l| l.report.clone())
            .collect(),
        skipped: compression.skipped.clone(),
        structured: Vec::new(),
        reconstruction: Vec::new(),
        macs_before: job.macs_before,
        macs_after: job.macs_after,
        quantized_activations: Vec::new(),
        integer_kernels: None,
        notes,
        verification: Verification {
            passed: true,
            runtime: options.runtime.name(),
            samples: 0,
            max_abs_diff: f64::NAN,
            tolerance: 0.0,
            message: format!(
                "valid against the {}; outputs NOT run in any runtime ({})",
                schema.schemas, job.reason
            ),
            schema,
            runtimes: Vec::new(),
        },
        recipe: options.recipe.clone(),
    };
    write_sidecars(job.output, &report, outputs, cancel)?;
    Ok(report)
}
