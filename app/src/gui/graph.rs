//! The Graph panel: the model's layer graph laid out top to bottom (on a background thread),
//! with pan, zoom, search, selection and overlays of the current plan.
//!
//! The panel reads the session and pushes [`Command`]s; only view state (pan, zoom, search
//! text, the highlighted node) lives in [`GraphPanel`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgefit_engine::analyse::layout::{
    BoxKind, GraphLayout, LayoutOptions, box_label, layout_graph,
};
use edgefit_engine::model::graph::GraphView;
use edgefit_engine::{CancelToken, NoProgress};
use egui::{Pos2, Sense};
use poll_promise::Promise;

use super::Command;
use super::graph_details::{self, details_ui};
pub use super::graph_paint::DrawStats;
use super::graph_paint::{
    EdgeIndex, Family, Overlay, Scene, View, legend, paint, visible_in_layer,
};
use super::session::{OpenModel, Session};

/// A laid-out graph with what the panel looks up every frame.
pub struct PreparedGraph {
    pub layout: GraphLayout,
    /// How long the layout (and the index) took on the background thread.
    pub elapsed: Duration,
    index: EdgeIndex,
    labels: Vec<String>,
    families: Vec<Family>,
    /// Lower-case `name op` of every box, for search.
    keys: Vec<String>,
    /// Index into `compressor.layers` of each box that is a compressible layer.
    layer_of_box: Vec<Option<usize>>,
    /// Box of each compressible layer.
    box_of_layer: Vec<Option<usize>>,
}

impl PreparedGraph {
    /// Lays out `view`; `layer_nodes[i]` is the graph node of compressible layer `i`.
    pub fn build(
        view: &GraphView,
        layer_nodes: &[usize],
        cancel: &CancelToken,
    ) -> Result<Self, String> {
        let start = Instant::now();
        let layout = layout_graph(view, &LayoutOptions::default(), &NoProgress, cancel)
            .map_err(|e| e.to_string())?;
        let index = EdgeIndex::new(&layout);
        let node_box: HashMap<usize, usize> = layout
            .boxes
            .iter()
            .enumerate()
            .filter_map(|(b, bx)| match bx.kind {
                BoxKind::Node(n) => Some((n, b)),
                _ => None,
            })
            .collect();
        let mut layer_of_box = vec![None; layout.boxes.len()];
        let box_of_layer: Vec<Option<usize>> = layer_nodes
            .iter()
            .enumerate()
            .map(|(l, n)| {
                let b = node_box.get(n).copied();
                if let Some(b) = b {
                    layer_of_box[b] = Some(l);
                }
                b
            })
            .collect();
        let mut labels = Vec::with_capacity(layout.boxes.len());
        let mut families = Vec::with_capacity(layout.boxes.len());
        let mut keys = Vec::with_capacity(layout.boxes.len());
        for bx in &layout.boxes {
            labels.push(box_label(view, bx.kind).to_owned());
            let (family, key) = match bx.kind {
                BoxKind::Node(n) => {
                    let node = view.nodes.get(n);
                    let op = node.map_or("", |n| n.op_type.as_str());
                    let name = node.map_or("", |n| n.name.as_str());
                    (Family::of_op(op), format!("{name} {op}").to_lowercase())
                }
                BoxKind::Input(_) => (Family::Input, box_label(view, bx.kind).to_lowercase()),
                BoxKind::Output(_) => (Family::Output, box_label(view, bx.kind).to_lowercase()),
            };
            families.push(family);
            keys.push(key);
        }
        Ok(Self {
            elapsed: start.elapsed(),
            layout,
            index,
            labels,
            families,
            keys,
            layer_of_box,
            box_of_layer,
        })
    }

    /// The box under layout point `p`.
    pub fn hit(&self, p: Pos2) -> Option<usize> {
        let pitch = self.layout.layer_pitch;
        if p.y < 0.0 || pitch <= 0.0 {
            return None;
        }
        let l = (p.y / pitch).floor() as usize;
        visible_in_layer(&self.layout, l, p.x, p.x)
            .iter()
            .copied()
            .find(|&b| {
                let bx = &self.layout.boxes[b];
                p.x >= bx.x && p.x <= bx.x + bx.w && p.y >= bx.y && p.y <= bx.y + bx.h
            })
    }

