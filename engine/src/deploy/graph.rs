//! The model as a device runs it: main-graph nodes in execution order, the activation
//! tensors they read and write with their sizes, and per node the MACs, weight bytes and
//! the precision it computes in — for the original model or for a plan in an export format.

use std::collections::HashMap;

use serde::Serialize;

use crate::analyse::macs::node_macs;
use crate::compress::compressor::{Compression, Compressor};
use crate::compress::plan::Precision;
use crate::export::build::ExportFormat;
use crate::model::load::LoadedModel;

/// The arithmetic a node runs in on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ComputePrecision {
    Fp32,
    Fp16,
    Int8,
}

impl ComputePrecision {
    /// The JSON/CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fp32 => "fp32",
            Self::Fp16 => "fp16",
            Self::Int8 => "int8",
        }
    }
}

/// The kind of kernel a node runs, for its efficiency on a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpKind {
    /// Conv (not depthwise), ConvTranspose, Gemm, MatMul, recurrent layers: GEMM-like kernels.
    Dense,
    /// A Conv with one input channel per group: little reuse per weight.
    Depthwise,
    /// Everything else: element-wise, pooling, reshapes, normalisation.
    Other,
}

impl OpKind {
    fn of(node: &crate::model::graph::NodeDesc) -> Self {
        match node.op_type.as_str() {
            "Conv" | "ConvInteger" | "QLinearConv" => {
                let group: i64 = node
                    .attributes
                    .iter()
                    .find(|a| a.name == "group")
                    .and_then(|a| a.value.trim().parse().ok())
                    .unwrap_or(1);
                if group > 1 {
                    Self::Depthwise
                } else {
                    Self::Dense
                }
            }
            "ConvTranspose" | "Gemm" | "MatMul" | "MatMulInteger" | "QLinearMatMul" | "LSTM"
            | "GRU" | "RNN" | "Einsum" | "Attention" => Self::Dense,
            _ => Self::Other,
        }
    }
}

/// One activation tensor (a value computed at run time, or a graph input).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ActivationTensor {
    pub name: String,
    /// Bytes on the device (`None` when its shape is not known).
    pub bytes: Option<u64>,
    /// Position in the execution order of the node that writes it; `None` for a graph input.
    pub producer: Option<usize>,
    /// Position of the last node that reads it (a graph output lives to the end).
    pub last_use: usize,
    pub is_graph_input: bool,
    pub is_graph_output: bool,
}

/// One main-graph node in execution order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeviceNode {
    /// Index into `LoadedModel::graph.nodes`.
    pub node: usize,
    pub name: String,
    pub op: String,
    pub kind: OpKind,
    /// Activation tensors read (indices into [`DeviceGraph::tensors`]), subgraph reads included.
    pub reads: Vec<usize>,
    /// Activation tensors written.
    pub writes: Vec<usize>,
    /// Multiply-accumulates (after structured pruning for a plan); `None` when not countable.
    pub macs: Option<u64>,
    /// Bytes of the weights this node is the first to read.
    pub weight_bytes: u64,
    pub compute: ComputePrecision,
    /// Folded away by the graph optimizations every runtime applies before it places nodes
    /// (onnxruntime's basic level, TFLite's converter): a BatchNormalization fused into the
    /// Conv before it, an Identity or Dropout removed, a Constant made a weight. It costs
    /// nothing, goes where its producer goes and is not counted as a node.
    pub fused: bool,
}

/// A model as deployed in one form (original, or a plan in an export format).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeviceGraph {
    /// "original", or the plan's format name.
    pub form: String,
    pub nodes: Vec<DeviceNode>,
    pub tensors: Vec<ActivationTensor>,
    /// Bytes of every weight as the form stores it (initializers and `Constant` outputs, all
    /// graphs).
    pub weight_bytes: u64,
    /// Bytes the weights take in RAM once a runtime that loads the file has prepared them:
    /// weight-only integer formats are folded back to float32 at load time.
    pub weight_ram_bytes: u64,
    /// Activation tensors whose size is not known (their bytes count as zero).
    pub unknown_tensors: usize,
}

/// How a plan changes one node.
#[derive(Clone, Copy, Debug)]
struct NodeChange {
    compute: ComputePrecision,
    macs: Option<u64>,
    weight_bytes_before: u64,
    weight_bytes_after: u64,
    int8_activations: bool,
    /// Stored small, computed in float: the runtime makes float32 weights of it at load time.
    folds_to_float: bool,
}

impl DeviceGraph {
    /// The original model: float32 (or whatever its tensors are) as stored.
    pub fn original(model: &LoadedModel) -> Self {
        build(model, "original", &HashMap::new())
    }

