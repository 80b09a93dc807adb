//! Quantization with error compensation (GPTQ, Frantar et al. 2023; OBQ before it): each
//! output row's weights are rounded one input at a time, and the rounding error of each is
//! spread over the inputs not yet rounded so that the layer's OUTPUT on the calibration data
//! moves as little as possible — `min ‖X w − X q‖²` with `H = XᵀX`, using the upper Cholesky
//! factor `U` of `(H + λI)⁻¹`: `e = (w_k − q_k) / U_kk`, `w_j −= e · U_kj` for `j > k`.
//!
//! The quantization grid (the scale of each row) is chosen first, by the layer's clipping;
//! compensation only decides which grid point each weight takes. Pruned weights stay zero.

use rayon::prelude::*;

use crate::compress::layer_inputs::{InputGram, cholesky_lower};
use crate::compress::quant::QuantParams;

/// Inputs per row above which compensation is skipped (its setup is cubic in them).
pub const MAX_INPUTS_PER_ROW: usize = 2048;

/// Dampening added to `H`'s diagonal, as a fraction of its mean (GPTQ's `percdamp`).
const DAMPENING: f64 = 0.01;

/// Rounds `values` (the layer's weight, laid out as `gram`'s geometry says) onto the grids of
/// `params` (one per output row, or one for all) with error compensation, in place: every
/// value ends exactly on its grid. `keep_zeros`: weights that are exactly zero (pruned) stay
/// zero. `Err` says why nothing was done.
pub fn compensate(
    values: &mut [f32],
    gram: &InputGram,
    params: &[QuantParams],
    bits: u8,
    symmetric: bool,
    keep_zeros: bool,
) -> std::result::Result<(), String> {
    let g = &gram.geometry;
    let n = g.inputs_per_row;
    if n > MAX_INPUTS_PER_ROW {
        return Err(format!(
            "{n} inputs per output row (more than {MAX_INPUTS_PER_ROW}: too slow to set up)"
        ));
    }
    if values.len() != g.outputs * n {
        return Err("the weight does not match the layer's input geometry".to_owned());
    }
    let param_of = |o: usize| -> Option<QuantParams> {
        match params.len() {
            1 => Some(params[0]),
            len if len == g.outputs => Some(params[o]),
            _ => None,
        }
    };
    if (0..g.outputs).any(|o| param_of(o).is_none()) {
        return Err("the scales do not run along the output rows".to_owned());
    }
    let factors: Vec<Vec<f64>> = gram
        .gram
        .par_iter()
        .map(|h| inverse_cholesky_upper(h, n))
        .collect::<Option<_>>()
        .ok_or("the inputs' Gram matrix is not positive definite even with dampening")?;
    let rows: Vec<(usize, Vec<f32>)> = (0..g.outputs)
        .into_par_iter()
        .map(|o| {
            let u = &factors[g.group_of(o).min(factors.len() - 1)];
            let p = param_of(o).unwrap_or(params[0]);
            let original = g.row(values, o);
            let mut w = original.clone();
            let mut out = vec![0f32; n];
            for k in 0..n {
                let q = if keep_zeros && original[k] == 0.0 {
                    0.0
                } else {
                    p.dequantize(p.quantize(w[k] as f32, bits, symmetric))
                };
                out[k] = q;
                let e = (w[k] - f64::from(q)) / u[k * n + k];
                for j in k + 1..n {
                    w[j] -= e * u[k * n + j];
                }
            }
            (o, out)
        })
        .collect();
    for (o, row) in rows {
        for (k, v) in row.into_iter().enumerate() {
            values[g.index(o, k)] = v;
        }
    }
    Ok(())
}

