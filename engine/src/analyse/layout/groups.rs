//! Groups of the layout: the node-name hierarchy (`/model.2/cv1/conv/Conv` is in `/model.2`,
//! `/model.2/cv1`, ...) and the bodies of `If`/`Loop`/`Scan` nodes. A collapsed group is drawn
//! as one box; the layout then runs on the visible boxes, so the layering and crossing code is
//! the same for every view.
//!
//! Everything here is linear in the nodes times the depth of their names.

use std::collections::{HashMap, HashSet};

use crate::model::graph::GraphView;

use super::BoxKind;

/// What a group gathers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupKind {
    /// Nodes whose names start with the group's path.
    Name,
    /// The nodes of a subgraph held by node `owner` (an index into [`GraphView::nodes`]) in
    /// its attribute `attribute` (`then_branch`, `body`, `body[1]`).
    Body { owner: usize, attribute: String },
}

/// One group of nodes.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// The shared name prefix (`/model.2`) or the subgraph's path (`If_0/then_branch`).
    pub path: String,
    pub kind: GroupKind,
    /// The group this one is inside (for a body: the innermost group of its owner).
    pub parent: Option<usize>,
    /// Every node inside, nested groups' too, in index order.
    pub members: Vec<usize>,
}

/// Every group of a graph, built once per model; group ids are indices into `groups` and
/// stay the same for the same graph.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupTree {
    pub groups: Vec<Group>,
    /// The innermost group of each node (`None`: a main-graph node outside every group).
    pub node_group: Vec<Option<usize>>,
    /// The subgraph body of each node, innermost first: `None` for the main graph.
    node_scope: Vec<Option<usize>>,
    /// Body groups of each node holding subgraphs, in attribute order.
    bodies: HashMap<usize, Vec<usize>>,
}

/// Which groups a layout opens.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grouping {
    /// Name groups are formed (else every name group is open).
    pub by_name: bool,
    /// Ids of the open groups (name groups and subgraph bodies); every other one is collapsed.
    pub expanded: HashSet<usize>,
}

/// Separators of the name hierarchy.
fn is_separator(c: char) -> bool {
    c == '/' || c == '.'
}

/// Byte ends of the name's prefixes that are groups: every segment but the last (empty
/// segments, as in a leading `/`, are skipped).
fn prefix_ends(name: &str) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut in_segment = false;
    for (i, c) in name.char_indices() {
        if is_separator(c) {
            if in_segment {
                ends.push(i);
            }
            in_segment = false;
        } else {
            in_segment = true;
        }
    }
    if !in_segment {
        // The name ends with a separator: its last segment is the one before.
        ends.pop();
    }
    ends
}

