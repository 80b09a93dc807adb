//! Tests of the grouped layout: groups from the name hierarchy, edges between groups,
//! expanding groups, subgraph bodies as groups, and a 10,000-node graph grouped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;

use crate::analyse::layout::{
    BoxKind, GraphLayout, GroupKind, GroupTree, Grouping, LayoutOptions, layout_graph,
    layout_graph_grouped,
};
use crate::job::{CancelToken, NoProgress};
use crate::model::graph::GraphView;
use crate::model::graph_edit::{node, value_info};
use crate::model::proto::{AttributeProto, GraphProto, ModelProto, NodeProto, attribute_proto};

fn view_of(nodes: Vec<NodeProto>, inputs: &[&str], outputs: &[&str]) -> GraphView {
    let mut graph = GraphProto::new();
    graph.node = nodes;
    for i in inputs {
        graph.input.push(value_info(i, &[1, 4]));
    }
    for o in outputs {
        graph.output.push(value_info(o, &[1, 4]));
    }
    let mut m = ModelProto::new();
    m.graph = Some(graph).into();
    GraphView::new(&m)
}

fn grouped(view: &GraphView, by_name: bool, expanded: &[usize]) -> GraphLayout {
    let tree = Arc::new(GroupTree::new(view));
    let grouping = Grouping {
        by_name,
        expanded: expanded.iter().copied().collect::<HashSet<_>>(),
    };
    layout_graph_grouped(
        view,
        tree,
        &grouping,
        &LayoutOptions::default(),
        &NoProgress,
        &CancelToken::new(),
    )
    .unwrap()
}

fn group_id(tree: &GroupTree, path: &str) -> usize {
    tree.groups
        .iter()
        .position(|g| g.path == path)
        .unwrap_or_else(|| panic!("no group {path}: {:?}", paths(tree)))
}

fn paths(tree: &GroupTree) -> Vec<&str> {
    tree.groups.iter().map(|g| g.path.as_str()).collect()
}

fn node_index(view: &GraphView, name: &str) -> usize {
    view.nodes.iter().position(|n| n.name == name).unwrap()
}

fn box_of(layout: &GraphLayout, kind: BoxKind) -> usize {
    layout.boxes.iter().position(|b| b.kind == kind).unwrap()
}

fn has_edge(layout: &GraphLayout, a: usize, b: usize) -> bool {
    layout.edges.iter().any(|e| e.from == a && e.to == b)
}

/// Edges point down; boxes do not overlap; every box is in one layer.
fn assert_valid(layout: &GraphLayout) {
    for e in &layout.edges {
        assert!(layout.boxes[e.to].layer > layout.boxes[e.from].layer);
    }
    for layer in &layout.layers {
        for w in layer.windows(2) {
            let (a, b) = (&layout.boxes[w[0]], &layout.boxes[w[1]]);
            assert!(a.x + a.w <= b.x + 1e-3);
        }
    }
    let listed: usize = layout.layers.iter().map(Vec::len).sum();
    assert_eq!(listed, layout.boxes.len());
    assert_eq!(layout.labels.len(), layout.boxes.len());
}

/// `/model` everywhere, then `/model.0` (a conv block of three nodes, two sub-blocks),
/// `/model.1` (two nodes), a lone `/model.2/Conv` and a node without any hierarchy.
fn yolo_like() -> GraphView {
    view_of(
        vec![
            node("Conv", "/model.0/conv/Conv", &["x"], "a", &[]),
            node("Sigmoid", "/model.0/act/Sigmoid", &["a"], "b", &[]),
            node("Mul", "/model.0/act/Mul", &["a", "b"], "c", &[]),
            node("Conv", "/model.1/conv/Conv", &["c"], "d", &[]),
            node("Relu", "/model.1/conv/Relu", &["d"], "e", &[]),
            node("Conv", "/model.2/Conv", &["e", "c"], "f", &[]),
            node("Add", "final_add", &["f", "c"], "y", &[]),
        ],
        &["x"],
        &["y"],
    )
}

