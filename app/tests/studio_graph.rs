//! The studio's Graph panel on the sample model and a 10,000-node graph, driven by
//! accessible label and pointer as a person would, headless.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use edgefit::gui::{Command, StudioApp};
use edgefit_tests::sample_model as sample;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

mod common;

use common::studio;

/// Steps frames until the graph layout (a background thread) is ready.
fn wait_graph(harness: &mut Harness<'static, StudioApp>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while harness.state().graph.prepared().is_none() {
        assert!(Instant::now() < deadline, "graph layout did not finish");
        std::thread::sleep(Duration::from_millis(10));
        harness.step();
    }
    harness.step();
    harness.step();
}

fn layer_index(harness: &Harness<'static, StudioApp>, name: &str) -> usize {
    let s = harness.state().session.as_ref().unwrap();
    s.compressor
        .layers
        .iter()
        .position(|l| l.name == name)
        .unwrap()
}

#[test]
fn the_graph_shows_every_node_of_the_sample_model() {
    let mut harness = studio(&sample("mnist-cnn"));
    wait_graph(&mut harness);
    harness.get_by_label("Fit");
    harness.get_by_label("Colour by");
    let s = harness.state().session.as_ref().unwrap();
    let graph = &s.open.loaded.graph;
    let expected = graph.main_nodes().count() + graph.inputs.len() + graph.outputs.len();
    let prepared = harness.state().graph.prepared().unwrap();
    assert_eq!(prepared.layout.boxes.len(), expected);
    assert!(harness.state().graph.stats.nodes > 0, "nothing drawn");
    // Fit shows the whole graph: every box on the canvas.
    harness.get_by_label("Fit").click();
    harness.step();
    harness.step();
    let rect = harness.state().graph.canvas_rect().unwrap();
    for b in 0..expected {
        let p = harness.state().graph.screen_pos(b).unwrap();
        assert!(rect.contains(p), "box {b} at {p:?} outside {rect:?}");
    }
    // The layers table is still there.
    assert!(harness.query_all_by_label("head.conv").count() >= 1);
}

#[test]
fn searching_a_node_name_and_pressing_enter_selects_it() {
    let mut harness = studio(&sample("mnist-cnn"));
    wait_graph(&mut harness);
    assert!(harness.query_by_label("Name: head.conv").is_none());
    let head = layer_index(&harness, "head.conv");
    assert_ne!(
        harness.state().session.as_ref().unwrap().selected,
        Some(head)
    );
    harness
        .get_by_role_and_label(egui::accesskit::Role::TextInput, "Search")
        .click();
    harness.step();
    harness
        .get_by_role_and_label(egui::accesskit::Role::TextInput, "Search")
        .type_text("HEAD.CONV");
    harness.step();
    harness.key_press(egui::Key::Enter);
    harness.step();
    harness.step();
    harness.get_by_label("Op: Conv");
    harness.get_by_label("Name: head.conv");
    // A compressible layer: the Layers table selects it too.
    assert_eq!(
        harness.state().session.as_ref().unwrap().selected,
        Some(head)
    );
    let b = harness.state().graph.selected().unwrap();
    assert_eq!(
        harness.state().graph.prepared().unwrap().layer_of_box(b),
        Some(head)
    );
    // Enter again goes through the matches of "conv" one by one.
    let search = harness.get_by_role_and_label(egui::accesskit::Role::TextInput, "Search");
    search.click();
    harness.step();
    harness.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    harness
        .get_by_role_and_label(egui::accesskit::Role::TextInput, "Search")
        .type_text("conv");
    harness.step();
    let mut seen = Vec::new();
    for _ in 0..3 {
        harness.key_press(egui::Key::Enter);
        harness.step();
        harness.step();
        seen.push(harness.state().graph.selected().unwrap());
    }
    assert!(seen[0] < seen[1] && seen[1] < seen[2], "{seen:?}");
}

#[test]
fn clicking_a_node_selects_its_layer_and_the_table_selects_the_node() {
    let mut harness = studio(&sample("mnist-cnn"));
    wait_graph(&mut harness);
    let head = layer_index(&harness, "head.conv");
    let b = harness
        .state()
        .graph
        .prepared()
        .unwrap()
        .box_of_layer(head)
        .unwrap();
    // Click the node on the canvas (the whole graph in view).
    harness.get_by_label("Fit").click();
    harness.step();
    harness.step();
    let p = harness.state().graph.screen_pos(b).unwrap();
    harness.hover_at(p);
    harness.step();
    // Hovering shows the node's op and shapes.
    harness.run_steps(60);
    harness.get_by_label_contains("head.conv (Conv)");
    harness.get_by_label_contains("out: head.conv float32 [1, ");
    harness.drag_at(p);
    harness.step();
    harness.event(egui::Event::PointerButton {
        pos: p,
        button: egui::PointerButton::Primary,
        pressed: false,
        modifiers: egui::Modifiers::NONE,
    });
    harness.step();
    harness.step();
    assert_eq!(harness.state().graph.selected(), Some(b));
    assert_eq!(
        harness.state().session.as_ref().unwrap().selected,
        Some(head)
    );
    harness.get_by_label("Name: head.conv");
    // Selecting another layer in the table selects and centres its node in the graph.
    let stem = layer_index(&harness, "stem.conv");
    harness.state_mut().send(Command::SelectLayer(stem));
    harness.step();
    harness.step();
    let stem_box = harness.state().graph.prepared().unwrap().box_of_layer(stem);
    assert_eq!(harness.state().graph.selected(), stem_box);
    harness.get_by_label("Name: stem.conv");
    let rect = harness.state().graph.canvas_rect().unwrap();
    let centre = harness.state().graph.screen_pos(stem_box.unwrap()).unwrap();
    assert!(
        (centre - rect.center()).length() < 2.0,
        "{centre:?} vs {rect:?}"
    );
}

#[test]
fn a_ten_thousand_node_graph_draws_only_what_is_visible() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.onnx");
    let model = edgefit_engine::model::synthetic::branchy_cnn(10_000);
    edgefit_engine::write_model_atomic(&model, &path, Path::new("")).unwrap();
    let mut harness = studio(&path);
    wait_graph(&mut harness);
    let boxes = harness.state().graph.prepared().unwrap().layout.boxes.len();
    assert!(boxes > 10_000, "{boxes}");
    // Opens at a readable zoom on the top of the graph: a few nodes, with their edges.
    let stats = harness.state().graph.stats;
    assert!(!stats.overview);
    assert!(stats.nodes > 0 && stats.nodes < 200, "{stats:?}");
    assert!(stats.edges > 0, "{stats:?}");
    // Fit: every node is visited but merged into cells, without edges or text.
    harness.get_by_label("Fit").click();
    harness.step();
    harness.step();
    let stats = harness.state().graph.stats;
    assert!(stats.overview, "{stats:?}");
    assert_eq!(stats.nodes, boxes);
    assert_eq!(stats.edges, 0);
    assert!(stats.shapes < 5_000, "{stats:?}");
    assert!(harness.output().shapes.len() < 10_000);
}
