//! Structured pruning that removes work: planned output channels of a layer are physically
//! cut out of its weight, and the graph downstream is shrunk to match (batch norms,
//! activations, depthwise convolutions, pools, and the input channels of the next layer).
//!
//! A model pass: model in, model + report out. A layer whose output reaches something that
//! cannot follow the new channel count (a residual `Add`, a `Concat`, a `Reshape`, a graph
//! output, an unknown op) is left untouched and the report says which node blocked it.
//!
//! Nodes are never added, removed or reordered, so names stay unique and the graph stays
//! topologically sorted; a weight shared with nodes outside the path is copied (under a new,
//! unique initializer name) rather than sliced in place.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use serde::Serialize;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::Dim;
use crate::load::LoadedModel;
use crate::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, attribute_proto,
    tensor_shape_proto, type_proto,
};
use crate::tensor::decode_f32;

/// Output channels to remove, by layer (node) name, ascending indices.
pub type ChannelPlan = BTreeMap<String, Vec<usize>>;

/// What the pass did to one requested layer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChannelRemoval {
    pub layer: String,
    /// Channels asked to remove.
    pub requested: usize,
    /// Channels physically removed (0 when the graph does not allow it).
    pub removed: usize,
    /// Output channels of the layer before the pass (0 when the layer is not a channel
    /// producer this pass understands).
    pub channels_before: usize,
    /// Why fewer channels were removed than requested.
    pub reason: Option<String>,
    /// Other nodes whose weights (or `group`) were changed to follow the new channel count.
    pub affected: Vec<String>,
}

/// Returns a new model (self-contained, no external data) with the planned channels
/// physically removed wherever the graph allows, plus one [`ChannelRemoval`] per planned
/// layer, in plan order.
///
/// Layers are processed one after the other on the model being rewritten, so removing the
/// output channels of two consecutive layers composes. Fails on a layer name that is not a
/// main-graph node, on indices that are not strictly ascending or out of range, and on
/// weights whose data is corrupt.
pub fn remove_channels(
    model: &LoadedModel,
    plan: &ChannelPlan,
) -> Result<(ModelProto, Vec<ChannelRemoval>)> {
    let mut proto = model.self_contained_proto()?;
    let mut targets = Vec::with_capacity(plan.len());
    for (layer, channels) in plan {
        let node = model
            .graph
            .main_nodes()
            .find(|n| &n.name == layer)
            .ok_or_else(|| Error::Recipe {
                reason: format!("no layer called `{layer}` in the main graph"),
            })?;
        if let Some(w) = channels.windows(2).find(|w| w[0] >= w[1]) {
            return Err(Error::InvalidArgument {
                what: "channel plan",
                reason: format!(
                    "channels of `{layer}` must be strictly ascending, found {} then {}",
                    w[0], w[1]
                ),
            });
        }
        targets.push((layer, node.outputs.first().cloned(), channels));
    }
    let mut report = Vec::with_capacity(targets.len());
    for (layer, output, channels) in targets {
        let graph = proto.graph.as_mut().ok_or_else(|| Error::InvalidArgument {
            what: "model",
            reason: "no graph".to_owned(),
        })?;
        report.push(prune_layer(
            graph,
            model,
            layer,
            output.as_deref(),
            channels,
        )?);
    }
    Ok((proto, report))
}

// ---------------------------------------------------------------------------------------------
// Index of the graph being rewritten

/// Where a constant tensor is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stored {
    Initializer(usize),
    ConstantNode(usize),
}

/// A constant's value as stored.
enum ConstRef<'a> {
    Tensor(&'a TensorProto),
    /// `Constant` with `value_float(s)` / `value_int(s)`: element type, dims, values.
    Inline(i32, Vec<i64>, Vec<f32>),
}

impl ConstRef<'_> {
    fn dtype(&self) -> DType {
        match self {
            ConstRef::Tensor(t) => DType(t.data_type()),
            ConstRef::Inline(dtype, _, _) => DType(*dtype),
        }
    }

    fn dims(&self) -> &[i64] {
        match self {
            ConstRef::Tensor(t) => &t.dims,
            ConstRef::Inline(_, dims, _) => dims,
        }
    }

    fn elements(&self) -> i64 {
        self.dims().iter().product()
    }

    /// Values of a float32 constant.
    fn float_values(&self, name: &str) -> Result<Vec<f32>> {
        let bad = |reason: &str| Error::BadTensor {
            tensor: name.to_owned(),
            reason: reason.to_owned(),
        };
        if self.dtype() != DType::FLOAT32 {
            return Err(bad("only float32 weights can be sliced"));
        }
        match self {
            ConstRef::Tensor(t) => {
                decode_f32(t, None)?.ok_or_else(|| bad("its values cannot be decoded"))
            }
            ConstRef::Inline(_, _, values) => Ok(values.clone()),
        }
    }
}

/// Edges, constants and outputs of the main graph, by tensor name.
struct Index<'a> {
    graph: &'a GraphProto,
    /// Tensor → every (node, input slot) reading it.
    consumers: HashMap<&'a str, Vec<(usize, usize)>>,
    outputs: HashSet<&'a str>,
    /// Names read by nodes inside subgraphs (they may capture main-graph tensors).
    captured: HashSet<&'a str>,
    stored: HashMap<&'a str, Stored>,
}

impl<'a> Index<'a> {
    fn new(graph: &'a GraphProto) -> Self {
        let mut consumers: HashMap<&str, Vec<(usize, usize)>> = HashMap::new();
        let mut stored = HashMap::new();
        let mut captured = HashSet::new();
        for (i, t) in graph.initializer.iter().enumerate() {
            stored.insert(t.name(), Stored::Initializer(i));
        }
        for (i, node) in graph.node.iter().enumerate() {
            for (slot, input) in node.input.iter().enumerate() {
                if !input.is_empty() {
                    consumers.entry(input.as_str()).or_default().push((i, slot));
                }
            }
            if let Some(out) = node.output.first().filter(|_| is_op(node, "Constant")) {
                stored.insert(out.as_str(), Stored::ConstantNode(i));
            }
            for attr in &node.attribute {
                for g in attr.g.iter().chain(&attr.graphs) {
                    collect_reads(g, &mut captured);
                }
            }
        }
        Self {
            graph,
            consumers,
            outputs: graph.output.iter().map(|o| o.name()).collect(),
            captured,
            stored,
        }
    }

    fn node(&self, i: usize) -> &'a NodeProto {
        &self.graph.node[i]
    }

    fn node_name(&self, i: usize) -> String {
        let node = self.node(i);
        if node.name().is_empty() {
            format!("{}#{i}", node.op_type())
        } else {
            node.name().to_owned()
        }
    }

    fn const_ref(&self, name: &str) -> Option<ConstRef<'a>> {
        match *self.stored.get(name)? {
            Stored::Initializer(i) => Some(ConstRef::Tensor(&self.graph.initializer[i])),
            Stored::ConstantNode(i) => {
                let attr = self.graph.node[i].attribute.first()?;
                match attr.name() {
                    "value" => attr.t.as_ref().map(ConstRef::Tensor),
                    "value_float" => Some(ConstRef::Inline(1, vec![], vec![attr.f()])),
                    "value_floats" => Some(ConstRef::Inline(
                        1,
                        vec![attr.floats.len() as i64],
                        attr.floats.clone(),
                    )),
                    "value_int" => Some(ConstRef::Inline(7, vec![], vec![attr.i() as f32])),
                    "value_ints" => Some(ConstRef::Inline(
                        7,
                        vec![attr.ints.len() as i64],
                        attr.ints.iter().map(|&v| v as f32).collect(),
                    )),
                    _ => None,
                }
            }
        }
    }

    fn consumers_of(&self, name: &str) -> &[(usize, usize)] {
        self.consumers.get(name).map_or(&[], Vec::as_slice)
    }

    /// Whether `name` is read only by input `slot` of `node` (so it can be sliced in place).
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

