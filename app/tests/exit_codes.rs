//! Exit statuses and JSON a script can rely on (the table in the README and `app/src/exit.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use edgefit_tests::{fixture, root};

fn edgefit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgefit"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_model_below_the_quality_floor_is_written_marked_failed_and_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p50.onnx");
    let o = edgefit(&[
        "optimize",
        "sample-models/mnist-cnn/model.onnx",
        "--out",
        out.to_str().unwrap(),
        "--prune",
        "0.5",
        "--runs",
        "0",
        "--samples",
        "200",
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("quality below the floor") && err.contains("layers adding the most error"),
        "{err}"
    );
    assert!(out.is_file(), "the file is still written");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("p50.report.json")).unwrap())
            .unwrap();
    assert_eq!(report["schema"], "edgefit.optimize/1");
    assert_eq!(report["quality"]["passed"], false);
    assert!(report["quality"]["layers"].as_array().unwrap().len() >= 5);
    // A lower floor, given on the command line, passes the same plan.
    let o = edgefit(&[
        "optimize",
        "sample-models/mnist-cnn/model.onnx",
        "--out",
        out.to_str().unwrap(),
        "--prune",
        "0.5",
        "--runs",
        "0",
        "--samples",
        "200",
        "--min-sqnr",
        "3",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn every_float_output_is_judged_not_only_the_first() {
    // The first output echoes the token ids: identical whatever the compression.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("echo.onnx");
    let model = fixture("opsets/echo_first_output.onnx");
    let o = edgefit(&[
        "optimize",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--bits",
        "2",
        "--format",
        "weights-int8",
        "--runs",
        "0",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["outputs"][0]["name"], "ids_out");
    assert_eq!(report["outputs"][0]["float"], false);
    assert_eq!(report["outputs"][1]["name"], "scores");
    assert_eq!(report["quality"]["worst_output"], "scores");
    assert!(report["quality"]["worst_sqnr_db"].as_f64().unwrap() < 20.0);
    // Read by a person: the headline says which output it is about, and the worst one.
    let o = edgefit(&[
        "optimize",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--bits",
        "2",
        "--format",
        "weights-int8",
        "--runs",
        "0",
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("fidelity of `ids_out`"), "{text}");
    assert!(
        text.contains("the float output `scores`: output SQNR"),
        "{text}"
    );
}

#[test]
fn usage_errors_exit_2_and_json_names_its_schema() {
    let o = edgefit(&["optimize", "sample-models/mnist-cnn/model.onnx"]);
    assert_eq!(o.status.code(), Some(2), "missing --out: {}", stderr(&o));
    // Bad values are usage errors, found before any model is read (this one does not exist).
    for bad in [
        &["--bits", "11"][..],
        &["--clipping", "foo"],
        &["--clipping", "percentile:20"],
        &["--prune", "1.5"],
        &["--min-agreement", "2"],
        // A combination that cannot work: full-range weights on a saturating target.
        &["--format", "qdq-int8", "--weight-range", "full"],
    ] {
        let mut args = vec!["optimize", "/no/such/model.onnx", "--out", "/tmp/x.onnx"];
        args.extend_from_slice(bad);
        let o = edgefit(&args);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr(&o));
        assert!(
            !stderr(&o).contains("/no/such/model.onnx"),
            "{}",
            stderr(&o)
        );
    }
    // An I/O error says its OS message once.
    let o = edgefit(&["inspect", "/no/such/model.onnx"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    let o = edgefit(&["inspect", "sample-models/digits-mlp/model.onnx", "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["schema"], "edgefit.inspect/1");
    assert!(v["schema"].as_str().is_some() && v.get("parameters").is_some());
    let o = edgefit(&[
        "eval",
        "sample-models/digits-mlp/model.onnx",
        "--runs",
        "1",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["schema"], "edgefit.eval/1");
}

#[test]
fn an_export_a_model_cannot_take_is_refused_before_anything_is_written() {
    // qdq-int8 of an opset-9 model that cannot move to opset 10: exit 1 with the choice.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("up.onnx");
    let model = fixture("opsets/opset9_upsample.onnx");
    let o = edgefit(&[
        "optimize",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--format",
        "qdq-int8",
        "--runs",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("Upsample"), "{}", stderr(&o));
    assert!(!out.exists());
}
