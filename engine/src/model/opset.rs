//! Moving a model to a newer default-domain opset when its meaning does not change: the ops
//! whose schemas changed between the two versions only by gaining types, negative axes or
//! optional inputs are kept as they are; a few that moved attributes to inputs (Squeeze,
//! Unsqueeze, Split, ReduceSum, Clip, Pad, Slice, TopK) or dropped inference-irrelevant
//! attributes (Dropout, BatchNormalization) are rewritten; the rest (Upsample, Resize 10→11,
//! Softmax over a non-last axis at 13, …) block the move and are named.
//!
//! The QDQ export needs opset 13 for per-channel `DequantizeLinear` and opset 10 for
//! `QuantizeLinear` at all; onnxruntime's own quantizer writes `axis` into an opset-11 model
//! and produces a file it then refuses to load.

use std::collections::BTreeSet;

use crate::model::dtype::DType;
use crate::model::graph_edit::{constant_node, float_tensor, tensor};
use crate::model::proto::{AttributeProto, GraphProto, ModelProto, NodeProto};

/// What [`upgrade`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct Upgrade {
    pub from: i64,
    pub to: i64,
    /// Nodes rewritten for the new version, as `op name`.
    pub rewritten: Vec<String>,
}

/// The default-domain opset `model` imports (0 when none).
pub fn default_opset(model: &ModelProto) -> i64 {
    model
        .opset_import
        .iter()
        .find(|o| o.domain().is_empty() || o.domain() == "ai.onnx")
        .map_or(0, |o| o.version())
}

/// `model` moved to default-domain opset `to`, or the reasons it cannot be (one per op that
/// blocks). `rank_of` gives a tensor's rank where shape inference knows it (Softmax needs it).
pub fn upgrade(
    model: &ModelProto,
    to: i64,
    rank_of: &dyn Fn(&str) -> Option<usize>,
) -> std::result::Result<(ModelProto, Upgrade), Vec<String>> {
    let from = default_opset(model);
    let mut out = model.clone();
    let mut blockers = BTreeSet::new();
    let mut rewritten = Vec::new();
    if from >= to {
        return Ok((
            out,
            Upgrade {
                from,
                to: from,
                rewritten,
            },
        ));
    }
    if let Some(graph) = out.graph.as_mut() {
        graph_upgrade(graph, from, to, rank_of, &mut blockers, &mut rewritten);
    }
    if !blockers.is_empty() {
        return Err(blockers.into_iter().collect());
    }
    for o in out.opset_import.iter_mut() {
        if o.domain().is_empty() || o.domain() == "ai.onnx" {
            o.set_version(to);
        }
    }
    // Opset 13 needs IR 7, opset 10 IR 5 (IR versions only relax what older ones required).
    let ir = match to {
        ..=9 => 4,
        10 => 5,
        11 => 6,
        _ => 7,
    };
    if out.ir_version() < ir {
        out.set_ir_version(ir);
    }
    Ok((
        out,
        Upgrade {
            from,
            to,
            rewritten,
        },
    ))
}

/// Version bumps (`since_version`) of ops that change what a model written for an older
/// version means, unless the rewrite below handles them.
fn breaking(op: &str, version: i64) -> bool {
    matches!(
        (op, version),
        (
            "Add"
                | "Sub"
                | "Mul"
                | "Div"
                | "And"
                | "Or"
                | "Xor"
                | "Equal"
                | "Greater"
                | "Less"
                | "Pow"
                | "PRelu"
                | "Gemm",
            7
        ) | ("BatchNormalization", 7 | 9)
            | ("Dropout", 7 | 10 | 12)
            | ("Upsample", _)
            | ("Resize", 11)
            | ("Slice", 10)
            | ("Pad", 11)
            | ("Clip", 11)
            | ("Squeeze" | "Unsqueeze" | "Split" | "ReduceSum", 13)
            | ("Softmax" | "LogSoftmax" | "Hardmax", 13)
            | ("TopK", 10)
            | ("Scatter", 11)
            | ("Scan", 9)
    )
}

/// The versions of `op` introduced after `from`, up to `to` (from the schema table).
fn bumps(op: &str, from: i64, to: i64) -> Vec<i64> {
    crate::model::schema::since_versions("", op)
        .into_iter()
        .filter(|&v| v > from && v <= to)
        .collect()
}

