//! Evaluation and calibration data: `edgefit-dataset/1` folders, `.npy`/`.npz` arrays, image
//! folders (one sub-folder per class), and generated inputs for checks without data.
//!
//! Every loader returns a [`Dataset`]: N samples of one input tensor, C order, sample-major,
//! optionally with integer class labels. Bad input gives [`Error::Dataset`] naming the problem
//! and the file.

mod images;
mod npy;
mod npz;
#[cfg(test)]
mod tests;

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use npy::{NpyArray, ShapeDisplay};

/// The `format` value of a `dataset.json` this module reads.
pub const DATASET_FORMAT: &str = "edgefit-dataset/1";

/// The metadata file of a dataset folder.
pub const DATASET_FILE: &str = "dataset.json";

/// Keys tried, in order, for the inputs array of an `.npz` file.
pub const NPZ_INPUT_KEYS: [&str; 4] = ["x", "inputs", "input", "data"];

/// Keys tried, in order, for the labels array of an `.npz` file.
pub const NPZ_LABEL_KEYS: [&str; 4] = ["y", "labels", "label", "target"];

/// Evaluation or calibration data: N samples of one input tensor, optionally labelled.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Model input the samples feed, when the source names it.
    pub input_name: Option<String>,
    /// Shape of ONE sample (without a batch dim), e.g. `[1, 28, 28]` or `[64]`.
    pub sample_shape: Vec<usize>,
    /// All samples, C order, sample-major: `len == len() * sample_shape.iter().product()`.
    pub inputs: Vec<f32>,
    /// Class index per sample, when labelled.
    pub labels: Option<Vec<i64>>,
    /// Name of each class index, when the source names them.
    pub class_names: Option<Vec<String>>,
    /// Human-readable description of where the data came from (shown in reports).
    pub description: String,
    /// True when the inputs were generated, not read.
    pub generated: bool,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        match self.sample_len() {
            0 => self.labels.as_ref().map_or(0, Vec::len),
            n => self.inputs.len() / n,
        }
    }

    /// A 64-bit FNV-1a hash of the sample shape, the values (bit for bit) and the labels:
    /// results measured on datasets with different fingerprints are not the same
    /// measurement. About 1 ms per 4 MB.
    pub fn fingerprint(&self) -> u64 {
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                hash = (hash ^ u64::from(b)).wrapping_mul(PRIME);
            }
        };
        for &d in &self.sample_shape {
            eat(&(d as u64).to_le_bytes());
        }
        for v in &self.inputs {
            eat(&v.to_bits().to_le_bytes());
        }
        for label in self.labels.iter().flatten() {
            eat(&label.to_le_bytes());
        }
        hash
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values per sample: the product of [`sample_shape`](Self::sample_shape).
    pub fn sample_len(&self) -> usize {
        self.sample_shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .unwrap_or(0)
    }

    /// The values of sample `index`; an empty slice when `index` is out of range.
    pub fn sample(&self, index: usize) -> &[f32] {
        let n = self.sample_len();
        index
            .checked_mul(n)
            .and_then(|start| Some(start..start.checked_add(n)?))
            .and_then(|range| self.inputs.get(range))
            .unwrap_or(&[])
    }

    /// The first `count` samples (all of them when `count >= len()`), as a new dataset whose
    /// description says it is a subset.
    pub fn first(&self, count: usize) -> Dataset {
        let total = self.len();
        let count = count.min(total);
        let values = count
            .saturating_mul(self.sample_len())
            .min(self.inputs.len());
        let description = if count < total {
            format!("{}, first {count} of {total} samples", self.description)
        } else {
            self.description.clone()
        };
        Dataset {
            input_name: self.input_name.clone(),
            sample_shape: self.sample_shape.clone(),
            inputs: self.inputs[..values].to_vec(),
            labels: self
                .labels
                .as_ref()
                .map(|l| l[..count.min(l.len())].to_vec()),
            class_names: self.class_names.clone(),
            description,
            generated: self.generated,
        }
    }
}

