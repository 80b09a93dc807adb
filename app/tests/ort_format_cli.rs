//! `edgefit ort-format`: both samples converted by onnxruntime to the ORT format, with the
//! operator config of a reduced build; onnxruntime (Python, independent of our bindings) runs
//! the `.ort` file and gives the `.onnx` file's outputs; the opened model is never overwritten.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use edgefit_tests::{onnxruntime, root};

fn edgefit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgefit"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

/// Max |difference| of the first output between `onnx` and `ort` in Python's onnxruntime on
/// the sample's first 50 test inputs, or `None` where Python lacks onnxruntime.
fn python_difference(onnx: &str, ort: &str, inputs: &str) -> Option<f64> {
    let script = r#"
import sys, numpy as np, onnxruntime as ort
onnx_path, ort_path, inputs = sys.argv[1:4]
x = np.load(inputs).astype(np.float32)[:50]
def run(path):
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: x[i:i+1]})[0] for i in range(len(x))])
print(float(np.max(np.abs(run(onnx_path) - run(ort_path)))))
"#;
    let out = Command::new("python3")
        .args(["-c", script, onnx, ort, inputs])
        .output()
        .ok()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            std::env::var_os("EDGEFIT_REQUIRE_ONNXRUNTIME").is_none(),
            "python onnxruntime check failed: {err}"
        );
        eprintln!("note: skipping the Python onnxruntime check: {err}");
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

#[test]
fn both_samples_convert_run_the_same_and_list_their_operators() {
    if !onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (model, op) in [("mnist-cnn", "Conv"), ("digits-mlp", "Gemm")] {
        let src = format!("sample-models/{model}/model.onnx");
        let out = dir.path().join(format!("{model}.ort"));
        let o = edgefit(&["ort-format", &src, "--out", out.to_str().unwrap(), "--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["schema"], "edgefit.ort-format/1");
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(v["size_bytes"].as_u64().unwrap(), bytes.len() as u64);
        // A flatbuffer with onnxruntime's file identifier.
        assert_eq!(&bytes[4..8], b"ORTM", "{model}");
        let config =
            std::fs::read_to_string(out.with_extension("required_operators.config")).unwrap();
        let line = config
            .lines()
            .find(|l| l.starts_with("ai.onnx;"))
            .expect("the default domain's line");
        assert!(
            line.split(';').nth(2).unwrap().split(',').any(|o| o == op),
            "{config}"
        );
        let inputs = root().join(format!("sample-models/{model}/test_inputs.npy"));
        if let Some(diff) = python_difference(
            root().join(&src).to_str().unwrap(),
            out.to_str().unwrap(),
            inputs.to_str().unwrap(),
        ) {
            assert!(diff <= 1e-5, "{model}: the .ort file differs by {diff}");
        }
    }
}

#[test]
fn the_opened_model_is_never_overwritten() {
    if !onnxruntime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.onnx");
    std::fs::copy(root().join("sample-models/digits-mlp/model.onnx"), &model).unwrap();
    let before = std::fs::read(&model).unwrap();
    let o = edgefit(&[
        "ort-format",
        model.to_str().unwrap(),
        "--out",
        model.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("overwrite"));
    assert_eq!(std::fs::read(&model).unwrap(), before);
}