impl GroupTree {
    /// Finds the groups of `view`: one per subgraph body and one per name prefix worth a box.
    ///
    /// Name groups are formed per graph (main graph, each body) from the shallowest level
    /// of the name hierarchy that has more than one distinct prefix (a model whose names all
    /// start with `/model` is not one box). A prefix of a single node is not a group, nor is
    /// one holding exactly the nodes of its parent group.
    pub fn new(view: &GraphView) -> Self {
        let n = view.nodes.len();
        let mut tree = GroupTree {
            node_group: vec![None; n],
            node_scope: vec![None; n],
            ..GroupTree::default()
        };
        // Subgraph bodies. Owners are the nodes right before their first body node: register
        // the path prefix of those only.
        let mut owners: HashMap<String, usize> = HashMap::new();
        let mut body_of_path: HashMap<&str, usize> = HashMap::new();
        let mut scope_nodes: Vec<Vec<usize>> = vec![Vec::new()];
        for (i, node) in view.nodes.iter().enumerate() {
            if !node.graph.is_empty() {
                let body = match body_of_path.get(node.graph.as_str()) {
                    Some(&b) => Some(b),
                    None => {
                        let (prefix, attribute) = node
                            .graph
                            .rsplit_once('/')
                            .unwrap_or(("", node.graph.as_str()));
                        owners.get(prefix).map(|&owner| {
                            let b = tree.groups.len();
                            tree.groups.push(Group {
                                path: node.graph.clone(),
                                kind: GroupKind::Body {
                                    owner,
                                    attribute: attribute.to_owned(),
                                },
                                parent: None,
                                members: Vec::new(),
                            });
                            tree.bodies.entry(owner).or_default().push(b);
                            body_of_path.insert(node.graph.as_str(), b);
                            scope_nodes.push(Vec::new());
                            b
                        })
                    }
                };
                tree.node_scope[i] = body;
                tree.node_group[i] = body;
                scope_nodes[body.map_or(0, |b| b + 1)].push(i);
            } else {
                scope_nodes[0].push(i);
            }
            if let Some(next) = view.nodes.get(i + 1)
                && next.graph.len() > node.graph.len()
                && next.graph.starts_with(node.graph.as_str())
            {
                let prefix = if node.graph.is_empty() {
                    node.name.clone()
                } else {
                    format!("{}/{}", node.graph, node.name)
                };
                owners.insert(prefix, i);
            }
        }
        for (slot, nodes) in scope_nodes.iter().enumerate() {
            let parent = slot.checked_sub(1);
            tree.name_groups(view, nodes, parent);
        }
        // A body sits where its owner is.
        for g in 0..tree.groups.len() {
            if let GroupKind::Body { owner, .. } = tree.groups[g].kind {
                tree.groups[g].parent = tree.node_group.get(owner).copied().flatten();
            }
        }
        for node in 0..n {
            let mut g = tree.node_group[node];
            let mut steps = 0;
            while let Some(id) = g {
                tree.groups[id].members.push(node);
                g = tree.groups[id].parent;
                steps += 1;
                if steps > tree.groups.len() {
                    break;
                }
            }
        }
        tree
    }

    /// Name groups of the nodes of one graph (`parent`: its body group).
    fn name_groups(&mut self, view: &GraphView, nodes: &[usize], parent: Option<usize>) {
        struct Prefix {
            parent: Option<usize>,
            depth: usize,
            count: usize,
            node: usize,
            end: usize,
        }
        let mut prefixes: Vec<Prefix> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut leaf: Vec<Option<usize>> = Vec::with_capacity(nodes.len());
        for &n in nodes {
            let name = view.nodes[n].name.as_str();
            let mut up = None;
            for (depth, end) in prefix_ends(name).into_iter().enumerate() {
                let key = &name[..end];
                let p = match index.get(key) {
                    Some(&p) => p,
                    None => {
                        prefixes.push(Prefix {
                            parent: up,
                            depth: depth + 1,
                            count: 0,
                            node: n,
                            end,
                        });
                        index.insert(key, prefixes.len() - 1);
                        prefixes.len() - 1
                    }
                };
                up = Some(p);
            }
            if let Some(p) = up {
                prefixes[p].count += 1;
            }
            leaf.push(up);
        }
        // Parents come before their children: sum the counts upward.
        for p in (0..prefixes.len()).rev() {
            if let Some(q) = prefixes[p].parent {
                prefixes[q].count += prefixes[p].count;
            }
        }
        let mut per_depth: Vec<usize> = Vec::new();
        for p in &prefixes {
            if per_depth.len() < p.depth {
                per_depth.resize(p.depth, 0);
            }
            per_depth[p.depth - 1] += 1;
        }
        let Some(first) = per_depth.iter().position(|&c| c > 1).map(|d| d + 1) else {
            return;
        };
        // The innermost kept group at or above each prefix, with its node count.
        let mut inner: Vec<Option<(usize, usize)>> = vec![None; prefixes.len()];
        for p in 0..prefixes.len() {
            let above = prefixes[p].parent.and_then(|q| inner[q]);
            let prefix = &prefixes[p];
            let same_as_above = above.is_some_and(|(_, count)| count == prefix.count);
            if prefix.depth >= first && prefix.count >= 2 && !same_as_above {
                let g = self.groups.len();
                let name = view.nodes[prefix.node].name.as_str();
                self.groups.push(Group {
                    path: name[..prefix.end].to_owned(),
                    kind: GroupKind::Name,
                    parent: above.map(|(g, _)| g).or(parent),
                    members: Vec::new(),
                });
                inner[p] = Some((g, prefix.count));
            } else {
                inner[p] = above;
            }
        }
        for (&n, l) in nodes.iter().zip(leaf) {
            if let Some((g, _)) = l.and_then(|l| inner[l]) {
                self.node_group[n] = Some(g);
            }
        }
    }

