//! Opening an ONNX file: the lossless protobuf model of record, its weights decoded (from
//! initializers, `Constant` nodes, subgraphs and external-data files), the graph view and the
//! shapes tract can infer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::job::{CancelToken, ProgressSink, report};
use crate::model::dtype::DType;
use crate::model::graph::{GraphView, subgraphs_of};
use crate::model::proto::{
    AttributeProto, GraphProto, Message, ModelProto, TensorProto, tensor_proto::DataLocation,
};
use crate::model::shapes::{ShapeFacts, infer_shapes, tract_supports_op};
use crate::model::tensor::{decode_f32, element_count};

mod external;

use external::read_external;

/// Where a weight tensor is stored in the model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightOrigin {
    /// A graph initializer.
    Initializer,
    /// A sparse initializer (counted, not decoded).
    SparseInitializer,
    /// The value of a `Constant` node (PaddlePaddle exports keep all weights there).
    ConstantNode,
}

/// One stored tensor of the model (an initializer or a `Constant` value), decoded.
#[derive(Clone, Debug)]
pub struct Weight {
    /// Tensor name (for a `Constant` node: its output name).
    pub name: String,
    /// Graph it belongs to: empty for the main graph, else the subgraph path.
    pub graph: String,
    pub origin: WeightOrigin,
    pub dtype: DType,
    pub dims: Vec<i64>,
    pub elements: u64,
    /// Bytes as stored by its type (sub-byte types rounded up).
    pub bytes: u64,
    /// Values as `f32`, or `None` for types without a numeric reading (strings, complex, fp8).
    pub values: Option<Vec<f32>>,
    /// Whether the bytes came from an external-data file.
    pub external: bool,
}

/// A model opened from disk, ready for analysis.
#[derive(Clone, Debug)]
pub struct LoadedModel {
    /// The file it was read from (canonical path).
    pub path: PathBuf,
    pub file_size_bytes: u64,
    /// The model of record, exactly as read (external data stays external).
    pub proto: ModelProto,
    pub graph: GraphView,
    pub weights: Vec<Weight>,
    /// Main-graph tensor name → index into `weights`.
    pub weight_index: HashMap<String, usize>,
    pub shapes: ShapeFacts,
    /// Problems that did not stop the load, each naming what it concerns.
    pub warnings: Vec<String>,
}

impl LoadedModel {
    /// The external-data files the model reads (every graph), beside it.
    pub fn external_data_files(&self) -> Vec<PathBuf> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut files: Vec<PathBuf> = Vec::new();
        let mut visit = |t: &TensorProto| {
            if t.data_location() == DataLocation::EXTERNAL
                && let Some(location) = t.external_data.iter().find(|e| e.key() == "location")
            {
                let path = dir.join(location.value());
                if !files.contains(&path) {
                    files.push(path);
                }
            }
        };
        fn walk(graph: &GraphProto, visit: &mut dyn FnMut(&TensorProto)) {
            graph.initializer.iter().for_each(&mut *visit);
            for node in &graph.node {
                for attr in &node.attribute {
                    if let Some(t) = attr.t.as_ref() {
                        visit(t);
                    }
                    for g in attr.g.as_ref().into_iter().chain(&attr.graphs) {
                        walk(g, visit);
                    }
                }
            }
        }
        if let Some(g) = self.proto.graph.as_ref() {
            walk(g, &mut visit);
        }
        files
    }

    /// The main-graph weight called `name`.
    pub fn weight(&self, name: &str) -> Option<&Weight> {
        self.weight_index.get(name).map(|&i| &self.weights[i])
    }

    /// This model with its shapes (and so its MACs) inferred again for a concrete shape of
    /// its first input (batch included): what symbolic or `-1` dims hid becomes known. The
    /// protobuf of record is unchanged; only the shape facts and their warnings are.
    pub fn with_input_shape(&self, shape: &[usize]) -> LoadedModel {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let concrete = crate::model::shapes::with_concrete_input(&self.proto, shape);
        let mut warnings: Vec<String> = self
            .warnings
            .iter()
            .filter(|w| !w.starts_with("shape inference"))
            .cloned()
            .collect();
        let mut shapes = infer_shapes(&concrete, Some(dir), &mut warnings);
        fill_declared(&mut shapes, &self.graph);
        LoadedModel {
            shapes,
            warnings,
            ..self.clone()
        }
    }

    /// Whether any tensor lives in an external-data file.
    pub fn has_external_data(&self) -> bool {
        self.weights.iter().any(|w| w.external)
    }
}

