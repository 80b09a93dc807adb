//! A compressible layer seen as a matrix product `Y = X W` over its calibration inputs: the
//! layout of its weight as output rows of `K` inputs (im2col for Conv, respecting groups,
//! strides, pads and dilations), and the Gram matrices `XᵀX` of its inputs that data-aware
//! pruning reconstruction and output-MSE clipping need.

use crate::compress::compressor::CompressibleLayer;
use crate::compress::quant::QuantParams;
use crate::error::{Error, Result};
use crate::model::load::LoadedModel;

/// How a layer's weight maps onto output rows of `inputs_per_row` values.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerLayout {
    /// 2-D Conv with weight `[O, C/groups, kh, kw]`: row `o` is contiguous.
    Conv2d {
        groups: usize,
        /// Input channels and spatial size of one sample, `[C, H, W]`.
        input_chw: [usize; 3],
        kernel_hw: [usize; 2],
        strides_hw: [usize; 2],
        /// Padding at the start of H and W.
        pads_begin_hw: [usize; 2],
        dilations_hw: [usize; 2],
        output_hw: [usize; 2],
    },
    /// Gemm / MatMul: input rows of `K` values. `transposed`: weight `[O, K]` (Gemm
    /// `transB=1`), else `[K, O]`.
    Dense { transposed: bool },
}

/// A layer's weight geometry and the tensor that feeds it.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerGeometry {
    /// The layer's input activation tensor.
    pub input: String,
    pub layout: LayerLayout,
    pub outputs: usize,
    /// Weights per output row (`C/groups·kh·kw` for Conv, `K` for Gemm/MatMul).
    pub inputs_per_row: usize,
    /// Groups of output rows that see the same inputs (Conv `group`; 1 otherwise).
    pub groups: usize,
}

impl LayerGeometry {
    /// The flat index in the weight of row `o`, input `k`.
    pub fn index(&self, o: usize, k: usize) -> usize {
        match self.layout {
            LayerLayout::Conv2d { .. } | LayerLayout::Dense { transposed: true } => {
                o * self.inputs_per_row + k
            }
            LayerLayout::Dense { transposed: false } => k * self.outputs + o,
        }
    }

    /// The input group of output row `o`.
    pub fn group_of(&self, o: usize) -> usize {
        o / (self.outputs / self.groups).max(1)
    }

    /// Row `o` of `weights`, as f64.
    pub fn row(&self, weights: &[f32], o: usize) -> Vec<f64> {
        (0..self.inputs_per_row)
            .map(|k| f64::from(weights.get(self.index(o, k)).copied().unwrap_or(0.0)))
            .collect()
    }

    /// Calls `f(group, patch)` for every input row (im2col patch for Conv) of one sample's
    /// input `x`.
    pub fn for_each_patch(&self, x: &[f32], mut f: impl FnMut(usize, &[f64])) {
        let k = self.inputs_per_row;
        let mut patch = vec![0f64; k];
        match &self.layout {
            LayerLayout::Dense { .. } => {
                for row in x.chunks_exact(k) {
                    patch
                        .iter_mut()
                        .zip(row)
                        .for_each(|(p, &v)| *p = f64::from(v));
                    f(0, &patch);
                }
            }
            LayerLayout::Conv2d {
                groups,
                input_chw: [c, h, w],
                kernel_hw: [kh, kw],
                strides_hw: [sh, sw],
                pads_begin_hw: [ph, pw],
                dilations_hw: [dh, dw],
                output_hw: [oh, ow],
            } => {
                let cg = c / groups;
                if x.len() < c * h * w {
                    return;
                }
                for g in 0..*groups {
                    for y in 0..*oh {
                        for xo in 0..*ow {
                            let mut i = 0;
                            for ci in 0..cg {
                                let plane = &x[(g * cg + ci) * h * w..][..h * w];
                                for ky in 0..*kh {
                                    let iy = (y * sh + ky * dh) as isize - *ph as isize;
                                    for kx in 0..*kw {
                                        let ix = (xo * sw + kx * dw) as isize - *pw as isize;
                                        patch[i] = if iy >= 0
                                            && ix >= 0
                                            && (iy as usize) < *h
                                            && (ix as usize) < *w
                                        {
                                            f64::from(plane[iy as usize * w + ix as usize])
                                        } else {
                                            0.0
                                        };
                                        i += 1;
                                    }
                                }
                            }
                            f(g, &patch);
                        }
                    }
                }
            }
        }
    }
}

