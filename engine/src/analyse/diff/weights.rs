//! The weights of two models paired (by name, else by the matched node's input slot) and
//! compared: shapes, storage, SQNR, sparsity and bits.

use std::borrow::Cow;
use std::collections::HashMap;

use super::constants::{Constness, Resolved, resolve};
use super::nodes::Matching;
use super::side::Side;
use super::{AxisChange, Comparison, WeightDiff, WeightMatch, WeightSide};
use crate::model::graph_edit::{attr_float, attr_int};

/// The weights compared, and how many each model has.
pub(super) struct WeightOutcome {
    pub diffs: Vec<WeightDiff>,
    pub count_a: usize,
    pub count_b: usize,
}

/// A float constant that a compute node reads.
struct Candidate<'s> {
    name: &'s str,
    /// (node, input slot) of every compute node reading it.
    readers: Vec<(usize, usize)>,
    value: Resolved<'s>,
}

/// The weights of `side`: float constants read by nodes that compute on activations,
/// except the scale and zero point inputs of `QuantizeLinear`/`DequantizeLinear` (counted in
/// the storage of what they dequantize).
fn candidates<'s>(side: &'s Side<'_>) -> Vec<Candidate<'s>> {
    let mut constness = Constness::new(side);
    let mut order: Vec<(&'s str, Vec<(usize, usize)>)> = Vec::new();
    let mut index: HashMap<&'s str, usize> = HashMap::new();
    for (i, node) in side.graph.nodes.iter().enumerate() {
        if !node.graph.is_empty() || constness.node_is_constant(i) {
            continue;
        }
        let qdq = matches!(node.op_type.as_str(), "QuantizeLinear" | "DequantizeLinear");
        for (slot, input) in node.inputs.iter().enumerate() {
            if input.is_empty() || (qdq && slot >= 1) || !constness.is_constant(input) {
                continue;
            }
            let k = *index.entry(input.as_str()).or_insert_with(|| {
                order.push((input.as_str(), Vec::new()));
                order.len() - 1
            });
            order[k].1.push((i, slot));
        }
    }
    order
        .into_iter()
        .filter_map(|(name, readers)| {
            let value = resolve(side, name)?;
            value.float.then_some(Candidate {
                name,
                readers,
                value,
            })
        })
        .collect()
}

/// Pairs and compares the weights of A and B.
pub(super) fn compare_weights(a: &Side<'_>, b: &Side<'_>, m: &Matching) -> WeightOutcome {
    let wa = candidates(a);
    let wb = candidates(b);
    let b_by_name: HashMap<&str, usize> = wb.iter().enumerate().map(|(j, w)| (w.name, j)).collect();
    let mut taken = vec![false; wb.len()];
    let mut pairs: Vec<Option<(usize, WeightMatch)>> = vec![None; wa.len()];
    for (i, w) in wa.iter().enumerate() {
        if let Some(&j) = b_by_name.get(w.name) {
            pairs[i] = Some((j, WeightMatch::Name));
            taken[j] = true;
        }
    }
    for (i, w) in wa.iter().enumerate() {
        if pairs[i].is_some() {
            continue;
        }
        let found = w.readers.iter().find_map(|&(node, slot)| {
            let other = m.a_to_b[node]?;
            let input = b.graph.nodes[other].inputs.get(slot)?;
            let &j = b_by_name.get(input.as_str())?;
            (!taken[j]).then_some(j)
        });
        if let Some(j) = found {
            pairs[i] = Some((j, WeightMatch::Consumer));
            taken[j] = true;
        }
    }
    let mut diffs = Vec::with_capacity(wa.len() + wb.len());
    for (i, w) in wa.iter().enumerate() {
        diffs.push(match pairs[i] {
            Some((j, by)) => compare_pair(a, m, w, &wb[j], by),
            None => one_sided(Some(side_of(w)), None, None),
        });
    }
    for (j, w) in wb.iter().enumerate() {
        if !taken[j] {
            let folded = new_bias_from_folding(a, m, w);
            diffs.push(one_sided(None, Some(side_of(w)), folded));
        }
    }
    WeightOutcome {
        diffs,
        count_a: wa.len(),
        count_b: wb.len(),
    }
}

fn side_of(w: &Candidate<'_>) -> WeightSide {
    let sparsity = w.value.values.as_deref().map_or(0.0, |v| {
        v.iter().filter(|&&x| x == 0.0).count() as f64 / v.len().max(1) as f64
    });
    WeightSide {
        name: w.name.to_owned(),
        dims: w.value.dims.clone(),
        dtype: w.value.dtype,
        storage_bytes: w.value.storage_bytes,
        sparsity,
        bits: w.value.dtype.bits(),
        levels: w.value.levels,
        node: w.readers.first().map(|r| r.0),
    }
}

fn one_sided(
    a: Option<WeightSide>,
    b: Option<WeightSide>,
    folded_batchnorm: Option<String>,
) -> WeightDiff {
    WeightDiff {
        a,
        b,
        matched_by: None,
        comparison: Comparison::OneSided,
        sqnr_db: None,
        nonfinite_values: 0,
        shape_changes: Vec::new(),
        folded_batchnorm,
        changed: true,
    }
}

fn compare_pair(
    a: &Side<'_>,
    m: &Matching,
    wa: &Candidate<'_>,
    wb: &Candidate<'_>,
    by: WeightMatch,
) -> WeightDiff {
    let (sa, sb) = (side_of(wa), side_of(wb));
    let shape_changes: Vec<AxisChange> = if sa.dims.len() == sb.dims.len() {
        sa.dims
            .iter()
            .zip(&sb.dims)
            .enumerate()
            .filter(|(_, (p, q))| p != q)
            .map(|(axis, (&before, &after))| AxisChange {
                axis,
                before,
                after,
            })
            .collect()
    } else {
        Vec::new()
    };
    let folding = batchnorm_folded(a, m, wa);
    let reference: Option<Cow<'_, [f32]>> = match &folding {
        Some(f) => wa
            .value
            .values
            .as_deref()
            .and_then(|v| fold(v, &wa.value.dims, f))
            .map(Cow::Owned),
        None => wa.value.values.as_deref().map(Cow::Borrowed),
    };
    let (comparison, sqnr_db, nonfinite_values) = if sa.dims != sb.dims {
        (Comparison::ShapesDiffer, None, 0)
    } else {
        match (reference.as_deref(), wb.value.values.as_deref()) {
            (Some(x), Some(y)) if x.len() == y.len() => sqnr(x, y),
            _ => (Comparison::NotDecoded, None, 0),
        }
    };
    // Values that cannot be read are not called changed when nothing else differs.
    let changed = !matches!(comparison, Comparison::Identical | Comparison::NotDecoded)
        || sa.dtype != sb.dtype
        || sa.storage_bytes != sb.storage_bytes;
    WeightDiff {
        a: Some(sa),
        b: Some(sb),
        matched_by: Some(by),
        comparison,
        sqnr_db,
        nonfinite_values,
        shape_changes,
        folded_batchnorm: folding.map(|f| f.name),
        changed,
    }
}

