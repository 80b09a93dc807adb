//! Constant tensors and their values: stored tensors, and what the small nodes exporters put
//! in front of weights make of them (`DequantizeLinear` of integer codes, `Cast` from float16
//! or integers, `Mul`/`Sub`/`Add`/`Div` by scales and zero points, `Identity`).

use std::borrow::Cow;
use std::collections::HashMap;

use super::side::{Side, is_constant_node};
use crate::model::dtype::DType;
use crate::model::graph_edit::attr_int;

/// How deep a chain of constant nodes is followed.
const MAX_DEPTH: usize = 16;

/// The ops whose output is constant when their inputs are.
const FOLDABLE: &[&str] = &[
    "DequantizeLinear",
    "Cast",
    "Mul",
    "Sub",
    "Add",
    "Div",
    "Identity",
];

/// A constant tensor's value and how it is stored.
pub(super) struct Resolved<'s> {
    /// `None` when the stored type has no numeric reading.
    pub values: Option<Cow<'s, [f32]>>,
    pub dims: Vec<i64>,
    /// The stored element type (the codes' for a dequantized value).
    pub dtype: DType,
    /// Bytes of every stored tensor the value is made from.
    pub storage_bytes: u64,
    /// Distinct codes used, when the value is dequantized from integer codes.
    pub levels: Option<u64>,
    /// Whether the value is floating point (stored so, or dequantized or cast to float).
    pub float: bool,
}

/// Which tensors of one model are constant, remembered.
pub(super) struct Constness<'s, 'a> {
    side: &'s Side<'a>,
    known: HashMap<&'s str, bool>,
}

impl<'s, 'a> Constness<'s, 'a> {
    pub fn new(side: &'s Side<'a>) -> Self {
        Self {
            side,
            known: HashMap::new(),
        }
    }

    /// Whether main-graph tensor `name` has a value known without running the model.
    pub fn is_constant(&mut self, name: &'s str) -> bool {
        self.check(name, 0)
    }

    /// Whether node `index` only computes constants (a `Constant`, or a foldable op all of
    /// whose inputs are constant).
    pub fn node_is_constant(&mut self, index: usize) -> bool {
        let side = self.side;
        let Some(node) = side.node(index) else {
            return false;
        };
        if is_constant_node(node) {
            return true;
        }
        FOLDABLE.contains(&node.op_type())
            && node.domain().is_empty()
            && side.graph.nodes[index]
                .inputs
                .iter()
                .filter(|i| !i.is_empty())
                .all(|i| self.check(i, 1))
    }

    fn check(&mut self, name: &'s str, depth: usize) -> bool {
        if let Some(&known) = self.known.get(name) {
            return known;
        }
        let side = self.side;
        let constant = if side.stored.contains_key(name) {
            true
        } else if depth >= MAX_DEPTH {
            false
        } else {
            match side.producer(name).and_then(|p| Some((p, side.node(p)?))) {
                Some((_, node)) if is_constant_node(node) => true,
                Some((p, node)) => {
                    FOLDABLE.contains(&node.op_type())
                        && node.domain().is_empty()
                        && side.graph.nodes[p]
                            .inputs
                            .iter()
                            .filter(|i| !i.is_empty())
                            .all(|i| self.check(i, depth + 1))
                }
                None => false,
            }
        };
        self.known.insert(name, constant);
        constant
    }
}

/// The value of constant tensor `name` of `side`, or `None` when it is not a constant this
/// reads (a graph input, an op other than the foldable ones, a chain too deep).
pub(super) fn resolve<'s>(side: &'s Side<'_>, name: &str) -> Option<Resolved<'s>> {
    resolve_at(side, name, 0)
}