/// Channel order of the preprocessed image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    /// Red, green, blue (3 channels).
    #[default]
    #[serde(alias = "RGB")]
    Rgb,
    /// Blue, green, red (3 channels), as OpenCV-trained models expect.
    #[serde(alias = "BGR")]
    Bgr,
    /// One luminance channel.
    #[serde(alias = "grey", alias = "GRAY", alias = "L")]
    Gray,
}

/// Memory layout of ONE preprocessed image sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Channels first: a sample is `[C, H, W]` (for `[N, C, H, W]` model inputs).
    #[default]
    #[serde(alias = "NCHW", alias = "chw", alias = "CHW")]
    Nchw,
    /// Channels last: a sample is `[H, W, C]` (for `[N, H, W, C]` model inputs).
    #[serde(alias = "NHWC", alias = "hwc", alias = "HWC")]
    Nhwc,
}

/// Image preprocessing for image-folder datasets, read from `preprocess.json` or given by the
/// caller. Each value becomes `(raw * scale - mean[c]) / std[c]` where `raw` is the 8-bit pixel
/// value 0..=255 of channel `c` after the optional resize.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Preprocess {
    /// `[height, width]` in pixels to resize to (triangle filter); `None` keeps the image size,
    /// which must then be the same for every image.
    pub resize: Option<[u32; 2]>,
    /// Multiplies raw 0..255 values first (default 1/255).
    pub scale: f32,
    /// Per channel, subtracted after scaling (empty: 0; one value: every channel).
    pub mean: Vec<f32>,
    /// Per channel, divided after the mean (empty: 1; one value: every channel).
    pub std: Vec<f32>,
    /// Channel order (default RGB).
    pub channels: ChannelOrder,
    /// Layout of one sample (default NCHW, i.e. `[C, H, W]`).
    pub layout: Layout,
}

impl Default for Preprocess {
    fn default() -> Self {
        Self {
            resize: None,
            scale: 1.0 / 255.0,
            mean: Vec::new(),
            std: Vec::new(),
            channels: ChannelOrder::Rgb,
            layout: Layout::Nchw,
        }
    }
}

impl Preprocess {
    /// The `preprocess.json` of the image folder `dir`, or the defaults when it has none.
    pub fn from_folder(dir: &Path) -> Result<Self> {
        Ok(images::read_preprocess_file(dir)?.unwrap_or_default())
    }

    /// Channels per pixel after conversion: 1 for gray, 3 otherwise.
    pub fn channel_count(&self) -> usize {
        match self.channels {
            ChannelOrder::Gray => 1,
            ChannelOrder::Rgb | ChannelOrder::Bgr => 3,
        }
    }
}

/// The `dataset.json` of an `edgefit-dataset/1` folder. Unknown keys are ignored.
#[derive(Debug, Deserialize)]
struct DatasetFile {
    format: String,
    #[serde(default)]
    input_name: Option<String>,
    inputs: String,
    #[serde(default)]
    labels: Option<String>,
    #[serde(default)]
    calibration: Option<String>,
    #[serde(default)]
    num_classes: Option<usize>,
    #[serde(default)]
    class_names: Option<Vec<String>>,
}

/// A [`Error::Dataset`] for `path`.
pub(crate) fn dataset_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Dataset {
        reason: reason.into(),
        path: path.to_path_buf(),
    }
}

