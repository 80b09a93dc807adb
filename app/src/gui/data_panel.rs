//! Real data from the window: a dataset folder, an `.npz`/`.npy` file or an image folder
//! (flat class sub-folders) with its preprocessing, used for evaluation and calibration and
//! remembered with the session; thumbnails of the first preprocessed samples show what the
//! model will see. Generated inputs stay the fallback, and say so.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use edgefit_engine::measure::dataset::{ChannelOrder, Dataset, Layout, Preprocess};

use super::Command;
use super::session::Session;

/// Data the person chose in the window (saved with the session's run settings).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DataSource {
    /// A dataset folder (`dataset.json`), an image folder, or an `.npz`/`.npy` file.
    pub path: PathBuf,
    /// Preprocessing of an image folder; `None`: its `preprocess.json`, else the defaults.
    pub preprocess: Option<Preprocess>,
    /// At most this many samples (a quick preview); `None`: all of them.
    pub samples: Option<usize>,
}

impl DataSource {
    /// Whether `path` is an image folder (the only source preprocessing applies to).
    pub fn is_image_folder(path: &Path) -> bool {
        path.is_dir() && !path.join("dataset.json").is_file()
    }
}

/// Data loaded from a [`DataSource`].
pub struct LoadedData {
    pub source: DataSource,
    pub data: Arc<Dataset>,
    /// The calibration split of a dataset folder, when it has one.
    pub calibration: Option<Arc<Dataset>>,
}

/// The form for a chosen path, before it is loaded (view state).
#[derive(Default)]
pub struct DataForm {
    /// The path chosen in the dialog, waiting for "Load".
    pub path: Option<PathBuf>,
    resize: String,
    scale: String,
    mean: String,
    std: String,
    channels: ChannelOrder,
    layout: Layout,
    samples: String,
    error: Option<String>,
    /// Thumbnails of the data shown (by the dataset's address), made once.
    thumbnails: Option<(usize, Vec<egui::TextureHandle>)>,
}

/// Samples previewed as thumbnails.
const THUMBNAILS: usize = 6;

