//! Starting the studio window from the command line's options.

use std::path::PathBuf;

use anyhow::Result;

use super::screenshot::ScreenshotTask;
use super::{Persisted, STORAGE_KEY, StudioApp, tour};

/// How the studio starts (the command line's options).
#[derive(Debug, Default)]
pub struct StartOptions {
    /// The model to open (default: the bundled sample).
    pub model: Option<PathBuf>,
    /// Save a PNG of the window (and crops of its panels) once idle, then exit. The run uses
    /// fresh state and saves none, so screenshots do not depend on earlier sessions.
    pub screenshot: Option<PathBuf>,
    /// Start from this recipe.
    pub recipe: Option<PathBuf>,
    /// Run this scripted session (see [`tour`]).
    pub tour: Option<PathBuf>,
}

/// Opens the studio window.
pub fn run(start: StartOptions) -> Result<()> {
    use anyhow::Context;
    let StartOptions {
        model,
        screenshot,
        recipe,
        tour,
    } = start;
    let initial = model.or_else(crate::samples::default_sample_model);
    let tour = match tour {
        Some(path) => tour::load_tour(&path)?,
        None => Vec::new(),
    };
    let recipe = match recipe {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            Some(
                edgefit_engine::compress::plan::Recipe::from_json(&text)
                    .with_context(|| format!("in {}", path.display()))?,
            )
        }
        None => None,
    };
    // A screenshot run keeps its window state (egui memory) in a scratch file: it neither
    // reads nor changes the user's.
    let scratch_storage = screenshot.as_ref().map(|_| {
        std::env::temp_dir().join(format!("edgefit-screenshot-{}.ron", std::process::id()))
    });
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Edgefit Studio")
            .with_inner_size([1400.0, 860.0])
            .with_drag_and_drop(true),
        persistence_path: scratch_storage.clone(),
        ..Default::default()
    };
    eframe::run_native(
        "Edgefit Studio",
        options,
        Box::new(move |cc| {
            let persisted: Persisted = match &screenshot {
                Some(_) => Persisted::default(),
                None => cc
                    .storage
                    .and_then(|s| eframe::get_value(s, STORAGE_KEY))
                    .unwrap_or_default(),
            };
            let mut app = StudioApp::new(persisted, initial);
            app.initial_recipe = recipe;
            app.tour = tour.into();
            app.screenshot = screenshot.map(ScreenshotTask::new);
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| anyhow::anyhow!("the studio window could not start: {e}"))?;
    if let Some(path) = scratch_storage {
        // Only a scratch file of this run.
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}
