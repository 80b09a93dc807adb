//! The two runtimes: tract (built in) and onnxruntime (loaded from an installed library).
//!
//! onnxruntime tests run when its library is found (see `runtime::onnxruntime::load`); with
//! `EDGEFIT_REQUIRE_ONNXRUNTIME` set (CI sets it after `pip install onnxruntime`), a missing
//! library is a failure instead of a skip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use edgefit_engine::compress::plan::{Precision, Recipe};
use edgefit_engine::export::build::ExportFormat;
use edgefit_engine::measure::dataset::{Dataset, generated_inputs, load_calibration, load_dataset};
use edgefit_engine::measure::eval::{accuracy, latency, run_dataset};
use edgefit_engine::measure::runtime::{BuildOptions, Runnable, RunnableModel, RuntimeKind};
use edgefit_engine::pipeline::{
    InputSetting, OptimizeOptions, merge_input_settings, optimize, parse_input_shape,
    parse_input_value, resolve_input_shape, resolve_inputs, verify_written_in,
};
use edgefit_engine::{CancelToken, Error, LoadedModel, NoProgress, load_model};
use edgefit_tests::{SAMPLE_MODELS, fixture, onnxruntime, sample_model};

fn open(path: &std::path::Path) -> LoadedModel {
    load_model(path, &NoProgress, &CancelToken::new()).unwrap()
}

fn build(runtime: RuntimeKind, model: &LoadedModel, shape: &[usize]) -> RunnableModel {
    RunnableModel::build(runtime, &model.proto, model.path.parent(), shape, &[])
        .unwrap_or_else(|e| panic!("{runtime} on {}: {e}", model.path.display()))
}

fn runtime_message(e: &Error) -> String {
    match e {
        Error::Runtime { runtime, reason } => {
            assert_eq!(*runtime, "tract");
            reason.clone()
        }
        other => panic!("expected a runtime error, got {other}"),
    }
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter()
                .zip(y)
                .map(|(p, q)| (f64::from(*p) - f64::from(*q)).abs())
        })
        .fold(0.0, f64::max)
}

/// A tract error a user can read: one line, not a dump, with the way out.
fn assert_readable(message: &str) {
    assert!(!message.contains('\n'), "one line: {message}");
    assert!(message.len() < 600, "short: {message}");
    assert!(message.contains("--runtime onnxruntime"), "{message}");
}

#[test]
fn runtime_names_parse() {
    for kind in RuntimeKind::ALL {
        assert_eq!(RuntimeKind::parse(kind.name()), Some(kind));
    }
    assert_eq!(RuntimeKind::parse("ort"), Some(RuntimeKind::OnnxRuntime));
    assert_eq!(RuntimeKind::parse("tvm"), None);
    assert_eq!(RuntimeKind::default(), RuntimeKind::Tract);
    assert_eq!(
        serde_json::to_string(&RuntimeKind::OnnxRuntime).unwrap(),
        "\"onnxruntime\""
    );
}

#[test]
fn a_loop_model_runs_in_onnxruntime_and_tract_names_the_op() {
    let model = open(&fixture("runtimes/loop_ort_only.onnx"));
    let e = RunnableModel::build(RuntimeKind::Tract, &model.proto, None, &[1, 16], &[])
        .err()
        .expect("tract has no Loop");
    let message = runtime_message(&e);
    eprintln!("tract on loop_ort_only.onnx: {message}");
    assert_readable(&message);
    assert!(
        message.contains("`Loop`") && message.contains("`refine_loop`"),
        "{message}"
    );
    if !onnxruntime() {
        return;
    }
    let data = generated_inputs(&[16], 20, 7);
    let ort = build(RuntimeKind::OnnxRuntime, &model, &[1, 16]);
    let outputs = run_dataset(&ort, &data, &NoProgress, &CancelToken::new()).unwrap();
    // The same computation from the weights: h = tanh(h W + b) three times, y = h Wfc^T + bfc.
    let weight = |name: &str| model.weight(name).unwrap().values.clone().unwrap();
    let (w, b, fw, fb) = (
        weight("loop_w"),
        weight("loop_b"),
        weight("fc_w"),
        weight("fc_b"),
    );
    for (i, out) in outputs.iter().enumerate() {
        let mut h: Vec<f32> = data.sample(i).to_vec();
        for _ in 0..3 {
            h = (0..16)
                .map(|j| {
                    let s: f32 = (0..16).map(|k| h[k] * w[k * 16 + j]).sum();
                    (s + b[j]).tanh()
                })
                .collect();
        }
        let y: Vec<f32> = (0..10)
            .map(|c| (0..16).map(|k| h[k] * fw[c * 16 + k]).sum::<f32>() + fb[c])
            .collect();
        assert_eq!(out.len(), 10);
        for (a, e) in out.iter().zip(&y) {
            assert!((a - e).abs() < 1e-4, "sample {i}: {out:?} vs {y:?}");
        }
    }
}

