//! Shared helpers for the end-to-end tests: paths to fixtures and sample models, and the
//! Python reference tools (run only where Python's `onnx` package is installed).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    root().join("tests").join("fixtures").join(name)
}

/// `sample-models/<name>/model.onnx`.
pub fn sample_model(name: &str) -> PathBuf {
    root().join("sample-models").join(name).join("model.onnx")
}

/// Whether onnxruntime can be used here, for tests whose onnxruntime part is skipped
/// without it. With `EDGEFIT_REQUIRE_ONNXRUNTIME` set (CI sets it after `pip install
/// onnxruntime`), a missing library fails the test instead.
///
/// # Panics
/// When the library does not load and `EDGEFIT_REQUIRE_ONNXRUNTIME` is set.
pub fn onnxruntime() -> bool {
    match edgefit_engine::measure::runtime::RuntimeKind::OnnxRuntime.available() {
        Ok(()) => true,
        Err(e) => {
            assert!(
                std::env::var_os("EDGEFIT_REQUIRE_ONNXRUNTIME").is_none(),
                "EDGEFIT_REQUIRE_ONNXRUNTIME is set but onnxruntime does not load: {e}"
            );
            eprintln!("note: skipping the onnxruntime part of this test: {e}");
            false
        }
    }
}

/// The names of the bundled sample models.
pub const SAMPLE_MODELS: &[&str] = &["mnist-cnn", "digits-mlp"];

/// The Python interpreter to use for reference checks, if it has `onnx` installed.
///
/// When `EDGEFIT_REQUIRE_PYTHON` is set (CI sets it), a missing `onnx` is a test failure;
/// otherwise the Python cross-checks are skipped with a note.
pub fn python_with_onnx() -> Option<String> {
    let python = std::env::var("EDGEFIT_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let ok = Command::new(&python)
        .args(["-c", "import onnx, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    assert!(
        std::env::var_os("EDGEFIT_REQUIRE_PYTHON").is_none(),
        "EDGEFIT_REQUIRE_PYTHON is set but `{python} -c 'import onnx, numpy'` fails"
    );
    eprintln!("note: Python with `onnx` not found; skipping the Python cross-check");
    None
}

/// Runs `tests/python/<script>` with `args`, returning stdout; panics with stderr on failure.
pub fn run_python(python: &str, script: &str, args: &[&Path]) -> String {
    let output = Command::new(python)
        .arg(root().join("tests").join("python").join(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {script}: {e}"));
    assert!(
        output.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
