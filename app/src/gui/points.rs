//! Evaluated configurations: what was measured (fidelity that fits the model's outputs,
//! accuracy only with labels, size, latency) and what it was measured on, so that a plan
//! already measured is not measured again.

use edgefit_engine::compress::plan::{Precision, Recipe};
use edgefit_engine::export::build::ExportFormat;
use edgefit_engine::measure::dataset::Dataset;
use edgefit_engine::measure::eval::{json_db, json_db_read, json_float, json_float_read};
use edgefit_engine::measure::runtime::RuntimeKind;
use edgefit_engine::pipeline::{InputSetting, OptimizeReport};

/// What a measurement ran on: the samples (by content, not by name) and the input settings.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DataKey {
    /// Where the samples came from, for people (`generated inputs …`, a file).
    pub description: String,
    pub samples: usize,
    /// [`Dataset::fingerprint`] of the samples and labels.
    pub fingerprint: u64,
    /// Generated inputs rather than real data: their numbers say so wherever they appear.
    pub generated: bool,
    pub labelled: bool,
    /// Concrete shapes and held values of the model's inputs.
    pub inputs: Vec<InputSetting>,
}

impl DataKey {
    /// The key of `data` run with `inputs`.
    pub fn of(data: &Dataset, inputs: &[InputSetting]) -> Self {
        Self {
            description: data.description.clone(),
            samples: data.len(),
            fingerprint: data.fingerprint(),
            generated: data.generated,
            labelled: data.labels.is_some(),
            inputs: inputs.to_vec(),
        }
    }
}

/// How closely a configuration's outputs follow the original's, over every float output.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PointFidelity {
    /// The lowest output SQNR over the float outputs: `None` when every output is identical,
    /// −∞ when an output holds NaN or Inf where the original's does not (broken).
    #[serde(serialize_with = "json_db", deserialize_with = "json_db_read")]
    pub output_sqnr_db: Option<f64>,
    /// The output with that SQNR, when the model has several.
    pub worst_output: Option<String>,
    /// The lowest mean cosine similarity over the float outputs (NaN when broken).
    #[serde(serialize_with = "json_float", deserialize_with = "json_float_read")]
    pub cosine: f64,
    /// The largest absolute difference of any output value.
    #[serde(serialize_with = "json_float", deserialize_with = "json_float_read")]
    pub max_abs_err: f64,
    /// Top-1 agreement with the original, only when the evaluated output is class scores
    /// (`[N, C]`, or indexed by labels): elsewhere top-1 means nothing.
    pub agreement: Option<f64>,
}

impl PointFidelity {
    /// The fidelity in `report`, `None` when its outputs were not measured.
    pub fn of(report: &OptimizeReport) -> Option<Self> {
        let float: Vec<_> = report.outputs.iter().filter(|o| o.float).collect();
        let judged = if float.is_empty() {
            report.outputs.iter().collect()
        } else {
            float
        };
        let worst = judged.iter().min_by(|a, b| {
            a.fidelity
                .sqnr_or_inf()
                .total_cmp(&b.fidelity.sqnr_or_inf())
        })?;
        let cosine = judged
            .iter()
            .map(|o| o.fidelity.cosine)
            .fold(1.0f64, |low, c| if c.is_nan() { c } else { low.min(c) });
        let max_abs_err = judged
            .iter()
            .map(|o| o.fidelity.max_abs_err)
            .fold(0.0f64, |high, e| if e.is_nan() { e } else { high.max(e) });
        let agreement = report
            .outputs
            .first()
            .filter(|o| o.class_scores)
            .map(|o| o.fidelity.agreement);
        Some(Self {
            output_sqnr_db: worst.fidelity.sqnr_db,
            worst_output: (report.outputs.len() > 1).then(|| worst.name.clone()),
            cosine,
            max_abs_err,
            agreement,
        })
    }

    /// Whether the outputs hold NaN or Inf where the original's do not.
    pub fn broken(&self) -> bool {
        self.output_sqnr_db
            .is_some_and(|db| db == f64::NEG_INFINITY)
    }

    /// `27.4 dB`, `identical` or `broken (NaN/Inf)`.
    pub fn sqnr_text(&self) -> String {
        sqnr_text(self.output_sqnr_db)
    }
}

/// An output SQNR for people: `27.4 dB`, `identical` (infinite), `broken (NaN/Inf)` (the
/// window's font has no `∞`).
pub fn sqnr_text(db: Option<f64>) -> String {
    match db {
        None => "identical".to_owned(),
        Some(v) if v.is_finite() => format!("{v:.1} dB"),
        Some(_) => "broken (NaN/Inf)".to_owned(),
    }
}

/// One measured configuration, shown on the trade-off chart.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalPoint {
    pub recipe: Recipe,
    pub format: ExportFormat,
    /// Top-1 accuracy on the labels; `None` without labels. Session files of version 1
    /// wrote top-1 agreement here for unlabelled data (their points have no `fidelity`).
    pub accuracy: Option<f64>,
    /// The outputs against the original's; `None` for points of version-1 session files.
    #[serde(default)]
    pub fidelity: Option<PointFidelity>,
    pub size_bytes: u64,
    pub latency_ms: Option<f64>,
    pub verified: bool,
    /// The runtime that measured it.
    #[serde(default)]
    pub runtime: RuntimeKind,
    /// What it was measured on; `None` for points of version-1 session files.
    #[serde(default)]
    pub data: Option<DataKey>,
    /// The edgefit version that measured it (`None`: a version-1 session file).
    #[serde(default)]
    pub edgefit_version: Option<String>,
}

