//! Building the two halves of a split, and writing them.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::MainGraph;
use crate::error::{Error, Result};
use crate::model::graph::Dim;
use crate::model::load::LoadedModel;
use crate::model::proto::{
    GraphProto, ModelProto, TypeProto, ValueInfoProto, tensor_shape_proto, type_proto,
};
use crate::model::write::{OutputSet, serialize};

/// The two models of a split: the head runs on the device, the tail on the server.
#[derive(Clone, Debug)]
pub struct SplitModels {
    /// Outputs: the computed tensors sent, then the graph outputs computed on the device.
    pub head: ModelProto,
    /// Inputs: exactly [`sent`](Self::sent), in that order; outputs: the rest of the graph
    /// outputs.
    pub tail: ModelProto,
    /// Every tensor sent from the device to the server, in the order of the tail's inputs:
    /// the tensors asked for, then any graph input the server still reads (the device
    /// forwards it as it came: it is sent too).
    pub sent: Vec<String>,
    /// The graph inputs among [`sent`](Self::sent).
    pub forwarded_inputs: Vec<String>,
    /// Graph outputs computed on the device (outputs of the head).
    pub device_outputs: Vec<String>,
    /// Graph outputs computed on the server (the tail's outputs).
    pub server_outputs: Vec<String>,
    /// Main-graph nodes in each half (`Constant` nodes copied into both count in both).
    pub head_nodes: usize,
    pub tail_nodes: usize,
}

