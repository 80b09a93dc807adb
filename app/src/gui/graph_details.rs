//! The Graph panel's detail area (the selected node: op, attributes, shapes, weights) and
//! its hover tooltip.

use edgefit_engine::analyse::layout::{BoxKind, GroupKind};
use edgefit_engine::compress::plan::Precision;
use edgefit_engine::model::graph::{GraphView, format_shape};

use super::graph::PreparedGraph;
use super::session::Session;
use crate::format::thousands;

/// Opening or closing a group (a name group or a subgraph body), asked from the details.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupAction {
    Expand(usize),
    Collapse(usize),
}

/// Name, op and the shapes flowing in and out, for the hover tooltip.
pub fn hover_text(
    prepared: &PreparedGraph,
    session: &Session,
    view: &GraphView,
    b: usize,
) -> String {
    let mut text = prepared.name(view, b).to_owned();
    if let Some(BoxKind::Group(g)) = prepared.layout.boxes.get(b).map(|bx| bx.kind) {
        let count = prepared
            .groups()
            .groups
            .get(g)
            .map_or(0, |g| g.members.len());
        text.push_str(&format!(" ({count} nodes): click to open"));
    }
    if let Some(BoxKind::Node(n)) = prepared.layout.boxes.get(b).map(|bx| bx.kind)
        && let Some(node) = view.nodes.get(n)
    {
        text.push_str(&format!(" ({})", node.op_type));
        for (dir, names) in [("in", &node.inputs), ("out", &node.outputs)] {
            for name in names.iter().filter(|n| !n.is_empty()) {
                text.push_str(&format!("\n{dir}: {} {}", name, value_shape(session, name)));
            }
        }
    }
    text
}

/// The shape of a value (or weight) as far as it is known.
fn value_shape(session: &Session, name: &str) -> String {
    let loaded = &session.open.loaded;
    if let Some(w) = loaded
        .weight_index
        .get(name)
        .and_then(|&i| loaded.weights.get(i))
    {
        return format!("{:?}", w.dims);
    }
    let desc = loaded
        .shapes
        .get(name)
        .or_else(|| loaded.graph.declared.get(name));
    match desc {
        Some(d) => match d.dtype {
            Some(t) => format!("{t} {}", format_shape(d.shape.as_deref())),
            None => format_shape(d.shape.as_deref()),
        },
        None => "?".to_owned(),
    }
}

/// Op, name, attributes, inputs and outputs with shapes, and the weights of the selected
/// node; buttons that open its subgraphs or close the groups it is in.
pub fn details_ui(
    ui: &mut egui::Ui,
    selected: Option<usize>,
    prepared: &PreparedGraph,
    session: &Session,
) -> Option<GroupAction> {
    let Some(b) = selected else {
        ui.label("Click a node to see its details.");
        return None;
    };
    let graph = &session.open.loaded.graph;
    let bx = prepared.layout.boxes.get(b)?;
    let node = match bx.kind {
        BoxKind::Node(n) => graph.nodes.get(n)?,
        BoxKind::Group(g) => {
            let group = prepared.groups().groups.get(g)?;
            ui.strong("Group");
            ui.label(format!("Path: {}", group.path));
            ui.label(format!("{} nodes", group.members.len()));
            return ui
                .button("Expand")
                .clicked()
                .then_some(GroupAction::Expand(g));
        }
        BoxKind::Input(_) | BoxKind::Output(_) => {
            let what = if matches!(bx.kind, BoxKind::Input(_)) {
                "Graph input"
            } else {
                "Graph output"
            };
            let name = prepared.name(graph, b);
            ui.strong(what);
            ui.label(format!("Name: {name}"));
            ui.label(format!("Shape: {}", value_shape(session, name)));
            return None;
        }
    };
    let action = groups_ui(ui, prepared, node.index);
    node_ui(ui, b, node, prepared, session);
    action
}

