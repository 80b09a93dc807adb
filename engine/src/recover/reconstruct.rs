//! Data-aware passes on calibration data:
//!
//! - [`reconstruct_pass`]: layer-wise weight reconstruction after unstructured pruning (OBC /
//!   SparseGPT / AdaPrune style, no training). Each pruned Conv/Gemm/MatMul layer, in graph
//!   order, keeps its pruning mask and re-solves the kept weights of every output row,
//!   `w_M = (H_MM + λI)⁻¹ (X_Mᵀ X° w°)`, so that fed its inputs `X` from the model with the
//!   earlier layers already reconstructed, it reproduces the ORIGINAL model's output of that
//!   layer (`X° w°`, original inputs and weights) on the calibration data. `H = XᵀX`; `λ` is
//!   the recipe's dampening times the mean of `diag H`.
//! - [`attach_input_grams`]: the Gram matrices of each layer's calibration inputs, for
//!   [`Clipping::OutputMse`] range search ([`output_mse_scale`](crate::compress::layer_inputs::output_mse_scale)).

use std::sync::Arc;

use rayon::prelude::*;
use serde::Serialize;

use crate::compress::compressor::{Compression, Compressor, LayerResult, SkippedLayer};
use crate::compress::layer_inputs::{
    InputGram, LayerGeometry, geometry, quadratic, rank_one_update,
};
use crate::compress::plan::{Clipping, Precision, PruneMask, PruneMethod, Recipe};
use crate::compress::prune_mask::{activation_mask, obs_mask};
use crate::error::Result;
use crate::export::build::{ExportFormat, build_export};
use crate::job::{CancelToken, ProgressSink, report};
use crate::measure::inputs::resolve_inputs;
use crate::measure::runtime::FixedInput;
use crate::model::load::{LoadedModel, from_proto};
use crate::model::proto::{Message, ModelProto};
use crate::recover::calibration::{CalibrationData, observe_tensors};

/// What reconstruction did to one layer. Errors are relative output errors on the calibration
/// data, `‖X w − X° w°‖² / ‖X° w°‖²`, with `X` the inputs in the model reconstructed up to this
/// layer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerReconstruction {
    pub name: String,
    pub op: String,
    /// Fraction of the weight that is zero (the pruning mask; unchanged by reconstruction).
    pub sparsity: f64,
    /// With the pruned weights as they are.
    pub relative_error_pruned: f64,
    /// With the kept weights re-solved.
    pub relative_error_reconstructed: f64,
    /// Output rows re-solved (the others kept their pruned weights).
    pub rows_solved: usize,
    pub rows: usize,
}

/// The model after pruning with reconstruction: its weights are the pruned and re-solved
/// float weights (zeros where pruned), so re-applying the same magnitude pruning to it
/// changes nothing.
pub struct ReconstructedModel {
    pub model: LoadedModel,
    pub layers: Vec<LayerReconstruction>,
    /// Pruned layers that were not reconstructed, and why.
    pub skipped: Vec<SkippedLayer>,
}

/// The calibration data, input shape and fixed inputs of a run.
struct Feed<'a> {
    source: CalibrationData<'a>,
    shape: Vec<usize>,
    fixed: Vec<FixedInput>,
}

impl Feed<'_> {
    fn data(&self) -> &crate::measure::dataset::Dataset {
        self.source.samples()
    }

    /// Per calibration sample, the values of tensor `name` in `proto`.
    fn observe(
        &self,
        model: &LoadedModel,
        proto: &ModelProto,
        name: &str,
        progress: &dyn ProgressSink,
        cancel: &CancelToken,
    ) -> Result<Vec<Vec<f32>>> {
        let data = self.data();
        if model.graph.inputs.iter().any(|i| i.name == name) {
            return Ok((0..data.len()).map(|i| data.sample(i).to_vec()).collect());
        }
        let mut out = Vec::with_capacity(data.len());
        observe_tensors(
            self.source.runtime,
            proto,
            &self.shape,
            &self.fixed,
            &[name.to_owned()],
            data,
            "observing layer inputs",
            progress,
            cancel,
            |_, v| out.push(v.to_vec()),
        )?;
        Ok(out)
    }
}

