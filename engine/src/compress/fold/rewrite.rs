//! The rewriting half of the fold pass: carrying out a planned fold on the graph, then
//! removing the nodes and constants that nothing reads any more.

use std::collections::HashSet;

use super::Plan;
use crate::model::graph_edit::{Stored, collect_reads, float_tensor, is_op, unique, value_attr};
use crate::model::proto::GraphProto;

/// Carries out one fold: writes the layer's new weight and bias (in place, or under a new
/// name that the layer then reads), hands the batch norm's output to the layer, and records
/// the tensors released and the one that vanished.
pub(super) fn apply(
    graph: &mut GraphProto,
    plan: Plan,
    names: &mut HashSet<String>,
    released: &mut HashSet<String>,
    vanished: &mut HashSet<String>,
) {
    for e in plan.edits {
        match e.in_place {
            Some(Stored::Initializer(i)) => {
                let mut t = float_tensor(graph.initializer[i].name(), &e.dims, &e.values);
                t.doc_string = graph.initializer[i].doc_string.take();
                graph.initializer[i] = t;
            }
            Some(Stored::ConstantNode(i)) => {
                let name = graph.node[i].output.first().cloned().unwrap_or_default();
                graph.node[i].attribute = vec![value_attr(float_tensor(&name, &e.dims, &e.values))];
            }
            None => {
                let name = unique(names, &e.wanted);
                graph
                    .initializer
                    .push(float_tensor(&name, &e.dims, &e.values));
                let layer = &mut graph.node[plan.layer];
                while layer.input.len() <= e.slot {
                    layer.input.push(String::new());
                }
                layer.input[e.slot] = name;
                released.extend(e.old);
            }
        }
    }
    let layer = &mut graph.node[plan.layer];
    if let Some(out) = layer.output.first_mut() {
        *out = plan.y;
    }
    if plan.reset_beta
        && let Some(a) = layer.attribute.iter_mut().find(|a| a.name() == "beta")
    {
        a.set_f(1.0);
    }
    released.extend(plan.params);
    vanished.insert(plan.x);
}

/// Drops dead nodes, and the released constants (initializers, `Constant` nodes, with their
/// graph-input and value_info entries) that nothing reads any more.
pub(super) fn remove_unread(
    graph: &mut GraphProto,
    dead: &mut [bool],
    released: &HashSet<String>,
    vanished: &HashSet<String>,
) {
    let mut read: HashSet<String> = graph.output.iter().map(|o| o.name().to_owned()).collect();
    for (i, node) in graph.node.iter().enumerate() {
        if dead[i] {
            continue;
        }
        read.extend(node.input.iter().cloned());
        let mut captured = HashSet::new();
        for attr in &node.attribute {
            for g in attr.g.iter().chain(&attr.graphs) {
                collect_reads(g, &mut captured);
            }
        }
        read.extend(captured.into_iter().map(str::to_owned));
    }
    let unread = |name: &str| released.contains(name) && !read.contains(name);
    for (i, node) in graph.node.iter().enumerate() {
        if is_op(node, "Constant") && node.output.first().is_some_and(|o| unread(o)) {
            dead[i] = true;
        }
    }
    let mut removed: HashSet<String> = HashSet::new();
    graph.initializer.retain(|t| {
        let drop = unread(t.name());
        if drop {
            removed.insert(t.name().to_owned());
        }
        !drop
    });
    // Old exports also list initializers as graph inputs.
    graph.input.retain(|i| !removed.contains(i.name()));
    graph
        .value_info
        .retain(|v| !vanished.contains(v.name()) && !unread(v.name()));
    let mut i = 0;
    graph.node.retain(|_| {
        let keep = !dead.get(i).copied().unwrap_or(false);
        i += 1;
        keep
    });
}
