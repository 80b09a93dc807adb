//! A read-only view of the ONNX graph: every node (main graph and subgraphs), its attributes,
//! edges by tensor name, and the declared types of values.

use std::collections::HashMap;

use serde::Serialize;

use crate::model::dtype::DType;
use crate::model::proto::{
    AttributeProto, GraphProto, ModelProto, TypeProto, ValueInfoProto, attribute_proto,
    tensor_shape_proto, type_proto,
};

/// One dimension of a shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum Dim {
    /// A known size.
    Known(i64),
    /// A named (symbolic) size such as `batch` or `image_width`, or an expression of them.
    Symbol(String),
    /// Nothing is known.
    Unknown(()),
}

impl Dim {
    /// The size when it is known.
    pub fn known(&self) -> Option<i64> {
        match self {
            Dim::Known(v) => Some(*v),
            _ => None,
        }
    }
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Known(v) => write!(f, "{v}"),
            Dim::Symbol(s) => f.write_str(s),
            Dim::Unknown(()) => f.write_str("?"),
        }
    }
}

/// Formats a shape as `[1, 3, height, ?]`, or `?` when even the rank is unknown.
pub fn format_shape(shape: Option<&[Dim]>) -> String {
    match shape {
        None => "?".to_owned(),
        Some(dims) => {
            let dims: Vec<String> = dims.iter().map(Dim::to_string).collect();
            format!("[{}]", dims.join(", "))
        }
    }
}

/// Type and shape of a named value as far as they are known.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ValueDesc {
    pub name: String,
    /// Element type of a tensor value (for a sequence or optional, of the tensors inside).
    pub dtype: Option<DType>,
    /// `None` when the rank is unknown.
    pub shape: Option<Vec<Dim>>,
    /// `tensor`, `sequence`, `map`, `optional`, `sparse_tensor`, `opaque` or `unknown`.
    pub kind: &'static str,
}

impl ValueDesc {
    /// Reads a declared `ValueInfoProto`.
    pub fn from_proto(info: &ValueInfoProto) -> Self {
        let (kind, dtype, shape) = match info.type_.as_ref() {
            Some(t) => describe_type(t),
            None => ("unknown", None, None),
        };
        ValueDesc {
            name: info.name().to_owned(),
            dtype,
            shape,
            kind,
        }
    }
}

fn describe_type(t: &TypeProto) -> (&'static str, Option<DType>, Option<Vec<Dim>>) {
    match &t.value {
        Some(type_proto::Value::TensorType(tensor)) => {
            let dtype = tensor.elem_type.map(DType);
            let shape = tensor.shape.as_ref().map(|shape| {
                shape
                    .dim
                    .iter()
                    .map(|d| match &d.value {
                        // Some exporters (Paddle2ONNX) write -1 for a dynamic dimension.
                        Some(tensor_shape_proto::dimension::Value::DimValue(v)) if *v >= 0 => {
                            Dim::Known(*v)
                        }
                        Some(tensor_shape_proto::dimension::Value::DimValue(_)) => Dim::Unknown(()),
                        Some(tensor_shape_proto::dimension::Value::DimParam(p)) => {
                            Dim::Symbol(p.clone())
                        }
                        None => Dim::Unknown(()),
                    })
                    .collect()
            });
            ("tensor", dtype, shape)
        }
        Some(type_proto::Value::SequenceType(seq)) => {
            let inner = seq.elem_type.as_ref().map(describe_type);
            ("sequence", inner.and_then(|i| i.1), None)
        }
        Some(type_proto::Value::MapType(_)) => ("map", None, None),
        Some(type_proto::Value::OptionalType(opt)) => {
            let inner = opt.elem_type.as_ref().map(describe_type);
            ("optional", inner.and_then(|i| i.1), None)
        }
        Some(type_proto::Value::SparseTensorType(sparse)) => {
            ("sparse_tensor", sparse.elem_type.map(DType), None)
        }
        Some(type_proto::Value::OpaqueType(_)) => ("opaque", None, None),
        None => ("unknown", None, None),
    }
}

/// One attribute of a node, with its value summarised for display.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AttributeDesc {
    pub name: String,
    pub value: String,
}

/// One node of the model, in the main graph or in a subgraph.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeDesc {
    /// Index into [`GraphView::nodes`].
    pub index: usize,
    /// The ONNX node name, or `op_type#index` when the model leaves it empty.
    pub name: String,
    pub op_type: String,
    /// Operator domain; empty for the default `ai.onnx` domain.
    pub domain: String,
    /// Where the node lives: empty for the main graph, else `node/attribute` segments.
    pub graph: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attributes: Vec<AttributeDesc>,
}

/// The whole graph, flattened: main-graph nodes first in file order, then each subgraph's
/// nodes after the node that owns it.
#[derive(Clone, Debug, Default)]
pub struct GraphView {
    pub nodes: Vec<NodeDesc>,
    /// Main-graph inputs that are not initializers.
    pub inputs: Vec<ValueDesc>,
    pub outputs: Vec<ValueDesc>,
    /// Main graph: tensor name → index of the node producing it.
    pub producer: HashMap<String, usize>,
    /// Main graph: tensor name → indices of the nodes consuming it.
    pub consumers: HashMap<String, Vec<usize>>,
    /// Declared types of main-graph values (`value_info`, inputs, outputs).
    pub declared: HashMap<String, ValueDesc>,
}

