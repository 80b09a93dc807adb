//! The session file (`.edgefit.json`, also autosaved): the plan, the run settings, the
//! measured points and the last sweep of one model, and how a session is restored from it.

use std::sync::Arc;

use edgefit_engine::compress::plan::Recipe;
use edgefit_engine::export::build::ExportFormat;

use super::{EvalPoint, RunSettings, Session};

/// What a `.edgefit.json` session file holds (also autosaved in the app's storage).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SessionFile {
    /// Format version of this file.
    pub version: u32,
    pub model: std::path::PathBuf,
    pub recipe: Recipe,
    pub format: ExportFormat,
    #[serde(default)]
    pub baseline: Option<EvalPoint>,
    #[serde(default)]
    pub points: Vec<EvalPoint>,
    #[serde(default)]
    pub run: RunSettings,
    /// The last sensitivity sweep; used again on restore only while it still describes the
    /// model file, the data and the settings (see `Sensitivity::describes`).
    #[serde(default)]
    pub sensitivity: Option<edgefit_engine::guide::sensitivity::Sensitivity>,
}

/// The session file format version.
pub const SESSION_VERSION: u32 = 2;

impl Session {
    /// The state worth keeping across runs.
    pub fn to_file(&self) -> SessionFile {
        SessionFile {
            version: SESSION_VERSION,
            model: self.open.loaded.path.clone(),
            recipe: self.recipe.clone(),
            format: self.format,
            baseline: self.baseline.clone(),
            points: self.points.clone(),
            run: self.run.clone(),
            sensitivity: self.sensitivity.as_deref().cloned(),
        }
    }

    /// Restores the plan and the evaluated points of `file` (whose model must be this one).
    pub fn restore(&mut self, file: &SessionFile) {
        self.set_recipe(file.recipe.clone(), true);
        self.format = file.format;
        self.set_run(file.run.clone());
        // The original measured on other data (or by a version that did not record it) is
        // measured again.
        self.baseline = file
            .baseline
            .clone()
            .filter(|b| b.data.is_some() && b.data == self.data_key);
        // Measured on data chosen in the window, which loads in the background: kept until
        // that data arrives.
        self.restored_baseline = file.baseline.clone().filter(|_| self.baseline.is_none());
        self.points = file.points.clone();
        self.sensitivity = file.sensitivity.as_ref().and_then(|sweep| {
            let data = self.data.as_ref().ok()?;
            let inputs = edgefit_engine::pipeline::resolve_inputs(
                &self.open.loaded,
                Some(data),
                &self.data_inputs,
            )
            .ok()?;
            sweep
                .describes(&self.open.loaded, data, &inputs.shape)
                .then(|| Arc::new(sweep.clone()))
        });
        self.close_comparison();
        self.refresh();
    }
}