    /// The box of compressible layer `l` (an index into `compressor.layers`).
    pub fn box_of_layer(&self, l: usize) -> Option<usize> {
        self.box_of_layer.get(l).copied().flatten()
    }

    /// The compressible layer a box stands for.
    pub fn layer_of_box(&self, b: usize) -> Option<usize> {
        self.layer_of_box.get(b).copied().flatten()
    }

    /// Name shown for a box: the node name, or the input/output name.
    pub fn name<'a>(&'a self, view: &'a GraphView, b: usize) -> &'a str {
        match self.layout.boxes.get(b).map(|bx| bx.kind) {
            Some(BoxKind::Node(n)) => view.nodes.get(n).map_or("?", |n| n.name.as_str()),
            Some(kind) => box_label(view, kind),
            None => "?",
        }
    }
}

/// A view the panel keeps until the user pans or zooms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AutoView {
    None,
    /// The whole graph.
    Fit,
    /// The top of the graph at [`HOME_ZOOM`].
    Home,
}

/// Zoom of the first view of a large graph.
const HOME_ZOOM: f32 = 0.8;

type LayoutJob = (
    Arc<OpenModel>,
    Promise<Result<PreparedGraph, String>>,
    CancelToken,
);

/// View state of the Graph panel, owned by the app.
pub struct GraphPanel {
    job: Option<LayoutJob>,
    ready: Option<(Arc<OpenModel>, PreparedGraph)>,
    /// A failed layout, and of which model.
    error: Option<(Arc<OpenModel>, String)>,
    /// Layout point at the middle of the canvas.
    centre: Pos2,
    zoom: f32,
    /// A view kept every frame until the user pans or zooms (panels settle their sizes
    /// over the first frames).
    auto_view: AutoView,
    /// Box to bring to the middle on the next frame.
    centre_on: Option<usize>,
    search: String,
    /// Search text and its matches (sorted box indices).
    matches: (String, Vec<usize>),
    overlay: Overlay,
    /// The highlighted box.
    selected: Option<usize>,
    /// The layer selection last seen, to follow changes made elsewhere (the Layers table).
    seen_layer: Option<usize>,
    /// What the last frame drew.
    pub stats: DrawStats,
    /// Where the canvas was last drawn.
    canvas: Option<View>,
}

impl Default for GraphPanel {
    fn default() -> Self {
        Self {
            job: None,
            ready: None,
            error: None,
            centre: Pos2::ZERO,
            zoom: 1.0,
            auto_view: AutoView::Home,
            centre_on: None,
            search: String::new(),
            matches: (String::new(), Vec::new()),
            overlay: Overlay::OpFamily,
            selected: None,
            seen_layer: None,
            stats: DrawStats::default(),
            canvas: None,
        }
    }
}

/// Most matches listed under the search box.
const LISTED_MATCHES: usize = 12;
const MAX_ZOOM: f32 = 4.0;

impl GraphPanel {
    /// The laid-out graph, once the background layout is done.
    pub fn prepared(&self) -> Option<&PreparedGraph> {
        self.ready.as_ref().map(|(_, p)| p)
    }

    /// The highlighted box (an index into the layout's boxes).
    pub fn selected(&self) -> Option<usize> {
        self.selected
    }

    /// Current zoom (1 = 100%).
    pub fn zoom(&self) -> f32 {
        self.zoom
    }

    /// Where box `b`'s centre was on screen in the last frame (if the canvas was drawn).
    pub fn screen_pos(&self, b: usize) -> Option<Pos2> {
        let view = self.canvas?;
        let bx = self.prepared()?.layout.boxes.get(b)?;
        Some(view.to_screen(bx.centre()))
    }

    /// The canvas rectangle of the last frame.
    pub fn canvas_rect(&self) -> Option<egui::Rect> {
        self.canvas.map(|v| v.rect)
    }

    /// Shows the whole graph on the next frame.
    pub fn fit(&mut self) {
        self.auto_view = AutoView::Fit;
    }

