//! `edgefit diff` driven as a script would: an export made by `edgefit optimize`, the JSON and
//! the readable report, and bad files.

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

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const MNIST: &str = "sample-models/mnist-cnn/model.onnx";

#[test]
fn diff_of_a_qdq_export_as_json_and_text() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("qdq.onnx");
    let o = edgefit(&[
        "optimize",
        MNIST,
        "--out",
        out.to_str().unwrap(),
        "--format",
        "qdq-int8",
        "--runs",
        "0",
        "--samples",
        "20",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = out.to_str().unwrap();

    let o = edgefit(&["diff", MNIST, out, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["schema"], "edgefit.diff/1");
    let added = v["added"].as_array().unwrap();
    assert!(added.iter().any(|n| n["op_type"] == "QuantizeLinear"));
    assert!(
        added
            .iter()
            .all(|n| n["b_node"].is_u64() && n["a_node"].is_null())
    );
    assert_eq!(v["summary"]["nodes_removed"], 10, "the folded batch norms");
    let weights = v["weights"].as_array().unwrap();
    let conv = weights
        .iter()
        .find(|w| w["b"]["dtype"] == "int8" && w["a"]["dtype"] == "float32")
        .unwrap();
    assert!(conv["sqnr_db"].as_f64().unwrap() > 20.0, "{conv}");
    assert_eq!(conv["b"]["bits"], 8);

    let o = edgefit(&["diff", MNIST, out]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("Added nodes (only in B)"), "{text}");
    // The inserted nodes are named: the quantize node of the model's input.
    let name = added
        .iter()
        .find(|n| n["op_type"] == "QuantizeLinear")
        .and_then(|n| n["name"].as_str())
        .unwrap();
    assert!(text.contains(name), "{name} in\n{text}");
    assert!(text.contains("QuantizeLinear") && text.contains("folded into"));
    assert!(text.contains(" dB") && text.contains("Weights:"), "{text}");
}

#[test]
fn diff_of_a_model_with_itself_says_so() {
    let o = edgefit(&["diff", MNIST, MNIST]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("0 added, 0 removed, 0 changed"), "{text}");
    assert!(text.contains("same nodes and weights"), "{text}");
}

#[test]
fn bad_files_fail_with_a_clear_message_and_status_1() {
    for (bad, expect) in [
        ("tests/fixtures/truncated.onnx", "truncated"),
        ("tests/fixtures/corrupt.onnx", "not a valid ONNX file"),
        ("tests/fixtures/no-such-file.onnx", "cannot open the model"),
    ] {
        let o = edgefit(&["diff", MNIST, bad]);
        assert_eq!(o.status.code(), Some(1), "{bad}");
        let err = stderr(&o);
        assert!(
            err.contains("model B") && err.contains(expect),
            "{bad}: {err}"
        );
        assert!(o.stdout.is_empty());
    }
    let o = edgefit(&["diff", MNIST]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "a missing argument is a usage error"
    );
}