fn node_proto<'m>(
    model: &'m LoadedModel,
    name: &str,
) -> Option<&'m crate::model::proto::NodeProto> {
    model
        .proto
        .graph
        .as_ref()?
        .node
        .iter()
        .find(|n| n.name() == name)
}

/// The geometry of `layer`, or why data-aware methods do not apply to it.
pub fn geometry(
    model: &LoadedModel,
    layer: &CompressibleLayer,
) -> std::result::Result<LayerGeometry, String> {
    let node = node_proto(model, &layer.name).ok_or("node not found")?;
    let input = node.input.first().cloned().ok_or("no input")?;
    if node.input.get(1) != Some(&layer.weight) {
        return Err("the weight is not the second input".to_owned());
    }
    let int = |name: &str, default: i64| {
        node.attribute
            .iter()
            .find(|a| a.name() == name)
            .map_or(default, |a| a.i())
    };
    let ints = |name: &str, default: Vec<i64>| {
        node.attribute
            .iter()
            .find(|a| a.name() == name)
            .map_or(default, |a| a.ints.clone())
    };
    let dims: Vec<usize> = layer.dims.iter().map(|&d| d.max(0) as usize).collect();
    match layer.op.as_str() {
        "Conv" => {
            let [o, cg, kh, kw] = dims[..] else {
                return Err("only 2-D Conv is supported".to_owned());
            };
            let auto_pad = node
                .attribute
                .iter()
                .find(|a| a.name() == "auto_pad")
                .map(|a| String::from_utf8_lossy(a.s()).into_owned())
                .unwrap_or_default();
            if !(auto_pad.is_empty() || auto_pad == "NOTSET" || auto_pad == "VALID") {
                return Err(format!("auto_pad {auto_pad} is not supported"));
            }
            let groups = int("group", 1).max(1) as usize;
            let shape = model
                .shapes
                .get(&input)
                .and_then(|v| v.shape.clone())
                .ok_or("the input shape is unknown")?;
            let known: Option<Vec<usize>> = shape
                .iter()
                .map(|d| d.known().filter(|&v| v > 0).map(|v| v as usize))
                .collect();
            let Some(&[_, c, h, w]) = known.as_deref() else {
                return Err("the input shape is not [N, C, H, W] with known dims".to_owned());
            };
            if c != cg * groups || o % groups != 0 {
                return Err("channels do not match the groups".to_owned());
            }
            let strides = ints("strides", vec![1, 1]);
            let pads = ints("pads", vec![0, 0, 0, 0]);
            let dilations = ints("dilations", vec![1, 1]);
            let (Some(&[sh, sw]), Some(&[ph, pw, ph2, pw2]), Some(&[dh, dw])) =
                (strides.get(..2), pads.get(..4), dilations.get(..2))
            else {
                return Err("unexpected strides, pads or dilations".to_owned());
            };
            let u = |v: i64| v.max(0) as usize;
            let out = |size: usize, k: usize, s: usize, p0: usize, p1: usize, d: usize| {
                let span = d * (k - 1) + 1;
                (size + p0 + p1).checked_sub(span).map(|v| v / s.max(1) + 1)
            };
            let (Some(oh), Some(ow)) = (
                out(h, kh, u(sh), u(ph), u(ph2), u(dh)),
                out(w, kw, u(sw), u(pw), u(pw2), u(dw)),
            ) else {
                return Err("the kernel is larger than the input".to_owned());
            };
            Ok(LayerGeometry {
                input,
                layout: LayerLayout::Conv2d {
                    groups,
                    input_chw: [c, h, w],
                    kernel_hw: [kh, kw],
                    strides_hw: [u(sh).max(1), u(sw).max(1)],
                    pads_begin_hw: [u(ph), u(pw)],
                    dilations_hw: [u(dh).max(1), u(dw).max(1)],
                    output_hw: [oh, ow],
                },
                outputs: o,
                inputs_per_row: cg * kh * kw,
                groups,
            })
        }
        "Gemm" | "MatMul" => {
            let [a, b] = dims[..] else {
                return Err("only 2-D weights are supported".to_owned());
            };
            if layer.op == "Gemm" && int("transA", 0) != 0 {
                return Err("Gemm with transA is not supported".to_owned());
            }
            let transposed = layer.op == "Gemm" && int("transB", 0) != 0;
            let (outputs, k) = if transposed { (a, b) } else { (b, a) };
            Ok(LayerGeometry {
                input,
                layout: LayerLayout::Dense { transposed },
                outputs,
                inputs_per_row: k,
                groups: 1,
            })
        }
        op => Err(format!("{op} is not supported")),
    }
}

