//! Colours of the Graph panel: operator families, the overlays of the plan, the sensitivity
//! sweep and the last diff, and their legends.

use edgefit_engine::compress::compressor::Compression;
use edgefit_engine::compress::plan::Precision;
use edgefit_engine::guide::sensitivity::Sensitivity;
use egui::Color32;

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
    /// A collapsed group of nodes.
    Group,
}

impl Family {
    /// Every family, in legend order.
    pub const ALL: [Family; 11] = [
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
        Family::Group,
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
            Family::Group => "group (click to open)",
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
            Family::Group => Color32::from_rgb(70, 78, 92),
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
    /// Where the chosen device runs each node under the plan: its accelerator, or the CPU
    /// (refused by the accelerator, or a device without one).
    Device,
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
            Overlay::Device => "Device placement (accelerator / CPU)",
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
    /// Its entry in the diff legend (higher is a stronger change).
    fn index(self) -> usize {
        match self {
            DiffMark::Same => 0,
            DiffMark::WeightsChanged => 1,
            DiffMark::Changed => 2,
            DiffMark::Removed => 3,
        }
    }

    fn colour(self) -> Color32 {
        DIFF_LEGEND[self.index()].1
    }
}

const DEVICE_LEGEND: [(&str, Color32); 4] = [
    ("accelerator", Color32::from_rgb(40, 150, 80)),
    ("CPU", Color32::from_rgb(70, 100, 150)),
    (
        "CPU (accelerator refuses it)",
        Color32::from_rgb(200, 60, 50),
    ),
    ("no device chosen", NO_WEIGHT),
];

/// Fill colour of a node under [`Overlay::Device`]: (placement, refused by the accelerator).
pub fn device_fill(mark: Option<(edgefit_engine::deploy::partition::Placement, bool)>) -> Color32 {
    DEVICE_LEGEND[device_rank(mark)].1
}

/// Fill colour of a group under [`Overlay::Device`]: its worst member (refused first).
pub fn device_group_fill(
    marks: &[Option<(edgefit_engine::deploy::partition::Placement, bool)>],
    members: &[usize],
) -> Color32 {
    let worst = members
        .iter()
        .filter_map(|&n| marks.get(n).copied().flatten())
        .map(|m| device_rank(Some(m)))
        .max_by_key(|&r| if r == 3 { 0 } else { r + 1 });
    DEVICE_LEGEND[worst.unwrap_or(3)].1
}

fn device_rank(mark: Option<(edgefit_engine::deploy::partition::Placement, bool)>) -> usize {
    use edgefit_engine::deploy::partition::Placement;
    match mark {
        Some((Placement::Accelerator, _)) => 0,
        Some((Placement::Cpu, false)) => 1,
        Some((Placement::Cpu, true)) => 2,
        None => 3,
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
        Overlay::Device => DEVICE_LEGEND.to_vec(),
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
    entry(overlay, layer, compression, sensitivity).map_or(NO_WEIGHT, |i| table(overlay)[i].1)
}

/// Fill colour of a collapsed group: neutral under the op-family overlay, else the worst of
/// its members (fewest bits, lowest SQNR, the strongest diff mark), so that a group hiding
/// a bad layer shows it. `layers` are the compressible layers inside, `diff` the marks of
/// its `members` nodes.
pub fn group_fill(
    overlay: Overlay,
    layers: &[usize],
    members: &[usize],
    compression: Option<&Compression>,
    sensitivity: Option<&Sensitivity>,
    diff: Option<&[DiffMark]>,
) -> Color32 {
    match overlay {
        Overlay::OpFamily => Family::Group.colour(),
        Overlay::Diff => {
            let worst = diff.and_then(|marks| {
                members
                    .iter()
                    .filter_map(|&n| marks.get(n).copied())
                    .max_by_key(|m| m.index())
            });
            worst.map_or(NO_WEIGHT, DiffMark::colour)
        }
        _ => layers
            .iter()
            .filter_map(|&l| entry(overlay, Some(l), compression, sensitivity))
            .max()
            .map_or(NO_WEIGHT, |i| table(overlay)[i].1),
    }
}

/// The legend table of the bits and SQNR overlays.
fn table(overlay: Overlay) -> &'static [(&'static str, Color32); 7] {
    if overlay == Overlay::Bits {
        &BITS_LEGEND
    } else {
        &SQNR_LEGEND
    }
}

/// The entry of [`table`] for a layer under the bits, SQNR or sensitivity overlay (higher
/// is worse); `None`: no weight or nothing measured.
fn entry(
    overlay: Overlay,
    layer: Option<usize>,
    compression: Option<&Compression>,
    sensitivity: Option<&Sensitivity>,
) -> Option<usize> {
    if overlay == Overlay::Sensitivity {
        let cell = layer
            .and_then(|l| sensitivity?.layers.get(l))
            .and_then(|l| l.cells.first()?.as_ref());
        return cell.map(|c| sqnr_bin(c.output_sqnr_db));
    }
    let report = layer
        .and_then(|l| compression?.layers.get(l))
        .map(|r| &r.report)?;
    Some(match overlay {
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
    })
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