#[test]
fn groups_form_at_the_first_level_with_more_than_one_prefix() {
    let view = yolo_like();
    let tree = GroupTree::new(&view);
    // `/model` holds every grouped node: not a group; `/model.2` has one node: not a group;
    // `/model.1/conv` holds what `/model.1` holds: not a group either.
    assert_eq!(paths(&tree), ["/model.0", "/model.0/act", "/model.1"]);
    let block = group_id(&tree, "/model.0");
    assert_eq!(tree.groups[block].members, [0, 1, 2]);
    assert_eq!(tree.groups[block].kind, GroupKind::Name);
    let act = group_id(&tree, "/model.0/act");
    assert_eq!(tree.groups[act].parent, Some(block));
    assert_eq!(tree.ancestors(2), [act, block]);
    assert_eq!(tree.ancestors(6), Vec::<usize>::new());
    assert_eq!(tree.label(block), "/model.0 (3 nodes)");
}

#[test]
fn collapsed_groups_are_one_box_with_deduplicated_edges() {
    let view = yolo_like();
    let layout = grouped(&view, true, &[]);
    assert_valid(&layout);
    let tree = layout.groups.clone();
    let (block, second) = (group_id(&tree, "/model.0"), group_id(&tree, "/model.1"));
    // x, two groups, /model.2/Conv, final_add, y.
    assert_eq!(layout.boxes.len(), 6, "{:?}", layout.labels);
    let g0 = box_of(&layout, BoxKind::Group(block));
    let g1 = box_of(&layout, BoxKind::Group(second));
    assert_eq!(layout.labels[g0], "/model.0 (3 nodes)");
    let lone = box_of(&layout, BoxKind::Node(node_index(&view, "/model.2/Conv")));
    let last = box_of(&layout, BoxKind::Node(node_index(&view, "final_add")));
    assert!(has_edge(&layout, box_of(&layout, BoxKind::Input(0)), g0));
    assert!(has_edge(&layout, g0, g1));
    assert!(has_edge(&layout, g1, lone));
    assert!(has_edge(&layout, g0, lone));
    assert!(has_edge(&layout, g0, last));
    // a -> b, a -> c, b -> c inside the group are no edges; c -> d once.
    let pairs: Vec<(usize, usize)> = layout.edges.iter().map(|e| (e.from, e.to)).collect();
    let unique: HashSet<(usize, usize)> = pairs.iter().copied().collect();
    assert_eq!(pairs.len(), unique.len(), "{pairs:?}");
    assert!(layout.edges.iter().all(|e| e.from != e.to));
    // Every node is drawn in a box: its group's for grouped ones.
    for n in 0..3 {
        assert_eq!(layout.node_box[n], Some(g0));
    }
    assert_eq!(layout.node_box[6], Some(last));
    // Grouping off: every node is a box.
    let plain = grouped(&view, false, &[]);
    assert_valid(&plain);
    assert_eq!(plain.boxes.len(), 9);
    assert_eq!(plain, grouped(&view, false, &[block]));
}

#[test]
fn an_expanded_group_shows_its_children_with_sub_groups_collapsed() {
    let view = yolo_like();
    let tree = GroupTree::new(&view);
    let (block, act) = (group_id(&tree, "/model.0"), group_id(&tree, "/model.0/act"));
    let layout = grouped(&view, true, &[block]);
    assert_valid(&layout);
    assert!(!layout.boxes.iter().any(|b| b.kind == BoxKind::Group(block)));
    let conv = box_of(&layout, BoxKind::Node(0));
    let sub = box_of(&layout, BoxKind::Group(act));
    assert_eq!(layout.labels[sub], "/model.0/act (2 nodes)");
    assert_eq!(layout.node_box[1], Some(sub));
    assert!(has_edge(&layout, conv, sub));
    // Both open: every node of the block is a box.
    let open = grouped(&view, true, &[block, act]);
    assert_valid(&open);
    for n in 0..3 {
        assert_eq!(open.boxes[open.node_box[n].unwrap()].kind, BoxKind::Node(n));
    }
    // An open child of a collapsed group stays inside it.
    let inner_only = grouped(&view, true, &[act]);
    assert_eq!(inner_only.node_box[1], inner_only.node_box[0]);
}