    /// Starts the layout of a newly opened model; collects a finished one.
    fn sync(&mut self, session: &Session, ctx: &egui::Context) {
        let open = &session.open;
        let current = |m: &Arc<OpenModel>| Arc::ptr_eq(m, open);
        if let Some((model, promise, cancel)) = self.job.take() {
            if !current(&model) {
                cancel.cancel();
            } else {
                match promise.try_take() {
                    Ok(Ok(prepared)) => {
                        // Start on the whole graph, with the selected layer highlighted.
                        self.selected = session.selected.and_then(|l| prepared.box_of_layer(l));
                        self.seen_layer = session.selected;
                        self.ready = Some((model, prepared));
                        self.error = None;
                        self.auto_view = AutoView::Home;
                        // Matches are box indices of the previous graph.
                        self.matches = (String::new(), Vec::new());
                    }
                    Ok(Err(e)) => self.error = Some((model, format!("Graph layout failed: {e}"))),
                    Err(promise) => self.job = Some((model, promise, cancel)),
                }
            }
        }
        let have = self.ready.as_ref().is_some_and(|(m, _)| current(m));
        let running = self.job.as_ref().is_some_and(|(m, _, _)| current(m));
        let failed = self.error.as_ref().is_some_and(|(m, _)| current(m));
        if !have && !running && !failed {
            self.error = None;
            self.ready = None;
            let model = open.clone();
            let layer_nodes: Vec<usize> =
                session.compressor.layers.iter().map(|l| l.node).collect();
            let cancel = CancelToken::new();
            let (job_model, job_cancel, ctx) = (model.clone(), cancel.clone(), ctx.clone());
            let promise = Promise::spawn_thread("edgefit-graph-layout", move || {
                let result =
                    PreparedGraph::build(&job_model.loaded.graph, &layer_nodes, &job_cancel);
                ctx.request_repaint();
                result
            });
            self.job = Some((model, promise, cancel));
        }
    }

    /// Follows the layer selected elsewhere (the Layers table): selects and centres its node.
    fn follow_selection(&mut self, session: &Session) {
        if session.selected == self.seen_layer {
            return;
        }
        self.seen_layer = session.selected;
        let Some(prepared) = self.prepared() else {
            return;
        };
        if let Some(b) = session
            .selected
            .and_then(|l| prepared.box_of_layer.get(l).copied().flatten())
            && self.selected != Some(b)
        {
            self.selected = Some(b);
            self.centre_on = Some(b);
        }
    }

    /// What the node colours show.
    pub fn overlay(&self) -> Overlay {
        self.overlay
    }

    /// Shows `overlay` in the node colours.
    pub fn set_overlay(&mut self, overlay: Overlay) {
        self.overlay = overlay;
    }

    /// Selects and centres the box of node `node` (an index into the open model's
    /// `GraphView::nodes`); a compressible layer is selected in the plan too.
    pub fn focus_node(&mut self, node: usize, commands: &mut Vec<Command>) {
        let Some(b) = self.prepared().and_then(|p| {
            p.layout
                .boxes
                .iter()
                .position(|bx| bx.kind == BoxKind::Node(node))
        }) else {
            return;
        };
        self.select(Some(b), commands);
        self.centre_on = Some(b);
    }

    /// Selects box `b`; a compressible layer is selected in the plan too.
    fn select(&mut self, b: Option<usize>, commands: &mut Vec<Command>) {
        self.selected = b;
        let layer = b.and_then(|b| self.prepared()?.layer_of_box.get(b).copied().flatten());
        if let Some(l) = layer {
            self.seen_layer = Some(l);
            commands.push(Command::SelectLayer(l));
        }
    }

    fn update_matches(&mut self) {
        let query = self.search.trim().to_lowercase();
        if self.matches.0 == query {
            return;
        }
        let found = match self.prepared() {
            Some(p) if !query.is_empty() => (0..p.keys.len())
                .filter(|&b| p.keys[b].contains(&query))
                .collect(),
            _ => Vec::new(),
        };
        self.matches = (query, found);
    }
}

