//! Writing models atomically: a temporary file in the destination folder, synced, then renamed
//! over the destination. The model that was opened is never the destination.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::proto::{Message, ModelProto};

/// Writes `bytes` to `destination` atomically: readers see the old file or the new one, never
/// a partial write (a full disk leaves the destination untouched).
pub fn write_bytes_atomic(destination: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match destination.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = destination
        .file_name()
        .ok_or_else(|| Error::InvalidArgument {
            what: "output path",
            reason: format!("`{}` names no file", destination.display()),
        })?
        .to_string_lossy()
        .into_owned();
    let temp = dir.join(format!(".{file_name}.{}.partial", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)
            .map_err(|e| Error::io("cannot create the output file", &temp, e))?;
        file.write_all(bytes)
            .map_err(|e| Error::io("cannot write the output file", &temp, e))?;
        file.sync_all()
            .map_err(|e| Error::io("cannot flush the output file", &temp, e))?;
        std::fs::rename(&temp, destination)
            .map_err(|e| Error::io("cannot move the output file into place", destination, e))
    })();
    if result.is_err() {
        // Best effort: the error that matters is the one being returned.
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Serializes `model` and writes it to `destination` atomically, refusing to overwrite
/// `opened` (the file the model was read from).
pub fn write_model_atomic(model: &ModelProto, destination: &Path, opened: &Path) -> Result<()> {
    if same_file(destination, opened) {
        return Err(Error::WouldOverwriteSource {
            path: destination.to_path_buf(),
        });
    }
    let bytes = model.write_to_bytes().map_err(|e| Error::InvalidArgument {
        what: "model",
        reason: format!("cannot be serialized: {e}"),
    })?;
    write_bytes_atomic(destination, &bytes)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