/// Reads and parses the ONNX file at `path`.
///
/// Fails with a clear [`Error`] on an empty, truncated or non-ONNX file, on a missing
/// external-data file or one outside the model's folder, and on tensors whose data does not
/// match their shape. Problems that leave the model usable (shape inference stopping, ops
/// tract lacks) become warnings.
pub fn load_model(
    path: &Path,
    progress: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<LoadedModel> {
    report(progress, "reading file", 0, 4);
    let path = path
        .canonicalize()
        .map_err(|e| Error::io("cannot open the model", path, e))?;
    crate::model::guard::regular_file(&path, "model file")?;
    let mut file =
        std::fs::File::open(&path).map_err(|e| Error::io("cannot read the model", &path, e))?;
    let file_size_bytes = file
        .metadata()
        .map_err(|e| Error::io("cannot read the model", &path, e))?
        .len();
    if file_size_bytes == 0 {
        return Err(Error::EmptyFile { path });
    }
    cancel.check()?;

    report(progress, "parsing", 1, 4);
    // Parsed straight from the file: the whole file is never held next to the parsed model
    // (that doubled the peak memory of loading a large model).
    let proto = ModelProto::parse_from_reader(&mut file).map_err(|e| parse_error(e, &path));
    let proto = check_parsed(proto?, &path)?;
    cancel.check()?;

    let model = from_proto(proto, path, file_size_bytes, progress)?;
    report(progress, "loaded", 4, 4);
    Ok(model)
}

/// Loads a model from `bytes` in memory, as if read from `path` (external data is looked up
/// beside it): what [`load_model`] does after reading the file (the fuzzer's entry point).
pub fn load_model_bytes(bytes: &[u8], path: PathBuf) -> Result<LoadedModel> {
    if bytes.is_empty() {
        return Err(Error::EmptyFile { path });
    }
    let proto = parse_model(bytes, &path)?;
    from_proto(proto, path, bytes.len() as u64, &crate::job::NoProgress)
}

/// Builds a [`LoadedModel`] from a protobuf already in memory (e.g. the result of a model
/// pass), as if it had been read from `path` (external data is looked up beside it).
pub fn from_proto(
    proto: ModelProto,
    path: PathBuf,
    file_size_bytes: u64,
    progress: &dyn ProgressSink,
) -> Result<LoadedModel> {
    report(progress, "decoding weights", 2, 4);
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut warnings = Vec::new();
    let weights = collect_weights(&proto, &dir, &mut warnings)?;
    let weight_index = weights
        .iter()
        .enumerate()
        .filter(|(_, w)| w.graph.is_empty())
        .map(|(i, w)| (w.name.clone(), i))
        .collect();

    report(progress, "inferring shapes", 3, 4);
    let graph = GraphView::new(&proto);
    warn_unsupported_ops(&graph, &mut warnings);
    let mut shapes = infer_shapes(&proto, Some(&dir), &mut warnings);
    fill_declared(&mut shapes, &graph);

    Ok(LoadedModel {
        path,
        file_size_bytes,
        proto,
        graph,
        weights,
        weight_index,
        shapes,
        warnings,
    })
}

/// Where tract learned nothing, the model's own declarations still hold.
fn fill_declared(shapes: &mut ShapeFacts, graph: &GraphView) {
    for (name, declared) in &graph.declared {
        let known = shapes.get(name).is_some_and(|f| f.shape.is_some());
        if !known && declared.kind == "tensor" {
            shapes.values.insert(name.clone(), declared.clone());
        }
    }
}

fn parse_model(bytes: &[u8], path: &Path) -> Result<ModelProto> {
    let proto = ModelProto::parse_from_bytes(bytes).map_err(|e| parse_error(e, path))?;
    check_parsed(proto, path)
}

/// The error of a file that does not parse as a protobuf message.
fn parse_error(error: protobuf::Error, path: &Path) -> Error {
    let reason = match error.to_string() {
        s if s.contains("EOF") || s.contains("truncated") => {
            format!("the file ends in the middle of a message, it looks truncated: {s}")
        }
        s => format!("the protobuf data is corrupt: {s}"),
    };
    Error::NotOnnx {
        reason,
        path: path.to_path_buf(),
    }
}

/// Refuses a parsed message that is not an ONNX model.
fn check_parsed(proto: ModelProto, path: &Path) -> Result<ModelProto> {
    let not_onnx = |reason: String| Error::NotOnnx {
        reason,
        path: path.to_path_buf(),
    };
    // Arbitrary bytes sometimes decode as a protobuf message with only unknown fields.
    let Some(graph) = proto.graph.as_ref() else {
        return Err(not_onnx("it holds no graph".to_owned()));
    };
    if proto.ir_version.is_none() && proto.opset_import.is_empty() {
        return Err(not_onnx(
            "it has neither an IR version nor an opset import".to_owned(),
        ));
    }
    if graph.node.is_empty() && graph.output.is_empty() {
        return Err(not_onnx("its graph has no nodes and no outputs".to_owned()));
    }
    Ok(proto)
}

/// A tensor found while walking the graphs, before decoding.
struct Found<'a> {
    tensor: TensorFound<'a>,
    graph: String,
    origin: WeightOrigin,
}

