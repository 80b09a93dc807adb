//! Image-folder datasets: one sub-folder per class, images inside, preprocessed to floats.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use rayon::prelude::*;

use super::{ChannelOrder, Dataset, Layout, Preprocess, dataset_error};
use crate::error::{Error, Result};

/// File extensions (lower case) read as images.
pub(crate) const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "bmp"];

/// The name of the optional preprocessing file inside an image folder.
pub(crate) const PREPROCESS_FILE: &str = "preprocess.json";

/// Whether `path` has one of the [`IMAGE_EXTENSIONS`].
fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Entries of a directory, sorted by name, skipping hidden ones (names starting with `.`).
fn sorted_entries(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let read = std::fs::read_dir(dir).map_err(|e| Error::io("cannot list the folder", dir, e))?;
    let mut entries = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| Error::io("cannot list the folder", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') {
            entries.push((name, entry.path()));
        }
    }
    entries.sort();
    Ok(entries)
}

/// Whether `dir` itself holds image files (an unlabelled, flat folder).
pub(crate) fn has_images(dir: &Path) -> bool {
    sorted_entries(dir).is_ok_and(|entries| entries.iter().any(|(_, p)| p.is_file() && is_image(p)))
}

/// Class names (sorted) with their image files (sorted).
pub(crate) type Classes = Vec<(String, Vec<PathBuf>)>;

/// Class sub-folders of `dir` (sorted by name) with their sorted image files; `None` when `dir`
/// has no sub-folder holding an image.
pub(crate) fn find_classes(dir: &Path) -> Result<Option<Classes>> {
    let mut classes = Vec::new();
    for (name, path) in sorted_entries(dir)? {
        if !path.is_dir() {
            continue;
        }
        let images: Vec<PathBuf> = sorted_entries(&path)?
            .into_iter()
            .map(|(_, p)| p)
            .filter(|p| p.is_file() && is_image(p))
            .collect();
        classes.push((name, images));
    }
    if classes.iter().all(|(_, images)| images.is_empty()) {
        return Ok(None);
    }
    Ok(Some(classes))
}