#[test]
fn an_if_with_disagreeing_branches_runs_in_onnxruntime_and_tract_says_where_it_fails() {
    let model = open(&fixture("runtimes/if_mismatch.onnx"));
    let data = generated_inputs(&[16], 16, 3);
    let tract_outputs =
        match RunnableModel::build(RuntimeKind::Tract, &model.proto, None, &[1, 16], &[]) {
            Err(e) => {
                let message = runtime_message(&e);
                eprintln!("tract on if_mismatch.onnx: {message}");
                assert_readable(&message);
                assert!(message.contains("`branch` (If)"), "{message}");
                None
            }
            // Should tract learn to run it, it must agree with onnxruntime below.
            Ok(tract) => {
                Some(run_dataset(&tract, &data, &NoProgress, &CancelToken::new()).unwrap())
            }
        };
    if !onnxruntime() {
        return;
    }
    let ort = build(RuntimeKind::OnnxRuntime, &model, &[1, 16]);
    let outputs = run_dataset(&ort, &data, &NoProgress, &CancelToken::new()).unwrap();
    assert!(outputs.iter().all(|o| o.len() == 10));
    if let Some(tract) = tract_outputs {
        let diff = max_abs_diff(&tract, &outputs);
        assert!(diff < 1e-5, "tract and onnxruntime disagree by {diff}");
    }
}

#[test]
fn symbolic_dims_run_at_two_concrete_shapes_in_both_runtimes() {
    let with_ort = onnxruntime();
    for (file, per_sample) in [
        ("symbolic_dims.onnx", None),
        ("runtimes/symbolic_chain.onnx", Some(5)),
        ("runtimes/minus_one_dims.onnx", Some(4)),
    ] {
        let model = open(&fixture(file));
        // Nothing to take a shape from: a clear error naming the input and the option.
        let e = resolve_input_shape(&model, None, &[]).unwrap_err();
        assert!(
            e.to_string().contains("`x`") && e.to_string().contains("--input-shape x="),
            "{e}"
        );
        for shape in [vec![1, 3, 16, 16], vec![2, 3, 12, 20]] {
            let explicit = [InputSetting::shape("x", shape.clone())];
            assert_eq!(resolve_input_shape(&model, None, &explicit).unwrap(), shape);
            let data = generated_inputs(&shape, 4, 11);
            let tract = build(RuntimeKind::Tract, &model, &shape);
            let expected_len = match per_sample {
                Some(n) => shape[0] * n,
                None => shape[0] * 4 * shape[2] * shape[3],
            };
            let t = run_dataset(&tract, &data, &NoProgress, &CancelToken::new()).unwrap();
            assert!(
                t.iter().all(|o| o.len() == expected_len),
                "{file} {shape:?}"
            );
            if with_ort {
                let ort = build(RuntimeKind::OnnxRuntime, &model, &shape);
                let o = run_dataset(&ort, &data, &NoProgress, &CancelToken::new()).unwrap();
                let diff = max_abs_diff(&t, &o);
                assert!(
                    diff < 1e-4,
                    "{file} {shape:?}: tract and onnxruntime differ by {diff}"
                );
            }
        }
        // Data of a fixed shape gives the default: batch 1 + the sample's shape.
        let data = generated_inputs(&[3, 8, 10], 2, 1);
        assert_eq!(
            resolve_input_shape(&model, Some(&data), &[]).unwrap(),
            [1, 3, 8, 10]
        );
        // A shape that contradicts the model's fixed dims is refused, naming the dim.
        let wrong = [InputSetting::shape("x", vec![1, 4, 8, 8])];
        let e = resolve_input_shape(&model, None, &wrong).unwrap_err();
        assert!(e.to_string().contains("dim 1"), "{e}");
        let unknown = [InputSetting::shape("image", vec![1, 3, 8, 8])];
        let e = resolve_input_shape(&model, None, &unknown).unwrap_err();
        assert!(e.to_string().contains("no input `image`"), "{e}");
    }
}

