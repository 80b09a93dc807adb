//! Tests of the layered graph layout: valid layouts (edges point down, boxes do not overlap),
//! crossing removal, determinism, degenerate graphs, cancellation and a 10,000-node graph.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::job::NoProgress;
use crate::model::graph_edit::{node, value_info};
use crate::model::proto::{GraphProto, ModelProto};

fn model(
    nodes: Vec<crate::model::proto::NodeProto>,
    inputs: &[&str],
    outputs: &[&str],
) -> GraphView {
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

fn run(view: &GraphView) -> GraphLayout {
    layout_graph(
        view,
        &LayoutOptions::default(),
        &NoProgress,
        &CancelToken::new(),
    )
    .unwrap()
}

/// x → a → b → c, with a skip x → c, a diamond a → (d, e) → f, a constant, a node that
/// consumes nothing known and one whose output nobody reads.
fn sample() -> GraphView {
    model(
        vec![
            node("Relu", "a", &["x"], "a", &[]),
            node("Sigmoid", "b", &["a"], "b", &[]),
            node("Add", "c", &["b", "x"], "c", &[]),
            node("Exp", "d", &["a"], "d", &[]),
            node("Neg", "e", &["a"], "e", &[]),
            node("Mul", "f", &["d", "e"], "f", &[]),
            node("Constant", "k", &[], "k", &[]),
            node("Add", "g", &["f", "k"], "g", &[]),
            node("Identity", "lonely", &["missing"], "unused", &[]),
            node("Add", "twice", &["c", "c"], "twice", &[]),
        ],
        &["x"],
        &["g", "twice", "x"],
    )
}

fn assert_valid(view: &GraphView, layout: &GraphLayout) {
    for e in &layout.edges {
        let (from, to) = (&layout.boxes[e.from], &layout.boxes[e.to]);
        assert!(to.layer > from.layer, "{:?} -> {:?}", from.kind, to.kind);
        assert!(e.points.len() >= 2);
        for w in e.points.windows(2) {
            assert!(w[1][1] >= w[0][1], "edge goes up: {:?}", e.points);
        }
    }
    for (i, a) in layout.boxes.iter().enumerate() {
        assert!(a.x >= -1e-3 && a.x + a.w <= layout.width + 1e-3);
        assert!(a.y >= 0.0 && a.y + a.h <= layout.height + 1e-3);
        for b in &layout.boxes[i + 1..] {
            let apart = a.x + a.w <= b.x + 1e-3
                || b.x + b.w <= a.x + 1e-3
                || a.y + a.h <= b.y
                || b.y + b.h <= a.y;
            assert!(apart, "{a:?} overlaps {b:?}");
        }
    }
    let listed: usize = layout.layers.iter().map(Vec::len).sum();
    assert_eq!(listed, layout.boxes.len());
    assert_eq!(
        layout.boxes.len(),
        view.main_nodes().count() + view.inputs.len() + view.outputs.len()
    );
}

#[test]
fn edges_point_down_and_boxes_do_not_overlap() {
    let view = sample();
    let layout = run(&view);
    assert_valid(&view, &layout);
    let find = |kind: BoxKind| layout.boxes.iter().position(|b| b.kind == kind).unwrap();
    let node = |name: &str| {
        find(BoxKind::Node(
            view.nodes.iter().position(|n| n.name == name).unwrap(),
        ))
    };
    let has_edge = |a: usize, b: usize| layout.edges.iter().any(|e| e.from == a && e.to == b);
    // Graph input feeds a and c (a long edge: x is at layer 0, c at layer 3).
    let x = find(BoxKind::Input(0));
    assert_eq!(layout.boxes[x].layer, 0);
    assert!(has_edge(x, node("a")));
    assert!(has_edge(x, node("c")));
    assert!(
        layout
            .edges
            .iter()
            .any(|e| e.from == x && e.to == node("c") && e.points.len() > 2)
    );
    // Graph outputs hang below their producers; an output that is an input too.
    assert!(has_edge(node("g"), find(BoxKind::Output(0))));
    assert!(has_edge(x, find(BoxKind::Output(2))));
    // `Add(c, c)` is one edge; the constant sits right above its consumer.
    assert_eq!(
        layout
            .edges
            .iter()
            .filter(|e| e.to == node("twice"))
            .count(),
        1
    );
    assert_eq!(
        layout.boxes[node("k")].layer + 1,
        layout.boxes[node("g")].layer
    );
    // Disconnected node: placed, no edges.
    let lonely = node("lonely");
    assert!(
        !layout
            .edges
            .iter()
            .any(|e| e.from == lonely || e.to == lonely)
    );
    assert_eq!(layout.unrouted_edges, 0);
}

#[test]
fn ordering_removes_crossings_of_the_file_order() {
    // In file order p (fed by b) comes before q (fed by a): the two edges cross.
    let view = model(
        vec![
            node("Relu", "p", &["b"], "p", &[]),
            node("Relu", "q", &["a"], "q", &[]),
            node("Add", "r", &["q", "b"], "r", &[]),
        ],
        &["a", "b"],
        &["p", "r"],
    );
    let layout = run(&view);
    assert_valid(&view, &layout);
    assert_eq!(layout.crossings, 0);
    let x = |name: &str| {
        let n = view.nodes.iter().position(|d| d.name == name).unwrap();
        let b = layout
            .boxes
            .iter()
            .find(|b| b.kind == BoxKind::Node(n))
            .unwrap();
        b.x
    };
    assert!(x("q") < x("p"), "q (from a) left of p (from b)");
    let unordered = LayoutOptions {
        sweeps: 0,
        ..LayoutOptions::default()
    };
    let plain = layout_graph(&view, &unordered, &NoProgress, &CancelToken::new()).unwrap();
    assert!(plain.crossings > 0, "the file order has crossings");
}

#[test]
fn random_graphs_lay_out_validly() {
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n.max(1) as u64) as usize
    };
    for round in 0..200 {
        let count = 1 + next(40);
        let cyclic = round % 5 == 0;
        let mut nodes = Vec::new();
        for i in 0..count {
            let mut inputs = Vec::new();
            for _ in 0..next(4) {
                let from = if cyclic { next(count) } else { next(i + 1) };
                inputs.push(match from {
                    0 => "x".to_owned(),
                    f => format!("v{}", f - 1),
                });
            }
            if next(10) == 0 {
                inputs.push("missing".to_owned());
            }
            let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
            let op = ["Relu", "Add", "Conv", "Concat"][next(4)];
            nodes.push(node(op, &format!("n{i}"), &refs, &format!("v{i}"), &[]));
        }
        let last = format!("v{}", count - 1);
        let view = model(nodes, &["x"], &[&last, "x"]);
        let layout = run(&view);
        if cyclic {
            assert_eq!(layout.boxes.len(), count + 3);
        } else {
            assert_valid(&view, &layout);
            assert_eq!(layout.unrouted_edges, 0);
        }
    }
}

