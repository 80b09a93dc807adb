//! The edge–cloud split on the sample models: every cut listed (both ends too), a middle cut
//! split into two valid ONNX models (checked by Python's `onnx` where installed) whose
//! head → tail reproduces the model within 1e-5 in tract and onnxruntime, fp16 and int8
//! transfer, a cut that misses a skip connection refused with nothing written, and the model
//! never overwritten; then the same through the `edgefit split` command line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use edgefit_engine::deploy::split::{
    SplitVerification, Transfer, VerifyOptions, prefix_cuts, split_model, verify_split, write_split,
};
use edgefit_engine::measure::dataset::load_dataset;
use edgefit_engine::measure::runtime::RuntimeKind;
use edgefit_engine::pipeline::resolve_inputs;
use edgefit_engine::{CancelToken, Error, LoadedModel, NoProgress, load_model};
use edgefit_tests::{SAMPLE_MODELS, onnxruntime, python_with_onnx, sample_model};

/// A copy of sample model `name` (and its data) in a fresh folder: nothing a test writes can
/// touch the bundled files.
fn copy_sample(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let source = sample_model(name);
    for entry in std::fs::read_dir(source.parent().unwrap()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let path = dir.path().join("model.onnx");
    (dir, path)
}

fn load(path: &Path) -> LoadedModel {
    load_model(path, &NoProgress, &CancelToken::new()).unwrap()
}

fn runtimes() -> Vec<RuntimeKind> {
    if onnxruntime() {
        RuntimeKind::ALL.to_vec()
    } else {
        vec![RuntimeKind::Tract]
    }
}

fn verify(model: &LoadedModel, at: &[String], transfer: Transfer) -> SplitVerification {
    let split = split_model(model, at).unwrap();
    let data = load_dataset(model.path.parent().unwrap(), None)
        .unwrap()
        .first(8);
    let inputs = resolve_inputs(model, Some(&data), &[]).unwrap();
    verify_split(
        model,
        &split,
        &VerifyOptions {
            data: &data,
            input: &inputs.input,
            input_shape: &inputs.shape,
            fixed_inputs: &inputs.fixed,
            runtimes: &runtimes(),
            transfer,
        },
        &NoProgress,
        &CancelToken::new(),
    )
    .unwrap()
}

/// Python's `onnx.checker` (full check: shape inference too) on each file.
fn check_with_onnx(files: &[&Path]) {
    let Some(python) = python_with_onnx() else {
        return;
    };
    let output = Command::new(python)
        .args([
            "-c",
            "import onnx, sys\nfor p in sys.argv[1:]:\n    onnx.checker.check_model(onnx.load(p), full_check=True)",
        ])
        .args(files)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "onnx.checker refused {files:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The cut in the middle of the execution order.
fn middle_cut(model: &LoadedModel) -> Vec<String> {
    let cuts = prefix_cuts(model);
    cuts[cuts.len() / 2].names()
}

#[test]
fn every_cut_is_listed_with_both_ends() {
    for name in SAMPLE_MODELS {
        let model = load(&sample_model(name));
        let cuts = prefix_cuts(&model);
        let n = model.graph.main_nodes().count();
        assert_eq!(cuts.len(), n + 1, "{name}");
        // Cloud-only: the input is sent; device-only: nothing, the logits stay on the device.
        assert_eq!(cuts[0].names(), vec!["input"], "{name}");
        assert!(cuts[0].tensors[0].graph_input);
        assert!(cuts[n].tensors.is_empty(), "{name}");
        assert_eq!(cuts[n].device_outputs[0].name, "logits");
        // Every size is known on these models.
        for cut in &cuts {
            assert!(cut.bytes(Transfer::Fp32).is_some(), "{name}: {cut:?}");
        }
    }
    // The CNN's residual blocks: inside one, two tensors cross (the skip and the branch).
    let model = load(&sample_model("mnist-cnn"));
    let cuts = prefix_cuts(&model);
    let inside = cuts
        .iter()
        .find(|c| c.last_node.as_deref() == Some("block1.dw.conv"))
        .unwrap();
    assert_eq!(inside.names(), vec!["down1.pw.relu", "block1.dw.conv"]);
}

#[test]
fn a_middle_cut_reproduces_the_model_in_every_runtime() {
    for name in SAMPLE_MODELS {
        let (dir, path) = copy_sample(name);
        let model = load(&path);
        let at = middle_cut(&model);
        let split = split_model(&model, &at).unwrap();
        let (head, tail) = (dir.path().join("head.onnx"), dir.path().join("tail.onnx"));
        write_split(&model, &split, &head, &tail).unwrap();
        check_with_onnx(&[&head, &tail]);
        // The written halves load and keep every node once.
        let (h, t) = (load(&head), load(&tail));
        assert_eq!(
            h.graph.nodes.len() + t.graph.nodes.len(),
            model.graph.nodes.len(),
            "{name}"
        );
        let tail_inputs: Vec<&str> = t.graph.inputs.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(
            tail_inputs,
            at.iter().map(String::as_str).collect::<Vec<_>>()
        );

        let v = verify(&model, &at, Transfer::Fp32);
        assert!(v.passed, "{name}: {v:#?}");
        for r in v.runtimes.iter() {
            assert!(r.ran, "{name}: {r:?}");
            assert!(r.max_abs_error <= 1e-5, "{name}: {r:?}");
            eprintln!(
                "{name} at {at:?}: {} max abs error {:e} (fp32 transfer, {} samples)",
                r.runtime, r.max_abs_error, v.samples
            );
        }
        assert_eq!(v.runtimes.len(), runtimes().len());
        for transfer in [Transfer::Fp16, Transfer::Int8] {
            let v = verify(&model, &at, transfer);
            for r in &v.runtimes {
                let sqnr = r.sqnr_db.unwrap_or(f64::INFINITY);
                assert!(r.passed && sqnr.is_finite() && sqnr > 10.0, "{name}: {r:?}");
                eprintln!(
                    "{name} at {at:?}: {} {transfer} transfer: SQNR {sqnr:.1} dB, max abs error {:e}, {:?} bytes sent",
                    r.runtime, r.max_abs_error, v.sent_bytes_per_sample
                );
            }
        }
    }
}

#[test]
fn a_cut_that_misses_the_skip_connection_is_refused_and_nothing_is_written() {
    let (dir, path) = copy_sample("mnist-cnn");
    let model = load(&path);
    // Inside block 1 the skip (`down1.pw.relu`) must be sent beside the branch.
    let e = split_model(&model, &["block1.pw.bn".to_owned()]).unwrap_err();
    let message = e.to_string();
    assert!(matches!(e, Error::Device { .. }), "{e:?}");
    assert!(
        message.contains("do not separate")
            && message.contains("`down1.pw.relu`")
            && message.contains("`block1.add`"),
        "{message}"
    );
    // With the skip it is a split: the server half starts at the residual add.
    let split = split_model(
        &model,
        &["down1.pw.relu".to_owned(), "block1.pw.bn".to_owned()],
    )
    .unwrap();
    assert_eq!(split.sent, vec!["down1.pw.relu", "block1.pw.bn"]);
    // Two tensors sent: the server half is fed one and holds the other per sample.
    let v = verify(&model, &split.sent, Transfer::Fp32);
    assert!(v.passed, "{v:#?}");
    for r in &v.runtimes {
        eprintln!(
            "mnist-cnn at {:?}: {} max abs error {:e}",
            split.sent, r.runtime, r.max_abs_error
        );
    }
    // The model itself is never a destination; nothing is written then.
    let tail = dir.path().join("tail.onnx");
    let before = std::fs::read(&path).unwrap();
    let e = write_split(&model, &split, &path, &tail).unwrap_err();
    assert!(matches!(e, Error::WouldOverwriteSource { .. }), "{e:?}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(!tail.exists());
}

/// The `edgefit` binary: `EDGEFIT_BIN`, else the one built beside this test (`cargo build
/// -p edgefit` puts it in the same target folder).
fn edgefit_bin() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("EDGEFIT_BIN") {
        return Some(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("edgefit");
    if bin.is_file() {
        return Some(bin);
    }
    assert!(
        std::env::var_os("EDGEFIT_REQUIRE_BIN").is_none(),
        "EDGEFIT_REQUIRE_BIN is set but {} does not exist (cargo build -p edgefit)",
        bin.display()
    );
    eprintln!(
        "note: {} not built (cargo build -p edgefit); skipping the command-line part",
        bin.display()
    );
    None
}

fn run(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin).args(args).output().unwrap()
}

fn json(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn the_command_line_lists_splits_verifies_and_refuses() {
    let Some(bin) = edgefit_bin() else { return };
    let (dir, path) = copy_sample("mnist-cnn");
    let model = path.to_str().unwrap();
    let list = json(&run(&bin, &["split", model, "--list", "--json"]));
    assert_eq!(list["schema"], "edgefit.split-list/1");
    let cuts = list["cuts"].as_array().unwrap();
    let nodes = list["nodes"].as_u64().unwrap() as usize;
    assert_eq!(cuts.len(), nodes + 1);
    assert_eq!(cuts[0]["tensors"][0]["name"], "input");
    assert_eq!(cuts[0]["bytes_fp32"], 28 * 28 * 4);
    assert_eq!(cuts[nodes]["tensors"].as_array().unwrap().len(), 0);
    let middle: Vec<String> = cuts[nodes / 2]["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    let at = middle.join(",");
    let text = run(&bin, &["split", model, "--list"]);
    assert!(text.status.success());
    assert!(String::from_utf8_lossy(&text.stdout).contains(&at));

    let head = dir.path().join("head.onnx");
    let tail = dir.path().join("tail.onnx");
    let (h, t) = (head.to_str().unwrap(), tail.to_str().unwrap());
    let ort = onnxruntime();
    let runtime = if ort { "both" } else { "tract" };
    let report = json(&run(
        &bin,
        &[
            "split",
            model,
            "--at",
            &at,
            "--head",
            h,
            "--tail",
            t,
            "--runtime",
            runtime,
            "--json",
        ],
    ));
    assert_eq!(report["schema"], "edgefit.split/1");
    let v = &report["verification"];
    assert_eq!(v["passed"], true, "{report}");
    let ran: Vec<&serde_json::Value> = v["runtimes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["ran"] == true)
        .collect();
    assert_eq!(ran.len(), if ort { 2 } else { 1 }, "{report}");
    for r in ran {
        assert!(r["max_abs_error"].as_f64().unwrap() <= 1e-5, "{report}");
    }
    check_with_onnx(&[&head, &tail]);

    let int8 = json(&run(
        &bin,
        &[
            "split",
            model,
            "--at",
            &at,
            "--head",
            h,
            "--tail",
            t,
            "--transfer",
            "int8",
            "--runtime",
            "tract",
            "--json",
        ],
    ));
    let sqnr = int8["verification"]["runtimes"][0]["sqnr_db"]
        .as_f64()
        .unwrap();
    assert!(sqnr.is_finite() && sqnr > 10.0, "{int8}");

    // Not a separating cut: exit 1, a message naming the missing tensor, nothing written.
    let (h2, t2) = (dir.path().join("h2.onnx"), dir.path().join("t2.onnx"));
    let bad = run(
        &bin,
        &[
            "split",
            model,
            "--at",
            "block1.pw.bn",
            "--head",
            h2.to_str().unwrap(),
            "--tail",
            t2.to_str().unwrap(),
        ],
    );
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("`down1.pw.relu`"), "{stderr}");
    assert!(!h2.exists() && !t2.exists());

    // The model as the head: refused before any work, the model untouched.
    let before = std::fs::read(&path).unwrap();
    let refused = run(
        &bin,
        &[
            "split",
            model,
            "--at",
            &at,
            "--head",
            model,
            "--tail",
            t2.to_str().unwrap(),
        ],
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("refusing to overwrite"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(!t2.exists());
}