fn attr_int(node: &NodeProto, name: &str, default: i64) -> i64 {
    node.attribute
        .iter()
        .find(|a| a.name() == name)
        .map_or(default, |a| a.i())
}

// ---------------------------------------------------------------------------------------------
// Tracing the channels of one layer through the graph

/// Where the channels sit in a tensor on the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    /// Rank of the tensor, when known.
    rank: Option<usize>,
    /// Position of the channel axis counted from the end (1 = last axis).
    from_end: usize,
    /// Whether every axis after the channel axis is known to have size 1.
    pooled: bool,
}

impl Layout {
    /// `[N, C, spatial…]`.
    fn channels_first(rank: usize) -> Self {
        Self {
            rank: Some(rank),
            from_end: rank.saturating_sub(1),
            pooled: rank <= 2,
        }
    }

    /// Whether the channel axis is axis 1 (`[N, C, …]`).
    fn axis1(&self) -> bool {
        self.rank == Some(self.from_end + 1)
    }

    fn same_axis(&self, other: &Layout) -> bool {
        self.rank == other.rank && self.from_end == other.from_end
    }
}

/// One weight input to cut along `axis`.
#[derive(Clone, Debug)]
struct Slice {
    node: usize,
    slot: usize,
    axis: usize,
}

/// Why a layer is left alone.
type Refusal = String;

/// What the pass will do for one layer, found without changing anything.
struct Trace<'a> {
    channels: usize,
    slices: Vec<Slice>,
    /// Depthwise convolutions whose `group` becomes the new channel count.
    groups: Vec<usize>,
    /// Tensors whose channel count changes.
    changed: Vec<&'a str>,
    /// Nodes other than the producer whose weights or attributes change.
    affected: Vec<usize>,
}

/// The planned layer: its output channel count, output tensor and its own weight slices.
struct Producer<'a> {
    channels: usize,
    output: &'a str,
    layout: Layout,
    slices: Vec<Slice>,
}

fn float_weight(ix: &Index<'_>, node: usize, slot: usize) -> Result<Vec<i64>, Refusal> {
    let name = ix
        .node(node)
        .input
        .get(slot)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("`{}` has no input {slot}", ix.node_name(node)))?;
    let c = ix.const_ref(name).ok_or_else(|| {
        format!(
            "`{}` reads `{name}`, which is not a stored constant",
            ix.node_name(node)
        )
    })?;
    if c.dtype() != DType::FLOAT32 {
        return Err(format!(
            "`{name}` (read by `{}`) is {}; only float32 weights are sliced",
            ix.node_name(node),
            c.dtype()
        ));
    }
    Ok(c.dims().to_vec())
}

fn producer<'a>(ix: &Index<'a>, model: &LoadedModel, n: usize) -> Result<Producer<'a>, Refusal> {
    let node = ix.node(n);
    let name = ix.node_name(n);
    let output = node
        .output
        .first()
        .filter(|o| !o.is_empty())
        .ok_or_else(|| format!("`{name}` has no output"))?;
    let as_channels =
        |d: i64| usize::try_from(d).map_err(|_| format!("`{name}`: bad weight shape"));
    let mut slices = Vec::new();
    let (channels, layout) = if is_op(node, "Conv") {
        let group = attr_int(node, "group", 1);
        if group != 1 {
            return Err(format!(
                "`{name}` is a grouped/depthwise Conv (group {group}): its output channels are tied to its input channels; prune the layer that feeds it"
            ));
        }
        let w = float_weight(ix, n, 1)?;
        if w.len() < 3 {
            return Err(format!("`{name}`: Conv weight of rank {}", w.len()));
        }
        let channels = as_channels(w[0])?;
        slices.push(Slice {
            node: n,
            slot: 1,
            axis: 0,
        });
        if node.input.get(2).is_some_and(|b| !b.is_empty()) {
            let b = float_weight(ix, n, 2)?;
            if b != [w[0]] {
                return Err(format!("`{name}`: bias shape {b:?} does not match {w:?}"));
            }
            slices.push(Slice {
                node: n,
                slot: 2,
                axis: 0,
            });
        }
        (channels, Layout::channels_first(w.len()))
    } else if is_op(node, "Gemm") {
        let b = float_weight(ix, n, 1)?;
        if b.len() != 2 {
            return Err(format!("`{name}`: Gemm weight of rank {}", b.len()));
        }
        let axis = if attr_int(node, "transB", 0) != 0 {
            0
        } else {
            1
        };
        let channels = as_channels(b[axis])?;
        slices.push(Slice {
            node: n,
            slot: 1,
            axis,
        });
        if node.input.get(2).is_some_and(|c| !c.is_empty()) {
            let c = float_weight(ix, n, 2)?;
            match c.last() {
                None | Some(1) => {}
                Some(&last) if last == b[axis] => slices.push(Slice {
                    node: n,
                    slot: 2,
                    axis: c.len() - 1,
                }),
                Some(_) => return Err(format!("`{name}`: bias shape {c:?} does not broadcast")),
            }
        }
        (channels, Layout::channels_first(2))
    } else if is_op(node, "MatMul") {
        let b = float_weight(ix, n, 1)?;
        if b.len() != 2 {
            return Err(format!(
                "`{name}`: only a MatMul with a 2-D constant right operand is pruned (weight rank {})",
                b.len()
            ));
        }
        let channels = as_channels(b[1])?;
        slices.push(Slice {
            node: n,
            slot: 1,
            axis: 1,
        });
        let rank = node
            .input
            .first()
            .and_then(|a| model.shapes.get(a))
            .and_then(|f| f.shape.as_ref())
            .map(Vec::len);
        let layout = Layout {
            rank,
            from_end: 1,
            pooled: rank == Some(2),
        };
        (channels, layout)
    } else {
        return Err(format!(
            "{} `{name}` is not a channel producer here (Conv with group 1, Gemm, or MatMul with a constant weight)",
            node.op_type()
        ));
    };
    Ok(Producer {
        channels,
        output: output.as_str(),
        layout,
        slices,
    })
}

/// Ops that act on each element alone: channels pass through unchanged.
const ELEMENTWISE: &[&str] = &[
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "Tanh",
    "Elu",
    "Selu",
    "Celu",
    "Softplus",
    "Softsign",
    "Mish",
    "Gelu",
    "ThresholdedRelu",
];

/// Binary ops whose second operand may be a per-channel constant or another path tensor.
const BINARY: &[&str] = &["Add", "Sub", "Mul", "Div", "PRelu"];

struct Tracer<'a, 'b> {
    ix: &'b Index<'a>,
    model: &'b LoadedModel,
    channels: usize,
    slices: Vec<Slice>,
    groups: Vec<usize>,
    layouts: HashMap<&'a str, Layout>,
    order: Vec<&'a str>,
    queue: VecDeque<&'a str>,
    visited: HashSet<usize>,
    /// Binary nodes reading two path tensors: (node, other input, layout of the first).
    joins: Vec<(usize, &'a str, Layout)>,
    affected: Vec<usize>,
}

impl<'a> Tracer<'a, '_> {
    fn reach(&mut self, tensor: &'a str, layout: Layout) {
        if tensor.is_empty() || self.layouts.contains_key(tensor) {
            return;
        }
        self.layouts.insert(tensor, layout);
        self.order.push(tensor);
        self.queue.push_back(tensor);
    }