/// Splits `model` where the tensors named in `cut` are sent from the device to the server.
///
/// The head is every node the named tensors depend on; the tail is every other node. The
/// set must separate the graph: every tensor the tail reads must be one of `cut`, a weight,
/// a `Constant` node's output (copied into the tail), a tensor the tail computes itself, or
/// a graph input (then forwarded: it is sent too, and listed in
/// [`SplitModels::forwarded_inputs`]). Otherwise an [`Error::Device`] names the tensor that
/// would be missing on the server and the nodes on both sides. Every named tensor must be
/// read on the server, and each half must have at least one node.
///
/// Names are unchanged; initializers go to the half that reads them (both when both do);
/// the IR version, opsets, producer, metadata and local functions are copied to both.
/// Weights in external-data files stay there (see [`write_split`]).
pub fn split_model(model: &LoadedModel, cut: &[String]) -> Result<SplitModels> {
    let listed: Vec<String> = cut.iter().map(|t| format!("`{t}`")).collect();
    let what = format!("split at {}", listed.join(", "));
    let fail = |reason: String| Error::Device {
        what: what.clone(),
        reason,
    };
    let graph = model
        .proto
        .graph
        .as_ref()
        .ok_or_else(|| fail("the model has no graph".to_owned()))?;
    let main = MainGraph::new(graph);
    let node_name = |i: usize| -> String {
        let node = &graph.node[i];
        if node.name().is_empty() {
            format!("{} #{i}", node.op_type())
        } else {
            node.name().to_owned()
        }
    };

    let mut wanted: Vec<&str> = Vec::new();
    for name in cut {
        let name = name.as_str();
        if name.is_empty() {
            return Err(fail("an empty tensor name was given".to_owned()));
        }
        if wanted.contains(&name) {
            continue;
        }
        match main.producer.get(name) {
            Some(&p) if main.constant[p] => {
                return Err(fail(format!(
                    "`{name}` is the value of Constant node `{}`: each half keeps its own copy of constants; name a tensor computed from the input",
                    node_name(p)
                )));
            }
            Some(_) => {}
            None if main.weights.contains(name) => {
                return Err(fail(format!(
                    "`{name}` is a weight (an initializer): each half keeps the weights it reads; name a tensor computed from the input"
                )));
            }
            None if main.inputs.contains(name) => {}
            None => {
                return Err(fail(format!(
                    "the model's main graph has no tensor `{name}` (`edgefit split MODEL --list` lists the cuts and their tensors)"
                )));
            }
        }
        wanted.push(name);
    }
    if wanted.is_empty() {
        return Err(fail("no tensor to send was given".to_owned()));
    }

    // The head: everything the named tensors depend on.
    let n = graph.node.len();
    let mut in_head = vec![false; n];
    let mut stack: Vec<usize> = wanted
        .iter()
        .filter_map(|t| main.producer.get(t).copied())
        .collect();
    while let Some(p) = stack.pop() {
        if std::mem::replace(&mut in_head[p], true) {
            continue;
        }
        for r in &main.reads[p] {
            if let Some(&q) = main.producer.get(r)
                && !in_head[q]
            {
                stack.push(q);
            }
        }
    }
    if !(0..n).any(|i| in_head[i] && !main.constant[i]) {
        return Err(fail(
            "nothing would run on the device: every tensor named is a graph input".to_owned(),
        ));
    }
    let mut in_tail: Vec<bool> = (0..n).map(|i| !in_head[i] && !main.constant[i]).collect();
    if !in_tail.iter().any(|&t| t) {
        return Err(fail(
            "nothing would run on the server: every node computes a tensor named".to_owned(),
        ));
    }

    // Every tensor the tail reads must be there.
    let cut_set: HashSet<&str> = wanted.iter().copied().collect();
    let mut read_on_server: HashSet<&str> = HashSet::new();
    let mut constants_in_tail: Vec<usize> = Vec::new();
    for &i in main.order.iter().filter(|&&i| in_tail[i]) {
        for &r in &main.reads[i] {
            if cut_set.contains(r) || main.is_sendable_input(r) {
                read_on_server.insert(r);
                continue;
            }
            match main.producer.get(r) {
                Some(&p) if main.constant[p] => constants_in_tail.push(p),
                Some(&p) if in_head[p] => {
                    return Err(fail(format!(
                        "the tensors named do not separate the graph: `{r}` is computed on the device (by node `{}`) and read on the server (by node `{}`) but is not sent; add `{r}` to the tensors sent",
                        node_name(p),
                        node_name(i)
                    )));
                }
                Some(_) => {}
                None if main.weights.contains(r) => {}
                None => {
                    return Err(fail(format!(
                        "node `{}` reads `{r}`, which nothing in the model produces",
                        node_name(i)
                    )));
                }
            }
        }
    }
    for &p in &constants_in_tail {
        in_tail[p] = true;
    }
    if let Some(unread) = wanted.iter().find(|t| !read_on_server.contains(*t)) {
        return Err(fail(format!(
            "`{unread}` is not read by any node on the server; leave it out"
        )));
    }

    // Graph outputs: on the side whose node computes them.
    let mut device_outputs = Vec::new();
    let mut server_outputs = Vec::new();
    for output in &graph.output {
        match main.producer.get(output.name()) {
            Some(&p) if in_head[p] => device_outputs.push(output.clone()),
            Some(_) => server_outputs.push(output.clone()),
            None => {
                return Err(fail(format!(
                    "graph output `{}` is not computed by any node (it is an input or a weight); such models are not split",
                    output.name()
                )));
            }
        }
    }
    if server_outputs.is_empty() {
        return Err(fail(
            "every output of the model is computed on the device: the server would compute nothing the model returns".to_owned(),
        ));
    }

    // What is sent: the tensors named, then graph inputs the server reads.
    let mut sent: Vec<&str> = wanted.clone();
    for input in &graph.input {
        let name = input.name();
        if main.is_sendable_input(name) && read_on_server.contains(name) && !sent.contains(&name) {
            sent.push(name);
        }
    }
    let forwarded_inputs: Vec<String> = sent
        .iter()
        .filter(|t| main.is_sendable_input(t))
        .map(|t| (*t).to_owned())
        .collect();

    let declare = |name: &str| {
        declared_info(model, graph, name).ok_or_else(|| {
        fail(format!(
            "the type of `{name}` is not known (shape inference did not reach it), so it cannot be declared as an input of the server half"
        ))
    })
    };
    let head_outputs: Vec<ValueInfoProto> = wanted
        .iter()
        .filter(|t| !main.is_sendable_input(t))
        .map(|t| declare(t))
        .chain(
            device_outputs
                .iter()
                .filter(|o| !cut_set.contains(o.name()))
                .cloned()
                .map(Ok),
        )
        .collect::<Result<_>>()?;
    let tail_inputs: Vec<ValueInfoProto> =
        sent.iter().map(|t| declare(t)).collect::<Result<_>>()?;

    let head_order: Vec<usize> = main.order.iter().copied().filter(|&i| in_head[i]).collect();
    let tail_order: Vec<usize> = main.order.iter().copied().filter(|&i| in_tail[i]).collect();
    let head_inputs: Vec<ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| {
            main.is_sendable_input(i.name())
                && head_order
                    .iter()
                    .any(|&n| main.reads[n].contains(&i.name()))
        })
        .cloned()
        .collect();
    let head = half(
        &model.proto,
        graph,
        &main,
        &head_order,
        head_inputs,
        head_outputs,
    );
    let tail = half(
        &model.proto,
        graph,
        &main,
        &tail_order,
        tail_inputs,
        server_outputs.clone(),
    );
    Ok(SplitModels {
        head,
        tail,
        sent: sent.iter().map(|t| (*t).to_owned()).collect(),
        forwarded_inputs,
        device_outputs: device_outputs.iter().map(|o| o.name().to_owned()).collect(),
        server_outputs: server_outputs.iter().map(|o| o.name().to_owned()).collect(),
        head_nodes: head_order.len(),
        tail_nodes: tail_order.len(),
    })
}

