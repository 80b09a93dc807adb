//! Helpers shared by the code that edits or builds ONNX graphs: the model passes that rewrite
//! a graph ([`crate::compress::fold`], [`crate::compress::structured`]), the export ([`crate::export::build`]) and the
//! synthetic models ([`crate::model::synthetic`]).
//!
//! An index of the main graph (edges and stored constants, by tensor name), reading nodes and
//! attributes, choosing unused names, and constructors for tensors, attributes, nodes and
//! value infos.

use std::collections::{HashMap, HashSet};

use crate::model::dtype::DType;
use crate::model::proto::{
    AttributeProto, GraphProto, NodeProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto, attribute_proto, tensor_shape_proto, type_proto,
};

#[cfg(test)]
pub(crate) mod test_models;

// ---------------------------------------------------------------------------------------------
// Index of the graph being rewritten

/// Where a constant tensor is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stored {
    Initializer(usize),
    ConstantNode(usize),
}

/// A constant's value as stored.
pub(crate) enum ConstRef<'a> {
    Tensor(&'a TensorProto),
    /// `Constant` with `value_float(s)` / `value_int(s)`: element type, dims, values.
    Inline(i32, Vec<i64>, Vec<f32>),
}

impl ConstRef<'_> {
    pub(crate) fn dtype(&self) -> DType {
        match self {
            ConstRef::Tensor(t) => DType(t.data_type()),
            ConstRef::Inline(dtype, _, _) => DType(*dtype),
        }
    }

    pub(crate) fn dims(&self) -> &[i64] {
        match self {
            ConstRef::Tensor(t) => &t.dims,
            ConstRef::Inline(_, dims, _) => dims,
        }
    }

    pub(crate) fn elements(&self) -> i64 {
        self.dims().iter().product()
    }
}

/// Edges, constants and outputs of the live main-graph nodes, by tensor name.
pub(crate) struct Index<'a> {
    pub(crate) graph: &'a GraphProto,
    /// Tensor → the live node producing it.
    pub(crate) producer: HashMap<&'a str, usize>,
    /// Tensor → every (node, input slot) reading it.
    pub(crate) consumers: HashMap<&'a str, Vec<(usize, usize)>>,
    pub(crate) outputs: HashSet<&'a str>,
    /// Names read by nodes inside subgraphs (they may capture main-graph tensors).
    pub(crate) captured: HashSet<&'a str>,
    pub(crate) stored: HashMap<&'a str, Stored>,
}

impl<'a> Index<'a> {
    /// The index of every node of the main graph.
    pub(crate) fn new(graph: &'a GraphProto) -> Self {
        Self::live(graph, &[])
    }

    /// The index of the nodes not marked in `dead` (nodes past its end are live): dead nodes
    /// read, produce and store nothing.
    pub(crate) fn live(graph: &'a GraphProto, dead: &[bool]) -> Self {
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

    pub(crate) fn node(&self, i: usize) -> &'a NodeProto {
        &self.graph.node[i]
    }

    /// The name of node `i`, or `op#i` when it has none.
    pub(crate) fn node_name(&self, i: usize) -> String {
        label(self.node(i), i)
    }

    /// The stored constant `name`: an initializer, or a `Constant` node with `value`,
    /// `value_float(s)` or `value_int(s)`.
    pub(crate) fn const_ref(&self, name: &str) -> Option<ConstRef<'a>> {
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

    pub(crate) fn consumers_of(&self, name: &str) -> &[(usize, usize)] {
        self.consumers.get(name).map_or(&[], Vec::as_slice)
    }

    /// Whether `name` is read only by input `slot` of `node` (so it can be rewritten in place).
    pub(crate) fn private(&self, name: &str, node: usize, slot: usize) -> bool {
        self.consumers_of(name) == [(node, slot)]
            && !self.outputs.contains(name)
            && !self.captured.contains(name)
    }
}

/// Adds every name read inside `graph` (node inputs, graph outputs), its subgraphs included.
pub(crate) fn collect_reads<'a>(graph: &'a GraphProto, names: &mut HashSet<&'a str>) {
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

// ---------------------------------------------------------------------------------------------
// Reading nodes

/// Whether `node` is the standard ONNX operator `op`.
pub(crate) fn is_op(node: &NodeProto, op: &str) -> bool {
    node.op_type() == op && (node.domain().is_empty() || node.domain() == "ai.onnx")
}

pub(crate) fn attr<'n>(node: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    node.attribute.iter().find(|a| a.name() == name)
}

