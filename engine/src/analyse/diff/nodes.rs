//! Matching the nodes of two models (by unique name, then by a Myers diff of op types) and
//! saying what differs for each pair.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use similar::{Algorithm, DiffOp, capture_diff_slices_deadline};

use super::side::Side;
use super::{MatchedBy, NodeChange, NodeMatch, NodeStatus};
use crate::model::graph::format_shape;
use crate::model::proto::AttributeProto;

/// The longest the op-sequence diff may search for the shortest edit: past it, `similar`
/// settles for a good one (two unrelated 10k-node graphs are the worst case).
const MYERS_DEADLINE: Duration = Duration::from_millis(300);

/// Which node of one model is which of the other.
pub(super) struct Matching {
    pub a_to_b: Vec<Option<usize>>,
    pub b_to_a: Vec<Option<usize>>,
    /// For each node of A, how it was matched.
    pub by: Vec<Option<MatchedBy>>,
}

impl Matching {
    fn pair(&mut self, i: usize, j: usize, by: MatchedBy) {
        self.a_to_b[i] = Some(j);
        self.b_to_a[j] = Some(i);
        self.by[i] = Some(by);
    }
}

/// Pairs nodes by unique non-empty name, then the rest by the op-type sequence diff.
pub(super) fn match_nodes(a: &Side<'_>, b: &Side<'_>) -> Matching {
    let (na, nb) = (a.graph.nodes.len(), b.graph.nodes.len());
    let mut m = Matching {
        a_to_b: vec![None; na],
        b_to_a: vec![None; nb],
        by: vec![None; na],
    };
    fn names<'a>(side: &Side<'a>) -> HashMap<&'a str, (usize, usize)> {
        let mut counts: HashMap<&'a str, (usize, usize)> = HashMap::new();
        for (i, node) in side.nodes.iter().enumerate() {
            if !node.name().is_empty() {
                let entry = counts.entry(node.name()).or_insert((0, i));
                entry.0 += 1;
            }
        }
        counts
    }
    let (names_a, names_b) = (names(a), names(b));
    for (i, node) in a.nodes.iter().enumerate() {
        if let (Some(&(1, _)), Some(&(1, j))) = (names_a.get(node.name()), names_b.get(node.name()))
        {
            m.pair(i, j, MatchedBy::Name);
        }
    }
    fn key<'s>(side: &'s Side<'_>, i: usize) -> (&'s str, &'s str) {
        let n = &side.graph.nodes[i];
        (n.op_type.as_str(), n.domain.as_str())
    }
    let left_a: Vec<usize> = (0..na).filter(|&i| m.a_to_b[i].is_none()).collect();
    let left_b: Vec<usize> = (0..nb).filter(|&j| m.b_to_a[j].is_none()).collect();
    let keys_a: Vec<(&str, &str)> = left_a.iter().map(|&i| key(a, i)).collect();
    let keys_b: Vec<(&str, &str)> = left_b.iter().map(|&j| key(b, j)).collect();
    let deadline = Instant::now() + MYERS_DEADLINE;
    for op in capture_diff_slices_deadline(Algorithm::Myers, &keys_a, &keys_b, Some(deadline)) {
        if let DiffOp::Equal {
            old_index,
            new_index,
            len,
        } = op
        {
            for k in 0..len {
                m.pair(
                    left_a[old_index + k],
                    left_b[new_index + k],
                    MatchedBy::Structure,
                );
            }
        }
    }
    m
}

/// The node lists of a diff.
pub(super) struct NodeOutcome {
    pub added: Vec<NodeChange>,
    pub removed: Vec<NodeChange>,
    pub changed: Vec<NodeChange>,
    pub matches: Vec<NodeMatch>,
    pub status_a: Vec<NodeStatus>,
    pub status_b: Vec<NodeStatus>,
}

