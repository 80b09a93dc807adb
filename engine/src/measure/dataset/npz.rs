//! `.npz` archives (as written by `np.savez` / `np.savez_compressed`): an inputs array and
//! optionally a labels array.

use std::io::Read;
use std::path::Path;

use super::{
    Dataset, NPZ_INPUT_KEYS, NPZ_LABEL_KEYS, check_labels, dataset_error, npy, split_samples,
};
use crate::error::{Error, Result};

/// Loads an `.npz` archive (as written by `np.savez` / `np.savez_compressed`).
pub(crate) fn load_npz(path: &Path) -> Result<Dataset> {
    crate::model::guard::regular_file(path, "dataset file")?;
    let file_bytes = std::fs::metadata(path).map_or(0, |m| m.len());
    let file = std::fs::File::open(path)
        .map_err(|e| Error::io("cannot open the dataset file", path, e))?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| dataset_error(path, format!("not a valid .npz (zip) archive: {e}")))?;
    let names: Vec<String> = archive
        .file_names()
        .filter_map(|n| n.ok())
        .map(|n| n.into_owned())
        .collect();
    let keys: Vec<&str> = names
        .iter()
        .filter_map(|n| n.strip_suffix(".npy"))
        .collect();
    let find = |candidates: &[&str]| {
        candidates
            .iter()
            .find(|c| keys.contains(c))
            .map(|c| c.to_string())
    };
    let input_key = find(&NPZ_INPUT_KEYS).or_else(|| match keys.as_slice() {
        // `np.savez(path, array)` names its only array `arr_0`.
        [only] => Some(only.to_string()),
        _ => None,
    });
    let Some(input_key) = input_key else {
        return Err(dataset_error(
            path,
            format!(
                "no inputs array in the .npz: expected one of the keys {} (it holds {})",
                NPZ_INPUT_KEYS.join(", "),
                if keys.is_empty() {
                    "no arrays".to_string()
                } else {
                    keys.join(", ")
                }
            ),
        ));
    };
    let label_key = find(&NPZ_LABEL_KEYS);

    let mut read_entry = |key: &str| -> Result<Vec<u8>> {
        let entry_name = format!("{key}.npy");
        let entry = archive.by_name(&entry_name).map_err(|e| {
            dataset_error(path, format!("cannot read array `{key}` of the .npz: {e}"))
        })?;
        // A small archive can inflate to gigabytes: the declared size is checked against the
        // memory budget before inflating, and no more than it is read.
        let declared = entry.size();
        // Inflated bytes, then their values as f32 (up to 4 per byte): five times the entry.
        crate::model::guard::check_allocation(
            &format!(
                "array `{key}` of {} (inflated, then decoded)",
                path.display()
            ),
            declared,
            5,
            file_bytes,
        )?;
        let mut bytes = Vec::with_capacity(usize::try_from(declared).unwrap_or(0).min(1 << 30));
        entry.take(declared).read_to_end(&mut bytes).map_err(|e| {
            dataset_error(
                path,
                format!("cannot decompress array `{key}` of the .npz: {e}"),
            )
        })?;
        Ok(bytes)
    };
    let input_bytes = read_entry(&input_key)?;
    let label_bytes = label_key.as_deref().map(&mut read_entry).transpose()?;

    let in_entry =
        |reason: String, key: &str| dataset_error(path, format!("array `{key}`: {reason}"));
    let inputs = npy::parse(&input_bytes).map_err(|r| in_entry(r, &input_key))?;
    let (sample_shape, values) = split_samples(&inputs).map_err(|r| in_entry(r, &input_key))?;
    let count = inputs.shape.first().copied().unwrap_or(0);
    let labels = match (&label_key, &label_bytes) {
        (Some(key), Some(bytes)) => {
            let array = npy::parse(bytes).map_err(|r| in_entry(r, key))?;
            Some(check_labels(&array, count, &input_key).map_err(|r| in_entry(r, key))?)
        }
        _ => None,
    };
    let labelled = if labels.is_some() {
        "labelled"
    } else {
        "unlabelled"
    };
    Ok(Dataset {
        input_name: None,
        description: format!("{} ({count} {labelled} samples)", path.display()),
        sample_shape,
        inputs: values,
        labels,
        class_names: None,
        generated: false,
    })
}