    fn touch(&mut self, n: usize) {
        if !self.affected.contains(&n) {
            self.affected.push(n);
        }
    }

    /// Cuts input `slot` of node `n` along `axis`, which must hold the current channels.
    fn slice(&mut self, n: usize, slot: usize, axis: usize) -> Result<(), Refusal> {
        let dims = float_weight(self.ix, n, slot)?;
        if dims.get(axis).copied() != Some(self.channels as i64) {
            return Err(format!(
                "`{}` input {slot} has shape {dims:?}, expected {} on axis {axis}",
                self.ix.node_name(n),
                self.channels
            ));
        }
        self.slices.push(Slice {
            node: n,
            slot,
            axis,
        });
        self.touch(n);
        Ok(())
    }

    /// Whether input `slot` of `n` is a constant with at most one element (or absent).
    fn scalar_or_absent(&self, n: usize, slot: usize) -> bool {
        match self.ix.node(n).input.get(slot) {
            None => true,
            Some(name) if name.is_empty() => true,
            Some(name) => self.ix.const_ref(name).is_some_and(|c| c.elements() <= 1),
        }
    }

    /// Refuses when `tensor`, a side output of a path node, is used at all.
    fn unused(&mut self, n: usize, tensor: Option<&'a String>) -> Result<(), Refusal> {
        let Some(t) = tensor.filter(|t| !t.is_empty()) else {
            return Ok(());
        };
        if !self.ix.consumers_of(t).is_empty()
            || self.ix.outputs.contains(t.as_str())
            || self.ix.captured.contains(t.as_str())
        {
            return Err(format!(
                "output `{t}` of {} `{}` is used",
                self.ix.node(n).op_type(),
                self.ix.node_name(n)
            ));
        }
        self.order.push(t.as_str());
        Ok(())
    }

    fn run(&mut self) -> Result<(), Refusal> {
        while let Some(t) = self.queue.pop_front() {
            if self.ix.outputs.contains(t) {
                return Err(format!("`{t}` is a graph output"));
            }
            if self.ix.captured.contains(t) {
                return Err(format!("`{t}` is read inside a subgraph"));
            }
            let layout = self
                .layouts
                .get(t)
                .copied()
                .ok_or("internal: lost layout")?;
            for &(n, _) in self.ix.consumers_of(t) {
                if self.visited.insert(n) {
                    self.follow(n, t, layout)?;
                }
            }
        }
        for &(n, other, layout) in &self.joins {
            match self.layouts.get(other) {
                Some(l) if l.same_axis(&layout) => {}
                _ => {
                    let node = self.ix.node(n);
                    return Err(format!(
                        "the channels feed {} `{}`, which also reads `{other}` from another branch (e.g. a residual connection)",
                        node.op_type(),
                        self.ix.node_name(n)
                    ));
                }
            }
        }
        Ok(())
    }

    /// Handles node `n`, reached through path tensor `t`.
    fn follow(&mut self, n: usize, t: &'a str, layout: Layout) -> Result<(), Refusal> {
        let ix = self.ix;
        let node = ix.node(n);
        let op = node.op_type();
        let name = ix.node_name(n);
        let blocked = |why: &str| format!("the channels feed {op} `{name}` ({why})");
        let known = node.domain().is_empty() || node.domain() == "ai.onnx";
        if !known {
            return Err(blocked(&format!("op of domain `{}`", node.domain())));
        }
        let first_only = node.input.first().map(String::as_str) == Some(t)
            && node.input.iter().skip(1).all(|i| i != t);
        let output = node.output.first().filter(|o| !o.is_empty());
        let is_binary = BINARY.contains(&op);
        if !first_only && !is_binary {
            return Err(blocked("the channels are not its data input"));
        }
        let needs_axis1 = |l: &Layout| {
            if l.axis1() {
                Ok(())
            } else {
                Err(blocked("its channel axis is not the one being pruned"))
            }
        };
        match op {
            _ if ELEMENTWISE.contains(&op) => {
                if let Some(out) = output {
                    self.reach(out, layout);
                }
            }
            "Dropout" => {
                if !(self.scalar_or_absent(n, 1) && self.scalar_or_absent(n, 2)) {
                    return Err(blocked("its ratio is not a constant"));
                }
                self.unused(n, node.output.get(1))?;
                if let Some(out) = output {
                    self.reach(out, layout);
                }
            }
            "Clip" => {
                if !(self.scalar_or_absent(n, 1) && self.scalar_or_absent(n, 2)) {
                    return Err(blocked("its min/max are not constant scalars"));
                }
                if let Some(out) = output {
                    self.reach(out, layout);
                }
            }
            "BatchNormalization" | "InstanceNormalization" => {
                needs_axis1(&layout)?;
                let params = if op == "BatchNormalization" { 4 } else { 2 };
                if node.output.iter().skip(1).any(|o| !o.is_empty()) {
                    return Err(blocked("training-mode outputs"));
                }
                for slot in 1..=params {
                    self.slice(n, slot, 0)?;
                }
                if let Some(out) = output {
                    self.reach(out, layout);
                }
            }
            "Conv" => {
                needs_axis1(&layout)?;
                let w = float_weight(ix, n, 1).map_err(|e| blocked(&e))?;
                if Some(w.len()) != layout.rank {
                    return Err(blocked("weight rank does not match its input"));
                }
                let group = attr_int(node, "group", 1);
                let c = self.channels as i64;
                if group == 1 {
                    self.slice(n, 1, 1)?;
                } else if group == c && w[0] == c && w.get(1) == Some(&1) {
                    // Depthwise: one filter per channel; the channels carry on through it.
                    self.slice(n, 1, 0)?;
                    if node.input.get(2).is_some_and(|b| !b.is_empty()) {
                        self.slice(n, 2, 0)?;
                    }
                    self.groups.push(n);
                    if let Some(out) = output {
                        self.reach(
                            out,
                            Layout {
                                pooled: false,
                                ..layout
                            },
                        );
                    }
                } else {
                    return Err(blocked(&format!(
                        "grouped convolution, group {group} with weight {w:?}"
                    )));
                }
            }
            "ConvTranspose" => {
                needs_axis1(&layout)?;
                if attr_int(node, "group", 1) != 1 {
                    return Err(blocked("grouped convolution"));
                }
                self.slice(n, 1, 0)?;
            }
            "MaxPool" | "AveragePool" | "LpPool" => {
                needs_axis1(&layout)?;
                self.unused(n, node.output.get(1))?;
                if let Some(out) = output {
                    self.reach(
                        out,
                        Layout {
                            pooled: false,
                            ..layout
                        },
                    );
                }
            }
            "GlobalAveragePool" | "GlobalMaxPool" | "GlobalLpPool" => {
                needs_axis1(&layout)?;
                if let Some(out) = output {
                    self.reach(
                        out,
                        Layout {
                            pooled: true,
                            ..layout
                        },
                    );
                }
            }
            "Flatten" => {
                needs_axis1(&layout)?;
                let rank = layout.rank.unwrap_or(0) as i64;
                let axis = attr_int(node, "axis", 1);
                if axis != 1 && axis != 1 - rank {
                    return Err(blocked(&format!(
                        "axis {axis} mixes channels with other axes"
                    )));
                }
                if !(layout.pooled || self.spatial_ones(t)) {
                    return Err(blocked(
                        "it mixes channels with spatial positions (only a flatten after a global pool is followed)",
                    ));
                }
                if let Some(out) = output {
                    self.reach(out, Layout::channels_first(2));
                }
            }
            "Gemm" => {
                if layout.from_end != 1 || attr_int(node, "transA", 0) != 0 {
                    return Err(blocked("the channels are not the columns of its input A"));
                }
                let axis = if attr_int(node, "transB", 0) != 0 {
                    1
                } else {
                    0
                };
                self.slice(n, 1, axis)?;
            }
            "MatMul" => {
                if layout.from_end != 1 {
                    return Err(blocked("the channels are not the last axis of its input"));
                }
                let b = float_weight(ix, n, 1).map_err(|e| blocked(&e))?;
                if b.len() != 2 {
                    return Err(blocked("its weight is not 2-D"));
                }
                self.slice(n, 1, 0)?;
            }
            _ if is_binary => {
                if node.input.len() != 2 {
                    return Err(blocked("unexpected number of inputs"));
                }
                let mut out_layout = layout;
                for slot in 0..2 {
                    let input = node.input[slot].as_str();
                    if input == t {
                        continue;
                    }
                    match ix.const_ref(input) {
                        Some(c) => {
                            let dims = c.dims().to_vec();
                            let at = dims.len() as i64 - layout.from_end as i64;
                            if at >= 0 {
                                let at = at as usize;
                                if dims[at] == self.channels as i64 {
                                    self.slice(n, slot, at)?;
                                } else if dims[at] != 1 {
                                    return Err(blocked(&format!(
                                        "`{input}` has shape {dims:?}, which does not broadcast per channel"
                                    )));
                                }
                                if dims[at + 1..].iter().any(|&d| d != 1) {
                                    out_layout.pooled = false;
                                }
                            }
                            out_layout.rank = layout.rank.map(|r| r.max(dims.len()));
                        }
                        None => {
                            self.joins
                                .push((n, ix.node(n).input[slot].as_str(), layout));
                            out_layout.pooled = false;
                        }
                    }
                }
                if let Some(out) = output {
                    self.reach(out, out_layout);
                }
            }
            "Concat" | "Split" => return Err(blocked("it needs the full channel count")),
            "Reshape" | "Transpose" | "Squeeze" | "Unsqueeze" => {
                return Err(blocked("it moves the channel axis"));
            }
            _ => return Err(blocked("an op this pass does not follow")),
        }
        Ok(())
    }

