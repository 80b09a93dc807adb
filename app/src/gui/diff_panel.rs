//! What changed between the open model and another ONNX file (an export, or any model):
//! nodes added, removed and changed, and every weight with its SQNR, sparsity and bits. The
//! open model's graph is coloured by it (Colour by > Diff); a row's button shows its node.

use std::sync::Arc;

use edgefit_engine::analyse::diff::{Comparison, ModelDiff, NodeChange, NodeStatus, WeightDiff};

use super::Command;
pub use super::graph_paint::DiffMark;
use crate::format::bytes;

/// A diff of the open model (A) against a file (B), with each of A's nodes marked.
pub struct DiffView {
    pub diff: Arc<ModelDiff>,
    /// Parallel to the open model's `GraphView::nodes`.
    pub marks: Vec<DiffMark>,
}

impl DiffView {
    /// Marks A's nodes: changed or removed as the diff says, and matched nodes that read a
    /// weight that changed.
    pub fn new(diff: ModelDiff) -> Self {
        let mut marks: Vec<DiffMark> = diff
            .status_a
            .iter()
            .map(|s| match s {
                NodeStatus::Changed => DiffMark::Changed,
                NodeStatus::Removed => DiffMark::Removed,
                NodeStatus::Unchanged | NodeStatus::Added => DiffMark::Same,
            })
            .collect();
        for w in diff.weights.iter().filter(|w| w.changed) {
            if let Some(mark) = w.a.as_ref().and_then(|a| marks.get_mut(a.node?))
                && *mark == DiffMark::Same
            {
                *mark = DiffMark::WeightsChanged;
            }
        }
        Self {
            diff: Arc::new(diff),
            marks,
        }
    }
}

/// Most rows listed per section (the CLI's `--json` has them all).
const LISTED: usize = 200;

/// The diff's summary and lists.
pub fn diff_ui(ui: &mut egui::Ui, view: &DiffView, commands: &mut Vec<Command>) {
    let d = &view.diff;
    let s = &d.summary;
    let name = |path: &str| {
        std::path::Path::new(path)
            .file_name()
            .map_or_else(|| path.to_owned(), |n| n.to_string_lossy().into_owned())
    };
    ui.horizontal(|ui| {
        ui.heading("Diff");
        if ui.small_button("Close diff").clicked() {
            commands.push(Command::CloseDiff);
        }
    });
    ui.label(format!("{} -> {}", name(&d.a.path), name(&d.b.path)))
        .on_hover_text(format!("A {}\nB {}", d.a.path, d.b.path));
    ui.label(format!(
        "Nodes: {} added, {} removed, {} changed, {} unchanged",
        s.nodes_added, s.nodes_removed, s.nodes_changed, s.nodes_unchanged
    ));
    ui.label(format!(
        "Weights: {} changed, {} unchanged, {} only here, {} only in the file; {} -> {} stored; \
         file {} -> {}",
        s.weights_changed,
        s.weights_unchanged,
        s.weights_only_in_a,
        s.weights_only_in_b,
        bytes(d.a.weight_bytes),
        bytes(d.b.weight_bytes),
        bytes(d.a.file_size_bytes),
        bytes(d.b.file_size_bytes),
    ));
    if d.is_empty() {
        ui.label("The two models are the same.");
        return;
    }
    ui.small("Colour by > Diff marks this model's nodes; added nodes exist only in the file.");
    nodes_ui(
        ui,
        "Added (only in the file)",
        "added",
        &d.added,
        false,
        commands,
    );
    nodes_ui(
        ui,
        "Removed (only here)",
        "removed",
        &d.removed,
        true,
        commands,
    );
    nodes_ui(ui, "Changed", "changed", &d.changed, true, commands);
    weights_ui(ui, &d.weights, commands);
}

fn nodes_ui(
    ui: &mut egui::Ui,
    title: &str,
    id: &str,
    nodes: &[NodeChange],
    here: bool,
    commands: &mut Vec<Command>,
) {
    if nodes.is_empty() {
        return;
    }
    egui::CollapsingHeader::new(format!("{title}: {}", nodes.len()))
        .id_salt(("diff_nodes", id))
        .show(ui, |ui| {
            egui::ScrollArea::both()
                .id_salt(("diff_nodes_scroll", id))
                .max_height(180.0)
                .show(ui, |ui| {
                    egui::Grid::new(("diff_nodes_grid", id))
                        .striped(true)
                        .show(ui, |ui| {
                            for n in nodes.iter().take(LISTED) {
                                match n.a_node.filter(|_| here) {
                                    Some(a) => {
                                        if ui
                                            .small_button(&n.name)
                                            .on_hover_text("Show it in the graph")
                                            .clicked()
                                        {
                                            commands.push(Command::FocusNode(a));
                                        }
                                    }
                                    None => {
                                        ui.label(&n.name);
                                    }
                                }
                                ui.label(&n.op_type);
                                ui.label(&n.reason);
                                ui.end_row();
                            }
                        });
                    if nodes.len() > LISTED {
                        ui.label(format!(
                            "… {} more (edgefit diff --json lists them all)",
                            nodes.len() - LISTED
                        ));
                    }
                });
        });
}