#[test]
fn input_shapes_parse() {
    assert_eq!(
        parse_input_shape("x=1,3,224,224").unwrap(),
        InputSetting::shape("x", vec![1, 3, 224, 224])
    );
    assert_eq!(
        parse_input_shape("input.1=1x3x8x8").unwrap(),
        InputSetting::shape("input.1", vec![1, 3, 8, 8])
    );
    assert_eq!(
        parse_input_shape("sr=").unwrap(),
        InputSetting::shape("sr", vec![])
    );
    assert_eq!(
        parse_input_value("sr=16000").unwrap(),
        InputSetting::value("sr", 16000.0)
    );
    assert_eq!(
        parse_input_value("mask=true").unwrap(),
        InputSetting::value("mask", 1.0)
    );
    for bad in ["sr", "=1", "sr=abc", "sr=nan"] {
        assert!(parse_input_value(bad).is_err(), "{bad}");
    }
    let merged = merge_input_settings(vec![
        parse_input_shape("state=2,1,128").unwrap(),
        parse_input_value("sr=16000").unwrap(),
        parse_input_value("state=0").unwrap(),
    ])
    .unwrap();
    assert_eq!(
        merged,
        [
            InputSetting {
                name: "state".to_owned(),
                shape: Some(vec![2, 1, 128]),
                value: Some(0.0)
            },
            InputSetting::value("sr", 16000.0)
        ]
    );
    assert!(
        merge_input_settings(vec![
            InputSetting::value("sr", 1.0),
            InputSetting::value("sr", 2.0)
        ])
        .is_err()
    );
    for bad in ["x", "=1,2", "x=1,,2", "x=1,0", "x=-1,3", "x=a"] {
        assert!(parse_input_shape(bad).is_err(), "{bad}");
    }
}

fn sample_data(name: &str) -> Dataset {
    load_dataset(sample_model(name).parent().unwrap(), None).unwrap()
}

#[test]
fn tract_and_onnxruntime_agree_on_the_sample_models() {
    if !onnxruntime() {
        return;
    }
    for name in SAMPLE_MODELS {
        let model = open(&sample_model(name));
        let data = sample_data(name);
        let labels = data.labels.clone().unwrap();
        let shape = resolve_input_shape(&model, Some(&data), &[]).unwrap();
        let cancel = CancelToken::new();
        let tract = build(RuntimeKind::Tract, &model, &shape);
        let ort = build(RuntimeKind::OnnxRuntime, &model, &shape);
        let t = run_dataset(&tract, &data, &NoProgress, &cancel).unwrap();
        let o = run_dataset(&ort, &data, &NoProgress, &cancel).unwrap();
        let (ta, oa) = (accuracy(&t, &labels), accuracy(&o, &labels));
        assert_eq!(ta.samples, labels.len());
        assert!(ta.samples >= 400);
        assert!(
            (ta.top1 - oa.top1).abs() <= 0.002,
            "{name}: top-1 tract {} vs onnxruntime {}",
            ta.top1,
            oa.top1
        );
        let diff = max_abs_diff(&t, &o);
        assert!(diff <= 1e-4, "{name}: outputs differ by {diff}");
        eprintln!(
            "{name}: top-1 tract {:.2}% onnxruntime {:.2}%, max abs diff {diff:.2e}",
            ta.top1 * 100.0,
            oa.top1 * 100.0
        );
    }
}

#[test]
fn latency_reports_the_runtime_and_its_threads() {
    let model = open(&sample_model("digits-mlp"));
    let data = sample_data("digits-mlp").first(1);
    let shape = resolve_input_shape(&model, Some(&data), &[]).unwrap();
    let cancel = CancelToken::new();
    let tract = build(RuntimeKind::Tract, &model, &shape);
    let l = latency(&tract, data.sample(0), 5, 1, &cancel).unwrap();
    assert_eq!((l.runtime, l.threads, l.runs), ("tract", 1, 5));
    if !onnxruntime() {
        return;
    }
    let ort = RunnableModel::build_with(
        RuntimeKind::OnnxRuntime,
        &model.proto,
        None,
        &shape,
        &[],
        &BuildOptions {
            threads: 2,
            ..BuildOptions::default()
        },
    )
    .unwrap();
    assert_eq!((ort.name(), ort.threads()), ("onnxruntime", 2));
    let l = latency(&ort, data.sample(0), 5, 1, &cancel).unwrap();
    assert_eq!((l.runtime, l.threads), ("onnxruntime", 2));
    assert!(l.median > 0.0 && l.p90 >= l.median);
}