fn resolve_at<'s>(side: &'s Side<'_>, name: &str, depth: usize) -> Option<Resolved<'s>> {
    if let Some(s) = side.stored.get(name) {
        return Some(Resolved {
            values: s.values.as_deref().map(Cow::Borrowed),
            dims: s.dims.clone(),
            dtype: s.dtype,
            storage_bytes: s.bytes,
            levels: None,
            float: s.dtype.is_float(),
        });
    }
    if depth >= MAX_DEPTH {
        return None;
    }
    let index = side.producer(name)?;
    let node = side.node(index)?;
    if !node.domain().is_empty() {
        return None;
    }
    let inputs = &side.graph.nodes[index].inputs;
    let input = |k: usize| {
        inputs
            .get(k)
            .filter(|i| !i.is_empty())
            .and_then(|i| resolve_at(side, i, depth + 1))
    };
    match node.op_type() {
        "Identity" => input(0),
        "Cast" => {
            let x = input(0)?;
            let to = DType(i32::try_from(attr_int(node, "to", 1)).ok()?);
            if !to.is_float() {
                return Some(Resolved { float: false, ..x });
            }
            let levels = match (&x.values, x.float) {
                (Some(v), false) => Some(distinct_levels(v)),
                _ => x.levels,
            };
            let values = x.values.map(|v| match to {
                DType::FLOAT16 => {
                    Cow::Owned(v.iter().map(|&f| half::f16::from_f32(f).to_f32()).collect())
                }
                DType::BFLOAT16 => Cow::Owned(
                    v.iter()
                        .map(|&f| half::bf16::from_f32(f).to_f32())
                        .collect(),
                ),
                _ => v,
            });
            Some(Resolved {
                values,
                levels,
                float: true,
                ..x
            })
        }
        "DequantizeLinear" => {
            let x = input(0)?;
            let scale = input(1)?;
            let zero_point = input(2);
            let axis = attr_int(node, "axis", 1);
            let block = attr_int(node, "block_size", 0);
            let values = match (&x.values, &scale.values) {
                (Some(codes), Some(scales)) => {
                    let zps = zero_point.as_ref().and_then(|z| z.values.as_deref());
                    dequantize(codes, &x.dims, scales, &scale.dims, zps, axis, block)
                }
                _ => None,
            };
            Some(Resolved {
                levels: x.values.as_deref().map(distinct_levels),
                values: values.map(Cow::Owned),
                dims: x.dims,
                dtype: x.dtype,
                storage_bytes: x.storage_bytes
                    + scale.storage_bytes
                    + zero_point.as_ref().map_or(0, |z| z.storage_bytes),
                float: true,
            })
        }
        op @ ("Mul" | "Sub" | "Add" | "Div") => {
            let (x, y) = (input(0)?, input(1)?);
            let f: fn(f32, f32) -> f32 = match op {
                "Mul" => |p, q| p * q,
                "Sub" => |p, q| p - q,
                "Add" => |p, q| p + q,
                _ => |p, q| p / q,
            };
            let (values, dims) = match (&x.values, &y.values) {
                (Some(p), Some(q)) => {
                    let (v, d) = broadcast(p, &x.dims, q, &y.dims, f)?;
                    (Some(Cow::Owned(v)), d)
                }
                _ => (None, x.dims.clone()),
            };
            let storage_bytes = x.storage_bytes + y.storage_bytes;
            let float = x.float || y.float;
            // The larger operand is the weight; the other its scale or zero point.
            let main = if element_count(&y.dims) > element_count(&x.dims) {
                y
            } else {
                x
            };
            Some(Resolved {
                values,
                dims,
                storage_bytes,
                float,
                ..main
            })
        }
        _ => None,
    }
}

fn element_count(dims: &[i64]) -> i64 {
    dims.iter().map(|&d| d.max(0)).product()
}

/// `(codes − zero point) × scale` per tensor, per axis, or per block along `axis`; `None`
/// when the parameters do not fit the codes' shape.
fn dequantize(
    codes: &[f32],
    dims: &[i64],
    scales: &[f32],
    scale_dims: &[i64],
    zero_points: Option<&[f32]>,
    axis: i64,
    block: i64,
) -> Option<Vec<f32>> {
    let zp = |i: usize| zero_points.map_or(0.0, |z| z.get(i).copied().unwrap_or(0.0));
    if let Some(zps) = zero_points
        && zps.len() != scales.len()
    {
        return None;
    }
    if scales.len() == 1 {
        let (s, z) = (scales[0], zp(0));
        return Some(codes.iter().map(|&c| (c - z) * s).collect());
    }
    let rank = dims.len() as i64;
    let axis = usize::try_from(if axis < 0 { axis + rank } else { axis }).ok()?;
    let channels = usize::try_from(*dims.get(axis)?).ok()?;
    let inner: usize = dims[axis + 1..]
        .iter()
        .map(|&d| usize::try_from(d).unwrap_or(0))
        .product();
    if block <= 0 {
        if scales.len() != channels || scale_dims.len() > 1 {
            return None;
        }
        return Some(
            codes
                .iter()
                .enumerate()
                .map(|(i, &c)| {
                    let ch = (i / inner.max(1)) % channels.max(1);
                    (c - zp(ch)) * scales[ch]
                })
                .collect(),
        );
    }
    // Blocked: the scale has the codes' shape with `axis` divided into blocks.
    let block = usize::try_from(block).ok()?;
    let blocks = usize::try_from(*scale_dims.get(axis)?).ok()?;
    if scale_dims.len() != dims.len() || blocks != channels.div_ceil(block) {
        return None;
    }
    Some(
        codes
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let outer = i / (inner * channels).max(1);
                let ch = (i / inner.max(1)) % channels.max(1);
                let j = (outer * blocks + ch / block) * inner + i % inner.max(1);
                let s = scales.get(j).copied().unwrap_or(f32::NAN);
                (c - zp(j)) * s
            })
            .collect(),
    )
}