impl GraphView {
    /// Builds the view of `model`'s graph.
    pub fn new(model: &ModelProto) -> Self {
        let mut view = GraphView::default();
        let Some(graph) = model.graph.as_ref() else {
            return view;
        };
        let initializers: std::collections::HashSet<&str> =
            graph.initializer.iter().map(|t| t.name()).collect();
        view.inputs = graph
            .input
            .iter()
            .filter(|i| !initializers.contains(i.name()))
            .map(ValueDesc::from_proto)
            .collect();
        view.outputs = graph.output.iter().map(ValueDesc::from_proto).collect();
        for info in graph
            .value_info
            .iter()
            .chain(&graph.input)
            .chain(&graph.output)
        {
            view.declared
                .insert(info.name().to_owned(), ValueDesc::from_proto(info));
        }
        view.add_graph(graph, "");
        view
    }

    fn add_graph(&mut self, graph: &GraphProto, path: &str) {
        for node in &graph.node {
            let index = self.nodes.len();
            let name = if node.name().is_empty() {
                format!("{}#{index}", node.op_type())
            } else {
                node.name().to_owned()
            };
            if path.is_empty() {
                for output in node.output.iter().filter(|o| !o.is_empty()) {
                    self.producer.insert(output.clone(), index);
                }
                for input in node.input.iter().filter(|i| !i.is_empty()) {
                    self.consumers.entry(input.clone()).or_default().push(index);
                }
            }
            self.nodes.push(NodeDesc {
                index,
                name: name.clone(),
                op_type: node.op_type().to_owned(),
                domain: node.domain().to_owned(),
                graph: path.to_owned(),
                inputs: node.input.clone(),
                outputs: node.output.clone(),
                attributes: node.attribute.iter().map(describe_attribute).collect(),
            });
            for (attr, sub) in subgraphs_of(&node.attribute) {
                let sub_path = if path.is_empty() {
                    format!("{name}/{attr}")
                } else {
                    format!("{path}/{name}/{attr}")
                };
                self.add_graph(sub, &sub_path);
            }
        }
    }

    /// Nodes of the main graph only.
    pub fn main_nodes(&self) -> impl Iterator<Item = &NodeDesc> {
        self.nodes.iter().filter(|n| n.graph.is_empty())
    }
}

/// The graphs held by a node's attributes (`If` branches, `Loop`/`Scan` bodies), with the
/// attribute name (`then_branch`, `body`, `body[1]` for a list).
pub fn subgraphs_of(attributes: &[AttributeProto]) -> Vec<(String, &GraphProto)> {
    let mut out = Vec::new();
    for attr in attributes {
        if let Some(g) = attr.g.as_ref() {
            out.push((attr.name().to_owned(), g));
        }
        for (i, g) in attr.graphs.iter().enumerate() {
            out.push((format!("{}[{i}]", attr.name()), g));
        }
    }
    out
}

const MAX_LISTED: usize = 16;

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    let shown: Vec<String> = items.iter().take(MAX_LISTED).map(T::to_string).collect();
    let more = if items.len() > MAX_LISTED {
        format!(", … ({} in all)", items.len())
    } else {
        String::new()
    };
    format!("[{}{more}]", shown.join(", "))
}

fn describe_attribute(attr: &AttributeProto) -> AttributeDesc {
    use attribute_proto::AttributeType as T;
    let kind = attr.type_.map(|t| t.enum_value_or_default());
    let value = match kind {
        Some(T::FLOAT) => attr.f().to_string(),
        Some(T::INT) => attr.i().to_string(),
        Some(T::STRING) => format!("{:?}", String::from_utf8_lossy(attr.s())),
        Some(T::FLOATS) => list(&attr.floats),
        Some(T::INTS) => list(&attr.ints),
        Some(T::STRINGS) => {
            let strings: Vec<String> = attr
                .strings
                .iter()
                .map(|s| format!("{:?}", String::from_utf8_lossy(s)))
                .collect();
            list(&strings)
        }
        Some(T::TENSOR) => match attr.t.as_ref() {
            Some(t) => format!("tensor {} {:?}", DType(t.data_type()), t.dims),
            None => "tensor".to_owned(),
        },
        Some(T::GRAPH) => match attr.g.as_ref() {
            Some(g) => format!("graph ({} nodes)", g.node.len()),
            None => "graph".to_owned(),
        },
        Some(T::GRAPHS) => format!("{} graphs", attr.graphs.len()),
        Some(T::TENSORS) => format!("{} tensors", attr.tensors.len()),
        Some(T::SPARSE_TENSOR) => "sparse tensor".to_owned(),
        Some(T::SPARSE_TENSORS) => format!("{} sparse tensors", attr.sparse_tensors.len()),
        Some(T::TYPE_PROTO) | Some(T::TYPE_PROTOS) => "type".to_owned(),
        Some(T::UNDEFINED) | None => {
            if !attr.ref_attr_name().is_empty() {
                format!("→ {}", attr.ref_attr_name())
            } else {
                "(undefined)".to_owned()
            }
        }
    };
    AttributeDesc {
        name: attr.name().to_owned(),
        value,
    }
}