impl EvalPoint {
    /// The compressed configuration `report` measured on `data`.
    pub fn compressed(report: &OptimizeReport, data: DataKey) -> Self {
        Self {
            recipe: report.recipe.clone(),
            format: report.format,
            accuracy: report.compressed.accuracy.as_ref().map(|a| a.top1),
            fidelity: PointFidelity::of(report),
            size_bytes: report.compressed.size_bytes,
            latency_ms: report.compressed.latency_ms.as_ref().map(|l| l.median),
            verified: report.verification.passed,
            runtime: report.runtime,
            data: Some(data),
            edgefit_version: Some(report.edgefit_version.to_owned()),
        }
    }

    /// The original model as `report` measured it: identical to itself.
    pub fn original(report: &OptimizeReport, data: DataKey) -> Self {
        Self {
            recipe: Recipe::default(),
            format: ExportFormat::Fp32,
            accuracy: report.original.accuracy.as_ref().map(|a| a.top1),
            fidelity: Some(PointFidelity {
                output_sqnr_db: None,
                worst_output: None,
                cosine: 1.0,
                max_abs_err: 0.0,
                agreement: report
                    .outputs
                    .first()
                    .filter(|o| o.class_scores)
                    .map(|_| 1.0),
            }),
            size_bytes: report.original.size_bytes,
            latency_ms: report.original.latency_ms.as_ref().map(|l| l.median),
            verified: true,
            runtime: report.runtime,
            data: Some(data),
            edgefit_version: Some(report.edgefit_version.to_owned()),
        }
    }

    /// Whether this point measured `recipe` written as `format` in `runtime` on `data`:
    /// measuring it again would give the same figures (latency aside).
    pub fn measures(
        &self,
        recipe: &Recipe,
        format: ExportFormat,
        runtime: RuntimeKind,
        data: &DataKey,
    ) -> bool {
        self.format == format
            && self.runtime == runtime
            && self.data.as_ref() == Some(data)
            && &self.recipe == recipe
    }

    /// The settings in a few words: `int4 pc mse · prune 30% · 2 layers differ · qdq-int8`.
    pub fn settings_short(&self) -> String {
        settings_short(&self.recipe, self.format)
    }
}

/// `recipe` written as `format`, in a few words.
pub fn settings_short(recipe: &Recipe, format: ExportFormat) -> String {
    let d = &recipe.defaults;
    let mut parts = Vec::new();
    if d.exclude {
        parts.push("excluded".to_owned());
    } else {
        parts.push(match d.precision {
            Precision::Float32 => "fp32".to_owned(),
            Precision::Float16 => "fp16".to_owned(),
            Precision::Int { bits } => format!(
                "int{bits} {}{} {}",
                if d.per_channel { "pc" } else { "pt" },
                if d.symmetric { "" } else { " asym" },
                format!("{:?}", d.clipping).to_lowercase()
            ),
        });
        if d.prune_ratio > 0.0 {
            parts.push(format!("prune {:.0}%", d.prune_ratio * 100.0));
        }
    }
    match recipe.layers.len() {
        0 => {}
        1 => parts.push("1 layer differs".to_owned()),
        n => parts.push(format!("{n} layers differ")),
    }
    parts.push(format.name().to_owned());
    parts.join(" · ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_version_one_point_reads_without_fidelity_or_data() {
        // The shape session files of version 1 wrote (accuracy a bare number).
        let v1 = serde_json::json!({
            "recipe": serde_json::to_value(Recipe::default()).unwrap(),
            "format": "fp32",
            "accuracy": 0.981,
            "size_bytes": 87_000,
            "latency_ms": 0.21,
            "verified": true,
            "runtime": "tract",
        });
        let point: EvalPoint = serde_json::from_value(v1).unwrap();
        assert_eq!(point.accuracy, Some(0.981));
        assert!(point.fidelity.is_none() && point.data.is_none());
        assert!(point.edgefit_version.is_none());
    }

    #[test]
    fn broken_and_identical_outputs_survive_the_session_file() {
        let mut point = EvalPoint {
            recipe: Recipe::default(),
            format: ExportFormat::Fp32,
            accuracy: None,
            fidelity: Some(PointFidelity {
                output_sqnr_db: Some(f64::NEG_INFINITY),
                worst_output: Some("logits".to_owned()),
                cosine: f64::NAN,
                max_abs_err: f64::INFINITY,
                agreement: None,
            }),
            size_bytes: 1,
            latency_ms: None,
            verified: true,
            runtime: RuntimeKind::Tract,
            data: None,
            edgefit_version: None,
        };
        let back: EvalPoint =
            serde_json::from_str(&serde_json::to_string(&point).unwrap()).unwrap();
        let f = back.fidelity.unwrap();
        assert!(f.broken() && f.cosine.is_nan() && f.max_abs_err == f64::INFINITY);
        assert_eq!(f.sqnr_text(), "broken (NaN/Inf)");
        point.fidelity.as_mut().unwrap().output_sqnr_db = None;
        let back: EvalPoint =
            serde_json::from_str(&serde_json::to_string(&point).unwrap()).unwrap();
        assert_eq!(back.fidelity.unwrap().output_sqnr_db, None);
    }
}