    /// Whether the loaded model's shape facts show every axis after the channels is 1.
    fn spatial_ones(&self, t: &str) -> bool {
        self.model
            .shapes
            .get(t)
            .and_then(|f| f.shape.as_ref())
            .is_some_and(|s| s.len() >= 2 && s[2..].iter().all(|d| *d == Dim::Known(1)))
    }
}

fn trace<'a>(
    ix: &Index<'a>,
    model: &LoadedModel,
    producer: &Producer<'a>,
    n: usize,
) -> Result<Trace<'a>, Refusal> {
    let mut tracer = Tracer {
        ix,
        model,
        channels: producer.channels,
        slices: producer.slices.clone(),
        groups: Vec::new(),
        layouts: HashMap::new(),
        order: Vec::new(),
        queue: VecDeque::new(),
        visited: HashSet::from([n]),
        joins: Vec::new(),
        affected: Vec::new(),
    };
    tracer.reach(producer.output, producer.layout);
    tracer.run()?;
    Ok(Trace {
        channels: producer.channels,
        slices: tracer.slices,
        groups: tracer.groups,
        changed: tracer.order,
        affected: tracer.affected,
    })
}

// ---------------------------------------------------------------------------------------------
// Rewriting

/// A weight's new contents.
struct TensorEdit {
    node: usize,
    slot: usize,
    name: String,
    /// Sliced where it is stored, or (when shared) copied under a new name.
    in_place: Option<Stored>,
    dims: Vec<i64>,
    values: Vec<f32>,
}

fn prune_layer(
    graph: &mut GraphProto,
    model: &LoadedModel,
    layer: &str,
    output: Option<&str>,
    planned: &[usize],
) -> Result<ChannelRemoval> {
    let mut result = ChannelRemoval {
        layer: layer.to_owned(),
        requested: planned.len(),
        removed: 0,
        channels_before: 0,
        reason: None,
        affected: Vec::new(),
    };
    let (edits, groups, changed, removed) = {
        let ix = Index::new(graph);
        let position = output.and_then(|o| {
            ix.graph
                .node
                .iter()
                .position(|n| n.output.first().map(String::as_str) == Some(o))
        });
        let Some(n) = position else {
            result.reason = Some(format!("`{layer}` has no output to follow"));
            return Ok(result);
        };
        let producer = match producer(&ix, model, n) {
            Ok(p) => p,
            Err(reason) => {
                result.reason = (!planned.is_empty()).then_some(reason);
                return Ok(result);
            }
        };
        result.channels_before = producer.channels;
        if let Some(&bad) = planned.iter().find(|&&c| c >= producer.channels) {
            return Err(Error::InvalidArgument {
                what: "channel plan",
                reason: format!(
                    "`{layer}` has {} output channels; channel {bad} does not exist",
                    producer.channels
                ),
            });
        }
        if planned.is_empty() {
            return Ok(result);
        }
        let mut removed = planned.to_vec();
        if removed.len() >= producer.channels {
            let kept = strongest(&ix, &producer, &removed)?;
            removed.retain(|&c| c != kept);
            result.reason = Some(format!(
                "at least one channel is kept: channel {kept} (the largest planned weight norm) stays"
            ));
            if removed.is_empty() {
                return Ok(result);
            }
        }
        let trace = match trace(&ix, model, &producer, n) {
            Ok(t) => t,
            Err(reason) => {
                result.reason = Some(reason);
                return Ok(result);
            }
        };
        let mut edits = Vec::with_capacity(trace.slices.len());
        for s in &trace.slices {
            let name = ix.node(s.node).input[s.slot].clone();
            let c = ix.const_ref(&name).ok_or_else(|| Error::InvalidArgument {
                what: "model",
                reason: format!("`{name}` is no longer a constant"),
            })?;
            let values = c.float_values(&name)?;
            let (dims, values) = slice_axis(&name, &values, c.dims(), s.axis, &removed)?;
            let in_place = ix
                .private(&name, s.node, s.slot)
                .then(|| ix.stored.get(name.as_str()).copied())
                .flatten();
            edits.push(TensorEdit {
                node: s.node,
                slot: s.slot,
                name,
                in_place,
                dims,
                values,
            });
        }
        result.affected = trace
            .affected
            .iter()
            .filter(|&&a| a != n)
            .map(|&a| ix.node_name(a))
            .collect();
        let changed: HashSet<String> = trace.changed.iter().map(|s| (*s).to_owned()).collect();
        let new_count = (trace.channels - removed.len()) as i64;
        let groups: Vec<(usize, i64)> = trace.groups.iter().map(|&g| (g, new_count)).collect();
        (edits, groups, changed, removed.len())
    };
    apply(graph, edits, &groups, &changed);
    result.removed = removed;
    Ok(result)
}

