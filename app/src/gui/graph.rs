//! The Graph panel: the model's layer graph laid out top to bottom (on a background thread),
//! with pan, zoom, search, selection, overlays of the current plan, groups by node name and
//! expandable subgraph bodies.
//!
//! The panel reads the session and pushes [`Command`]s; only view state (pan, zoom, search
//! text, the highlighted node, which groups are open) lives in [`GraphPanel`].

mod canvas;
mod prepared;

use std::collections::HashSet;
use std::sync::Arc;

use edgefit_engine::CancelToken;
use edgefit_engine::analyse::layout::{BoxKind, GroupKind, GroupTree, Grouping};
use egui::{Pos2, Sense};
use poll_promise::Promise;

use super::Command;
use super::graph_details::{GroupAction, details_ui};
pub use super::graph_paint::DrawStats;
use super::graph_paint::{Overlay, View, legend};
use super::session::{OpenModel, Session};
pub use prepared::PreparedGraph;

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
    Grouping,
    Promise<Result<PreparedGraph, String>>,
    CancelToken,
);

/// Search text, what it matches (inputs, nodes of every graph, outputs, in that order) and
/// the boxes those are drawn in (sorted).
#[derive(Default)]
struct Matches {
    query: String,
    found: Vec<BoxKind>,
    boxes: Vec<usize>,
}

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
    /// What to bring to the middle once the layout showing it is ready (a node hidden in a
    /// group centres its group).
    centre_on: Option<BoxKind>,
    search: String,
    matches: Matches,
    overlay: Overlay,
    /// The highlighted node, input, output or group.
    selected: Option<BoxKind>,
    /// The layer selection last seen, to follow changes made elsewhere (the Layers table).
    seen_layer: Option<usize>,
    /// Collapse every name group into one box ("Group by name").
    group_by_name: bool,
    /// Open groups and subgraph bodies (ids of the open model's `GroupTree`).
    expanded: HashSet<usize>,
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
            matches: Matches::default(),
            overlay: Overlay::OpFamily,
            selected: None,
            seen_layer: None,
            group_by_name: false,
            expanded: HashSet::new(),
            stats: DrawStats::default(),
            canvas: None,
        }
    }
}

/// Most matches listed under the search box.
const LISTED_MATCHES: usize = 12;
const MAX_ZOOM: f32 = 4.0;

/// Order of search matches (and of "next match"): inputs, nodes, outputs.
fn match_order(kind: BoxKind, tree: &GroupTree) -> (u8, usize) {
    match kind {
        BoxKind::Input(i) => (0, i),
        BoxKind::Node(n) => (1, n),
        BoxKind::Group(g) => (
            1,
            tree.groups
                .get(g)
                .and_then(|g| g.members.first().copied())
                .unwrap_or(0),
        ),
        BoxKind::Output(i) => (2, i),
    }
}

impl GraphPanel {
    /// The laid-out graph, once the background layout is done (while a new grouping is laid
    /// out, the previous layout of the same model).
    pub fn prepared(&self) -> Option<&PreparedGraph> {
        self.ready.as_ref().map(|(_, p)| p)
    }

    /// A layout runs on the background thread.
    pub fn is_laying_out(&self) -> bool {
        self.job.is_some()
    }

    /// The highlighted box (an index into the layout's boxes).
    pub fn selected(&self) -> Option<usize> {
        self.prepared()?.box_of(self.selected?)
    }

    /// Current zoom (1 = 100%).
    pub fn zoom(&self) -> f32 {
        self.zoom
    }