/// Lists added, removed and changed nodes and each node's status.
pub(super) fn compare_nodes(a: &Side<'_>, b: &Side<'_>, m: &Matching) -> NodeOutcome {
    let mut out = NodeOutcome {
        added: Vec::new(),
        removed: Vec::new(),
        changed: Vec::new(),
        matches: Vec::new(),
        status_a: vec![NodeStatus::Removed; a.graph.nodes.len()],
        status_b: vec![NodeStatus::Added; b.graph.nodes.len()],
    };
    for (i, node) in a.graph.nodes.iter().enumerate() {
        let (Some(j), Some(by)) = (m.a_to_b[i], m.by[i]) else {
            out.removed.push(NodeChange {
                name: node.name.clone(),
                op_type: node.op_type.clone(),
                a_node: Some(i),
                b_node: None,
                matched_by: None,
                reason: removed_reason(a, b, m, i),
            });
            continue;
        };
        let reasons = change_reasons(a, b, m, i, j);
        let changed = !reasons.is_empty();
        let status = if changed {
            NodeStatus::Changed
        } else {
            NodeStatus::Unchanged
        };
        out.status_a[i] = status;
        out.status_b[j] = status;
        out.matches.push(NodeMatch {
            a_node: i,
            b_node: j,
            matched_by: by,
            changed,
        });
        if changed {
            out.changed.push(NodeChange {
                name: node.name.clone(),
                op_type: node.op_type.clone(),
                a_node: Some(i),
                b_node: Some(j),
                matched_by: Some(by),
                reason: reasons.join("; "),
            });
        }
    }
    for (j, node) in b.graph.nodes.iter().enumerate() {
        if m.b_to_a[j].is_none() {
            out.added.push(NodeChange {
                name: node.name.clone(),
                op_type: node.op_type.clone(),
                a_node: None,
                b_node: Some(j),
                matched_by: None,
                reason: added_reason(b, j),
            });
        }
    }
    out
}

/// Where a node input's value comes from, looking through nodes only one model has.
#[derive(Debug, PartialEq)]
enum Source {
    /// Output `slot` of node `index`.
    Node(usize, usize),
    /// A graph input (or a tensor nothing in the main graph produces) by name.
    Input(String),
    /// A stored tensor, or one computed from stored tensors only.
    Constant,
    /// An omitted optional input.
    Empty,
}

fn source(side: &Side<'_>, tensor: &str, unmatched: &dyn Fn(usize) -> bool) -> Source {
    let mut name = tensor;
    for _ in 0..64 {
        if name.is_empty() {
            return Source::Empty;
        }
        if side.stored.contains_key(name) {
            return Source::Constant;
        }
        let Some(p) = side.producer(name) else {
            return Source::Input(name.to_owned());
        };
        let node = &side.graph.nodes[p];
        match node.inputs.first() {
            // Through a node the other model does not have (an inserted Q/DQ pair, a
            // dropped Identity or folded batch norm), along its data input.
            Some(first) if unmatched(p) && !first.is_empty() => name = first,
            _ if unmatched(p) && node.inputs.is_empty() => return Source::Constant,
            _ => {
                let slot = node.outputs.iter().position(|o| o == name).unwrap_or(0);
                return Source::Node(p, slot);
            }
        }
    }
    Source::Input(name.to_owned())
}

fn describe(side: &Side<'_>, s: &Source) -> String {
    match s {
        Source::Node(p, 0) => format!("`{}`", side.graph.nodes[*p].name),
        Source::Node(p, slot) => format!("`{}` output {slot}", side.graph.nodes[*p].name),
        Source::Input(name) => format!("graph input `{name}`"),
        Source::Constant => "a constant".to_owned(),
        Source::Empty => "nothing".to_owned(),
    }
}

/// Inputs or outputs without the trailing omitted optional ones.
fn used(names: &[String]) -> usize {
    names
        .iter()
        .rposition(|n| !n.is_empty())
        .map_or(0, |p| p + 1)
}

