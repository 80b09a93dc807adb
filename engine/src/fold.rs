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

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::load::LoadedModel;
use crate::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, attribute_proto,
};
use crate::tensor::decode_f32;

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
            let ix = Index::new(graph, &dead);
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
// Index of the graph being rewritten

/// Where a constant tensor is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stored {
    Initializer(usize),
    ConstantNode(usize),
}

/// A float32-or-other constant as stored.
struct Const<'a> {
    name: &'a str,
    dtype: DType,
    dims: Vec<i64>,
    /// The tensor, or the values of a `Constant` with `value_float(s)`.
    data: Data<'a>,
}

enum Data<'a> {
    Tensor(&'a TensorProto),
    Inline(Vec<f32>),
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
            Data::Tensor(t) => {
                decode_f32(t, None)?.ok_or_else(|| bad("its values cannot be decoded".into()))?
            }
            Data::Inline(values) => values.clone(),
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

/// Edges, constants and outputs of the live main-graph nodes, by tensor name.
struct Index<'a> {
    graph: &'a GraphProto,
    producer: HashMap<&'a str, usize>,
    /// Tensor → every (node, input slot) reading it.
    consumers: HashMap<&'a str, Vec<(usize, usize)>>,
    outputs: HashSet<&'a str>,
    /// Names read by nodes inside subgraphs (they may capture main-graph tensors).
    captured: HashSet<&'a str>,
    stored: HashMap<&'a str, Stored>,
}

impl<'a> Index<'a> {
    fn new(graph: &'a GraphProto, dead: &[bool]) -> Self {
        let mut ix = Self {
            graph,
            producer: HashMap::new(),
            consumers: HashMap::new(),
            outputs: graph.output.iter().map(|o| o.name()).collect(),
            captured: HashSet::new(),
            stored: HashMap::new(),
        };
        for (i, t) in graph.initializer.iter().enumerate() {
            ix.stored.insert(t.name(), Stored::Initializer(i));
        }
        for (i, node) in graph.node.iter().enumerate() {
            if dead.get(i).copied().unwrap_or(false) {
                continue;
            }
            for (slot, input) in node.input.iter().enumerate() {
                if !input.is_empty() {
                    ix.consumers
                        .entry(input.as_str())
                        .or_default()
                        .push((i, slot));
                }
            }
            for output in node.output.iter().filter(|o| !o.is_empty()) {
                ix.producer.insert(output.as_str(), i);
            }
            if let Some(out) = node.output.first().filter(|_| is_op(node, "Constant")) {
                ix.stored.insert(out.as_str(), Stored::ConstantNode(i));
            }
            for attr in &node.attribute {
                for g in attr.g.iter().chain(&attr.graphs) {
                    collect_reads(g, &mut ix.captured);
                }
            }
        }
        ix
    }

    fn node(&self, i: usize) -> &'a NodeProto {
        &self.graph.node[i]
    }

    fn constant(&self, name: &'a str) -> Option<Const<'a>> {
        let (dtype, dims, data) = match *self.stored.get(name)? {
            Stored::Initializer(i) => {
                let t = &self.graph.initializer[i];
                (DType(t.data_type()), t.dims.clone(), Data::Tensor(t))
            }
            Stored::ConstantNode(i) => {
                let attr = self.graph.node[i].attribute.first()?;
                match attr.name() {
                    "value" => {
                        let t = attr.t.as_ref()?;
                        (DType(t.data_type()), t.dims.clone(), Data::Tensor(t))
                    }
                    "value_float" => (DType::FLOAT32, vec![], Data::Inline(vec![attr.f()])),
                    "value_floats" => (
                        DType::FLOAT32,
                        vec![attr.floats.len() as i64],
                        Data::Inline(attr.floats.clone()),
                    ),
                    _ => return None,
                }
            }
        };
        Some(Const {
            name,
            dtype,
            dims,
            data,
        })
    }

    fn consumers_of(&self, name: &str) -> &[(usize, usize)] {
        self.consumers.get(name).map_or(&[], Vec::as_slice)
    }

    /// Whether `name` is read only by input `slot` of `node` (so it can be rewritten in place).
    fn private(&self, name: &str, node: usize, slot: usize) -> bool {
        self.consumers_of(name) == [(node, slot)]
            && !self.outputs.contains(name)
            && !self.captured.contains(name)
    }
}

