//! Multiply-accumulate counts per layer, from weight shapes and inferred activation shapes.
//!
//! Formulas (one MAC = one multiply and one add; element-wise work other than batch norm is
//! not counted):
//! - `Conv`, `ConvInteger`, `QLinearConv`: `elements(output) × C_in/group × prod(kernel)`
//!   = `elements(Y) × prod(W.shape[1..])`.
//! - `ConvTranspose`: `elements(X) × C_out/group × prod(kernel)` = `elements(X) × prod(W.shape[1..])`.
//! - `Gemm`: `M × N × K` = `elements(Y) × K`, with `K` read from `B` (`transB` aware).
//! - `MatMul`, `MatMulInteger`, `QLinearMatMul`: `elements(Y) × K`, `K` the shared dimension.
//! - `LSTM`, `GRU`, `RNN`: `seq_len × batch × (elements(W) + elements(R))` — every gate's input
//!   and recurrent matrix products, all directions.
//! - `BatchNormalization`, `InstanceNormalization`, `LayerNormalization`: `elements(Y)` (one
//!   scale-and-shift per value).
//! - `Gather` (embedding lookup): 0.
//!
//! A count needs every dimension it uses to be a known number; otherwise the reason is
//! returned instead of a guess.

use crate::model::graph::{Dim, NodeDesc, format_shape};
use crate::model::shapes::ShapeFacts;

/// MACs of one node, or why they cannot be counted.
pub fn node_macs(
    node: &NodeDesc,
    facts: &ShapeFacts,
    weight_dims: impl Fn(usize) -> Option<Vec<i64>>,
) -> Result<u64, String> {
    let shape_of = |name: &str| -> Result<Vec<u64>, String> {
        let fact = facts
            .get(name)
            .and_then(|f| f.shape.clone())
            .ok_or_else(|| format!("shape of `{name}` is unknown"))?;
        known_dims(&fact).ok_or_else(|| {
            format!(
                "shape of `{name}` is {} (not all dimensions known)",
                format_shape(Some(&fact))
            )
        })
    };
    let input_shape = |i: usize| -> Result<Vec<u64>, String> {
        if let Some(dims) = weight_dims(i) {
            return dims
                .iter()
                .map(|&d| u64::try_from(d).map_err(|_| format!("negative dimension {d}")))
                .collect();
        }
        let name = node
            .inputs
            .get(i)
            .ok_or_else(|| format!("input {i} is missing"))?;
        shape_of(name)
    };
    let output = || -> Result<Vec<u64>, String> {
        let name = node.outputs.first().ok_or("node has no output")?;
        shape_of(name)
    };
    let attr_int = |name: &str| -> i64 {
        node.attributes
            .iter()
            .find(|a| a.name == name)
            .and_then(|a| a.value.parse().ok())
            .unwrap_or(0)
    };
    let product = |dims: &[u64]| -> Result<u64, String> {
        dims.iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| "the count overflows 64 bits".to_owned())
    };
    let mul = |a: u64, b: u64| {
        a.checked_mul(b)
            .ok_or_else(|| "the count overflows 64 bits".to_owned())
    };

    match node.op_type.as_str() {
        "Conv" | "ConvInteger" => {
            let w = input_shape(1)?;
            mul(product(&output()?)?, product(w.get(1..).unwrap_or(&[]))?)
        }
        "QLinearConv" => {
            let w = input_shape(3)?;
            mul(product(&output()?)?, product(w.get(1..).unwrap_or(&[]))?)
        }
        "ConvTranspose" => {
            let w = input_shape(1)?;
            mul(
                product(&input_shape(0)?)?,
                product(w.get(1..).unwrap_or(&[]))?,
            )
        }
        "Gemm" => {
            let b = input_shape(1)?;
            let k = if attr_int("transB") != 0 {
                b.get(1)
            } else {
                b.first()
            };
            let k = *k.ok_or("B is not a matrix")?;
            mul(product(&output()?)?, k)
        }
        "MatMul" | "MatMulInteger" | "QLinearMatMul" => {
            let a_index = 0;
            let b_index = if node.op_type == "QLinearMatMul" {
                3
            } else {
                1
            };
            let k = match input_shape(b_index) {
                Ok(b) if b.len() >= 2 => b[b.len() - 2],
                Ok(b) if b.len() == 1 => b[0],
                _ => *input_shape(a_index)?.last().ok_or("A has rank 0")?,
            };
            mul(product(&output()?)?, k)
        }
        "LSTM" | "GRU" | "RNN" => {
            let x = input_shape(0)?;
            let layout = attr_int("layout");
            let (seq, batch) = match (x.first(), x.get(1)) {
                (Some(&a), Some(&b)) if layout == 0 => (a, b),
                (Some(&a), Some(&b)) => (b, a),
                _ => return Err("X is not a sequence tensor".to_owned()),
            };
            let weights = product(&input_shape(1)?)? + product(&input_shape(2)?)?;
            mul(mul(seq, batch)?, weights)
        }
        "BatchNormalization" | "InstanceNormalization" | "LayerNormalization" => {
            product(&output()?)
        }
        "Gather" => Ok(0),
        other => Err(format!("no MAC formula for `{other}`")),
    }
}

fn known_dims(dims: &[Dim]) -> Option<Vec<u64>> {
    dims.iter()
        .map(|d| d.known().and_then(|v| u64::try_from(v).ok()))
        .collect()
}
