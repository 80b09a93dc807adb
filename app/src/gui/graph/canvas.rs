//! The Graph panel's canvas: pan, zoom, the automatic views, hover and click.

use egui::{Pos2, Sense};

use super::{AutoView, GraphPanel, HOME_ZOOM, MAX_ZOOM};
use crate::gui::Command;
use crate::gui::graph_details::{self, GroupAction};
use crate::gui::graph_paint::{Scene, View, paint};
use crate::gui::session::Session;
use edgefit_engine::analyse::layout::BoxKind;

/// The canvas: the graph painted, panned by dragging, zoomed by scrolling; a click selects a
/// node or opens a collapsed group.
pub(super) fn canvas_ui(
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
    // A node hidden by a group being opened waits for the layout that shows it.
    let settled = panel.job.is_none()
        && prepared.grouping.by_name == panel.group_by_name
        && prepared.grouping.expanded == panel.expanded;
    let target = panel
        .centre_on
        .filter(|_| settled)
        .and_then(|k| prepared.box_showing(k));
    if let Some(bx) = target.and_then(|b| layout.boxes.get(b)) {
        panel.centre_on = None;
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
        families: &prepared.families,
        layer_of_box: &prepared.layer_of_box,
        group_layers: &prepared.group_layers,
        compression: session.compression.as_ref(),
        // Its layers are the compressor's, in order (the same model): else it is not shown.
        sensitivity: session
            .sensitivity
            .as_deref()
            .filter(|s| s.layers.len() == session.compressor.layers.len()),
        diff: session.diff.as_ref().map(|d| d.marks.as_slice()),
        device: &session.deploy.placement,
        overlay: panel.overlay,
        selected: panel.selected.and_then(|k| prepared.box_of(k)),
        matches: &panel.matches.boxes,
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
        // A collapsed group opens; anything else is selected.
        match hit.map(|b| layout.boxes[b].kind) {
            Some(BoxKind::Group(g)) => panel.apply(GroupAction::Expand(g)),
            kind => panel.select(kind, commands),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::PreparedGraph;
    use edgefit_engine::CancelToken;
    use edgefit_engine::analyse::layout::Grouping;
    use edgefit_engine::model::graph::GraphView;
    use egui::Pos2;

    #[test]
    fn hit_test_finds_the_box_under_a_point_and_nothing_between_boxes() {
        let model = edgefit_engine::model::synthetic::branchy_cnn(100);
        let view = GraphView::new(&model);
        let grouping = Grouping::default();
        let prepared =
            PreparedGraph::build(&view, &[], None, grouping, &CancelToken::new()).unwrap();
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
