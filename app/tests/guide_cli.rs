//! `edgefit sensitivity` (and later `search`) driven as a CI script would.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use edgefit_tests::root;

fn edgefit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgefit"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

const MLP: &str = "sample-models/digits-mlp/model.onnx";

#[test]
fn sensitivity_json_ranks_the_candidates_of_every_layer() {
    let out = edgefit(&[
        "sensitivity",
        MLP,
        "--samples",
        "60",
        "--bits",
        "8,2",
        "--prune-ratios",
        "0.9",
        "--runtime",
        "tract",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], "edgefit.sensitivity/1");
    assert_eq!(
        v["labels"],
        serde_json::json!(["int8", "int2", "fp16", "prune 90%"])
    );
    assert_eq!(v["samples"], 60);
    let layers = v["layers"].as_array().unwrap();
    assert!(!layers.is_empty());
    for layer in layers {
        let cells = layer["cells"].as_array().unwrap();
        assert_eq!(cells.len(), 4, "{layer}");
        let db = |i: usize| cells[i]["output_sqnr_db"].as_f64().unwrap();
        assert!(db(0) > db(1) + 10.0, "{layer}");
        assert!(
            cells[0]["accuracy"].as_f64().is_some(),
            "labelled data: {layer}"
        );
        assert!(cells[0]["bytes"].as_u64().unwrap() < layer["bytes"].as_u64().unwrap());
    }
    assert!(v["model_runs"].as_u64().unwrap() >= 60 * (1 + 4 * layers.len() as u64));
    assert!(v["original_accuracy"].as_f64().unwrap() > 0.9);
}

#[test]
fn sensitivity_prints_a_table_and_refuses_bad_bits_before_loading() {
    let out = edgefit(&[
        "sensitivity",
        MLP,
        "--samples",
        "20",
        "--bits",
        "4",
        "--no-fp16",
        "--no-prune",
        "--runtime",
        "tract",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("int4") && !text.contains("fp16"), "{text}");
    assert!(text.contains("model runs"), "{text}");
    let bad = edgefit(&["sensitivity", "no-such-model.onnx", "--bits", "9"]);
    assert_eq!(
        bad.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
