//! Painting the Graph panel: op families and overlay colours, the spatial index that keeps a
//! frame to what is visible, and the level of detail that simplifies a zoomed-out view.

use edgefit_engine::analyse::layout::{BoxKind, GraphLayout};
use edgefit_engine::compress::compressor::Compression;
use edgefit_engine::compress::plan::Precision;
use edgefit_engine::guide::sensitivity::Sensitivity;
use egui::{Align2, Color32, FontId, Pos2, Rect, Shape, Stroke, Vec2};

/// Operator families the nodes are coloured by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Conv,
    MatMul,
    Normalization,
    Activation,
    Pooling,
    Shape,
    Elementwise,
    Other,
    Input,
    Output,
}

impl Family {
    /// Every family, in legend order.
    pub const ALL: [Family; 10] = [
        Family::Conv,
        Family::MatMul,
        Family::Normalization,
        Family::Activation,
        Family::Pooling,
        Family::Shape,
        Family::Elementwise,
        Family::Other,
        Family::Input,
        Family::Output,
    ];

    /// The family of an ONNX op type.
    pub fn of_op(op: &str) -> Family {
        match op {
            "Conv" | "ConvTranspose" | "ConvInteger" | "QLinearConv" | "DeformConv" => Family::Conv,
            "MatMul" | "Gemm" | "MatMulInteger" | "QLinearMatMul" | "Einsum" | "Attention"
            | "MultiHeadAttention" => Family::MatMul,
            "BatchNormalization"
            | "LayerNormalization"
            | "InstanceNormalization"
            | "GroupNormalization"
            | "LpNormalization"
            | "RMSNormalization"
            | "SimplifiedLayerNormalization"
            | "SkipLayerNormalization"
            | "LRN"
            | "MeanVarianceNormalization" => Family::Normalization,
            "Relu" | "LeakyRelu" | "PRelu" | "Sigmoid" | "Tanh" | "Softmax" | "LogSoftmax"
            | "Gelu" | "FastGelu" | "Elu" | "Selu" | "Celu" | "HardSigmoid" | "HardSwish"
            | "Softplus" | "Softsign" | "Clip" | "Mish" | "ThresholdedRelu" | "Hardmax" => {
                Family::Activation
            }
            "MaxPool" | "AveragePool" | "GlobalAveragePool" | "GlobalMaxPool" | "LpPool"
            | "GlobalLpPool" | "MaxUnpool" | "MaxRoiPool" | "RoiAlign" => Family::Pooling,
            "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" | "Transpose" | "Concat" | "Split"
            | "Slice" | "Gather" | "GatherElements" | "GatherND" | "Shape" | "Size" | "Expand"
            | "Tile" | "Pad" | "Resize" | "Upsample" | "DepthToSpace" | "SpaceToDepth"
            | "Identity" | "Cast" | "CastLike" | "ConstantOfShape" | "ScatterND"
            | "ScatterElements" => Family::Shape,
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Sqrt" | "Exp" | "Log" | "Neg" | "Abs"
            | "Max" | "Min" | "Sum" | "Mean" | "Reciprocal" | "Floor" | "Ceil" | "Round"
            | "Equal" | "Less" | "LessOrEqual" | "Greater" | "GreaterOrEqual" | "Where" | "Not"
            | "And" | "Or" | "Xor" | "Erf" | "Sin" | "Cos" | "Sign" | "Mod" | "BitShift"
            | "IsNaN" | "IsInf" => Family::Elementwise,
            _ => Family::Other,
        }
    }

    /// Legend text.
    pub fn label(self) -> &'static str {
        match self {
            Family::Conv => "conv",
            Family::MatMul => "matmul / gemm",
            Family::Normalization => "normalization",
            Family::Activation => "activation",
            Family::Pooling => "pooling",
            Family::Shape => "shape / reshape",
            Family::Elementwise => "elementwise",
            Family::Other => "other",
            Family::Input => "graph input",
            Family::Output => "graph output",
        }
    }

    /// Fill colour (white text reads on every one).
    pub fn colour(self) -> Color32 {
        match self {
            Family::Conv => Color32::from_rgb(51, 85, 136),
            Family::MatMul => Color32::from_rgb(89, 62, 140),
            Family::Normalization => Color32::from_rgb(34, 110, 100),
            Family::Activation => Color32::from_rgb(140, 48, 40),
            Family::Pooling => Color32::from_rgb(50, 110, 50),
            Family::Shape => Color32::from_rgb(120, 90, 60),
            Family::Elementwise => Color32::from_rgb(85, 85, 85),
            Family::Other => Color32::from_rgb(110, 110, 120),
            Family::Input => Color32::from_rgb(60, 95, 120),
            Family::Output => Color32::from_rgb(120, 65, 95),
        }
    }
}

