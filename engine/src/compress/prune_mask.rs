//! Data-aware choice of the weights to prune in a layer (used by the reconstruction pass):
//! Wanda (`|w|·‖x‖`) and Optimal Brain Surgeon (OBS / OBC) saliency with the input Gram
//! matrix `H = XᵀX` of the layer's calibration inputs.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rayon::prelude::*;

use crate::compress::layer_inputs::LayerGeometry;
use crate::error::Result;

/// Rows with more inputs than this use the Wanda mask instead of OBS (OBS costs `O(K³)` per
/// output row).
pub const OBS_MAX_INPUTS: usize = 256;

/// The Wanda mask (true = kept): the `⌊ratio·n⌋` weights of smallest `|w|·‖x‖` are pruned,
/// ranked over the whole tensor.
pub fn activation_mask(g: &LayerGeometry, h: &[Vec<f64>], w: &[f32], ratio: f32) -> Vec<bool> {
    let mut scores = vec![0f32; w.len()];
    for o in 0..g.outputs {
        let gram = &h[g.group_of(o)];
        for k in 0..g.inputs_per_row {
            let idx = g.index(o, k);
            let norm = gram[k * g.inputs_per_row + k].max(0.0).sqrt() as f32;
            if let (Some(s), Some(&wv)) = (scores.get_mut(idx), w.get(idx)) {
                // Never exactly zero, so the count pruned below is exact.
                *s = (wv.abs() * norm).max(f32::MIN_POSITIVE);
            }
        }
    }
    let count = (f64::from(ratio) * w.len() as f64).floor() as usize;
    crate::compress::quant::prune_smallest(&mut scores, count);
    scores.iter().map(|&s| s != 0.0).collect()
}

/// Per output row: the OBS removal order and the cumulative output error (relative to the
/// row's output energy) after each removal, the remaining weights re-solved each time.
struct RowPath {
    order: Vec<usize>,
    cost: Vec<f64>,
}

fn row_path(h: &[f64], w0: &[f64], dampening: f64) -> Option<RowPath> {
    let k = w0.len();
    let mean_diag = (0..k).map(|j| h[j * k + j]).sum::<f64>() / k.max(1) as f64;
    let reference: f64 = crate::compress::layer_inputs::quadratic(h, w0);
    if mean_diag <= 0.0 || reference <= 0.0 {
        return None;
    }
    let mut inv = inverse_damped(h, k, dampening * mean_diag)?;
    let mut w = w0.to_vec();
    let mut alive = vec![true; k];
    let (mut order, mut cost) = (Vec::with_capacity(k), Vec::with_capacity(k));
    let mut total = 0.0;
    for _ in 0..k {
        let j = (0..k).filter(|&j| alive[j]).min_by(|&a, &b| {
            let s = |j: usize| w[j] * w[j] / inv[j * k + j].max(f64::MIN_POSITIVE);
            s(a).total_cmp(&s(b))
        })?;
        let d = inv[j * k + j].max(f64::MIN_POSITIVE);
        total += w[j] * w[j] / d;
        let factor = w[j] / d;
        let col: Vec<f64> = (0..k).map(|i| inv[i * k + j]).collect();
        for i in 0..k {
            if alive[i] {
                w[i] -= factor * col[i];
            }
        }
        w[j] = 0.0;
        alive[j] = false;
        for a in 0..k {
            if col[a] == 0.0 {
                continue;
            }
            for b in 0..k {
                inv[a * k + b] -= col[a] * col[b] / d;
            }
        }
        order.push(j);
        cost.push(total / reference);
    }
    Some(RowPath { order, cost })
}

/// `(A + λI)⁻¹` by Gauss-Jordan with partial pivoting, `None` when singular.
fn inverse_damped(a: &[f64], n: usize, lambda: f64) -> Option<Vec<f64>> {
    let mut m: Vec<f64> = a.to_vec();
    for i in 0..n {
        m[i * n + i] += lambda;
    }
    let mut inv = vec![0f64; n * n];
    for i in 0..n {
        inv[i * n + i] = 1.0;
    }
    for c in 0..n {
        let p = (c..n).max_by(|&x, &y| m[x * n + c].abs().total_cmp(&m[y * n + c].abs()))?;
        let pivot = m[p * n + c];
        if pivot.abs() < 1e-300 || !pivot.is_finite() {
            return None;
        }
        if p != c {
            for j in 0..n {
                m.swap(p * n + j, c * n + j);
                inv.swap(p * n + j, c * n + j);
            }
        }
        for j in 0..n {
            m[c * n + j] /= pivot;
            inv[c * n + j] /= pivot;
        }
        for r in 0..n {
            let f = m[r * n + c];
            if r == c || f == 0.0 {
                continue;
            }
            for j in 0..n {
                m[r * n + j] -= f * m[c * n + j];
                inv[r * n + j] -= f * inv[c * n + j];
            }
        }
    }
    Some(inv)
}