/// B's values against A's: identical, or the SQNR in dB (−∞ when a finite value became NaN
/// or infinite, or A's values are all zero), and the non-finite pairs that differ.
pub(super) fn sqnr(reference: &[f32], values: &[f32]) -> (Comparison, Option<f64>, usize) {
    let (mut signal, mut noise, mut nonfinite) = (0f64, 0f64, 0usize);
    for (&x, &y) in reference.iter().zip(values) {
        if !(x.is_finite() && y.is_finite()) {
            let same = (x.is_nan() && y.is_nan()) || x == y;
            nonfinite += usize::from(!same);
            continue;
        }
        let (x, y) = (f64::from(x), f64::from(y));
        signal += x * x;
        noise += (x - y) * (x - y);
    }
    if nonfinite > 0 {
        (Comparison::Compared, Some(f64::NEG_INFINITY), nonfinite)
    } else if noise == 0.0 {
        (Comparison::Identical, None, 0)
    } else if signal == 0.0 {
        (Comparison::Compared, Some(f64::NEG_INFINITY), 0)
    } else {
        (
            Comparison::Compared,
            Some(10.0 * (signal / noise).log10()),
            0,
        )
    }
}

/// A batch norm of A that B folded into the layer reading a weight.
struct Folding {
    name: String,
    /// Which input of the layer the weight is (1: weight, 2: bias).
    slot: usize,
    op: String,
    /// ConvTranspose `group`; Gemm `transB`.
    group: usize,
    trans_b: bool,
    /// `scale / sqrt(var + epsilon)` and `B − mean × s` per output channel.
    s: Vec<f64>,
    offset: Vec<f64>,
}

