//! The `edgefit` command line, driven as a CI script would.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use edgefit_tests::root;

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
fn bench_analysis_scaling_prints_each_size_and_the_per_node_ratio() {
    let out = edgefit(&[
        "bench-analysis",
        "--scaling",
        "60,120",
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
    let sizes = v["sizes"].as_array().unwrap();
    assert_eq!(sizes.len(), 2);
    assert!(sizes[1]["nodes"].as_u64().unwrap() > sizes[0]["nodes"].as_u64().unwrap());
    assert!(sizes[0]["total_ms"].as_f64().unwrap() > 0.0);
    assert!(v["per_node_ratio"].as_f64().unwrap() > 0.0);
    let bad = edgefit(&["bench-analysis", "--scaling", "10,x"]);
    assert!(!bad.status.success());
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

/// A `.npy` file of float32 `values` shaped `shape` (or int64 labels).
fn write_npy(path: &Path, descr: &str, shape: &[usize], bytes: &[u8]) {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape_text = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(bytes);
    std::fs::write(path, out).unwrap();
}

fn eval_top1(args: &[&str]) -> f64 {
    let out = edgefit(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["accuracy"]["top1"].as_f64().unwrap()
}

#[test]
fn image_folders_take_their_preprocessing_from_flags() {
    // 100 test digits of the sample CNN as 8-bit PNGs, one sub-folder per class (the pixels the
    // sample's arrays were made from), and the same pixels preprocessed by hand as arrays.
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    let arrays = dir.path().join("arrays");
    std::fs::create_dir_all(&arrays).unwrap();
    let read =
        |name: &str| std::fs::read(root().join("sample-models/mnist-cnn").join(name)).unwrap();
    let inputs = read("test_inputs.npy");
    let labels = read("test_labels.npy");
    let header = |b: &[u8]| 10 + u16::from_le_bytes([b[8], b[9]]) as usize;
    let x: Vec<f32> = inputs[header(&inputs)..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let label_bytes = &labels[header(&labels)..];
    let label_width = label_bytes.len() / 1000;
    let mut preprocessed = Vec::new();
    let mut kept_labels: Vec<i64> = Vec::new();
    for i in 0..100 {
        let label = label_bytes[i * label_width] as usize;
        let pixels: Vec<u8> = x[i * 784..(i + 1) * 784]
            .iter()
            .map(|v| ((v * 0.3081 + 0.1307) * 255.0).round().clamp(0.0, 255.0) as u8)
            .collect();
        let class_dir = images.join(label.to_string());
        std::fs::create_dir_all(&class_dir).unwrap();
        image::GrayImage::from_raw(28, 28, pixels.clone())
            .unwrap()
            .save(class_dir.join(format!("{i:03}.png")))
            .unwrap();
        // Same order as the folder reader: by class, then by file name.
        preprocessed.push((label, i, pixels));
    }
    preprocessed.sort_by_key(|(label, i, _)| (*label, *i));
    let mut values = Vec::new();
    for (label, _, pixels) in &preprocessed {
        kept_labels.push(*label as i64);
        for &p in pixels {
            values.extend(((f32::from(p) / 255.0 - 0.1307) / 0.3081).to_le_bytes());
        }
    }
    write_npy(&arrays.join("x.npy"), "<f4", &[100, 1, 28, 28], &values);
    let label_values: Vec<u8> = kept_labels.iter().flat_map(|l| l.to_le_bytes()).collect();
    write_npy(&arrays.join("y.npy"), "<i8", &[100], &label_values);
    std::fs::write(
        arrays.join("dataset.json"),
        r#"{"format": "edgefit-dataset/1", "inputs": "x.npy", "labels": "y.npy", "num_classes": 10}"#,
    )
    .unwrap();

    let model = "sample-models/mnist-cnn/model.onnx";
    let images = images.to_str().unwrap();
    let expected = eval_top1(&["eval", model, "--data", arrays.to_str().unwrap(), "--json"]);
    let with_flags = eval_top1(&[
        "eval",
        model,
        "--data",
        images,
        "--channels",
        "gray",
        "--mean",
        "0.1307",
        "--std",
        "0.3081",
        "--json",
    ]);
    assert_eq!(with_flags, expected);
    assert!(expected > 0.9, "{expected}");
    // Without the normalisation the same pixels score differently: the flags were applied.
    let unnormalised = eval_top1(&[
        "eval",
        model,
        "--data",
        images,
        "--channels",
        "gray",
        "--json",
    ]);
    assert_ne!(unnormalised, expected);
    // Flags that cannot apply are refused with the reason.
    let out = edgefit(&[
        "eval",
        model,
        "--data",
        arrays.to_str().unwrap(),
        "--resize",
        "32x32",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("image folder"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = edgefit(&["eval", model, "--data", images, "--resize", "32by32"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("HEIGHTxWIDTH"));
}

#[test]
fn inspect_infers_macs_at_a_given_input_shape() {
    let model = "tests/fixtures/runtimes/minus_one_dims.onnx";
    let json = |extra: &[&str]| {
        let mut args = vec!["inspect", model, "--json"];
        args.extend(extra);
        let out = edgefit(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    // -1 dims: the convolution's output size, and so its MACs, are unknown.
    let open = json(&[]);
    assert_eq!(open["macs_complete"], false, "{}", open["macs"]);
    // Conv 3x3, 3 -> 4 channels, padded, on 10x14: 4 * 27 * 140 multiply-adds.
    let fixed = json(&["--input-shape", "x=1,3,10,14"]);
    assert_eq!(fixed["macs_complete"], true);
    assert_eq!(fixed["macs"], 4 * 27 * 140);
    let twice = json(&["--input-shape", "x=1,3,20,14"]);
    assert_eq!(twice["macs"], 2 * 4 * 27 * 140);
    let out = edgefit(&["inspect", model, "--input-shape", "y=1,3,10,14"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`y`"));
}

#[test]
fn bench_and_bench_apply_print_one_json_shape_each() {
    let model = edgefit_tests::sample_model("digits-mlp");
    let o = edgefit(&[
        "bench",
        model.to_str().unwrap(),
        "--runtime",
        "tract",
        "--runs",
        "3",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["schema"], "edgefit.bench/2");
    // A list even for one runtime: the same shape as --runtime both.
    let latencies = json["latency_ms"].as_array().unwrap();
    assert_eq!(latencies.len(), 1);
    assert_eq!(latencies[0]["runtime"], "tract");
    assert!(json["tract_over_onnxruntime"].is_null());

    let o = edgefit(&[
        "bench-apply",
        "--parameters",
        "20000",
        "--nodes",
        "30",
        "--runs",
        "1",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["schema"], "edgefit.bench-apply/1");
    assert_eq!(json["layers"], 10);
    for key in ["whole_model_change_ms", "one_layer_change_ms"] {
        assert!(
            json[key].as_f64().is_some_and(|ms| ms >= 0.0),
            "{key}: {json}"
        );
    }
}
