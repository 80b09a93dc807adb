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

#[test]
fn search_writes_the_smallest_measured_plan_that_keeps_the_floor() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("searched.onnx");
    let run = edgefit(&[
        "search",
        MLP,
        "--min-sqnr",
        "45",
        "--runs",
        "0",
        "--runtime",
        "tract",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(v["schema"], "edgefit.search/1");
    let search = &v["search"];
    let evaluations = search["evaluations"].as_array().unwrap();
    assert!(
        !evaluations.is_empty() && evaluations.len() <= 5,
        "{search}"
    );
    for e in evaluations {
        let (predicted, measured) = (
            e["predicted_sqnr_db"].as_f64().unwrap(),
            e["measured_sqnr_db"].as_f64().unwrap(),
        );
        // The additive-noise prediction, checked against each measured pick.
        assert!((predicted - measured).abs() < 1.5, "{e}");
        assert_eq!(e["passed"], measured >= 45.0, "{e}");
    }
    let chosen = search["chosen"].as_u64().unwrap() as usize;
    let front = search["front"].as_array().unwrap();
    assert!(chosen > 0 && chosen < front.len());
    // Smaller than the float model, and the written file is the chosen plan, verified.
    let export = &v["export"];
    assert_eq!(export["quality"]["passed"], true, "{export}");
    // Each pick is measured by the optimize job itself: the chosen pick's figures are the
    // written file's.
    let pick = evaluations
        .iter()
        .find(|e| e["point"].as_u64() == Some(chosen as u64))
        .unwrap();
    assert_eq!(pick["measured_sqnr_db"], export["quality"]["worst_sqnr_db"]);
    assert_eq!(pick["size_bytes"], export["compressed"]["size_bytes"]);
    assert_eq!(export["verification"]["passed"], true, "{export}");
    assert!(export["fidelity"]["sqnr_db"].as_f64().unwrap() >= 45.0);
    let written = std::fs::metadata(&out).unwrap().len();
    let original = std::fs::metadata(root().join(MLP)).unwrap().len();
    assert!(written * 2 < original, "{written} vs {original}");
    assert!(dir.path().join("searched.recipe.json").is_file());
}

#[test]
fn search_that_no_plan_passes_writes_nothing_and_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never.onnx");
    let run = edgefit(&[
        "search",
        MLP,
        "--min-sqnr",
        "200",
        "--bits",
        "8",
        "--no-prune",
        "--runtime",
        "tract",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        run.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stderr).contains("nothing was written"));
    assert!(!out.exists());
    // An accuracy drop needs labels; generated inputs have none.
    let model = "tests/fixtures/constant_weights.onnx";
    let run = edgefit(&[
        "search",
        model,
        "--max-drop",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("labelled data"));
    // A constraint is required.
    let run = edgefit(&["search", MLP, "--out", out.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(2));
}

#[test]
fn search_with_gptq_measures_and_writes_compensated_plans() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("gptq.onnx");
    let run = edgefit(&[
        "search",
        MLP,
        "--min-sqnr",
        "40",
        "--gptq",
        "--runs",
        "0",
        "--runtime",
        "tract",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let export = &v["export"];
    assert_eq!(export["recipe"]["defaults"]["error_compensation"], true);
    for layer in export["layers"].as_array().unwrap() {
        let notes = layer["notes"].to_string();
        assert!(!notes.contains("no error compensation"), "{layer}");
    }
    assert!(export["quality"]["worst_sqnr_db"].as_f64().unwrap() >= 40.0);
}
