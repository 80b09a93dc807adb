//! Checks a model against the ONNX operator schemas of the opsets it imports, in process, as
//! onnxruntime's loader and `onnx.checker` do: every op exists at its domain's imported
//! version (and is not deprecated there), its input and output counts, its required
//! attributes and no attribute the version does not know, the element types of inputs whose
//! type is known, and that every input is produced before it is read.
//!
//! The table (`engine/data/onnx_op_schemas.json`) is generated from the `onnx` package by
//! `tests/python/gen_op_schemas.py`. Domains it does not hold (e.g. `com.microsoft`) are not
//! checked; their ops are listed as such.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use serde::Deserialize;
use serde::Serialize;

use crate::model::proto::{GraphProto, ModelProto, NodeProto, attribute_proto, type_proto};

/// One problem found by [`check_model`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct SchemaProblem {
    /// The node's name (or `op#index`), empty for a graph-level problem.
    pub node: String,
    pub op: String,
    pub message: String,
}

impl std::fmt::Display for SchemaProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.node.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{} `{}`: {}", self.op, self.node, self.message)
        }
    }
}

/// What [`check_model`] found.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SchemaReport {
    pub problems: Vec<SchemaProblem>,
    /// Ops of domains the table does not hold, not checked (`domain|op`).
    pub unchecked_ops: Vec<String>,
    /// The `onnx` version the schemas come from.
    pub schemas: String,
}

impl SchemaReport {
    /// Whether no problem was found.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// The problems of `self` that `original` does not have (what an export introduced).
    pub fn new_since(&self, original: &SchemaReport) -> Vec<SchemaProblem> {
        let known: HashSet<(&str, &str)> = original
            .problems
            .iter()
            .map(|p| (p.op.as_str(), p.message.as_str()))
            .collect();
        self.problems
            .iter()
            .filter(|p| !known.contains(&(p.op.as_str(), p.message.as_str())))
            .cloned()
            .collect()
    }
}

/// A formal input or output: name, option (0 single, 1 optional, 2 variadic), type.
#[derive(Debug, Deserialize)]
struct Formal(String, u8, FormalType);

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FormalType {
    Param(String),
    Fixed(Vec<i32>),
}

/// One version of an op's schema (see `tests/python/gen_op_schemas.py`).
#[derive(Debug, Deserialize)]
struct Version(
    i64,
    u8,
    usize,
    usize,
    usize,
    usize,
    Vec<Formal>,
    Vec<Formal>,
    HashMap<String, Vec<i32>>,
    HashMap<String, u8>,
);

#[derive(Debug, Deserialize)]
struct Table {
    onnx: String,
    ops: HashMap<String, Vec<Version>>,
}

fn table() -> Option<&'static Table> {
    static TABLE: OnceLock<Option<Table>> = OnceLock::new();
    TABLE
        .get_or_init(|| serde_json::from_str(include_str!("../../data/onnx_op_schemas.json")).ok())
        .as_ref()
}

/// The versions (`since_version`) at which `op` of `domain` changed, oldest first.
pub fn since_versions(domain: &str, op: &str) -> Vec<i64> {
    table()
        .and_then(|t| t.ops.get(&format!("{}|{op}", canonical_domain(domain))))
        .map_or_else(Vec::new, |v| v.iter().map(|e| e.0).collect())
}

fn canonical_domain(domain: &str) -> &str {
    if domain == "ai.onnx" { "" } else { domain }
}

/// Checks `model` (main graph and every subgraph) against the schemas of its opsets.
pub fn check_model(model: &ModelProto) -> SchemaReport {
    let mut report = SchemaReport::default();
    let Some(table) = table() else {
        report.problems.push(SchemaProblem {
            node: String::new(),
            op: String::new(),
            message: "the operator schema table could not be read".to_owned(),
        });
        return report;
    };
    report.schemas = format!("onnx {} operator schemas", table.onnx);
    let known_domains: HashSet<&str> = table
        .ops
        .keys()
        .filter_map(|k| k.split_once('|').map(|(d, _)| d))
        .collect();
    let mut opsets: HashMap<&str, i64> = HashMap::new();
    for o in &model.opset_import {
        opsets.insert(canonical_domain(o.domain()), o.version());
    }
    let mut checker = Checker {
        table,
        known_domains,
        opsets,
        report: &mut report,
        unchecked: HashSet::new(),
    };
    if let Some(graph) = model.graph.as_ref() {
        checker.graph(graph, None);
    } else {
        checker.problem("", "", "the model has no graph".to_owned());
    }
    let mut unchecked: Vec<String> = checker.unchecked.into_iter().collect();
    unchecked.sort();
    report.unchecked_ops = unchecked;
    report
}

