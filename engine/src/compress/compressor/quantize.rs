//! The weight-quantization kernel of [`compress_layer_with`](super::compress_layer_with):
//! clipping ranges per group (min-max in one pass, a clipping search, or output-MSE with the
//! layer's calibration inputs), then codes and their dequantized values, in place.

use rayon::prelude::*;

use super::QuantizedWeight;
use crate::compress::layer_inputs::InputGram;
use crate::compress::layer_inputs::output_mse_scale;
use crate::compress::plan::LayerSettings;
use crate::compress::quant::{QuantParams, clip_range};

/// Calls `f(group, run)` for each contiguous run of elements that share a group along `axis`
/// (no per-element division: the hot loops of quantization walk runs).
fn for_each_run<T>(
    values: &mut [T],
    dims: &[i64],
    axis: Option<usize>,
    mut f: impl FnMut(usize, &mut [T]),
) {
    let Some(axis) = axis else {
        f(0, values);
        return;
    };
    let inner = dims[axis + 1..]
        .iter()
        .map(|&d| d.max(0) as usize)
        .product::<usize>()
        .max(1);
    let channels = (dims[axis].max(1)) as usize;
    let mut group = 0;
    for run in values.chunks_mut(inner) {
        f(group, run);
        group += 1;
        if group == channels {
            group = 0;
        }
    }
}

/// Channels whose weights are all but zero (|w| ~1e-17 left by training: "dead" filters) get
/// the layer's median scale instead of a scale of ~1e-24, so their codes are 0 and the
/// layer's int32 bias (input scale × weight scale per channel) does not overflow: a bias left
/// float is rounded by onnxruntime's integer kernels on its own grid, not the preview's
/// (found on a real detector: 13,142 of 13,698 code mismatches were in such layers).
fn revive_dead_channels(mut params: Vec<QuantParams>) -> Vec<QuantParams> {
    let largest = params.iter().map(|p| p.scale).fold(0f32, f32::max);
    let dead = |p: &QuantParams| p.scale < largest * 1e-9;
    if params.len() < 2 || !params.iter().any(dead) {
        return params;
    }
    let mut live: Vec<f32> = params
        .iter()
        .filter(|p| !dead(p))
        .map(|p| p.scale)
        .collect();
    live.sort_by(f32::total_cmp);
    let median = live[live.len() / 2];
    for p in params.iter_mut().filter(|p| p.scale < largest * 1e-9) {
        *p = QuantParams {
            scale: median,
            zero_point: 0,
        };
    }
    params
}