    /// `compression` exported as `format`: the compressed layers' weight bytes and MACs, and
    /// the precision they compute in, as the written file computes: integer kernels for the
    /// integer layers of a QDQ export (int8 activations between them) and for the integer
    /// MatMul/Gemm layers of a dynamic-int8 export (activations quantized at run time, float
    /// between layers); everything else in float32 — the fp16 and weights-int8 formats store
    /// small weights that a runtime turns into float32 when it loads the file.
    pub fn planned(
        model: &LoadedModel,
        compressor: &Compressor,
        compression: &Compression,
        format: ExportFormat,
    ) -> Self {
        let mut changes = HashMap::new();
        for (layer, result) in compressor.layers.iter().zip(&compression.layers) {
            let report = &result.report;
            if report.settings.exclude {
                continue;
            }
            let integer = matches!(report.settings.precision, Precision::Int { .. });
            let matmul = matches!(layer.op.as_str(), "MatMul" | "Gemm");
            let compute = match format {
                ExportFormat::QdqInt8 if integer => ComputePrecision::Int8,
                ExportFormat::DynamicInt8 if integer && matmul => ComputePrecision::Int8,
                _ => ComputePrecision::Fp32,
            };
            changes.insert(
                layer.node,
                NodeChange {
                    compute,
                    macs: report.macs_after,
                    weight_bytes_before: report.bytes_before,
                    weight_bytes_after: report.bytes_after,
                    int8_activations: format == ExportFormat::QdqInt8
                        && compute == ComputePrecision::Int8,
                    folds_to_float: compute == ComputePrecision::Fp32
                        && report.bytes_after < report.bytes_before
                        && report.settings.precision != Precision::Float32,
                },
            );
        }
        build(model, format.name(), &changes)
    }

    /// `recipe` applied to `model` (its weights compressed: sizes, sparsity and structured
    /// pruning's MACs are those of the real plan) and exported as `format`.
    pub fn of_recipe(
        model: &LoadedModel,
        analysis: &crate::analyse::analysis::ModelAnalysis,
        recipe: &crate::compress::plan::Recipe,
        format: ExportFormat,
        cancel: &crate::job::CancelToken,
    ) -> crate::error::Result<Self> {
        let mut compressor = Compressor::new(model, analysis);
        let compression = compressor.apply(recipe, cancel)?;
        Ok(Self::planned(model, &compressor, &compression, format))
    }

    /// Sum of every activation tensor's bytes (what a runtime that never reuses memory needs).
    pub fn naive_activation_bytes(&self) -> u64 {
        self.tensors
            .iter()
            .filter_map(|t| t.bytes)
            .fold(0, u64::saturating_add)
    }

    /// Bytes of the graph inputs and outputs.
    pub fn io_bytes(&self) -> (u64, u64) {
        let sum = |pick: fn(&ActivationTensor) -> bool| {
            self.tensors
                .iter()
                .filter(|t| pick(t))
                .filter_map(|t| t.bytes)
                .fold(0u64, u64::saturating_add)
        };
        (sum(|t| t.is_graph_input), sum(|t| t.is_graph_output))
    }

    /// Bytes `node` reads and writes in activations.
    pub fn activation_traffic_bytes(&self, node: &DeviceNode) -> u64 {
        node.reads
            .iter()
            .chain(&node.writes)
            .filter_map(|&t| self.tensors[t].bytes)
            .fold(0, u64::saturating_add)
    }
}

/// Main-graph node indices in an execution order: the file's order when it is topological
/// (valid ONNX requires it), else Kahn's order (ties by file order).
pub fn execution_order(model: &LoadedModel) -> Vec<usize> {
    let graph = &model.graph;
    let main: Vec<usize> = graph.main_nodes().map(|n| n.index).collect();
    let reads = subgraph_reads(model);
    let mut done: std::collections::HashSet<&str> = graph
        .inputs
        .iter()
        .map(|i| i.name.as_str())
        .chain(model.weight_index.keys().map(String::as_str))
        .collect();
    let mut topological = true;
    for &i in &main {
        if reads[&i]
            .iter()
            .any(|r| graph.producer.contains_key(r.as_str()) && !done.contains(r.as_str()))
        {
            topological = false;
            break;
        }
        done.extend(graph.nodes[i].outputs.iter().map(String::as_str));
    }
    if topological {
        return main;
    }
    // Kahn: a node is ready when every main-graph value it reads is computed.
    let mut waiting: Vec<usize> = main
        .iter()
        .map(|i| {
            reads[i]
                .iter()
                .filter(|r| graph.producer.get(r.as_str()).is_some_and(|p| p != i))
                .count()
        })
        .collect();
    let mut ready: std::collections::BTreeSet<usize> =
        (0..main.len()).filter(|&p| waiting[p] == 0).collect();
    let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (p, i) in main.iter().enumerate() {
        for r in &reads[i] {
            if graph.producer.get(r.as_str()).is_some_and(|q| q != i) {
                readers.entry(r.as_str()).or_default().push(p);
            }
        }
    }
    let mut order = Vec::with_capacity(main.len());
    while let Some(p) = ready.pop_first() {
        order.push(main[p]);
        for out in &graph.nodes[main[p]].outputs {
            for &q in readers.get(out.as_str()).map_or(&[][..], Vec::as_slice) {
                waiting[q] = waiting[q].saturating_sub(1);
                if waiting[q] == 0 {
                    ready.insert(q);
                }
            }
        }
    }
    // A cycle (invalid ONNX) leaves nodes behind: append them in file order so every node
    // is still counted.
    if order.len() < main.len() {
        let placed: std::collections::HashSet<usize> = order.iter().copied().collect();
        order.extend(main.iter().filter(|i| !placed.contains(i)));
    }
    order
}

