//! The Layers table: sorted by a click on a column's header (again: reversed), the rows still
//! edit their own layers, and the header stays put while the rows scroll. Headless, by
//! accessible label.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use edgefit::gui::{Command, StudioApp};
use edgefit_engine::compress::plan::Precision;
use edgefit_tests::sample_model as sample;
use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

mod common;

use common::{studio, wait_idle};

fn layer_names(harness: &Harness<'static, StudioApp>) -> Vec<String> {
    let s = harness.state().session.as_ref().unwrap();
    s.compressor.layers.iter().map(|l| l.name.clone()).collect()
}

/// The layers whose rows are shown, top to bottom. Each row's exclude checkbox is labelled by
/// its layer's name (the name itself is also drawn by the graph).
fn rows(harness: &Harness<'static, StudioApp>) -> Vec<String> {
    let mut shown: Vec<(f32, String)> = layer_names(harness)
        .into_iter()
        .filter_map(|name| {
            let top = harness
                .query_all_by_role_and_label(Role::CheckBox, &name)
                .next()?
                .rect()
                .top();
            Some((top, name))
        })
        .collect();
    shown.sort_by(|a, b| a.0.total_cmp(&b.0));
    shown.into_iter().map(|(_, name)| name).collect()
}

/// Clicks a column's header, scrolled sideways into view first as a person would (the table
/// is wider than its panel in this window).
fn click_header(harness: &mut Harness<'static, StudioApp>, title: &str) {
    harness.get_by_label(title).scroll_to_me();
    harness.run();
    harness.get_by_label(title).click();
    harness.run();
}

#[test]
fn sorting_by_sqnr_puts_the_most_damaged_layer_first_and_a_second_click_reverses() {
    let mut harness = studio(&sample("mnist-cnn"));
    let names = layer_names(&harness);
    assert_eq!(rows(&harness), names, "model order by default");
    // int3 everywhere: every layer loses a different amount.
    let mut recipe = harness.state().session.as_ref().unwrap().recipe.clone();
    recipe.defaults.precision = Precision::Int { bits: 3 };
    harness.state_mut().send(Command::SetRecipe {
        recipe,
        record: true,
    });
    wait_idle(&mut harness);
    let sqnr: Vec<f64> = {
        let s = harness.state().session.as_ref().unwrap();
        let c = s.compression.as_ref().unwrap();
        assert_eq!(c.recipe.defaults.precision, Precision::Int { bits: 3 });
        c.layers
            .iter()
            .map(|l| l.report.sqnr_db.unwrap_or(f64::INFINITY))
            .collect()
    };
    let by = |pick: fn(f64, f64) -> bool| {
        let mut best = 0;
        for (i, &db) in sqnr.iter().enumerate() {
            if pick(db, sqnr[best]) {
                best = i;
            }
        }
        names[best].clone()
    };
    let (lowest, highest) = (by(|a, b| a < b), by(|a, b| a > b));
    assert_ne!(lowest, highest, "{sqnr:?}");

    click_header(&mut harness, "SQNR (dB)");
    let sorted = rows(&harness);
    assert_eq!(sorted.len(), names.len());
    assert_eq!(sorted[0], lowest, "lowest SQNR first: {sorted:?} {sqnr:?}");
    // Every row in order of its SQNR.
    let db = |name: &String| sqnr[names.iter().position(|n| n == name).unwrap()];
    assert!(
        sorted.windows(2).all(|w| db(&w[0]) <= db(&w[1])),
        "{sorted:?}"
    );

    click_header(&mut harness, "SQNR (dB)");
    let reversed = rows(&harness);
    assert_eq!(reversed[0], highest, "highest SQNR first: {reversed:?}");
    assert!(
        reversed.windows(2).all(|w| db(&w[0]) >= db(&w[1])),
        "{reversed:?}"
    );

    // A third click: model order again.
    click_header(&mut harness, "SQNR (dB)");
    assert_eq!(rows(&harness), names);
}