fn weights_ui(ui: &mut egui::Ui, weights: &[WeightDiff], commands: &mut Vec<Command>) {
    let changed: Vec<&WeightDiff> = weights.iter().filter(|w| w.changed).collect();
    if changed.is_empty() {
        return;
    }
    egui::CollapsingHeader::new(format!("Weights changed: {}", changed.len()))
        .id_salt("diff_weights")
        .default_open(true)
        .show(ui, |ui| {
            egui::ScrollArea::both()
                .id_salt("diff_weights_scroll")
                .max_height(220.0)
                .show(ui, |ui| {
                    egui::Grid::new("diff_weights_grid")
                        .striped(true)
                        .show(ui, |ui| {
                            for h in ["weight", "SQNR", "shape", "stored", "zeros", "bits"] {
                                ui.strong(h);
                            }
                            ui.end_row();
                            for w in changed.iter().take(LISTED) {
                                weight_row_ui(ui, w, commands);
                                ui.end_row();
                            }
                        });
                });
        });
}

fn weight_row_ui(ui: &mut egui::Ui, w: &WeightDiff, commands: &mut Vec<Command>) {
    let side = w.a.as_ref().or(w.b.as_ref());
    let name = side.map_or("?", |s| s.name.as_str());
    match w.a.as_ref().and_then(|a| a.node) {
        Some(node) => {
            if ui
                .small_button(name)
                .on_hover_text("Show the node reading it")
                .clicked()
            {
                commands.push(Command::FocusNode(node));
            }
        }
        None => {
            ui.label(name);
        }
    }
    let sqnr = match (w.comparison, w.sqnr_db) {
        (Comparison::Identical, _) => "identical".to_owned(),
        (Comparison::Compared, Some(db)) if db.is_finite() => format!("{db:.1} dB"),
        (Comparison::Compared, Some(_)) => "broken (NaN/Inf)".to_owned(),
        (Comparison::ShapesDiffer, _) => "shape changed".to_owned(),
        (Comparison::OneSided, _) if w.a.is_none() => "only in the file".to_owned(),
        (Comparison::OneSided, _) => "only here".to_owned(),
        _ => "-".to_owned(),
    };
    let folded = w
        .folded_batchnorm
        .as_ref()
        .map(|bn| format!("compared with {bn} folded in"));
    let label = ui.label(sqnr);
    if let Some(text) = folded {
        label.on_hover_text(text);
    }
    let shape = |s: Option<&edgefit_engine::analyse::diff::WeightSide>| {
        s.map_or("—".to_owned(), |s| format!("{:?}", s.dims))
    };
    let (a, b) = (w.a.as_ref(), w.b.as_ref());
    ui.label(if shape(a) == shape(b) {
        shape(a)
    } else {
        format!("{} -> {}", shape(a), shape(b))
    });
    let stored = |s: Option<&edgefit_engine::analyse::diff::WeightSide>| {
        s.map_or("—".to_owned(), |s| {
            format!("{} {}", s.dtype, bytes(s.storage_bytes))
        })
    };
    ui.label(format!("{} -> {}", stored(a), stored(b)));
    let zeros = |s: Option<&edgefit_engine::analyse::diff::WeightSide>| {
        s.map_or("—".to_owned(), |s| format!("{:.1}%", s.sparsity * 100.0))
    };
    ui.label(format!("{} -> {}", zeros(a), zeros(b)));
    let bits = |s: Option<&edgefit_engine::analyse::diff::WeightSide>| match s {
        None => "—".to_owned(),
        Some(s) => match (s.bits, s.levels) {
            (Some(b), Some(l)) => format!("{b} ({l} levels)"),
            (Some(b), None) => b.to_string(),
            _ => "?".to_owned(),
        },
    };
    ui.label(format!("{} -> {}", bits(a), bits(b)));
}