/// The batch norm folded into the layer that reads weight `w`: the layer (Conv,
/// ConvTranspose or Gemm) feeds only a `BatchNormalization` that B does not have.
fn batchnorm_folded(a: &Side<'_>, m: &Matching, w: &Candidate<'_>) -> Option<Folding> {
    let &(layer, slot) = w.readers.iter().find(|r| r.1 == 1 || r.1 == 2)?;
    let node = &a.graph.nodes[layer];
    if !matches!(node.op_type.as_str(), "Conv" | "ConvTranspose" | "Gemm") || w.readers.len() != 1 {
        return None;
    }
    let (bn, bn_node) = layer_batchnorm(a, m, layer)?;
    let param = |k: usize| -> Option<Vec<f32>> {
        let name = a.graph.nodes[bn].inputs.get(k)?;
        resolve(a, name)?.values.map(Cow::into_owned)
    };
    let (scale, shift, mean, var) = (param(1)?, param(2)?, param(3)?, param(4)?);
    let c = scale.len();
    if [shift.len(), mean.len(), var.len()].iter().any(|&n| n != c) {
        return None;
    }
    let epsilon = f64::from(attr_float(bn_node, "epsilon", 1e-5));
    let s: Vec<f64> = (0..c)
        .map(|k| f64::from(scale[k]) / (f64::from(var[k]) + epsilon).sqrt())
        .collect();
    let offset = (0..c)
        .map(|k| f64::from(shift[k]) - f64::from(mean[k]) * s[k])
        .collect();
    let proto = a.node(layer)?;
    Some(Folding {
        name: a.graph.nodes[bn].name.clone(),
        slot,
        op: node.op_type.clone(),
        group: usize::try_from(attr_int(proto, "group", 1))
            .unwrap_or(1)
            .max(1),
        trans_b: attr_int(proto, "transB", 0) != 0,
        s,
        offset,
    })
}

/// The `BatchNormalization` that alone reads layer `layer`'s output in A and that B no
/// longer has.
fn layer_batchnorm<'a>(
    a: &Side<'a>,
    m: &Matching,
    layer: usize,
) -> Option<(usize, &'a crate::model::proto::NodeProto)> {
    let output = a.graph.nodes[layer].outputs.first()?;
    let readers = a.graph.consumers.get(output)?;
    let [bn] = readers.as_slice() else {
        return None;
    };
    let node = a.node(*bn)?;
    (node.op_type() == "BatchNormalization" && m.a_to_b[*bn].is_none()).then_some((*bn, node))
}

/// A's weight or bias with the batch norm folded in, as the compress stage folds it.
fn fold(values: &[f32], dims: &[i64], f: &Folding) -> Option<Vec<f32>> {
    let c = f.s.len();
    if f.slot == 2 {
        if values.len() != c || f.op == "Gemm" {
            return None;
        }
        return Some(
            values
                .iter()
                .enumerate()
                .map(|(k, &b)| (f64::from(b) * f.s[k] + f.offset[k]) as f32)
                .collect(),
        );
    }
    let channel = |i: usize| -> usize {
        match (f.op.as_str(), f.trans_b) {
            ("Gemm", false) => i % c.max(1),
            ("ConvTranspose", _) => {
                let dim = |k: usize| dims.get(k).and_then(|&d| usize::try_from(d).ok());
                let cin = dim(0).unwrap_or(0);
                let per_group_in = cin / f.group;
                let per_group_out = dim(1).unwrap_or(0);
                let inner = values.len() / (cin * per_group_out).max(1);
                let ci = i / (per_group_out * inner).max(1);
                let j = (i / inner.max(1)) % per_group_out.max(1);
                (ci / per_group_in.max(1)) * per_group_out + j
            }
            _ => i / (values.len() / c.max(1)).max(1),
        }
    };
    let scaled: Option<Vec<f32>> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| f.s.get(channel(i)).map(|s| (f64::from(v) * s) as f32))
        .collect();
    scaled
}

/// For a bias only B has: the batch norm of A folded into the layer that reads it.
fn new_bias_from_folding(a: &Side<'_>, m: &Matching, w: &Candidate<'_>) -> Option<String> {
    let &(layer_b, _) = w.readers.iter().find(|r| r.1 == 2)?;
    let layer_a = m.b_to_a[layer_b]?;
    layer_batchnorm(a, m, layer_a).map(|(bn, _)| a.graph.nodes[bn].name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqnr_says_identical_and_never_reads_nan_as_perfect() {
        assert_eq!(
            sqnr(&[1.0, f32::NAN], &[1.0, f32::NAN]),
            (Comparison::Identical, None, 0)
        );
        let (c, db, n) = sqnr(&[1.0, 2.0], &[1.0, f32::NAN]);
        assert_eq!(
            (c, db, n),
            (Comparison::Compared, Some(f64::NEG_INFINITY), 1)
        );
        let (_, db, _) = sqnr(&[0.0, 0.0], &[0.0, 1.0]);
        assert_eq!(db, Some(f64::NEG_INFINITY));
        // Signal 2, noise 0.5.
        let (_, db, _) = sqnr(&[1.0, 1.0], &[1.5, 0.5]);
        assert!((db.unwrap_or_default() - 10.0 * 4f64.log10()).abs() < 1e-9);
    }
}
