//! Finding the sample models that ship with the studio.

use std::path::PathBuf;

/// The bundled sample model the studio opens when given none, if it can be found next to the
/// executable or in the source tree it was built from.
pub fn default_sample_model() -> Option<PathBuf> {
    let relative = PathBuf::from("sample-models")
        .join("mnist-cnn")
        .join("model.onnx");
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        // target/<profile>/edgefit → the workspace root is two levels up; an installed copy
        // keeps sample-models/ beside the executable.
        for dir in exe.ancestors().skip(1).take(4) {
            candidates.push(dir.join(&relative));
        }
    }
    candidates.push(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(&relative),
    );
    candidates.into_iter().find(|p| p.is_file())
}