/// Second moments of a layer's inputs over calibration data, per group: `XᵀX` (K×K, row
/// major) summed over every input row (im2col patch) of every sample.
#[derive(Clone, Debug, PartialEq)]
pub struct InputGram {
    pub geometry: LayerGeometry,
    /// One `K×K` matrix per group.
    pub gram: Vec<Vec<f64>>,
    /// Input rows accumulated per group.
    pub rows: u64,
}

impl InputGram {
    /// An empty accumulator for `geometry`.
    pub fn new(geometry: LayerGeometry) -> Self {
        let k = geometry.inputs_per_row;
        Self {
            gram: vec![vec![0.0; k * k]; geometry.groups],
            geometry,
            rows: 0,
        }
    }

    /// Adds one sample's input `x`.
    pub fn add(&mut self, x: &[f32]) {
        let k = self.geometry.inputs_per_row;
        let gram = &mut self.gram;
        let mut rows = 0u64;
        self.geometry.for_each_patch(x, |g, p| {
            rank_one_update(&mut gram[g], p, p, k);
            if g == 0 {
                rows += 1;
            }
        });
        self.rows += rows;
    }

    /// `dᵀ H d` for output row `o` (the squared output error a weight change `d` causes,
    /// summed over the calibration inputs).
    pub fn quadratic(&self, o: usize, d: &[f64]) -> f64 {
        quadratic(&self.gram[self.geometry.group_of(o)], d)
    }
}

/// `m += a bᵀ` for `k×k` row-major `m`.
pub fn rank_one_update(m: &mut [f64], a: &[f64], b: &[f64], k: usize) {
    for (i, &ai) in a.iter().enumerate() {
        if ai == 0.0 {
            continue;
        }
        let row = &mut m[i * k..(i + 1) * k];
        row.iter_mut().zip(b).for_each(|(r, &bj)| *r += ai * bj);
    }
}

/// `dᵀ M d` for square row-major `m`.
pub fn quadratic(m: &[f64], d: &[f64]) -> f64 {
    let k = d.len();
    d.iter()
        .enumerate()
        .map(|(i, &di)| {
            if di == 0.0 {
                return 0.0;
            }
            di * m[i * k..(i + 1) * k]
                .iter()
                .zip(d)
                .map(|(a, b)| a * b)
                .sum::<f64>()
        })
        .sum()
}