#[test]
fn layout_is_deterministic() {
    let view = sample();
    assert_eq!(run(&view), run(&view));
    let big = GraphView::new(&crate::model::synthetic::branchy_cnn(60));
    assert_eq!(run(&big), run(&big));
}

#[test]
fn empty_graph_and_cycles_do_not_panic() {
    let empty = run(&GraphView::default());
    assert!(empty.boxes.is_empty() && empty.edges.is_empty());
    let cyclic = model(
        vec![
            node("Relu", "a", &["x", "b"], "a", &[]),
            node("Relu", "b", &["a"], "b", &[]),
        ],
        &["x"],
        &["b"],
    );
    let layout = run(&cyclic);
    assert_eq!(layout.boxes.len(), 4);
    assert_eq!(layout.unrouted_edges, 1);
}

#[test]
fn cancelled_layout_stops() {
    let cancel = CancelToken::new();
    cancel.cancel();
    let result = layout_graph(&sample(), &LayoutOptions::default(), &NoProgress, &cancel);
    assert!(matches!(result, Err(crate::Error::Cancelled)));
}

#[test]
fn ten_thousand_nodes_lay_out() {
    let model = crate::model::synthetic::branchy_cnn(10_000);
    let view = GraphView::new(&model);
    let nodes = view.main_nodes().count();
    assert!(nodes >= 10_000, "{nodes}");
    let start = std::time::Instant::now();
    let layout = run(&view);
    let elapsed = start.elapsed();
    println!(
        "layout of {nodes} nodes, {} edges, {} layers, {:.0} wide, {} crossings: {:.1} ms",
        layout.edges.len(),
        layout.layers.len(),
        layout.width,
        layout.crossings,
        elapsed.as_secs_f64() * 1e3
    );
    assert_eq!(layout.unrouted_edges, 0);
    let widest = layout.layers.iter().map(Vec::len).max().unwrap_or(0);
    assert!(widest >= 3, "the synthetic graph branches: {widest}");
    for e in &layout.edges {
        assert!(layout.boxes[e.to].layer > layout.boxes[e.from].layer);
    }
    for layer in &layout.layers {
        for w in layer.windows(2) {
            let (a, b) = (&layout.boxes[w[0]], &layout.boxes[w[1]]);
            assert!(a.x + a.w <= b.x + 1e-3);
        }
    }
}

#[test]
fn constant_subgraphs_hang_above_their_consumer() {
    // x -> a -> b -> c -> d, and d also reads Reshape(k1, k2) of two constants, as exporters
    // leave weight preprocessing in the graph.
    let view = model(
        vec![
            node("Relu", "a", &["x"], "a", &[]),
            node("Sigmoid", "b", &["a"], "b", &[]),
            node("Tanh", "c", &["b"], "c", &[]),
            node("Constant", "k1", &[], "k1", &[]),
            node("Constant", "k2", &[], "k2", &[]),
            node("Reshape", "r", &["k1", "k2"], "r", &[]),
            node("Mul", "d", &["c", "r"], "d", &[]),
        ],
        &["x"],
        &["d"],
    );
    let layout = run(&view);
    assert_valid(&view, &layout);
    let layer = |name: &str| {
        let i = view.nodes.iter().position(|n| n.name == name).unwrap();
        layout
            .boxes
            .iter()
            .find(|b| b.kind == BoxKind::Node(i))
            .unwrap()
            .layer
    };
    assert_eq!(layer("r") + 1, layer("d"));
    assert_eq!(layer("k1") + 1, layer("r"));
    assert_eq!(layer("k2") + 1, layer("r"));
    assert!(layer("k1") > layer("a"), "not piled up at the top");
}
