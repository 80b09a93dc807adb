//! Shape and type inference through tract, mapped back to ONNX tensor names.
//!
//! tract is used for facts only; the model of record stays the ONNX protobuf. When inference
//! cannot finish (an op tract lacks, a symbolic clash), what is known is kept and a warning
//! says where it stopped.

use std::collections::HashMap;
use std::path::Path;

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use crate::model::dtype::DType;
use crate::model::graph::{Dim, ValueDesc};
use crate::model::proto::{Message, ModelProto, tensor_shape_proto, type_proto};

/// Inferred facts about the main graph's values, by ONNX tensor name.
#[derive(Clone, Debug, Default)]
pub struct ShapeFacts {
    pub values: HashMap<String, ValueDesc>,
    /// True when tract analysed every node without error.
    pub complete: bool,
}

impl ShapeFacts {
    /// The fact for tensor `name`, if any.
    pub fn get(&self, name: &str) -> Option<&ValueDesc> {
        self.values.get(name)
    }
}

/// Names of the ONNX ops tract can load.
pub fn tract_supports_op(op_type: &str) -> bool {
    thread_local! {
        static OPS: tract_onnx::model::OnnxOpRegister = tract_onnx::onnx().op_register;
    }
    OPS.with(|ops| ops.0.contains_key(op_type))
}

/// The most memory a constant folded during shape inference may take (1 GiB).
const ANALYSIS_BUDGET_BYTES: u64 = 1 << 30;

/// Runs tract's analysis on `model` and collects what it learns; never fails: problems become
/// `warnings`. `model_dir` lets tract read external data (locations already checked).
pub fn infer_shapes(
    model: &ModelProto,
    model_dir: Option<&Path>,
    warnings: &mut Vec<String>,
) -> ShapeFacts {
    let size = crate::model::proto::Message::compute_size(model);
    // Shape inference folds constants: a few seconds of analysis must not fold gigabytes.
    let analysis_budget = crate::model::guard::memory_budget_bytes(size).min(ANALYSIS_BUDGET_BYTES);
    let hazards = crate::model::guard::hazards(model, analysis_budget);
    if !hazards.is_empty() {
        let listed: Vec<String> = hazards.iter().take(3).map(ToString::to_string).collect();
        warnings.push(format!(
            "shape inference skipped (the model would crash, hang or exhaust memory in tract): {}; only declared shapes are shown",
            listed.join("; ")
        ));
        return ShapeFacts::default();
    }
    let result = crate::model::guard::quietly(|| infer_with_tract(model, model_dir));
    match result {
        Ok(Ok((facts, None))) => facts,
        Ok(Ok((facts, Some(stopped)))) => {
            warnings.push(format!(
                "shape inference is incomplete (tract: {stopped}); shapes and MACs after that point are unknown"
            ));
            facts
        }
        Ok(Err(error)) => {
            warnings.push(format!(
                "shape inference failed (tract: {}); only declared shapes are shown",
                first_line(&error)
            ));
            ShapeFacts::default()
        }
        Err(_) => {
            warnings.push(
                "shape inference crashed inside tract; only declared shapes are shown".to_owned(),
            );
            ShapeFacts::default()
        }
    }
}

fn first_line(error: &TractError) -> String {
    // tract errors carry a chain of context; the root cause is the useful part for a user.
    let root = error.root_cause().to_string();
    let top = error.to_string();
    if root == top {
        top
    } else {
        format!("{top}: {root}")
    }
}

type Inferred = (ShapeFacts, Option<String>);

/// Float initializers of the main graph larger than this many elements are declared as graph
/// inputs (type and shape only) in the copy tract analyses: their values never decide a shape,
/// and copying hundreds of megabytes of weights three times (clone, re-encode, tract's parse)
/// made `inspect` peak at 6x the file.
const SKELETON_MIN_ELEMENTS: i64 = 4096;

