//! The `edgefit` command line, driven as a CI script would.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn edgefit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgefit"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

#[test]
fn inspect_json_has_the_documented_keys() {
    for model in [
        "sample-models/mnist-cnn/model.onnx",
        "sample-models/digits-mlp/model.onnx",
    ] {
        let out = edgefit(&["inspect", model, "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for key in [
            "parameters",
            "weight_bytes",
            "nodes",
            "ops",
            "inputs",
            "outputs",
            "layers",
            "warnings",
        ] {
            assert!(v.get(key).is_some(), "{model}: missing `{key}`");
        }
        let layer = &v["layers"][0];
        for key in ["name", "op", "parameters", "macs", "bytes", "stats"] {
            assert!(layer.get(key).is_some(), "{model}: layer lacks `{key}`");
        }
        assert_eq!(v["inputs"][0]["name"], "input");
        assert_eq!(v["outputs"][0]["dtype"], "float32");
        assert!(
            v["tensors"][0].get("histogram").is_none(),
            "histograms only on request"
        );
    }
    let out = edgefit(&[
        "inspect",
        "sample-models/digits-mlp/model.onnx",
        "--json",
        "--histograms",
        "--bins",
        "8",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["tensors"][0]["histogram"]["counts"]
            .as_array()
            .unwrap()
            .len(),
        8
    );
}

#[test]
fn inspect_table_lists_layers_and_totals() {
    let out = edgefit(&["inspect", "sample-models/mnist-cnn/model.onnx"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Parameters  20,522"), "{text}");
    assert!(text.contains("block1.dw.conv"), "{text}");
    assert!(text.contains("input float32 [1, 1, 28, 28]"), "{text}");
}

#[test]
fn errors_go_to_stderr_with_a_failing_exit_code() {
    for (file, expected) in [
        ("tests/fixtures/empty.onnx", "empty"),
        ("tests/fixtures/truncated.onnx", "truncated"),
        ("tests/fixtures/external_missing/model.onnx", "missing"),
        ("does/not/exist.onnx", "cannot open"),
    ] {
        let out = edgefit(&["inspect", file, "--json"]);
        assert!(!out.status.success(), "{file}");
        assert!(out.stdout.is_empty(), "{file}: nothing on stdout");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with("error: ") && err.contains(expected),
            "{file}: {err}"
        );
    }
}

#[test]
fn bench_analysis_prints_its_figures() {
    let out = edgefit(&[
        "bench-analysis",
        "--parameters",
        "200000",
        "--nodes",
        "60",
        "--runs",
        "1",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["nodes"], 60);
    assert!(v["parameters"].as_u64().unwrap() > 150_000);
    assert!(v["total_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn profile_reports_per_layer_times() {
    let out = edgefit(&[
        "profile",
        "sample-models/mnist-cnn/model.onnx",
        "--runs",
        "5",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let layers = v["layers"].as_array().unwrap();
    assert!(layers.len() > 10);
    let share: f64 = layers.iter().map(|l| l["fraction"].as_f64().unwrap()).sum();
    assert!((share - 1.0).abs() < 1e-6, "{share}");
    assert!(
        layers
            .iter()
            .any(|l| l["name"] == "stem.conv" && l["ms"].as_f64().unwrap() > 0.0)
    );
}