fn graph_upgrade(
    graph: &mut GraphProto,
    from: i64,
    to: i64,
    rank_of: &dyn Fn(&str) -> Option<usize>,
    blockers: &mut BTreeSet<String>,
    rewritten: &mut Vec<String>,
) {
    let nodes = std::mem::take(&mut graph.node);
    let mut out = Vec::with_capacity(nodes.len());
    for mut node in nodes {
        for attr in node.attribute.iter_mut() {
            if let Some(g) = attr.g.as_mut() {
                graph_upgrade(g, from, to, rank_of, blockers, rewritten);
            }
            for g in attr.graphs.iter_mut() {
                graph_upgrade(g, from, to, rank_of, blockers, rewritten);
            }
        }
        let default_domain = node.domain().is_empty() || node.domain() == "ai.onnx";
        if !default_domain {
            out.push(node);
            continue;
        }
        let op = node.op_type().to_owned();
        let mut changed = false;
        for version in bumps(&op, from, to) {
            if !breaking(&op, version) {
                continue;
            }
            match rewrite(&mut node, &mut out, version, rank_of) {
                Ok(()) => changed = true,
                Err(why) => {
                    blockers.insert(format!("{op} (`{}`): {why}", node.name()));
                }
            }
        }
        if changed {
            rewritten.push(format!("{op} {}", node.name()));
        }
        out.push(node);
    }
    graph.node = out;
}

fn take_attr(node: &mut NodeProto, name: &str) -> Option<AttributeProto> {
    let pos = node.attribute.iter().position(|a| a.name() == name)?;
    Some(node.attribute.remove(pos))
}

/// Adds a Constant node holding `values` (int64) before the node and returns its output.
fn int64_input(
    node: &NodeProto,
    what: &str,
    values: &[i64],
    before: &mut Vec<NodeProto>,
) -> String {
    let name = format!("{}_{what}_opset_upgrade", output_stem(node));
    let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    before.push(constant_node(
        &format!("{name}_const"),
        &name,
        tensor(&name, DType::INT64, &[values.len() as i64], raw),
    ));
    name
}

fn float_scalar_input(
    node: &NodeProto,
    what: &str,
    value: f32,
    before: &mut Vec<NodeProto>,
) -> String {
    let name = format!("{}_{what}_opset_upgrade", output_stem(node));
    before.push(constant_node(
        &format!("{name}_const"),
        &name,
        float_tensor(&name, &[], &[value]),
    ));
    name
}

fn output_stem(node: &NodeProto) -> String {
    node.output
        .first()
        .cloned()
        .unwrap_or_else(|| node.name().to_owned())
}

/// Puts `value` at input `slot`, padding skipped optional inputs with "".
fn set_input(node: &mut NodeProto, slot: usize, value: String) {
    while node.input.len() < slot {
        node.input.push(String::new());
    }
    if node.input.len() == slot {
        node.input.push(value);
    } else {
        node.input[slot] = value;
    }
}