    /// The body groups of node `node`, in attribute order.
    pub fn bodies(&self, node: usize) -> &[usize] {
        self.bodies.get(&node).map_or(&[], Vec::as_slice)
    }

    /// The groups `node` is inside, innermost first.
    pub fn ancestors(&self, node: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut g = self.node_group.get(node).copied().flatten();
        while let Some(id) = g {
            if out.len() > self.groups.len() {
                break;
            }
            out.push(id);
            g = self.groups[id].parent;
        }
        out
    }

    /// The text of a collapsed group's box: its path and node count.
    pub fn label(&self, g: usize) -> String {
        match self.groups.get(g) {
            Some(group) => format!("{} ({} nodes)", group.path, group.members.len()),
            None => "?".to_owned(),
        }
    }
}

/// Where a group is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rep {
    /// Its nodes are drawn (open, or a name group while grouping by name is off).
    Open,
    /// In the box of a collapsed group.
    Group(usize),
    /// In the box of a node: a collapsed body in its owner.
    Node(usize),
}

fn reps(tree: &GroupTree, grouping: &Grouping) -> Vec<Rep> {
    let count = tree.groups.len();
    let mut rep: Vec<Option<Rep>> = vec![None; count];
    for start in 0..count {
        // Walk up to a resolved group (or the top), then resolve downward.
        let mut chain = Vec::new();
        let mut g = Some(start);
        while let Some(id) = g {
            if rep[id].is_some() || chain.len() > count {
                break;
            }
            chain.push(id);
            g = tree.groups[id].parent;
        }
        let mut above = g.and_then(|id| rep[id]).unwrap_or(Rep::Open);
        for &id in chain.iter().rev() {
            let own = if above != Rep::Open {
                above
            } else {
                match tree.groups[id].kind {
                    GroupKind::Name if !grouping.by_name || grouping.expanded.contains(&id) => {
                        Rep::Open
                    }
                    GroupKind::Name => Rep::Group(id),
                    GroupKind::Body { .. } if grouping.expanded.contains(&id) => Rep::Open,
                    GroupKind::Body { owner, .. } => Rep::Node(owner),
                }
            };
            rep[id] = Some(own);
            above = own;
        }
    }
    rep.into_iter().map(|r| r.unwrap_or(Rep::Open)).collect()
}

/// The boxes of a view, the deduplicated edges between them and where each node is drawn.
pub(super) struct Visible {
    pub(super) kinds: Vec<BoxKind>,
    pub(super) edges: Vec<(u32, u32)>,
    pub(super) labels: Vec<String>,
    /// The box of every node of the view.
    pub(super) node_box: Vec<Option<usize>>,
}