#[test]
fn names_without_a_hierarchy_stay_nodes() {
    let view = view_of(
        vec![
            node("Relu", "relu", &["x"], "a", &[]),
            node("Conv", "Conv_12", &["a"], "b", &[]),
            node("Add", "", &["b", "a"], "y", &[]),
        ],
        &["x"],
        &["y"],
    );
    let tree = GroupTree::new(&view);
    assert!(tree.groups.is_empty());
    let layout = grouped(&view, true, &[]);
    assert_eq!(layout.boxes.len(), 5);
    // One prefix everywhere (`/model`): no level with more than one group, nothing grouped.
    let single = view_of(
        vec![
            node("Relu", "/model/Relu", &["x"], "a", &[]),
            node("Conv", "/model/Conv", &["a"], "y", &[]),
        ],
        &["x"],
        &["y"],
    );
    assert!(GroupTree::new(&single).groups.is_empty());
    // `block1.pw.conv` style names group on dots.
    let dotted = view_of(
        vec![
            node("Conv", "block1.pw.conv", &["x"], "a", &[]),
            node("Relu", "block1.pw.relu", &["a"], "b", &[]),
            node("Conv", "block2.conv", &["b"], "c", &[]),
            node("Relu", "block2.relu", &["c"], "y", &[]),
        ],
        &["x"],
        &["y"],
    );
    let tree = GroupTree::new(&dotted);
    assert_eq!(paths(&tree), ["block1", "block2"]);
    assert_eq!(grouped(&dotted, true, &[]).boxes.len(), 4);
}

fn graph_attr(name: &str, nodes: Vec<NodeProto>) -> AttributeProto {
    let mut body = GraphProto::new();
    body.node = nodes;
    let mut a = AttributeProto::new();
    a.set_name(name.to_owned());
    a.set_type(attribute_proto::AttributeType::GRAPH);
    a.g = Some(body).into();
    a
}

/// x -> pre -> If(cond) with a then branch of three nodes (one holding a nested If) and an
/// else branch of one, -> post.
fn with_if() -> GraphView {
    let nested = node(
        "If",
        "inner_if",
        &["t1"],
        "t2",
        &[
            graph_attr("then_branch", vec![node("Neg", "deep", &["t1"], "d", &[])]),
            graph_attr("else_branch", vec![]),
        ],
    );
    let then_branch = vec![
        node("Relu", "t_relu", &["p"], "t0", &[]),
        node("Mul", "t_mul", &["t0", "x"], "t1", &[]),
        nested,
    ];
    let else_branch = vec![node("Identity", "e_id", &["p"], "e0", &[])];
    view_of(
        vec![
            node("Relu", "pre", &["x"], "p", &[]),
            node("Greater", "cond", &["x", "x"], "c", &[]),
            node(
                "If",
                "the_if",
                &["c"],
                "i",
                &[
                    graph_attr("then_branch", then_branch),
                    graph_attr("else_branch", else_branch),
                ],
            ),
            node("Sigmoid", "post", &["i"], "y", &[]),
        ],
        &["x"],
        &["y"],
    )
}

#[test]
fn subgraph_bodies_are_groups_folded_into_their_owner() {
    let view = with_if();
    let tree = GroupTree::new(&view);
    let then_ = group_id(&tree, "the_if/then_branch");
    let else_ = group_id(&tree, "the_if/else_branch");
    let deep = group_id(&tree, "the_if/then_branch/inner_if/then_branch");
    let the_if = node_index(&view, "the_if");
    let inner_if = node_index(&view, "inner_if");
    assert_eq!(
        tree.groups[then_].kind,
        GroupKind::Body {
            owner: the_if,
            attribute: "then_branch".to_owned()
        }
    );
    assert_eq!(tree.bodies(the_if), [then_, else_]);
    assert_eq!(tree.groups[then_].members.len(), 4, "nested body included");
    assert_eq!(tree.groups[deep].parent, Some(then_));
    assert_eq!(
        tree.ancestors(node_index(&view, "deep")),
        [deep, then_],
        "innermost first"
    );

    // Collapsed: the main graph only, the If marked, and the outer values its bodies read
    // (p, x) feed the If.
    let layout = grouped(&view, false, &[]);
    assert_valid(&layout);
    assert_eq!(layout.boxes.len(), 6);
    let if_box = box_of(&layout, BoxKind::Node(the_if));
    assert_eq!(
        layout.labels[if_box],
        "If  + then_branch (4 nodes)  + else_branch (1 nodes)"
    );
    let pre = box_of(&layout, BoxKind::Node(node_index(&view, "pre")));
    assert!(has_edge(&layout, pre, if_box));
    assert!(has_edge(
        &layout,
        box_of(&layout, BoxKind::Input(0)),
        if_box
    ));
    assert_eq!(layout.node_box[node_index(&view, "deep")], Some(if_box));
    assert_eq!(
        layout,
        layout_graph(
            &view,
            &LayoutOptions::default(),
            &NoProgress,
            &CancelToken::new()
        )
        .unwrap()
    );

    // The then branch open: its nodes below the If, the nested If collapsed (and marked).
    let open = grouped(&view, false, &[then_]);
    assert_valid(&open);
    assert_eq!(open.boxes.len(), 9);
    assert_eq!(
        open.labels[box_of(&open, BoxKind::Node(the_if))],
        "If  + else_branch (1 nodes)"
    );
    let relu = box_of(&open, BoxKind::Node(node_index(&view, "t_relu")));
    let mul = box_of(&open, BoxKind::Node(node_index(&view, "t_mul")));
    let inner = box_of(&open, BoxKind::Node(inner_if));
    let if_box = box_of(&open, BoxKind::Node(the_if));
    assert!(
        has_edge(&open, if_box, relu),
        "the body hangs below its owner"
    );
    assert!(has_edge(&open, relu, mul));
    assert!(has_edge(&open, mul, inner));
    assert!(has_edge(
        &open,
        box_of(&open, BoxKind::Node(node_index(&view, "pre"))),
        relu
    ));
    assert!(
        !has_edge(&open, if_box, mul),
        "mul reads a value of its own body"
    );
    assert_eq!(open.labels[inner], "If  + then_branch (1 nodes)");
    assert_eq!(open.node_box[node_index(&view, "deep")], Some(inner));
    // Nested open too.
    let both = grouped(&view, false, &[then_, deep]);
    assert_valid(&both);
    let deep_box = box_of(&both, BoxKind::Node(node_index(&view, "deep")));
    assert!(has_edge(
        &both,
        box_of(&both, BoxKind::Node(inner_if)),
        deep_box
    ));
    // A nested body open inside a collapsed one stays folded into the outer owner.
    let hidden = grouped(&view, false, &[deep]);
    assert_eq!(hidden.boxes.len(), 6);
}