/// Reads `preprocess.json` from `dir` when present.
pub(crate) fn read_preprocess_file(dir: &Path) -> Result<Option<Preprocess>> {
    let path = dir.join(PREPROCESS_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    crate::model::guard::regular_file(&path, "preprocessing file")?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::io("cannot read the preprocessing file", &path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| dataset_error(&path, format!("invalid preprocessing settings: {e}")))
}

/// Loads every image of `classes` as one labelled dataset; `settings` (the preprocess.json, or
/// the folder when the caller gave the settings) is named in errors about `preprocess`.
pub(crate) fn load_image_folder(
    dir: &Path,
    classes: Classes,
    preprocess: &Preprocess,
    settings: &Path,
) -> Result<Dataset> {
    let channels = preprocess.channel_count();
    check_preprocess(preprocess, channels).map_err(|reason| {
        dataset_error(
            settings,
            format!("invalid preprocessing settings: {reason}"),
        )
    })?;
    let files: Vec<(usize, &PathBuf)> = classes
        .iter()
        .enumerate()
        .flat_map(|(class, (_, images))| images.iter().map(move |p| (class, p)))
        .collect();
    // Decoding dominates; images are independent, so decode them in parallel, keeping order.
    let decoded: Vec<(Vec<f32>, [u32; 2])> = files
        .par_iter()
        .map(|(_, path)| decode_image(path, preprocess))
        .collect::<Result<_>>()?;

    let Some(((_, first_path), (_, first_size))) = files.first().zip(decoded.first()) else {
        return Err(dataset_error(dir, "the class folders hold no images"));
    };
    let [height, width] = *first_size;
    let mut inputs = Vec::with_capacity(decoded.iter().map(|(v, _)| v.len()).sum());
    for ((_, path), (values, size)) in files.iter().zip(&decoded) {
        if *size != *first_size {
            return Err(dataset_error(
                path,
                format!(
                    "image is {}x{} (height x width) but {} is {height}x{width}; set \"resize\": \
                     [height, width] in {PREPROCESS_FILE} to use images of different sizes",
                    size[0],
                    size[1],
                    first_path.display()
                ),
            ));
        }
        inputs.extend_from_slice(values);
    }
    let (h, w) = (height as usize, width as usize);
    let sample_shape = match preprocess.layout {
        Layout::Nchw => vec![channels, h, w],
        Layout::Nhwc => vec![h, w, channels],
    };
    let labels: Vec<i64> = files.iter().map(|(class, _)| *class as i64).collect();
    let class_names: Vec<String> = classes.into_iter().map(|(name, _)| name).collect();
    let channel_names = match preprocess.channels {
        ChannelOrder::Rgb => "RGB",
        ChannelOrder::Bgr => "BGR",
        ChannelOrder::Gray => "gray",
    };
    let layout_name = match preprocess.layout {
        Layout::Nchw => "CHW",
        Layout::Nhwc => "HWC",
    };
    let description = format!(
        "{} image folder ({} labelled images, {} classes, {h}x{w} {channel_names} {layout_name})",
        dir.display(),
        labels.len(),
        class_names.len(),
    );
    Ok(Dataset {
        input_name: None,
        sample_shape,
        inputs,
        labels: Some(labels),
        class_names: Some(class_names),
        description,
        generated: false,
    })
}

/// Checks the per-channel settings against the channel count.
fn check_preprocess(p: &Preprocess, channels: usize) -> std::result::Result<(), String> {
    if !p.scale.is_finite() {
        return Err(format!("scale {} is not a finite number", p.scale));
    }
    for (name, values) in [("mean", &p.mean), ("std", &p.std)] {
        if !(values.is_empty() || values.len() == 1 || values.len() == channels) {
            return Err(format!(
                "\"{name}\" has {} values but {:?} images have {channels} channel(s); give 0, 1 \
                 or {channels} values",
                values.len(),
                p.channels
            ));
        }
        if let Some(v) = values.iter().find(|v| !v.is_finite()) {
            return Err(format!("\"{name}\" holds {v}, not a finite number"));
        }
    }
    if p.std.contains(&0.0) {
        return Err("\"std\" holds 0; every value must be non-zero".into());
    }
    if let Some([h, w]) = p.resize
        && (h == 0 || w == 0)
    {
        return Err(format!(
            "\"resize\" is [{h}, {w}]; both sizes must be at least 1"
        ));
    }
    Ok(())
}

/// Decodes one image and returns its preprocessed values (one sample, in `p.layout`) and its
/// final `[height, width]`.
fn decode_image(path: &Path, p: &Preprocess) -> Result<(Vec<f32>, [u32; 2])> {
    crate::model::guard::regular_file(path, "image")?;
    let image = image::ImageReader::open(path)
        .map_err(|e| Error::io("cannot open the image", path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io("cannot read the image", path, e))?
        .decode()
        .map_err(|e| dataset_error(path, format!("cannot decode the image: {e}")))?;
    // 8-bit pixels: raw values are 0..=255 (16-bit images are scaled down to 8 bits).
    let (pixels, width, height): (Vec<u8>, u32, u32) = match p.channels {
        ChannelOrder::Gray => {
            let mut gray = image.to_luma8();
            if let Some([h, w]) = p.resize {
                gray = image::imageops::resize(&gray, w, h, FilterType::Triangle);
            }
            let (w, h) = gray.dimensions();
            (gray.into_raw(), w, h)
        }
        ChannelOrder::Rgb | ChannelOrder::Bgr => {
            let mut rgb = image.to_rgb8();
            if let Some([h, w]) = p.resize {
                rgb = image::imageops::resize(&rgb, w, h, FilterType::Triangle);
            }
            let (w, h) = rgb.dimensions();
            let mut raw = rgb.into_raw();
            if p.channels == ChannelOrder::Bgr {
                raw.chunks_exact_mut(3).for_each(|px| px.swap(0, 2));
            }
            (raw, w, h)
        }
    };
    let channels = p.channel_count();
    let pick = |values: &[f32], c: usize, default: f32| match values.len() {
        0 => default,
        1 => values[0],
        _ => values.get(c).copied().unwrap_or(default),
    };
    let mean: Vec<f32> = (0..channels).map(|c| pick(&p.mean, c, 0.0)).collect();
    let std: Vec<f32> = (0..channels).map(|c| pick(&p.std, c, 1.0)).collect();
    let normalize = |raw: u8, c: usize| (f32::from(raw) * p.scale - mean[c]) / std[c];
    let pixel_count = (width as usize) * (height as usize);
    let values: Vec<f32> = match p.layout {
        // HWC: the interleaved pixel order as decoded.
        Layout::Nhwc => pixels
            .iter()
            .enumerate()
            .map(|(i, &raw)| normalize(raw, i % channels))
            .collect(),
        // CHW: one plane per channel.
        Layout::Nchw => (0..channels)
            .flat_map(|c| {
                let pixels = &pixels;
                (0..pixel_count).map(move |i| (pixels[i * channels + c], c))
            })
            .map(|(raw, c)| normalize(raw, c))
            .collect(),
    };
    Ok((values, [height, width]))
}
