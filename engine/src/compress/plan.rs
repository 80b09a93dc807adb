//! The compression recipe: global defaults plus per-layer overrides, saved as versioned JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The recipe format version this engine writes and reads.
pub const RECIPE_VERSION: u32 = 1;

/// How weights are pruned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PruneMethod {
    /// Unstructured: the smallest-magnitude weights of each tensor become zero.
    #[default]
    Magnitude,
    /// Structured: whole output channels (filters) with the smallest L1 norm are removed.
    ChannelsL1,
    /// Structured: as `ChannelsL1`, ranked by L2 norm.
    ChannelsL2,
}

impl PruneMethod {
    /// Whether whole output channels are removed.
    pub fn is_structured(self) -> bool {
        !matches!(self, PruneMethod::Magnitude)
    }
}

/// How values are clipped before quantization.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "method")]
pub enum Clipping {
    /// The full range of the values.
    #[default]
    MinMax,
    /// Clip at this percentile of |values| (e.g. 99.99).
    Percentile { percentile: f32 },
    /// The clipping range that minimizes the mean squared quantization error of the weights.
    Mse,
    /// Per clipping group, the range that minimizes the layer's output error on the
    /// calibration data, `Σ (X (w - q(w)))²` (Conv/Gemm/MatMul; others, and runs without
    /// calibration data, fall back to [`Clipping::Mse`]).
    OutputMse,
}

/// Storage precision of a layer's weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Precision {
    /// Unchanged 32-bit float.
    #[default]
    Float32,
    /// IEEE half precision.
    Float16,
    /// Integers of `bits` (2–8) bits, stored in int8 containers.
    Int { bits: u8 },
}

/// The effective settings of one layer. Fields a recipe file leaves out take the defaults:
/// no pruning, float32, and for integer precision symmetric per-channel min-max (the same as
/// the command line's and the studio's defaults).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LayerSettings {
    /// Fraction of weights (or channels) to prune, 0–0.99.
    pub prune_ratio: f32,
    pub prune_method: PruneMethod,
    pub precision: Precision,
    /// Symmetric (zero point 0) or asymmetric integer quantization.
    pub symmetric: bool,
    /// One scale per output channel instead of one per tensor.
    pub per_channel: bool,
    pub clipping: Clipping,
    /// Integer weights: round each output row's weights one at a time and spread each
    /// rounding error over the rest so the layer's output on the calibration data moves the
    /// least (GPTQ); Conv/Gemm/MatMul with calibration data, else plain rounding.
    #[serde(skip_serializing_if = "is_false")]
    pub error_compensation: bool,
    /// Leave this layer exactly as it is.
    pub exclude: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Default for LayerSettings {
    fn default() -> Self {
        Self {
            prune_ratio: 0.0,
            prune_method: PruneMethod::default(),
            precision: Precision::default(),
            symmetric: true,
            per_channel: true,
            clipping: Clipping::default(),
            error_compensation: false,
            exclude: false,
        }
    }
}

/// A per-layer override: each field set here replaces the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LayerOverride {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prune_ratio: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prune_method: Option<PruneMethod>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symmetric: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_channel: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clipping: Option<Clipping>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_compensation: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclude: Option<bool>,
}

/// How activation ranges are calibrated for full integer (QDQ) export.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "calibration")]
pub enum ActivationCalibration {
    /// The observed minimum and maximum.
    #[default]
    MinMax,
    /// The given percentile of the observed values at each end.
    Percentile { percentile: f32 },
}

/// Activations: kept float, or int8 with calibrated ranges (used by the QDQ export).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActivationSettings {
    /// Activations int8 when true: calibrated (qdq-int8) or quantized at run time
    /// (dynamic-int8); the export format sets it.
    pub int8: bool,
    pub calibration: ActivationCalibration,
    /// The range of the int8 weight codes of layers that run as integer kernels.
    pub weight_range: WeightRange,
}