impl DataForm {
    /// Opens the form for `path`, filled from its `preprocess.json` (image folders) or from
    /// the model's input shape.
    pub fn choose(&mut self, path: PathBuf, session: &Session) {
        let from_file = Preprocess::from_folder(&path).unwrap_or_default();
        let list = |v: &[f32]| {
            v.iter()
                .map(|x| format!("{x}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        // An image model's [N, C, H, W] (or [N, H, W, C]) input says what to resize to.
        let shape: Vec<i64> = session
            .open
            .loaded
            .graph
            .inputs
            .first()
            .and_then(|i| i.shape.as_ref())
            .map(|d| d.iter().map(|d| d.known().unwrap_or(0)).collect())
            .unwrap_or_default();
        let (layout, hw, channels) = match shape.as_slice() {
            [_, c @ (1 | 3), h, w] if *h > 0 && *w > 0 => (Layout::Nchw, Some((*h, *w)), *c),
            [_, h, w, c @ (1 | 3)] if *h > 0 && *w > 0 => (Layout::Nhwc, Some((*h, *w)), *c),
            _ => (from_file.layout, None, 3),
        };
        self.resize = match (from_file.resize, hw) {
            (Some([h, w]), _) => format!("{h}x{w}"),
            (None, Some((h, w))) => format!("{h}x{w}"),
            (None, None) => String::new(),
        };
        self.scale = format!("{}", from_file.scale);
        self.mean = list(&from_file.mean);
        self.std = list(&from_file.std);
        self.channels = if channels == 1 {
            ChannelOrder::Gray
        } else {
            from_file.channels
        };
        self.layout = layout;
        self.samples.clear();
        self.error = None;
        self.path = Some(path);
    }

    /// The source the form describes.
    fn source(&self, path: &Path) -> Result<DataSource, String> {
        let preprocess = if DataSource::is_image_folder(path) {
            let floats = |text: &str, what: &str| -> Result<Vec<f32>, String> {
                text.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(|t| {
                        t.parse::<f32>()
                            .map_err(|_| format!("{what}: `{t}` is not a number"))
                    })
                    .collect()
            };
            let resize = match self.resize.trim() {
                "" => None,
                text => {
                    let parts: Vec<&str> = text.split(['x', 'X', ',']).map(str::trim).collect();
                    match parts.as_slice() {
                        [h, w] => match (h.parse::<u32>(), w.parse::<u32>()) {
                            (Ok(h), Ok(w)) if h > 0 && w > 0 => Some([h, w]),
                            _ => return Err(format!("Resize: `{text}` is not HEIGHTxWIDTH")),
                        },
                        _ => return Err(format!("Resize: `{text}` is not HEIGHTxWIDTH")),
                    }
                }
            };
            let scale = match self.scale.trim() {
                "" => Preprocess::default().scale,
                t => t
                    .parse::<f32>()
                    .map_err(|_| format!("Scale: `{t}` is not a number"))?,
            };
            Some(Preprocess {
                resize,
                scale,
                mean: floats(&self.mean, "Mean")?,
                std: floats(&self.std, "Std")?,
                channels: self.channels,
                layout: self.layout,
            })
        } else {
            None
        };
        let samples = match self.samples.trim() {
            "" => None,
            t => Some(
                t.parse::<usize>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("Samples: `{t}` is not a positive count"))?,
            ),
        };
        Ok(DataSource {
            path: path.to_path_buf(),
            preprocess,
            samples,
        })
    }
}

/// The data control: what evaluations run on, Data..., the form for a chosen path, and
/// thumbnails of the first samples.
pub fn data_ui(
    ui: &mut egui::Ui,
    session: &Session,
    form: &mut DataForm,
    busy: bool,
    commands: &mut Vec<Command>,
) {
    ui.strong("Data");
    match &session.data {
        Ok(data) if data.generated => {
            ui.colored_label(
                ui.visuals().warn_fg_color,
                format!(
                    "Generated inputs: {}. Numbers measured on them say how far the plan moves \
                     the outputs, not how it does on real data.",
                    data.description
                ),
            );
        }
        Ok(data) => {
            ui.label(format!(
                "{} samples{}: {}",
                data.len(),
                if data.labels.is_some() {
                    ", labelled"
                } else {
                    ""
                },
                data.description
            ));
        }
        Err(e) => {
            ui.colored_label(
                ui.visuals().warn_fg_color,
                format!("No data to evaluate on yet: {e}"),
            );
        }
    }
    ui.horizontal(|ui| {
        if ui
            .add_enabled(!busy, egui::Button::new("Data..."))
            .on_hover_text(
                "A dataset folder (dataset.json), an image folder (one sub-folder per class), \
                 or an .npz / .npy file: used for evaluation and calibration",
            )
            .clicked()
        {
            commands.push(Command::PickData);
        }
        if session.run.data.is_some() && ui.button("Use generated inputs").clicked() {
            commands.push(Command::UseGeneratedData);
        }
    });
    if let Some(path) = form.path.clone() {
        form_ui(ui, form, &path, busy, commands);
    }
    if let Ok(data) = &session.data
        && !data.generated
    {
        thumbnails_ui(ui, form, data);
    }
}

fn form_ui(
    ui: &mut egui::Ui,
    form: &mut DataForm,
    path: &Path,
    busy: bool,
    commands: &mut Vec<Command>,
) {
    ui.group(|ui| {
        ui.label(format!("Use {}", path.display()));
        let field = |ui: &mut egui::Ui, name: &str, text: &mut String, hint: &str| {
            ui.horizontal(|ui| {
                let label = ui.label(name);
                ui.add(
                    egui::TextEdit::singleline(text)
                        .hint_text(hint)
                        .desired_width(120.0),
                )
                .labelled_by(label.id);
            });
        };
        if DataSource::is_image_folder(path) {
            ui.small("An image folder: each value is (pixel x scale - mean) / std.");
            field(ui, "Resize", &mut form.resize, "HxW, e.g. 224x224");
            field(ui, "Scale", &mut form.scale, "1/255");
            field(ui, "Mean", &mut form.mean, "0.485,0.456,0.406");
            field(ui, "Std", &mut form.std, "0.229,0.224,0.225");
            ui.horizontal(|ui| {
                egui::ComboBox::from_label("Channels")
                    .selected_text(format!("{:?}", form.channels))
                    .show_ui(ui, |ui| {
                        for c in [ChannelOrder::Rgb, ChannelOrder::Bgr, ChannelOrder::Gray] {
                            ui.selectable_value(&mut form.channels, c, format!("{c:?}"));
                        }
                    });
                egui::ComboBox::from_label("Layout")
                    .selected_text(format!("{:?}", form.layout))
                    .show_ui(ui, |ui| {
                        for l in [Layout::Nchw, Layout::Nhwc] {
                            ui.selectable_value(&mut form.layout, l, format!("{l:?}"));
                        }
                    });
            });
        }
        field(
            ui,
            "Samples",
            &mut form.samples,
            "all (fewer: a quick preview)",
        );
        ui.horizontal(|ui| {
            if ui
                .add_enabled(!busy, egui::Button::new("Load data"))
                .clicked()
            {
                match form.source(path) {
                    Ok(source) => {
                        form.error = None;
                        form.path = None;
                        commands.push(Command::LoadData(source));
                    }
                    Err(e) => form.error = Some(e),
                }
            }
            if ui.button("Cancel").clicked() {
                form.path = None;
                form.error = None;
            }
        });
        if let Some(e) = &form.error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
    });
}

/// The first samples as images, when they are images (`[C, H, W]` or `[H, W, C]` with 1 or 3
/// channels), each stretched to its own value range.
fn thumbnails_ui(ui: &mut egui::Ui, form: &mut DataForm, data: &Arc<Dataset>) {
    let identity = Arc::as_ptr(data) as usize;
    if form
        .thumbnails
        .as_ref()
        .is_none_or(|(id, _)| *id != identity)
    {
        let textures = (0..data.len().min(THUMBNAILS))
            .filter_map(|i| {
                let image = sample_image(data, i)?;
                Some(ui.ctx().load_texture(
                    format!("data_thumbnail_{identity}_{i}"),
                    image,
                    egui::TextureOptions::NEAREST,
                ))
            })
            .collect();
        form.thumbnails = Some((identity, textures));
    }
    let Some((_, textures)) = &form.thumbnails else {
        return;
    };
    if textures.is_empty() {
        return;
    }
    ui.horizontal_wrapped(|ui| {
        for (i, texture) in textures.iter().enumerate() {
            let label = data
                .labels
                .as_ref()
                .and_then(|l| l.get(i))
                .map(|&l| {
                    data.class_names
                        .as_ref()
                        .and_then(|n| n.get(usize::try_from(l).ok()?))
                        .cloned()
                        .unwrap_or_else(|| l.to_string())
                })
                .unwrap_or_default();
            ui.vertical(|ui| {
                ui.add(
                    egui::Image::new((texture.id(), egui::vec2(48.0, 48.0)))
                        .alt_text(format!("sample {}", i + 1)),
                );
                if !label.is_empty() {
                    ui.small(label);
                }
            });
        }
    });
    ui.small("The first samples as the model sees them (each stretched to its range).");
}

/// Sample `index` of `data` as an image, when its shape is one.
fn sample_image(data: &Dataset, index: usize) -> Option<egui::ColorImage> {
    let values = data.sample(index);
    let (channels, height, width, channels_first) = match data.sample_shape.as_slice() {
        [c @ (1 | 3), h, w] => (*c, *h, *w, true),
        [h, w, c @ (1 | 3)] => (*c, *h, *w, false),
        [h, w] if *h > 1 && *w > 1 => (1, *h, *w, true),
        _ => return None,
    };
    if values.len() != channels * height * width || height * width == 0 {
        return None;
    }
    let (low, high) = values
        .iter()
        .filter(|v| v.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    let span = if high > low { high - low } else { 1.0 };
    let at = |c: usize, y: usize, x: usize| {
        let i = if channels_first {
            (c * height + y) * width + x
        } else {
            (y * width + x) * channels + c
        };
        let v = values.get(i).copied().unwrap_or(low);
        (((v - low) / span).clamp(0.0, 1.0) * 255.0) as u8
    };
    let mut pixels = Vec::with_capacity(height * width);
    for y in 0..height {
        for x in 0..width {
            pixels.push(if channels == 3 {
                egui::Color32::from_rgb(at(0, y, x), at(1, y, x), at(2, y, x))
            } else {
                let g = at(0, y, x);
                egui::Color32::from_gray(g)
            });
        }
    }
    Some(egui::ColorImage::new([width, height], pixels))
}
