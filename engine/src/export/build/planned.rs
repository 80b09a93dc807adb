//! The size of the file a plan writes, known before it is written: the same builder runs on
//! the plan, and the protobuf's encoded size is read without serializing it.

use protobuf::Message;

use super::{ActivationRanges, BatchNormStats, ExportFormat, activation_tensors, build_export};
use crate::compress::compressor::{Compression, Compressor};
use crate::compress::plan::Precision;
use crate::error::Result;
use crate::model::load::LoadedModel;

/// The planned file and what the plan asks for that the format does not realise.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedFile {
    /// Bytes of the file `format` writes for the plan.
    pub size_bytes: u64,
    /// Whether `size_bytes` is the exact size of the export: `false` when later stages
    /// change it (structured pruning shrinks the layers downstream too; a QDQ export folds
    /// batch norms and upgrades old opsets first).
    pub exact: bool,
    /// For people: precisions the format does not store as planned, and which format would.
    pub notes: Vec<String>,
}

/// What the export of `compression` in `format` weighs. For a QDQ export the activation
/// ranges take placeholder values (a range is two numbers whatever it is).
pub fn planned_file(
    model: &LoadedModel,
    compressor: &Compressor,
    compression: &Compression,
    format: ExportFormat,
) -> Result<PlannedFile> {
    let ranges: Option<ActivationRanges> = (format == ExportFormat::QdqInt8).then(|| {
        activation_tensors(model, compressor, compression)
            .iter()
            .flat_map(|t| t.tensors().cloned())
            .map(|tensor| (tensor, (-1.0, 1.0)))
            .collect()
    });
    // A pruned plan re-estimates batch-norm statistics (by default): they are written as
    // new tensors of the same length.
    let recalibrated: Option<BatchNormStats> = compression
        .recipe
        .recalibrate_batchnorm
        .applies(compression.prunes_any())
        .then(|| {
            model
                .graph
                .main_nodes()
                .filter(|n| n.op_type == "BatchNormalization")
                .filter_map(|n| {
                    let channels = model.weight(n.inputs.get(3)?)?.elements as usize;
                    Some((n.name.clone(), (vec![0.0; channels], vec![1.0; channels])))
                })
                .collect::<BatchNormStats>()
        })
        .filter(|stats| !stats.is_empty());
    let built = build_export(
        model,
        compressor,
        compression,
        format,
        ranges.as_ref(),
        recalibrated.as_ref(),
    )?;
    let size_bytes = built.proto.compute_size();
    let settings = compression
        .layers
        .iter()
        .map(|l| l.report.settings)
        .filter(|s| !s.exclude);
    let mut below_8 = Vec::new();
    let mut quantized = false;
    let mut half = false;
    let mut structured = false;
    for s in settings {
        match s.precision {
            Precision::Int { bits } => {
                quantized = true;
                if bits < 8 && !below_8.contains(&bits) {
                    below_8.push(bits);
                }
            }
            Precision::Float16 => half = true,
            Precision::Float32 => {}
        }
        structured |= s.prune_ratio > 0.0 && s.prune_method.is_structured();
    }
    below_8.sort_unstable();
    let mut notes = Vec::new();
    match format {
        ExportFormat::Fp32 if quantized || half => notes.push(
            "fp32 stores every weight as float32 (the planned values, dequantized): the file does \
             not shrink. weights-int8 or qdq-int8 store integer codes, fp16 halves floats."
                .to_owned(),
        ),
        ExportFormat::Fp16 if quantized => notes.push(
            "fp16 stores integer-planned layers as float16 values (2 bytes each); weights-int8 \
             or qdq-int8 store 1-byte codes."
                .to_owned(),
        ),
        _ => {}
    }
    if !below_8.is_empty()
        && matches!(
            format,
            ExportFormat::WeightsInt8 | ExportFormat::QdqInt8 | ExportFormat::DynamicInt8
        )
    {
        let bits: Vec<String> = below_8.iter().map(|b| format!("int{b}")).collect();
        notes.push(format!(
            "{} codes are stored in int8 containers (1 byte per weight, as int8): fewer bits \
             lower the accuracy, not the file. Packed 4-bit storage needs ONNX opset 21, which \
             tract cannot run.",
            bits.join("/")
        ));
    }
    if structured {
        notes.push(
            "channel pruning also shrinks the layers that read the removed channels: the \
             written file is smaller than this."
                .to_owned(),
        );
    }
    let folds = format == ExportFormat::QdqInt8
        && compression.recipe.fold_batchnorm
        && model
            .graph
            .nodes
            .iter()
            .any(|n| n.op_type == "BatchNormalization");
    if folds {
        notes.push(
            "the QDQ export folds batch norms into their layers first: the written file differs \
             by their parameters."
                .to_owned(),
        );
    }
    // Integer formats move models below opset 13 to it (per-channel scales): a few bytes.
    let upgraded = matches!(
        format,
        ExportFormat::WeightsInt8 | ExportFormat::QdqInt8 | ExportFormat::DynamicInt8
    ) && crate::model::opset::default_opset(&model.proto) < 13;
    Ok(PlannedFile {
        size_bytes,
        exact: !structured && !folds && !upgraded,
        notes,
    })
}
