//! The Graph panel on real models: groups by node name (collapsed boxes, opened by a click,
//! found by search) and the bodies of If nodes, driven headless by accessible label.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use edgefit::gui::{Command, Persisted, StudioApp};
use edgefit_engine::analyse::layout::{BoxKind, GroupKind};
use edgefit_tests::{fixture, sample_model as sample};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

fn studio(model: &Path) -> Harness<'static, StudioApp> {
    let model = model.to_path_buf();
    let mut harness = Harness::builder()
        .with_size([1400.0, 900.0])
        .build_eframe(move |_cc| {
            let mut app = StudioApp::new(Persisted::default(), Some(model));
            app.auto_evaluate = false;
            app
        });
    wait_idle(&mut harness);
    harness
}

/// Steps frames until no background job runs and the graph layout is ready (both run on
/// real threads: a loaded machine must not make `Harness::run` meet a spinner).
fn wait_idle(harness: &mut Harness<'static, StudioApp>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    harness.step();
    let busy = |h: &Harness<'static, StudioApp>| {
        let app = h.state();
        app.is_busy()
            || (app.session.is_some() && app.graph.prepared().is_none())
            || app.session.as_ref().is_some_and(|s| s.estimating)
    };
    while busy(harness) {
        assert!(Instant::now() < deadline, "background job did not finish");
        std::thread::sleep(Duration::from_millis(20));
        harness.step();
    }
    harness.step();
    harness.step();
}

/// Steps frames until the graph layout (a background thread) is ready: the first one, or the
/// one of a new grouping.
fn wait_graph(harness: &mut Harness<'static, StudioApp>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    // A command sent or a click is handled over the next frames before a layout starts.
    harness.step();
    harness.step();
    harness.step();
    while harness.state().graph.prepared().is_none() || harness.state().graph.is_laying_out() {
        assert!(Instant::now() < deadline, "graph layout did not finish");
        std::thread::sleep(Duration::from_millis(10));
        harness.step();
    }
    harness.step();
    harness.step();
}

fn boxes(harness: &Harness<'static, StudioApp>) -> usize {
    harness.state().graph.prepared().unwrap().layout.boxes.len()
}

/// The group with this path, and the box showing it (if collapsed).
fn group(harness: &Harness<'static, StudioApp>, path: &str) -> (usize, Option<usize>) {
    let prepared = harness.state().graph.prepared().unwrap();
    let g = prepared
        .groups()
        .groups
        .iter()
        .position(|g| g.path == path)
        .unwrap_or_else(|| panic!("no group {path}"));
    (g, prepared.box_of(BoxKind::Group(g)))
}

fn node_index(harness: &Harness<'static, StudioApp>, name: &str) -> usize {
    let s = harness.state().session.as_ref().unwrap();
    s.open
        .loaded
        .graph
        .nodes
        .iter()
        .position(|n| n.name == name)
        .unwrap()
}

fn selected_kind(harness: &Harness<'static, StudioApp>) -> Option<BoxKind> {
    let b = harness.state().graph.selected()?;
    Some(harness.state().graph.prepared()?.layout.boxes[b].kind)
}

/// Clicks the canvas at `p` as a person would (press, release).
fn click_at(harness: &mut Harness<'static, StudioApp>, p: egui::Pos2) {
    harness.hover_at(p);
    harness.step();
    harness.drag_at(p);
    harness.step();
    harness.event(egui::Event::PointerButton {
        pos: p,
        button: egui::PointerButton::Primary,
        pressed: false,
        modifiers: egui::Modifiers::NONE,
    });
    harness.step();
}

fn search_and_enter(harness: &mut Harness<'static, StudioApp>, text: &str) {
    harness
        .get_by_role_and_label(egui::accesskit::Role::TextInput, "Search")
        .click();
    harness.step();
    // Replaces what was typed before.
    harness.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    harness
        .get_by_role_and_label(egui::accesskit::Role::TextInput, "Search")
        .type_text(text);
    harness.step();
    harness.key_press(egui::Key::Enter);
    harness.step();
}

