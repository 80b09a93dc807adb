//! Writing outputs so that nothing the user has is lost:
//!
//! - every output is first written to a temporary file in its destination folder, with a
//!   random name created exclusively (never following a planted symlink), synced, and only
//!   then renamed over the destination — a reader sees the old file or the new one;
//! - a set of outputs (a model and its reports) is written as one unit: every temporary file
//!   is complete before the first rename, so a full disk replaces nothing;
//! - outputs are checked against the inputs (the opened model, its external data) and each
//!   other before any work starts; no output may be one of them, a folder, or a special file.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::proto::{Message, ModelProto};

/// The destinations of one job, checked up front and written as one unit.
pub struct OutputSet {
    destinations: Vec<PathBuf>,
    staged: Vec<(PathBuf, tempfile::NamedTempFile)>,
}

impl OutputSet {
    /// Checks `destinations` before any work: none is one of `inputs` (same file, however
    /// named — links included), none repeats another, none is a folder or a special file, and
    /// each one's folder exists.
    pub fn new(destinations: &[PathBuf], inputs: &[&Path]) -> Result<Self> {
        for (i, d) in destinations.iter().enumerate() {
            if d.file_name().is_none() {
                return Err(Error::InvalidArgument {
                    what: "output path",
                    reason: format!("`{}` names no file", d.display()),
                });
            }
            if let Some(input) = inputs.iter().find(|input| same_file(d, input)) {
                return Err(Error::WouldOverwriteSource {
                    path: if input.as_os_str() == d.as_os_str() {
                        d.clone()
                    } else {
                        PathBuf::from(format!("{} (it is {})", d.display(), input.display()))
                    },
                });
            }
            if destinations[..i].iter().any(|e| e == d || same_file(e, d)) {
                return Err(Error::InvalidArgument {
                    what: "output path",
                    reason: format!("`{}` is named twice among the outputs", d.display()),
                });
            }
            match std::fs::symlink_metadata(d) {
                Ok(m) if m.is_dir() => {
                    return Err(Error::InvalidArgument {
                        what: "output path",
                        reason: format!("`{}` is a folder", d.display()),
                    });
                }
                Ok(m) if !(m.is_file() || m.file_type().is_symlink()) => {
                    return Err(Error::InvalidArgument {
                        what: "output path",
                        reason: format!("`{}` is not a regular file", d.display()),
                    });
                }
                _ => {}
            }
            let dir = folder_of(d);
            if !dir.is_dir() {
                return Err(Error::InvalidArgument {
                    what: "output path",
                    reason: format!("the folder `{}` does not exist", dir.display()),
                });
            }
        }
        Ok(Self {
            destinations: destinations.to_vec(),
            staged: Vec::new(),
        })
    }

    /// Writes `bytes` for `destination` (one of the set) to its temporary file; returns the
    /// temporary file's path (e.g. to verify it before it replaces anything).
    pub fn stage(&mut self, destination: &Path, bytes: &[u8]) -> Result<PathBuf> {
        if !self.destinations.iter().any(|d| d == destination) {
            return Err(Error::InvalidArgument {
                what: "output path",
                reason: format!("`{}` is not one of the outputs", destination.display()),
            });
        }
        let dir = folder_of(destination);
        let name = destination
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let prefix = format!(".{name}.");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".partial");
        // The mode any new file gets (0666 less the umask), not the temporary file's private
        // 0600: an export is meant to be read by others (a deploy script, another account).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o666));
        }
        let mut temp = builder
            .tempfile_in(&dir)
            .map_err(|e| Error::io("cannot create a temporary file", &dir, e))?;
        let path = temp.path().to_path_buf();
        temp.write_all(bytes)
            .map_err(|e| Error::io("cannot write the output file", &path, e))?;
        temp.as_file()
            .sync_all()
            .map_err(|e| Error::io("cannot flush the output file", &path, e))?;
        self.staged.retain(|(d, _)| d != destination);
        self.staged.push((destination.to_path_buf(), temp));
        Ok(path)
    }

    /// Renames every staged file over its destination (after all were written in full).
    /// Temporary files not committed are removed when the set is dropped.
    pub fn commit(self) -> Result<()> {
        for (destination, temp) in self.staged {
            temp.persist(&destination).map_err(|e| {
                Error::io(
                    "cannot move the output file into place",
                    &destination,
                    e.error,
                )
            })?;
        }
        Ok(())
    }
}

fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes `bytes` to `destination` atomically: readers see the old file or the new one, never
/// a partial write (a full disk leaves the destination untouched).
pub fn write_bytes_atomic(destination: &Path, bytes: &[u8]) -> Result<()> {
    let mut set = OutputSet::new(&[destination.to_path_buf()], &[])?;
    set.stage(destination, bytes)?;
    set.commit()
}

/// Serializes `model` and writes it to `destination` atomically, refusing to overwrite
/// `opened` (the file the model was read from).
pub fn write_model_atomic(model: &ModelProto, destination: &Path, opened: &Path) -> Result<()> {
    let mut set = OutputSet::new(&[destination.to_path_buf()], &[opened])?;
    set.stage(destination, &serialize(model)?)?;
    set.commit()
}