#[test]
fn intermediate_tensors_come_out_of_both_runtimes_alike() {
    if !onnxruntime() {
        return;
    }
    let model = open(&sample_model("mnist-cnn"));
    let data = sample_data("mnist-cnn").first(3);
    let shape = resolve_input_shape(&model, Some(&data), &[]).unwrap();
    // Every main-graph node output that is not a graph output.
    let tensors: Vec<String> = model
        .graph
        .main_nodes()
        .filter_map(|n| n.outputs.first().cloned())
        .filter(|o| !model.graph.outputs.iter().any(|g| g.name == *o))
        .take(6)
        .collect();
    assert!(!tensors.is_empty());
    let build =
        |runtime| RunnableModel::build(runtime, &model.proto, None, &shape, &tensors).unwrap();
    let (tract, ort) = (build(RuntimeKind::Tract), build(RuntimeKind::OnnxRuntime));
    assert_eq!(tract.output_names(), ort.output_names());
    for i in 0..data.len() {
        let t = tract.run(data.sample(i)).unwrap();
        let o = ort.run(data.sample(i)).unwrap();
        assert_eq!(t.len(), tensors.len() + 1);
        let diff = max_abs_diff(&t, &o);
        assert!(diff < 1e-3, "sample {i}: {diff}");
    }
}

fn int8() -> Recipe {
    let mut r = Recipe::default();
    r.defaults.precision = Precision::Int { bits: 8 };
    r
}

