//! Applying a recipe: per-layer pruned and quantized weights plus a report, recomputing only
//! the layers whose settings changed since the last call.

mod compressible;
mod quantize;

use std::collections::HashMap;
use std::sync::Arc;

use rayon::prelude::*;
use serde::Serialize;

use crate::analyse::analysis::{LayerReport, ModelAnalysis};
use crate::compress::layer_inputs::InputGram;
use crate::compress::plan::{Clipping, LayerSettings, Precision, Recipe};
use crate::compress::quant::{QuantParams, prune_smallest, sqnr_db_and_mse};
use crate::error::Result;
use crate::job::CancelToken;
use crate::model::dtype::DType;
use crate::model::graph::NodeDesc;
use crate::model::load::{LoadedModel, WeightOrigin};

pub use compressible::INTEGER_KERNEL_OPS;
use compressible::compressible;
use quantize::quantize_weight;

/// A layer the engine can compress, with what it needs to know about its weight.
#[derive(Clone, Debug)]
pub struct CompressibleLayer {
    pub name: String,
    pub op: String,
    /// Index of the node in the graph view.
    pub node: usize,
    /// The main weight's tensor name and its index in `LoadedModel::weights`.
    pub weight: String,
    pub weight_index: usize,
    pub dims: Vec<i64>,
    /// Axis of the output channels in the weight, when the op has one.
    pub channel_axis: Option<usize>,
    /// Whether structured (channel) pruning is possible for this op.
    pub structured_ok: bool,
    /// The model's default-domain opset: per-channel weights of integer-kernel (QDQ) layers
    /// need a per-axis `DequantizeLinear` (opset 13); weight-only formats scale per channel
    /// with a `Mul` at any opset.
    pub opset: i64,
    pub macs: Option<u64>,
}

/// A layer left alone, and why.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct SkippedLayer {
    pub name: String,
    pub op: String,
    pub reason: String,
}

/// Integer codes of a quantized weight.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedWeight {
    pub bits: u8,
    pub symmetric: bool,
    /// One per tensor, or one per channel along `axis`.
    pub params: Vec<QuantParams>,
    pub axis: Option<usize>,
    pub codes: Vec<i8>,
}

/// What compression did to one layer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerCompression {
    pub name: String,
    pub op: String,
    pub weight: String,
    pub settings: LayerSettings,
    /// Fraction of the weight's values that are exactly zero afterwards.
    pub sparsity: f64,
    /// Weight SQNR against the original, in dB (`null` when identical, `"-inf"` when some
    /// weight became NaN or infinite).
    #[serde(serialize_with = "crate::measure::eval::json_db")]
    pub sqnr_db: Option<f64>,
    pub mse: f64,
    pub bytes_before: u64,
    /// Bytes of the weight as the export stores it (int8 containers below 8 bits).
    pub bytes_after: u64,
    pub macs_before: Option<u64>,
    /// MACs of this layer after structured pruning (downstream layers shrink too; the export
    /// report has the exact figures).
    pub macs_after: Option<u64>,
    /// Output channels removed by structured pruning.
    pub removed_channels: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The compressed weight of one layer and its report.
#[derive(Clone, Debug)]
pub struct LayerResult {
    /// The weight values the runtime will compute with (after pruning and quantization).
    pub values: Vec<f32>,
    pub quantized: Option<QuantizedWeight>,
    /// Output channels chosen for removal (structured pruning), ascending.
    pub removed_channels: Vec<usize>,
    pub report: LayerCompression,
}

/// Everything one [`Compressor::apply`] produced.
#[derive(Clone, Debug)]
pub struct Compression {
    pub recipe: Recipe,
    /// Parallel to [`Compressor::layers`].
    pub layers: Vec<Arc<LayerResult>>,
    pub skipped: Vec<SkippedLayer>,
    /// How many layers were recomputed by this call (the rest came from the cache).
    pub recomputed: usize,
}

impl Compression {
    /// Whether some layer that is not excluded is pruned.
    pub fn prunes_any(&self) -> bool {
        self.layers
            .iter()
            .any(|l| !l.report.settings.exclude && l.report.settings.prune_ratio > 0.0)
    }

    /// Totals over the compressed layers: (bytes before, bytes after).
    pub fn weight_bytes(&self) -> (u64, u64) {
        self.layers.iter().fold((0, 0), |(b, a), l| {
            (b + l.report.bytes_before, a + l.report.bytes_after)
        })
    }
}