    /// Open groups and subgraph bodies (ids into the layout's `GroupTree`).
    pub fn expanded(&self) -> &HashSet<usize> {
        &self.expanded
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

    /// The grouping the panel wants drawn.
    fn grouping(&self) -> Grouping {
        Grouping {
            by_name: self.group_by_name,
            expanded: self.expanded.clone(),
        }
    }

    fn wants(&self, grouping: &Grouping) -> bool {
        grouping.by_name == self.group_by_name && grouping.expanded == self.expanded
    }

    /// Starts the layout of a newly opened model or of a new grouping; collects a finished one.
    fn sync(&mut self, session: &Session, ctx: &egui::Context) {
        let open = &session.open;
        let current = |m: &Arc<OpenModel>| Arc::ptr_eq(m, open);
        if let Some((model, grouping, promise, cancel)) = self.job.take() {
            if !current(&model) || !self.wants(&grouping) {
                cancel.cancel();
            } else {
                match promise.try_take() {
                    Ok(Ok(prepared)) => {
                        let first = !self.ready.as_ref().is_some_and(|(m, _)| current(m));
                        if first {
                            // Start on the whole graph, with the selected layer highlighted.
                            self.selected = session
                                .selected
                                .and_then(|l| prepared.box_of_layer(l))
                                .map(|b| prepared.layout.boxes[b].kind);
                            self.seen_layer = session.selected;
                            self.auto_view = AutoView::Home;
                        }
                        self.ready = Some((model, prepared));
                        self.error = None;
                        // Match boxes are those of the previous layout.
                        self.matches = Matches::default();
                    }
                    Ok(Err(e)) => self.error = Some((model, format!("Graph layout failed: {e}"))),
                    Err(promise) => self.job = Some((model, grouping, promise, cancel)),
                }
            }
        }
        let same_model = self.ready.as_ref().is_some_and(|(m, _)| current(m));
        let have = self
            .ready
            .as_ref()
            .is_some_and(|(m, p)| current(m) && self.wants(&p.grouping));
        let running = self.job.is_some();
        let failed = self.error.as_ref().is_some_and(|(m, _)| current(m));
        if !have && !running && !failed {
            let mut tree = None;
            if same_model {
                tree = self.prepared().map(|p| p.layout.groups.clone());
            } else {
                // Group ids belong to one model.
                self.error = None;
                self.ready = None;
                self.expanded.clear();
                self.selected = None;
                self.centre_on = None;
            }
            let model = open.clone();
            let layer_nodes: Vec<usize> =
                session.compressor.layers.iter().map(|l| l.node).collect();
            let cancel = CancelToken::new();
            let grouping = self.grouping();
            let (job_model, job_cancel, job_grouping, ctx) =
                (model.clone(), cancel.clone(), grouping.clone(), ctx.clone());
            let promise = Promise::spawn_thread("edgefit-graph-layout", move || {
                let result = PreparedGraph::build(
                    &job_model.loaded.graph,
                    &layer_nodes,
                    tree,
                    job_grouping,
                    &job_cancel,
                );
                ctx.request_repaint();
                result
            });
            self.job = Some((model, grouping, promise, cancel));
        }
    }

    /// Opens every group that hides node `node` (name groups only while grouping by name).
    fn reveal(&mut self, node: usize) {
        let Some(prepared) = self.prepared() else {
            return;
        };
        let tree = prepared.groups();
        let by_name = self.group_by_name;
        let open: Vec<usize> = tree
            .ancestors(node)
            .into_iter()
            .filter(|&g| by_name || tree.groups[g].kind != GroupKind::Name)
            .collect();
        self.expanded.extend(open);
    }

    /// Selects node `node`, opening the groups that hide it, and centres it.
    fn show_node(&mut self, node: usize, commands: &mut Vec<Command>) {
        self.reveal(node);
        self.select(Some(BoxKind::Node(node)), commands);
        self.centre_on = Some(BoxKind::Node(node));
    }

    /// Follows the layer selected elsewhere (the Layers table): selects and centres its node.
    fn follow_selection(&mut self, session: &Session) {
        if session.selected == self.seen_layer {
            return;
        }
        self.seen_layer = session.selected;
        let Some(node) = session
            .selected
            .and_then(|l| self.prepared()?.layer_nodes.get(l).copied())
        else {
            return;
        };
        if self.selected != Some(BoxKind::Node(node)) {
            self.reveal(node);
            self.selected = Some(BoxKind::Node(node));
            self.centre_on = Some(BoxKind::Node(node));
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

    /// Selects and centres node `node` (an index into the open model's `GraphView::nodes`),
    /// opening the groups that hide it; a compressible layer is selected in the plan too.
    pub fn focus_node(&mut self, node: usize, commands: &mut Vec<Command>) {
        if self.prepared().is_some() {
            self.show_node(node, commands);
        }
    }

    /// Selects `kind`; a compressible layer is selected in the plan too.
    fn select(&mut self, kind: Option<BoxKind>, commands: &mut Vec<Command>) {
        self.selected = kind;
        let layer = match kind {
            Some(BoxKind::Node(n)) => self
                .prepared()
                .and_then(|p| p.layer_nodes.iter().position(|&m| m == n)),
            _ => None,
        };
        if let Some(l) = layer {
            self.seen_layer = Some(l);
            commands.push(Command::SelectLayer(l));
        }
    }

    /// Opens or closes a group.
    fn apply(&mut self, action: GroupAction) {
        match action {
            GroupAction::Expand(g) => {
                self.expanded.insert(g);
                let first = self
                    .prepared()
                    .and_then(|p| p.groups().groups.get(g)?.members.first().copied());
                if let Some(n) = first
                    && self.selected.is_none_or(|s| s == BoxKind::Group(g))
                {
                    self.centre_on = Some(BoxKind::Node(n));
                }
            }
            GroupAction::Collapse(g) => {
                self.expanded.remove(&g);
                if let Some(BoxKind::Node(n)) = self.selected
                    && self
                        .prepared()
                        .is_some_and(|p| p.groups().ancestors(n).contains(&g))
                {
                    self.centre_on = Some(BoxKind::Node(n));
                }
            }
        }
    }

    fn update_matches(&mut self) {
        let query = self.search.trim().to_lowercase();
        if self.matches.query == query {
            return;
        }
        let found: Vec<BoxKind> = match self.prepared() {
            Some(p) if !query.is_empty() => p
                .keys
                .iter()
                .filter(|(_, key)| key.contains(&query))
                .map(|&(kind, _)| kind)
                .collect(),
            _ => Vec::new(),
        };
        let mut boxes: Vec<usize> = match self.prepared() {
            Some(p) => found.iter().filter_map(|&k| p.box_showing(k)).collect(),
            None => Vec::new(),
        };
        boxes.sort_unstable();
        boxes.dedup();
        self.matches = Matches {
            query,
            found,
            boxes,
        };
    }
}

/// The Graph panel: toolbar (search, overlay, grouping, fit), legend, canvas and the
/// selected node.
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
    let mut action = None;
    egui::Panel::right("graph_details")
        .resizable(true)
        .default_size(250.0)
        .show(ui, |ui| {
            egui::ScrollArea::vertical()
                .id_salt("graph_details_scroll")
                .show(ui, |ui| {
                    if let Some((_, prepared)) = &panel.ready {
                        let selected = panel.selected.and_then(|k| prepared.box_of(k));
                        action = details_ui(ui, selected, prepared, session);
                    }
                });
        });
    if let Some(action) = action {
        panel.apply(action);
    }
    canvas::canvas_ui(ui, panel, session, commands);
    // A group opened or closed this frame is laid out from now.
    panel.sync(session, ui.ctx());
}

fn toolbar_ui(
    ui: &mut egui::Ui,
    panel: &mut GraphPanel,
    session: &Session,
    commands: &mut Vec<Command>,
) {
    let mut jump = None;
    // Wrapped: a narrow panel must not push Fit and the zoom off-screen.
    ui.horizontal_wrapped(|ui| {
        let label = ui.label("Search");
        let edit = ui
            .add(
                egui::TextEdit::singleline(&mut panel.search)
                    .hint_text("node name or op")
                    .desired_width(180.0),
            )
            .labelled_by(label.id);
        panel.update_matches();
        if edit.lost_focus()
            && ui.input(|i| i.key_pressed(egui::Key::Enter))
            && let Some((_, prepared)) = &panel.ready
        {
            // Enter goes to the next match after the selected node (wrapping), and the
            // search box keeps the focus for the next Enter.
            let tree = prepared.groups();
            let found = &panel.matches.found;
            jump = panel
                .selected
                .map(|s| match_order(s, tree))
                .and_then(|s| found.iter().find(|&&k| match_order(k, tree) > s))
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
                    Overlay::Device,
                ] {
                    ui.selectable_value(&mut panel.overlay, o, o.label());
                }
            })
            .response
            .labelled_by(colour_by.id);
        ui.checkbox(&mut panel.group_by_name, "Group by name")
            .on_hover_text(
                "One box per group of node names (/model.2/..., block1...); click a group to \
                 open it",
            );
        if ui.button("Fit").clicked() {
            panel.auto_view = AutoView::Fit;
        }
        ui.label(format!("{:.0}%", panel.zoom * 100.0));
        if panel.job.is_some() {
            ui.spinner();
        }
    });
    if !panel.matches.query.is_empty() {
        let found = &panel.matches.found;
        ui.horizontal_wrapped(|ui| {
            ui.label(format!("{} matches", found.len()));
            if let Some((_, prepared)) = &panel.ready {
                let view = &session.open.loaded.graph;
                for &k in found.iter().take(LISTED_MATCHES) {
                    if ui.button(prepared.name_of(view, k)).clicked() {
                        jump = Some(k);
                    }
                }
            }
            if found.len() > LISTED_MATCHES {
                ui.label("...");
            }
        });
    }
    match jump {
        Some(BoxKind::Node(n)) => panel.show_node(n, commands),
        Some(kind) => {
            panel.select(Some(kind), commands);
            panel.centre_on = Some(kind);
        }
        None => {}
    }
    ui.horizontal_wrapped(|ui| {
        for (text, colour) in legend(panel.overlay) {
            let (rect, _) = ui.allocate_exact_size(egui::vec2(12.0, 12.0), Sense::hover());
            ui.painter().rect_filled(rect, 2.0, colour);
            ui.label(text);
        }
    });
}