/// The Graph panel: toolbar (search, overlay, fit), legend, canvas and the selected node.
pub fn graph_ui(
    ui: &mut egui::Ui,
    session: &Session,
    panel: &mut GraphPanel,
    commands: &mut Vec<Command>,
) {
    panel.sync(session, ui.ctx());
    if let Some((_, error)) = &panel.error {
        ui.colored_label(ui.visuals().error_fg_color, error);
        return;
    }
    if panel.ready.is_none() {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label("Laying out the graph...");
        });
        return;
    }
    panel.follow_selection(session);
    toolbar_ui(ui, panel, session, commands);
    egui::Panel::right("graph_details")
        .resizable(true)
        .default_size(250.0)
        .show(ui, |ui| {
            egui::ScrollArea::vertical()
                .id_salt("graph_details_scroll")
                .show(ui, |ui| {
                    if let Some((_, prepared)) = &panel.ready {
                        details_ui(ui, panel.selected, prepared, session);
                    }
                });
        });
    canvas_ui(ui, panel, session, commands);
}

fn toolbar_ui(
    ui: &mut egui::Ui,
    panel: &mut GraphPanel,
    session: &Session,
    commands: &mut Vec<Command>,
) {
    let mut jump = None;
    ui.horizontal(|ui| {
        let label = ui.label("Search");
        let edit = ui
            .add(
                egui::TextEdit::singleline(&mut panel.search)
                    .hint_text("node name or op")
                    .desired_width(180.0),
            )
            .labelled_by(label.id);
        panel.update_matches();
        if edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)) {
            // Enter goes to the next match after the selected node (wrapping), and the
            // search box keeps the focus for the next Enter.
            let found = &panel.matches.1;
            jump = panel
                .selected
                .and_then(|s| found.iter().find(|&&b| b > s))
                .or(found.first())
                .copied();
            if jump.is_some() {
                edit.request_focus();
            }
        }
        let colour_by = ui.label("Colour by");
        egui::ComboBox::from_id_salt("graph_overlay")
            .selected_text(panel.overlay.label())
            .show_ui(ui, |ui| {
                for o in [
                    Overlay::OpFamily,
                    Overlay::Bits,
                    Overlay::Sqnr,
                    Overlay::Sensitivity,
                    Overlay::Diff,
                ] {
                    ui.selectable_value(&mut panel.overlay, o, o.label());
                }
            })
            .response
            .labelled_by(colour_by.id);
        if ui.button("Fit").clicked() {
            panel.auto_view = AutoView::Fit;
        }
        ui.label(format!("{:.0}%", panel.zoom * 100.0));
    });
    if !panel.matches.0.is_empty() {
        let (_, found) = &panel.matches;
        ui.horizontal_wrapped(|ui| {
            ui.label(format!("{} matches", found.len()));
            if let Some((_, prepared)) = &panel.ready {
                let view = &session.open.loaded.graph;
                for &b in found.iter().take(LISTED_MATCHES) {
                    if ui.button(prepared.name(view, b)).clicked() {
                        jump = Some(b);
                    }
                }
            }
            if found.len() > LISTED_MATCHES {
                ui.label("...");
            }
        });
    }
    if let Some(b) = jump {
        panel.select(Some(b), commands);
        panel.centre_on = Some(b);
    }
    ui.horizontal_wrapped(|ui| {
        for (text, colour) in legend(panel.overlay) {
            let (rect, _) = ui.allocate_exact_size(egui::vec2(12.0, 12.0), Sense::hover());
            ui.painter().rect_filled(rect, 2.0, colour);
            ui.label(text);
        }
    });
}