/// The CPU an integer (QDQ) export is meant to run on. It decides which int8 weight range
/// the integer kernels compute exactly.
///
/// onnxruntime fuses QDQ Conv/Gemm/MatMul into u8×s8 integer kernels. On x86-64 without
/// VNNI they multiply with `VPMADDUBSW`, which adds pairs of u8·s8 products into int16 and
/// saturates: with full-range weights (|w| up to 127) a pair reaches 2·255·127 = 64,770 >
/// 32,767, and the outputs differ from the exact (and the preview's) result. With weights in
/// the 7-bit range (|w| ≤ 64, onnxruntime's `reduce_range`) a pair stays within
/// 2·255·64 = 32,640. With VNNI (`VPDPBUSD`, 32-bit sums) and on ARM64 (`SDOT`/`UDOT`, widening
/// multiplies) the full range is exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// Any CPU: weights in the 7-bit range, exact everywhere.
    #[default]
    Portable,
    /// x86-64 with AVX2 and no VNNI (e.g. AMD EPYC before Zen 4): 7-bit weights.
    #[serde(rename = "x86-64")]
    X86_64,
    /// x86-64 with AVX-VNNI or AVX512-VNNI: the full 8-bit range is exact.
    #[serde(rename = "x86-64-vnni")]
    X86_64Vnni,
    /// ARM64 (NEON dot products): the full 8-bit range is exact.
    Arm64,
}

impl Target {
    /// Every target, in CLI order.
    pub const ALL: [Target; 4] = [Self::Portable, Self::X86_64, Self::X86_64Vnni, Self::Arm64];

    /// The CLI/JSON name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Portable => "portable",
            Self::X86_64 => "x86-64",
            Self::X86_64Vnni => "x86-64-vnni",
            Self::Arm64 => "arm64",
        }
    }

    /// A short description for reports and the studio.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Portable => "any CPU",
            Self::X86_64 => "x86-64 without VNNI",
            Self::X86_64Vnni => "x86-64 with VNNI",
            Self::Arm64 => "ARM64",
        }
    }

    /// Parses a CLI/JSON name; `host` is the CPU this program runs on.
    pub fn parse(name: &str) -> Option<Self> {
        if name == "host" {
            return Some(Self::host());
        }
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The kind of CPU this program runs on.
    pub fn host() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512vnni")
                || std::arch::is_x86_feature_detected!("avxvnni")
            {
                Self::X86_64Vnni
            } else {
                Self::X86_64
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            Self::Arm64
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            Self::Portable
        }
    }

    /// Whether integer kernels on this target compute full-range (8-bit) weights exactly.
    pub fn full_range_exact(self) -> bool {
        matches!(self, Self::X86_64Vnni | Self::Arm64)
    }
}

/// The range of the int8 weight codes of layers that run as integer kernels (QDQ export).
/// Weight-only formats dequantize to float and always use the full range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WeightRange {
    /// The widest range the target computes exactly: full on `x86-64-vnni` and `arm64`,
    /// 7-bit elsewhere.
    #[default]
    Auto,
    /// 7-bit codes (`reduce_range`): exact on every CPU, about 6 dB less weight SQNR.
    Reduced,
    /// Full 8-bit codes: only for targets where it is exact.
    Full,
}

impl WeightRange {
    /// The CLI/JSON name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Reduced => "reduced",
            Self::Full => "full",
        }
    }

    /// Parses a CLI/JSON name.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Auto, Self::Reduced, Self::Full]
            .into_iter()
            .find(|r| r.name() == name)
    }
}

/// The largest number of bits the weight codes of integer-kernel layers may use so that
/// every CPU's kernels compute them exactly (see [`Target`]).
pub const REDUCED_RANGE_BITS: u8 = 7;

/// A compression recipe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub version: u32,
    #[serde(default)]
    pub defaults: LayerSettings,
    /// Overrides by layer name.
    #[serde(default)]
    pub layers: BTreeMap<String, LayerOverride>,
    #[serde(default)]
    pub activations: ActivationSettings,
    /// When to re-estimate BatchNormalization statistics on calibration data after
    /// compression, layer by layer (no training).
    #[serde(default)]
    pub recalibrate_batchnorm: BatchNormRecalibration,
    /// For full-integer (QDQ) export: fold BatchNormalization into the layer before it first,
    /// as onnxruntime's pre-processing does (better int8 accuracy, no float batch norm between
    /// integer layers).
    #[serde(default = "yes")]
    pub fold_batchnorm: bool,
    /// Data-aware re-solving of the kept weights of pruned layers (off by default).
    #[serde(default)]
    pub reconstruct: Reconstruction,
    /// The CPU the integer (QDQ) export is meant for; it decides the weight range.
    #[serde(default)]
    pub target: Target,
    /// The floor the compressed model's outputs must stay above (else the export is marked
    /// failed and the CLI exits with status 4).
    #[serde(default)]
    pub quality: QualityFloor,
}

