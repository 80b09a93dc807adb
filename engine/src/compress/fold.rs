//! Folding inference-mode `BatchNormalization` into the `Conv`, `ConvTranspose` or `Gemm`
//! that feeds it, as onnxruntime's `quant_pre_process` does, so that quantization sees the
//! folded weights and no float batch norm is left between integer layers.
//!
//! A model pass: model in, model + report out. With `s = scale / sqrt(var + epsilon)` per
//! output channel, the layer's weight becomes `W * s` and its bias `(b - mean) * s + B`
//! (`b = 0` when the layer had none: a bias input is added). The layer takes over the batch
//! norm's output name, so everything downstream (graph outputs included) is untouched; it
//! keeps its own node name and its place in the node order, and the batch norm node goes.
//! Batch norms that cannot be folded are left alone and the report says why.
//!
//! Weights read only by the folded layer are rewritten in place; weights shared with other
//! nodes are copied under a new, unique name. Constants that nothing reads any more (the
//! batch norm parameters, a shared weight whose every reader got a copy) are removed.

mod rewrite;

use std::collections::HashSet;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::dtype::DType;
use crate::model::graph_edit::{
    ConstRef, Index, Stored, all_names, attr, attr_float, attr_int, is_op, label,
};
use crate::model::load::LoadedModel;
use crate::model::proto::ModelProto;
use crate::model::tensor::decode_f32;

use rewrite::{apply, remove_unread};

/// What the pass folded.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FoldReport {
    /// (batch norm node, layer it was folded into)
    pub folded: Vec<(String, String)>,
    /// Batch norms left alone, with the reason.
    pub kept: Vec<(String, String)>,
}

/// Returns a self-contained model with every foldable BatchNormalization folded into the
/// Conv/ConvTranspose/Gemm that feeds it.
///
/// Only the main graph is rewritten. A batch norm is folded when it is in inference mode
/// (one output, or `training_mode = 0`), its input is the only use of the output of a
/// `Conv` (any group), `ConvTranspose` (any group) or `Gemm` with a 2-D weight, that output
/// is not a graph output, and the layer's weight, bias and the batch norm's four parameters
/// are float32 constants (initializers or `Constant` nodes) of matching shapes. Chains such
/// as `Conv → BatchNormalization → BatchNormalization` fold completely. Fails only on
/// weights whose stored data is corrupt.
pub fn fold_batchnorm(model: &LoadedModel) -> Result<(ModelProto, FoldReport)> {
    let mut proto = model.self_contained_proto()?;
    let graph = proto.graph.as_mut().ok_or_else(|| Error::InvalidArgument {
        what: "model",
        reason: "no graph".to_owned(),
    })?;
    let labels: Vec<String> = graph
        .node
        .iter()
        .enumerate()
        .map(|(i, n)| label(n, i))
        .collect();
    let mut names = all_names(graph);
    // Nodes are marked dead and removed at the end, so indices (and labels) stay stable.
    let mut dead = vec![false; graph.node.len()];
    // Constants the pass stopped reading somewhere: removed at the end if nothing reads them.
    let mut released: HashSet<String> = HashSet::new();
    // Tensors that no longer exist (the layers' old outputs): their value_info goes.
    let mut vanished: HashSet<String> = HashSet::new();
    let mut folded = Vec::new();
    let kept = loop {
        let (plans, refusals) = {
            let ix = Index::live(graph, &dead);
            let mut plans = Vec::new();
            let mut refusals = Vec::new();
            for (i, node) in graph.node.iter().enumerate() {
                if dead[i] || !is_op(node, "BatchNormalization") {
                    continue;
                }
                match plan_fold(&ix, i, &labels)? {
                    Ok(plan) => plans.push(plan),
                    Err(reason) => refusals.push((i, reason)),
                }
            }
            (plans, refusals)
        };
        // A batch norm refused because it follows another one may fold on the next round,
        // once the first has been folded into the layer before it.
        if plans.is_empty() {
            break refusals;
        }
        for plan in plans {
            folded.push((labels[plan.bn].clone(), labels[plan.layer].clone()));
            dead[plan.bn] = true;
            apply(graph, plan, &mut names, &mut released, &mut vanished);
        }
    };
    remove_unread(graph, &mut dead, &released, &vanished);
    let kept = kept
        .into_iter()
        .map(|(i, reason)| (labels[i].clone(), reason))
        .collect();
    Ok((proto, FoldReport { folded, kept }))
}

// ---------------------------------------------------------------------------------------------
// Constants of the graph being rewritten

/// A float32-or-other constant as stored.
struct Const<'a> {
    name: &'a str,
    dtype: DType,
    dims: Vec<i64>,
    /// The tensor, or the values of a `Constant` with `value_float(s)`.
    data: ConstRef<'a>,
}