enum TensorFound<'a> {
    /// A stored tensor, and the name the graph reads it by when that is not the tensor's own
    /// (a `Constant` node's `value` is read as the node's output; its own name may be empty).
    Proto(&'a TensorProto, Option<String>),
    /// `Constant` with `value_float(s)` / `value_int(s)`: (name, dtype, dims, values).
    Inline(String, DType, Vec<i64>, Vec<f32>),
    /// Sparse tensors: counted by their dense shape, not decoded.
    Sparse(String, DType, Vec<i64>),
}

fn collect_weights(
    proto: &ModelProto,
    dir: &Path,
    warnings: &mut Vec<String>,
) -> Result<Vec<Weight>> {
    let mut found = Vec::new();
    if let Some(graph) = proto.graph.as_ref() {
        walk_graph(graph, "", &mut found);
    }
    let decoded: Vec<Result<Weight>> = found
        .into_par_iter()
        .map(|f| decode_found(f, dir))
        .collect();
    let mut weights = Vec::with_capacity(decoded.len());
    for w in decoded {
        weights.push(w?);
    }
    for w in &weights {
        if w.values.is_none() && w.elements > 0 && w.origin != WeightOrigin::SparseInitializer {
            warnings.push(format!(
                "tensor `{}` has type {}, which has no numeric reading here: counted, not analysed",
                w.name, w.dtype
            ));
        }
    }
    Ok(weights)
}

fn walk_graph<'a>(graph: &'a GraphProto, path: &str, found: &mut Vec<Found<'a>>) {
    for t in &graph.initializer {
        found.push(Found {
            tensor: TensorFound::Proto(t, None),
            graph: path.to_owned(),
            origin: WeightOrigin::Initializer,
        });
    }
    for s in &graph.sparse_initializer {
        let (name, dtype) = s
            .values
            .as_ref()
            .map(|v| (v.name().to_owned(), DType(v.data_type())))
            .unwrap_or_default();
        found.push(Found {
            tensor: TensorFound::Sparse(name, dtype, s.dims.clone()),
            graph: path.to_owned(),
            origin: WeightOrigin::SparseInitializer,
        });
    }
    for (index, node) in graph.node.iter().enumerate() {
        if node.op_type() == "Constant" && node.domain().is_empty() {
            let output = node.output.first().cloned().unwrap_or_default();
            if let Some(tensor) = constant_value(&node.attribute, output) {
                found.push(Found {
                    tensor,
                    graph: path.to_owned(),
                    origin: WeightOrigin::ConstantNode,
                });
            }
        }
        let name = if node.name().is_empty() {
            format!("{}#{index}", node.op_type())
        } else {
            node.name().to_owned()
        };
        for (attr, sub) in subgraphs_of(&node.attribute) {
            let sub_path = if path.is_empty() {
                format!("{name}/{attr}")
            } else {
                format!("{path}/{name}/{attr}")
            };
            walk_graph(sub, &sub_path, found);
        }
    }
}

