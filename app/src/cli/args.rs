//! Arguments shared by `eval`, `bench`, `compare` and `optimize`: the data (with image
//! preprocessing) and the runtime settings.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use edgefit_engine::LoadedModel;
use edgefit_engine::measure::dataset::{
    ChannelOrder, Dataset, Layout, Preprocess, load_calibration, load_dataset,
};
use edgefit_engine::measure::runtime::RuntimeKind;
use edgefit_engine::pipeline::{
    InputSetting, generated_data, merge_input_settings, parse_input_shape, parse_input_value,
};

/// Where the evaluation data comes from.
#[derive(Debug, clap::Args)]
pub struct DataArgs {
    /// Evaluation data: a folder with dataset.json, an image folder (one sub-folder per class),
    /// an .npz, or an .npy. Default: the dataset.json beside the model if there is one, else
    /// generated inputs (fidelity only).
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    /// Use at most this many samples.
    #[arg(long, value_name = "N")]
    pub samples: Option<usize>,
    #[command(flatten)]
    pub preprocess: PreprocessArgs,
}

/// Image preprocessing for an image-folder `--data`: each flag replaces that setting of the
/// folder's preprocess.json (or of the defaults: no resize, scale 1/255, RGB, NCHW).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PreprocessArgs {
    /// Resize every image to HEIGHTxWIDTH pixels, e.g. 224x224.
    #[arg(long, value_name = "HxW", help_heading = "Image preprocessing")]
    pub resize: Option<String>,
    /// Multiply raw 0..255 pixel values by this first (default 1/255).
    #[arg(long, value_name = "F", help_heading = "Image preprocessing")]
    pub scale: Option<f32>,
    /// Subtract per channel after scaling, e.g. 0.485,0.456,0.406 (one value: every channel).
    #[arg(
        long,
        value_name = "M,..",
        value_delimiter = ',',
        help_heading = "Image preprocessing"
    )]
    pub mean: Option<Vec<f32>>,
    /// Divide per channel after the mean, e.g. 0.229,0.224,0.225 (one value: every channel).
    #[arg(
        long,
        value_name = "S,..",
        value_delimiter = ',',
        help_heading = "Image preprocessing"
    )]
    pub std: Option<Vec<f32>>,
    /// Channel order.
    #[arg(long, value_parser = ["rgb", "bgr", "gray"], help_heading = "Image preprocessing")]
    pub channels: Option<String>,
    /// Layout of one sample: nchw ([C, H, W]) or nhwc ([H, W, C]).
    #[arg(long, value_parser = ["nchw", "nhwc"], help_heading = "Image preprocessing")]
    pub layout: Option<String>,
}

impl PreprocessArgs {
    fn any(&self) -> bool {
        self.resize.is_some()
            || self.scale.is_some()
            || self.mean.is_some()
            || self.std.is_some()
            || self.channels.is_some()
            || self.layout.is_some()
    }

    /// The preprocessing of the image folder `dir`: its preprocess.json (or the defaults) with
    /// these flags applied. `None` when no flag is given (the engine reads the file itself).
    pub fn for_folder(&self, dir: &Path) -> Result<Option<Preprocess>> {
        if !self.any() {
            return Ok(None);
        }
        let mut p = Preprocess::from_folder(dir)?;
        if let Some(text) = &self.resize {
            p.resize = Some(parse_resize(text)?);
        }
        if let Some(scale) = self.scale {
            p.scale = scale;
        }
        if let Some(mean) = &self.mean {
            p.mean = mean.clone();
        }
        if let Some(std) = &self.std {
            p.std = std.clone();
        }
        if let Some(c) = &self.channels {
            p.channels = match c.as_str() {
                "bgr" => ChannelOrder::Bgr,
                "gray" => ChannelOrder::Gray,
                _ => ChannelOrder::Rgb,
            };
        }
        if let Some(l) = &self.layout {
            p.layout = if l == "nhwc" {
                Layout::Nhwc
            } else {
                Layout::Nchw
            };
        }
        Ok(Some(p))
    }
}

/// `224x224` (or `224,224`) → `[224, 224]`.
fn parse_resize(text: &str) -> Result<[u32; 2]> {
    let parts: Vec<&str> = text.split(['x', 'X', ',']).map(str::trim).collect();
    match parts.as_slice() {
        [h, w] => {
            let dim = |t: &str| -> Result<u32> {
                t.parse::<u32>().ok().filter(|&v| v > 0).with_context(|| {
                    format!("--resize takes HEIGHTxWIDTH in pixels (e.g. 224x224), not `{text}`")
                })
            };
            Ok([dim(h)?, dim(w)?])
        }
        _ => bail!("--resize takes HEIGHTxWIDTH in pixels (e.g. 224x224), not `{text}`"),
    }
}

