//! Painting the Graph panel: op families and overlay colours, the spatial index that keeps a
//! frame to what is visible, and the level of detail that simplifies a zoomed-out view.

mod colours;

use edgefit_engine::analyse::layout::{BoxKind, GraphLayout};
use edgefit_engine::compress::compressor::Compression;
use edgefit_engine::guide::sensitivity::Sensitivity;
use egui::{Align2, Color32, FontId, Pos2, Rect, Shape, Stroke, Vec2};

pub use colours::{DiffMark, Family, Overlay, fill, group_fill, legend};

/// One straight piece of an edge polyline, in layout coordinates.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub edge: u32,
    pub a: [f32; 2],
    pub b: [f32; 2],
    /// The piece ends at the consumer (it gets the arrow head).
    pub last: bool,
}

/// Edge pieces bucketed by the layer band (`layer × pitch .. (layer + 1) × pitch`) that holds
/// them, so a frame only looks at the bands it shows; pieces crossing bands go in `long`.
#[derive(Debug, Default)]
pub struct EdgeIndex {
    pub bands: Vec<Vec<Segment>>,
    pub long: Vec<Segment>,
}

impl EdgeIndex {
    /// Buckets every edge piece of `layout`.
    pub fn new(layout: &GraphLayout) -> Self {
        let pitch = layout.layer_pitch.max(1e-3);
        let mut index = EdgeIndex {
            bands: vec![Vec::new(); layout.layers.len()],
            long: Vec::new(),
        };
        for (e, edge) in layout.edges.iter().enumerate() {
            let count = edge.points.len();
            for (k, w) in edge.points.windows(2).enumerate() {
                let segment = Segment {
                    edge: e as u32,
                    a: w[0],
                    b: w[1],
                    last: k + 2 == count,
                };
                let (top, bottom) = (w[0][1].min(w[1][1]), w[0][1].max(w[1][1]));
                let band = (top / pitch).floor();
                let fits = band >= 0.0 && ((bottom - 1e-3) / pitch).floor() <= band;
                match index.bands.get_mut(band as usize) {
                    Some(list) if fits => list.push(segment),
                    _ => index.long.push(segment),
                }
            }
        }
        index
    }
}

/// How many things a frame drew.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrawStats {
    pub nodes: usize,
    pub edges: usize,
    pub shapes: usize,
    /// The zoomed-out overview (merged cells, no edges or text) was drawn.
    pub overview: bool,
}

/// Layout → screen mapping: `centre` (layout units) is drawn at the middle of `rect`.
#[derive(Clone, Copy, Debug)]
pub struct View {
    pub rect: Rect,
    pub centre: Pos2,
    pub zoom: f32,
}

impl View {
    /// Screen position of a layout point.
    pub fn to_screen(self, p: [f32; 2]) -> Pos2 {
        self.rect.center() + (Vec2::new(p[0], p[1]) - self.centre.to_vec2()) * self.zoom
    }

    /// Layout position of a screen point.
    pub fn to_layout(self, p: Pos2) -> Pos2 {
        self.centre + (p - self.rect.center()) / self.zoom
    }

    /// The part of the layout on screen.
    pub fn visible(self) -> Rect {
        Rect::from_min_max(self.to_layout(self.rect.min), self.to_layout(self.rect.max))
    }
}

/// Everything a frame needs to paint the graph.
pub struct Scene<'a> {
    pub layout: &'a GraphLayout,
    pub index: &'a EdgeIndex,
    pub families: &'a [Family],
    pub layer_of_box: &'a [Option<usize>],
    /// Compressible layers inside each collapsed group's box.
    pub group_layers: &'a [Vec<usize>],
    pub compression: Option<&'a Compression>,
    /// The last sensitivity sweep, for [`Overlay::Sensitivity`].
    pub sensitivity: Option<&'a Sensitivity>,
    /// The last diff's mark of each node of the model (by `GraphView` index), for
    /// [`Overlay::Diff`].
    pub diff: Option<&'a [DiffMark]>,
    /// The chosen device's placement of each node (by `GraphView` index), for
    /// [`Overlay::Device`].
    pub device: &'a [Option<(edgefit_engine::deploy::partition::Placement, bool)>],
    pub overlay: Overlay,
    pub selected: Option<usize>,
    pub matches: &'a [usize],
}

/// Node boxes of layer `l` that intersect `x0..x1` (layout units): boxes of a layer are
/// ordered and disjoint, so their right edges are sorted too.
pub fn visible_in_layer(layout: &GraphLayout, l: usize, x0: f32, x1: f32) -> &[usize] {
    let Some(layer) = layout.layers.get(l) else {
        return &[];
    };
    let start = layer.partition_point(|&b| layout.boxes[b].x + layout.boxes[b].w < x0);
    let end = layer.partition_point(|&b| layout.boxes[b].x <= x1);
    layer.get(start..end.max(start)).unwrap_or(&[])
}