impl Const<'_> {
    fn elements(&self) -> i64 {
        self.dims.iter().product()
    }

    /// The values, checked to match the shape.
    fn values(&self) -> Result<Vec<f32>> {
        let bad = |reason: String| Error::BadTensor {
            tensor: self.name.to_owned(),
            reason,
        };
        let values = match &self.data {
            ConstRef::Tensor(t) => {
                decode_f32(t, None)?.ok_or_else(|| bad("its values cannot be decoded".into()))?
            }
            ConstRef::Inline(_, _, values) => values.clone(),
        };
        if values.len() as i64 != self.elements() {
            return Err(bad(format!(
                "{} values do not fit shape {:?}",
                values.len(),
                self.dims
            )));
        }
        Ok(values)
    }
}

/// The stored constant `name`: an initializer, or a `Constant` node with `value` or
/// `value_float(s)` (one with `value_int(s)` does not count as a stored constant here).
fn constant<'a>(ix: &Index<'a>, name: &'a str) -> Option<Const<'a>> {
    let data = ix.const_ref(name)?;
    if matches!(data, ConstRef::Inline(..)) && data.dtype() != DType::FLOAT32 {
        return None;
    }
    Some(Const {
        name,
        dtype: data.dtype(),
        dims: data.dims().to_vec(),
        data,
    })
}

// ---------------------------------------------------------------------------------------------
// Planning one fold

/// Why a batch norm is left alone.
type Refusal = String;

/// New contents of one input of the layer.
struct Edit {
    slot: usize,
    /// The tensor the slot read before (none for an added bias).
    old: Option<String>,
    /// Rewritten where it is stored, or written under a new name derived from `wanted`.
    in_place: Option<Stored>,
    wanted: String,
    dims: Vec<i64>,
    values: Vec<f32>,
}

/// One batch norm to fold, computed without changing anything.
struct Plan {
    bn: usize,
    layer: usize,
    /// The layer's old output, and the batch norm output it takes over.
    x: String,
    y: String,
    edits: Vec<Edit>,
    /// `Gemm`: `beta` was folded into the new bias and becomes 1.
    reset_beta: bool,
    /// The batch norm's parameter tensors.
    params: Vec<String>,
}

/// Which layer feeds the batch norm, and how its output channels sit in its weight.
enum Kind {
    /// `W[C, Cin/g, k…]`: channel `c` is the block `c` of axis 0.
    Conv,
    /// `W[Cin, C/g, k…]`: output channel `(ci / (Cin/g)) * (C/g) + j` for `W[ci, j, …]`.
    ConvTranspose { group: usize },
    /// `B[C, K]` (`transB = 1`), scaled by rows.
    GemmRows,
    /// `B[K, C]` (`transB = 0`), scaled by columns.
    GemmColumns,
}

/// Input `slot` of node `n`, when it is a float32 constant.
fn float_const<'a>(
    ix: &Index<'a>,
    labels: &[String],
    n: usize,
    slot: usize,
) -> Result<Const<'a>, Refusal> {
    let node = ix.node(n);
    let name = node.input.get(slot).map_or("", String::as_str);
    let c = constant(ix, name).ok_or_else(|| {
        format!(
            "`{name}` (read by {} `{}`) is not a stored constant",
            node.op_type(),
            labels[n]
        )
    })?;
    if c.dtype != DType::FLOAT32 {
        return Err(format!(
            "`{name}` (read by {} `{}`) is {}; only float32 is folded",
            node.op_type(),
            labels[n],
            c.dtype
        ));
    }
    Ok(c)
}

