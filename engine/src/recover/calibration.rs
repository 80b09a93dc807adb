//! Observing a model's tensors on data: activation ranges for QDQ calibration, and batch-norm
//! statistics re-estimated layer by layer after compression.

use crate::compress::compressor::{Compression, Compressor};
use crate::compress::plan::{ActivationCalibration, BatchNormRecalibration};
use crate::compress::quant::quantile;
use crate::error::Result;
use crate::export::build::{ActivationRanges, BatchNormStats, ExportFormat, build_export};
use crate::job::{CancelToken, ProgressSink, report};
use crate::measure::dataset::Dataset;
use crate::measure::inputs::InputShapes;
use crate::measure::runtime::{BuildOptions, FixedInput, Runnable, RunnableModel, RuntimeKind};
use crate::model::load::LoadedModel;
use crate::model::proto::ModelProto;

/// What the data-aware passes run the model on: the samples and how to feed them (the
/// optimize job's options convert into it).
#[derive(Clone, Copy)]
pub struct CalibrationData<'a> {
    /// Evaluation data, used when there is no separate calibration data.
    pub data: &'a Dataset,
    /// Calibration data, when it differs from the evaluation data.
    pub calibration: Option<&'a Dataset>,
    /// The runtime that runs the model.
    pub runtime: RuntimeKind,
    /// Concrete shapes for inputs with symbolic dims and values for held inputs.
    pub input_shapes: &'a InputShapes,
}

impl<'a> CalibrationData<'a> {
    /// The samples the passes observe: the calibration data, else the evaluation data.
    pub fn samples(&self) -> &'a Dataset {
        self.calibration.unwrap_or(self.data)
    }
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
    let batch = input_shape.first().copied().unwrap_or(1).max(1);
    let mut stats = BatchNormStats::new();
    for (name, x, channels) in nodes {
        // Values per channel and item: the dims after the channel axis ([N, C, H, W] → H·W),
        // from the shape facts, else from the input's batch.
        let spatial: Option<usize> = model
            .shapes
            .get(&x)
            .and_then(|v| v.shape.as_ref())
            .and_then(|dims| {
                dims.get(2..)?
                    .iter()
                    .map(|d| d.known().filter(|&v| v > 0).map(|v| v as usize))
                    .product::<Option<usize>>()
            });
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
                let per_channel = out.len() / sum.len();
                let inner = spatial
                    .filter(|&s| s > 0 && per_channel % s == 0)
                    .unwrap_or_else(|| {
                        if per_channel % batch == 0 {
                            per_channel / batch
                        } else {
                            per_channel
                        }
                    });
                if inner == 0 {
                    return;
                }
                // Runs of `inner` values go channel by channel, item by item: run i is
                // channel i mod C.
                for (i, run) in out.chunks(inner).enumerate() {
                    let c = i % sum.len();
                    for &v in run {
                        sum[c] += f64::from(v);
                        sum_sq[c] += f64::from(v) * f64::from(v);
                    }
                }
                count += per_channel as u64;
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