/// The copy of `model` that tract analyses: the main graph's large float initializers become
/// declared inputs (see [`SKELETON_MIN_ELEMENTS`]; their data is never copied), and every
/// BatchNormalization (all graphs) is an Identity of its input — the same shapes and types
/// (it keeps its input's), while tract 0.23's BatchNorm shape rule reads the channel dim of
/// an input of rank < 2 with an unchecked index (a non-unwinding panic — an abort — in debug
/// builds, undefined behaviour in release), which a broken model reaches (found by the fuzzer:
/// a Conv fed its own input as bias).
pub fn analysis_copy(model: &ModelProto) -> ModelProto {
    fn graph(g: &mut crate::model::proto::GraphProto) {
        for node in g.node.iter_mut() {
            for a in node.attribute.iter_mut() {
                if let Some(sub) = a.g.as_mut() {
                    graph(sub);
                }
                for sub in a.graphs.iter_mut() {
                    graph(sub);
                }
            }
            if node.op_type() == "BatchNormalization"
                && (node.domain().is_empty() || node.domain() == "ai.onnx")
            {
                node.set_op_type("Identity".to_owned());
                node.input.truncate(1);
                node.output.truncate(1);
                node.attribute.clear();
            }
        }
    }
    let mut copy = ModelProto::new();
    copy.ir_version = model.ir_version;
    copy.opset_import = model.opset_import.clone();
    copy.domain = model.domain.clone();
    copy.model_version = model.model_version;
    copy.functions = model.functions.clone();
    if let Some(main) = model.graph.as_ref() {
        copy.graph = Some(skeleton_graph(main)).into();
    }
    if let Some(g) = copy.graph.as_mut() {
        graph(g);
    }
    copy
}

/// `main` without the data of its large float initializers: each becomes a graph input of
/// its type and shape (unless the graph already lists it as an input). The other (small or
/// non-float) initializers become `Constant` nodes, placed first: tract's parser adds each
/// initializer with `add_const`, which compares it with every node already in the model to
/// share equal constants — quadratic in the number of initializers (most of the 9–12 s a
/// 20,000-node CNN took to `inspect`; 1.3 s now). A `Constant` node is added as a plain node,
/// with the same value and so the same facts.
fn skeleton_graph(main: &crate::model::proto::GraphProto) -> crate::model::proto::GraphProto {
    use crate::model::proto::{GraphProto, tensor_proto::DataType};
    let is_heavy = |t: &crate::model::proto::TensorProto| {
        let float = [
            DataType::FLOAT,
            DataType::FLOAT16,
            DataType::DOUBLE,
            DataType::BFLOAT16,
        ]
        .iter()
        .any(|d| *d as i32 == t.data_type());
        let elements = t.dims.iter().try_fold(
            1i64,
            |acc, &d| if d < 0 { None } else { acc.checked_mul(d) },
        );
        float && elements.is_some_and(|n| n > SKELETON_MIN_ELEMENTS) && !t.name().is_empty()
    };
    let mut g = GraphProto::new();
    g.name = main.name.clone();
    g.node = Vec::with_capacity(main.node.len() + main.initializer.len());
    g.input = main.input.clone();
    g.output = main.output.clone();
    g.value_info = main.value_info.clone();
    g.sparse_initializer = main.sparse_initializer.clone();
    let declared: std::collections::HashSet<&str> = main.input.iter().map(|i| i.name()).collect();
    // Initializers turned into `Constant` nodes: no longer graph inputs (tract read an input
    // with an initializer as that constant).
    let mut as_nodes: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for t in &main.initializer {
        if !is_heavy(t) {
            if t.name().is_empty() {
                // No name to read it by: left as it was.
                g.initializer.push(t.clone());
            } else {
                as_nodes.insert(t.name());
                g.node.push(constant_node(t));
            }
            continue;
        }
        if declared.contains(t.name()) {
            continue;
        }
        let mut input = crate::model::graph_edit::value_info(t.name(), &t.dims);
        if let Some(type_proto::Value::TensorType(tensor)) =
            input.type_.as_mut().and_then(|ty| ty.value.as_mut())
        {
            tensor.set_elem_type(t.data_type());
        }
        g.input.push(input);
    }
    if !as_nodes.is_empty() {
        g.input.retain(|i| !as_nodes.contains(i.name()));
    }
    g.node.extend(main.node.iter().cloned());
    g
}

/// A `Constant` node whose output is `t`'s name and whose value is `t` (tract names the node
/// after its output, as it names an initializer's).
fn constant_node(t: &crate::model::proto::TensorProto) -> crate::model::proto::NodeProto {
    use crate::model::proto::{AttributeProto, NodeProto, attribute_proto::AttributeType};
    let mut value = AttributeProto::new();
    value.set_name("value".to_owned());
    value.set_type(AttributeType::TENSOR);
    value.t = Some(t.clone()).into();
    let mut node = NodeProto::new();
    node.set_op_type("Constant".to_owned());
    node.output = vec![t.name().to_owned()];
    node.attribute = vec![value];
    node
}

