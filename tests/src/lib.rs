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

/// Writes a `.npy` file of `shape` holding `bytes` (already in `descr`'s layout, e.g. `<f4`
/// little-endian float32 or `<i8` int64), as numpy's format 1.0 lays it out.
pub fn write_npy(path: &Path, descr: &str, shape: &[usize], bytes: &[u8]) -> std::io::Result<()> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let mut header = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': ({},), }}",
        dims.join(", ")
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(bytes);
    std::fs::write(path, out)
}

/// A labelled dataset folder (`dataset.json`, `x.npy`, `y.npy`) of `count` float samples of
/// `sample_shape`, values in [-0.5, 0.5), labels alternating 0 and 1, in `dir`.
pub fn write_labelled_dataset(
    dir: &Path,
    count: usize,
    sample_shape: &[usize],
) -> std::io::Result<()> {
    let per_sample: usize = sample_shape.iter().product();
    let values: Vec<u8> = (0..count * per_sample)
        .flat_map(|i| ((i % 17) as f32 / 17.0 - 0.5).to_le_bytes())
        .collect();
    let mut shape = vec![count];
    shape.extend_from_slice(sample_shape);
    write_npy(&dir.join("x.npy"), "<f4", &shape, &values)?;
    let labels: Vec<u8> = (0..count as i64)
        .flat_map(|i| (i % 2).to_le_bytes())
        .collect();
    write_npy(&dir.join("y.npy"), "<i8", &[count], &labels)?;
    std::fs::write(
        dir.join("dataset.json"),
        r#"{"format": "edgefit-dataset/1", "inputs": "x.npy", "labels": "y.npy"}"#,
    )
}