/// What a layer's result depends on besides its settings: what the export format allows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerContext {
    /// Integer codes limited to this many bits (see [`Recipe::integer_kernel_bits_cap`]).
    pub bits_cap: Option<u8>,
    /// Whether per-channel scales can be exported for this layer.
    pub per_channel_ok: bool,
}

impl LayerContext {
    /// The context of `layer` under `recipe` (whose int8 activations say QDQ).
    pub fn of(layer: &CompressibleLayer, recipe: &Recipe) -> Self {
        let kernel = INTEGER_KERNEL_OPS.contains(&layer.op.as_str());
        Self {
            bits_cap: recipe.integer_kernel_bits_cap().filter(|_| kernel),
            per_channel_ok: !(recipe.activations.int8 && kernel) || layer.opset >= 13,
        }
    }
}

/// A layer's result with the settings and the context it was computed with.
type CachedLayer = (LayerSettings, LayerContext, Arc<LayerResult>);

/// Holds the original weights and a cache of per-layer results.
pub struct Compressor {
    pub layers: Vec<CompressibleLayer>,
    pub skipped: Vec<SkippedLayer>,
    originals: Vec<Arc<Vec<f32>>>,
    /// Calibration input statistics per layer, for output-MSE clipping.
    grams: Vec<Option<Arc<InputGram>>>,
    cache: Vec<Option<CachedLayer>>,
}

impl Compressor {
    /// Finds the compressible layers of `model`; the others are listed with a reason.
    pub fn new(model: &LoadedModel, analysis: &ModelAnalysis) -> Self {
        let mut layers = Vec::new();
        let mut skipped = Vec::new();
        let mut originals = Vec::new();
        let nodes = compressible::main_nodes_by_name(model);
        for report in &analysis.layers {
            match compressible(model, report, &nodes) {
                Ok(layer) => {
                    let values = model.weights[layer.weight_index]
                        .values
                        .clone()
                        .unwrap_or_default();
                    originals.push(Arc::new(values));
                    layers.push(layer);
                }
                Err(reason) => skipped.push(SkippedLayer {
                    name: report.name.clone(),
                    op: report.op.clone(),
                    reason,
                }),
            }
        }
        let cache = vec![None; layers.len()];
        Self {
            grams: vec![None; layers.len()],
            layers,
            skipped,
            originals,
            cache,
        }
    }

    /// Gives the layers (parallel to [`Compressor::layers`]) the Gram matrices of their
    /// calibration inputs, which [`crate::compress::plan::Clipping::OutputMse`] needs; clears the cache.
    pub fn set_input_grams(&mut self, grams: Vec<Option<Arc<InputGram>>>) {
        self.grams = grams;
        self.grams.resize(self.layers.len(), None);
        self.cache.iter_mut().for_each(|c| *c = None);
    }

    /// A compressor over the same original weights (shared, not copied) with an empty cache:
    /// a second one for another thread or another comparison costs no weight memory.
    pub fn sharing_weights(&self) -> Self {
        Self {
            layers: self.layers.clone(),
            skipped: self.skipped.clone(),
            originals: self.originals.clone(),
            grams: self.grams.clone(),
            cache: vec![None; self.layers.len()],
        }
    }

    /// Names of every layer a recipe may name (compressible or not).
    pub fn layer_names(&self) -> impl Iterator<Item = &str> {
        self.layers
            .iter()
            .map(|l| l.name.as_str())
            .chain(self.skipped.iter().map(|s| s.name.as_str()))
    }

    /// The original values of layer `i`'s main weight.
    pub fn original(&self, i: usize) -> &[f32] {
        &self.originals[i]
    }