/// Quantizes `values` in place to what the runtime computes (codes dequantized) and returns
/// the codes.
///
/// `gram` (the layer's calibration inputs) serves output-MSE clipping and error
/// compensation, as `s` asks; a compensation that cannot run says why in the `Err` of the
/// second value.
pub(super) fn quantize_weight(
    values: &mut [f32],
    dims: &[i64],
    axis: Option<usize>,
    bits: u8,
    s: LayerSettings,
    gram: Option<&InputGram>,
) -> (QuantizedWeight, std::result::Result<(), String>) {
    let compensation_gram = gram.filter(|_| s.error_compensation);
    let gram = gram.filter(|_| s.clipping == crate::compress::plan::Clipping::OutputMse);
    let channels = axis.map_or(1, |a| dims[a].max(1) as usize);
    let inner = axis.map_or(values.len(), |a| {
        dims[a + 1..]
            .iter()
            .map(|&d| d.max(0) as usize)
            .product::<usize>()
            .max(1)
    });
    let params: Vec<QuantParams> = if let Some(gram) = gram {
        // Output-MSE: one search per clipping group (an output row, or the whole tensor).
        let outputs = gram.geometry.outputs;
        let weights: &[f32] = values;
        if channels == outputs && axis.is_some() {
            (0..outputs)
                .into_par_iter()
                .map(|o| output_mse_scale(gram, weights, &[o], bits, s.symmetric))
                .collect()
        } else {
            let rows: Vec<usize> = (0..outputs).collect();
            vec![output_mse_scale(gram, weights, &rows, bits, s.symmetric); channels]
        }
    } else if s.clipping == crate::compress::plan::Clipping::MinMax {
        // Min-max needs no per-channel copies: one pass keeps every channel's range.
        let mut ranges = vec![(0f32, 0f32); channels];
        let widen = |r: &mut (f32, f32), v: f32| {
            if v.is_finite() {
                r.0 = r.0.min(v);
                r.1 = r.1.max(v);
            }
        };
        if inner == 1 && channels > 1 {
            // Channels along the last axis: walk rows, the channel is the column.
            for row in values.chunks(channels) {
                for (r, &v) in ranges.iter_mut().zip(row) {
                    widen(r, v);
                }
            }
        } else {
            for_each_run(values, dims, axis, |g, run| {
                for &v in run.iter() {
                    widen(&mut ranges[g], v);
                }
            });
        }
        ranges
            .iter()
            .map(|&(lo, hi)| QuantParams::for_range(lo, hi, bits, s.symmetric))
            .collect()
    } else {
        let mut per_channel: Vec<Vec<f32>> = vec![Vec::new(); channels];
        for_each_run(values, dims, axis, |g, run| {
            per_channel[g].extend_from_slice(run)
        });
        per_channel
            .par_iter()
            .map(|g| {
                let (lo, hi) = clip_range(g, s.clipping, bits, s.symmetric);
                QuantParams::for_range(lo, hi, bits, s.symmetric)
            })
            .collect()
    };
    let params = revive_dead_channels(params);
    let compensated = match compensation_gram {
        Some(g) => crate::compress::compensate::compensate(
            values,
            g,
            &params,
            bits,
            s.symmetric,
            s.prune_ratio > 0.0,
        ),
        None if s.error_compensation => Err(
            "error compensation needs the calibration inputs of a Conv/Gemm/MatMul layer"
                .to_owned(),
        ),
        None => Ok(()),
    };
    let mut codes = vec![0i8; values.len()];
    let code = |p: &QuantParams, v: &mut f32, c: &mut i8| {
        let q = p.quantize(*v, bits, s.symmetric);
        *c = q as i8;
        *v = p.dequantize(q);
    };
    if inner == 1 && channels > 1 {
        // Channels along the last axis: every element of a row has its own parameters. Kept
        // as separate arrays of scales and zero points (not the structs) so the row loop
        // vectorizes; same arithmetic as `QuantParams::quantize` / `dequantize`.
        let scales: Vec<f32> = params.iter().map(|p| p.scale).collect();
        let zeros: Vec<f32> = params.iter().map(|p| p.zero_point as f32).collect();
        let (qmin, qmax) = crate::compress::quant::code_range(bits, s.symmetric);
        let (qmin, qmax) = (qmin as f32, qmax as f32);
        for (row, row_codes) in values.chunks_mut(channels).zip(codes.chunks_mut(channels)) {
            for (((v, c), &scale), &zero) in row.iter_mut().zip(row_codes).zip(&scales).zip(&zeros)
            {
                let y = (*v / scale + zero).clamp(qmin, qmax);
                let q = (y + 0.5f32.copysign(y)) as i32;
                *c = q as i8;
                *v = (q as f32 - zero) * scale;
            }
        }
    } else {
        let mut group = 0;
        for (run, run_codes) in values.chunks_mut(inner).zip(codes.chunks_mut(inner)) {
            let p = &params[group];
            for (v, c) in run.iter_mut().zip(run_codes) {
                code(p, v, c);
            }
            group += 1;
            if group == channels {
                group = 0;
            }
        }
    }
    (
        QuantizedWeight {
            bits,
            symmetric: s.symmetric,
            params,
            axis,
            codes,
        },
        compensated,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dead_channels_take_the_median_scale_and_become_exact_zeros() {
        // [3 channels, 2]: a normal channel, a dead one (|w| ~1e-17), another normal one.
        let mut values = vec![0.5f32, -0.25, 1e-17, -2e-17, 0.8, 0.1];
        let (q, _) = quantize_weight(
            &mut values,
            &[3, 2],
            Some(0),
            8,
            LayerSettings::default(),
            None,
        );
        let scales: Vec<f32> = q.params.iter().map(|p| p.scale).collect();
        assert!(scales[1] >= scales[0].min(scales[2]), "{scales:?}");
        assert_eq!(&values[2..4], &[0.0, 0.0]);
        assert_eq!(&q.codes[2..4], &[0, 0]);
        // Live channels are untouched by it.
        assert!((values[0] - 0.5).abs() < 0.5 / 127.0);
    }

    #[test]
    fn the_last_axis_fast_path_matches_the_per_value_arithmetic() {
        // [5 rows, 7 channels], channels along the last axis (a MatMul weight).
        let original: Vec<f32> = (0..35)
            .map(|i| ((i * 37 % 29) as f32 - 14.0) * 0.037 + (i % 7) as f32 * 0.2)
            .collect();
        for symmetric in [true, false] {
            for bits in [8u8, 4, 2] {
                let settings = LayerSettings {
                    symmetric,
                    ..LayerSettings::default()
                };
                let mut values = original.clone();
                let (q, _) = quantize_weight(&mut values, &[5, 7], Some(1), bits, settings, None);
                assert_eq!(q.params.len(), 7);
                for (i, &v) in original.iter().enumerate() {
                    let p = &q.params[i % 7];
                    let code = p.quantize(v, bits, symmetric);
                    assert_eq!(i32::from(q.codes[i]), code, "value {i}, {bits} bits");
                    assert_eq!(values[i], p.dequantize(code), "value {i}, {bits} bits");
                }
            }
        }
    }
}