/// Paints what of `scene` is visible in `view`.
pub fn paint(painter: &egui::Painter, view: &View, scene: &Scene<'_>) -> DrawStats {
    let layout = scene.layout;
    let mut stats = DrawStats::default();
    let Some(last_layer) = layout.layers.len().checked_sub(1) else {
        return stats;
    };
    let visible = view.visible();
    let pitch = layout.layer_pitch.max(1e-3);
    let l0 = (visible.min.y / pitch).floor().max(0.0) as usize;
    let l1 = ((visible.max.y / pitch).floor().max(0.0) as usize).min(last_layer);
    let node_px = layout.boxes.first().map_or(28.0, |b| b.h) * view.zoom;
    let mut shapes: Vec<Shape> = Vec::new();
    let fill_of = |b: usize| {
        if scene.overlay == Overlay::Device {
            return match layout.boxes[b].kind {
                BoxKind::Node(n) => colours::device_fill(scene.device.get(n).copied().flatten()),
                BoxKind::Group(g) => colours::device_group_fill(
                    scene.device,
                    layout.groups.groups.get(g).map_or(&[][..], |g| &g.members),
                ),
                _ => scene.families[b].colour(),
            };
        }
        let mark = match layout.boxes[b].kind {
            BoxKind::Node(n) => scene.diff.and_then(|marks| marks.get(n).copied()),
            BoxKind::Group(g) => {
                let members = layout.groups.groups.get(g).map_or(&[][..], |g| &g.members);
                let layers = scene.group_layers.get(b).map_or(&[][..], Vec::as_slice);
                return group_fill(
                    scene.overlay,
                    layers,
                    members,
                    scene.compression,
                    scene.sensitivity,
                    scene.diff,
                );
            }
            _ => None,
        };
        fill(
            scene.overlay,
            scene.families[b],
            scene.layer_of_box[b],
            scene.compression,
            scene.sensitivity,
            mark,
        )
    };
    let highlight = Color32::from_rgb(255, 190, 0);
    let matched = Color32::from_rgb(120, 220, 255);
    if node_px < 2.5 {
        stats.overview = true;
        overview(
            view,
            scene,
            l0.min(l1),
            l1,
            &mut shapes,
            &mut stats,
            &fill_of,
        );
    } else {
        let edge_colour = Color32::from_gray(140);
        let width = if node_px >= 8.0 { 1.2 } else { 1.0 };
        let arrows = node_px >= 12.0;
        let selected = scene.selected;
        let mut draw_segment = |s: &Segment, stats: &mut DrawStats| {
            let (x0, x1) = (s.a[0].min(s.b[0]), s.a[0].max(s.b[0]));
            if x1 < visible.min.x || x0 > visible.max.x {
                return;
            }
            let (a, b) = (view.to_screen(s.a), view.to_screen(s.b));
            if (b - a).length_sq() < 0.25 && !s.last {
                return;
            }
            let edge = &layout.edges[s.edge as usize];
            let hot = selected.is_some_and(|sel| edge.from == sel || edge.to == sel);
            let colour = if hot { highlight } else { edge_colour };
            shapes.push(Shape::line_segment(
                [a, b],
                Stroke::new(if hot { 2.0 } else { width }, colour),
            ));
            if s.last && arrows {
                let size = (6.0 * view.zoom).clamp(3.0, 9.0);
                let dir = (b - a).normalized();
                let side = Vec2::new(-dir.y, dir.x) * size * 0.5;
                let base = b - dir * size;
                shapes.push(Shape::convex_polygon(
                    vec![b, base + side, base - side],
                    colour,
                    Stroke::NONE,
                ));
            }
            stats.edges += 1;
        };
        for band in l0.saturating_sub(1)..=l1 {
            for s in scene.index.bands.get(band).map_or(&[][..], Vec::as_slice) {
                let (top, bottom) = (s.a[1].min(s.b[1]), s.a[1].max(s.b[1]));
                if bottom >= visible.min.y && top <= visible.max.y {
                    draw_segment(s, &mut stats);
                }
            }
        }
        for s in &scene.index.long {
            let (top, bottom) = (s.a[1].min(s.b[1]), s.a[1].max(s.b[1]));
            if bottom >= visible.min.y && top <= visible.max.y {
                draw_segment(s, &mut stats);
            }
        }
        let font = (12.0 * view.zoom * 2.0).round() / 2.0;
        let text = font >= 7.0;
        let detailed = node_px >= 8.0;
        for l in l0..=l1 {
            for &b in visible_in_layer(layout, l, visible.min.x, visible.max.x) {
                let bx = &layout.boxes[b];
                let rect = Rect::from_min_max(
                    view.to_screen([bx.x, bx.y]),
                    view.to_screen([bx.x + bx.w, bx.y + bx.h]),
                );
                let rounding = if detailed {
                    match bx.kind {
                        BoxKind::Node(_) | BoxKind::Group(_) => 3.0 * view.zoom.min(1.5),
                        _ => rect.height() / 2.0,
                    }
                } else {
                    0.0
                };
                let colour = fill_of(b);
                if detailed && matches!(bx.kind, BoxKind::Group(_)) {
                    // A group is a stack of boxes.
                    let behind = rect.translate(Vec2::new(3.0, -3.0) * view.zoom.min(1.5));
                    shapes.push(Shape::rect_filled(
                        behind,
                        rounding,
                        Color32::from_rgb(
                            colour.r() / 3 * 2,
                            colour.g() / 3 * 2,
                            colour.b() / 3 * 2,
                        ),
                    ));
                    shapes.push(Shape::rect_stroke(
                        behind,
                        rounding,
                        Stroke::new(1.0, Color32::from_gray(20)),
                        egui::StrokeKind::Outside,
                    ));
                }
                shapes.push(Shape::rect_filled(rect, rounding, colour));
                let outline = if scene.selected == Some(b) {
                    Some(Stroke::new(3.0, highlight))
                } else if scene.matches.binary_search(&b).is_ok() {
                    Some(Stroke::new(2.0, matched))
                } else if detailed {
                    Some(Stroke::new(1.0, Color32::from_gray(20)))
                } else {
                    None
                };
                if let Some(stroke) = outline {
                    shapes.push(Shape::rect_stroke(
                        rect,
                        rounding,
                        stroke,
                        egui::StrokeKind::Outside,
                    ));
                }
                if text && let Some(label) = layout.labels.get(b) {
                    shapes.push(painter.fonts_mut(|f| {
                        Shape::text(
                            f,
                            rect.center(),
                            Align2::CENTER_CENTER,
                            label,
                            FontId::proportional(font),
                            Color32::WHITE,
                        )
                    }));
                }
                stats.nodes += 1;
            }
        }
    }
    // The selection stays findable at any zoom.
    if let Some(bx) = scene.selected.and_then(|b| layout.boxes.get(b))
        && node_px < 8.0
    {
        let c = view.to_screen(bx.centre());
        shapes.push(Shape::circle_stroke(c, 9.0, Stroke::new(2.5, highlight)));
    }
    stats.shapes = shapes.len();
    painter.extend(shapes);
    stats
}

