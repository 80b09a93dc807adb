//! The edge–cloud split of a model: the first part (the *head*) runs on the device, the rest
//! (the *tail*) on a server, and the tensors that cross the cut are sent between them.
//!
//! - [`prefix_cuts`] lists every cut between two consecutive nodes of an execution order, with
//!   the tensors that cross it, their element counts and types (so a caller can price them in
//!   bytes at fp32, fp16 or int8);
//! - [`split_model`] builds the two models for any set of tensors that separates the graph;
//! - [`verify_split`] runs the original and head → tail in tract and onnxruntime and reports
//!   the error, with the sent tensors in float32, float16 or int8.
//!
//! Conventions, the same in all three:
//!
//! - weights (initializers) and the outputs of `Constant` nodes without inputs are never sent:
//!   each half has its own copy of the ones it reads;
//! - a graph input read after the cut is sent like any other tensor (the device forwards it);
//! - a graph output computed on the device is an output of the head, *not* a sent tensor
//!   (listed in [`Cut::device_outputs`]): it is sent only when the server reads it, and an
//!   application that wants it on the server sends it itself;
//! - a subgraph (`If` branches, `Loop`/`Scan` bodies) stays with its node, and every tensor of
//!   the outer graph the subgraph reads counts as read by that node.

use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};

use serde::Serialize;

use crate::model::dtype::DType;
use crate::model::graph::{Dim, subgraphs_of};
use crate::model::load::LoadedModel;
use crate::model::proto::{GraphProto, NodeProto};

mod extract;
mod verify;

pub use extract::{SplitModels, split_model, write_split};
pub use verify::{OutputCheck, RuntimeCheck, SplitVerification, VerifyOptions, verify_split};

/// The numeric format the crossing tensors are sent in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transfer {
    /// As computed (float32): the split reproduces the model.
    #[default]
    Fp32,
    /// Float tensors rounded to float16.
    Fp16,
    /// Float tensors quantized per tensor to int8, asymmetric over each sample's min..max
    /// (widened to include 0), plus a float32 scale and an int8 zero point per tensor.
    Int8,
}

impl Transfer {
    /// Every format, for menus.
    pub const ALL: [Transfer; 3] = [Transfer::Fp32, Transfer::Fp16, Transfer::Int8];

    /// `fp32`, `fp16` or `int8`.
    pub fn name(self) -> &'static str {
        match self {
            Transfer::Fp32 => "fp32",
            Transfer::Fp16 => "fp16",
            Transfer::Int8 => "int8",
        }
    }

    /// Parses `fp32`, `fp16` or `int8` (also `float32`, `float16`, `f32`, `f16`).
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "fp32" | "float32" | "f32" => Some(Transfer::Fp32),
            "fp16" | "float16" | "f16" | "half" => Some(Transfer::Fp16),
            "int8" | "i8" => Some(Transfer::Int8),
            _ => None,
        }
    }

    /// Bytes one sent tensor of `elements` elements of type `dtype` takes: float tensors in
    /// this format (int8 adds 5 bytes of scale and zero point), others as they are.
    pub fn bytes(self, dtype: Option<DType>, elements: u64) -> Option<u64> {
        let dtype = dtype?;
        if !dtype.is_float() {
            return dtype.bits().map(|_| dtype.bytes_for(elements));
        }
        Some(match self {
            Transfer::Fp32 => elements.saturating_mul(4),
            Transfer::Fp16 => elements.saturating_mul(2),
            Transfer::Int8 => elements.saturating_add(5),
        })
    }
}

impl std::fmt::Display for Transfer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A tensor that crosses a cut (or a graph output computed on the device).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CrossingTensor {
    pub name: String,
    /// Element count, when every dimension is known.
    pub elements: Option<u64>,
    /// Element type, when known.
    pub dtype: Option<DType>,
    /// Its shape as inferred (`None` when even the rank is unknown).
    pub shape: Option<Vec<Dim>>,
    /// Whether it is a graph input (forwarded by the device as it came).
    pub graph_input: bool,
}

impl CrossingTensor {
    /// Bytes it takes when sent in `transfer` (see [`Transfer::bytes`]).
    pub fn bytes(&self, transfer: Transfer) -> Option<u64> {
        self.elements.and_then(|e| transfer.bytes(self.dtype, e))
    }
}

/// One cut of an execution order: the first `after_nodes` nodes run on the device.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cut {
    /// Nodes in the head: 0 is cloud-only (the graph inputs are sent), the node count is
    /// device-only (nothing is sent; every output is a device output).
    pub after_nodes: usize,
    /// Name of the last node of the head (`None` for the cloud-only cut).
    pub last_node: Option<String>,
    /// Op of the last node of the head.
    pub last_op: Option<String>,
    /// The tensors sent: computed on the device (or graph inputs) and read on the server, in
    /// the order they become available.
    pub tensors: Vec<CrossingTensor>,
    /// Graph outputs computed on the device (they are outputs of the head; sent only when
    /// also in `tensors`).
    pub device_outputs: Vec<CrossingTensor>,
}