/// What the node colours show.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overlay {
    #[default]
    OpFamily,
    /// Bits of each layer's weights in the current plan.
    Bits,
    /// Weight SQNR of each layer in the current plan.
    Sqnr,
    /// The model's output SQNR with only that layer at int8 (the last sensitivity sweep).
    Sensitivity,
    /// What the last diff found for each node of this model: changed, removed, or only its
    /// weights changed.
    Diff,
}

impl Overlay {
    /// Combo box text.
    pub fn label(self) -> &'static str {
        match self {
            Overlay::OpFamily => "Op family",
            Overlay::Bits => "Bits (plan)",
            Overlay::Sqnr => "Weight SQNR (plan)",
            Overlay::Sensitivity => "Sensitivity (output SQNR, layer alone at int8)",
            Overlay::Diff => "Diff (against the file compared)",
        }
    }
}

const NO_WEIGHT: Color32 = Color32::from_rgb(75, 75, 80);
const BITS_LEGEND: [(&str, Color32); 7] = [
    ("32 (float)", Color32::from_rgb(70, 100, 150)),
    ("16", Color32::from_rgb(40, 140, 190)),
    ("8", Color32::from_rgb(40, 150, 80)),
    ("5-7", Color32::from_rgb(170, 150, 30)),
    ("4", Color32::from_rgb(210, 120, 30)),
    ("2-3", Color32::from_rgb(190, 50, 40)),
    ("no weight", NO_WEIGHT),
];
const SQNR_LEGEND: [(&str, Color32); 7] = [
    ("lossless", Color32::from_rgb(40, 100, 170)),
    (">= 40 dB", Color32::from_rgb(40, 150, 80)),
    ("30-40 dB", Color32::from_rgb(120, 160, 40)),
    ("20-30 dB", Color32::from_rgb(190, 160, 30)),
    ("10-20 dB", Color32::from_rgb(210, 110, 30)),
    ("< 10 dB", Color32::from_rgb(190, 40, 40)),
    ("no weight", NO_WEIGHT),
];

/// What the last diff says about one node of the open model, for [`Overlay::Diff`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiffMark {
    Same,
    /// The node matched and is the same; a weight it reads changed (quantized, pruned).
    WeightsChanged,
    /// Matched with a different op, attributes, wiring or output shape.
    Changed,
    /// Not in the other model (folded, dropped).
    Removed,
}

const DIFF_LEGEND: [(&str, Color32); 4] = [
    ("same", NO_WEIGHT),
    ("weights changed", Color32::from_rgb(40, 120, 200)),
    ("changed", Color32::from_rgb(210, 140, 30)),
    ("removed", Color32::from_rgb(190, 40, 40)),
];

impl DiffMark {
    fn colour(self) -> Color32 {
        let index = match self {
            DiffMark::Same => 0,
            DiffMark::WeightsChanged => 1,
            DiffMark::Changed => 2,
            DiffMark::Removed => 3,
        };
        DIFF_LEGEND[index].1
    }
}

/// Legend entries of an overlay.
pub fn legend(overlay: Overlay) -> Vec<(&'static str, Color32)> {
    match overlay {
        Overlay::OpFamily => Family::ALL
            .iter()
            .map(|f| (f.label(), f.colour()))
            .collect(),
        Overlay::Bits => BITS_LEGEND.to_vec(),
        Overlay::Sqnr | Overlay::Sensitivity => SQNR_LEGEND.to_vec(),
        Overlay::Diff => DIFF_LEGEND.to_vec(),
    }
}