fn change_reasons(a: &Side<'_>, b: &Side<'_>, m: &Matching, i: usize, j: usize) -> Vec<String> {
    let (na, nb) = (&a.graph.nodes[i], &b.graph.nodes[j]);
    let mut reasons = Vec::new();
    if na.op_type != nb.op_type || na.domain != nb.domain {
        let op = |n: &crate::model::graph::NodeDesc| {
            if n.domain.is_empty() {
                n.op_type.clone()
            } else {
                format!("{}.{}", n.domain, n.op_type)
            }
        };
        reasons.push(format!("op {} → {}", op(na), op(nb)));
    }
    if let (Some(pa), Some(pb)) = (a.node(i), b.node(j)) {
        attribute_reasons(&pa.attribute, &pb.attribute, na, nb, &mut reasons);
    }
    let (ia, ib) = (used(&na.inputs), used(&nb.inputs));
    if ia != ib {
        reasons.push(format!("inputs {ia} → {ib}"));
    }
    let (oa, ob) = (used(&na.outputs), used(&nb.outputs));
    if oa != ob {
        reasons.push(format!("outputs {oa} → {ob}"));
    }
    if na.graph.is_empty() && nb.graph.is_empty() {
        let unmatched_a = |p: usize| m.a_to_b[p].is_none();
        let unmatched_b = |p: usize| m.b_to_a[p].is_none();
        for k in 0..ia.min(ib) {
            let sa = source(a, &na.inputs[k], &unmatched_a);
            let sb = source(b, &nb.inputs[k], &unmatched_b);
            let same = match (&sa, &sb) {
                (Source::Node(pa, oa), Source::Node(pb, ob)) => {
                    m.a_to_b[*pa] == Some(*pb) && oa == ob
                }
                (x, y) => x == y,
            };
            if !same {
                reasons.push(format!(
                    "input {k} from {} → {}",
                    describe(a, &sa),
                    describe(b, &sb)
                ));
            }
        }
    }
    for k in 0..oa.min(ob) {
        let shape = |side: &Side<'_>, name: &str| {
            side.graph.declared.get(name).and_then(|d| d.shape.clone())
        };
        if let (Some(sa), Some(sb)) = (shape(a, &na.outputs[k]), shape(b, &nb.outputs[k]))
            && sa != sb
        {
            reasons.push(format!(
                "output {k} shape {} → {}",
                format_shape(Some(&sa)),
                format_shape(Some(&sb))
            ));
        }
    }
    reasons
}

fn attribute_reasons(
    pa: &[AttributeProto],
    pb: &[AttributeProto],
    na: &crate::model::graph::NodeDesc,
    nb: &crate::model::graph::NodeDesc,
    reasons: &mut Vec<String>,
) {
    let shown = |n: &crate::model::graph::NodeDesc, name: &str| {
        n.attributes
            .iter()
            .find(|d| d.name == name)
            .map_or_else(String::new, |d| d.value.clone())
    };
    // Subgraph bodies are compared node by node, not as attributes.
    let has_graph = |x: &AttributeProto| x.g.is_some() || !x.graphs.is_empty();
    for x in pa {
        match pb.iter().find(|y| y.name() == x.name()) {
            None => reasons.push(format!(
                "attribute {} removed (was {})",
                x.name(),
                shown(na, x.name())
            )),
            Some(y) if !has_graph(x) && x != y => {
                let (before, after) = (shown(na, x.name()), shown(nb, x.name()));
                if before == after {
                    reasons.push(format!("attribute {} changed", x.name()));
                } else {
                    reasons.push(format!("attribute {}: {before} → {after}", x.name()));
                }
            }
            Some(_) => {}
        }
    }
    for y in pb {
        if !pa.iter().any(|x| x.name() == y.name()) {
            reasons.push(format!(
                "attribute {} added ({})",
                y.name(),
                shown(nb, y.name())
            ));
        }
    }
}

fn removed_reason(a: &Side<'_>, b: &Side<'_>, m: &Matching, i: usize) -> String {
    let node = &a.graph.nodes[i];
    let first_input = node.inputs.first().map(String::as_str).unwrap_or_default();
    match node.op_type.as_str() {
        "BatchNormalization" => {
            // Folded: the layer that fed it now produces its output.
            let layer = a
                .producer(first_input)
                .and_then(|p| m.a_to_b[p])
                .filter(|&q| {
                    node.outputs
                        .first()
                        .is_some_and(|o| b.graph.nodes[q].outputs.contains(o))
                });
            match layer {
                Some(q) => format!("folded into `{}`", b.graph.nodes[q].name),
                None => "only in A".to_owned(),
            }
        }
        "Identity" | "Dropout" => format!("dropped (passed `{first_input}` through)"),
        _ => "only in A".to_owned(),
    }
}

fn added_reason(b: &Side<'_>, j: usize) -> String {
    let node = &b.graph.nodes[j];
    let first_input = node.inputs.first().map(String::as_str).unwrap_or_default();
    let first_output = node.outputs.first().map(String::as_str).unwrap_or_default();
    let from_constant = b.stored.contains_key(first_input);
    match node.op_type.as_str() {
        "QuantizeLinear" => format!("quantizes `{first_input}`"),
        "DequantizeLinear" if from_constant => format!("dequantizes weight `{first_output}`"),
        "DequantizeLinear" => format!("dequantizes `{first_input}`"),
        "Cast" if from_constant => format!("casts stored `{first_input}` to `{first_output}`"),
        "Cast" => format!("casts `{first_input}`"),
        "Constant" => format!("constant `{first_output}`"),
        _ => "only in B".to_owned(),
    }
}