impl Cut {
    /// Total elements sent, when every crossing tensor's count is known.
    pub fn elements(&self) -> Option<u64> {
        self.tensors
            .iter()
            .try_fold(0u64, |a, t| Some(a.saturating_add(t.elements?)))
    }

    /// Total bytes sent in `transfer`, when every crossing tensor's size is known.
    pub fn bytes(&self, transfer: Transfer) -> Option<u64> {
        self.tensors
            .iter()
            .try_fold(0u64, |a, t| Some(a.saturating_add(t.bytes(transfer)?)))
    }

    /// The names of the tensors sent (what `split_model` takes).
    pub fn names(&self) -> Vec<String> {
        self.tensors.iter().map(|t| t.name.clone()).collect()
    }
}

/// Every cut of the main graph's execution order (the file's node order when it is
/// topological, else a topological sort that keeps the file order where it can): one per
/// boundary `k = 0..=n`, each with the tensors that cross it.
///
/// Linear in the graph's size plus the size of the answer: each tensor's first boundary (one
/// past its producer) and last reader are found once, then one sweep adds and drops them.
pub fn prefix_cuts(model: &LoadedModel) -> Vec<Cut> {
    let Some(graph) = model.proto.graph.as_ref() else {
        return vec![Cut {
            after_nodes: 0,
            last_node: None,
            last_op: None,
            tensors: Vec::new(),
            device_outputs: Vec::new(),
        }];
    };
    let main = MainGraph::new(graph);
    let n = main.order.len();
    let mut position = vec![0usize; n];
    for (p, &node) in main.order.iter().enumerate() {
        position[node] = p;
    }
    // Tensor → (first boundary where the head has it, last reader's position).
    let mut spans: HashMap<&str, (usize, usize)> = HashMap::new();
    for (node, reads) in main.reads.iter().enumerate() {
        for &name in reads {
            let start = if main.is_sendable_input(name) {
                0
            } else {
                match main.producer.get(name) {
                    Some(&p) if !main.constant[p] => position[p] + 1,
                    _ => continue,
                }
            };
            let last = position[node];
            if last < start {
                // Read before it is produced: a broken model; nothing crosses for it.
                continue;
            }
            let span = spans.entry(name).or_insert((start, last));
            span.1 = span.1.max(last);
        }
    }
    let mut starts: Vec<Vec<&str>> = vec![Vec::new(); n + 1];
    let mut ends: Vec<Vec<&str>> = vec![Vec::new(); n + 1];
    for (&name, &(start, last)) in &spans {
        starts[start].push(name);
        ends[last].push(name);
    }
    // Graph outputs by the boundary from which the head has them.
    let mut outputs_from: Vec<Vec<&str>> = vec![Vec::new(); n + 1];
    for output in &graph.output {
        if let Some(&p) = main.producer.get(output.name()) {
            outputs_from[position[p] + 1].push(output.name());
        }
    }
    let describe = |name: &str, graph_input: bool| crossing(model, name, graph_input);
    let names: Vec<&str> = model
        .graph
        .main_nodes()
        .map(|node| node.name.as_str())
        .collect();
    let mut active: BTreeSet<(usize, &str)> = BTreeSet::new();
    let mut device_outputs: Vec<CrossingTensor> = Vec::new();
    let mut cuts = Vec::with_capacity(n + 1);
    for k in 0..=n {
        for &name in &starts[k] {
            active.insert((k, name));
        }
        for &name in &outputs_from[k] {
            device_outputs.push(describe(name, false));
        }
        let last = k.checked_sub(1).map(|p| main.order[p]);
        cuts.push(Cut {
            after_nodes: k,
            last_node: last.map(|i| {
                names
                    .get(i)
                    .map_or_else(|| format!("#{i}"), |s| (*s).to_owned())
            }),
            last_op: last.map(|i| graph.node[i].op_type().to_owned()),
            tensors: active
                .iter()
                .map(|&(_, name)| describe(name, main.is_sendable_input(name)))
                .collect(),
            device_outputs: device_outputs.clone(),
        });
        // A tensor whose last reader is node k is not needed past boundary k.
        for &name in &ends[k] {
            let start = spans.get(name).map_or(0, |s| s.0);
            active.remove(&(start, name));
        }
    }
    cuts
}

/// What is known of tensor `name` for the listing.
fn crossing(model: &LoadedModel, name: &str, graph_input: bool) -> CrossingTensor {
    let fact = model
        .shapes
        .get(name)
        .or_else(|| model.graph.declared.get(name));
    let shape = fact.and_then(|f| f.shape.clone());
    let elements = shape.as_ref().and_then(|dims| {
        dims.iter().try_fold(1u64, |a, d| {
            let v = u64::try_from(d.known()?).ok()?;
            a.checked_mul(v)
        })
    });
    CrossingTensor {
        name: name.to_owned(),
        elements,
        dtype: fact.and_then(|f| f.dtype),
        shape,
        graph_input,
    }
}