/// Which runtime runs the models, and at what input shape.
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeArgs {
    /// Concrete shape for a model input with symbolic dims, batch included:
    /// NAME=1,3,224,224 (repeatable). Default: batch 1 and the data's sample shape.
    #[arg(long = "input-shape", value_name = "NAME=DIMS")]
    pub input_shape: Vec<String>,
    /// Hold a model input at this value for every sample (each element): the inputs of a
    /// several-input model that the data does not feed, e.g. a recurrent state or a sample
    /// rate: NAME=0 (repeatable; its shape from the model or --input-shape).
    #[arg(long = "input-value", value_name = "NAME=V")]
    pub input_value: Vec<String>,
    /// The ONNX Runtime shared library to load for `--runtime onnxruntime` (a file, or a folder
    /// holding libonnxruntime.so*). Default: $EDGEFIT_ONNXRUNTIME_LIB, $ORT_DYLIB_PATH, a
    /// pip-installed onnxruntime wheel, system library folders.
    #[arg(long, value_name = "PATH")]
    pub onnxruntime_lib: Option<PathBuf>,
    /// The output to evaluate instead of the model's first (a graph output or an intermediate
    /// tensor), e.g. a classifier's probabilities rather than its label.
    #[arg(long, value_name = "NAME")]
    pub output: Option<String>,
}

impl RuntimeArgs {
    /// The `--input-shape` and `--input-value` settings, parsed and merged by input.
    pub fn shapes(&self) -> Result<Vec<InputSetting>> {
        let mut settings = Vec::new();
        for text in &self.input_shape {
            settings.push(parse_input_shape(text)?);
        }
        for text in &self.input_value {
            settings.push(parse_input_value(text)?);
        }
        Ok(merge_input_settings(settings)?)
    }

    /// Loads onnxruntime when `runtimes` need it (from --onnxruntime-lib when given), so a
    /// missing library is reported before any work.
    pub fn prepare(&self, runtimes: &[RuntimeKind]) -> Result<()> {
        if runtimes.contains(&RuntimeKind::OnnxRuntime) {
            edgefit_engine::measure::runtime::onnxruntime::load(self.onnxruntime_lib.as_deref())?;
        }
        Ok(())
    }
}

/// Parses `--runtime` (`tract` or `onnxruntime`).
pub fn runtime_of(name: &str) -> Result<RuntimeKind> {
    RuntimeKind::parse(name)
        .with_context(|| format!("--runtime takes tract or onnxruntime, not `{name}`"))
}

/// The data a command runs on.
pub struct LoadedData {
    pub data: Dataset,
    /// The source's calibration split, when it has one.
    pub calibration: Option<Dataset>,
    /// The input settings to run with: the ones given, plus (for generated inputs) the
    /// shapes and values chosen for what they left open.
    pub settings: Vec<InputSetting>,
}

impl DataArgs {
    /// Loads the data for `model` (and its calibration split, when the source has one);
    /// generated inputs take their shape from `shapes`, the rest chosen (see
    /// `edgefit_engine::pipeline::auto_inputs`).
    pub fn load(&self, model: &LoadedModel, shapes: &[InputSetting]) -> Result<LoadedData> {
        let beside = model
            .path
            .parent()
            .map(|d| d.join("dataset.json"))
            .filter(|p| p.is_file());
        let source = self
            .data
            .clone()
            .or_else(|| beside.and_then(|p| p.parent().map(Path::to_path_buf)));
        let (mut data, calibration, settings) = match source {
            Some(path) => {
                let preprocess = if path.is_dir() && !path.join("dataset.json").is_file() {
                    self.preprocess.for_folder(&path)?
                } else if self.preprocess.any() {
                    bail!(
                        "the image preprocessing flags apply to an image folder (one sub-folder per class); {} is not one",
                        path.display()
                    );
                } else {
                    None
                };
                let data = load_dataset(&path, preprocess.as_ref())
                    .with_context(|| format!("reading data from {}", path.display()))?;
                let calibration = if path.is_dir() {
                    load_calibration(&path)?
                } else {
                    None
                };
                (data, calibration, shapes.to_vec())
            }
            None => {
                let (data, settings) = generated_data(model, shapes)?;
                (data, None, settings)
            }
        };
        if let Some(n) = self.samples {
            data = data.first(n);
        }
        Ok(LoadedData {
            data,
            calibration,
            settings,
        })
    }
}

/// Loads `model` and its data for a job whose `--runtime` is `runtime` (`auto`, `tract` or
/// `onnxruntime`): `auto` is onnxruntime when it is installed and runs the model, else tract
/// (a note on stderr says why it was passed over). onnxruntime asked for by name is loaded
/// before the model, so a missing library is reported before any work.
pub fn load_for_job(
    path: &Path,
    data: &DataArgs,
    runtime: &str,
    runtime_args: &RuntimeArgs,
    shapes: &[InputSetting],
    bar: &indicatif::ProgressBar,
    cancel: &edgefit_engine::CancelToken,
) -> Result<(LoadedModel, LoadedData, RuntimeKind)> {
    let auto = runtime == "auto";
    let mut runtime = if auto {
        RuntimeKind::Tract
    } else {
        runtime_of(runtime)?
    };
    runtime_args.prepare(&[runtime])?;
    let model = edgefit_engine::load_model(path, &super::sink(bar), cancel)?;
    let loaded = data.load(&model, shapes)?;
    if auto {
        let (chosen, why) = edgefit_engine::pipeline::choose_runtime(
            &model,
            &loaded.data,
            &loaded.settings,
            runtime_args.onnxruntime_lib.as_deref(),
        );
        runtime = chosen;
        if let Some(why) = why {
            bar.suspend(|| eprintln!("note: {}", crate::format::terminal_safe(&why)));
        }
    }
    Ok((model, loaded, runtime))
}