/// Per main-graph node, the names it reads: its inputs and, for nodes with subgraphs, the
/// outer values their bodies read.
fn subgraph_reads(model: &LoadedModel) -> HashMap<usize, Vec<String>> {
    let graph = &model.graph;
    let mut reads: HashMap<usize, Vec<String>> = HashMap::new();
    let mut owner = None;
    for node in &graph.nodes {
        if node.graph.is_empty() {
            owner = Some(node.index);
        }
        let Some(owner) = owner else { continue };
        let list = reads.entry(owner).or_default();
        for input in node.inputs.iter().filter(|i| !i.is_empty()) {
            let outer = node.graph.is_empty()
                || graph.producer.contains_key(input)
                || graph.inputs.iter().any(|i| &i.name == input);
            if outer && !list.contains(input) {
                list.push(input.clone());
            }
        }
    }
    reads
}

/// Marks the nodes runtimes fold away before running (see [`DeviceNode::fused`]). A Conv
/// whose output only a BatchNormalization reads writes the normalised output itself: its own
/// output tensor disappears.
fn fuse(nodes: &mut [DeviceNode], tensors: &mut [ActivationTensor]) {
    let mut readers = vec![0usize; tensors.len()];
    for node in nodes.iter() {
        for &t in &node.reads {
            readers[t] += 1;
        }
    }
    for q in 0..nodes.len() {
        match nodes[q].op.as_str() {
            // A Constant is a weight to every runtime (it writes no activation).
            "Identity" | "Dropout" | "Constant" => nodes[q].fused = true,
            "BatchNormalization" => {
                let Some(&t) = nodes[q].reads.first() else {
                    continue;
                };
                let Some(p) = tensors[t].producer else {
                    continue;
                };
                if nodes[p].op == "Conv"
                    && readers[t] == 1
                    && !tensors[t].is_graph_output
                    && nodes[q].writes.len() == 1
                {
                    nodes[q].fused = true;
                    tensors[t].bytes = Some(0);
                    let out = nodes[q].writes[0];
                    tensors[out].producer = Some(p);
                }
            }
            _ => {}
        }
    }
}

