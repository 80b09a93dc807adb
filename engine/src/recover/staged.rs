//! The staged path to full-integer export, as onnxruntime's `quant_pre_process` + static
//! quantization do it: prune in float (re-estimating batch norm), fold batch norm into the
//! layers before it, then quantize the folded weights and activations. Folding first lets
//! integer layers follow each other without float batch norms in between.

use crate::compress::compressor::Compressor;
use crate::compress::fold::{FoldReport, fold_batchnorm};
use crate::compress::plan::{BatchNormRecalibration, Precision, Recipe};
use crate::error::Result;
use crate::export::build::{ExportFormat, build_export};
use crate::job::{CancelToken, ProgressSink};
use crate::measure::dataset::Dataset;
use crate::measure::inputs::ResolvedInputs;
use crate::measure::runtime::RuntimeKind;
use crate::model::load::{LoadedModel, from_proto};
use crate::model::proto::Message;

/// The model after pruning and batch-norm folding, with the recipe that finishes the job.
pub struct FoldedStage {
    pub model: LoadedModel,
    /// The recipe's quantization only (pruning is done; batch norms are gone).
    pub recipe: Recipe,
    pub report: FoldReport,
}

/// For `qdq-int8` (the caller's check) with `recipe.fold_batchnorm`: prunes in float (with batch-norm
/// re-estimation as the recipe asks, observed in `runtime` with the inputs of `fixed` held at
/// their values), folds every foldable batch norm, and returns the folded model. `None` when
/// there is nothing to fold.
pub fn fold_stage(
    model: &LoadedModel,
    recipe: &Recipe,
    calibration: &Dataset,
    runtime: RuntimeKind,
    inputs: &ResolvedInputs,
    progress: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<Option<FoldedStage>> {
    let has_batchnorm = model
        .graph
        .main_nodes()
        .any(|n| n.op_type == "BatchNormalization");
    if !recipe.fold_batchnorm || !has_batchnorm {
        return Ok(None);
    }
    // Stage 1: pruning alone, in float.
    let mut pruning = recipe.clone();
    pruning.defaults.precision = Precision::Float32;
    for o in pruning.layers.values_mut() {
        o.precision = None;
    }
    let analysis = crate::analyse::analysis::analyse(model, &Default::default(), progress, cancel)?;
    let mut compressor = Compressor::new(model, &analysis);
    let pruned_compression = compressor.apply(&pruning, cancel)?;
    let pruned_any = pruned_compression.prunes_any();
    let stats = crate::recover::calibration::recalibrate_batchnorm(
        runtime,
        model,
        &compressor,
        &pruned_compression,
        recipe.recalibrate_batchnorm,
        &inputs.shape,
        &inputs.fixed,
        calibration,
        progress,
        cancel,
    )?;
    let pruned_model = if pruned_any || stats.is_some() {
        let built = build_export(
            model,
            &compressor,
            &pruned_compression,
            ExportFormat::Fp32,
            None,
            stats.as_ref(),
        )?;
        let size = Message::compute_size(&built.proto);
        from_proto(built.proto, model.path.clone(), size, progress)?
    } else {
        model.clone()
    };
    // Stage 2: fold.
    let (folded_proto, report) = fold_batchnorm(&pruned_model)?;
    if report.folded.is_empty() {
        return Ok(None);
    }
    let size = Message::compute_size(&folded_proto);
    let folded = from_proto(folded_proto, model.path.clone(), size, progress)?;
    // Stage 3's recipe: quantization only, on the layers that still exist.
    let mut quantize = recipe.clone();
    quantize.defaults.prune_ratio = 0.0;
    quantize.recalibrate_batchnorm = BatchNormRecalibration::Never;
    let names: std::collections::HashSet<&str> =
        folded.graph.main_nodes().map(|n| n.name.as_str()).collect();
    quantize
        .layers
        .retain(|name, _| names.contains(name.as_str()));
    for o in quantize.layers.values_mut() {
        o.prune_ratio = Some(0.0);
    }
    Ok(Some(FoldedStage {
        model: folded,
        recipe: quantize,
        report,
    }))
}