fn feed<'a>(model: &LoadedModel, source: CalibrationData<'a>) -> Result<Feed<'a>> {
    let inputs = resolve_inputs(model, Some(source.data), source.input_shapes)?;
    Ok(Feed {
        source,
        shape: inputs.shape,
        fixed: inputs.fixed,
    })
}

/// `compression` with the weight values of each layer replaced by `values`.
fn with_values(compression: &Compression, values: &[Vec<f32>]) -> Compression {
    let mut c = compression.clone();
    for (layer, v) in c.layers.iter_mut().zip(values) {
        if layer.values != *v {
            let mut l = LayerResult::clone(layer);
            l.values = v.clone();
            *layer = Arc::new(l);
        }
    }
    c
}

/// Runs reconstruction when `recipe.reconstruct.enabled` and some Conv/Gemm/MatMul layer is
/// pruned by magnitude; `None` otherwise. Calibration data: `source.calibration`, else
/// `source.data`.
pub fn reconstruct_pass<'a>(
    model: &LoadedModel,
    recipe: &Recipe,
    source: impl Into<CalibrationData<'a>>,
    progress: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<Option<ReconstructedModel>> {
    let settings = recipe.reconstruct;
    if !settings.enabled {
        return Ok(None);
    }
    let analysis = crate::analyse::analysis::analyse(model, &Default::default(), progress, cancel)?;
    let mut compressor = Compressor::new(model, &analysis);
    let mut pruning = recipe.clone();
    pruning.defaults.precision = Precision::Float32;
    for o in pruning.layers.values_mut() {
        o.precision = None;
    }
    let compression = compressor.apply(&pruning, cancel)?;
    let mut skipped = Vec::new();
    let mut work: Vec<(usize, LayerGeometry, f32)> = Vec::new();
    for (i, (layer, result)) in compressor
        .layers
        .iter()
        .zip(&compression.layers)
        .enumerate()
    {
        let s = result.report.settings;
        if s.exclude || s.prune_ratio <= 0.0 || s.prune_method != PruneMethod::Magnitude {
            continue;
        }
        match geometry(model, layer) {
            Ok(g) => work.push((i, g, s.prune_ratio)),
            Err(reason) => skipped.push(SkippedLayer {
                name: layer.name.clone(),
                op: layer.op.clone(),
                reason: format!("pruned without reconstruction: {reason}"),
            }),
        }
    }
    if work.is_empty() {
        return Ok(None);
    }
    work.sort_by_key(|(i, _, _)| compressor.layers[*i].node);
    let feed = feed(model, source.into())?;
    let original = model.self_contained_proto()?;
    let mut values: Vec<Vec<f32>> = compression
        .layers
        .iter()
        .map(|l| l.values.clone())
        .collect();
    let mut layers = Vec::new();
    for (step, (i, geometry, ratio)) in work.iter().enumerate() {
        cancel.check()?;
        report(
            progress,
            "reconstructing pruned layers",
            step as u64,
            work.len() as u64,
        );
        let current = build_export(
            model,
            &compressor,
            &with_values(&compression, &values),
            ExportFormat::Fp32,
            None,
            None,
        )?
        .proto;
        let x_orig = feed.observe(model, &original, &geometry.input, progress, cancel)?;
        let x_now = feed.observe(model, &current, &geometry.input, progress, cancel)?;
        let stats = paired_grams(geometry, &x_now, &x_orig, cancel)?;
        let w_orig = compressor.original(*i);
        let mask: Vec<bool> = match settings.mask {
            PruneMask::Magnitude => values[*i].iter().map(|&v| v != 0.0).collect(),
            PruneMask::Activation => activation_mask(geometry, &stats.h, w_orig, *ratio),
            PruneMask::Obs => {
                match obs_mask(
                    geometry,
                    &stats.h,
                    w_orig,
                    *ratio,
                    f64::from(settings.dampening),
                )? {
                    Some(mask) => mask,
                    None => activation_mask(geometry, &stats.h, w_orig, *ratio),
                }
            }
        };
        let (new_values, layer) = solve_layer(
            geometry,
            &stats,
            w_orig,
            &mask,
            f64::from(settings.dampening),
        )?;
        values[*i] = new_values;
        let l = &compressor.layers[*i];
        layers.push(LayerReconstruction {
            name: l.name.clone(),
            op: l.op.clone(),
            sparsity: values[*i].iter().filter(|v| **v == 0.0).count() as f64
                / values[*i].len().max(1) as f64,
            ..layer
        });
    }
    report(
        progress,
        "reconstructing pruned layers",
        work.len() as u64,
        work.len() as u64,
    );
    let built = build_export(
        model,
        &compressor,
        &with_values(&compression, &values),
        ExportFormat::Fp32,
        None,
        None,
    )?;
    let size = Message::compute_size(&built.proto);
    let model = from_proto(built.proto, model.path.clone(), size, progress)?;
    Ok(Some(ReconstructedModel {
        model,
        layers,
        skipped,
    }))
}