#[test]
fn name_groups_hold_subgraph_owners_and_their_bodies() {
    let body = vec![
        node("Relu", "blk.inner.relu", &["a"], "r", &[]),
        node("Neg", "blk.inner.neg", &["r"], "s", &[]),
    ];
    let view = view_of(
        vec![
            node("Relu", "blk.a", &["x"], "a", &[]),
            node("Loop", "blk.loop", &["a"], "l", &[graph_attr("body", body)]),
            node("Relu", "other.a", &["l"], "b", &[]),
            node("Relu", "other.b", &["b"], "y", &[]),
        ],
        &["x"],
        &["y"],
    );
    let tree = GroupTree::new(&view);
    let blk = group_id(&tree, "blk");
    let loop_body = group_id(&tree, "blk.loop/body");
    assert_eq!(tree.groups[loop_body].parent, Some(blk));
    assert_eq!(tree.groups[blk].members, [0, 1, 2, 3]);
    // Body names have one prefix (`blk.inner`) only: no name group inside the body.
    assert_eq!(tree.ancestors(2), [loop_body, blk]);
    let layout = grouped(&view, true, &[loop_body]);
    assert_valid(&layout);
    // The body is open but its owner's group is not: all in the group's box.
    let g = box_of(&layout, BoxKind::Group(blk));
    assert_eq!(layout.node_box[3], Some(g));
    assert_eq!(layout.labels[g], "blk (4 nodes)");
}

#[test]
fn ten_thousand_nodes_group_quickly() {
    let model = crate::model::synthetic::branchy_cnn(10_000);
    let view = GraphView::new(&model);
    let start = std::time::Instant::now();
    let tree = GroupTree::new(&view);
    let built = start.elapsed();
    let top: Vec<usize> = (0..tree.groups.len())
        .filter(|&g| tree.groups[g].parent.is_none())
        .collect();
    let start = std::time::Instant::now();
    let layout = grouped(&view, true, &[]);
    let collapsed = start.elapsed();
    let start = std::time::Instant::now();
    let open = grouped(&view, true, &top[..top.len().min(3)]);
    let expanded = start.elapsed();
    println!(
        "{} nodes, {} groups ({} top): tree {:.1} ms, grouped layout {} boxes {:.1} ms, \
         three open {} boxes {:.1} ms",
        view.nodes.len(),
        tree.groups.len(),
        top.len(),
        built.as_secs_f64() * 1e3,
        layout.boxes.len(),
        collapsed.as_secs_f64() * 1e3,
        open.boxes.len(),
        expanded.as_secs_f64() * 1e3,
    );
    assert_valid(&layout);
    assert_valid(&open);
    assert!(layout.boxes.len() <= open.boxes.len());
    assert!(layout.node_box.iter().all(Option::is_some));
}