#[test]
fn grouping_by_name_draws_fewer_boxes_and_a_click_opens_a_group() {
    let mut harness = studio(&sample("mnist-cnn"));
    wait_graph(&mut harness);
    let all = boxes(&harness);
    harness.get_by_label("Group by name").click();
    wait_graph(&mut harness);
    let grouped = boxes(&harness);
    assert!(grouped * 2 < all, "{grouped} boxes of {all}");
    let (block1, b) = group(&harness, "block1");
    let b = b.expect("block1 is one box");
    let prepared = harness.state().graph.prepared().unwrap();
    assert!(
        prepared.layout.labels[b].starts_with("block1 (")
            && prepared.layout.labels[b].ends_with(" nodes)"),
        "{}",
        prepared.layout.labels[b]
    );
    // Edges join groups once each.
    let edges: Vec<(usize, usize)> = prepared
        .layout
        .edges
        .iter()
        .map(|e| (e.from, e.to))
        .collect();
    let unique: std::collections::HashSet<_> = edges.iter().collect();
    assert_eq!(edges.len(), unique.len());
    // Click the group on the canvas (the whole graph in view): it opens, its sub-groups
    // (block1.dw, block1.pw) still collapsed.
    harness.get_by_label("Fit").click();
    harness.step();
    harness.step();
    let p = harness.state().graph.screen_pos(b).unwrap();
    click_at(&mut harness, p);
    wait_graph(&mut harness);
    assert!(harness.state().graph.expanded().contains(&block1));
    assert_eq!(group(&harness, "block1").1, None, "block1 is open");
    assert!(group(&harness, "block1.dw").1.is_some());
    assert!(group(&harness, "block1.pw").1.is_some());
    let add = node_index(&harness, "block1.add");
    assert!(
        harness
            .state()
            .graph
            .prepared()
            .unwrap()
            .box_of(BoxKind::Node(add))
            .is_some(),
        "a node right in block1 is drawn"
    );
    assert!(boxes(&harness) > grouped);
    // Selecting a node of the open group offers to collapse it again.
    harness.state_mut().send(Command::FocusNode(add));
    harness.step();
    harness.step();
    harness.get_by_label("Name: block1.add");
    harness.get_by_label("Collapse block1").click();
    wait_graph(&mut harness);
    assert!(!harness.state().graph.expanded().contains(&block1));
    assert!(group(&harness, "block1").1.is_some());
    assert_eq!(boxes(&harness), grouped);
    // Off again: every node is a box.
    harness.get_by_label("Group by name").click();
    wait_graph(&mut harness);
    assert_eq!(boxes(&harness), all);
}

#[test]
fn searching_a_node_inside_a_collapsed_group_opens_it_and_selects_it() {
    let mut harness = studio(&sample("mnist-cnn"));
    wait_graph(&mut harness);
    harness.get_by_label("Group by name").click();
    wait_graph(&mut harness);
    let target = node_index(&harness, "block2.pw.conv");
    assert!(
        harness
            .state()
            .graph
            .prepared()
            .unwrap()
            .box_of(BoxKind::Node(target))
            .is_none(),
        "hidden in block2"
    );
    search_and_enter(&mut harness, "block2.pw.conv");
    wait_graph(&mut harness);
    assert_eq!(selected_kind(&harness), Some(BoxKind::Node(target)));
    harness.get_by_label("Name: block2.pw.conv");
    let (block2, shown) = group(&harness, "block2");
    assert!(shown.is_none() && harness.state().graph.expanded().contains(&block2));
    // A compressible layer: the Layers table follows.
    let s = harness.state().session.as_ref().unwrap();
    let layer = s.compressor.layers.iter().position(|l| l.node == target);
    assert_eq!(s.selected, layer);
    // The node is in the middle of the canvas.
    let b = harness.state().graph.selected().unwrap();
    let rect = harness.state().graph.canvas_rect().unwrap();
    let centre = harness.state().graph.screen_pos(b).unwrap();
    assert!(
        (centre - rect.center()).length() < 2.0,
        "{centre:?} vs {rect:?}"
    );
    // The Layers table selecting a layer hidden in another group opens that one.
    let stem = s
        .compressor
        .layers
        .iter()
        .position(|l| l.name == "down1.dw.conv")
        .unwrap();
    let stem_node = s.compressor.layers[stem].node;
    harness.state_mut().send(Command::SelectLayer(stem));
    wait_graph(&mut harness);
    assert_eq!(selected_kind(&harness), Some(BoxKind::Node(stem_node)));
    harness.get_by_label("Name: down1.dw.conv");
}