    /// Applies `recipe`, recomputing only the layers whose effective settings changed.
    pub fn apply(&mut self, recipe: &Recipe, cancel: &CancelToken) -> Result<Compression> {
        recipe.validate(self.layer_names())?;
        let wanted: Vec<LayerSettings> = self
            .layers
            .iter()
            .map(|l| recipe.settings_for(&l.name))
            .collect();
        let caps: Vec<LayerContext> = self
            .layers
            .iter()
            .map(|l| LayerContext::of(l, recipe))
            .collect();
        let stale: Vec<usize> = (0..self.layers.len())
            .filter(|&i| {
                self.cache[i]
                    .as_ref()
                    .is_none_or(|(s, cap, _)| *s != wanted[i] || *cap != caps[i])
            })
            .collect();
        let fresh: Vec<(usize, LayerResult)> = stale
            .par_iter()
            .map(|&i| {
                cancel.check()?;
                Ok((
                    i,
                    compress_layer_capped(
                        &self.layers[i],
                        &self.originals[i],
                        wanted[i],
                        self.grams[i].as_deref(),
                        caps[i],
                    ),
                ))
            })
            .collect::<Result<_>>()?;
        let recomputed = fresh.len();
        for (i, result) in fresh {
            self.cache[i] = Some((wanted[i], caps[i], Arc::new(result)));
        }
        let layers = self
            .cache
            .iter()
            .map(|c| c.as_ref().map(|(_, _, r)| r.clone()))
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default();
        let mut skipped = self.skipped.clone();
        for (layer, s) in self.layers.iter().zip(&wanted) {
            if s.prune_method.is_structured()
                && s.prune_ratio > 0.0
                && !layer.structured_ok
                && !s.exclude
            {
                skipped.push(SkippedLayer {
                    name: layer.name.clone(),
                    op: layer.op.clone(),
                    reason: "structured pruning is not possible for this op; its weights were not pruned".to_owned(),
                });
            }
        }
        Ok(Compression {
            recipe: recipe.clone(),
            layers,
            skipped,
            recomputed,
        })
    }
}

/// Splits `values` (C order, `dims`) into groups along `axis`: element → group index.
fn group_of(dims: &[i64], axis: usize) -> impl Fn(usize) -> usize {
    let inner: usize = dims[axis + 1..].iter().map(|&d| d as usize).product();
    let channels = dims[axis] as usize;
    move |i| (i / inner.max(1)) % channels.max(1)
}

/// Compresses one layer's weight with `settings`.
pub fn compress_layer(
    layer: &CompressibleLayer,
    original: &[f32],
    settings: LayerSettings,
) -> LayerResult {
    compress_layer_with(layer, original, settings, None)
}

/// [`compress_layer`] with the layer's calibration input statistics (for output-MSE clipping),
/// for a weight-only export.
pub fn compress_layer_with(
    layer: &CompressibleLayer,
    original: &[f32],
    settings: LayerSettings,
    gram: Option<&InputGram>,
) -> LayerResult {
    let context = LayerContext {
        bits_cap: None,
        per_channel_ok: true,
    };
    compress_layer_capped(layer, original, settings, gram, context)
}