fn collect_reads<'a>(graph: &'a GraphProto, names: &mut HashSet<&'a str>) {
    for node in &graph.node {
        names.extend(node.input.iter().map(String::as_str));
        for attr in &node.attribute {
            for g in attr.g.iter().chain(&attr.graphs) {
                collect_reads(g, names);
            }
        }
    }
    names.extend(graph.output.iter().map(|o| o.name()));
}

fn is_op(node: &NodeProto, op: &str) -> bool {
    node.op_type() == op && (node.domain().is_empty() || node.domain() == "ai.onnx")
}

fn attr<'n>(node: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    node.attribute.iter().find(|a| a.name() == name)
}

fn attr_int(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map_or(default, |a| a.i())
}

fn attr_float(node: &NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map_or(default, |a| a.f())
}

fn label(node: &NodeProto, i: usize) -> String {
    if node.name().is_empty() {
        format!("{}#{i}", node.op_type())
    } else {
        node.name().to_owned()
    }
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
    let c = ix.constant(name).ok_or_else(|| {
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

// ---------------------------------------------------------------------------------------------
// Rewriting

fn apply(
    graph: &mut GraphProto,
    plan: Plan,
    names: &mut HashSet<String>,
    released: &mut HashSet<String>,
    vanished: &mut HashSet<String>,
) {
    for e in plan.edits {
        match e.in_place {
            Some(Stored::Initializer(i)) => {
                let mut t = float_tensor(graph.initializer[i].name(), &e.dims, &e.values);
                t.doc_string = graph.initializer[i].doc_string.take();
                graph.initializer[i] = t;
            }
            Some(Stored::ConstantNode(i)) => {
                let name = graph.node[i].output.first().cloned().unwrap_or_default();
                let mut a = AttributeProto::new();
                a.set_name("value".to_owned());
                a.set_type(attribute_proto::AttributeType::TENSOR);
                a.t = Some(float_tensor(&name, &e.dims, &e.values)).into();
                graph.node[i].attribute = vec![a];
            }
            None => {
                let name = unique(names, &e.wanted);
                graph
                    .initializer
                    .push(float_tensor(&name, &e.dims, &e.values));
                let layer = &mut graph.node[plan.layer];
                while layer.input.len() <= e.slot {
                    layer.input.push(String::new());
                }
                layer.input[e.slot] = name;
                released.extend(e.old);
            }
        }
    }
    let layer = &mut graph.node[plan.layer];
    if let Some(out) = layer.output.first_mut() {
        *out = plan.y;
    }
    if plan.reset_beta
        && let Some(a) = layer.attribute.iter_mut().find(|a| a.name() == "beta")
    {
        a.set_f(1.0);
    }
    released.extend(plan.params);
    vanished.insert(plan.x);
}

/// Drops dead nodes, and the released constants (initializers, `Constant` nodes, with their
/// graph-input and value_info entries) that nothing reads any more.
fn remove_unread(
    graph: &mut GraphProto,
    dead: &mut [bool],
    released: &HashSet<String>,
    vanished: &HashSet<String>,
) {
    let mut read: HashSet<String> = graph.output.iter().map(|o| o.name().to_owned()).collect();
    for (i, node) in graph.node.iter().enumerate() {
        if dead[i] {
            continue;
        }
        read.extend(node.input.iter().cloned());
        let mut captured = HashSet::new();
        for attr in &node.attribute {
            for g in attr.g.iter().chain(&attr.graphs) {
                collect_reads(g, &mut captured);
            }
        }
        read.extend(captured.into_iter().map(str::to_owned));
    }
    let unread = |name: &str| released.contains(name) && !read.contains(name);
    for (i, node) in graph.node.iter().enumerate() {
        if is_op(node, "Constant") && node.output.first().is_some_and(|o| unread(o)) {
            dead[i] = true;
        }
    }
    let mut removed: HashSet<String> = HashSet::new();
    graph.initializer.retain(|t| {
        let drop = unread(t.name());
        if drop {
            removed.insert(t.name().to_owned());
        }
        !drop
    });
    // Old exports also list initializers as graph inputs.
    graph.input.retain(|i| !removed.contains(i.name()));
    graph
        .value_info
        .retain(|v| !vanished.contains(v.name()) && !unread(v.name()));
    let mut i = 0;
    graph.node.retain(|_| {
        let keep = !dead.get(i).copied().unwrap_or(false);
        i += 1;
        keep
    });
}

fn float_tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    let mut t = TensorProto::new();
    t.set_name(name.to_owned());
    t.set_data_type(DType::FLOAT32.0);
    t.dims = dims.to_vec();
    t.set_raw_data(values.iter().flat_map(|v| v.to_le_bytes()).collect());
    t
}

fn all_names(graph: &GraphProto) -> HashSet<String> {
    let mut names: HashSet<String> = graph
        .initializer
        .iter()
        .map(|t| t.name().to_owned())
        .collect();
    for n in &graph.node {
        names.insert(n.name().to_owned());
        names.extend(n.output.iter().cloned());
        names.extend(n.input.iter().cloned());
        let mut sub = HashSet::new();
        for attr in &n.attribute {
            for g in attr.g.iter().chain(&attr.graphs) {
                collect_reads(g, &mut sub);
            }
        }
        names.extend(sub.into_iter().map(str::to_owned));
    }
    names.extend(graph.input.iter().map(|i| i.name().to_owned()));
    names.extend(graph.output.iter().map(|o| o.name().to_owned()));
    names.extend(graph.value_info.iter().map(|v| v.name().to_owned()));
    names
}

fn unique(names: &mut HashSet<String>, wanted: &str) -> String {
    let mut candidate = wanted.to_owned();
    let mut i = 1;
    while names.contains(&candidate) {
        candidate = format!("{wanted}_{i}");
        i += 1;
    }
    names.insert(candidate.clone());
    candidate
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::proto::{
        OperatorSetIdProto, TypeProto, ValueInfoProto, tensor_shape_proto, type_proto,
    };
    use crate::runtime::TractModel;
    use crate::{CancelToken, NoProgress};

    /// xorshift values in [-0.5, 0.5).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
            bits as f32 / (1u64 << 24) as f32 - 0.5
        }

        fn values(&mut self, n: usize) -> Vec<f32> {
            (0..n).map(|_| self.next()).collect()
        }
    }

    /// Builds small test models.
    struct Builder {
        graph: GraphProto,
        rng: Rng,
    }

    impl Builder {
        fn new() -> Self {
            Self {
                graph: GraphProto::new(),
                rng: Rng(0x2545_F491_4F6C_DD1D),
            }
        }

        fn random(&mut self, name: &str, dims: &[i64]) -> &mut Self {
            let values = self.rng.values(dims.iter().product::<i64>() as usize);
            self.init(name, dims, &values)
        }

        /// Random values in [0.5, 1.5) (variances, scales).
        fn positive(&mut self, name: &str, dims: &[i64]) -> &mut Self {
            let n = dims.iter().product::<i64>() as usize;
            let values: Vec<f32> = self.rng.values(n).iter().map(|v| v + 1.0).collect();
            self.init(name, dims, &values)
        }

        fn init(&mut self, name: &str, dims: &[i64], values: &[f32]) -> &mut Self {
            self.graph
                .initializer
                .push(float_tensor(name, dims, values));
            self
        }

        /// A `Constant` node holding random values: as a tensor, or as `value_floats`.
        fn constant(
            &mut self,
            name: &str,
            dims: &[i64],
            positive: bool,
            floats: bool,
        ) -> &mut Self {
            let n = dims.iter().product::<i64>() as usize;
            let offset = if positive { 1.0 } else { 0.0 };
            let values: Vec<f32> = self.rng.values(n).iter().map(|v| v + offset).collect();
            let mut a = AttributeProto::new();
            if floats {
                a.set_name("value_floats".to_owned());
                a.set_type(attribute_proto::AttributeType::FLOATS);
                a.floats = values;
            } else {
                a.set_name("value".to_owned());
                a.set_type(attribute_proto::AttributeType::TENSOR);
                a.t = Some(float_tensor(name, dims, &values)).into();
            }
            self.node("Constant", &format!("{name}_const"), &[], &[name], vec![a])
        }

        fn node(
            &mut self,
            op: &str,
            name: &str,
            inputs: &[&str],
            outputs: &[&str],
            attributes: Vec<AttributeProto>,
        ) -> &mut Self {
            let mut n = NodeProto::new();
            n.set_op_type(op.to_owned());
            n.set_name(name.to_owned());
            n.input = inputs.iter().map(|s| (*s).to_owned()).collect();
            n.output = outputs.iter().map(|s| (*s).to_owned()).collect();
            n.attribute = attributes;
            self.graph.node.push(n);
            self
        }

        /// `node` with one output named like the node.
        fn op(
            &mut self,
            op: &str,
            name: &str,
            inputs: &[&str],
            attrs: Vec<AttributeProto>,
        ) -> &mut Self {
            self.node(op, name, inputs, &[name], attrs)
        }

        /// A batch norm `name` over `input` with initializer parameters `name.scale` etc.
        fn bn(&mut self, name: &str, input: &str, channels: i64, output: &str) -> &mut Self {
            let p = |s: &str| format!("{name}.{s}");
            self.positive(&p("scale"), &[channels])
                .random(&p("bias"), &[channels])
                .random(&p("mean"), &[channels])
                .positive(&p("var"), &[channels]);
            let (scale, bias, mean, var) = (p("scale"), p("bias"), p("mean"), p("var"));
            self.node(
                "BatchNormalization",
                name,
                &[input, &scale, &bias, &mean, &var],
                &[output],
                vec![float("epsilon", 1e-3)],
            )
        }

        fn input(&mut self, name: &str, dims: &[i64]) -> &mut Self {
            self.graph.input.push(value_info(name, dims));
            self
        }

        fn output(&mut self, name: &str, dims: &[i64]) -> &mut Self {
            self.graph.output.push(value_info(name, dims));
            self
        }

        fn declare(&mut self, name: &str, dims: &[i64]) -> &mut Self {
            self.graph.value_info.push(value_info(name, dims));
            self
        }

        fn model(&self) -> ModelProto {
            let mut model = ModelProto::new();
            model.set_ir_version(8);
            let mut opset = OperatorSetIdProto::new();
            opset.set_domain(String::new());
            opset.set_version(13);
            model.opset_import.push(opset);
            let mut graph = self.graph.clone();
            graph.set_name("test".to_owned());
            model.graph = Some(graph).into();
            model
        }
    }

    fn ints(name: &str, values: &[i64]) -> AttributeProto {
        let mut a = AttributeProto::new();
        a.set_name(name.to_owned());
        a.set_type(attribute_proto::AttributeType::INTS);
        a.ints = values.to_vec();
        a
    }

    fn int(name: &str, value: i64) -> AttributeProto {
        let mut a = AttributeProto::new();
        a.set_name(name.to_owned());
        a.set_type(attribute_proto::AttributeType::INT);
        a.set_i(value);
        a
    }

    fn float(name: &str, value: f32) -> AttributeProto {
        let mut a = AttributeProto::new();
        a.set_name(name.to_owned());
        a.set_type(attribute_proto::AttributeType::FLOAT);
        a.set_f(value);
        a
    }

    fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
        let mut shape = crate::proto::TensorShapeProto::new();
        for &d in dims {
            let mut dim = tensor_shape_proto::Dimension::new();
            dim.set_dim_value(d);
            shape.dim.push(dim);
        }
        let mut tensor = type_proto::Tensor::new();
        tensor.set_elem_type(1);
        tensor.shape = Some(shape).into();
        let mut t = TypeProto::new();
        t.set_tensor_type(tensor);
        let mut info = ValueInfoProto::new();
        info.set_name(name.to_owned());
        info.type_ = Some(t).into();
        info
    }

    fn load(proto: ModelProto) -> LoadedModel {
        crate::load::from_proto(proto, PathBuf::from("test.onnx"), 0, &NoProgress).unwrap()
    }

    fn fold(proto: &ModelProto) -> (ModelProto, FoldReport) {
        fold_batchnorm(&load(proto.clone())).unwrap()
    }

    fn pairs(entries: &[(&str, &str)]) -> Vec<(String, String)> {
        entries
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    fn ops(proto: &ModelProto) -> Vec<&str> {
        proto.graph.node.iter().map(|n| n.op_type()).collect()
    }

    fn node<'p>(proto: &'p ModelProto, name: &str) -> &'p NodeProto {
        proto.graph.node.iter().find(|n| n.name() == name).unwrap()
    }

    fn initializers(proto: &ModelProto) -> Vec<&str> {
        let mut names: Vec<&str> = proto.graph.initializer.iter().map(|t| t.name()).collect();
        names.sort_unstable();
        names
    }

    /// Runs both models on a few random inputs of `shape`; returns the largest difference
    /// relative to `1 + |original|`, after checking that it is within 1e-4.
    fn assert_same_outputs(original: &ModelProto, folded: &ModelProto, shape: &[usize]) -> f32 {
        let a = TractModel::build(original, None, shape, &[]).unwrap();
        let b = TractModel::build(folded, None, shape, &[]).unwrap();
        let n: usize = shape.iter().product();
        let mut worst = 0f32;
        for seed in 1..=4u64 {
            let input: Vec<f32> = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                .values(n)
                .iter()
                .map(|v| v * 4.0)
                .collect();
            let x = a.run(&input).unwrap().remove(0);
            let y = b.run(&input).unwrap().remove(0);
            assert_eq!(x.len(), y.len());
            for (p, q) in x.iter().zip(&y) {
                assert!(p.is_finite() && q.is_finite());
                worst = worst.max((p - q).abs() / (1.0 + p.abs()));
            }
        }
        assert!(worst <= 1e-4, "outputs differ by {worst} (relative)");
        worst
    }

    #[test]
    fn fold_conv_bn_relu() {
        let mut b = Builder::new();
        b.input("input", &[1, 3, 8, 8])
            .random("conv.w", &[6, 3, 3, 3])
            .random("conv.b", &[6])
            .op(
                "Conv",
                "conv",
                &["input", "conv.w", "conv.b"],
                vec![ints("pads", &[1, 1, 1, 1])],
            )
            .bn("bn", "conv", 6, "bn")
            .node("Relu", "relu", &["bn"], &["out"], vec![])
            .output("out", &[1, 6, 8, 8])
            .declare("conv", &[1, 6, 8, 8])
            .declare("bn", &[1, 6, 8, 8]);
        let original = b.model();
        let (folded, report) = fold(&original);
        assert_eq!(report.folded, pairs(&[("bn", "conv")]));
        assert!(report.kept.is_empty());
        assert_eq!(ops(&folded), ["Conv", "Relu"]);
        let conv = node(&folded, "conv");
        // Weights rewritten in place; the conv takes over the batch norm's output.
        assert_eq!(conv.input, ["input", "conv.w", "conv.b"]);
        assert_eq!(conv.output, ["bn"]);
        assert_eq!(initializers(&folded), ["conv.b", "conv.w"]);
        let declared: Vec<&str> = folded.graph.value_info.iter().map(|v| v.name()).collect();
        assert_eq!(declared, ["bn"]);
        assert_ne!(
            folded.graph.initializer[0].raw_data(),
            original.graph.initializer[0].raw_data()
        );
        assert_same_outputs(&original, &folded, &[1, 3, 8, 8]);
        // Folding again finds nothing to do.
        let (again, report) = fold(&folded);
        assert_eq!(
            report,
            FoldReport {
                folded: vec![],
                kept: vec![]
            }
        );
        assert_eq!(again, folded);
    }

    #[test]
    fn fold_depthwise_and_grouped_convs_with_constant_node_params() {
        let mut b = Builder::new();
        b.input("input", &[1, 4, 6, 6])
            .random("dw.weight", &[4, 1, 3, 3])
            .op(
                "Conv",
                "dw",
                &["input", "dw.weight"],
                vec![int("group", 4), ints("pads", &[1, 1, 1, 1])],
            )
            .constant("dw.bn.scale", &[4], true, false)
            .constant("dw.bn.bias", &[4], false, true)
            .constant("dw.bn.mean", &[4], false, false)
            .constant("dw.bn.var", &[4], true, true)
            .op(
                "BatchNormalization",
                "dw.bn",
                &["dw", "dw.bn.scale", "dw.bn.bias", "dw.bn.mean", "dw.bn.var"],
                vec![],
            )
            .op("Relu", "relu", &["dw.bn"], vec![])
            .random("g.w", &[6, 2, 1, 1])
            .random("g.b", &[6])
            .op("Conv", "g", &["relu", "g.w", "g.b"], vec![int("group", 2)])
            .bn("g.bn", "g", 6, "out")
            .output("out", &[1, 6, 6, 6]);
        let original = b.model();
        let (folded, report) = fold(&original);
        assert_eq!(report.folded, pairs(&[("dw.bn", "dw"), ("g.bn", "g")]));
        assert!(report.kept.is_empty(), "{:?}", report.kept);
        // The Constant nodes of the parameters went with the batch norm.
        assert_eq!(ops(&folded), ["Conv", "Relu", "Conv"]);
        assert_eq!(node(&folded, "dw").input, ["input", "dw.weight", "dw.bias"]);
        assert_eq!(node(&folded, "g").output, ["out"]);
        assert_eq!(
            initializers(&folded),
            ["dw.bias", "dw.weight", "g.b", "g.w"]
        );
        assert_same_outputs(&original, &folded, &[1, 4, 6, 6]);
    }

    #[test]
    fn fold_conv_without_bias_adds_one() {
        let mut b = Builder::new();
        b.input("x", &[1, 3, 10])
            .random("c.w", &[5, 3, 3])
            .node("Conv", "c", &["x", "c.w"], &["c.out"], vec![])
            .bn("c.bn", "c.out", 5, "y")
            .output("y", &[1, 5, 8]);
        let original = b.model();
        let (folded, report) = fold(&original);
        assert_eq!(report.folded, pairs(&[("c.bn", "c")]));
        assert_eq!(node(&folded, "c").input, ["x", "c.w", "c.w_bias"]);
        assert_eq!(node(&folded, "c").output, ["y"]);
        assert_eq!(initializers(&folded), ["c.w", "c.w_bias"]);
        assert_same_outputs(&original, &folded, &[1, 3, 10]);
    }

    #[test]
    fn fold_gemm_rows_columns_and_beta() {
        let mut b = Builder::new();
        b.input("x", &[2, 8])
            // transB = 1: B[6, 8], scaled by rows.
            .random("g1.w", &[6, 8])
            .random("g1.b", &[6])
            .op("Gemm", "g1", &["x", "g1.w", "g1.b"], vec![int("transB", 1)])
            .bn("bn1", "g1", 6, "bn1")
            .op("Relu", "r1", &["bn1"], vec![])
            // transB = 0: B[6, 5], scaled by columns; alpha, beta and a [1, 5] bias.
            .random("g2.w", &[6, 5])
            .random("g2.c", &[1, 5])
            .op(
                "Gemm",
                "g2",
                &["r1", "g2.w", "g2.c"],
                vec![float("alpha", 1.5), float("beta", 0.5)],
            )
            .bn("bn2", "g2", 5, "bn2")
            .op("Relu", "r2", &["bn2"], vec![])
            // No bias, and a scalar one broadcast over the columns.
            .random("g3.w", &[5, 4])
            .op("Gemm", "g3", &["r2", "g3.w"], vec![])
            .bn("bn3", "g3", 4, "bn3")
            .random("g4.w", &[3, 4])
            .init("g4.c", &[], &[0.25])
            .op(
                "Gemm",
                "g4",
                &["bn3", "g4.w", "g4.c"],
                vec![int("transB", 1), float("beta", 2.0)],
            )
            .bn("bn4", "g4", 3, "out")
            .output("out", &[2, 3]);
        let original = b.model();
        let (folded, report) = fold(&original);
        assert_eq!(
            report.folded,
            pairs(&[("bn1", "g1"), ("bn2", "g2"), ("bn3", "g3"), ("bn4", "g4")])
        );
        assert_eq!(
            ops(&folded),
            ["Gemm", "Relu", "Gemm", "Relu", "Gemm", "Gemm"]
        );
        // beta went into the new bias.
        assert_eq!(attr_float(node(&folded, "g2"), "beta", 1.0), 1.0);
        assert_eq!(attr_float(node(&folded, "g2"), "alpha", 1.0), 1.5);
        assert_eq!(node(&folded, "g3").input, ["r2", "g3.w", "g3.w_bias"]);
        // The scalar bias changed shape, so it was replaced under a new name.
        assert_eq!(node(&folded, "g4").input, ["bn3", "g4.w", "g4.c_folded"]);
        assert_eq!(
            initializers(&folded),
            [
                "g1.b",
                "g1.w",
                "g2.c",
                "g2.w",
                "g3.w",
                "g3.w_bias",
                "g4.c_folded",
                "g4.w"
            ]
        );
        assert_same_outputs(&original, &folded, &[2, 8]);
    }

    #[test]
    fn fold_grouped_conv_transpose() {
        let mut b = Builder::new();
        b.input("x", &[1, 4, 5, 5])
            // Cin 4, group 2, Cout/g 3: 6 output channels.
            .random("ct.w", &[4, 3, 3, 3])
            .random("ct.b", &[6])
            .op(
                "ConvTranspose",
                "ct",
                &["x", "ct.w", "ct.b"],
                vec![int("group", 2), ints("strides", &[2, 2])],
            )
            .bn("bn", "ct", 6, "out")
            .output("out", &[1, 6, 11, 11]);
        let original = b.model();
        let (folded, report) = fold(&original);
        assert_eq!(report.folded, pairs(&[("bn", "ct")]));
        assert_eq!(ops(&folded), ["ConvTranspose"]);
        assert_same_outputs(&original, &folded, &[1, 4, 5, 5]);
    }

    #[test]
    fn shared_weights_are_copied_and_chains_fold_completely() {
        let mut b = Builder::new();
        b.input("x", &[1, 4, 5, 5])
            .random("w", &[4, 4, 1, 1])
            .random("b", &[4])
            .op("Conv", "c1", &["x", "w", "b"], vec![])
            .bn("bn1", "c1", 4, "bn1")
            .op("Relu", "relu", &["bn1"], vec![])
            .op("Conv", "c2", &["relu", "w"], vec![])
            .bn("bnA", "c2", 4, "bnA")
            .bn("bnB", "bnA", 4, "out")
            .output("out", &[1, 4, 5, 5]);
        let original = b.model();
        let (folded, report) = fold(&original);
        assert_eq!(
            report.folded,
            pairs(&[("bn1", "c1"), ("bnA", "c2"), ("bnB", "c2")])
        );
        assert!(report.kept.is_empty(), "{:?}", report.kept);
        assert_eq!(ops(&folded), ["Conv", "Relu", "Conv"]);
        assert_eq!(node(&folded, "c1").input, ["x", "w_folded", "b"]);
        assert_eq!(node(&folded, "c2").input, ["relu", "w_folded_1", "w_bias"]);
        assert_eq!(node(&folded, "c2").output, ["out"]);
        // `w` is read by nothing any more.
        assert_eq!(
            initializers(&folded),
            ["b", "w_bias", "w_folded", "w_folded_1"]
        );
        assert_same_outputs(&original, &folded, &[1, 4, 5, 5]);
    }

    #[test]
    fn batch_norms_that_cannot_fold_are_kept_with_the_reason() {
        let mut b = Builder::new();
        b.input("x", &[1, 3, 6, 6])
            .random("c.w", &[4, 3, 3, 3])
            .op(
                "Conv",
                "c",
                &["x", "c.w"],
                vec![ints("pads", &[1, 1, 1, 1])],
            )
            .bn("bn", "c", 4, "bn")
            .op("Relu", "side", &["c"], vec![])
            .op("Add", "add", &["bn", "side"], vec![])
            .bn("after_add", "add", 4, "after_add")
            .bn("on_input", "x", 3, "on_input")
            .op("GlobalAveragePool", "pool", &["on_input"], vec![])
            .op("Flatten", "flat", &["pool"], vec![])
            .op("Flatten", "flat2", &["after_add"], vec![])
            .op("Concat", "out", &["flat", "flat2"], vec![int("axis", 1)])
            .output("out", &[1, 147]);
        let original = b.model();
        let (folded, report) = fold(&original);
        assert!(report.folded.is_empty());
        let reason = |bn: &str| {
            report
                .kept
                .iter()
                .find(|(n, _)| n == bn)
                .map(|(_, r)| r.clone())
                .unwrap()
        };
        assert_eq!(
            reason("bn"),
            "`c` (the output of Conv `c`) is also read by Relu `side`"
        );
        assert!(reason("after_add").contains("comes from Add `add`"));
        assert!(reason("on_input").contains("not produced by a node"));
        assert_eq!(report.kept.len(), 3);
        assert_eq!(folded, original);
        assert_same_outputs(&original, &folded, &[1, 3, 6, 6]);

        // Training mode, a graph output in between, a non-float weight: kept too.
        let mut b = Builder::new();
        b.input("x", &[1, 3, 6, 6])
            .random("c1.w", &[4, 3, 1, 1])
            .op("Conv", "c1", &["x", "c1.w"], vec![])
            .bn("train", "c1", 4, "train")
            .random("c2.w", &[4, 4, 1, 1])
            .op("Conv", "c2", &["train", "c2.w"], vec![])
            .bn("shown", "c2", 4, "shown")
            .node("Conv", "c3", &["shown", "c2.w", "c3.b"], &["c3"], vec![])
            .bn("int_bias", "c3", 4, "out")
            .output("out", &[1, 4, 6, 6])
            .output("c2", &[1, 4, 6, 6]);
        let mut original = b.model();
        let graph = original.graph.as_mut().unwrap();
        let mut bias = float_tensor("c3.b", &[4], &[0.0; 4]);
        bias.set_data_type(DType::INT32.0);
        bias.set_raw_data(vec![0; 16]);
        graph.initializer.push(bias);
        graph.node[1].attribute.push(int("training_mode", 1));
        let (folded, report) = fold(&original);
        assert!(report.folded.is_empty(), "{:?}", report.folded);
        assert!(
            report.kept[0].1.contains("training_mode=1"),
            "{:?}",
            report.kept
        );
        assert!(
            report.kept[1].1.contains("is a graph output"),
            "{:?}",
            report.kept
        );
        assert!(report.kept[2].1.contains("int32"), "{:?}", report.kept);
        assert_eq!(folded, original);
    }

    fn mnist_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../sample-models/mnist-cnn")
    }

    #[test]
    fn mnist_cnn_folds_every_batch_norm() {
        let model = crate::load::load_model(
            &mnist_dir().join("model.onnx"),
            &NoProgress,
            &CancelToken::new(),
        )
        .unwrap();
        let (folded, report) = fold_batchnorm(&model).unwrap();
        assert_eq!(report.folded.len(), 10, "{report:?}");
        assert!(report.kept.is_empty(), "{:?}", report.kept);
        assert!(
            report
                .folded
                .iter()
                .all(|(bn, layer)| bn.strip_suffix(".bn") == layer.strip_suffix(".conv")),
            "{report:?}"
        );
        assert!(!ops(&folded).contains(&"BatchNormalization"));
        let before = model.proto.graph.node.len();
        let after = folded.graph.node.len();
        assert_eq!(before - after, 10);

        let data = crate::dataset::load_dataset(&mnist_dir(), None).unwrap();
        let shape = [1, 1, 28, 28];
        let a = TractModel::build(&model.proto, None, &shape, &[]).unwrap();
        let b = TractModel::build(&folded, None, &shape, &[]).unwrap();
        let mut max_diff = 0f32;
        let mut max_logit = 0f32;
        let samples = 20.min(data.len());
        assert_eq!(samples, 20);
        for i in 0..samples {
            let x = a.run(data.sample(i)).unwrap().remove(0);
            let y = b.run(data.sample(i)).unwrap().remove(0);
            assert_eq!(x.len(), 10);
            for (p, q) in x.iter().zip(&y) {
                max_diff = max_diff.max((p - q).abs());
                max_logit = max_logit.max(p.abs());
            }
        }
        println!(
            "mnist-cnn: nodes {before} -> {after}, initializers {} -> {}, max |logit difference| {max_diff:e} on {samples} samples (max |logit| {max_logit})",
            model.proto.graph.initializer.len(),
            folded.graph.initializer.len()
        );
        assert!(max_diff <= 1e-4, "{max_diff}");

        let reloaded =
            crate::load::from_proto(folded, mnist_dir().join("folded.onnx"), 0, &NoProgress)
                .unwrap();
        assert!(reloaded.warnings.is_empty(), "{:?}", reloaded.warnings);
        let analysis = crate::analyse(
            &reloaded,
            &Default::default(),
            &NoProgress,
            &CancelToken::new(),
        )
        .unwrap();
        assert!(analysis.macs_complete);
        assert_eq!(analysis.nodes, after);
    }
}