#[test]
fn after_sorting_by_params_the_first_rows_prune_ratio_edits_that_layer() {
    let mut harness = studio(&sample("mnist-cnn"));
    let names = layer_names(&harness);
    let params: Vec<usize> = {
        let s = harness.state().session.as_ref().unwrap();
        (0..names.len())
            .map(|i| s.compressor.original(i).len())
            .collect()
    };
    // Largest first (the second click): the first of the largest in model order.
    let max = *params.iter().max().unwrap();
    let largest = names[params.iter().position(|&p| p == max).unwrap()].clone();
    assert_ne!(largest, names[0], "the sort must move rows: {params:?}");
    click_header(&mut harness, "Params");
    click_header(&mut harness, "Params");
    let sorted = rows(&harness);
    assert_eq!(sorted[0], largest, "{sorted:?} {params:?}");

    // Drag the first row's prune ratio.
    let rect = harness
        .get_by_role_and_label(Role::SpinButton, &sorted[0])
        .rect();
    let second_row = harness
        .get_by_role_and_label(Role::SpinButton, &sorted[1])
        .rect();
    assert!(rect.top() < second_row.top(), "the first row's DragValue");
    let start = rect.center();
    harness.hover_at(start);
    harness.step();
    harness.drag_at(start);
    harness.step();
    for dx in [10.0, 20.0, 30.0, 40.0] {
        harness.hover_at(start + egui::vec2(dx, 0.0));
        harness.step();
    }
    harness.drop_at(start + egui::vec2(40.0, 0.0));
    harness.step();
    harness.step();
    let s = harness.state().session.as_ref().unwrap();
    let overrides: Vec<(&String, f32)> = s
        .recipe
        .layers
        .iter()
        .filter_map(|(name, o)| Some((name, o.prune_ratio?)))
        .collect();
    assert_eq!(overrides.len(), 1, "{overrides:?}");
    assert_eq!(overrides[0].0, &largest, "{overrides:?}");
    assert!(overrides[0].1 > 0.0, "{overrides:?}");
    // The estimates follow: that layer is pruned, no other.
    wait_idle(&mut harness);
    let s = harness.state().session.as_ref().unwrap();
    let c = s.compression.as_ref().unwrap();
    for (name, l) in names.iter().zip(&c.layers) {
        assert_eq!(
            l.report.settings.prune_ratio > 0.0,
            *name == largest,
            "{name}"
        );
    }
    // Still sorted (prune ratios do not move a Params sort).
    assert_eq!(rows(&harness)[0], largest);
}

#[test]
fn the_header_stays_put_while_the_rows_scroll() {
    // A model with a few hundred layers: most rows of the table are below the fold.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("branchy.onnx");
    let model = edgefit_engine::model::synthetic::branchy_cnn(600);
    edgefit_engine::write_model_atomic(&model, &path, Path::new("")).unwrap();
    let mut harness = studio(&path);
    let names = layer_names(&harness);
    assert!(names.len() > 100, "{}", names.len());
    let before = rows(&harness);
    assert_eq!(before[0], names[0]);
    assert!(
        before.len() < names.len(),
        "only the visible rows are built"
    );
    let header = harness.get_by_label("SQNR (dB)").rect();
    // The wheel over a plain cell (Params) of the third row: no tooltip there.
    let over = egui::pos2(
        harness.get_by_label("Params").rect().center().x,
        harness
            .get_by_role_and_label(Role::CheckBox, &before[2])
            .rect()
            .center()
            .y,
    );
    harness.hover_at(over);
    harness.step();
    // Five turns of ten lines.
    for _ in 0..5 {
        harness.event(egui::Event::MouseWheel {
            unit: egui::MouseWheelUnit::Line,
            delta: egui::vec2(0.0, -10.0),
            phase: egui::TouchPhase::Move,
            source: egui::MouseWheelSource::Unknown,
            modifiers: egui::Modifiers::NONE,
        });
        harness.step();
    }
    harness.run();
    let after = rows(&harness);
    assert!(
        !after.contains(&names[0]),
        "scrolled down: {:?}",
        &after[..3]
    );
    assert_eq!(harness.get_by_label("SQNR (dB)").rect(), header);
    harness.get_by_label("Layer");
    harness.get_by_label("Exclude");
    // Its rows still sort, from the top.
    click_header(&mut harness, "Layer");
    let mut by_name = names.clone();
    by_name.sort();
    let sorted = rows(&harness);
    assert_eq!(sorted[0], by_name[0]);
    assert_eq!(sorted[..], by_name[..sorted.len()]);
}
