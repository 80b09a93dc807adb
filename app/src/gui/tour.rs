//! A scripted session (`edgefit --tour FILE`): steps that set the plan and the export format,
//! select a layer and evaluate, one after another, exactly as a person would through the
//! window. Used for demos and to regenerate the README's screenshots with real evaluations.
//!
//! The file is a JSON array of steps:
//! `[{"format": "weights-int8", "recipe": {"version": 1, ...}, "select": "head.conv"}, ...]`.
//! `recipe` and `select` are optional; `evaluate` (default true) says whether the step is
//! measured; `"sensitivity": true` runs the sensitivity sweep (the heat map) instead;
//! `"data": {"path": "FOLDER_OR_FILE", "samples": N, "preprocess": {...}}` loads evaluation
//! data as Data... does;
//! `"export": "OUT.onnx"` exports the plan; `"diff": "OTHER.onnx"` compares the open model
//! with that file. A step with data, an export or a diff is not also evaluated.

use std::path::Path;

use anyhow::{Context, Result};
use edgefit_engine::compress::plan::Recipe;
use edgefit_engine::export::build::ExportFormat;
use serde::Deserialize;

/// One step of a tour.
#[derive(Clone, Debug, PartialEq)]
pub struct TourStep {
    pub format: Option<ExportFormat>,
    pub recipe: Option<Recipe>,
    /// A layer to select (its weights are shown).
    pub select: Option<String>,
    pub evaluate: bool,
    /// Run the sensitivity sweep.
    pub sensitivity: bool,
    /// Load this evaluation data.
    pub data: Option<super::data_panel::DataSource>,
    /// Export the plan to this file.
    pub export: Option<std::path::PathBuf>,
    /// Compare the open model with this file.
    pub diff: Option<std::path::PathBuf>,
    /// Choose this target device in the Devices panel and colour the graph by its placement.
    pub device: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepFile {
    #[serde(default)]
    format: Option<ExportFormat>,
    #[serde(default)]
    recipe: Option<serde_json::Value>,
    #[serde(default)]
    select: Option<String>,
    #[serde(default = "yes")]
    evaluate: bool,
    #[serde(default)]
    sensitivity: bool,
    #[serde(default)]
    data: Option<DataStep>,
    #[serde(default)]
    export: Option<std::path::PathBuf>,
    #[serde(default)]
    diff: Option<std::path::PathBuf>,
    #[serde(default)]
    device: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DataStep {
    path: std::path::PathBuf,
    #[serde(default)]
    samples: Option<usize>,
    /// For an image folder, as the Data form sets it (else its `preprocess.json`).
    #[serde(default)]
    preprocess: Option<edgefit_engine::measure::dataset::Preprocess>,
}

fn yes() -> bool {
    true
}

/// Reads a tour file; recipes are checked as `--recipe` files are.
pub fn load_tour(path: &Path) -> Result<Vec<TourStep>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_tour(&text).with_context(|| format!("in {}", path.display()))
}

/// Parses the JSON text of a tour.
pub fn parse_tour(text: &str) -> Result<Vec<TourStep>> {
    let steps: Vec<StepFile> =
        serde_json::from_str(text).context("a tour is a JSON array of steps")?;
    steps
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let recipe = s
                .recipe
                .map(|r| Recipe::from_json(&r.to_string()))
                .transpose()
                .with_context(|| format!("step {}", i + 1))?;
            Ok(TourStep {
                format: s.format,
                recipe,
                select: s.select,
                evaluate: s.evaluate,
                sensitivity: s.sensitivity,
                data: s.data.map(|d| super::data_panel::DataSource {
                    path: d.path,
                    preprocess: d.preprocess,
                    samples: d.samples,
                }),
                export: s.export,
                diff: s.diff,
                device: s.device,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn steps_parse_and_bad_recipes_name_their_step() {
        let steps = parse_tour(
            r#"[{"format": "qdq-int8", "recipe": {"version": 1, "defaults": {"prune_ratio": 0.5}}},
                {"select": "head.conv", "evaluate": false}]"#,
        )
        .unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].format, Some(ExportFormat::QdqInt8));
        assert_eq!(steps[0].recipe.as_ref().unwrap().defaults.prune_ratio, 0.5);
        assert!(steps[0].evaluate);
        assert_eq!(steps[1].select.as_deref(), Some("head.conv"));
        assert!(!steps[1].evaluate);
        let steps = parse_tour(
            r#"[{"data": {"path": "assets/mnist-digit-images", "samples": 20,
                          "preprocess": {"resize": [64, 64], "channels": "rgb"}}},
                {"export": "out.onnx"}, {"diff": "out.onnx"}]"#,
        )
        .unwrap();
        let data = steps[0].data.as_ref().unwrap();
        assert_eq!(data.path, std::path::Path::new("assets/mnist-digit-images"));
        assert_eq!(data.samples, Some(20));
        assert_eq!(data.preprocess.as_ref().unwrap().resize, Some([64, 64]));
        assert_eq!(
            steps[1].export.as_deref(),
            Some(std::path::Path::new("out.onnx"))
        );
        assert_eq!(
            steps[2].diff.as_deref(),
            Some(std::path::Path::new("out.onnx"))
        );
        assert!(parse_tour(r#"[{"data": {"path": "x", "sample": 3}}]"#).is_err());
        let e = parse_tour(r#"[{}, {"recipe": {"version": 7}}]"#).unwrap_err();
        assert!(format!("{e:#}").contains("step 2"), "{e:#}");
        assert!(parse_tour(r#"[{"fromat": "fp32"}]"#).is_err());
    }
}