/// Per group: `H = XᵀX`, `C = Xᵀ X°` and `H° = X°ᵀX°` over paired input rows.
struct PairedGrams {
    h: Vec<Vec<f64>>,
    cross: Vec<Vec<f64>>,
    h_orig: Vec<Vec<f64>>,
}

fn paired_grams(
    g: &LayerGeometry,
    now: &[Vec<f32>],
    orig: &[Vec<f32>],
    cancel: &CancelToken,
) -> Result<PairedGrams> {
    let k = g.inputs_per_row;
    let zero = || vec![vec![0f64; k * k]; g.groups];
    let mut s = PairedGrams {
        h: zero(),
        cross: zero(),
        h_orig: zero(),
    };
    for (a, b) in now.iter().zip(orig) {
        cancel.check()?;
        let mut patches: Vec<(usize, Vec<f64>)> = Vec::new();
        g.for_each_patch(b, |group, p| patches.push((group, p.to_vec())));
        let mut n = 0;
        g.for_each_patch(a, |group, p| {
            if let Some((gb, pb)) = patches.get(n)
                && *gb == group
            {
                rank_one_update(&mut s.h[group], p, p, k);
                rank_one_update(&mut s.cross[group], p, pb, k);
                rank_one_update(&mut s.h_orig[group], pb, pb, k);
            }
            n += 1;
        });
    }
    Ok(s)
}