/// The floor a compressed model's outputs must stay above.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QualityFloor {
    /// Lowest acceptable output SQNR against the original, in dB, over every float output.
    pub min_output_sqnr_db: f64,
    /// For an output that is class scores (the data is labelled): a top-1 agreement with the
    /// original at least this high passes it even below the SQNR floor (classifier logits
    /// tolerate noise that leaves the decision unchanged).
    pub min_top1_agreement: f64,
}

impl Default for QualityFloor {
    fn default() -> Self {
        Self {
            min_output_sqnr_db: 20.0,
            min_top1_agreement: 0.97,
        }
    }
}

/// Layer-wise weight reconstruction after unstructured pruning (OBC / SparseGPT / AdaPrune
/// style, no training): for each pruned Conv/Gemm/MatMul layer, in graph order, the kept
/// weights of every output row are re-solved by damped least squares so that the layer,
/// fed its inputs from the already-reconstructed model, reproduces the original model's
/// output of that layer on the calibration data. The pruning mask is kept: sparsity is
/// unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Reconstruction {
    pub enabled: bool,
    /// Which weights are pruned before re-solving.
    pub mask: PruneMask,
    /// Dampening added to the Gram matrix's diagonal, as a fraction of its mean diagonal.
    pub dampening: f32,
}

impl Default for Reconstruction {
    fn default() -> Self {
        Self {
            enabled: false,
            mask: PruneMask::Obs,
            dampening: 0.01,
        }
    }
}

/// How the reconstruction pass chooses the weights to prune (per tensor, the recipe's ratio).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PruneMask {
    /// The smallest |w|, as `magnitude` pruning does.
    Magnitude,
    /// The smallest |w|·‖x‖ (Wanda): weights scaled by the calibration RMS of their input.
    Activation,
    /// Optimal Brain Surgeon saliency: per output row, weights removed greedily by least
    /// added output error `w²/[H⁻¹]ⱼⱼ` (the rest re-solved after each), and the layer's
    /// removals shared among its rows by least added relative error (as OBC). Rows of more
    /// than 256 inputs use `activation` (OBS costs O(K³) per row). The default: on the
    /// sample CNN at 50% it keeps 97.4% top-1 (int8) where `magnitude` keeps 96.4%.
    #[default]
    Obs,
}

fn yes() -> bool {
    true
}

/// When BatchNormalization statistics are re-estimated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchNormRecalibration {
    /// When some layer is pruned: pruning shifts activation statistics a lot (on the sample
    /// CNN, 30% magnitude pruning: 47.6% → 97.3% top-1), while after quantization alone a few
    /// hundred samples estimate them worse than training did.
    #[default]
    WhenPruned,
    Always,
    Never,
}

impl BatchNormRecalibration {
    /// Whether statistics are re-estimated for a compression that does (or does not) prune.
    pub fn applies(self, prunes: bool) -> bool {
        match self {
            Self::WhenPruned => prunes,
            Self::Always => true,
            Self::Never => false,
        }
    }
}

impl Default for Recipe {
    fn default() -> Self {
        Self {
            version: RECIPE_VERSION,
            defaults: LayerSettings::default(),
            layers: BTreeMap::new(),
            activations: ActivationSettings::default(),
            recalibrate_batchnorm: BatchNormRecalibration::WhenPruned,
            fold_batchnorm: true,
            reconstruct: Reconstruction::default(),
            target: Target::default(),
            quality: QualityFloor::default(),
        }
    }
}

impl LayerOverride {
    fn apply(&self, base: LayerSettings) -> LayerSettings {
        LayerSettings {
            prune_ratio: self.prune_ratio.unwrap_or(base.prune_ratio),
            prune_method: self.prune_method.unwrap_or(base.prune_method),
            precision: self.precision.unwrap_or(base.precision),
            symmetric: self.symmetric.unwrap_or(base.symmetric),
            per_channel: self.per_channel.unwrap_or(base.per_channel),
            clipping: self.clipping.unwrap_or(base.clipping),
            error_compensation: self.error_compensation.unwrap_or(base.error_compensation),
            exclude: self.exclude.unwrap_or(base.exclude),
        }
    }
}

impl Recipe {
    /// The effective settings of `layer`.
    pub fn settings_for(&self, layer: &str) -> LayerSettings {
        match self.layers.get(layer) {
            Some(o) => o.apply(self.defaults),
            None => self.defaults,
        }
    }