fn plan_fold(ix: &Index<'_>, bn: usize, labels: &[String]) -> Result<Result<Plan, Refusal>> {
    let node = ix.node(bn);
    let refuse = |reason: String| -> Result<Result<Plan, Refusal>> { Ok(Err(reason)) };
    let training = attr(node, "training_mode").map(|a| a.i());
    if training.is_some_and(|t| t != 0) {
        return refuse(
            "training mode (training_mode=1): it normalizes with batch statistics".into(),
        );
    }
    let extra: Vec<&String> = node
        .output
        .iter()
        .skip(1)
        .filter(|o| !o.is_empty())
        .collect();
    if let Some(used) = extra.iter().find(|o| {
        !ix.consumers_of(o).is_empty()
            || ix.outputs.contains(o.as_str())
            || ix.captured.contains(o.as_str())
    }) {
        return refuse(format!("its training-mode output `{used}` is used"));
    }
    if !extra.is_empty() && training != Some(0) {
        return refuse(format!(
            "training mode: it has {} outputs (running statistics), so it normalizes with batch statistics",
            extra.len() + 1
        ));
    }
    if attr(node, "spatial").is_some_and(|a| a.i() == 0) {
        return refuse("spatial=0: statistics per activation, not per channel".into());
    }
    let Some(y) = node.output.first().filter(|o| !o.is_empty()) else {
        return refuse("it has no output".into());
    };
    if node.input.len() != 5 || node.input.iter().any(String::is_empty) {
        return refuse(format!(
            "it has {} inputs; X, scale, B, mean and var are expected",
            node.input.iter().filter(|i| !i.is_empty()).count()
        ));
    }
    let x = node.input[0].as_str();

    // The layer feeding it, and that its output goes nowhere else.
    let Some(&layer) = ix.producer.get(x) else {
        return refuse(format!(
            "its input `{x}` is not produced by a node (a graph input or a constant)"
        ));
    };
    let l = ix.node(layer);
    let lname = &labels[layer];
    let op = l.op_type();
    let kind = if is_op(l, "Conv") {
        Kind::Conv
    } else if is_op(l, "ConvTranspose") {
        let group = attr_int(l, "group", 1);
        match usize::try_from(group) {
            Ok(g) if g >= 1 => Kind::ConvTranspose { group: g },
            _ => return refuse(format!("ConvTranspose `{lname}` has group {group}")),
        }
    } else if is_op(l, "Gemm") {
        if attr_int(l, "transB", 0) != 0 {
            Kind::GemmRows
        } else {
            Kind::GemmColumns
        }
    } else {
        return refuse(format!(
            "its input `{x}` comes from {op} `{lname}`, not from a Conv, ConvTranspose or Gemm"
        ));
    };
    if l.output.first().map(String::as_str) != Some(x) {
        return refuse(format!("`{x}` is not the main output of {op} `{lname}`"));
    }
    let whose = format!("`{x}` (the output of {op} `{lname}`)");
    if let Some(&(other, _)) = ix.consumers_of(x).iter().find(|&&(n, _)| n != bn) {
        let o = ix.node(other);
        return refuse(format!(
            "{whose} is also read by {} `{}`",
            o.op_type(),
            labels[other]
        ));
    }
    if ix.consumers_of(x).len() != 1 {
        return refuse(format!("{whose} is read more than once by the batch norm"));
    }
    if ix.outputs.contains(x) {
        return refuse(format!("{whose} is a graph output"));
    }
    if ix.captured.contains(x) {
        return refuse(format!("{whose} is read inside a subgraph"));
    }

    // The layer's weights.
    let float_const = |n: usize, slot: usize| float_const(ix, labels, n, slot);
    if l.input.get(1).is_none_or(String::is_empty) {
        return refuse(format!("{op} `{lname}` has no weight input"));
    }
    let w = match float_const(layer, 1) {
        Ok(c) => c,
        Err(r) => return refuse(r),
    };
    let channels = match kind {
        Kind::Conv if w.dims.len() >= 3 => w.dims[0],
        Kind::ConvTranspose { group } if w.dims.len() >= 3 => {
            let g = group as i64;
            if w.dims[0] % g != 0 {
                return refuse(format!(
                    "ConvTranspose `{lname}`: weight {:?} does not split into {group} groups",
                    w.dims
                ));
            }
            w.dims[1] * g
        }
        Kind::GemmRows if w.dims.len() == 2 => w.dims[0],
        Kind::GemmColumns if w.dims.len() == 2 => w.dims[1],
        _ => {
            return refuse(format!("{op} `{lname}` has a weight of shape {:?}", w.dims));
        }
    };
    if channels <= 0 {
        return refuse(format!("{op} `{lname}` has no output channels"));
    }
    let bias = match l.input.get(2).filter(|b| !b.is_empty()) {
        None => None,
        Some(_) => match float_const(layer, 2) {
            Ok(c) => Some(c),
            Err(r) => return refuse(r),
        },
    };
    let gemm = matches!(kind, Kind::GemmRows | Kind::GemmColumns);
    if let Some(b) = &bias {
        let fits = if gemm {
            b.dims.len() <= 2 && b.dims.last().is_none_or(|&d| d == 1 || d == channels)
        } else {
            b.dims == [channels]
        };
        if !fits {
            return refuse(format!(
                "{op} `{lname}`: bias `{}` of shape {:?} does not fit {channels} output channels",
                b.name, b.dims
            ));
        }
    }

    // The batch norm's parameters.
    let mut params = Vec::with_capacity(4);
    for slot in 1..=4 {
        let p = match float_const(bn, slot) {
            Ok(c) => c,
            Err(r) => return refuse(r),
        };
        if p.elements() != channels {
            return refuse(format!(
                "parameter `{}` has shape {:?}, but {op} `{lname}` has {channels} output channels",
                p.name, p.dims
            ));
        }
        params.push(p);
    }
    let [scale, shift, mean, var] = [
        params[0].values()?,
        params[1].values()?,
        params[2].values()?,
        params[3].values()?,
    ];
    let epsilon = f64::from(attr_float(node, "epsilon", 1e-5));
    let mut s = Vec::with_capacity(scale.len());
    for c in 0..scale.len() {
        let v = f64::from(scale[c]) / (f64::from(var[c]) + epsilon).sqrt();
        if !(v as f32).is_finite() {
            return refuse(format!(
                "scale / sqrt(var + epsilon) is not finite on channel {c} (var {}, epsilon {epsilon})",
                var[c]
            ));
        }
        s.push(v);
    }
    // BN(y) = y * s + (B - mean * s).
    let offset: Vec<f64> = (0..s.len())
        .map(|c| f64::from(shift[c]) - f64::from(mean[c]) * s[c])
        .collect();

    // New weight.
    let w_values = w.values()?;
    let c = s.len();
    let new_w: Vec<f32> = match kind {
        Kind::Conv | Kind::GemmRows => {
            let inner = w_values.len() / c.max(1);
            w_values
                .iter()
                .enumerate()
                .map(|(i, &v)| (f64::from(v) * s[i / inner.max(1)]) as f32)
                .collect()
        }
        Kind::GemmColumns => w_values
            .iter()
            .enumerate()
            .map(|(i, &v)| (f64::from(v) * s[i % c]) as f32)
            .collect(),
        Kind::ConvTranspose { group } => {
            let cin = w.dims[0] as usize;
            let per_group_in = cin / group;
            let per_group_out = w.dims[1] as usize;
            let inner = w_values.len() / (cin * per_group_out).max(1);
            w_values
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let ci = i / (per_group_out * inner);
                    let j = (i / inner) % per_group_out;
                    let o = (ci / per_group_in) * per_group_out + j;
                    (f64::from(v) * s[o]) as f32
                })
                .collect()
        }
    };

    // New bias.
    let beta = if gemm {
        f64::from(attr_float(l, "beta", 1.0))
    } else {
        1.0
    };
    let (bias_dims, new_b) = match &bias {
        None => (
            vec![c as i64],
            offset.iter().map(|&v| v as f32).collect::<Vec<f32>>(),
        ),
        Some(b) => {
            let values = b.values()?;
            // Bias shape [C] for convolutions; for Gemm anything broadcasting to [M, C]:
            // [], [1], [C], [M, 1], [M, C]. The result is [C] or [M, C].
            let rows = if b.dims.len() == 2 {
                b.dims[0] as usize
            } else {
                1
            };
            let cols = values.len() / rows.max(1);
            let dims = if b.dims.len() == 2 {
                vec![rows as i64, c as i64]
            } else {
                vec![c as i64]
            };
            let mut out = Vec::with_capacity(rows * c);
            for r in 0..rows {
                for (ch, (&sc, &off)) in s.iter().zip(&offset).enumerate() {
                    let v = values[r * cols + if cols == 1 { 0 } else { ch }];
                    out.push((beta * f64::from(v) * sc + off) as f32);
                }
            }
            (dims, out)
        }
    };

    let w_name = w.name.to_owned();
    let mut edits = vec![Edit {
        slot: 1,
        old: Some(w_name.clone()),
        in_place: ix
            .private(&w_name, layer, 1)
            .then(|| ix.stored.get(w_name.as_str()).copied())
            .flatten(),
        wanted: format!("{w_name}_folded"),
        dims: w.dims.clone(),
        values: new_w,
    }];
    edits.push(match &bias {
        Some(b) => Edit {
            slot: 2,
            old: Some(b.name.to_owned()),
            in_place: (ix.private(b.name, layer, 2) && b.dims == bias_dims)
                .then(|| ix.stored.get(b.name).copied())
                .flatten(),
            wanted: format!("{}_folded", b.name),
            dims: bias_dims,
            values: new_b,
        },
        None => Edit {
            slot: 2,
            old: None,
            in_place: None,
            wanted: match w_name.strip_suffix("weight") {
                Some(stem) if !stem.is_empty() => format!("{stem}bias"),
                _ => format!("{w_name}_bias"),
            },
            dims: bias_dims,
            values: new_b,
        },
    });
    Ok(Ok(Plan {
        bn,
        layer,
        x: x.to_owned(),
        y: y.clone(),
        edits,
        reset_beta: gemm && beta != 1.0,
        params: node.input[1..].to_vec(),
    }))
}

#[cfg(test)]
mod tests;