fn constant_value(attributes: &[AttributeProto], output: String) -> Option<TensorFound<'_>> {
    let attr = attributes.first()?;
    let inline =
        |dtype, dims, values| Some(TensorFound::Inline(output.clone(), dtype, dims, values));
    match attr.name() {
        "value" => attr
            .t
            .as_ref()
            .map(|t| TensorFound::Proto(t, Some(output.clone()))),
        "sparse_value" => attr.sparse_tensor.as_ref().map(|s| {
            let dtype = s.values.as_ref().map_or(DType(0), |v| DType(v.data_type()));
            TensorFound::Sparse(output.clone(), dtype, s.dims.clone())
        }),
        "value_float" => inline(DType::FLOAT32, vec![], vec![attr.f()]),
        "value_floats" => inline(
            DType::FLOAT32,
            vec![attr.floats.len() as i64],
            attr.floats.clone(),
        ),
        "value_int" => inline(DType::INT64, vec![], vec![attr.i() as f32]),
        "value_ints" => inline(
            DType::INT64,
            vec![attr.ints.len() as i64],
            attr.ints.iter().map(|&v| v as f32).collect(),
        ),
        "value_string" => Some(TensorFound::Sparse(output.clone(), DType::STRING, vec![])),
        "value_strings" => Some(TensorFound::Sparse(
            output.clone(),
            DType::STRING,
            vec![attr.strings.len() as i64],
        )),
        _ => None,
    }
}

fn decode_found(found: Found<'_>, dir: &Path) -> Result<Weight> {
    let Found {
        tensor,
        graph,
        origin,
    } = found;
    match tensor {
        TensorFound::Proto(t, read_as) => {
            let name = read_as.unwrap_or_else(|| t.name().to_owned());
            let dtype = DType(t.data_type());
            let elements = element_count(&name, &t.dims)?;
            let external = t.data_location() == DataLocation::EXTERNAL;
            let values = if external {
                let bytes = read_external(t, dir)?;
                decode_f32(t, Some(&bytes))?
            } else {
                decode_f32(t, None)?
            };
            Ok(Weight {
                bytes: dtype.bytes_for(elements),
                name,
                graph,
                origin,
                dtype,
                dims: t.dims.clone(),
                elements,
                values,
                external,
            })
        }
        TensorFound::Inline(name, dtype, dims, values) => Ok(Weight {
            elements: values.len() as u64,
            bytes: dtype.bytes_for(values.len() as u64),
            name,
            graph,
            origin,
            dtype,
            dims,
            values: Some(values),
            external: false,
        }),
        TensorFound::Sparse(name, dtype, dims) => {
            let elements = element_count(&name, &dims)?;
            Ok(Weight {
                bytes: dtype.bytes_for(elements),
                name,
                graph,
                origin,
                dtype,
                dims,
                elements,
                values: None,
                external: false,
            })
        }
    }
}

fn warn_unsupported_ops(graph: &GraphView, warnings: &mut Vec<String>) {
    let mut missing: Vec<(&str, &str, usize)> = Vec::new();
    for node in &graph.nodes {
        let known = node.domain.is_empty() || node.domain == "ai.onnx";
        if !known || !tract_supports_op(&node.op_type) {
            match missing.iter_mut().find(|(op, _, _)| *op == node.op_type) {
                Some(entry) => entry.2 += 1,
                None => missing.push((&node.op_type, &node.name, 1)),
            }
        }
    }
    for (op, first, count) in missing {
        let domain = graph
            .nodes
            .iter()
            .find(|n| n.op_type == op)
            .map(|n| n.domain.as_str())
            .filter(|d| !d.is_empty())
            .map(|d| format!(" (domain {d})"))
            .unwrap_or_default();
        warnings.push(format!(
            "op `{op}`{domain} is not supported by tract ({count} node(s), first `{first}`): the model can be inspected but tract cannot run it"
        ));
    }
}
