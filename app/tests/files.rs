//! Files a user has are never lost: outputs checked against inputs before any work, written
//! as one unit through exclusive temporary files, and Ctrl-C leaves nothing behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use edgefit_tests::{root, sample_model};

fn edgefit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgefit"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn an_input_named_like_a_sidecar_of_the_output_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    // A model whose name is what `--out out.onnx` writes its report to.
    let input = dir.path().join("out.report.json");
    std::fs::copy(sample_model("digits-mlp"), &input).unwrap();
    let before = std::fs::read(&input).unwrap();
    let started = Instant::now();
    let o = edgefit(&[
        "optimize",
        input.to_str().unwrap(),
        "--out",
        dir.path().join("out.onnx").to_str().unwrap(),
        "--format",
        "fp16",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(std::fs::read(&input).unwrap(), before);
    assert_eq!(listing(dir.path()), vec!["out.report.json"]);
    // Refused before the work, not after it.
    assert!(started.elapsed() < Duration::from_secs(20));
    // The same for the model itself given as its own output.
    let o = edgefit(&[
        "optimize",
        input.to_str().unwrap(),
        "--out",
        input.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(std::fs::read(&input).unwrap(), before);
}

#[cfg(unix)]
#[test]
fn ctrl_c_cancels_removes_temporary_files_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("slow.onnx");
    // Reconstruction runs the model twice per pruned layer: several seconds of work.
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgefit"))
        .args([
            "optimize",
            sample_model("mnist-cnn").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--prune",
            "0.5",
            "--reconstruct",
            "--format",
            "qdq-int8",
            "--runs",
            "200",
            // tract and 200 latency runs: several seconds more, so the signal lands mid-job.
            "--runtime",
            "tract",
        ])
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert_eq!(
        listing(dir.path()),
        Vec::<String>::new(),
        "nothing written, no temporary file"
    );
}