fn canvas_ui(
    ui: &mut egui::Ui,
    panel: &mut GraphPanel,
    session: &Session,
    commands: &mut Vec<Command>,
) {
    let (response, painter) = ui.allocate_painter(ui.available_size(), Sense::click_and_drag());
    let rect = response.rect;
    let Some((_, prepared)) = &panel.ready else {
        return;
    };
    let layout = &prepared.layout;
    let fit_zoom = if layout.width > 0.0 && layout.height > 0.0 {
        ((rect.width() - 20.0) / layout.width)
            .min((rect.height() - 20.0) / layout.height)
            .clamp(1e-4, 1.0)
    } else {
        1.0
    };
    let min_zoom = (fit_zoom * 0.5).min(0.1);
    if rect.width() > 1.0 {
        match panel.auto_view {
            AutoView::Fit => {
                panel.zoom = fit_zoom;
                panel.centre = Pos2::new(layout.width / 2.0, layout.height / 2.0);
            }
            AutoView::Home => {
                // The top of the graph at a readable size (all of it when it fits so).
                panel.zoom = fit_zoom.max(HOME_ZOOM.min(1.0));
                let x = if layout.width * panel.zoom <= rect.width() {
                    layout.width / 2.0
                } else {
                    let first = layout.layers.first().map_or(&[][..], Vec::as_slice);
                    let (lo, hi) = first.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &b| {
                        let bx = &layout.boxes[b];
                        (lo.min(bx.x), hi.max(bx.x + bx.w))
                    });
                    if lo <= hi { (lo + hi) / 2.0 } else { 0.0 }
                };
                let y = if layout.height * panel.zoom <= rect.height() {
                    layout.height / 2.0
                } else {
                    (rect.height() / 2.0 - 10.0) / panel.zoom
                };
                panel.centre = Pos2::new(x, y);
            }
            AutoView::None => {}
        }
    }
    if let Some(b) = panel.centre_on.take()
        && let Some(bx) = layout.boxes.get(b)
    {
        panel.auto_view = AutoView::None;
        if panel.zoom < 0.6 {
            panel.zoom = 1.0;
        }
        let c = bx.centre();
        panel.centre = Pos2::new(c[0], c[1]);
    }
    if response.dragged() && response.drag_delta() != egui::Vec2::ZERO {
        panel.auto_view = AutoView::None;
        panel.centre -= response.drag_delta() / panel.zoom;
    }
    if let Some(pointer) = response.hover_pos() {
        let (scroll, pinch) = ui.input(|i| (i.smooth_scroll_delta.y, i.zoom_delta()));
        let factor = (scroll * 0.002).exp() * pinch;
        if factor.is_finite() && factor > 0.0 && (factor - 1.0).abs() > 1e-4 {
            panel.auto_view = AutoView::None;
            let view = View {
                rect,
                centre: panel.centre,
                zoom: panel.zoom,
            };
            let anchor = view.to_layout(pointer);
            panel.zoom = (panel.zoom * factor).clamp(min_zoom, MAX_ZOOM);
            panel.centre = anchor - (pointer - rect.center()) / panel.zoom;
        }
    }
    let view = View {
        rect,
        centre: panel.centre,
        zoom: panel.zoom,
    };
    let hovered = response
        .hover_pos()
        .and_then(|p| prepared.hit(view.to_layout(p)));
    let clicked = response
        .clicked()
        .then(|| response.interact_pointer_pos())
        .flatten()
        .map(|p| prepared.hit(view.to_layout(p)));
    painter.rect_filled(rect, 0.0, ui.visuals().extreme_bg_color);
    let scene = Scene {
        layout,
        index: &prepared.index,
        labels: &prepared.labels,
        families: &prepared.families,
        layer_of_box: &prepared.layer_of_box,
        compression: session.compression.as_ref(),
        // Its layers are the compressor's, in order (the same model): else it is not shown.
        sensitivity: session
            .sensitivity
            .as_deref()
            .filter(|s| s.layers.len() == session.compressor.layers.len()),
        diff: session.diff.as_ref().map(|d| d.marks.as_slice()),
        overlay: panel.overlay,
        selected: panel.selected,
        matches: &panel.matches.1,
    };
    panel.stats = paint(&painter, &view, &scene);
    panel.canvas = Some(view);
    if let Some(b) = hovered {
        let graph = &session.open.loaded.graph;
        let text = graph_details::hover_text(prepared, session, graph, b);
        response.clone().on_hover_ui_at_pointer(|ui| {
            ui.label(text);
        });
    }
    if let Some(hit) = clicked {
        panel.select(hit, commands);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn hit_test_finds_the_box_under_a_point_and_nothing_between_boxes() {
        let model = edgefit_engine::model::synthetic::branchy_cnn(100);
        let view = GraphView::new(&model);
        let prepared = PreparedGraph::build(&view, &[], &CancelToken::new()).unwrap();
        for (b, bx) in prepared.layout.boxes.iter().enumerate() {
            let c = bx.centre();
            assert_eq!(prepared.hit(Pos2::new(c[0], c[1])), Some(b));
        }
        let first = &prepared.layout.boxes[0];
        let gap = Pos2::new(first.x + 1.0, first.y + first.h + 5.0);
        assert_eq!(prepared.hit(gap), None);
        assert_eq!(prepared.hit(Pos2::new(-10.0, -10.0)), None);
    }
}