struct Checker<'a> {
    table: &'a Table,
    known_domains: HashSet<&'a str>,
    opsets: HashMap<&'a str, i64>,
    report: &'a mut SchemaReport,
    unchecked: HashSet<String>,
}

/// Element types of the values a graph's nodes can read (`Some(None)`: a value of unknown or
/// non-tensor type): the graph's own, then its enclosing graphs'. Layered rather than copied
/// into each subgraph: a copy per `If`/`Loop` body was quadratic in a graph with many.
struct Types<'p> {
    local: HashMap<String, Option<i32>>,
    outer: Option<&'p Types<'p>>,
}

impl Types<'_> {
    fn get(&self, name: &str) -> Option<Option<i32>> {
        match self.local.get(name) {
            Some(t) => Some(*t),
            None => self.outer.and_then(|o| o.get(name)),
        }
    }

    fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    fn insert(&mut self, name: String, t: Option<i32>) {
        self.local.insert(name, t);
    }
}

fn declared_type(t: Option<&crate::model::proto::TypeProto>) -> Option<i32> {
    match t.and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(tensor)) => tensor.elem_type.filter(|&e| e != 0),
        _ => None,
    }
}

impl Checker<'_> {
    fn problem(&mut self, node: &str, op: &str, message: String) {
        self.report.problems.push(SchemaProblem {
            node: node.to_owned(),
            op: op.to_owned(),
            message,
        });
    }

    /// Checks `graph`, whose nodes may read the values of `outer` (enclosing graphs).
    fn graph(&mut self, graph: &GraphProto, outer: Option<&Types<'_>>) {
        let mut types = Types {
            local: HashMap::new(),
            outer,
        };
        for input in &graph.input {
            types.insert(input.name().to_owned(), declared_type(input.type_.as_ref()));
        }
        for init in &graph.initializer {
            types.insert(init.name().to_owned(), Some(init.data_type()));
        }
        for sparse in &graph.sparse_initializer {
            if let Some(values) = sparse.values.as_ref() {
                types.insert(values.name().to_owned(), Some(values.data_type()));
            }
        }
        let declared: HashMap<&str, Option<i32>> = graph
            .value_info
            .iter()
            .chain(&graph.output)
            .map(|v| (v.name(), declared_type(v.type_.as_ref())))
            .collect();
        let mut produced: HashSet<String> = HashSet::new();
        // A set, not a scan per output: models of IR < 4 list every weight as an input.
        let inputs: HashSet<&str> = graph.input.iter().map(|i| i.name()).collect();
        for (i, node) in graph.node.iter().enumerate() {
            let name = if node.name().is_empty() {
                format!("{}#{i}", node.op_type())
            } else {
                node.name().to_owned()
            };
            for input in node.input.iter().filter(|s| !s.is_empty()) {
                if !types.contains_key(input) {
                    self.problem(
                        &name,
                        node.op_type(),
                        format!("input `{input}` is not produced by any earlier node, input or initializer"),
                    );
                }
            }
            let outputs = self.node(node, &name, &types);
            for attr in &node.attribute {
                let subgraphs = attr.g.as_ref().into_iter().chain(&attr.graphs);
                for sub in subgraphs {
                    self.graph(sub, Some(&types));
                }
            }
            for (slot, output) in node.output.iter().enumerate() {
                if output.is_empty() {
                    continue;
                }
                if !produced.insert(output.clone()) || inputs.contains(output.as_str()) {
                    self.problem(
                        &name,
                        node.op_type(),
                        format!("output `{output}` is produced more than once"),
                    );
                }
                let inferred = outputs.get(slot).copied().flatten();
                let t = inferred.or_else(|| declared.get(output.as_str()).copied().flatten());
                types.insert(output.clone(), t);
            }
        }
        for output in &graph.output {
            if !types.contains_key(output.name()) {
                self.problem(
                    "",
                    "",
                    format!("graph output `{}` is not produced", output.name()),
                );
            }
        }
    }

    /// Checks one node against its schema; returns the inferred element type of each output.
    fn node(&mut self, node: &NodeProto, name: &str, types: &Types<'_>) -> Vec<Option<i32>> {
        let op = node.op_type();
        let domain = canonical_domain(node.domain());
        if !self.known_domains.contains(domain) {
            self.unchecked.insert(format!("{domain}|{op}"));
            return Vec::new();
        }
        let Some(&opset) = self.opsets.get(domain) else {
            self.problem(
                name,
                op,
                format!(
                    "the model does not import the `{}` domain",
                    if domain.is_empty() { "ai.onnx" } else { domain }
                ),
            );
            return Vec::new();
        };
        let table = self.table;
        let Some(versions) = table.ops.get(&format!("{domain}|{op}")) else {
            self.problem(
                name,
                op,
                format!(
                    "no operator `{op}` in domain `{}`",
                    if domain.is_empty() { "ai.onnx" } else { domain }
                ),
            );
            return Vec::new();
        };
        let Some(v) = versions.iter().rev().find(|v| v.0 <= opset) else {
            self.problem(
                name,
                op,
                format!(
                    "`{op}` exists from opset {} but the model imports opset {opset}",
                    versions.first().map_or(0, |v| v.0)
                ),
            );
            return Vec::new();
        };
        let Version(
            since,
            deprecated,
            min_in,
            max_in,
            min_out,
            max_out,
            inputs,
            outputs,
            constraints,
            attributes,
        ) = v;
        if *deprecated != 0 {
            self.problem(
                name,
                op,
                format!("`{op}` is deprecated in opset {opset} (since version {since})"),
            );
        }
        let given_inputs = node.input.len();
        if given_inputs < *min_in || given_inputs > *max_in {
            self.problem(
                name,
                op,
                format!(
                    "{given_inputs} inputs; `{op}`-{since} takes {min_in}{}",
                    if max_in == min_in {
                        String::new()
                    } else if *max_in >= i32::MAX as usize {
                        " or more".to_owned()
                    } else {
                        format!(" to {max_in}")
                    }
                ),
            );
        }
        let given_outputs = node.output.len();
        if given_outputs < *min_out || given_outputs > *max_out {
            self.problem(
                name,
                op,
                format!("{given_outputs} outputs; `{op}`-{since} gives {min_out} to {max_out}"),
            );
        }
        for (attr, required) in attributes {
            if *required != 0 && !node.attribute.iter().any(|a| a.name() == attr) {
                self.problem(name, op, format!("required attribute `{attr}` is missing"));
            }
        }
        for a in &node.attribute {
            if !attributes.contains_key(a.name()) {
                self.problem(
                    name,
                    op,
                    format!(
                        "attribute `{}` is not known to `{op}`-{since} (opset {opset})",
                        a.name()
                    ),
                );
            }
            if a.type_() == attribute_proto::AttributeType::UNDEFINED
                && a.ref_attr_name().is_empty()
            {
                self.problem(name, op, format!("attribute `{}` has no type", a.name()));
            }
        }
        // Element types: bind each type parameter from the inputs whose type is known.
        let mut bound: HashMap<&str, i32> = HashMap::new();
        for (slot, input) in node.input.iter().enumerate() {
            if input.is_empty() {
                continue;
            }
            let Some(formal) = inputs
                .get(slot)
                .or_else(|| inputs.last().filter(|f| f.1 == 2))
            else {
                continue;
            };
            let Some(Some(t)) = types.get(input) else {
                continue;
            };
            let allowed: &[i32] = match &formal.2 {
                FormalType::Fixed(list) => list,
                FormalType::Param(p) => constraints.get(p).map_or(&[], Vec::as_slice),
            };
            if !allowed.is_empty() && !allowed.contains(&t) && !allowed.contains(&-1) {
                self.problem(
                    name,
                    op,
                    format!(
                        "input `{input}` ({}) has element type {}, which `{op}`-{since} does not accept",
                        formal.0,
                        crate::model::dtype::DType(t)
                    ),
                );
            }
            if let FormalType::Param(p) = &formal.2 {
                match bound.get(p.as_str()) {
                    Some(&other) if other != t => self.problem(
                        name,
                        op,
                        format!(
                            "input `{input}` is {} but another input of type `{p}` is {}",
                            crate::model::dtype::DType(t),
                            crate::model::dtype::DType(other)
                        ),
                    ),
                    _ => {
                        bound.insert(p.as_str(), t);
                    }
                }
            }
        }
        let cast_to = node
            .attribute
            .iter()
            .find(|a| a.name() == "to" && op == "Cast")
            .map(|a| a.i() as i32);
        (0..node.output.len())
            .map(|slot| {
                if cast_to.is_some() {
                    return cast_to;
                }
                let formal = outputs
                    .get(slot)
                    .or_else(|| outputs.last().filter(|f| f.1 == 2))?;
                match &formal.2 {
                    FormalType::Fixed(list) if list.len() == 1 && list[0] >= 0 => Some(list[0]),
                    FormalType::Param(p) => bound.get(p.as_str()).copied(),
                    FormalType::Fixed(_) => None,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::model::graph_edit::{float_tensor, int_attr, int8_tensor, node};
    use crate::model::proto::{OperatorSetIdProto, ValueInfoProto};

    fn model(
        opset: i64,
        nodes: Vec<NodeProto>,
        inits: Vec<crate::model::proto::TensorProto>,
    ) -> ModelProto {
        let mut m = ModelProto::new();
        m.set_ir_version(7);
        let mut o = OperatorSetIdProto::new();
        o.set_version(opset);
        m.opset_import.push(o);
        let mut g = GraphProto::new();
        g.node = nodes;
        g.initializer = inits;
        let mut input = crate::model::graph_edit::value_info("x", &[1, 4]);
        input.set_name("x".to_owned());
        g.input.push(input);
        let mut out = ValueInfoProto::new();
        out.set_name("y".to_owned());
        g.output.push(out);
        m.graph = Some(g).into();
        m
    }

    fn dq_gemm(opset: i64, axis: bool) -> ModelProto {
        let attrs = if axis {
            vec![int_attr("axis", 0)]
        } else {
            vec![]
        };
        model(
            opset,
            vec![
                node(
                    "DequantizeLinear",
                    "dq",
                    &["w_q", "w_s", "w_z"],
                    "w",
                    &attrs,
                ),
                node(
                    "Gemm",
                    "gemm",
                    &["x", "w", "b"],
                    "y",
                    &[int_attr("transB", 1)],
                ),
            ],
            vec![
                int8_tensor("w_q", &[3, 4], &[1; 12]),
                float_tensor("w_s", &[3], &[0.1; 3]),
                int8_tensor("w_z", &[3], &[0; 3]),
                float_tensor("b", &[3], &[0.0; 3]),
            ],
        )
    }

    #[test]
    fn ops_must_exist_at_the_imported_opset_and_know_their_attributes() {
        let ok = check_model(&dq_gemm(13, true));
        assert!(ok.passed(), "{:?}", ok.problems);
        assert!(ok.schemas.contains("onnx 1.23.2"));
        // DequantizeLinear exists from opset 10; its axis from opset 13.
        let old = check_model(&dq_gemm(9, false));
        assert_eq!(old.problems.len(), 1, "{:?}", old.problems);
        assert!(
            old.problems[0].message.contains("exists from opset 10"),
            "{:?}",
            old.problems
        );
        let axis = check_model(&dq_gemm(11, true));
        assert!(
            axis.problems
                .iter()
                .any(|p| p.message.contains("attribute `axis` is not known")),
            "{:?}",
            axis.problems
        );
    }

    #[test]
    fn counts_types_and_dangling_inputs_are_problems() {
        // A float zero point where DequantizeLinear's T must match the int8 codes.
        let mut m = dq_gemm(13, true);
        let g = m.graph.as_mut().unwrap();
        g.initializer[2] = float_tensor("w_z", &[3], &[0.0; 3]);
        g.node.push(node("Relu", "relu", &["nowhere"], "r", &[]));
        g.node.push(node("Gemm", "bad", &["x"], "z", &[]));
        let report = check_model(&m);
        let text: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        assert!(
            text.iter()
                .any(|t| t.contains("`w_z`") && t.contains("float32")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.contains("`nowhere` is not produced")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("1 inputs; `Gemm`-13 takes 2 to 3")),
            "{text:?}"
        );
        assert!(
            !report
                .new_since(&check_model(&dq_gemm(13, true)))
                .is_empty()
        );
        assert!(report.new_since(&report).is_empty());
    }

    #[test]
    fn unknown_domains_are_listed_not_failed() {
        let mut m = dq_gemm(13, true);
        let g = m.graph.as_mut().unwrap();
        let mut custom = node("FusedThing", "f", &["y"], "z", &[]);
        custom.set_domain("com.microsoft".to_owned());
        g.node.push(custom);
        let report = check_model(&m);
        assert!(report.passed(), "{:?}", report.problems);
        assert_eq!(report.unchecked_ops, vec!["com.microsoft|FusedThing"]);
    }
}