/// The main graph as the split sees it: what each node reads (its inputs and what its
/// subgraphs read from outside), who produces what, and an execution order.
pub(crate) struct MainGraph<'a> {
    /// Per node (file index): the tensors it reads, each once, subgraph reads included.
    pub reads: Vec<Vec<&'a str>>,
    /// Tensor → the node (file index) producing it.
    pub producer: HashMap<&'a str, usize>,
    /// Per node: a `Constant` without inputs (copied into each half that reads it).
    pub constant: Vec<bool>,
    /// Initializer names (sparse ones too).
    pub weights: HashSet<&'a str>,
    /// Graph inputs that are not initializers.
    pub inputs: HashSet<&'a str>,
    /// File indices in execution order.
    pub order: Vec<usize>,
}

impl<'a> MainGraph<'a> {
    pub fn new(graph: &'a GraphProto) -> Self {
        let weights: HashSet<&str> = graph
            .initializer
            .iter()
            .map(|t| t.name())
            .chain(
                graph
                    .sparse_initializer
                    .iter()
                    .filter_map(|s| s.values.as_ref().map(|v| v.name())),
            )
            .collect();
        let inputs: HashSet<&str> = graph
            .input
            .iter()
            .map(|i| i.name())
            .filter(|n| !weights.contains(n))
            .collect();
        let mut producer = HashMap::new();
        for (i, node) in graph.node.iter().enumerate() {
            for output in node.output.iter().filter(|o| !o.is_empty()) {
                producer.insert(output.as_str(), i);
            }
        }
        let reads: Vec<Vec<&str>> = graph.node.iter().map(node_reads).collect();
        let constant = graph
            .node
            .iter()
            .map(|n| {
                n.op_type() == "Constant"
                    && (n.domain().is_empty() || n.domain() == "ai.onnx")
                    && n.input.iter().all(String::is_empty)
            })
            .collect();
        let order = execution_order(&reads, &producer);
        Self {
            reads,
            producer,
            constant,
            weights,
            inputs,
            order,
        }
    }

    /// A graph input (not an initializer): sent when read after the cut.
    pub fn is_sendable_input(&self, name: &str) -> bool {
        self.inputs.contains(name) && !self.producer.contains_key(name)
    }
}

/// The tensors `node` reads: its inputs, then what its subgraphs read from the outer scopes.
fn node_reads(node: &NodeProto) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for input in node.input.iter().filter(|i| !i.is_empty()) {
        if seen.insert(input) {
            out.push(input);
        }
    }
    for (_, sub) in subgraphs_of(&node.attribute) {
        for name in outer_reads(sub) {
            if seen.insert(name) {
                out.push(name);
            }
        }
    }
    out
}

/// Names a subgraph (and the subgraphs inside it) reads that it does not define itself.
fn outer_reads(graph: &GraphProto) -> Vec<&str> {
    let mut defined: HashSet<&str> = graph
        .input
        .iter()
        .map(|i| i.name())
        .chain(graph.initializer.iter().map(|t| t.name()))
        .chain(
            graph
                .sparse_initializer
                .iter()
                .filter_map(|s| s.values.as_ref().map(|v| v.name())),
        )
        .collect();
    for node in &graph.node {
        defined.extend(node.output.iter().map(String::as_str));
    }
    let mut candidates: Vec<&str> = Vec::new();
    for node in &graph.node {
        candidates.extend(node.input.iter().map(String::as_str));
        for (_, sub) in subgraphs_of(&node.attribute) {
            candidates.extend(outer_reads(sub));
        }
    }
    candidates.extend(graph.output.iter().map(|o| o.name()));
    let mut seen = HashSet::new();
    candidates
        .into_iter()
        .filter(|name| !name.is_empty() && !defined.contains(name) && seen.insert(*name))
        .collect()
}

/// The file order when every node reads only what earlier nodes produce, else Kahn's sort
/// taking the lowest file index first among the ready nodes (nodes on a cycle, in a broken
/// model, go last in file order).
fn execution_order(reads: &[Vec<&str>], producer: &HashMap<&str, usize>) -> Vec<usize> {
    let n = reads.len();
    let topological = reads.iter().enumerate().all(|(i, r)| {
        r.iter()
            .all(|name| producer.get(name).is_none_or(|&p| p < i))
    });
    if topological {
        return (0..n).collect();
    }
    let mut waiting = vec![0usize; n];
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, r) in reads.iter().enumerate() {
        for name in r {
            if let Some(&p) = producer.get(name)
                && p != i
            {
                waiting[i] += 1;
                readers[p].push(i);
            }
        }
    }
    let mut ready: BinaryHeap<std::cmp::Reverse<usize>> = (0..n)
        .filter(|&i| waiting[i] == 0)
        .map(std::cmp::Reverse)
        .collect();
    let mut order = Vec::with_capacity(n);
    let mut placed = vec![false; n];
    while let Some(std::cmp::Reverse(i)) = ready.pop() {
        order.push(i);
        placed[i] = true;
        for &r in &readers[i] {
            waiting[r] -= 1;
            if waiting[r] == 0 {
                ready.push(std::cmp::Reverse(r));
            }
        }
    }
    order.extend((0..n).filter(|&i| !placed[i]));
    order
}

#[cfg(test)]
mod tests;