#[test]
fn optimize_previews_calibrates_and_verifies_in_onnxruntime() {
    if !onnxruntime() {
        return;
    }
    for (name, format) in [
        ("digits-mlp", ExportFormat::QdqInt8),
        ("mnist-cnn", ExportFormat::Fp16),
    ] {
        let model = open(&sample_model(name));
        let data = sample_data(name).first(100);
        let calibration = load_calibration(sample_model(name).parent().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.onnx");
        let mut recipe = if format == ExportFormat::QdqInt8 {
            int8()
        } else {
            Recipe::default()
        };
        recipe.defaults.prune_ratio = 0.2;
        if format == ExportFormat::QdqInt8 {
            recipe.activations.int8 = true;
        } else {
            recipe.defaults.precision = Precision::Float16;
        }
        let options = OptimizeOptions {
            recipe: &recipe,
            format,
            data: &data,
            calibration: calibration.as_ref(),
            latency_runs: 3,
            runtime: RuntimeKind::OnnxRuntime,
            input_shapes: &[],
            output: None,
        };
        let report = optimize(&model, &options, &out, &NoProgress, &CancelToken::new()).unwrap();
        let v = &report.verification;
        assert!(v.passed, "{name}: {}", v.message);
        assert_eq!(v.runtime, "onnxruntime");
        assert_eq!(report.runtime, RuntimeKind::OnnxRuntime);
        for m in [&report.original, &report.compressed] {
            let l = m.latency_ms.as_ref().unwrap();
            assert_eq!((l.runtime, l.threads), ("onnxruntime", 1));
        }
        let top1 = report.compressed.accuracy.unwrap().top1;
        assert!(top1 > 0.8, "{name}: {top1}");
        let json = std::fs::read_to_string(dir.path().join("out.report.json")).unwrap();
        assert!(json.contains("\"runtime\": \"onnxruntime\""), "{json}");
        // The written file verified in the other runtime too (same outputs within float noise
        // for fp16; QDQ is run by onnxruntime with integer kernels, so only fp16 is compared).
        if format == ExportFormat::Fp16 {
            let shape = report.input_shape.clone();
            let ort_outputs = {
                let reloaded = open(&out);
                let ort = build(RuntimeKind::OnnxRuntime, &reloaded, &shape);
                run_dataset(&ort, &data, &NoProgress, &CancelToken::new()).unwrap()
            };
            let v = verify_written_in(
                RuntimeKind::Tract,
                &out,
                &data,
                &ort_outputs,
                &shape,
                &BuildOptions::default(),
                &CancelToken::new(),
            );
            assert!(v.max_abs_diff < 1e-3, "{}", v.message);
        }
    }
}

#[test]
fn a_bad_explicit_library_is_a_clean_error_or_the_loaded_one_is_kept() {
    // Once a library is loaded, the process keeps it whatever is asked; before that, a bad
    // path is an error that says how to enable onnxruntime (the CLI tests check the error in a
    // fresh process).
    let bogus = std::path::Path::new("/nonexistent/libonnxruntime.so.1.99.0");
    match edgefit_engine::measure::runtime::onnxruntime::load(Some(bogus)) {
        Ok(path) => assert_ne!(path, bogus),
        Err(e) => {
            let message = e.to_string();
            assert!(message.contains("pip install onnxruntime"), "{message}");
            assert!(message.contains("EDGEFIT_ONNXRUNTIME_LIB"), "{message}");
        }
    }
}

#[test]
fn a_real_paddle_export_with_dynamic_dims_runs_in_both_runtimes() {
    // PaddleOCR's text-direction classifier: input x [-1, 3, -1, -1] (dim_value -1).
    let model = open(&fixture("real/ch_ppocr_mobile_v2.0_cls_infer.onnx"));
    let shape = resolve_input_shape(
        &model,
        None,
        &[InputSetting::shape("x", vec![1, 3, 48, 192])],
    )
    .unwrap();
    let data = generated_inputs(&shape[1..], 4, 5);
    assert_eq!(
        resolve_input_shape(&model, Some(&data), &[]).unwrap(),
        [1, 3, 48, 192]
    );
    let tract = build(RuntimeKind::Tract, &model, &shape);
    let t = run_dataset(&tract, &data, &NoProgress, &CancelToken::new()).unwrap();
    assert!(t.iter().all(|o| o.len() == 2));
    if !onnxruntime() {
        return;
    }
    let ort = build(RuntimeKind::OnnxRuntime, &model, &shape);
    let o = run_dataset(&ort, &data, &NoProgress, &CancelToken::new()).unwrap();
    let diff = max_abs_diff(&t, &o);
    assert!(diff < 1e-4, "tract and onnxruntime differ by {diff}");
}

#[test]
fn inputs_the_data_does_not_feed_are_held_at_a_value() {
    let model = open(&fixture("runtimes/three_inputs.onnx"));
    // Without values: which inputs, and how to give them.
    let e = resolve_inputs(&model, None, &[]).unwrap_err().to_string();
    assert!(
        e.contains("`x`, `h`, `k`") && e.contains("--input-value"),
        "{e}"
    );
    let settings = [InputSetting::value("h", 0.5), InputSetting::value("k", 2.0)];
    let inputs = resolve_inputs(&model, None, &settings).unwrap();
    assert_eq!(
        (inputs.input.as_str(), inputs.shape.as_slice()),
        ("x", &[1, 8][..])
    );
    assert_eq!(inputs.fixed.len(), 2);
    assert_eq!(inputs.fixed[1].shape, Vec::<usize>::new());
    // A value for every input leaves nothing for the data.
    let all = [
        InputSetting::value("x", 1.0),
        InputSetting::value("h", 0.5),
        InputSetting::value("k", 2.0),
    ];
    assert!(resolve_inputs(&model, None, &all).is_err());

    let w = model.weight("w").unwrap().values.clone().unwrap();
    let data = generated_inputs(&[8], 6, 9);
    let expected: Vec<Vec<f32>> = (0..data.len())
        .map(|i| {
            let x = data.sample(i);
            (0..4)
                .map(|c| 2.0 * (0..8).map(|k| (x[k] + 0.5) * w[k * 4 + c]).sum::<f32>())
                .collect()
        })
        .collect();
    let options = BuildOptions {
        fixed_inputs: inputs.fixed.clone(),
        ..BuildOptions::default()
    };
    let mut runtimes = vec![RuntimeKind::Tract];
    if onnxruntime() {
        runtimes.push(RuntimeKind::OnnxRuntime);
    }
    for runtime in runtimes {
        let runnable =
            RunnableModel::build_with(runtime, &model.proto, None, &inputs.shape, &[], &options)
                .unwrap();
        let out = run_dataset(&runnable, &data, &NoProgress, &CancelToken::new()).unwrap();
        let diff = max_abs_diff(&out, &expected);
        assert!(diff < 1e-5, "{runtime}: {diff}");
    }
    // Without the values, each runtime says which inputs the model has.
    let e = RunnableModel::build(RuntimeKind::Tract, &model.proto, None, &[1, 8], &[])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("3 inputs") && e.contains("--input-value"), "{e}");

    // optimize keeps the inputs of the written model and verifies it with the same values.
    let mut recipe = Recipe::default();
    recipe.defaults.precision = Precision::Int { bits: 8 };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("int8.onnx");
    let report = optimize(
        &model,
        &OptimizeOptions {
            recipe: &recipe,
            format: ExportFormat::WeightsInt8,
            data: &data,
            calibration: None,
            latency_runs: 2,
            runtime: RuntimeKind::Tract,
            input_shapes: &settings,
            output: None,
        },
        &out,
        &NoProgress,
        &CancelToken::new(),
    )
    .unwrap();
    assert!(
        report.verification.passed,
        "{}",
        report.verification.message
    );
    assert_eq!(report.fixed_inputs, inputs.fixed);
    let written = open(&out);
    let names: Vec<&str> = written
        .graph
        .inputs
        .iter()
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(names, ["x", "h", "k"]);
}