#[derive(PartialEq)]
struct Next(f64, usize);
impl Eq for Next {}
impl PartialOrd for Next {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Next {
    // Smallest marginal cost first in a max-heap.
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.total_cmp(&self.0).then(other.1.cmp(&self.1))
    }
}

/// The OBS mask (true = kept): per output row the greedy OBS removal path on `H` (each
/// removal the weight of least added output error, the rest re-solved), then the
/// `⌊ratio·n⌋` removals shared among the rows by least added relative output error. `None`
/// when a row has more than [`OBS_MAX_INPUTS`] inputs.
pub fn obs_mask(
    g: &LayerGeometry,
    h: &[Vec<f64>],
    w: &[f32],
    ratio: f32,
    dampening: f64,
) -> Result<Option<Vec<bool>>> {
    if g.inputs_per_row > OBS_MAX_INPUTS {
        return Ok(None);
    }
    let paths: Vec<Option<RowPath>> = (0..g.outputs)
        .into_par_iter()
        .map(|o| row_path(&h[g.group_of(o)], &g.row(w, o), dampening))
        .collect();
    let k = g.inputs_per_row;
    let count = (f64::from(ratio) * w.len() as f64).floor() as usize;
    // Rows without a path (dead inputs, zero weights) are pruned first, by magnitude order.
    let mut taken = vec![0usize; g.outputs];
    let mut heap = BinaryHeap::new();
    for (o, p) in paths.iter().enumerate() {
        let first = p
            .as_ref()
            .map_or(0.0, |p| p.cost.first().copied().unwrap_or(0.0));
        heap.push(Next(first, o));
    }
    let mut removed = 0;
    while removed < count {
        let Some(Next(_, o)) = heap.pop() else { break };
        taken[o] += 1;
        removed += 1;
        if taken[o] < k {
            let next = paths[o].as_ref().map_or(0.0, |p| {
                p.cost.get(taken[o]).copied().unwrap_or(f64::INFINITY)
                    - p.cost.get(taken[o] - 1).copied().unwrap_or(0.0)
            });
            heap.push(Next(next, o));
        }
    }
    let mut keep = vec![true; w.len()];
    for (o, p) in paths.iter().enumerate() {
        let order: Vec<usize> = match p {
            Some(p) => p.order.clone(),
            None => {
                let row = g.row(w, o);
                let mut by_size: Vec<usize> = (0..k).collect();
                by_size.sort_by(|&a, &b| row[a].abs().total_cmp(&row[b].abs()));
                by_size
            }
        };
        for &j in order.iter().take(taken[o]) {
            if let Some(slot) = keep.get_mut(g.index(o, j)) {
                *slot = false;
            }
        }
    }
    Ok(Some(keep))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn inverse_inverts() {
        let a = [4.0, 1.0, 1.0, 3.0];
        let inv = inverse_damped(&a, 2, 0.0).unwrap();
        let p00 = a[0] * inv[0] + a[1] * inv[2];
        let p01 = a[0] * inv[1] + a[1] * inv[3];
        assert!((p00 - 1.0).abs() < 1e-12 && p01.abs() < 1e-12);
    }

    #[test]
    fn obs_prefers_the_weight_whose_loss_others_can_absorb() {
        // Inputs 0 and 1 are nearly identical, input 2 independent: with equal weights,
        // removing 0 or 1 costs little (the other takes over); removing 2 costs its output.
        let h = [1.0, 0.99, 0.0, 0.99, 1.0, 0.0, 0.0, 0.0, 1.0];
        let path = row_path(&h, &[1.0, 1.0, 0.9], 1e-6).unwrap();
        assert_ne!(path.order[0], 2, "{:?}", path.order);
        assert!(path.cost.windows(2).all(|c| c[1] >= c[0] - 1e-12));
    }
}