/// The largest protobuf message other readers accept (onnx, onnxruntime: 2 GiB - 1).
pub const PROTOBUF_MAX_BYTES: u64 = (1 << 31) - 1;

/// `model` as protobuf bytes. A model past protobuf's 2 GiB limit is refused with a clear
/// error (its weights would have to go to an external-data file, which the writer does not do
/// yet) rather than written as a file no other tool can read.
pub fn serialize(model: &ModelProto) -> Result<Vec<u8>> {
    check_size(model.compute_size())?;
    model.write_to_bytes().map_err(|e| Error::InvalidArgument {
        what: "model",
        reason: format!("cannot be serialized: {e}"),
    })
}

fn check_size(size_bytes: u64) -> Result<()> {
    if size_bytes > PROTOBUF_MAX_BYTES {
        return Err(Error::InvalidArgument {
            what: "model",
            reason: format!(
                "the export would be {:.2} GB, past protobuf's 2 GiB limit for one file; \
                 writing its weights to an external-data file is not supported yet — \
                 quantize more of it (e.g. --format weights-int8) to bring it under 2 GiB",
                size_bytes as f64 / 1e9
            ),
        });
    }
    Ok(())
}

/// Whether `a` and `b` are the same file: the same path once resolved, or — when both exist —
/// the same device and inode (hard links).
pub fn same_file(a: &Path, b: &Path) -> bool {
    if let (Ok(x), Ok(y)) = (a.canonicalize(), b.canonicalize())
        && x == y
    {
        return true;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return x.dev() == y.dev() && x.ino() == y.ino();
        }
    }
    false
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_model_past_two_gib_is_refused_with_a_message_not_written() {
        assert!(check_size(PROTOBUF_MAX_BYTES).is_ok());
        let message = check_size(PROTOBUF_MAX_BYTES + 1).unwrap_err().to_string();
        assert!(
            message.contains("2 GiB") && message.contains("2.15 GB"),
            "{message}"
        );
    }

    #[test]
    fn outputs_that_are_inputs_links_or_repeated_are_refused_before_work() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model.onnx");
        std::fs::write(&model, b"model").unwrap();
        let e = OutputSet::new(std::slice::from_ref(&model), &[&model])
            .err()
            .unwrap();
        assert!(matches!(e, Error::WouldOverwriteSource { .. }), "{e}");
        // A hard link to the input is the input.
        let link = dir.path().join("link.onnx");
        std::fs::hard_link(&model, &link).unwrap();
        assert!(OutputSet::new(&[link], &[&model]).is_err());
        let a = dir.path().join("a.onnx");
        assert!(OutputSet::new(&[a.clone(), a.clone()], &[]).is_err());
        assert!(OutputSet::new(&[dir.path().to_path_buf()], &[]).is_err());
        assert!(OutputSet::new(&[dir.path().join("missing/x.onnx")], &[]).is_err());
        assert_eq!(std::fs::read(&model).unwrap(), b"model");
    }

    #[cfg(unix)]
    #[test]
    fn an_output_gets_the_mode_any_new_file_gets_not_a_private_one() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain.bin");
        std::fs::write(&plain, b"x").unwrap();
        let out = dir.path().join("out.onnx");
        write_bytes_atomic(&out, b"model").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&out), mode(&plain));
    }

    #[cfg(unix)]
    #[test]
    fn a_planted_symlink_is_never_followed_and_nothing_is_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, b"precious").unwrap();
        // The old predictable temporary name, planted as a symlink to the victim.
        let out = dir.path().join("out.onnx");
        std::os::unix::fs::symlink(
            &victim,
            dir.path()
                .join(format!(".out.onnx.{}.partial", std::process::id())),
        )
        .unwrap();
        write_bytes_atomic(&out, b"new").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(&out).unwrap(), b"new");
        // A set dropped before commit leaves no temporary file.
        let mut set = OutputSet::new(&[dir.path().join("b.onnx")], &[]).unwrap();
        let temp = set.stage(&dir.path().join("b.onnx"), b"x").unwrap();
        assert!(temp.is_file());
        drop(set);
        assert!(!temp.exists());
        assert!(!dir.path().join("b.onnx").exists());
    }

    #[test]
    fn a_set_replaces_nothing_until_every_file_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.onnx"), dir.path().join("a.report.json"));
        std::fs::write(&a, b"old model").unwrap();
        std::fs::write(&b, b"old report").unwrap();
        let mut set = OutputSet::new(&[a.clone(), b.clone()], &[]).unwrap();
        set.stage(&a, b"new model").unwrap();
        // The report fails to stage (say, the disk is full): nothing is replaced.
        drop(set);
        assert_eq!(std::fs::read(&a).unwrap(), b"old model");
        let mut set = OutputSet::new(&[a.clone(), b.clone()], &[]).unwrap();
        set.stage(&a, b"new model").unwrap();
        set.stage(&b, b"new report").unwrap();
        set.commit().unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"new model");
        assert_eq!(std::fs::read(&b).unwrap(), b"new report");
    }
}