#[test]
fn a_zipmap_classifier_runs_in_onnxruntime_with_its_probabilities_read_in_class_order() {
    let model = open(&fixture("runtimes/zipmap_classifier.onnx"));
    let e = RunnableModel::build(RuntimeKind::Tract, &model.proto, None, &[1, 4], &[])
        .err()
        .unwrap();
    let message = runtime_message(&e);
    assert_readable(&message);
    assert!(
        message.contains("`ai.onnx.ml:ZipMap` (node `zipmap`)"),
        "{message}"
    );
    if !onnxruntime() {
        return;
    }
    let data = generated_inputs(&[4], 8, 21);
    let run = |output: Option<&str>| {
        let options = BuildOptions {
            output: output.map(str::to_owned),
            ..BuildOptions::default()
        };
        let ort = RunnableModel::build_with(
            RuntimeKind::OnnxRuntime,
            &model.proto,
            None,
            &[1, 4],
            &[],
            &options,
        )
        .unwrap();
        run_dataset(&ort, &data, &NoProgress, &CancelToken::new()).unwrap()
    };
    // softmax(x W^T + b) from the node's attributes.
    let node = model.proto.graph.node.first().unwrap();
    let floats = |name: &str| {
        node.attribute
            .iter()
            .find(|a| a.name() == name)
            .unwrap()
            .floats
            .clone()
    };
    let (w, b) = (floats("coefficients"), floats("intercepts"));
    let expected: Vec<Vec<f32>> = (0..data.len())
        .map(|i| {
            let x = data.sample(i);
            let z: Vec<f32> = (0..3)
                .map(|c| (0..4).map(|k| x[k] * w[c * 4 + k]).sum::<f32>() + b[c])
                .collect();
            let m = z.iter().copied().fold(f32::MIN, f32::max);
            let e: Vec<f32> = z.iter().map(|v| (v - m).exp()).collect();
            let total: f32 = e.iter().sum();
            e.iter().map(|v| v / total).collect()
        })
        .collect();
    for output in ["output_probability", "probabilities"] {
        let got = run(Some(output));
        let diff = max_abs_diff(&got, &expected);
        assert!(diff < 1e-5, "{output}: {diff}");
    }
    // The default first output is the label: the most probable class.
    let labels = run(None);
    for (label, p) in labels.iter().zip(&expected) {
        assert_eq!(label.len(), 1);
        assert_eq!(
            label[0] as usize,
            edgefit_engine::measure::eval::top_k(p, 1)[0]
        );
    }
    let e = RunnableModel::build_with(
        RuntimeKind::OnnxRuntime,
        &model.proto,
        None,
        &[1, 4],
        &[],
        &BuildOptions {
            output: Some("nope".to_owned()),
            ..BuildOptions::default()
        },
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("no tensor `nope`"), "{e}");
}