/// Opens evaluation data from `path`:
/// - a directory with `dataset.json` (format `edgefit-dataset/1`, see `sample-models/README.md`),
///   or that `dataset.json` itself: reads the `inputs` and `labels` `.npy` files it names;
/// - a directory whose sub-folders are classes holding images (png/jpg/jpeg/bmp), preprocessed
///   per [`Preprocess`] (from `preprocess.json` in that folder, or the `preprocess` argument,
///   which wins); class index = sorted sub-folder name order; `class_names` = those names;
/// - an `.npz` file holding an inputs array (key `x`, `inputs`, `input` or `data`; or the only
///   array, e.g. `arr_0`) and optionally a labels array (key `y`, `labels`, `label` or `target`);
/// - an `.npy` file: unlabelled inputs (first axis = samples).
///
/// `preprocess` only applies to image folders; the arrays of the other sources are already
/// preprocessed and are used as stored.
pub fn load_dataset(path: &Path, preprocess: Option<&Preprocess>) -> Result<Dataset> {
    let metadata =
        std::fs::metadata(path).map_err(|e| Error::io("cannot open the dataset", path, e))?;
    if metadata.is_dir() {
        let json = path.join(DATASET_FILE);
        if json.is_file() {
            return load_dataset_folder(path, &json);
        }
        return match images::find_classes(path)? {
            Some(classes) => {
                let from_file;
                let (preprocess, settings) = match preprocess {
                    Some(p) => (p, path.to_path_buf()),
                    None => {
                        from_file = images::read_preprocess_file(path)?.unwrap_or_default();
                        (&from_file, path.join(images::PREPROCESS_FILE))
                    }
                };
                images::load_image_folder(path, classes, preprocess, &settings)
            }
            None => Err(dataset_error(
                path,
                format!(
                    "the folder has no {DATASET_FILE} and no class sub-folders holding images \
                     ({}){}; give a dataset folder, an image folder, or a .npy/.npz file",
                    images::IMAGE_EXTENSIONS.join("/"),
                    if images::has_images(path) {
                        " (images directly in the folder are not read: put each class's images \
                         in a sub-folder named after the class)"
                    } else {
                        ""
                    }
                ),
            )),
        };
    }
    if path.file_name().is_some_and(|n| n == DATASET_FILE) {
        let dir = parent_dir(path);
        return load_dataset_folder(&dir, path);
    }
    let extension = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "npy" => {
            let bytes = read_file(path)?;
            let inputs = npy::parse(&bytes).map_err(|r| dataset_error(path, r))?;
            let (sample_shape, values) =
                split_samples(&inputs).map_err(|r| dataset_error(path, r))?;
            let count = values.len() / sample_shape.iter().product::<usize>().max(1);
            Ok(Dataset {
                input_name: None,
                description: format!("{} ({count} unlabelled samples)", path.display()),
                sample_shape,
                inputs: values,
                labels: None,
                class_names: None,
                generated: false,
            })
        }
        "npz" => npz::load_npz(path),
        _ => Err(dataset_error(
            path,
            format!(
                "unsupported dataset file type {}; expected a .npy or .npz file, a folder with \
                 {DATASET_FILE}, or an image folder",
                if extension.is_empty() {
                    "(no extension)".to_string()
                } else {
                    format!("'.{extension}'")
                }
            ),
        )),
    }
}