/// The zoomed-out view: boxes merged into 2-point cells, one rectangle per run of cells of
/// one colour in a row, no edges or text.
fn overview(
    view: &View,
    scene: &Scene<'_>,
    l0: usize,
    l1: usize,
    shapes: &mut Vec<Shape>,
    stats: &mut DrawStats,
    fill_of: &dyn Fn(usize) -> Color32,
) {
    const CELL: f32 = 2.0;
    let rect = view.rect;
    let cols = (rect.width() / CELL).ceil().max(1.0) as usize;
    let rows = (rect.height() / CELL).ceil().max(1.0) as usize;
    let mut cells: Vec<Option<Color32>> = vec![None; cols * rows];
    let visible = view.visible();
    let layout = scene.layout;
    for l in l0..=l1 {
        for &b in visible_in_layer(layout, l, visible.min.x, visible.max.x) {
            let bx = &layout.boxes[b];
            let a = view.to_screen([bx.x, bx.y]) - rect.min;
            let z = view.to_screen([bx.x + bx.w, bx.y + bx.h]) - rect.min;
            let row = ((a.y / CELL).max(0.0) as usize).min(rows - 1);
            let c0 = ((a.x / CELL).max(0.0) as usize).min(cols - 1);
            let c1 = ((z.x / CELL).max(0.0) as usize).clamp(c0, cols - 1);
            let colour = fill_of(b);
            for cell in &mut cells[row * cols + c0..=row * cols + c1] {
                cell.get_or_insert(colour);
            }
            stats.nodes += 1;
        }
    }
    for row in 0..rows {
        let line = &cells[row * cols..(row + 1) * cols];
        let mut c = 0;
        while c < cols {
            let Some(colour) = line[c] else {
                c += 1;
                continue;
            };
            let start = c;
            while c < cols && line[c] == Some(colour) {
                c += 1;
            }
            let min = rect.min + Vec2::new(start as f32 * CELL, row as f32 * CELL);
            let max = min + Vec2::new((c - start) as f32 * CELL, CELL);
            shapes.push(Shape::rect_filled(
                Rect::from_min_max(min, max),
                0.0,
                colour,
            ));
        }
    }
}
