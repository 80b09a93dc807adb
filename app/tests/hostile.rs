//! Hostile files never crash, hang, exhaust memory or print a panic: each fixture of
//! tests/fixtures/make_hostile_fixtures.py reproduces one failure the fuzzer found, run
//! through the real binary (a segfault or a hang cannot be caught in-process).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgefit_tests::{fixture, root};

/// Runs edgefit with a deadline: (exit code, stderr, elapsed). Killed past the deadline.
fn run(args: &[&str], deadline: Duration) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgefit"))
        .args(args)
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code(), reader.join().unwrap(), started.elapsed());
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("edgefit {args:?} hung past {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

const FIXTURES: &[&str] = &[
    "if_empty_cond.onnx",
    "macs_overflow.onnx",
    "string_huge.onnx",
    "conv_dims_overflow.onnx",
    "gemm_alloc.onnx",
    "huge_input.onnx",
    "pads_hang.onnx",
    "constant_of_shape.onnx",
    "hostile_names.onnx",
];

#[test]
fn every_hostile_fixture_gives_a_clean_answer_in_every_command() {
    let dir = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        let path = fixture(&format!("hostile/{name}"));
        let model = path.to_str().unwrap();
        let out = dir.path().join(format!("{name}.out.onnx"));
        let commands: [Vec<&str>; 4] = [
            vec!["inspect", model],
            vec!["inspect", model, "--json"],
            vec!["eval", model, "--runs", "1"],
            vec![
                "optimize",
                model,
                "--out",
                out.to_str().unwrap(),
                "--format",
                "weights-int8",
                "--runs",
                "0",
            ],
        ];
        for args in commands {
            let (code, stderr, elapsed) = run(&args, Duration::from_secs(60));
            // 0 (done), 1 (a clear error) or 4 (quality): never a crash (101 panic, 134
            // abort, 139 segfault, None: killed by a signal).
            assert!(
                matches!(code, Some(0 | 1 | 4)),
                "{name} {args:?}: exit {code:?} after {elapsed:?}\n{stderr}"
            );
            assert!(!stderr.contains("panicked"), "{name} {args:?}:\n{stderr}");
            assert!(
                !stderr.contains('\u{1b}'),
                "{name} {args:?}: raw escape on the terminal"
            );
            assert!(
                elapsed < Duration::from_secs(30),
                "{name} {args:?}: {elapsed:?}"
            );
        }
    }
}

#[test]
fn every_input_the_fuzzer_ever_crashed_on_now_gives_a_clean_answer() {
    let dir = tempfile::tempdir().unwrap();
    let mut files: Vec<_> = std::fs::read_dir(fixture("fuzz"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{files:?}");
    for path in files {
        let model = path.to_str().unwrap();
        let out = dir.path().join("out.onnx");
        for args in [
            vec!["inspect", "--json", model],
            vec![
                "optimize",
                model,
                "--out",
                out.to_str().unwrap(),
                "--format",
                "weights-int8",
                "--runs",
                "0",
                "--run-timeout",
                "5",
            ],
        ] {
            let (code, stderr, elapsed) = run(&args, Duration::from_secs(60));
            // 3: a file verification failed (e.g. onnxruntime refuses a model with a name
            // defined twice): a clean answer too.
            assert!(
                matches!(code, Some(0 | 1 | 3 | 4)),
                "{model} {args:?}: exit {code:?} after {elapsed:?}\n{stderr}"
            );
            assert!(!stderr.contains("panicked"), "{model} {args:?}:\n{stderr}");
        }
    }
}

#[test]
fn a_declared_input_too_large_for_the_budget_is_refused_before_allocating() {
    let model = fixture("hostile/huge_input.onnx");
    let (code, stderr, _) = run(
        &["eval", model.to_str().unwrap(), "--runs", "1"],
        Duration::from_secs(30),
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("memory budget") && stderr.contains("[274877906944, 4]"),
        "{stderr}"
    );
}

#[cfg(unix)]
#[test]
fn pipes_and_paths_outside_the_dataset_are_refused_not_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("model.onnx");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let (code, stderr, _) = run(
        &["inspect", fifo.to_str().unwrap()],
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");

    // A dataset whose inputs are a pipe, then a file outside its folder.
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    assert!(
        Command::new("mkfifo")
            .arg(data.join("inputs.npy"))
            .status()
            .unwrap()
            .success()
    );
    let write_meta = |inputs: &str| {
        std::fs::write(
            data.join("dataset.json"),
            format!(r#"{{"format": "edgefit-dataset/1", "inputs": "{inputs}"}}"#),
        )
        .unwrap();
    };
    let model = edgefit_tests::sample_model("digits-mlp");
    for (inputs, expected) in [
        ("inputs.npy", "not a regular file"),
        ("../../../etc/passwd", "outside the dataset's folder"),
    ] {
        write_meta(inputs);
        let (code, stderr, _) = run(
            &[
                "eval",
                model.to_str().unwrap(),
                "--data",
                data.to_str().unwrap(),
            ],
            Duration::from_secs(20),
        );
        assert_eq!(code, Some(1), "{inputs}: {stderr}");
        assert!(stderr.contains(expected), "{inputs}: {stderr}");
    }
}

#[test]
fn an_npz_that_inflates_past_the_budget_is_refused_before_inflating() {
    // 16 MiB of zeros compress to a few KiB; with a 32 MiB budget its 5× decode is refused.
    let dir = tempfile::tempdir().unwrap();
    let npz = dir.path().join("bomb.npz");
    let file = std::fs::File::create(&npz).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("x.npy", options).unwrap();
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (64, 65536), }";
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    let padded = format!("{header:<118}\n");
    npy.extend_from_slice(&(padded.len() as u16).to_le_bytes());
    npy.extend_from_slice(padded.as_bytes());
    std::io::Write::write_all(&mut zip, &npy).unwrap();
    std::io::Write::write_all(&mut zip, &vec![0u8; 64 * 65536 * 4]).unwrap();
    zip.finish().unwrap();
    assert!(std::fs::metadata(&npz).unwrap().len() < 1 << 20);
    let model = edgefit_tests::sample_model("digits-mlp");
    let (code, stderr, _) = run(
        &[
            "eval",
            model.to_str().unwrap(),
            "--data",
            npz.to_str().unwrap(),
            "--memory-budget",
            "32M",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("memory budget"), "{stderr}");
}
