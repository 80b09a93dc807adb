//! One model as the diff reads it: the graph view, the node protobufs parallel to it, and the
//! main graph's stored tensors decoded.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;

use super::ModelSummary;
use crate::error::{Error, Result};
use crate::model::dtype::DType;
use crate::model::graph::{GraphView, subgraphs_of};
use crate::model::load::LoadedModel;
use crate::model::proto::{
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, TensorProto,
    tensor_proto::DataLocation,
};
use crate::model::tensor::{decode_f32, element_count};

/// A stored tensor (initializer or `Constant` value) of the main graph.
pub(super) struct Stored<'a> {
    pub dtype: DType,
    pub dims: Vec<i64>,
    pub bytes: u64,
    /// `None` for types without a numeric reading.
    pub values: Option<Cow<'a, [f32]>>,
}

/// One of the two models.
pub(super) struct Side<'a> {
    pub graph: Cow<'a, GraphView>,
    /// Parallel to `graph.nodes`.
    pub nodes: Vec<&'a NodeProto>,
    /// Main-graph stored tensors by the name the graph reads them by.
    pub stored: HashMap<&'a str, Stored<'a>>,
    path: String,
    file_size_bytes: u64,
    weight_bytes: u64,
}

impl<'a> Side<'a> {
    /// The side of a loaded model: its decoded weights are borrowed, not copied.
    pub fn from_loaded(model: &'a LoadedModel) -> Result<Self> {
        let nodes = flat_nodes(&model.proto);
        let mut packed: Option<HashMap<&str, &TensorProto>> = None;
        let mut stored = HashMap::new();
        for w in model.weights.iter().filter(|w| w.graph.is_empty()) {
            let values = match &w.values {
                Some(v) => Some(Cow::Borrowed(v.as_slice())),
                // Sub-byte integer codes: the loader leaves them undecoded.
                None if sub_byte_bits(w.dtype).is_some() && !w.external => {
                    let tensors = packed.get_or_insert_with(|| main_tensors(&model.proto));
                    match tensors.get(w.name.as_str()) {
                        Some(t) => unpack_sub_byte(t)?.map(Cow::Owned),
                        None => None,
                    }
                }
                None => None,
            };
            stored.insert(
                w.name.as_str(),
                Stored {
                    dtype: w.dtype,
                    dims: w.dims.clone(),
                    bytes: w.bytes,
                    values,
                },
            );
        }
        Ok(Side {
            graph: Cow::Borrowed(&model.graph),
            nodes,
            stored,
            path: model.path.display().to_string(),
            file_size_bytes: model.file_size_bytes,
            weight_bytes: model.weights.iter().map(|w| w.bytes).sum(),
        })
    }

    /// The side of a protobuf in memory: every main-graph tensor decoded here.
    pub fn from_proto(proto: &'a ModelProto) -> Result<Self> {
        let mut stored = HashMap::new();
        for (name, tensor) in main_tensors(proto) {
            let dtype = DType(tensor.data_type());
            let elements = element_count(name, &tensor.dims)?;
            if tensor.data_location() == DataLocation::EXTERNAL {
                return Err(Error::ExternalData {
                    tensor: name.to_owned(),
                    reason: "a model given in memory cannot read its external data; diff the files instead".to_owned(),
                    path: PathBuf::new(),
                });
            }
            let values = match decode_f32(tensor, None)? {
                Some(v) => Some(v),
                None => unpack_sub_byte(tensor)?,
            };
            stored.insert(
                name,
                Stored {
                    dtype,
                    dims: tensor.dims.clone(),
                    bytes: dtype.bytes_for(elements),
                    values: values.map(Cow::Owned),
                },
            );
        }
        if let Some(graph) = proto.graph.as_ref() {
            for node in graph.node.iter().filter(|n| is_constant_node(n)) {
                let (Some(output), Some(attr)) = (node.output.first(), node.attribute.first())
                else {
                    continue;
                };
                let (dtype, values) = match attr.name() {
                    "value_float" => (DType::FLOAT32, vec![attr.f()]),
                    "value_floats" => (DType::FLOAT32, attr.floats.clone()),
                    "value_int" => (DType::INT64, vec![attr.i() as f32]),
                    "value_ints" => (DType::INT64, attr.ints.iter().map(|&v| v as f32).collect()),
                    _ => continue,
                };
                let dims = if attr.name().ends_with('s') {
                    vec![values.len() as i64]
                } else {
                    vec![]
                };
                stored.insert(
                    output.as_str(),
                    Stored {
                        dtype,
                        dims,
                        bytes: dtype.bytes_for(values.len() as u64),
                        values: Some(Cow::Owned(values)),
                    },
                );
            }
        }
        let mut weight_bytes = 0u64;
        if let Some(graph) = proto.graph.as_ref() {
            stored_bytes(graph, &mut weight_bytes);
        }
        Ok(Side {
            graph: Cow::Owned(GraphView::new(proto)),
            nodes: flat_nodes(proto),
            stored,
            path: String::new(),
            file_size_bytes: proto.compute_size(),
            weight_bytes,
        })
    }

    /// The totals of this model, with `weights` as the diff counted them.
    pub fn summary(&self, weights: usize) -> ModelSummary {
        ModelSummary {
            path: self.path.clone(),
            file_size_bytes: self.file_size_bytes,
            nodes: self.graph.nodes.len(),
            weights,
            weight_bytes: self.weight_bytes,
        }
    }