pub(crate) fn attr_int(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map_or(default, |a| a.i())
}

pub(crate) fn attr_float(node: &NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map_or(default, |a| a.f())
}

/// The name of `node` (at position `i`), or `op#i` when it has none.
pub(crate) fn label(node: &NodeProto, i: usize) -> String {
    if node.name().is_empty() {
        format!("{}#{i}", node.op_type())
    } else {
        node.name().to_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// Names

/// The names used at the top level of the main graph: node names, node inputs and outputs,
/// initializers, graph inputs and outputs. Unlike [`all_names`], not the names declared in
/// `value_info` nor those read inside subgraphs.
pub(crate) fn top_level_names(graph: &GraphProto) -> HashSet<String> {
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
    names
}

/// Every name a new tensor or node of the main graph must avoid: [`top_level_names`], the
/// names declared in `value_info`, and the names read inside subgraphs.
pub(crate) fn all_names(graph: &GraphProto) -> HashSet<String> {
    let mut names = top_level_names(graph);
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

/// `wanted`, or `wanted_1`, `wanted_2`, … : the first that is not in `names`, which then
/// holds it too.
pub(crate) fn unique(names: &mut HashSet<String>, wanted: &str) -> String {
    let mut candidate = wanted.to_owned();
    let mut i = 1;
    while names.contains(&candidate) {
        candidate = format!("{wanted}_{i}");
        i += 1;
    }
    names.insert(candidate.clone());
    candidate
}

// ---------------------------------------------------------------------------------------------
// Building tensors, attributes, nodes and value infos

/// The raw little-endian bytes of float32 values.
pub(crate) fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A tensor holding `raw` (little-endian) as its raw data.
pub(crate) fn tensor(name: &str, dtype: DType, dims: &[i64], raw: Vec<u8>) -> TensorProto {
    let mut t = TensorProto::new();
    t.set_name(name.to_owned());
    t.set_data_type(dtype.0);
    t.dims = dims.to_vec();
    t.set_raw_data(raw);
    t
}

pub(crate) fn float_tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    tensor(name, DType::FLOAT32, dims, le_bytes(values))
}

pub(crate) fn half_tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    let raw = values
        .iter()
        .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
        .collect();
    tensor(name, DType::FLOAT16, dims, raw)
}

pub(crate) fn int8_tensor(name: &str, dims: &[i64], values: &[i8]) -> TensorProto {
    tensor(
        name,
        DType::INT8,
        dims,
        values.iter().map(|&v| v as u8).collect(),
    )
}

pub(crate) fn uint8_tensor(name: &str, dims: &[i64], values: &[u8]) -> TensorProto {
    tensor(name, DType::UINT8, dims, values.to_vec())
}

pub(crate) fn int_attr(name: &str, value: i64) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.set_name(name.to_owned());
    a.set_type(attribute_proto::AttributeType::INT);
    a.set_i(value);
    a
}

/// The `value` attribute of a `Constant` node holding `value`.
pub(crate) fn value_attr(value: TensorProto) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.set_name("value".to_owned());
    a.set_type(attribute_proto::AttributeType::TENSOR);
    a.t = Some(value).into();
    a
}

/// A node of the default domain with one output.
pub(crate) fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    output: &str,
    attributes: &[AttributeProto],
) -> NodeProto {
    let mut n = NodeProto::new();
    n.set_op_type(op.to_owned());
    n.set_name(name.to_owned());
    n.input = inputs.iter().map(|s| (*s).to_owned()).collect();
    n.output = vec![output.to_owned()];
    n.attribute = attributes.to_vec();
    n
}

pub(crate) fn constant_node(name: &str, output: &str, value: TensorProto) -> NodeProto {
    node("Constant", name, &[], output, &[value_attr(value)])
}

/// A tensor shape of known dimensions.
pub(crate) fn shape_proto(dims: &[i64]) -> TensorShapeProto {
    let mut shape = TensorShapeProto::new();
    for &d in dims {
        let mut dim = tensor_shape_proto::Dimension::new();
        dim.set_dim_value(d);
        shape.dim.push(dim);
    }
    shape
}

/// A float32 tensor `name` of shape `dims`.
pub(crate) fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    let mut tensor = type_proto::Tensor::new();
    tensor.set_elem_type(1);
    tensor.shape = Some(shape_proto(dims)).into();
    let mut t = TypeProto::new();
    t.set_tensor_type(tensor);
    let mut info = ValueInfoProto::new();
    info.set_name(name.to_owned());
    info.type_ = Some(t).into();
    info
}