/// Calibration samples of a dataset directory (the `calibration` file named in its
/// `dataset.json`), if it has any. `Ok(None)` for a folder without `dataset.json`, a
/// `dataset.json` without `calibration`, or a `.npy`/`.npz` file.
pub fn load_calibration(path: &Path) -> Result<Option<Dataset>> {
    let (dir, json) = if path.is_dir() {
        (path.to_path_buf(), path.join(DATASET_FILE))
    } else if path.file_name().is_some_and(|n| n == DATASET_FILE) {
        (parent_dir(path), path.to_path_buf())
    } else {
        // Surface a missing path as an error rather than "no calibration data".
        std::fs::metadata(path).map_err(|e| Error::io("cannot open the dataset", path, e))?;
        return Ok(None);
    };
    if !json.is_file() {
        return Ok(None);
    }
    let meta = read_dataset_file(&json)?;
    let Some(calibration) = &meta.calibration else {
        return Ok(None);
    };
    let calib_path = crate::model::guard::confined(&dir, calibration)?;
    let bytes = read_file(&calib_path)?;
    let array = npy::parse(&bytes).map_err(|r| dataset_error(&calib_path, r))?;
    let (sample_shape, values) =
        split_samples(&array).map_err(|r| dataset_error(&calib_path, r))?;
    // The calibration samples must feed the same input as the evaluation samples.
    let inputs_path = crate::model::guard::confined(&dir, &meta.inputs)?;
    if let Ok(header) = read_npy_header(&inputs_path)
        && header.shape.get(1..) != Some(sample_shape.as_slice())
    {
        return Err(dataset_error(
            &calib_path,
            format!(
                "calibration samples have shape {} but the inputs in {} have {}",
                ShapeDisplay(&sample_shape),
                meta.inputs,
                ShapeDisplay(header.shape.get(1..).unwrap_or(&[]))
            ),
        ));
    }
    let count = values.len() / sample_shape.iter().product::<usize>().max(1);
    Ok(Some(Dataset {
        input_name: meta.input_name,
        description: format!(
            "{} calibration set ({count} samples from {calibration})",
            dir.display()
        ),
        sample_shape,
        inputs: values,
        labels: None,
        class_names: meta.class_names,
        generated: false,
    }))
}

/// `count` deterministic pseudo-random inputs of `sample_shape` (uniform in [-1, 1), the same
/// for the same `seed` on every platform), marked `generated: true` and described as
/// generated — for fidelity checks without data.
pub fn generated_inputs(sample_shape: &[usize], count: usize, seed: u64) -> Dataset {
    let sample_len = sample_shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .unwrap_or(0);
    let total = sample_len.saturating_mul(count);
    let mut state = seed;
    let inputs = (0..total)
        .map(|_| {
            // SplitMix64, then the top 24 bits as a uniform fraction in [0, 1).
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let unit = (z >> 40) as f32 / (1u32 << 24) as f32;
            unit * 2.0 - 1.0
        })
        .collect();
    Dataset {
        input_name: None,
        sample_shape: sample_shape.to_vec(),
        inputs,
        labels: None,
        class_names: None,
        description: format!(
            "{count} generated inputs (uniform in [-1, 1], seed {seed}) — not real data"
        ),
        generated: true,
    }
}

/// The folder holding `file` (`.` for a bare file name).
fn parent_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    crate::model::guard::regular_file(path, "dataset file")?;
    std::fs::read(path).map_err(|e| Error::io("cannot read the dataset file", path, e))
}

/// Reads just enough of a `.npy` file to parse its header.
fn read_npy_header(path: &Path) -> Result<npy::NpyHeader> {
    crate::model::guard::regular_file(path, "dataset file")?;
    let file = std::fs::File::open(path).map_err(|e| Error::io("cannot open", path, e))?;
    let mut start = Vec::new();
    // Headers are small; 64 KiB covers any realistic one (version 1 caps them at 64 KiB).
    file.take(1 << 16)
        .read_to_end(&mut start)
        .map_err(|e| Error::io("cannot read", path, e))?;
    npy::parse_header(&start).map_err(|r| dataset_error(path, r))
}

fn read_dataset_file(json: &Path) -> Result<DatasetFile> {
    crate::model::guard::regular_file(json, "dataset metadata")?;
    let text = std::fs::read_to_string(json)
        .map_err(|e| Error::io("cannot read the dataset metadata", json, e))?;
    let meta: DatasetFile = serde_json::from_str(&text)
        .map_err(|e| dataset_error(json, format!("invalid {DATASET_FILE}: {e}")))?;
    if meta.format != DATASET_FORMAT {
        return Err(dataset_error(
            json,
            format!(
                "unsupported format \"{}\" (this version reads \"{DATASET_FORMAT}\")",
                meta.format
            ),
        ));
    }
    if let (Some(n), Some(names)) = (meta.num_classes, &meta.class_names)
        && names.len() != n
    {
        return Err(dataset_error(
            json,
            format!(
                "num_classes is {n} but class_names has {} names",
                names.len()
            ),
        ));
    }
    Ok(meta)
}