/// Solves `(A + λI) x = b` for symmetric positive semi-definite `a` (`n×n`, row major) by
/// Cholesky, raising `λ` tenfold (up to four times) when `A + λI` is not positive definite.
pub fn solve_damped(a: &[f64], b: &[f64], lambda: f64) -> Result<Vec<f64>> {
    let n = b.len();
    let mut damp = lambda.max(f64::MIN_POSITIVE);
    for _ in 0..5 {
        if let Some(l) = cholesky_lower(a, n, damp) {
            let mut y = vec![0f64; n];
            for i in 0..n {
                let s: f64 = (0..i).map(|j| l[i * n + j] * y[j]).sum();
                y[i] = (b[i] - s) / l[i * n + i];
            }
            let mut x = vec![0f64; n];
            for i in (0..n).rev() {
                let s: f64 = (i + 1..n).map(|j| l[j * n + i] * x[j]).sum();
                x[i] = (y[i] - s) / l[i * n + i];
            }
            if x.iter().all(|v| v.is_finite()) {
                return Ok(x);
            }
        }
        damp *= 10.0;
    }
    Err(Error::InvalidArgument {
        what: "calibration statistics",
        reason: "the input Gram matrix is not positive definite even with dampening".to_owned(),
    })
}

/// The lower Cholesky factor `L` (row major) of `A + damp·I`; `None` when it is not positive
/// definite.
pub(crate) fn cholesky_lower(a: &[f64], n: usize, damp: f64) -> Option<Vec<f64>> {
    let mut l = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            if i == j {
                let d = a[i * n + i] + damp - s;
                if d <= 0.0 || !d.is_finite() {
                    return None;
                }
                l[i * n + i] = d.sqrt();
            } else {
                l[i * n + j] = (a[i * n + j] - s) / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// Candidate clipping fractions of the full range searched by [`output_mse_scale`].
const OUTPUT_MSE_STEPS: usize = 71;

/// The quantization parameters of one clipping group (output rows `rows`, all sharing one
/// scale) minimizing the summed output error `Σ_o dₒᵀ H dₒ`, `d = q(w) − w`, over clipping
/// fractions 1.00, 0.99, … 0.30 of the full (min-max) range.
pub fn output_mse_scale(
    gram: &InputGram,
    weights: &[f32],
    rows: &[usize],
    bits: u8,
    symmetric: bool,
) -> QuantParams {
    let g = &gram.geometry;
    let row_values: Vec<Vec<f64>> = rows.iter().map(|&o| g.row(weights, o)).collect();
    let (lo, hi) = row_values
        .iter()
        .flatten()
        .fold((0f64, 0f64), |(l, h), &v| (l.min(v), h.max(v)));
    let (lo, hi) = (lo as f32, hi as f32);
    let mut best = (
        f64::INFINITY,
        QuantParams::for_range(lo, hi, bits, symmetric),
    );
    for step in 0..OUTPUT_MSE_STEPS {
        let alpha = 1.0 - 0.01 * step as f32;
        let params = QuantParams::for_range(lo * alpha, hi * alpha, bits, symmetric);
        let error: f64 = rows
            .iter()
            .zip(&row_values)
            .map(|(&o, w)| {
                let d: Vec<f64> = w
                    .iter()
                    .map(|&v| {
                        let q = params.dequantize(params.quantize(v as f32, bits, symmetric));
                        f64::from(q) - v
                    })
                    .collect();
                gram.quadratic(o, &d)
            })
            .sum();
        if error < best.0 {
            best = (error, params);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn damped_cholesky_solves_a_small_system() {
        // A = [[4, 2], [2, 3]], b = [2, 1] → x = [0.5, 0]
        let x = solve_damped(&[4.0, 2.0, 2.0, 3.0], &[2.0, 1.0], 1e-12).unwrap();
        assert!((x[0] - 0.5).abs() < 1e-9 && x[1].abs() < 1e-9, "{x:?}");
        // Singular A: dampening makes it solvable.
        let x = solve_damped(&[1.0, 1.0, 1.0, 1.0], &[1.0, 1.0], 1e-3).unwrap();
        assert!(x.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn quadratic_form_matches_the_definition() {
        let mut m = vec![0.0; 4];
        rank_one_update(&mut m, &[1.0, 2.0], &[1.0, 2.0], 2);
        assert_eq!(m, vec![1.0, 2.0, 2.0, 4.0]);
        assert_eq!(quadratic(&m, &[1.0, 1.0]), 9.0);
    }
}