/// Re-solves the kept weights of every output row; returns the new weight and the report
/// (name and op left empty).
fn solve_layer(
    g: &LayerGeometry,
    s: &PairedGrams,
    w_orig: &[f32],
    mask: &[bool],
    dampening: f64,
) -> Result<(Vec<f32>, LayerReconstruction)> {
    let k = g.inputs_per_row;
    // Per row: (new kept values by k, error pruned, error solved, reference energy, solved).
    let rows: Vec<(Vec<f64>, f64, f64, f64, bool)> = (0..g.outputs)
        .into_par_iter()
        .map(|o| {
            let group = g.group_of(o);
            let (h, c, h0) = (&s.h[group], &s.cross[group], &s.h_orig[group]);
            let w0 = g.row(w_orig, o);
            let kept: Vec<usize> = (0..k)
                .filter(|&j| mask.get(g.index(o, j)).copied().unwrap_or(false))
                .collect();
            // c·w0: target correlation X_jᵀ (X° w°).
            let cw: Vec<f64> = (0..k)
                .map(|i| {
                    c[i * k..(i + 1) * k]
                        .iter()
                        .zip(&w0)
                        .map(|(a, b)| a * b)
                        .sum()
                })
                .collect();
            let reference = quadratic(h0, &w0);
            let error = |w: &[f64]| quadratic(h, w) - 2.0 * dot(w, &cw) + reference;
            let pruned: Vec<f64> = (0..k)
                .map(|j| if kept.contains(&j) { w0[j] } else { 0.0 })
                .collect();
            let before = error(&pruned).max(0.0);
            let mean_diag = (0..k).map(|j| h[j * k + j]).sum::<f64>() / k.max(1) as f64;
            if kept.is_empty() || mean_diag <= 0.0 {
                return Ok((pruned, before, before, reference, false));
            }
            let a: Vec<f64> = kept
                .iter()
                .flat_map(|&i| kept.iter().map(move |&j| h[i * k + j]))
                .collect();
            let b: Vec<f64> = kept.iter().map(|&i| cw[i]).collect();
            // A system that stays singular even dampened keeps the pruned weights.
            let Ok(x) = crate::compress::layer_inputs::solve_damped(&a, &b, dampening * mean_diag)
            else {
                return Ok((pruned, before, before, reference, false));
            };
            let mut solved = vec![0f64; k];
            for (&j, &v) in kept.iter().zip(&x) {
                // Kept weights stay nonzero: the mask, and so the sparsity, is unchanged.
                solved[j] = if (v as f32) == 0.0 {
                    f64::from(f32::MIN_POSITIVE)
                } else {
                    v
                };
            }
            let after = error(&solved).max(0.0);
            if after.is_finite() && after <= before {
                Ok((solved, before, after, reference, true))
            } else {
                Ok((pruned, before, before, reference, false))
            }
        })
        .collect::<Result<_>>()?;
    let mut values = w_orig.to_vec();
    let (mut before, mut after, mut reference, mut solved) = (0f64, 0f64, 0f64, 0usize);
    for (o, (row, b, a, r, ok)) in rows.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            if let Some(slot) = values.get_mut(g.index(o, j)) {
                *slot = v as f32;
            }
        }
        before += b;
        after += a;
        reference += r;
        solved += usize::from(*ok);
    }
    let rel = |e: f64| if reference > 0.0 { e / reference } else { 0.0 };
    Ok((
        values,
        LayerReconstruction {
            name: String::new(),
            op: String::new(),
            sparsity: 0.0,
            relative_error_pruned: rel(before),
            relative_error_reconstructed: rel(after),
            rows_solved: solved,
            rows: g.outputs,
        },
    ))
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// When some layer of `recipe` uses [`Clipping::OutputMse`] or error compensation, measures
/// the Gram matrix of each
/// compressible layer's inputs on the calibration data (in `model` as it is, float) and gives
/// them to `compressor`. Layers whose geometry is not supported are left without (their
/// search falls back to weight MSE).
pub fn attach_input_grams<'a>(
    model: &LoadedModel,
    compressor: &mut Compressor,
    recipe: &Recipe,
    source: impl Into<CalibrationData<'a>>,
    progress: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<()> {
    let wanted: Vec<bool> = compressor
        .layers
        .iter()
        .map(|l| {
            let s = recipe.settings_for(&l.name);
            !s.exclude
                && (s.clipping == Clipping::OutputMse || s.error_compensation)
                && matches!(s.precision, Precision::Int { .. })
        })
        .collect();
    if !wanted.contains(&true) {
        return Ok(());
    }
    let feed = feed(model, source.into())?;
    let proto = model.self_contained_proto()?;
    let mut grams = Vec::with_capacity(compressor.layers.len());
    for (step, (layer, want)) in compressor.layers.iter().zip(&wanted).enumerate() {
        report(
            progress,
            "measuring layer inputs",
            step as u64,
            wanted.len() as u64,
        );
        let geometry = match geometry(model, layer) {
            Ok(g) if *want => g,
            _ => {
                grams.push(None);
                continue;
            }
        };
        let xs = feed.observe(model, &proto, &geometry.input, progress, cancel)?;
        let mut gram = InputGram::new(geometry);
        for x in &xs {
            cancel.check()?;
            gram.add(x);
        }
        grams.push(Some(Arc::new(gram)));
    }
    compressor.set_input_grams(grams);
    Ok(())
}