/// Fill colour of a box under `overlay`; `layer` is its index into the compressible layers
/// (the sweep's layers are in the same order).
pub fn fill(
    overlay: Overlay,
    family: Family,
    layer: Option<usize>,
    compression: Option<&Compression>,
    sensitivity: Option<&Sensitivity>,
    diff: Option<DiffMark>,
) -> Color32 {
    if overlay == Overlay::OpFamily || matches!(family, Family::Input | Family::Output) {
        return family.colour();
    }
    if overlay == Overlay::Diff {
        return diff.map_or(NO_WEIGHT, DiffMark::colour);
    }
    if overlay == Overlay::Sensitivity {
        let cell = layer
            .and_then(|l| sensitivity?.layers.get(l))
            .and_then(|l| l.cells.first()?.as_ref());
        return cell.map_or(NO_WEIGHT, |c| SQNR_LEGEND[sqnr_bin(c.output_sqnr_db)].1);
    }
    let Some(report) = layer
        .and_then(|l| compression?.layers.get(l))
        .map(|r| &r.report)
    else {
        return NO_WEIGHT;
    };
    let index = match overlay {
        Overlay::Bits => match report.settings.precision {
            _ if report.settings.exclude => 0,
            Precision::Float32 => 0,
            Precision::Float16 => 1,
            Precision::Int { bits } if bits >= 8 => 2,
            Precision::Int { bits } if bits >= 5 => 3,
            Precision::Int { bits: 4 } => 4,
            Precision::Int { .. } => 5,
        },
        _ => sqnr_bin(report.sqnr_db),
    };
    let table = if overlay == Overlay::Bits {
        &BITS_LEGEND
    } else {
        &SQNR_LEGEND
    };
    table[index].1
}