/// The type of `name` as the model declares it (value_info, inputs, outputs) when it has one,
/// else as inferred.
fn declared_info(model: &LoadedModel, graph: &GraphProto, name: &str) -> Option<ValueInfoProto> {
    let declared = graph
        .value_info
        .iter()
        .chain(&graph.output)
        .chain(&graph.input)
        .find(|v| v.name() == name && v.type_.is_some());
    if let Some(v) = declared {
        return Some(v.clone());
    }
    let fact = model.shapes.get(name)?;
    let mut tensor = type_proto::Tensor::new();
    tensor.set_elem_type(fact.dtype?.0);
    if let Some(dims) = &fact.shape {
        let mut shape = crate::model::proto::TensorShapeProto::new();
        for d in dims {
            let mut dim = tensor_shape_proto::Dimension::new();
            match d {
                Dim::Known(v) => dim.set_dim_value(*v),
                Dim::Symbol(s) => dim.set_dim_param(s.clone()),
                Dim::Unknown(()) => {}
            }
            shape.dim.push(dim);
        }
        tensor.shape = Some(shape).into();
    }
    let mut t = TypeProto::new();
    t.set_tensor_type(tensor);
    let mut info = ValueInfoProto::new();
    info.set_name(name.to_owned());
    info.type_ = Some(t).into();
    Some(info)
}

/// One half: `nodes` (file indices, in execution order) of `graph` with the given inputs and
/// outputs, the initializers they read, the value_info of their tensors, and the model's
/// metadata.
fn half(
    model: &ModelProto,
    graph: &GraphProto,
    main: &MainGraph<'_>,
    nodes: &[usize],
    mut inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
) -> ModelProto {
    let read: HashSet<&str> = nodes
        .iter()
        .flat_map(|&i| main.reads[i].iter().copied())
        .collect();
    let produced: HashSet<&str> = nodes
        .iter()
        .flat_map(|&i| graph.node[i].output.iter().map(String::as_str))
        .collect();
    let mut g = GraphProto::new();
    g.name = graph.name.clone();
    g.doc_string = graph.doc_string.clone();
    g.node = nodes.iter().map(|&i| graph.node[i].clone()).collect();
    g.initializer = graph
        .initializer
        .iter()
        .filter(|t| read.contains(t.name()))
        .cloned()
        .collect();
    g.sparse_initializer = graph
        .sparse_initializer
        .iter()
        .filter(|s| s.values.as_ref().is_some_and(|v| read.contains(v.name())))
        .cloned()
        .collect();
    // Models of IR < 4 list their initializers among the inputs too.
    let weights: HashSet<&str> = g
        .initializer
        .iter()
        .map(|t| t.name())
        .chain(
            g.sparse_initializer
                .iter()
                .filter_map(|s| s.values.as_ref().map(|v| v.name())),
        )
        .collect();
    inputs.extend(
        graph
            .input
            .iter()
            .filter(|i| weights.contains(i.name()))
            .cloned(),
    );
    let boundary: HashSet<String> = inputs
        .iter()
        .chain(&outputs)
        .map(|v| v.name().to_owned())
        .collect();
    g.value_info = graph
        .value_info
        .iter()
        .filter(|v| {
            (read.contains(v.name()) || produced.contains(v.name())) && !boundary.contains(v.name())
        })
        .cloned()
        .collect();
    g.quantization_annotation = graph
        .quantization_annotation
        .iter()
        .filter(|q| read.contains(q.tensor_name()) || produced.contains(q.tensor_name()))
        .cloned()
        .collect();
    g.input = inputs;
    g.output = outputs;
    let mut m = ModelProto::new();
    m.ir_version = model.ir_version;
    m.opset_import = model.opset_import.clone();
    m.producer_name = model.producer_name.clone();
    m.producer_version = model.producer_version.clone();
    m.domain = model.domain.clone();
    m.model_version = model.model_version;
    m.doc_string = model.doc_string.clone();
    m.metadata_props = model.metadata_props.clone();
    m.functions = model.functions.clone();
    m.graph = Some(g).into();
    m
}

/// Writes the two halves to `head` and `tail` as one unit (both files complete before either
/// replaces anything), never over the opened model or its external-data files.
///
/// Weights in external-data files stay there: the halves name the files by a path relative
/// to their own folder, so they must be written into the model's folder; elsewhere the write
/// is refused with an [`Error::Device`] saying so.
pub fn write_split(
    model: &LoadedModel,
    split: &SplitModels,
    head: &Path,
    tail: &Path,
) -> Result<()> {
    let external = model.external_data_files();
    if !external.is_empty() {
        let dir = model.path.parent().unwrap_or(Path::new("."));
        let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
        let folder = |p: &Path| -> PathBuf {
            match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            }
        };
        for destination in [head, tail] {
            if canonical(&folder(destination)) != canonical(dir) {
                return Err(Error::Device {
                    what: format!("writing {}", destination.display()),
                    reason: format!(
                        "the model keeps weights in external-data files ({}), which each half names by a path relative to its own folder: write the halves into the model's folder, {}",
                        external
                            .iter()
                            .map(|f| format!("`{}`", f.display()))
                            .collect::<Vec<_>>()
                            .join(", "),
                        dir.display()
                    ),
                });
            }
        }
    }
    let mut protected: Vec<&Path> = vec![model.path.as_path()];
    protected.extend(external.iter().map(PathBuf::as_path));
    let mut set = OutputSet::new(&[head.to_path_buf(), tail.to_path_buf()], &protected)?;
    set.stage(head, &serialize(&split.head)?)?;
    set.stage(tail, &serialize(&split.tail)?)?;
    set.commit()
}