/// [`compress_layer_with`] in `context`: integer codes limited to its bits (the 7-bit weight
/// range that integer kernels compute exactly on every CPU, see [`crate::compress::plan::Target`]), and
/// per-tensor scales where per-channel ones cannot be exported.
pub fn compress_layer_capped(
    layer: &CompressibleLayer,
    original: &[f32],
    settings: LayerSettings,
    gram: Option<&InputGram>,
    context: LayerContext,
) -> LayerResult {
    let bits_cap = context.bits_cap;
    let bytes_before = original.len() as u64 * 4;
    let mut values = original.to_vec();
    let mut notes = Vec::new();
    let mut removed_channels = Vec::new();
    let mut quantized = None;
    if !settings.exclude {
        // Pruning.
        if settings.prune_ratio > 0.0 {
            if settings.prune_method.is_structured() {
                if let (true, Some(axis)) = (layer.structured_ok, layer.channel_axis) {
                    removed_channels = rank_channels(&values, &layer.dims, axis, settings);
                    let group = group_of(&layer.dims, axis);
                    for (i, v) in values.iter_mut().enumerate() {
                        if removed_channels.binary_search(&group(i)).is_ok() {
                            *v = 0.0;
                        }
                    }
                }
            } else {
                let count = (settings.prune_ratio as f64 * values.len() as f64).floor() as usize;
                prune_smallest(&mut values, count);
            }
        }
        // Quantization.
        match settings.precision {
            Precision::Float32 => {}
            Precision::Float16 => {
                // Beyond float16's range a weight would become infinite (and every output it
                // reaches with it): saturate to ±65504, as onnxconverter-common does, and say so.
                let max = f32::from(half::f16::MAX);
                let mut saturated = 0usize;
                for v in values.iter_mut() {
                    if v.is_finite() && v.abs() > max {
                        *v = v.clamp(-max, max);
                        saturated += 1;
                    }
                    *v = half::f16::from_f32(*v).to_f32();
                }
                if saturated > 0 {
                    notes.push(format!(
                        "{saturated} weights beyond float16's range (|w| > 65504) saturated to ±65504"
                    ));
                }
            }
            Precision::Int { bits: asked } => {
                let bits = bits_cap.map_or(asked, |cap| asked.min(cap));
                if bits < asked {
                    notes.push(format!(
                        "int{asked} weights of integer layers use {bits}-bit codes (|code| ≤ {}) \
                         so that onnxruntime's u8×s8 kernels compute them exactly on every CPU \
                         (x86-64 without VNNI saturates full-range products); target \
                         x86-64-vnni or arm64 allows the full range",
                        crate::compress::quant::code_range(bits, settings.symmetric)
                            .1
                            .max(-crate::compress::quant::code_range(bits, settings.symmetric).0)
                    ));
                }
                if settings.per_channel && !context.per_channel_ok {
                    notes.push(format!(
                        "per-channel scales of integer (QDQ) layers need opset 13 (the model has \
                         opset {}, and its ops could not be moved to 13); per-tensor used",
                        layer.opset
                    ));
                }
                let per_channel = settings.per_channel && context.per_channel_ok;
                let axis = if per_channel {
                    layer.channel_axis
                } else {
                    None
                };
                if settings.clipping == Clipping::OutputMse && gram.is_none() {
                    notes.push("output-MSE clipping needs calibration inputs of a Conv/Gemm/MatMul layer; weight MSE used".to_owned());
                }
                let (q, compensated) =
                    quantize_weight(&mut values, &layer.dims, axis, bits, settings, gram);
                if let Err(why) = compensated {
                    notes.push(format!(
                        "no error compensation ({why}): weights plainly rounded"
                    ));
                }
                if asked < 8 {
                    notes.push(format!(
                        "{bits}-bit codes are stored in int8 containers (tract cannot read INT4)"
                    ));
                }
                quantized = Some(q);
            }
        }
    }
    let error = sqnr_db_and_mse(original, &values);
    if error.broken > 0 {
        notes.push(format!(
            "{} finite weights became NaN or infinite: the layer's outputs are not meaningful",
            error.broken
        ));
    }
    let channels = layer
        .channel_axis
        .map_or(1, |a| layer.dims[a].max(1) as u64);
    let kept_fraction = 1.0 - removed_channels.len() as f64 / channels as f64;
    let kept_elements = (original.len() as f64 * kept_fraction).round() as u64;
    let bytes_after = if settings.exclude {
        bytes_before
    } else {
        match (&settings.precision, &quantized) {
            (Precision::Float32, _) => kept_elements * 4,
            (Precision::Float16, _) => kept_elements * 2,
            (Precision::Int { .. }, Some(q)) => {
                let groups = q.params.len() as u64;
                kept_elements + groups * 5 // int8 codes + f32 scale and int8 zero point per group
            }
            (Precision::Int { .. }, None) => kept_elements,
        }
    };
    LayerResult {
        report: LayerCompression {
            name: layer.name.clone(),
            op: layer.op.clone(),
            weight: layer.weight.clone(),
            settings,
            sparsity: error.zeros as f64 / values.len().max(1) as f64,
            sqnr_db: (error.sqnr_db < f64::INFINITY).then_some(error.sqnr_db),
            mse: error.mse,
            bytes_before,
            bytes_after,
            macs_before: layer.macs,
            macs_after: layer
                .macs
                .map(|m| (m as f64 * kept_fraction).round() as u64),
            removed_channels: removed_channels.len(),
            notes,
        },
        values,
        quantized,
        removed_channels,
    }
}

/// Output channels to remove: the lowest-norm `ratio` of them, at least one kept.
fn rank_channels(values: &[f32], dims: &[i64], axis: usize, settings: LayerSettings) -> Vec<usize> {
    let channels = dims[axis].max(1) as usize;
    let group = group_of(dims, axis);
    let mut norms = vec![0f64; channels];
    let l2 = matches!(
        settings.prune_method,
        crate::compress::plan::PruneMethod::ChannelsL2
    );
    for (i, &v) in values.iter().enumerate() {
        let v = f64::from(v);
        norms[group(i)] += if l2 { v * v } else { v.abs() };
    }
    let count =
        ((settings.prune_ratio as f64 * channels as f64).floor() as usize).min(channels - 1);
    let mut order: Vec<usize> = (0..channels).collect();
    order.sort_by(|&a, &b| norms[a].total_cmp(&norms[b]).then(a.cmp(&b)));
    let mut removed: Vec<usize> = order.into_iter().take(count).collect();
    removed.sort_unstable();
    removed
}