/// Elementwise `f` with numpy broadcasting, or `None` when the shapes do not broadcast.
fn broadcast(
    x: &[f32],
    x_dims: &[i64],
    y: &[f32],
    y_dims: &[i64],
    f: fn(f32, f32) -> f32,
) -> Option<(Vec<f32>, Vec<i64>)> {
    let rank = x_dims.len().max(y_dims.len());
    let pad = |d: &[i64]| -> Vec<i64> {
        let mut out = vec![1; rank - d.len()];
        out.extend_from_slice(d);
        out
    };
    let (xd, yd) = (pad(x_dims), pad(y_dims));
    let mut out_dims = Vec::with_capacity(rank);
    for (&p, &q) in xd.iter().zip(&yd) {
        out_dims.push(match (p, q) {
            (p, q) if p == q => p,
            (1, q) => q,
            (p, 1) => p,
            _ => return None,
        });
    }
    let count = usize::try_from(element_count(&out_dims)).ok()?;
    if x.len() as i64 != element_count(x_dims) || y.len() as i64 != element_count(y_dims) {
        return None;
    }
    // Strides of each operand, zero along broadcast axes.
    let strides = |d: &[i64]| -> Vec<usize> {
        let mut s = vec![0usize; rank];
        let mut acc = 1usize;
        for k in (0..rank).rev() {
            s[k] = if d[k] == 1 { 0 } else { acc };
            acc *= usize::try_from(d[k]).unwrap_or(0);
        }
        s
    };
    let (xs, ys) = (strides(&xd), strides(&yd));
    let mut values = Vec::with_capacity(count);
    for i in 0..count {
        let (mut rest, mut xi, mut yi) = (i, 0usize, 0usize);
        for k in (0..rank).rev() {
            let d = usize::try_from(out_dims[k]).unwrap_or(1).max(1);
            let idx = rest % d;
            rest /= d;
            xi += idx * xs[k];
            yi += idx * ys[k];
        }
        values.push(f(x[xi], y[yi]));
    }
    Some((values, out_dims))
}

/// The number of distinct values in `codes` (integers as floats).
pub(super) fn distinct_levels(codes: &[f32]) -> u64 {
    // Codes of 8 bits or less: a table.
    let small = codes
        .iter()
        .all(|&c| c.fract() == 0.0 && (-128.0..=255.0).contains(&c));
    if small {
        let mut seen = [false; 384];
        for &c in codes {
            seen[(c as i32 + 128) as usize] = true;
        }
        return seen.iter().filter(|&&s| s).count() as u64;
    }
    let mut sorted: Vec<f32> = codes.to_vec();
    sorted.sort_by(f32::total_cmp);
    sorted.dedup_by(|p, q| p.to_bits() == q.to_bits());
    sorted.len() as u64
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn broadcasts_a_per_channel_scale() {
        let (v, d) = broadcast(
            &[1.0, 2.0, 3.0, 4.0],
            &[2, 2],
            &[10.0, 100.0],
            &[2, 1],
            |p, q| p * q,
        )
        .unwrap();
        assert_eq!((v, d), (vec![10.0, 20.0, 300.0, 400.0], vec![2, 2]));
        assert!(broadcast(&[1.0; 3], &[3], &[1.0; 2], &[2], |p, _| p).is_none());
    }

    #[test]
    fn dequantizes_per_tensor_per_axis_and_per_block() {
        let codes = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(
            dequantize(&codes, &[2, 2], &[0.5], &[], Some(&[1.0]), 0, 0).unwrap(),
            vec![0.0, 0.5, 1.0, 1.5]
        );
        assert_eq!(
            dequantize(&codes, &[2, 2], &[1.0, 10.0], &[2], None, 0, 0).unwrap(),
            vec![1.0, 2.0, 30.0, 40.0]
        );
        assert_eq!(
            dequantize(&codes, &[2, 2], &[1.0, 10.0], &[2], None, 1, 0).unwrap(),
            vec![1.0, 20.0, 3.0, 40.0]
        );
        // Blocks of 2 along axis 1: one scale per row.
        assert_eq!(
            dequantize(&codes, &[2, 2], &[1.0, 10.0], &[2, 1], None, 1, 2).unwrap(),
            vec![1.0, 2.0, 30.0, 40.0]
        );
        assert!(dequantize(&codes, &[2, 2], &[1.0, 2.0, 3.0], &[3], None, 0, 0).is_none());
    }

    #[test]
    fn counts_levels() {
        assert_eq!(distinct_levels(&[-128.0, 127.0, 0.0, 0.0]), 3);
        assert_eq!(distinct_levels(&[1000.0, -1000.0, 1000.0]), 2);
    }
}