/// `U` upper triangular (row major) with `UᵀU = (H + λI)⁻¹`, `λ` = [`DAMPENING`] × the mean
/// of `H`'s diagonal (raised tenfold while `H + λI` is not positive definite).
fn inverse_cholesky_upper(h: &[f64], n: usize) -> Option<Vec<f64>> {
    let mean = (0..n).map(|i| h[i * n + i]).sum::<f64>() / n.max(1) as f64;
    let mut damp = DAMPENING * mean.max(f64::MIN_POSITIVE);
    let l = loop {
        if let Some(l) = cholesky_lower(h, n, damp) {
            break l;
        }
        damp *= 10.0;
        if !damp.is_finite() || damp > mean.max(1.0) * 1e6 {
            return None;
        }
    };
    // M = L⁻¹ (lower), by forward substitution, column by column of the identity.
    let mut m = vec![0f64; n * n];
    for c in 0..n {
        for i in c..n {
            let s: f64 = (c..i).map(|k| l[i * n + k] * m[k * n + c]).sum();
            let rhs = if i == c { 1.0 } else { 0.0 };
            m[i * n + c] = (rhs - s) / l[i * n + i];
        }
    }
    // H⁻¹ = Mᵀ M.
    let mut inv = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (i.max(j)..n).map(|k| m[k * n + i] * m[k * n + j]).sum();
            inv[i * n + j] = s;
            inv[j * n + i] = s;
        }
    }
    // H⁻¹ = L₂ L₂ᵀ; U = L₂ᵀ.
    let l2 = cholesky_lower(&inv, n, 0.0)?;
    let mut u = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            u[j * n + i] = l2[i * n + j];
        }
    }
    Some(u)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::compress::layer_inputs::{LayerGeometry, LayerLayout};

    /// A dense layer with `outputs` rows of `n` inputs, and its Gram over `xs`.
    fn gram_of(xs: &[Vec<f32>], outputs: usize) -> InputGram {
        let n = xs[0].len();
        let mut gram = InputGram::new(LayerGeometry {
            input: "x".to_owned(),
            layout: LayerLayout::Dense { transposed: true },
            outputs,
            inputs_per_row: n,
            groups: 1,
        });
        for x in xs {
            gram.add(x);
        }
        gram
    }

    fn output_error(xs: &[Vec<f32>], w: &[f32], q: &[f32], outputs: usize) -> f64 {
        let n = xs[0].len();
        let mut e = 0.0;
        for x in xs {
            for o in 0..outputs {
                let d: f64 = (0..n)
                    .map(|k| f64::from(x[k]) * f64::from(w[o * n + k] - q[o * n + k]))
                    .sum();
                e += d * d;
            }
        }
        e
    }

    #[test]
    fn compensation_lowers_the_output_error_of_correlated_inputs_and_stays_on_the_grid() {
        // Correlated inputs (each the previous one plus noise): where compensation matters.
        let mut seed = 7u64;
        let mut rand = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let (n, outputs) = (24, 6);
        let xs: Vec<Vec<f32>> = (0..200)
            .map(|_| {
                let mut x = vec![rand()];
                for k in 1..n {
                    let prev = x[k - 1];
                    x.push(0.9 * prev + 0.3 * rand());
                }
                x
            })
            .collect();
        let w: Vec<f32> = (0..n * outputs).map(|_| rand()).collect();
        let gram = gram_of(&xs, outputs);
        let params: Vec<QuantParams> = (0..outputs)
            .map(|o| {
                let row = &w[o * n..(o + 1) * n];
                let hi = row.iter().fold(0f32, |a, v| a.max(v.abs()));
                QuantParams::for_range(-hi, hi, 3, true)
            })
            .collect();
        let rounded: Vec<f32> = w
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let p = params[i / n];
                p.dequantize(p.quantize(v, 3, true))
            })
            .collect();
        let mut compensated = w.clone();
        compensate(&mut compensated, &gram, &params, 3, true, false).unwrap();
        let (plain, gptq) = (
            output_error(&xs, &w, &rounded, outputs),
            output_error(&xs, &w, &compensated, outputs),
        );
        assert!(gptq < 0.5 * plain, "compensated {gptq} vs rounded {plain}");
        for (i, &v) in compensated.iter().enumerate() {
            let p = params[i / n];
            assert_eq!(
                p.dequantize(p.quantize(v, 3, true)),
                v,
                "value {i} is on its grid"
            );
        }
        // Pruned weights stay zero.
        let mut pruned = w.clone();
        pruned[3] = 0.0;
        pruned[n + 5] = 0.0;
        compensate(&mut pruned, &gram, &params, 3, true, true).unwrap();
        assert_eq!((pruned[3], pruned[n + 5]), (0.0, 0.0));
    }
}