#[test]
fn qdq_int8_folds_batch_norm_in_onnxruntime_for_a_model_tract_cannot_run() {
    // The staged path prunes, re-estimates batch norm on the calibration data, folds it, then
    // quantizes: every run of it must happen in the user's runtime, not in tract.
    if !onnxruntime() {
        return;
    }
    let model = open(&fixture("runtimes/loop_batchnorm.onnx"));
    let data = generated_inputs(&[16], 40, 11);
    let mut recipe = int8();
    recipe.defaults.prune_ratio = 0.25;
    recipe.activations.int8 = true;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let options = OptimizeOptions {
        recipe: &recipe,
        format: ExportFormat::QdqInt8,
        data: &data,
        calibration: None,
        latency_runs: 0,
        runtime: RuntimeKind::OnnxRuntime,
        input_shapes: &[],
        output: None,
    };
    let report = optimize(&model, &options, &out, &NoProgress, &CancelToken::new())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("folded 1 BatchNormalization")),
        "{:?}",
        report.notes
    );
    assert!(
        report.verification.passed,
        "{}",
        report.verification.message
    );
    let written = open(&out);
    let ops: Vec<&str> = written
        .graph
        .main_nodes()
        .map(|n| n.op_type.as_str())
        .collect();
    assert!(!ops.contains(&"BatchNormalization"), "{ops:?}");
    assert!(
        ops.contains(&"Loop") && ops.contains(&"QuantizeLinear"),
        "{ops:?}"
    );
    assert!(
        report.fidelity.unwrap().agreement > 0.5,
        "{:?}",
        report.fidelity
    );
}

#[test]
fn integer_token_ids_feed_an_int64_input_in_both_runtimes() {
    let model = open(&fixture("runtimes/token_ids.onnx"));
    let data = load_dataset(&fixture("runtimes/token_ids.npz"), None).unwrap();
    assert_eq!(data.len(), 64);
    let labels = data.labels.clone().unwrap();
    let mut runtimes = vec![RuntimeKind::Tract];
    if onnxruntime() {
        runtimes.push(RuntimeKind::OnnxRuntime);
    }
    let mut all_outputs = Vec::new();
    for runtime in runtimes {
        let runnable = build(runtime, &model, &[1, 6]);
        let outputs = run_dataset(&runnable, &data, &NoProgress, &CancelToken::new()).unwrap();
        // The labels are the classes numpy computed from the same ids: every one is right
        // only when the ids reach the Gather as the integers they are.
        assert_eq!(accuracy(&outputs, &labels).top1, 1.0, "{runtime}");
        all_outputs.push(outputs);
    }
    if let [tract, ort] = all_outputs.as_slice() {
        assert!(max_abs_diff(tract, ort) < 1e-5);
    }
}

#[test]
fn a_sequence_of_tensors_output_is_read_in_order() {
    if !onnxruntime() {
        return;
    }
    let model = open(&fixture("runtimes/sequence_output.onnx"));
    let ort = build(RuntimeKind::OnnxRuntime, &model, &[1, 6]);
    let x: Vec<f32> = (0..6).map(|i| i as f32 - 2.5).collect();
    let outputs = ort.run(&x).unwrap();
    let doubled: Vec<f32> = x.iter().map(|v| v * 2.0).collect();
    assert_eq!(outputs[0], doubled);
}

#[test]
fn ids_one_hot_encoded_against_a_table_are_generated_over_the_table() {
    // magika compares its bytes with a constant 0..256 table (Equal, not Gather): generated
    // bytes in [0, 15] left 16 of 257 classes ever hot and calibrated its int8 ranges on that.
    let model = open(&fixture("runtimes/one_hot_bytes.onnx"));
    let auto = edgefit_engine::pipeline::auto_inputs(&model, &[]);
    assert_eq!(auto.range, (0.0, 256.0, true), "{:?}", auto.choices);
    let data = edgefit_engine::pipeline::generated_for(&model, &auto).unwrap();
    let values: Vec<f32> = (0..data.len())
        .flat_map(|i| data.sample(i).to_vec())
        .collect();
    let max = values.iter().copied().fold(f32::MIN, f32::max);
    assert!(
        max > 200.0 && values.iter().all(|v| v.fract() == 0.0),
        "max {max}"
    );
}