    /// The bits that the weight codes of integer-kernel layers (Conv, ConvTranspose, Gemm,
    /// MatMul with int8 activations) are limited to, when the target needs it: `Some(7)`
    /// for a QDQ recipe whose weight range resolves to 7 bits, else `None`.
    pub fn integer_kernel_bits_cap(&self) -> Option<u8> {
        if !self.activations.int8 {
            return None;
        }
        match self.activations.weight_range {
            WeightRange::Reduced => Some(REDUCED_RANGE_BITS),
            WeightRange::Full => None,
            WeightRange::Auto => (!self.target.full_range_exact()).then_some(REDUCED_RANGE_BITS),
        }
    }

    /// The recipe with int8 activations on or off: the export format decides it (QDQ and
    /// dynamic int8 exports quantize activations, the other formats do not), whatever the
    /// file said.
    pub fn with_int8_activations(mut self, int8: bool) -> Self {
        self.activations.int8 = int8;
        self
    }

    /// Reads a recipe from JSON, rejecting unknown fields and other versions.
    pub fn from_json(text: &str) -> Result<Self> {
        let recipe: Recipe = serde_json::from_str(text).map_err(|e| Error::Recipe {
            reason: format!("not a valid recipe: {e}"),
        })?;
        if recipe.version != RECIPE_VERSION {
            return Err(Error::Recipe {
                reason: format!(
                    "version {} is not supported (this edgefit reads version {RECIPE_VERSION})",
                    recipe.version
                ),
            });
        }
        Ok(recipe)
    }

    /// The recipe as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks every value, and that every overridden layer exists in `layer_names`.
    pub fn validate<'a>(&self, layer_names: impl IntoIterator<Item = &'a str>) -> Result<()> {
        let names: std::collections::BTreeSet<&str> = layer_names.into_iter().collect();
        check_settings("defaults", &self.defaults)?;
        for (layer, o) in &self.layers {
            if !names.contains(layer.as_str()) {
                let known: Vec<&str> = names.iter().take(12).copied().collect();
                return Err(Error::Recipe {
                    reason: format!(
                        "it names layer `{layer}`, which the model does not have (layers: {}{})",
                        known.join(", "),
                        if names.len() > known.len() {
                            ", …"
                        } else {
                            ""
                        }
                    ),
                });
            }
            check_settings(layer, &o.apply(self.defaults))?;
        }
        if let ActivationCalibration::Percentile { percentile } = self.activations.calibration
            && !(50.0..=100.0).contains(&percentile)
        {
            return Err(Error::Recipe {
                reason: format!("activation percentile {percentile} is outside 50–100"),
            });
        }
        if self.activations.int8
            && self.activations.weight_range == WeightRange::Full
            && !self.target.full_range_exact()
        {
            return Err(Error::Recipe {
                reason: format!(
                    "full-range int8 weights are not computed exactly on target `{}` ({}): \
                     onnxruntime's u8×s8 kernels on x86-64 without VNNI saturate int16 pair \
                     sums, so the file would not compute what the preview shows; use weight \
                     range `auto`/`reduced`, or target `x86-64-vnni` or `arm64`",
                    self.target.name(),
                    self.target.describe()
                ),
            });
        }
        let q = self.quality;
        let sqnr_ok = (-100.0..=200.0).contains(&q.min_output_sqnr_db);
        if !sqnr_ok || !(0.0..=1.0).contains(&q.min_top1_agreement) {
            return Err(Error::Recipe {
                reason: format!(
                    "quality floor {} dB / {} agreement is outside -100–200 dB / 0–1",
                    q.min_output_sqnr_db, q.min_top1_agreement
                ),
            });
        }
        let damp = self.reconstruct.dampening;
        if !(damp.is_finite() && (0.0..=10.0).contains(&damp)) {
            return Err(Error::Recipe {
                reason: format!("reconstruction dampening {damp} is outside 0–10"),
            });
        }
        Ok(())
    }
}

fn check_settings(what: &str, s: &LayerSettings) -> Result<()> {
    let bad = |reason: String| {
        Err(Error::Recipe {
            reason: format!("{what}: {reason}"),
        })
    };
    if !(0.0..=0.99).contains(&s.prune_ratio) {
        return bad(format!("prune ratio {} is outside 0–0.99", s.prune_ratio));
    }
    if let Precision::Int { bits } = s.precision
        && !(2..=8).contains(&bits)
    {
        return bad(format!("{bits} bits is outside 2–8"));
    }
    if let Clipping::Percentile { percentile } = s.clipping
        && !(50.0..=100.0).contains(&percentile)
    {
        return bad(format!(
            "clipping percentile {percentile} is outside 50–100"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