/// Whether `model` has a BatchNormalization whose input is known to have rank < 2 at `facts`:
/// tract must not build such a model (see [`analysis_copy`]). An unknown rank is let
/// through (real models whose shape inference stops early would be refused otherwise).
pub fn batchnorm_hazard(model: &ModelProto, facts: &ShapeFacts) -> Option<String> {
    let graph = crate::model::graph::GraphView::new(model);
    graph
        .nodes
        .iter()
        .filter(|n| n.op_type == "BatchNormalization" && n.graph.is_empty())
        .find_map(|n| {
            let input = n.inputs.first()?;
            let rank = facts
                .get(input)
                .and_then(|v| v.shape.as_ref())
                .map(Vec::len);
            match rank {
                Some(r) if r < 2 => Some(format!(
                    "BatchNormalization `{}` reads `{input}` of rank {r} (it needs [N, C, ...])",
                    n.name
                )),
                _ => None,
            }
        })
}

fn infer_with_tract(model: &ModelProto, model_dir: Option<&Path>) -> TractResult<Inferred> {
    let model = &analysis_copy(model);
    let bytes = model
        .write_to_bytes()
        .map_err(|e| TractError::msg(format!("re-encoding the model for tract: {e}")))?;
    let onnx = tract_onnx::onnx();
    let pb = onnx.proto_model_for_read(&mut bytes.as_slice())?;
    drop(bytes);
    let dir = model_dir.and_then(Path::to_str);
    let parsed = onnx.parse(&pb, dir)?;
    drop(pb);
    let mut inference_model = parsed.model;
    let stopped = match inference_model.analyse(true) {
        Ok(_) => None,
        Err(error) => Some(first_line(&error)),
    };
    let mut facts = ShapeFacts {
        values: HashMap::with_capacity(parsed.outlets_by_name.len()),
        complete: stopped.is_none(),
    };
    for (name, outlet) in &parsed.outlets_by_name {
        let Ok(fact) = inference_model.outlet_fact(*outlet) else {
            continue;
        };
        facts.values.insert(name.clone(), describe_fact(name, fact));
    }
    Ok((facts, stopped))
}

fn describe_fact(name: &str, fact: &InferenceFact) -> ValueDesc {
    let dtype = fact.datum_type.concretize().and_then(onnx_dtype);
    let shape = if fact.shape.is_open() {
        None
    } else {
        Some(
            fact.shape
                .dims()
                .map(|d| match d.concretize() {
                    Some(dim) => match dim.to_i64() {
                        Ok(v) => Dim::Known(v),
                        Err(_) => Dim::Symbol(dim.to_string()),
                    },
                    None => Dim::Unknown(()),
                })
                .collect(),
        )
    };
    ValueDesc {
        name: name.to_owned(),
        dtype,
        shape,
        kind: "tensor",
    }
}

fn onnx_dtype(dt: DatumType) -> Option<DType> {
    Some(match dt {
        DatumType::F32 => DType::FLOAT32,
        DatumType::F16 => DType::FLOAT16,
        DatumType::F64 => DType::FLOAT64,
        DatumType::I8 => DType::INT8,
        DatumType::U8 => DType::UINT8,
        DatumType::I16 => DType(5),
        DatumType::U16 => DType(4),
        DatumType::I32 => DType::INT32,
        DatumType::U32 => DType(12),
        DatumType::I64 | DatumType::TDim => DType::INT64,
        DatumType::U64 => DType(13),
        DatumType::Bool => DType::BOOL,
        DatumType::String => DType::STRING,
        _ => return None,
    })
}