/// Rewrites `node` for the breaking change of `version` (constants it needs go to `before`).
fn rewrite(
    node: &mut NodeProto,
    before: &mut Vec<NodeProto>,
    version: i64,
    rank_of: &dyn Fn(&str) -> Option<usize>,
) -> std::result::Result<(), String> {
    let op = node.op_type().to_owned();
    match (op.as_str(), version) {
        (
            "Gemm" | "Add" | "Sub" | "Mul" | "Div" | "And" | "Or" | "Xor" | "Equal" | "Greater"
            | "Less" | "Pow" | "PRelu",
            7,
        ) => {
            // Legacy broadcasting: right-aligned suffix broadcast is what numpy rules do too;
            // an explicit `axis` is not.
            if node.attribute.iter().any(|a| a.name() == "axis") {
                return Err("legacy broadcast with an axis".to_owned());
            }
            take_attr(node, "broadcast");
            Ok(())
        }
        ("BatchNormalization", 7) => {
            take_attr(node, "is_test");
            take_attr(node, "consumed_inputs");
            Ok(())
        }
        ("BatchNormalization", 9) => match take_attr(node, "spatial") {
            Some(a) if a.i() != 1 => Err("spatial=0 (per-activation statistics)".to_owned()),
            _ => Ok(()),
        },
        ("Dropout", 7 | 10 | 12) => {
            if node.output.len() > 1 && node.output.get(1).is_some_and(|o| !o.is_empty()) {
                return Err("its mask output is used".to_owned());
            }
            node.output.truncate(1);
            take_attr(node, "is_test");
            take_attr(node, "ratio");
            Ok(())
        }
        ("Squeeze" | "Unsqueeze" | "ReduceSum", 13) => {
            if let Some(axes) = take_attr(node, "axes") {
                let name = int64_input(node, "axes", &axes.ints, before);
                set_input(node, 1, name);
            } else if op == "Unsqueeze" {
                return Err("no axes".to_owned());
            }
            Ok(())
        }
        ("Split", 13) => {
            if let Some(split) = take_attr(node, "split") {
                let name = int64_input(node, "split", &split.ints, before);
                set_input(node, 1, name);
            }
            Ok(())
        }
        ("Clip", 11) => {
            let min = take_attr(node, "min").map(|a| a.f());
            let max = take_attr(node, "max").map(|a| a.f());
            if let Some(min) = min {
                let name = float_scalar_input(node, "min", min, before);
                set_input(node, 1, name);
            }
            if let Some(max) = max {
                let name = float_scalar_input(node, "max", max, before);
                set_input(node, 2, name);
            }
            Ok(())
        }
        ("Pad", 11) => {
            let pads = take_attr(node, "pads").ok_or("no pads")?;
            let value = take_attr(node, "value").map(|a| a.f());
            let name = int64_input(node, "pads", &pads.ints, before);
            set_input(node, 1, name);
            if let Some(value) = value.filter(|v| *v != 0.0) {
                let name = float_scalar_input(node, "value", value, before);
                set_input(node, 2, name);
            }
            Ok(())
        }
        ("Slice", 10) => {
            let starts = take_attr(node, "starts").ok_or("no starts")?;
            let ends = take_attr(node, "ends").ok_or("no ends")?;
            let axes = take_attr(node, "axes");
            let s = int64_input(node, "starts", &starts.ints, before);
            let e = int64_input(node, "ends", &ends.ints, before);
            set_input(node, 1, s);
            set_input(node, 2, e);
            if let Some(axes) = axes {
                let a = int64_input(node, "axes", &axes.ints, before);
                set_input(node, 3, a);
            }
            Ok(())
        }
        ("TopK", 10) => {
            let k = take_attr(node, "k").ok_or("no k")?;
            let name = int64_input(node, "k", &[k.i()], before);
            set_input(node, 1, name);
            Ok(())
        }
        ("Softmax" | "LogSoftmax" | "Hardmax", 13) => {
            // Before 13 the input is flattened to 2-D at `axis` (default 1); from 13 the op
            // runs along `axis` (default -1). The same when `axis` is the last dimension.
            let input = node.input.first().cloned().unwrap_or_default();
            let rank = rank_of(&input).ok_or("the rank of its input is unknown")?;
            let axis = node
                .attribute
                .iter()
                .find(|a| a.name() == "axis")
                .map_or(1, |a| a.i());
            let axis = if axis < 0 { axis + rank as i64 } else { axis };
            if axis != rank as i64 - 1 {
                return Err(format!(
                    "axis {axis} of a rank-{rank} input is not the last (its meaning changes at opset 13)"
                ));
            }
            take_attr(node, "axis");
            node.attribute
                .push(crate::model::graph_edit::int_attr("axis", -1));
            Ok(())
        }
        _ => Err(format!("its meaning changes at opset {version}")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::model::graph_edit::{int_attr, node};
    use crate::model::proto::OperatorSetIdProto;

    fn model(opset: i64, nodes: Vec<NodeProto>) -> ModelProto {
        let mut m = ModelProto::new();
        m.set_ir_version(4);
        let mut o = OperatorSetIdProto::new();
        o.set_version(opset);
        m.opset_import.push(o);
        let mut g = GraphProto::new();
        g.node = nodes;
        m.graph = Some(g).into();
        m
    }

    fn ints(name: &str, values: &[i64]) -> AttributeProto {
        let mut a = AttributeProto::new();
        a.set_name(name.to_owned());
        a.set_type(crate::model::proto::attribute_proto::AttributeType::INTS);
        a.ints = values.to_vec();
        a
    }

    #[test]
    fn compatible_ops_move_and_attributes_become_inputs() {
        let m = model(
            11,
            vec![
                node("Conv", "conv", &["x", "w"], "c", &[]),
                node("Relu", "relu", &["c"], "r", &[]),
                node("Unsqueeze", "unsq", &["r"], "u", &[ints("axes", &[0])]),
                node("Softmax", "soft", &["u"], "y", &[int_attr("axis", 4)]),
            ],
        );
        let (up, report) = upgrade(&m, 13, &|t| (t == "u").then_some(5)).unwrap();
        assert_eq!((report.from, report.to), (11, 13));
        assert_eq!(default_opset(&up), 13);
        assert_eq!(up.ir_version(), 7);
        let g = up.graph.as_ref().unwrap();
        let unsq = g.node.iter().find(|n| n.name() == "unsq").unwrap();
        assert!(unsq.attribute.is_empty());
        assert_eq!(unsq.input.len(), 2);
        assert!(
            g.node
                .iter()
                .any(|n| n.op_type() == "Constant" && n.output[0] == unsq.input[1])
        );
        assert!(
            crate::model::schema::check_model(&up)
                .problems
                .iter()
                .all(|p| !p.message.contains("attribute"))
        );
        assert_eq!(report.rewritten.len(), 2, "{:?}", report.rewritten);
    }

    #[test]
    fn meaning_changes_block_and_are_named() {
        let m = model(
            9,
            vec![
                node("Upsample", "up", &["x", "s"], "u", &[]),
                node("Softmax", "soft", &["u"], "y", &[int_attr("axis", 1)]),
            ],
        );
        let blockers = upgrade(&m, 13, &|_| Some(4)).unwrap_err();
        assert_eq!(blockers.len(), 2, "{blockers:?}");
        assert!(
            blockers[0].contains("Softmax") && blockers[0].contains("axis 1"),
            "{blockers:?}"
        );
        assert!(blockers[1].contains("Upsample"), "{blockers:?}");
    }
}
