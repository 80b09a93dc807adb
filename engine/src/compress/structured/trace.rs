//! Tracing the channels of one layer through the graph: which weights to slice and which
//! tensors change their channel count, or why the layer is left alone. Changes nothing.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::model::dtype::DType;
use crate::model::graph::Dim;
use crate::model::graph_edit::{Index, attr_int, is_op};
use crate::model::load::LoadedModel;

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
pub(super) struct Slice {
    pub(super) node: usize,
    pub(super) slot: usize,
    pub(super) axis: usize,
}

/// Why a layer is left alone.
pub(super) type Refusal = String;

/// What the pass will do for one layer, found without changing anything.
pub(super) struct Trace<'a> {
    pub(super) channels: usize,
    pub(super) slices: Vec<Slice>,
    /// Depthwise convolutions whose `group` becomes the new channel count.
    pub(super) groups: Vec<usize>,
    /// Tensors whose channel count changes.
    pub(super) changed: Vec<&'a str>,
    /// Nodes other than the producer whose weights or attributes change.
    pub(super) affected: Vec<usize>,
}

/// The planned layer: its output channel count, output tensor and its own weight slices.
pub(super) struct Producer<'a> {
    pub(super) channels: usize,
    output: &'a str,
    layout: Layout,
    pub(super) slices: Vec<Slice>,
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

pub(super) fn producer<'a>(
    ix: &Index<'a>,
    model: &LoadedModel,
    n: usize,
) -> Result<Producer<'a>, Refusal> {
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

pub(super) fn trace<'a>(
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
