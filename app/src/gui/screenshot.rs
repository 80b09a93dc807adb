//! `--screenshot`: capture the window once it shows a loaded model, save a PNG, close.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Result;

/// Takes one screenshot once the window shows a loaded model, saves it, and closes the window.
pub struct ScreenshotTask {
    path: PathBuf,
    ready_frames: u32,
    /// When the window last became idle (scroll animations take a moment to finish).
    ready_since: Option<std::time::Instant>,
    requested: bool,
    result: Arc<Mutex<Option<std::result::Result<(), String>>>>,
}

impl ScreenshotTask {
    /// Called every frame; `crops` are named regions of the window (points) also saved on
    /// their own as `STEM-NAME.png` beside the screenshot.
    pub fn tick(&mut self, ctx: &egui::Context, ready: bool, crops: &[(&'static str, egui::Rect)]) {
        if let Ok(mut slot) = self.result.lock()
            && let Some(outcome) = slot.take()
        {
            if let Err(e) = outcome {
                eprintln!("error: screenshot failed: {e}");
            }
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            return;
        }
        if !ready || self.requested {
            if !ready {
                self.ready_frames = 0;
                self.ready_since = None;
            }
            ctx.request_repaint();
            return;
        }
        // Let layout settle for a few (consecutive idle) frames and half a second (a panel
        // scrolled into view animates) before capturing.
        self.ready_frames += 1;
        let since = *self.ready_since.get_or_insert_with(std::time::Instant::now);
        if self.ready_frames >= 5 && since.elapsed() >= std::time::Duration::from_millis(500) {
            self.requested = true;
            let path = self.path.clone();
            let result = self.result.clone();
            let ctx_for_callback = ctx.clone();
            let crops = crops.to_vec();
            let pixels_per_point = ctx.pixels_per_point();
            ctx.request_screenshot(move |image| {
                let saved = save_png(&path, &image)
                    .and_then(|()| save_crops(&path, &image, &crops, pixels_per_point))
                    .map_err(|e| format!("{e:#}"));
                if let Ok(mut slot) = result.lock() {
                    *slot = Some(saved);
                }
                ctx_for_callback.request_repaint();
            });
        }
        ctx.request_repaint();
    }
}

/// Saves each named region of `image` as `STEM-NAME.png` next to `path`.
fn save_crops(
    path: &Path,
    image: &egui::ColorImage,
    crops: &[(&'static str, egui::Rect)],
    pixels_per_point: f32,
) -> Result<()> {
    let [w, h] = image.size;
    let window = egui::Rect::from_min_size(
        egui::Pos2::ZERO,
        egui::vec2(w as f32, h as f32) / pixels_per_point,
    );
    for (name, rect) in crops {
        // A panel inside a scroll area reaches past the window: keep what is on screen.
        let rect = rect.intersect(window);
        if rect.width() < 1.0 || rect.height() < 1.0 {
            continue;
        }
        let region = image.region(&rect, Some(pixels_per_point));
        let stem = path.with_extension("");
        let out = PathBuf::from(format!("{}-{name}.png", stem.display()));
        save_png(&out, &region)?;
    }
    Ok(())
}

fn save_png(path: &Path, image: &egui::ColorImage) -> Result<()> {
    use anyhow::Context;
    let [w, h] = image.size;
    let pixels: Vec<u8> = image.pixels.iter().flat_map(|c| c.to_array()).collect();
    let buffer = image::RgbaImage::from_raw(w as u32, h as u32, pixels)
        .context("screenshot has an unexpected size")?;
    buffer
        .save(path)
        .with_context(|| format!("saving {}", path.display()))
}

impl ScreenshotTask {
    /// A task saving to `path`.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            ready_frames: 0,
            ready_since: None,
            requested: false,
            result: Arc::new(Mutex::new(None)),
        }
    }
}
