//! `--runtime`, `--input-shape` and the onnxruntime library from the command line, each in a
//! fresh process (onnxruntime is loaded at most once per process).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use edgefit_tests::{fixture, onnxruntime, sample_model as sample};

fn edgefit(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgefit"));
    command.args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn a_missing_library_is_a_clean_error() {
    let model = sample("digits-mlp");
    let model = model.to_str().unwrap();
    let not_a_library = fixture("not_onnx.onnx");
    for (args, env) in [
        (
            vec!["eval", model, "--runtime", "onnxruntime"],
            vec![("EDGEFIT_ONNXRUNTIME_LIB", "/nonexistent")],
        ),
        (
            vec!["bench", model, "--runtime", "both", "--runs", "2"],
            vec![(
                "EDGEFIT_ONNXRUNTIME_LIB",
                "/nonexistent/libonnxruntime.so.1.32.0",
            )],
        ),
        (
            vec![
                "eval",
                model,
                "--runtime",
                "onnxruntime",
                "--onnxruntime-lib",
                not_a_library.to_str().unwrap(),
            ],
            vec![],
        ),
        (
            vec!["eval", model, "--runtime", "onnxruntime"],
            vec![("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")],
        ),
    ] {
        let o = edgefit(&args, &env);
        let (_, err) = text(&o);
        assert!(!o.status.success(), "{args:?}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.contains("pip install onnxruntime"), "{args:?}: {err}");
        assert!(err.contains("EDGEFIT_ONNXRUNTIME_LIB="), "{args:?}: {err}");
        assert!(err.lines().count() <= 2, "{args:?}: {err}");
    }
    // tract needs nothing installed.
    let o = edgefit(
        &["eval", model, "--samples", "20"],
        &[("EDGEFIT_ONNXRUNTIME_LIB", "/nonexistent")],
    );
    assert!(o.status.success(), "{:?}", text(&o));
}

#[test]
fn tract_failures_name_the_op_and_suggest_onnxruntime() {
    let model = fixture("runtimes/loop_ort_only.onnx");
    let o = edgefit(&["eval", model.to_str().unwrap()], &[]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("`Loop`")
            && err.contains("refine_loop")
            && err.contains("--runtime onnxruntime"),
        "{err}"
    );
    assert!(
        err.lines().count() <= 2 && !err.contains("panicked"),
        "{err}"
    );
    if onnxruntime() {
        let o = edgefit(
            &[
                "eval",
                model.to_str().unwrap(),
                "--runtime",
                "onnxruntime",
                "--json",
            ],
            &[],
        );
        let (out, err) = text(&o);
        assert!(o.status.success(), "{err}");
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json["runtime"], "onnxruntime");
        assert_eq!(json["input_shape"], serde_json::json!([1, 16]));
    }
}

#[test]
fn input_shapes_for_symbolic_dims() {
    let model = fixture("runtimes/symbolic_chain.onnx");
    let model = model.to_str().unwrap();
    // Out of the box: batch 1, the unknown image dims a stated default, said in the report.
    let o = edgefit(&["eval", model, "--runs", "1", "--json"], &[]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["input_shape"], serde_json::json!([1, 3, 224, 224]));
    let data = json["data"].as_str().unwrap();
    assert!(
        data.contains("`x` at [1, 3, 224, 224] (batch 1, height 224, width 224 chosen)"),
        "{data}"
    );
    let mut runtimes = vec!["tract"];
    if onnxruntime() {
        runtimes.push("onnxruntime");
    }
    for runtime in runtimes {
        for shape in ["x=1,3,16,16", "x=1,3,24,20"] {
            let o = edgefit(
                &[
                    "eval",
                    model,
                    "--runtime",
                    runtime,
                    "--input-shape",
                    shape,
                    "--runs",
                    "2",
                    "--json",
                ],
                &[],
            );
            let (out, err) = text(&o);
            assert!(o.status.success(), "{runtime} {shape}: {err}");
            let json: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(json["latency_ms"]["runtime"], runtime);
            assert_eq!(json["latency_ms"]["threads"], 1);
        }
    }
    let o = edgefit(&["eval", model, "--input-shape", "image=1,3,8,8"], &[]);
    let (_, err) = text(&o);
    assert!(
        !o.status.success() && err.contains("no input `image`"),
        "{err}"
    );
}

#[test]
fn bench_both_prints_both_latencies_and_their_ratio() {
    if !onnxruntime() {
        return;
    }
    let model = sample("mnist-cnn");
    let o = edgefit(
        &[
            "bench",
            model.to_str().unwrap(),
            "--runtime",
            "both",
            "--runs",
            "5",
        ],
        &[],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("latency (tract, 1 thread)"), "{out}");
    assert!(out.contains("latency (onnxruntime, 1 thread)"), "{out}");
    assert!(out.contains("tract / onnxruntime:"), "{out}");
    let o = edgefit(
        &[
            "bench",
            model.to_str().unwrap(),
            "--runtime",
            "both",
            "--runs",
            "5",
            "--threads",
            "2",
            "--json",
        ],
        &[],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["latency_ms"][0]["runtime"], "tract");
    assert_eq!(json["latency_ms"][1]["runtime"], "onnxruntime");
    assert_eq!(json["latency_ms"][1]["threads"], 2);
    assert!(json["tract_over_onnxruntime"].as_f64().unwrap() > 0.0);
    // eval in both runtimes: the same accuracy, onnxruntime's outputs against tract's.
    let o = edgefit(
        &[
            "eval",
            sample("digits-mlp").to_str().unwrap(),
            "--runtime",
            "both",
            "--json",
        ],
        &[],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        json["tract"]["accuracy"]["top1"],
        json["onnxruntime"]["accuracy"]["top1"]
    );
    assert_eq!(json["onnxruntime_vs_tract"]["agreement"], 1.0);
    assert!(
        json["onnxruntime_vs_tract"]["max_abs_err"]
            .as_f64()
            .unwrap()
            < 1e-4
    );
}

#[test]
fn optimize_and_compare_in_onnxruntime() {
    if !onnxruntime() {
        return;
    }
    let model = sample("digits-mlp");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("int8.onnx");
    let o = edgefit(
        &[
            "optimize",
            model.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--format",
            "qdq-int8",
            "--runtime",
            "onnxruntime",
            "--samples",
            "200",
            "--runs",
            "5",
        ],
        &[],
    );
    let (stdout, err) = text(&o);
    assert!(o.status.success(), "{stdout}\n{err}");
    assert!(stdout.contains("runtime: onnxruntime"), "{stdout}");
    assert!(stdout.contains("verification: passed"), "{stdout}");
    let o = edgefit(
        &[
            "compare",
            model.to_str().unwrap(),
            out.to_str().unwrap(),
            "--runtime",
            "onnxruntime",
            "--samples",
            "200",
            "--json",
        ],
        &[],
    );
    let (stdout, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["b"]["runtime"], "onnxruntime");
    assert!(json["fidelity"]["agreement"].as_f64().unwrap() > 0.9);
}

#[test]
fn input_values_for_the_inputs_the_data_does_not_feed() {
    let model = fixture("runtimes/three_inputs.onnx");
    let model = model.to_str().unwrap();
    // Out of the box: the first input fed, the others held at a stated value.
    let o = edgefit(&["eval", model, "--runs", "1", "--json"], &[]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let data = json["data"].as_str().unwrap();
    assert!(
        data.contains("`h` held at 0") && data.contains("`k` held at 0"),
        "{data}"
    );
    assert_eq!(json["fixed_inputs"][0]["name"], "h");
    let mut runtimes = vec!["tract"];
    if onnxruntime() {
        runtimes.push("onnxruntime");
    }
    for runtime in runtimes {
        let o = edgefit(
            &[
                "eval",
                model,
                "--runtime",
                runtime,
                "--input-value",
                "h=0.5",
                "--input-value",
                "k=2",
                "--json",
            ],
            &[],
        );
        let (out, err) = text(&o);
        assert!(o.status.success(), "{runtime}: {err}");
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json["input_shape"], serde_json::json!([1, 8]));
        assert_eq!(json["fixed_inputs"][1]["name"], "k");
        assert_eq!(json["fixed_inputs"][1]["value"], 2.0);
    }
}

#[test]
fn optimize_reads_the_output_asked_for() {
    if !onnxruntime() {
        return;
    }
    // The classifier's first output is its label; its probabilities come through ZipMap.
    let model = fixture("runtimes/zipmap_classifier.onnx");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fp16.onnx");
    let run = |output: Option<&str>| {
        let mut args = vec![
            "optimize",
            model.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--format",
            "fp16",
            "--runtime",
            "onnxruntime",
            "--runs",
            "0",
            "--json",
        ];
        if let Some(o) = output {
            args.extend(["--output", o]);
        }
        let o = edgefit(&args, &[]);
        let (stdout, err) = text(&o);
        assert!(o.status.success(), "{stdout}\n{err}");
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap()
    };
    let probabilities = run(Some("output_probability"));
    assert_eq!(probabilities["evaluated_output"], "output_probability");
    assert_eq!(probabilities["verification"]["passed"], true);
    let label = run(None);
    assert!(label.get("evaluated_output").is_none(), "{label}");
    // The flag reaches the runtime: a tensor the model does not have is a clear error.
    let o = edgefit(
        &[
            "optimize",
            model.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--runtime",
            "onnxruntime",
            "--output",
            "no_such_tensor",
        ],
        &[],
    );
    let (stdout, err) = text(&o);
    assert!(!o.status.success(), "{stdout}");
    assert!(err.contains("no_such_tensor"), "{err}");
}