/// A copy of `model` fixed to `shape` for its first input: the input's dims are made concrete,
/// every symbol they named is replaced by its value wherever it appears (graph outputs and
/// subgraphs), and the main graph's `value_info` is dropped (the stored facts of intermediate
/// values were computed for symbolic inputs and can clash with concrete ones; runtimes infer
/// them again). Nothing else changes.
pub(crate) fn with_concrete_input(model: &ModelProto, shape: &[usize]) -> ModelProto {
    use std::collections::HashMap;
    let mut model = model.clone();
    let inputs: Vec<String> = crate::model::graph::GraphView::new(&model)
        .inputs
        .into_iter()
        .map(|v| v.name)
        .collect();
    let Some(graph) = model.graph.as_mut() else {
        return model;
    };
    let mut symbols: HashMap<String, i64> = HashMap::new();
    if let Some(first) = inputs.first()
        && let Some(input) = graph.input.iter_mut().find(|i| i.name() == first.as_str())
        && let Some(type_proto::Value::TensorType(t)) =
            input.type_.as_mut().and_then(|t| t.value.as_mut())
    {
        let dims = &mut t.shape.mut_or_insert_default().dim;
        for (i, d) in dims.iter().enumerate() {
            if let (Some(tensor_shape_proto::dimension::Value::DimParam(p)), Some(&v)) =
                (&d.value, shape.get(i))
            {
                symbols.insert(p.clone(), v as i64);
            }
        }
        dims.clear();
        for &v in shape {
            let mut d = tensor_shape_proto::Dimension::new();
            d.set_dim_value(v as i64);
            dims.push(d);
        }
    }
    graph.value_info.clear();
    substitute_graph(graph, &symbols);
    model
}

fn substitute_graph(
    graph: &mut crate::model::proto::GraphProto,
    symbols: &std::collections::HashMap<String, i64>,
) {
    for info in graph
        .input
        .iter_mut()
        .chain(graph.output.iter_mut())
        .chain(graph.value_info.iter_mut())
    {
        if let Some(type_proto::Value::TensorType(t)) =
            info.type_.as_mut().and_then(|t| t.value.as_mut())
            && let Some(shape) = t.shape.as_mut()
        {
            for d in &mut shape.dim {
                if let Some(tensor_shape_proto::dimension::Value::DimParam(p)) = &d.value {
                    d.value = symbols
                        .get(p)
                        .map(|&v| tensor_shape_proto::dimension::Value::DimValue(v));
                }
            }
        }
    }
    for node in &mut graph.node {
        for attr in &mut node.attribute {
            if let Some(g) = attr.g.as_mut() {
                substitute_graph(g, symbols);
            }
            for g in &mut attr.graphs {
                substitute_graph(g, symbols);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::graph_edit::{float_tensor, node, tensor, value_info};
    use crate::model::proto::{GraphProto, OperatorSetIdProto};

    /// A Reshape whose shape is an initializer (also listed as a graph input, as IR < 4
    /// exports do), then an Add of a small float initializer.
    fn reshape_model() -> ModelProto {
        let mut g = GraphProto::new();
        let shape: Vec<u8> = [2i64, 6].iter().flat_map(|v| v.to_le_bytes()).collect();
        g.initializer
            .push(tensor("shape", DType::INT64, &[2], shape));
        g.initializer
            .push(float_tensor("bias", &[6], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]));
        g.input.push(value_info("x", &[3, 4]));
        g.input.push(value_info("shape", &[2]));
        g.node.push(node("Reshape", "r", &["x", "shape"], "y", &[]));
        g.node.push(node("Add", "a", &["y", "bias"], "z", &[]));
        g.output.push(value_info("z", &[]));
        let mut m = ModelProto::new();
        m.set_ir_version(3);
        let mut opset = OperatorSetIdProto::new();
        opset.set_version(13);
        m.opset_import.push(opset);
        m.graph = Some(g).into();
        m
    }

    #[test]
    fn initializers_reach_tract_as_constant_nodes_with_their_values() {
        let model = reshape_model();
        let copy = analysis_copy(&model);
        let g = copy.graph.as_ref().map(|g| g.clone()).unwrap_or_default();
        // Constant nodes first, then the graph's own; the initializer no longer an input.
        assert!(g.initializer.is_empty());
        assert_eq!(g.node.len(), 4);
        assert!(g.node[..2].iter().all(|n| n.op_type() == "Constant"));
        assert_eq!(g.node[0].output, ["shape"]);
        assert!(g.input.iter().all(|i| i.name() != "shape"));

        let mut warnings = Vec::new();
        let facts = infer_shapes(&model, None, &mut warnings);
        assert!(facts.complete, "{warnings:?}");
        let dims = |name: &str| {
            facts
                .get(name)
                .and_then(|v| v.shape.clone())
                .map(|s| s.iter().map(|d| d.known()).collect::<Vec<_>>())
        };
        // The shape's values were read: Reshape's output is known.
        assert_eq!(dims("y"), Some(vec![Some(2), Some(6)]));
        assert_eq!(dims("z"), Some(vec![Some(2), Some(6)]));
        assert_eq!(dims("shape"), Some(vec![Some(2)]));
        assert_eq!(dims("bias"), Some(vec![Some(6)]));
    }
}
