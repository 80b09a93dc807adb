//! External data: reading a tensor's bytes from the files beside the model (confined to the
//! model's folder, regular files only), and the model with them stored inline.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use super::LoadedModel;
use crate::error::{Error, Result};
use crate::model::proto::{GraphProto, ModelProto, TensorProto, tensor_proto::DataLocation};

/// Reads the external bytes of `tensor`, refusing locations outside `dir`.
pub(super) fn read_external(tensor: &TensorProto, dir: &Path) -> Result<Vec<u8>> {
    let name = tensor.name();
    let entry = |key: &str| {
        tensor
            .external_data
            .iter()
            .find(|e| e.key() == key)
            .map(|e| e.value().to_owned())
    };
    let err = |reason: String, path: PathBuf| Error::ExternalData {
        tensor: name.to_owned(),
        reason,
        path,
    };
    let location = entry("location").ok_or_else(|| {
        err(
            "external data without a `location` entry".to_owned(),
            dir.to_path_buf(),
        )
    })?;
    let relative = Path::new(&location);
    let escapes = relative.is_absolute()
        || relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if escapes {
        return Err(err(
            format!(
                "external-data location `{location}` points outside the model's folder; refused"
            ),
            dir.join(relative),
        ));
    }
    let file_path = dir.join(relative);
    // A symlink inside the folder could still lead out of it.
    let canonical = file_path.canonicalize().map_err(|e| {
        let reason = if e.kind() == std::io::ErrorKind::NotFound {
            "its external-data file is missing".to_owned()
        } else {
            format!("its external-data file cannot be opened ({e})")
        };
        err(reason, file_path.clone())
    })?;
    if !canonical.starts_with(dir) {
        return Err(err(
            "external-data file resolves outside the model's folder; refused".to_owned(),
            canonical,
        ));
    }
    let parse_number = |key: &str| -> Result<Option<u64>> {
        entry(key)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    err(
                        format!("external-data `{key}` is not a number: {v:?}"),
                        canonical.clone(),
                    )
                })
            })
            .transpose()
    };
    let offset = parse_number("offset")?.unwrap_or(0);
    let length = parse_number("length")?;
    crate::model::guard::regular_file(&canonical, "external data")?;
    let mut file = File::open(&canonical)
        .map_err(|e| Error::io("cannot open external data", &canonical, e))?;
    let file_len = file
        .metadata()
        .map_err(|e| Error::io("cannot read external data", &canonical, e))?
        .len();
    let length = length.unwrap_or(file_len.saturating_sub(offset));
    if offset.checked_add(length).is_none_or(|end| end > file_len) {
        return Err(err(
            format!(
                "external data at offset {offset} with length {length} runs past the end of the {file_len}-byte file"
            ),
            canonical,
        ));
    }
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| Error::io("cannot read external data", &canonical, e))?;
    let mut bytes = vec![0u8; usize::try_from(length).unwrap_or(usize::MAX)];
    file.read_exact(&mut bytes)
        .map_err(|e| Error::io("cannot read external data", &canonical, e))?;
    Ok(bytes)
}

impl LoadedModel {
    /// The model to hand to a runtime: the model of record itself (borrowed, no copy) when it
    /// has no external data, else [`Self::self_contained_proto`].
    pub fn runnable_proto(&self) -> Result<std::borrow::Cow<'_, ModelProto>> {
        if self.has_external_data() {
            Ok(std::borrow::Cow::Owned(self.self_contained_proto()?))
        } else {
            Ok(std::borrow::Cow::Borrowed(&self.proto))
        }
    }

    /// A copy of the model of record with every external-data tensor stored inline, so it can
    /// be written to any folder. Nothing else changes.
    pub fn self_contained_proto(&self) -> Result<ModelProto> {
        let mut proto = self.proto.clone();
        if self.has_external_data() {
            let dir = self.path.parent().unwrap_or(Path::new(".")).to_path_buf();
            if let Some(graph) = proto.graph.as_mut() {
                inline_graph(graph, &dir)?;
            }
        }
        Ok(proto)
    }
}

fn inline_tensor(t: &mut TensorProto, dir: &Path) -> Result<()> {
    if t.data_location() == DataLocation::EXTERNAL {
        let bytes = read_external(t, dir)?;
        t.set_raw_data(bytes);
        t.external_data.clear();
        // What onnx.load_external_data does: the location is stated, not left unset.
        t.set_data_location(DataLocation::DEFAULT);
    }
    Ok(())
}

fn inline_graph(graph: &mut GraphProto, dir: &Path) -> Result<()> {
    for t in &mut graph.initializer {
        inline_tensor(t, dir)?;
    }
    for node in &mut graph.node {
        for attr in &mut node.attribute {
            if let Some(t) = attr.t.as_mut() {
                inline_tensor(t, dir)?;
            }
            if let Some(g) = attr.g.as_mut() {
                inline_graph(g, dir)?;
            }
            for g in &mut attr.graphs {
                inline_graph(g, dir)?;
            }
        }
    }
    Ok(())
}