    /// The node producing main-graph tensor `name`.
    pub fn producer(&self, name: &str) -> Option<usize> {
        self.graph.producer.get(name).copied()
    }

    /// The protobuf of node `index`, when the flattening agrees with the graph view.
    pub fn node(&self, index: usize) -> Option<&'a NodeProto> {
        self.nodes.get(index).copied()
    }
}

/// Whether `node` is an `ai.onnx` `Constant`.
pub(super) fn is_constant_node(node: &NodeProto) -> bool {
    node.op_type() == "Constant" && (node.domain().is_empty() || node.domain() == "ai.onnx")
}

/// Every node protobuf in `GraphView` order: each graph's nodes in file order, a subgraph's
/// right after the node that owns it.
fn flat_nodes(proto: &ModelProto) -> Vec<&NodeProto> {
    fn walk<'a>(graph: &'a GraphProto, out: &mut Vec<&'a NodeProto>) {
        for node in &graph.node {
            out.push(node);
            for (_, sub) in subgraphs_of(&node.attribute) {
                walk(sub, out);
            }
        }
    }
    let mut out = Vec::new();
    if let Some(graph) = proto.graph.as_ref() {
        walk(graph, &mut out);
    }
    out
}

/// The main graph's initializers and `Constant` `value` tensors, by the name the graph reads.
fn main_tensors(proto: &ModelProto) -> HashMap<&str, &TensorProto> {
    let mut out = HashMap::new();
    let Some(graph) = proto.graph.as_ref() else {
        return out;
    };
    for t in &graph.initializer {
        out.insert(t.name(), t);
    }
    for node in graph.node.iter().filter(|n| is_constant_node(n)) {
        if let (Some(output), Some(t)) = (
            node.output.first(),
            node.attribute
                .iter()
                .find(|a| a.name() == "value")
                .and_then(|a: &AttributeProto| a.t.as_ref()),
        ) {
            out.insert(output.as_str(), t);
        }
    }
    out
}

/// Bytes of every stored tensor of `graph` and its subgraphs.
fn stored_bytes(graph: &GraphProto, total: &mut u64) {
    let bytes = |t: &TensorProto| {
        element_count(t.name(), &t.dims).map_or(0, |n| DType(t.data_type()).bytes_for(n))
    };
    for t in &graph.initializer {
        *total = total.saturating_add(bytes(t));
    }
    for node in &graph.node {
        for attr in &node.attribute {
            if let Some(t) = attr.t.as_ref() {
                *total = total.saturating_add(bytes(t));
            }
        }
        for (_, sub) in subgraphs_of(&node.attribute) {
            stored_bytes(sub, total);
        }
    }
}

/// Bits of the packed integer types (`uint4`, `int4`, `uint2`, `int2`) and whether signed.
fn sub_byte_bits(dtype: DType) -> Option<(u32, bool)> {
    match dtype.0 {
        21 => Some((4, false)),
        22 => Some((4, true)),
        25 => Some((2, false)),
        26 => Some((2, true)),
        _ => None,
    }
}

/// The values of a packed 4- or 2-bit integer tensor (lowest bits first), or `None` for
/// other types. The loader has already checked the data's length.
fn unpack_sub_byte(tensor: &TensorProto) -> Result<Option<Vec<f32>>> {
    let Some((bits, signed)) = sub_byte_bits(DType(tensor.data_type())) else {
        return Ok(None);
    };
    let count = element_count(tensor.name(), &tensor.dims)?;
    let count = usize::try_from(count).map_err(|_| Error::DimensionOverflow {
        what: tensor.name().to_owned(),
        dims: tensor.dims.clone(),
    })?;
    let bytes: Vec<u8> = match tensor.raw_data.as_deref() {
        Some(raw) => raw.to_vec(),
        None => tensor.int32_data.iter().map(|&v| v as u8).collect(),
    };
    let per_byte = (8 / bits) as usize;
    let mask = (1u8 << bits) - 1;
    let mut values = Vec::with_capacity(count);
    'bytes: for byte in bytes {
        for k in 0..per_byte {
            if values.len() == count {
                break 'bytes;
            }
            let code = (byte >> (k as u32 * bits)) & mask;
            let value = if signed && code >= 1 << (bits - 1) {
                i32::from(code) - (1 << bits)
            } else {
                i32::from(code)
            };
            values.push(value as f32);
        }
    }
    if values.len() != count {
        return Err(Error::BadTensor {
            tensor: tensor.name().to_owned(),
            reason: format!(
                "holds {} values but its shape {:?} needs {count}",
                values.len(),
                tensor.dims
            ),
        });
    }
    Ok(Some(values))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn unpacks_int4_low_nibble_first_with_sign() {
        let mut t = TensorProto::new();
        t.set_name("w".into());
        t.set_data_type(22);
        t.dims = vec![3];
        t.set_raw_data(vec![0xF7, 0x08]);
        assert_eq!(unpack_sub_byte(&t).unwrap(), Some(vec![7.0, -1.0, -8.0]));
        t.set_data_type(21);
        assert_eq!(unpack_sub_byte(&t).unwrap(), Some(vec![7.0, 15.0, 8.0]));
    }
}