/// Boxes (graph inputs, visible nodes and collapsed groups in node order, graph outputs),
/// edges between them (a value read inside a subgraph comes from the scope that defines
/// it; a body's first nodes hang below their owner) and labels.
pub(super) fn visible(view: &GraphView, tree: &GroupTree, grouping: &Grouping) -> Visible {
    let rep = reps(tree, grouping);
    let mut kinds: Vec<BoxKind> = (0..view.inputs.len()).map(BoxKind::Input).collect();
    let mut box_of: HashMap<BoxKind, u32> = HashMap::new();
    let mut node_box: Vec<Option<usize>> = vec![None; view.nodes.len()];
    for (n, slot) in node_box.iter_mut().enumerate() {
        let kind = match tree.node_group.get(n).copied().flatten().map(|g| rep[g]) {
            None | Some(Rep::Open) => BoxKind::Node(n),
            Some(Rep::Group(g)) => BoxKind::Group(g),
            Some(Rep::Node(owner)) => BoxKind::Node(owner),
        };
        let b = *box_of.entry(kind).or_insert_with(|| {
            kinds.push(kind);
            kinds.len() as u32 - 1
        });
        *slot = Some(b as usize);
    }
    // Producers of each body's values.
    let mut body_producer: Vec<HashMap<&str, usize>> = vec![HashMap::new(); tree.groups.len()];
    for (n, node) in view.nodes.iter().enumerate() {
        if let Some(b) = tree.node_scope.get(n).copied().flatten() {
            for output in node.outputs.iter().filter(|o| !o.is_empty()) {
                body_producer[b].insert(output.as_str(), n);
            }
        }
    }
    let input_box: HashMap<&str, u32> = view
        .inputs
        .iter()
        .enumerate()
        .map(|(i, v)| (v.name.as_str(), i as u32))
        .collect();
    let scope_of = |b: usize| match &tree.groups[b].kind {
        GroupKind::Body { owner, .. } => tree.node_scope.get(*owner).copied().flatten(),
        GroupKind::Name => None,
    };
    let source = |name: &str, mut scope: Option<usize>| -> Option<u32> {
        let mut steps = 0;
        while let Some(b) = scope {
            if let Some(&p) = body_producer[b].get(name) {
                return node_box[p].map(|b| b as u32);
            }
            scope = scope_of(b);
            steps += 1;
            if steps > tree.groups.len() {
                return None;
            }
        }
        view.producer
            .get(name)
            .and_then(|&p| node_box.get(p).copied().flatten())
            .map(|b| b as u32)
            .or_else(|| input_box.get(name).copied())
    };
    let mut edges = Vec::new();
    for (n, node) in view.nodes.iter().enumerate() {
        let Some(to) = node_box[n].map(|b| b as u32) else {
            continue;
        };
        let scope = tree.node_scope.get(n).copied().flatten();
        let mut local = false;
        for input in node.inputs.iter().filter(|i| !i.is_empty()) {
            if let Some(b) = scope
                && body_producer[b].contains_key(input.as_str())
            {
                local = true;
            }
            if let Some(from) = source(input, scope) {
                edges.push((from, to));
            }
        }
        if let Some(b) = scope
            && !local
            && let GroupKind::Body { owner, .. } = tree.groups[b].kind
            && let Some(from) = node_box.get(owner).copied().flatten()
        {
            edges.push((from as u32, to));
        }
    }
    for (i, output) in view.outputs.iter().enumerate() {
        let to = kinds.len() as u32;
        kinds.push(BoxKind::Output(i));
        if let Some(from) = source(&output.name, None) {
            edges.push((from, to));
        }
    }
    edges.retain(|(u, v)| u != v);
    edges.sort_unstable();
    edges.dedup();
    let labels = kinds
        .iter()
        .map(|&kind| match kind {
            BoxKind::Group(g) => tree.label(g),
            BoxKind::Node(n) => {
                let mut label = super::box_label(view, kind).to_owned();
                for &b in tree.bodies(n) {
                    if rep[b] == Rep::Node(n) {
                        let (attribute, count) = match &tree.groups[b].kind {
                            GroupKind::Body { attribute, .. } => {
                                (attribute.as_str(), tree.groups[b].members.len())
                            }
                            GroupKind::Name => ("", 0),
                        };
                        label.push_str(&format!("  + {attribute} ({count} nodes)"));
                    }
                }
                label
            }
            _ => super::box_label(view, kind).to_owned(),
        })
        .collect();
    Visible {
        kinds,
        edges,
        labels,
        node_box,
    }
}

#[cfg(test)]
mod tests;