/// The entry of [`SQNR_LEGEND`] for an SQNR (`None`: lossless).
fn sqnr_bin(db: Option<f64>) -> usize {
    match db {
        None => 0,
        Some(db) if db >= 40.0 => 1,
        Some(db) if db >= 30.0 => 2,
        Some(db) if db >= 20.0 => 3,
        Some(db) if db >= 10.0 => 4,
        Some(_) => 5,
    }
}

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
    pub labels: &'a [String],
    pub families: &'a [Family],
    pub layer_of_box: &'a [Option<usize>],
    pub compression: Option<&'a Compression>,
    /// The last sensitivity sweep, for [`Overlay::Sensitivity`].
    pub sensitivity: Option<&'a Sensitivity>,
    /// The last diff's mark of each node of the model (by `GraphView` index), for
    /// [`Overlay::Diff`].
    pub diff: Option<&'a [DiffMark]>,
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
        let mark = match layout.boxes[b].kind {
            BoxKind::Node(n) => scene.diff.and_then(|marks| marks.get(n).copied()),
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
                        BoxKind::Node(_) => 3.0 * view.zoom.min(1.5),
                        _ => rect.height() / 2.0,
                    }
                } else {
                    0.0
                };
                shapes.push(Shape::rect_filled(rect, rounding, fill_of(b)));
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
                if text && let Some(label) = scene.labels.get(b) {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use edgefit_engine::compress::compressor::Compressor;
    use edgefit_engine::compress::plan::Recipe;
    use edgefit_engine::{AnalysisOptions, CancelToken, NoProgress, analyse, load_model};

    #[test]
    fn the_sensitivity_overlay_colours_each_layer_by_its_int8_cell() {
        use edgefit_engine::guide::sensitivity::{Cell, LayerSensitivity};
        let cell = |db: Option<f64>| Cell {
            output_sqnr_db: db,
            noise_ratio: vec![0.0],
            top1_agreement: 1.0,
            accuracy: None,
            weight_sqnr_db: None,
            bytes: 1,
            macs: None,
        };
        let row = |name: &str, cells: Vec<Option<Cell>>| LayerSensitivity {
            name: name.to_owned(),
            op: "Conv".to_owned(),
            weight: format!("{name}.w"),
            parameters: 1,
            bytes: 4,
            macs: None,
            cells,
        };
        let json = serde_json::json!({
            "schema": "edgefit.sensitivity/1", "model": "m.onnx",
            "model_file": {"size_bytes": 1, "modified_unix_s": 1}, "data": "d", "samples": 1,
            "generated_data": true, "runtime": "tract", "input_shape": [1],
            "base": {"version": 1}, "candidates": [], "labels": ["int8"], "outputs": ["y"],
            "original_accuracy": null, "layers": [], "skipped": [], "model_runs": 0,
            "model_builds": 0, "wall_time_s": 0.0, "method": ""
        });
        let mut sweep: Sensitivity = serde_json::from_value(json).unwrap();
        sweep.layers = vec![
            row("a", vec![Some(cell(Some(45.0)))]),
            row("b", vec![Some(cell(Some(12.0)))]),
            row("c", vec![None]),
        ];
        let at = |l: usize| {
            fill(
                Overlay::Sensitivity,
                Family::Conv,
                Some(l),
                None,
                Some(&sweep),
                None,
            )
        };
        let entry = |name: &str| SQNR_LEGEND.iter().find(|(n, _)| *n == name).unwrap().1;
        assert_eq!(at(0), entry(">= 40 dB"));
        assert_eq!(at(1), entry("10-20 dB"));
        assert_eq!(at(2), NO_WEIGHT, "a candidate that does not apply");
        assert_eq!(at(3), NO_WEIGHT, "no such layer");
        // Without a sweep nothing is coloured as measured.
        assert_eq!(
            fill(
                Overlay::Sensitivity,
                Family::Conv,
                Some(0),
                None,
                None,
                None
            ),
            NO_WEIGHT
        );
    }

    #[test]
    fn families_of_common_ops() {
        assert_eq!(Family::of_op("Conv"), Family::Conv);
        assert_eq!(Family::of_op("Gemm"), Family::MatMul);
        assert_eq!(Family::of_op("BatchNormalization"), Family::Normalization);
        assert_eq!(Family::of_op("Relu"), Family::Activation);
        assert_eq!(Family::of_op("GlobalAveragePool"), Family::Pooling);
        assert_eq!(Family::of_op("Reshape"), Family::Shape);
        assert_eq!(Family::of_op("Add"), Family::Elementwise);
        assert_eq!(Family::of_op("MyCustomOp"), Family::Other);
    }

    #[test]
    fn overlays_colour_layers_by_the_plan() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../sample-models/mnist-cnn/model.onnx");
        let (sink, cancel) = (NoProgress, CancelToken::new());
        let model = load_model(&path, &sink, &cancel).unwrap();
        let analysis = analyse(&model, &AnalysisOptions::default(), &sink, &cancel).unwrap();
        let mut compressor = Compressor::new(&model, &analysis);
        let original = compressor.apply(&Recipe::default(), &cancel).unwrap();
        let mut recipe = Recipe::default();
        recipe.defaults.precision = Precision::Int { bits: 4 };
        let int4 = compressor.apply(&recipe, &cancel).unwrap();
        let colour = |o, c: &Compression| fill(o, Family::Conv, Some(0), Some(c), None, None);
        let entry = |table: &[(&str, Color32)], name: &str| {
            table.iter().find(|(n, _)| *n == name).unwrap().1
        };
        assert_eq!(
            colour(Overlay::Bits, &original),
            entry(&BITS_LEGEND, "32 (float)")
        );
        assert_eq!(colour(Overlay::Bits, &int4), entry(&BITS_LEGEND, "4"));
        assert_eq!(
            colour(Overlay::Sqnr, &original),
            entry(&SQNR_LEGEND, "lossless")
        );
        assert_ne!(
            colour(Overlay::Sqnr, &int4),
            entry(&SQNR_LEGEND, "lossless")
        );
        // Not a layer: "no weight"; the op-family overlay ignores the plan.
        assert_eq!(
            fill(
                Overlay::Bits,
                Family::Activation,
                None,
                Some(&int4),
                None,
                None
            ),
            NO_WEIGHT
        );
        assert_eq!(colour(Overlay::OpFamily, &int4), Family::Conv.colour());
    }

    #[test]
    fn the_diff_overlay_colours_each_mark_and_leaves_unmarked_nodes_grey() {
        let at = |mark| fill(Overlay::Diff, Family::Conv, Some(0), None, None, mark);
        let entry = |name: &str| DIFF_LEGEND.iter().find(|(n, _)| *n == name).unwrap().1;
        assert_eq!(at(Some(DiffMark::Removed)), entry("removed"));
        assert_eq!(at(Some(DiffMark::Changed)), entry("changed"));
        assert_eq!(at(Some(DiffMark::WeightsChanged)), entry("weights changed"));
        assert_eq!(at(Some(DiffMark::Same)), entry("same"));
        assert_eq!(at(None), NO_WEIGHT, "no diff yet");
        // Inputs and outputs keep their own colours.
        assert_eq!(
            fill(
                Overlay::Diff,
                Family::Input,
                None,
                None,
                None,
                Some(DiffMark::Removed)
            ),
            Family::Input.colour()
        );
    }
}