#[test]
fn an_if_body_expands_below_its_node_and_collapses_again() {
    let mut harness = studio(&fixture("subgraph_weights.onnx"));
    wait_graph(&mut harness);
    let before = boxes(&harness);
    let the_if = node_index(&harness, "if");
    let prepared = harness.state().graph.prepared().unwrap();
    let b = prepared.box_of(BoxKind::Node(the_if)).unwrap();
    assert!(
        prepared.layout.labels[b].contains("+ then_branch (3 nodes)"),
        "{}",
        prepared.layout.labels[b]
    );
    let matmul = node_index(&harness, "then_matmul");
    assert!(prepared.box_of(BoxKind::Node(matmul)).is_none());
    harness.state_mut().send(Command::FocusNode(the_if));
    harness.step();
    harness.step();
    harness.get_by_label("Expand then_branch (3 nodes)").click();
    wait_graph(&mut harness);
    assert_eq!(boxes(&harness), before + 3);
    let prepared = harness.state().graph.prepared().unwrap();
    let body = prepared
        .box_of(BoxKind::Node(matmul))
        .expect("the body's nodes are drawn");
    let owner = prepared.box_of(BoxKind::Node(the_if)).unwrap();
    assert!(prepared.layout.boxes[body].layer > prepared.layout.boxes[owner].layer);
    assert!(!prepared.layout.labels[owner].contains("then_branch"));
    harness.get_by_label("Collapse then_branch").click();
    wait_graph(&mut harness);
    assert_eq!(boxes(&harness), before);
}

#[test]
fn silero_nodes_deep_in_nested_if_bodies_open_every_group_around_them() {
    let mut harness = studio(&fixture("real/silero_vad.onnx"));
    wait_graph(&mut harness);
    harness.get_by_label("Group by name").click();
    wait_graph(&mut harness);
    let before = boxes(&harness);
    let body_groups = |h: &Harness<'static, StudioApp>, node: usize| {
        let prepared = h.state().graph.prepared().unwrap();
        let tree = prepared.groups();
        let around = tree.ancestors(node);
        let bodies = around
            .iter()
            .filter(|&&g| matches!(tree.groups[g].kind, GroupKind::Body { .. }))
            .count();
        (around, bodies)
    };
    // Every weight is inside If_0's branches (the compressor leaves them, the graph shows
    // them): a search opens the branch and the name groups inside it.
    let conv = node_index(
        &harness,
        "If_0_then_branch__Inline_0__/encoder/2/reparam_conv/Conv",
    );
    let (around, bodies) = body_groups(&harness, conv);
    assert!(bodies == 1 && around.len() >= 2, "{around:?}");
    search_and_enter(
        &mut harness,
        "then_branch__inline_0__/encoder/2/reparam_conv/conv",
    );
    wait_graph(&mut harness);
    assert_eq!(selected_kind(&harness), Some(BoxKind::Node(conv)));
    harness.get_by_label("Name: If_0_then_branch__Inline_0__/encoder/2/reparam_conv/Conv");
    assert!(boxes(&harness) > before);
    for g in &around {
        assert!(harness.state().graph.expanded().contains(g));
    }
    // A node three If bodies deep, found by search.
    search_and_enter(
        &mut harness,
        "then_branch__inline_0__/decoder/rnn/squeeze_2",
    );
    wait_graph(&mut harness);
    let kind = selected_kind(&harness);
    let Some(BoxKind::Node(deep)) = kind else {
        panic!("{kind:?}");
    };
    let (around, bodies) = body_groups(&harness, deep);
    assert!(bodies >= 3, "{around:?}");
    for g in &around {
        assert!(harness.state().graph.expanded().contains(g));
    }
}