/// Loads the `inputs` (and `labels`) of an `edgefit-dataset/1` folder.
fn load_dataset_folder(dir: &Path, json: &Path) -> Result<Dataset> {
    let meta = read_dataset_file(json)?;
    let inputs_path = crate::model::guard::confined(dir, &meta.inputs)?;
    let input_bytes = read_file(&inputs_path)?;
    let inputs = npy::parse(&input_bytes).map_err(|r| dataset_error(&inputs_path, r))?;
    let (sample_shape, values) =
        split_samples(&inputs).map_err(|r| dataset_error(&inputs_path, r))?;
    let count = inputs.shape.first().copied().unwrap_or(0);
    let labels = match &meta.labels {
        Some(file) => {
            let labels_path = crate::model::guard::confined(dir, file)?;
            let bytes = read_file(&labels_path)?;
            let array = npy::parse(&bytes).map_err(|r| dataset_error(&labels_path, r))?;
            let labels = check_labels(&array, count, &meta.inputs)
                .map_err(|r| dataset_error(&labels_path, r))?;
            let classes = meta.num_classes.or(meta.class_names.as_ref().map(Vec::len));
            if let Some(classes) = classes
                && let Some((i, &label)) = labels
                    .iter()
                    .enumerate()
                    .find(|&(_, &l)| l >= classes as i64)
            {
                return Err(dataset_error(
                    &labels_path,
                    format!(
                        "label {i} is {label} but {DATASET_FILE} declares {classes} classes \
                         (0..={})",
                        classes.saturating_sub(1)
                    ),
                ));
            }
            Some(labels)
        }
        None => None,
    };
    let kind = if labels.is_some() {
        "labelled"
    } else {
        "unlabelled"
    };
    Ok(Dataset {
        input_name: meta.input_name,
        description: format!(
            "{} ({count} {kind} samples from {})",
            dir.display(),
            meta.inputs
        ),
        sample_shape,
        inputs: values,
        labels,
        class_names: meta.class_names,
        generated: false,
    })
}

/// Splits an inputs array into (shape of one sample, all values as f32). The first axis is the
/// sample axis; there must be at least one sample and no zero-sized sample dimension.
pub(crate) fn split_samples(
    array: &NpyArray<'_>,
) -> std::result::Result<(Vec<usize>, Vec<f32>), String> {
    let Some((&count, sample_shape)) = array.shape.split_first() else {
        return Err(
            "the inputs array is a scalar (shape ()); expected a first axis of samples".into(),
        );
    };
    if count == 0 {
        return Err(format!(
            "the inputs array holds no samples (shape {})",
            ShapeDisplay(&array.shape)
        ));
    }
    if sample_shape.contains(&0) {
        return Err(format!(
            "the inputs array has an empty sample dimension (shape {})",
            ShapeDisplay(&array.shape)
        ));
    }
    Ok((sample_shape.to_vec(), array.to_f32()))
}

/// Checks a labels array against `count` samples of `inputs_name` and converts it.
pub(crate) fn check_labels(
    array: &NpyArray<'_>,
    count: usize,
    inputs_name: &str,
) -> std::result::Result<Vec<i64>, String> {
    if array.shape.len() != 1 {
        return Err(format!(
            "labels must be a 1-D array of class indices, but the shape is {} \
             (use y.reshape(-1) for one label per sample)",
            ShapeDisplay(&array.shape)
        ));
    }
    if array.shape[0] != count {
        return Err(format!(
            "there are {} labels but {count} samples in {inputs_name}",
            array.shape[0]
        ));
    }
    let labels = array.to_i64()?;
    if let Some((i, l)) = labels.iter().enumerate().find(|&(_, &l)| l < 0) {
        return Err(format!("label {i} is {l}; class indices must be >= 0"));
    }
    Ok(labels)
}