/// The planned channel with the largest L2 norm in the producer's main weight.
fn strongest(ix: &Index<'_>, producer: &Producer<'_>, planned: &[usize]) -> Result<usize> {
    let first = planned.first().copied().unwrap_or(0);
    let Some(main) = producer.slices.first() else {
        return Ok(first);
    };
    let name = &ix.node(main.node).input[main.slot];
    let Some(c) = ix.const_ref(name) else {
        return Ok(first);
    };
    let values = c.float_values(name)?;
    let (_, n, inner) = split(c.dims(), main.axis);
    let mut norms = vec![0f64; n];
    for (i, v) in values.iter().enumerate() {
        norms[(i / inner.max(1)) % n.max(1)] += f64::from(*v) * f64::from(*v);
    }
    Ok(planned
        .iter()
        .copied()
        .max_by(|&a, &b| norms[a].total_cmp(&norms[b]).then(b.cmp(&a)))
        .unwrap_or(first))
}

/// (outer, channels, inner) sizes of `dims` around `axis`.
fn split(dims: &[i64], axis: usize) -> (usize, usize, usize) {
    let size = |d: &[i64]| d.iter().map(|&v| v.max(0) as usize).product::<usize>();
    let channels = dims.get(axis).map_or(1, |&d| d.max(0) as usize);
    let outer = size(dims.get(..axis).unwrap_or(&[]));
    let inner = size(dims.get(axis + 1..).unwrap_or(&[]));
    (outer, channels, inner)
}

/// `values` (C order, `dims`) without the indices `removed` of `axis`.
fn slice_axis(
    name: &str,
    values: &[f32],
    dims: &[i64],
    axis: usize,
    removed: &[usize],
) -> Result<(Vec<i64>, Vec<f32>)> {
    let (outer, channels, inner) = split(dims, axis);
    if axis >= dims.len() || outer * channels * inner != values.len() {
        return Err(Error::BadTensor {
            tensor: name.to_owned(),
            reason: format!(
                "{} values do not fit shape {dims:?} sliced on axis {axis}",
                values.len()
            ),
        });
    }
    let keep: Vec<bool> = (0..channels)
        .map(|c| removed.binary_search(&c).is_err())
        .collect();
    let kept = keep.iter().filter(|k| **k).count();
    let mut out = Vec::with_capacity(outer * kept * inner);
    for o in 0..outer {
        for (c, _) in keep.iter().enumerate().filter(|(_, k)| **k) {
            let start = (o * channels + c) * inner;
            out.extend_from_slice(&values[start..start + inner]);
        }
    }
    let mut new_dims = dims.to_vec();
    new_dims[axis] = kept as i64;
    Ok((new_dims, out))
}

fn apply(
    graph: &mut GraphProto,
    edits: Vec<TensorEdit>,
    groups: &[(usize, i64)],
    changed: &HashSet<String>,
) {
    let mut names = all_names(graph);
    let mut resized: HashSet<String> = changed.clone();
    for e in edits {
        match e.in_place {
            Some(Stored::Initializer(i)) => {
                let t = &mut graph.initializer[i];
                t.dims = e.dims.clone();
                t.float_data.clear();
                t.external_data.clear();
                t.set_data_type(DType::FLOAT32.0);
                t.set_raw_data(le_bytes(&e.values));
                // Old exports also list initializers as graph inputs, with their shape.
                for input in graph.input.iter_mut().filter(|i| i.name() == e.name) {
                    set_declared_shape(input, &e.dims);
                }
                resized.insert(e.name);
            }
            Some(Stored::ConstantNode(i)) => {
                let mut a = AttributeProto::new();
                a.set_name("value".to_owned());
                a.set_type(attribute_proto::AttributeType::TENSOR);
                a.t = Some(float_tensor(&e.name, &e.dims, &e.values)).into();
                graph.node[i].attribute = vec![a];
                resized.insert(e.name);
            }
            None => {
                let copy = unique(&mut names, &format!("{}_pruned", e.name));
                graph
                    .initializer
                    .push(float_tensor(&copy, &e.dims, &e.values));
                if let Some(input) = graph.node[e.node].input.get_mut(e.slot) {
                    *input = copy;
                }
            }
        }
    }
    for &(n, group) in groups {
        let node = &mut graph.node[n];
        match node.attribute.iter_mut().find(|a| a.name() == "group") {
            Some(a) => a.set_i(group),
            None => {
                let mut a = AttributeProto::new();
                a.set_name("group".to_owned());
                a.set_type(attribute_proto::AttributeType::INT);
                a.set_i(group);
                node.attribute.push(a);
            }
        }
    }
    // Declared shapes of resized tensors are stale: drop them (shape inference redoes them).
    graph.value_info.retain(|v| !resized.contains(v.name()));
}

fn set_declared_shape(info: &mut crate::proto::ValueInfoProto, dims: &[i64]) {
    let Some(t) = info.type_.as_mut() else {
        return;
    };
    if let Some(type_proto::Value::TensorType(tensor)) = t.value.as_mut() {
        let mut shape = crate::proto::TensorShapeProto::new();
        for &d in dims {
            let mut dim = tensor_shape_proto::Dimension::new();
            dim.set_dim_value(d);
            shape.dim.push(dim);
        }
        tensor.shape = Some(shape).into();
    }
}

fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn float_tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    let mut t = TensorProto::new();
    t.set_name(name.to_owned());
    t.set_data_type(DType::FLOAT32.0);
    t.dims = dims.to_vec();
    t.set_raw_data(le_bytes(values));
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
    }
    names.extend(graph.input.iter().map(|i| i.name().to_owned()));
    names.extend(graph.output.iter().map(|o| o.name().to_owned()));
    names.extend(graph.value_info.iter().map(|v| v.name().to_owned()));
    let mut sub = HashSet::new();
    for n in &graph.node {
        for attr in &n.attribute {
            for g in attr.g.iter().chain(&attr.graphs) {
                collect_reads(g, &mut sub);
            }
        }
    }
    names.extend(sub.into_iter().map(str::to_owned));
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
    use crate::proto::{OperatorSetIdProto, TypeProto, ValueInfoProto};
    use crate::runtime::TractModel;
    use crate::{CancelToken, NoProgress};

    /// Builds small test models.
    struct Builder {
        graph: GraphProto,
        rng: u64,
    }

    impl Builder {
        fn new() -> Self {
            Self {
                graph: GraphProto::new(),
                rng: 0x2545_F491_4F6C_DD1D,
            }
        }

        fn next(&mut self) -> f32 {
            self.rng ^= self.rng >> 12;
            self.rng ^= self.rng << 25;
            self.rng ^= self.rng >> 27;
            let bits = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
            bits as f32 / (1u64 << 24) as f32 - 0.5
        }

        fn random(&mut self, name: &str, dims: &[i64]) -> &mut Self {
            let n: i64 = dims.iter().product();
            let values: Vec<f32> = (0..n).map(|_| self.next()).collect();
            self.init(name, dims, &values)
        }

        /// Positive random values (BN variances, scales).
        fn positive(&mut self, name: &str, dims: &[i64]) -> &mut Self {
            let n: i64 = dims.iter().product();
            let values: Vec<f32> = (0..n).map(|_| self.next() + 1.0).collect();
            self.init(name, dims, &values)
        }

        fn init(&mut self, name: &str, dims: &[i64], values: &[f32]) -> &mut Self {
            self.graph
                .initializer
                .push(float_tensor(name, dims, values));
            self
        }

        fn constant(&mut self, name: &str, dims: &[i64], values: &[f32]) -> &mut Self {
            let mut a = AttributeProto::new();
            a.set_name("value".to_owned());
            a.set_type(attribute_proto::AttributeType::TENSOR);
            a.t = Some(float_tensor(name, dims, values)).into();
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

    /// Dims of a stored constant (initializer or Constant node) of `proto`.
    fn dims_of(proto: &ModelProto, name: &str) -> Vec<i64> {
        let graph = proto.graph.as_ref().unwrap();
        let ix = Index::new(graph);
        ix.const_ref(name)
            .unwrap_or_else(|| panic!("no constant `{name}`"))
            .dims()
            .to_vec()
    }

    fn node_input(proto: &ModelProto, node: &str, slot: usize) -> String {
        let graph = proto.graph.as_ref().unwrap();
        let n = graph.node.iter().find(|n| n.name() == node).unwrap();
        n.input[slot].clone()
    }

    /// Sets `values[c * inner .. (c + 1) * inner]` to zero for each channel `c` (axis 0).
    fn zero_rows(proto: &mut ModelProto, name: &str, channels: &[usize]) {
        zero_along(proto, name, 0, channels);
    }

    fn zero_along(proto: &mut ModelProto, name: &str, axis: usize, channels: &[usize]) {
        let graph = proto.graph.as_mut().unwrap();
        let (values, dims, at) = {
            let ix = Index::new(graph);
            let c = ix.const_ref(name).unwrap();
            (
                c.float_values(name).unwrap(),
                c.dims().to_vec(),
                ix.stored[name],
            )
        };
        let (_, n, inner) = split(&dims, axis);
        let values: Vec<f32> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                if channels.contains(&((i / inner) % n)) {
                    0.0
                } else {
                    v
                }
            })
            .collect();
        let t = float_tensor(name, &dims, &values);
        match at {
            Stored::Initializer(i) => graph.initializer[i] = t,
            Stored::ConstantNode(i) => graph.node[i].attribute[0].t = Some(t).into(),
        }
    }

    fn run(proto: &ModelProto, shape: &[usize]) -> Vec<f32> {
        let n: usize = shape.iter().product();
        let sample: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let model = TractModel::build(proto, None, shape, &[]).unwrap();
        model.run(&sample).unwrap().remove(0)
    }

    fn assert_close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-4 * (1.0 + x.abs()), "{a:?} vs {b:?}");
        }
    }

    fn plan(entries: &[(&str, &[usize])]) -> ChannelPlan {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
            .collect()
    }

    fn removal<'r>(report: &'r [ChannelRemoval], layer: &str) -> &'r ChannelRemoval {
        report.iter().find(|r| r.layer == layer).unwrap()
    }

    /// input[1,3,8,8] → conv1 → bn1 → relu1 → conv2 → relu2 → pool → flatten → fc.
    fn conv_chain() -> Builder {
        let mut b = Builder::new();
        let pads = || vec![ints("pads", &[1, 1, 1, 1])];
        b.input("input", &[1, 3, 8, 8])
            .random("conv1.w", &[6, 3, 3, 3])
            .random("conv1.b", &[6])
            .op("Conv", "conv1", &["input", "conv1.w", "conv1.b"], pads())
            .positive("bn1.scale", &[6])
            .random("bn1.bias", &[6])
            .random("bn1.mean", &[6])
            .positive("bn1.var", &[6])
            .op(
                "BatchNormalization",
                "bn1",
                &["conv1", "bn1.scale", "bn1.bias", "bn1.mean", "bn1.var"],
                vec![],
            )
            .op("Relu", "relu1", &["bn1"], vec![])
            .random("conv2.w", &[5, 6, 3, 3])
            .random("conv2.b", &[5])
            .op("Conv", "conv2", &["relu1", "conv2.w", "conv2.b"], pads())
            .op("Relu", "relu2", &["conv2"], vec![])
            .op("GlobalAveragePool", "pool", &["relu2"], vec![])
            .op("Flatten", "flatten", &["pool"], vec![int("axis", 1)])
            .random("fc.w", &[4, 5])
            .random("fc.b", &[4])
            .node(
                "Gemm",
                "fc",
                &["flatten", "fc.w", "fc.b"],
                &["logits"],
                vec![int("transB", 1)],
            )
            .output("logits", &[1, 4])
            .declare("conv1", &[1, 6, 8, 8])
            .declare("relu1", &[1, 6, 8, 8])
            .declare("conv2", &[1, 5, 8, 8])
            .declare("flatten", &[1, 5]);
        b
    }

    #[test]
    fn conv_bn_relu_conv_pool_gemm_shrinks_exactly() {
        let mut original = conv_chain().model();
        // Planned channels carry exact zeros: their removal cannot change the outputs.
        zero_rows(&mut original, "conv1.w", &[1, 4]);
        zero_rows(&mut original, "conv1.b", &[1, 4]);
        zero_rows(&mut original, "bn1.bias", &[1, 4]);
        zero_rows(&mut original, "bn1.mean", &[1, 4]);
        zero_rows(&mut original, "conv2.w", &[0, 2, 3]);
        zero_rows(&mut original, "conv2.b", &[0, 2, 3]);
        let model = load(original.clone());
        let (pruned, report) =
            remove_channels(&model, &plan(&[("conv1", &[1, 4]), ("conv2", &[0, 2, 3])])).unwrap();

        let conv1 = removal(&report, "conv1");
        assert_eq!(
            (conv1.requested, conv1.removed, conv1.channels_before),
            (2, 2, 6)
        );
        assert_eq!(conv1.reason, None);
        assert_eq!(conv1.affected, ["bn1", "conv2"]);
        let conv2 = removal(&report, "conv2");
        assert_eq!((conv2.removed, conv2.channels_before), (3, 5));
        assert_eq!(conv2.affected, ["fc"]);

        assert_eq!(dims_of(&pruned, "conv1.w"), [4, 3, 3, 3]);
        assert_eq!(dims_of(&pruned, "conv1.b"), [4]);
        for p in ["bn1.scale", "bn1.bias", "bn1.mean", "bn1.var"] {
            assert_eq!(dims_of(&pruned, p), [4]);
        }
        assert_eq!(dims_of(&pruned, "conv2.w"), [2, 4, 3, 3]);
        assert_eq!(dims_of(&pruned, "conv2.b"), [2]);
        assert_eq!(dims_of(&pruned, "fc.w"), [4, 2]);
        assert_eq!(dims_of(&pruned, "fc.b"), [4]);
        // Stale declarations are gone; nodes are untouched in number and order.
        let graph = pruned.graph.as_ref().unwrap();
        assert!(graph.value_info.is_empty(), "{:?}", graph.value_info);
        let before: Vec<&str> = original.graph.node.iter().map(|n| n.name()).collect();
        let after: Vec<&str> = graph.node.iter().map(|n| n.name()).collect();
        assert_eq!(before, after);

        assert_close(&run(&original, &[1, 3, 8, 8]), &run(&pruned, &[1, 3, 8, 8]));
        // The result reloads and its MACs drop.
        let macs = |p: ModelProto| {
            let m = load(p);
            crate::analyse(&m, &Default::default(), &NoProgress, &CancelToken::new())
                .unwrap()
                .macs
        };
        assert!(macs(pruned) < macs(original));
    }

    #[test]
    fn random_weights_still_give_a_valid_smaller_model() {
        let model = load(conv_chain().model());
        let (pruned, report) = remove_channels(&model, &plan(&[("conv1", &[0, 5])])).unwrap();
        assert_eq!(report[0].removed, 2);
        let out = run(&pruned, &[1, 3, 8, 8]);
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn residual_add_is_refused_and_nothing_changes() {
        let mut b = Builder::new();
        b.input("input", &[1, 4, 6, 6])
            .random("conv.w", &[4, 4, 3, 3])
            .op(
                "Conv",
                "conv",
                &["input", "conv.w"],
                vec![ints("pads", &[1, 1, 1, 1])],
            )
            .op("Relu", "relu", &["conv"], vec![])
            .node("Add", "residual", &["relu", "input"], &["sum"], vec![])
            .random("head.w", &[2, 4, 1, 1])
            .node("Conv", "head", &["sum", "head.w"], &["out"], vec![])
            .output("out", &[1, 2, 6, 6]);
        let original = b.model();
        let model = load(original.clone());
        let (pruned, report) =
            remove_channels(&model, &plan(&[("conv", &[0, 1]), ("head", &[1])])).unwrap();
        let conv = removal(&report, "conv");
        assert_eq!(
            (conv.requested, conv.removed, conv.channels_before),
            (2, 0, 4)
        );
        let reason = conv.reason.as_deref().unwrap();
        assert!(reason.contains("Add `residual`"), "{reason}");
        assert!(reason.contains("another branch"), "{reason}");
        assert!(conv.affected.is_empty());
        assert_eq!(dims_of(&pruned, "conv.w"), [4, 4, 3, 3]);
        // A layer whose output is the graph output is refused too.
        let head = removal(&report, "head");
        assert_eq!(head.removed, 0);
        assert!(head.reason.as_deref().unwrap().contains("graph output"));
        assert_eq!(pruned, original);
    }

    #[test]
    fn gemm_and_matmul_producers_shrink_exactly() {
        let mut b = Builder::new();
        b.input("x", &[1, 8])
            .random("g1.w", &[6, 8])
            .random("g1.b", &[6])
            .op("Gemm", "g1", &["x", "g1.w", "g1.b"], vec![int("transB", 1)])
            .op("LeakyRelu", "leaky", &["g1"], vec![])
            .constant(
                "mm.w",
                &[6, 5],
                &(0..30).map(|i| (i as f32 * 0.37).sin()).collect::<Vec<_>>(),
            )
            .op("MatMul", "mm", &["leaky", "mm.w"], vec![])
            .random("mm.b", &[5])
            .op("Add", "mm.add", &["mm", "mm.b"], vec![])
            .constant("lo", &[], &[-1.0])
            .constant("hi", &[], &[1.0])
            .op("Clip", "clip", &["mm.add", "lo", "hi"], vec![])
            .random("g2.w", &[5, 3])
            .random("g2.b", &[3])
            .node("Gemm", "g2", &["clip", "g2.w", "g2.b"], &["y"], vec![])
            .output("y", &[1, 3])
            .declare("g1", &[1, 6])
            .declare("clip", &[1, 5])
            .declare("leaky", &[1, 6]);
        let mut original = b.model();
        zero_rows(&mut original, "g1.w", &[0, 3]);
        zero_rows(&mut original, "g1.b", &[0, 3]);
        zero_along(&mut original, "mm.w", 1, &[2]);
        zero_rows(&mut original, "mm.b", &[2]);
        let model = load(original.clone());
        let (pruned, report) =
            remove_channels(&model, &plan(&[("g1", &[0, 3]), ("mm", &[2])])).unwrap();
        assert_eq!(removal(&report, "g1").removed, 2);
        assert_eq!(removal(&report, "g1").affected, ["mm"]);
        assert_eq!(removal(&report, "mm").removed, 1);
        assert_eq!(removal(&report, "mm").affected, ["mm.add", "g2"]);
        assert_eq!(dims_of(&pruned, "g1.w"), [4, 8]);
        assert_eq!(dims_of(&pruned, "g1.b"), [4]);
        assert_eq!(dims_of(&pruned, "mm.w"), [4, 4]);
        assert_eq!(dims_of(&pruned, "mm.b"), [4]);
        assert_eq!(dims_of(&pruned, "g2.w"), [4, 3]);
        assert!(pruned.graph.value_info.is_empty());
        assert_close(&run(&original, &[1, 8]), &run(&pruned, &[1, 8]));
    }

    #[test]
    fn depthwise_conv_and_swish_are_followed() {
        let mut b = Builder::new();
        b.input("input", &[1, 3, 8, 8])
            .random("pw1.w", &[6, 3, 1, 1])
            .random("pw1.b", &[6])
            .op("Conv", "pw1", &["input", "pw1.w", "pw1.b"], vec![])
            .op("HardSwish", "hswish", &["pw1"], vec![])
            .random("dw.w", &[6, 1, 3, 3])
            .random("dw.b", &[6])
            .op(
                "Conv",
                "dw",
                &["hswish", "dw.w", "dw.b"],
                vec![int("group", 6), ints("pads", &[1, 1, 1, 1])],
            )
            .positive("bn.scale", &[6])
            .random("bn.bias", &[6])
            .random("bn.mean", &[6])
            .positive("bn.var", &[6])
            .op(
                "BatchNormalization",
                "bn",
                &["dw", "bn.scale", "bn.bias", "bn.mean", "bn.var"],
                vec![],
            )
            .op("Sigmoid", "sig", &["bn"], vec![])
            .op("Mul", "swish", &["bn", "sig"], vec![])
            .node("Dropout", "drop", &["swish"], &["dropped"], vec![])
            .random("pw2.w", &[4, 6, 1, 1])
            .node("Conv", "pw2", &["dropped", "pw2.w"], &["out"], vec![])
            .output("out", &[1, 4, 8, 8]);
        let mut original = b.model();
        for t in ["pw1.w", "pw1.b", "dw.b", "bn.bias", "bn.mean"] {
            zero_rows(&mut original, t, &[0, 5]);
        }
        let model = load(original.clone());
        let (pruned, report) = remove_channels(&model, &plan(&[("pw1", &[0, 5])])).unwrap();
        let r = &report[0];
        assert_eq!((r.removed, r.reason.as_deref()), (2, None));
        assert_eq!(r.affected, ["dw", "bn", "pw2"]);
        assert_eq!(dims_of(&pruned, "dw.w"), [4, 1, 3, 3]);
        assert_eq!(dims_of(&pruned, "pw2.w"), [4, 4, 1, 1]);
        let graph = pruned.graph.as_ref().unwrap();
        let dw = graph.node.iter().find(|n| n.name() == "dw").unwrap();
        assert_eq!(attr_int(dw, "group", 1), 4);
        assert_close(&run(&original, &[1, 3, 8, 8]), &run(&pruned, &[1, 3, 8, 8]));
        // A depthwise conv itself is not a producer.
        let (_, report) = remove_channels(&model, &plan(&[("dw", &[1])])).unwrap();
        assert_eq!(report[0].removed, 0);
        assert!(report[0].reason.as_deref().unwrap().contains("depthwise"));
    }

    #[test]
    fn shared_weights_are_copied_and_one_channel_is_kept() {
        let mut b = Builder::new();
        b.input("input", &[1, 2, 5, 5])
            .random("c1.w", &[4, 2, 1, 1])
            .op("Conv", "c1", &["input", "c1.w"], vec![])
            .positive("scale", &[4])
            .random("shift", &[4])
            .init("zeros", &[4], &[0.0; 4])
            .positive("ones", &[4])
            .op(
                "BatchNormalization",
                "bn1",
                &["c1", "scale", "shift", "zeros", "ones"],
                vec![],
            )
            .random("c2.w", &[4, 4, 1, 1])
            .op("Conv", "c2", &["bn1", "c2.w"], vec![])
            .node(
                "BatchNormalization",
                "bn2",
                &["c2", "scale", "shift", "zeros", "ones"],
                &["out"],
                vec![],
            )
            .output("out", &[1, 4, 5, 5]);
        let model = load(b.model());
        let (pruned, report) = remove_channels(&model, &plan(&[("c1", &[0, 1, 2, 3])])).unwrap();
        let r = &report[0];
        assert_eq!((r.requested, r.removed, r.channels_before), (4, 3, 4));
        assert!(
            r.reason
                .as_deref()
                .unwrap()
                .contains("at least one channel")
        );
        assert_eq!(dims_of(&pruned, "c1.w"), [1, 2, 1, 1]);
        assert_eq!(dims_of(&pruned, "c2.w"), [4, 1, 1, 1]);
        // bn2 still reads the full shared parameters; bn1 reads sliced copies.
        assert_eq!(dims_of(&pruned, "zeros"), [4]);
        assert_eq!(node_input(&pruned, "bn2", 3), "zeros");
        let copy = node_input(&pruned, "bn1", 3);
        assert_eq!(copy, "zeros_pruned");
        assert_eq!(dims_of(&pruned, &copy), [1]);
        assert_eq!(run(&pruned, &[1, 2, 5, 5]).len(), 100);
    }

    #[test]
    fn blocking_ops_are_named() {
        let mut b = Builder::new();
        b.input("input", &[1, 2, 4, 4])
            .random("c.w", &[3, 2, 1, 1])
            .op("Conv", "c", &["input", "c.w"], vec![])
            .op("Relu", "r", &["c"], vec![])
            .init("shape", &[2], &[1.0, 48.0])
            .node("Reshape", "reshape", &["r", "shape"], &["out"], vec![])
            .output("out", &[1, 48]);
        let model = load(b.model());
        let (_, report) =
            remove_channels(&model, &plan(&[("c", &[2]), ("r", &[0]), ("reshape", &[])])).unwrap();
        let c = removal(&report, "c");
        assert_eq!(c.removed, 0);
        assert!(
            c.reason.as_deref().unwrap().contains("Reshape `reshape`"),
            "{c:?}"
        );
        let r = removal(&report, "r");
        assert!(
            r.reason
                .as_deref()
                .unwrap()
                .contains("not a channel producer"),
            "{r:?}"
        );
        assert_eq!(removal(&report, "reshape").reason, None);
    }

    #[test]
    fn bad_plans_are_errors() {
        let model = load(conv_chain().model());
        let err = remove_channels(&model, &plan(&[("nope", &[0])])).unwrap_err();
        assert!(matches!(err, Error::Recipe { .. }), "{err}");
        let err = remove_channels(&model, &plan(&[("conv1", &[3, 1])])).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
        let err = remove_channels(&model, &plan(&[("conv1", &[6])])).unwrap_err();
        assert!(err.to_string().contains("channel 6"), "{err}");
    }

    fn mnist() -> LoadedModel {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../sample-models/mnist-cnn/model.onnx");
        crate::load::load_model(&path, &NoProgress, &CancelToken::new()).unwrap()
    }

    /// Half the channels (the even ones) of every Conv with group 1 and of the Gemm.
    fn half_plan(model: &LoadedModel) -> ChannelPlan {
        let graph = model.proto.graph.as_ref().unwrap();
        let ix = Index::new(graph);
        graph
            .node
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                (n.op_type() == "Conv" && attr_int(n, "group", 1) == 1) || n.op_type() == "Gemm"
            })
            .map(|(i, n)| {
                let c = ix.const_ref(&n.input[1]).unwrap().dims()[0] as usize;
                (ix.node_name(i), (0..c).step_by(2).collect())
            })
            .collect()
    }

    #[test]
    fn mnist_cnn_prunes_what_does_not_feed_a_residual_add() {
        let model = mnist();
        let plan = half_plan(&model);
        let (pruned, report) = remove_channels(&model, &plan).unwrap();
        let removed: BTreeMap<&str, (usize, usize)> = report
            .iter()
            .map(|r| (r.layer.as_str(), (r.removed, r.channels_before)))
            .collect();
        assert_eq!(removed["stem.conv"], (8, 16));
        assert_eq!(removed["head.conv"], (64, 128));
        for blocked in [
            "down1.pw.conv",
            "block1.pw.conv",
            "down2.pw.conv",
            "block2.pw.conv",
        ] {
            let r = removal(&report, blocked);
            assert_eq!(r.removed, 0);
            let reason = r.reason.as_deref().unwrap();
            assert!(reason.contains("Add `block"), "{blocked}: {reason}");
        }
        assert!(
            removal(&report, "fc.gemm")
                .reason
                .as_deref()
                .unwrap()
                .contains("graph output")
        );
        assert_eq!(
            removal(&report, "stem.conv").affected,
            ["stem.bn", "down1.dw.conv", "down1.dw.bn", "down1.pw.conv"]
        );
        assert_eq!(
            removal(&report, "head.conv").affected,
            ["head.bn", "fc.gemm"]
        );

        let options = crate::AnalysisOptions::default();
        let before = crate::analyse(&model, &options, &NoProgress, &CancelToken::new()).unwrap();
        let reloaded = load(pruned.clone());
        let after = crate::analyse(&reloaded, &options, &NoProgress, &CancelToken::new()).unwrap();
        assert!(after.macs_complete);
        println!(
            "mnist-cnn MACs {} -> {} ({:.1}% less); parameters {} -> {}",
            before.macs,
            after.macs,
            100.0 * (1.0 - after.macs as f64 / before.macs as f64),
            before.parameters,
            after.parameters
        );
        for (b, a) in before.layers.iter().zip(&after.layers) {
            if b.macs != a.macs {
                println!("  {}: {:?} -> {:?}", b.name, b.macs, a.macs);
            }
        }
        assert!(after.macs < before.macs);
        assert_eq!(run(&pruned, &[1, 1, 28, 28]).len(), 10);
    }

    #[test]
    fn mnist_cnn_removal_is_exact_when_planned_channels_are_zero() {
        let model = mnist();
        let mut original = model.self_contained_proto().unwrap();
        let stem: Vec<usize> = (0..16).step_by(2).collect();
        let head: Vec<usize> = (1..128).step_by(2).collect();
        // Zero conv rows, and make the BN that follows map 0 to 0 on those channels.
        for (conv, bn, channels) in [("stem", "stem", &stem), ("head", "head", &head)] {
            zero_rows(&mut original, &format!("{conv}.conv.weight"), channels);
            zero_rows(&mut original, &format!("{bn}.bn.bias"), channels);
            zero_rows(&mut original, &format!("{bn}.bn.mean"), channels);
        }
        // The depthwise block after the stem has no bias, and its BN must map 0 to 0 too.
        zero_rows(&mut original, "down1.dw.bn.bias", &stem);
        zero_rows(&mut original, "down1.dw.bn.mean", &stem);
        let zeroed = load(original.clone());
        let plan = plan(&[("stem.conv", &stem), ("head.conv", &head)]);
        let (pruned, report) = remove_channels(&zeroed, &plan).unwrap();
        assert!(
            report.iter().all(|r| r.removed == r.requested),
            "{report:?}"
        );
        assert_eq!(dims_of(&pruned, "down1.dw.conv.weight"), [8, 1, 3, 3]);
        assert_eq!(dims_of(&pruned, "down1.pw.conv.weight"), [32, 8, 1, 1]);
        assert_eq!(dims_of(&pruned, "fc.weight"), [10, 64]);
        assert_close(
            &run(&original, &[1, 1, 28, 28]),
            &run(&pruned, &[1, 1, 28, 28]),
        );
    }
}