fn build(model: &LoadedModel, form: &str, changes: &HashMap<usize, NodeChange>) -> DeviceGraph {
    // Float activations are float32 in every form the exports write.
    let float_bytes = 4;
    let graph = &model.graph;
    let order = execution_order(model);
    let reads = subgraph_reads(model);
    let outputs: std::collections::HashSet<&str> =
        graph.outputs.iter().map(|o| o.name.as_str()).collect();
    let last = order.len().saturating_sub(1);

    // Activation tensors: graph inputs, then every node output in order.
    let mut tensors: Vec<ActivationTensor> = Vec::new();
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    let add = |name: &'_ str, producer: Option<usize>, tensors: &mut Vec<ActivationTensor>| {
        tensors.push(ActivationTensor {
            name: name.to_owned(),
            bytes: None,
            producer,
            last_use: producer.unwrap_or(0),
            is_graph_input: producer.is_none(),
            is_graph_output: outputs.contains(name),
        });
        tensors.len() - 1
    };
    for input in &graph.inputs {
        let t = add(&input.name, None, &mut tensors);
        by_name.insert(&input.name, t);
    }
    let mut nodes = Vec::with_capacity(order.len());
    let mut weight_seen: std::collections::HashSet<&str> = Default::default();
    for (position, &index) in order.iter().enumerate() {
        let node = &graph.nodes[index];
        let mut node_reads = Vec::new();
        let mut weight_bytes = 0u64;
        for name in &reads[&index] {
            if let Some(&t) = by_name.get(name.as_str()) {
                if !node_reads.contains(&t) {
                    node_reads.push(t);
                }
            } else if let Some(w) = model.weight(name)
                && weight_seen.insert(name.as_str())
            {
                weight_bytes = weight_bytes.saturating_add(w.bytes);
            }
        }
        // Constant nodes produce weights, not activations.
        let writes: Vec<usize> = if node.op_type == "Constant" {
            Vec::new()
        } else {
            node.outputs
                .iter()
                .filter(|o| !o.is_empty())
                .map(|o| {
                    let t = add(o, Some(position), &mut tensors);
                    by_name.insert(o, t);
                    t
                })
                .collect()
        };
        let weight_dims = |slot: usize| -> Option<Vec<i64>> {
            let input = node.inputs.get(slot)?;
            if let Some(w) = model.weight(input) {
                return Some(w.dims.clone());
            }
            model
                .shapes
                .get(input)
                .and_then(|v| v.shape.as_ref())
                .and_then(|dims| dims.iter().map(|d| d.known()).collect())
        };
        let mut macs = node_macs(node, &model.shapes, weight_dims).ok();
        let mut compute = ComputePrecision::Fp32;
        if let Some(change) = changes.get(&index) {
            compute = change.compute;
            macs = change.macs.or(macs);
            weight_bytes = weight_bytes
                .saturating_sub(change.weight_bytes_before)
                .saturating_add(change.weight_bytes_after);
        }
        nodes.push(DeviceNode {
            node: index,
            name: node.name.clone(),
            op: node.op_type.clone(),
            kind: OpKind::of(node),
            reads: node_reads,
            writes,
            macs,
            weight_bytes,
            compute,
            fused: false,
        });
    }
    for (position, node) in nodes.iter().enumerate() {
        for &t in &node.reads {
            tensors[t].last_use = tensors[t].last_use.max(position);
        }
    }
    // Sizes: int8 where an integer layer reads or writes the tensor, else the float width
    // of the form for float tensors and the stored width for others.
    let int8: std::collections::HashSet<usize> = nodes
        .iter()
        .filter(|n| changes.get(&n.node).is_some_and(|c| c.int8_activations))
        .flat_map(|n| n.reads.iter().chain(&n.writes).copied())
        .collect();
    let mut unknown_tensors = 0;
    for (i, tensor) in tensors.iter_mut().enumerate() {
        if tensor.is_graph_output {
            tensor.last_use = last;
        }
        let fact = model
            .shapes
            .get(&tensor.name)
            .or_else(|| graph.declared.get(&tensor.name));
        let elements: Option<u64> = fact.and_then(|f| f.shape.as_ref()).and_then(|dims| {
            dims.iter()
                .map(|d| d.known().and_then(|v| u64::try_from(v).ok()))
                .try_fold(1u64, |acc, d| d.map(|d| acc.saturating_mul(d)))
        });
        let dtype = fact.and_then(|f| f.dtype);
        let is_float = dtype.is_none_or(|d| d.is_float());
        tensor.bytes = elements.map(|e| {
            if int8.contains(&i) && is_float && !tensor.is_graph_input && !tensor.is_graph_output {
                e
            } else if is_float {
                e.saturating_mul(float_bytes)
            } else {
                dtype.map_or(e.saturating_mul(4), |d| d.bytes_for(e))
            }
        });
        if tensor.bytes.is_none() {
            unknown_tensors += 1;
        }
    }
    // After sizing: a fused Conv's own output takes no bytes.
    fuse(&mut nodes, &mut tensors);
    // Every weight of every graph, with the plan's layers at their new size.
    let (before, after) = changes.values().fold((0u64, 0u64), |(b, a), c| {
        (
            b.saturating_add(c.weight_bytes_before),
            a.saturating_add(c.weight_bytes_after),
        )
    });
    let stored = model
        .weights
        .iter()
        .fold(0u64, |a, w| a.saturating_add(w.bytes));
    let weight_bytes = stored.saturating_sub(before).saturating_add(after);
    // Layers stored small but computed in float: the runtime folds the codes' Cast/Mul into
    // float32 weights when it loads the file.
    let unfolded = changes
        .values()
        .filter(|c| c.folds_to_float)
        .fold(0u64, |a, c| {
            a.saturating_add(c.weight_bytes_before.saturating_sub(c.weight_bytes_after))
        });
    let weight_ram_bytes = weight_bytes.saturating_add(unfolded);
    DeviceGraph {
        form: form.to_owned(),
        nodes,
        tensors,
        weight_bytes,
        weight_ram_bytes,
        unknown_tensors,
    }
}