/// The subgraphs of a node (open or closed) and the open groups it is in, with buttons.
fn groups_ui(ui: &mut egui::Ui, prepared: &PreparedGraph, node: usize) -> Option<GroupAction> {
    let tree = prepared.groups();
    let expanded = &prepared.grouping.expanded;
    let mut action = None;
    for &g in tree.bodies(node) {
        let Some(group) = tree.groups.get(g) else {
            continue;
        };
        let GroupKind::Body { attribute, .. } = &group.kind else {
            continue;
        };
        let (text, wanted) = if expanded.contains(&g) {
            (format!("Collapse {attribute}"), GroupAction::Collapse(g))
        } else {
            let count = group.members.len();
            (
                format!("Expand {attribute} ({count} nodes)"),
                GroupAction::Expand(g),
            )
        };
        if ui.button(text).clicked() {
            action = Some(wanted);
        }
    }
    let open: Vec<usize> = tree
        .ancestors(node)
        .into_iter()
        .filter(|g| expanded.contains(g))
        .filter(|&g| prepared.grouping.by_name || tree.groups[g].kind != GroupKind::Name)
        .collect();
    let shown = !open.is_empty() || !tree.bodies(node).is_empty();
    if !open.is_empty() {
        ui.horizontal_wrapped(|ui| {
            ui.label("In");
            for g in open {
                let path = &tree.groups[g].path;
                if ui
                    .small_button(format!("Collapse {path}"))
                    .on_hover_text("Show the group as one box again")
                    .clicked()
                {
                    action = Some(GroupAction::Collapse(g));
                }
            }
        });
    }
    if shown {
        ui.separator();
    }
    action
}

/// What the details show of a node.
fn node_ui(
    ui: &mut egui::Ui,
    b: usize,
    node: &edgefit_engine::model::graph::NodeDesc,
    prepared: &PreparedGraph,
    session: &Session,
) {
    let loaded = &session.open.loaded;
    ui.label(format!("Op: {}", node.op_type));
    ui.label(format!("Name: {}", node.name));
    if !node.domain.is_empty() {
        ui.label(format!("Domain: {}", node.domain));
    }
    if !node.graph.is_empty() {
        ui.label(format!("In subgraph: {}", node.graph));
    }
    if let Some(l) = prepared.layer_of_box(b)
        && let Some(r) = session.compression.as_ref().and_then(|c| c.layers.get(l))
    {
        let r = &r.report;
        let sqnr = r
            .sqnr_db
            .map_or("lossless".to_owned(), |d| format!("{d:.1} dB"));
        let precision = match r.settings.precision {
            _ if r.settings.exclude => "excluded".to_owned(),
            Precision::Float32 => "float32".to_owned(),
            Precision::Float16 => "float16".to_owned(),
            Precision::Int { bits } => format!("int{bits}"),
        };
        ui.label(format!(
            "Plan: {precision}, prune {:.0}%, sparsity {:.1}%, SQNR {sqnr}",
            r.settings.prune_ratio * 100.0,
            r.sparsity * 100.0
        ));
    }
    if !node.attributes.is_empty() {
        ui.separator();
        ui.strong("Attributes");
        for a in &node.attributes {
            ui.label(format!("{} = {}", a.name, a.value));
        }
    }
    ui.separator();
    ui.strong("Inputs");
    let mut weights = Vec::new();
    for name in node.inputs.iter().filter(|n| !n.is_empty()) {
        match loaded
            .weight_index
            .get(name)
            .and_then(|&i| loaded.weights.get(i))
        {
            Some(w) => weights.push(w),
            None => {
                ui.label(format!("{name}: {}", value_shape(session, name)));
            }
        }
    }
    ui.strong("Outputs");
    for name in node.outputs.iter().filter(|n| !n.is_empty()) {
        ui.label(format!("{name}: {}", value_shape(session, name)));
    }
    if !weights.is_empty() {
        ui.separator();
        ui.strong("Weights");
        for w in weights {
            ui.label(format!(
                "{}: {} {:?}, {} params",
                w.name,
                w.dtype,
                w.dims,
                thousands(w.elements)
            ));
        }
    }
}
