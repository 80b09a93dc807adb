//! A structure-aware mutation fuzzer for edgefit, on stable Rust.
//!
//! ```sh
//! cargo run -p edgefit-tests --bin fuzz -- --target load --cases 3000          # in-process
//! cargo run -p edgefit-tests --bin fuzz -- --target optimize --cases 200 --subprocess
//! cargo run -p edgefit-tests --bin fuzz -- --target dataset --cases 2000
//! cargo run --release -p edgefit-tests --bin fuzz -- --target load --cases 1000000 --seed 7
//! ```
//!
//! Seeds are the sample models and the fixtures (`tests/fixtures/**/*.onnx`, their datasets).
//! Each case is a seed mutated 1–4 times, as bytes (truncation, bit flips, inserted, deleted
//! or duplicated ranges) or as a protobuf message (tensor dims set to 0, -1, 2^31, 2^62;
//! data types changed; data dropped, cut or lengthened; external-data entries pointing
//! outside or past the end; op types swapped; inputs renamed, dropped or duplicated; nodes
//! duplicated; attributes set to huge or zero values; opsets changed; nested subgraphs).
//!
//! Targets:
//! - `load`: load the bytes and analyse them, in this process (fast; a panic is caught and
//!   counted; a case taking longer than `--timeout` is saved and the run aborts).
//! - `optimize`: load, then the whole `optimize` job (weights-int8 on generated inputs).
//! - `dataset`: mutated `.npy` / `.npz` / `dataset.json` files read as evaluation data.
//!
//! `--subprocess` runs each case through the `edgefit` binary instead (`EDGEFIT_BIN`, default
//! target/debug/edgefit) under a 4 GiB address-space limit and a deadline, so that segfaults,
//! aborts and hangs are seen and counted. Failing inputs are written to `--crashes DIR`
//! (default target/fuzz-crashes); move the ones that matter to tests/fixtures/fuzz/, where
//! `app/tests/fuzz_regressions.rs` runs them all.
//!
//! Prints the counts (clean, error, panic, panic printed, segfault, abort, hang) and the
//! executions per second; exits 1 when any case was not clean or a clear error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgefit_engine::{AnalysisOptions, CancelToken, NoProgress, analyse};

mod mutate;

use mutate::{Rng, mutant, mutant_bytes_only};

#[derive(Default)]
struct Counts {
    cases: u64,
    clean: u64,
    error: u64,
    panic: u64,
    panic_printed: u64,
    segfault: u64,
    abort: u64,
    hang: u64,
}

impl Counts {
    fn failures(&self) -> u64 {
        self.panic + self.panic_printed + self.segfault + self.abort + self.hang
    }
}

struct Args {
    target: String,
    cases: u64,
    seed: u64,
    subprocess: bool,
    timeout: Duration,
    crashes: PathBuf,
    /// Files to run once each, in-process, instead of mutants (to replay a saved case).
    replay: Vec<PathBuf>,
}

fn parse_args() -> Args {
    let mut args = Args {
        target: "load".to_owned(),
        cases: 2000,
        seed: 1,
        subprocess: false,
        timeout: Duration::from_secs(30),
        crashes: edgefit_tests::root().join("target").join("fuzz-crashes"),
        replay: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_default();
        match a.as_str() {
            "--target" => args.target = value(),
            "--cases" => args.cases = value().parse().unwrap_or(args.cases),
            "--seed" => args.seed = value().parse().unwrap_or(args.seed),
            "--subprocess" => args.subprocess = true,
            "--timeout" => args.timeout = Duration::from_secs(value().parse().unwrap_or(30)),
            "--crashes" => args.crashes = PathBuf::from(value()),
            "--replay" => args.replay.push(PathBuf::from(value())),
            other => {
                eprintln!(
                    "fuzz: unknown argument `{other}` (see the doc comment of tests/src/bin/fuzz/main.rs)"
                );
                std::process::exit(2);
            }
        }
    }
    args
}

/// Every seed model of the repository.
fn seed_models() -> Vec<Vec<u8>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "onnx")
                && std::fs::metadata(&p).is_ok_and(|m| m.len() < 4 << 20)
            {
                out.push(p);
            }
        }
    }
    let root = edgefit_tests::root();
    let mut paths = Vec::new();
    walk(&root.join("tests").join("fixtures"), &mut paths);
    walk(&root.join("sample-models"), &mut paths);
    paths.sort();
    paths.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

fn save(crashes: &Path, kind: &str, case: u64, bytes: &[u8], ext: &str) -> PathBuf {
    let _ = std::fs::create_dir_all(crashes);
    let path = crashes.join(format!("{kind}-{case}.{ext}"));
    let _ = std::fs::write(&path, bytes);
    path
}

/// Runs `case` in this process.
fn in_process(target: &str, bytes: &[u8], dir: &Path) -> Result<(), String> {
    let path = dir.join("case.onnx");
    match target {
        "load" => {
            let model = edgefit_engine::model::load::load_model_bytes(bytes, path)
                .map_err(|e| e.to_string())?;
            analyse(
                &model,
                &AnalysisOptions::default(),
                &NoProgress,
                &CancelToken::new(),
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
        }
        "optimize" => {
            std::fs::write(&path, bytes).map_err(|e| e.to_string())?;
            let model = edgefit_engine::load_model(&path, &NoProgress, &CancelToken::new())
                .map_err(|e| e.to_string())?;
            let (data, settings) =
                edgefit_engine::pipeline::generated_data(&model, &[]).map_err(|e| e.to_string())?;
            let mut recipe = edgefit_engine::compress::plan::Recipe::default();
            recipe.defaults.precision = edgefit_engine::compress::plan::Precision::Int { bits: 8 };
            let options = edgefit_engine::pipeline::OptimizeOptions {
                recipe: &recipe,
                format: edgefit_engine::export::build::ExportFormat::WeightsInt8,
                data: &data,
                calibration: None,
                latency_runs: 0,
                runtime: edgefit_engine::measure::runtime::RuntimeKind::Tract,
                input_shapes: &settings,
                output: None,
            };
            edgefit_engine::pipeline::optimize(
                &model,
                &options,
                &dir.join("out.onnx"),
                &NoProgress,
                &CancelToken::new(),
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
        }
        _ => {
            let file = dir.join("data.npz");
            std::fs::write(&file, bytes).map_err(|e| e.to_string())?;
            edgefit_engine::measure::dataset::load_dataset(&file, None)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    }
}

/// How a subprocess ended.
enum Outcome {
    Clean,
    Error,
    Panic,
    PanicPrinted,
    Segfault,
    Abort,
    Hang,
}

fn subprocess(target: &str, bytes: &[u8], dir: &Path, timeout: Duration) -> Outcome {
    let binary = std::env::var_os("EDGEFIT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            edgefit_tests::root()
                .join("target")
                .join("debug")
                .join("edgefit")
        });
    let model = dir.join("case.onnx");
    let _ = std::fs::write(&model, bytes);
    let out = dir.join("out.onnx");
    let args: Vec<String> = match target {
        "optimize" => vec![
            "optimize".into(),
            model.display().to_string(),
            "--out".into(),
            out.display().to_string(),
            "--format".into(),
            "weights-int8".into(),
            "--runs".into(),
            "0".into(),
            "--memory-budget".into(),
            "1G".into(),
            // As in-process: a valid model that runs forever (a Loop with no trip count) is
            // stopped by onnxruntime's run deadline, not counted as a hang of the harness.
            "--run-timeout".into(),
            "5".into(),
        ],
        _ => vec![
            "inspect".into(),
            "--json".into(),
            model.display().to_string(),
        ],
    };
    // A 4 GiB address-space cap, as the issue's campaign used.
    let mut child = match Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 4194304; exec \"$0\" \"$@\"")
        .arg(&binary)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fuzz: cannot run {}: {e}", binary.display());
            std::process::exit(2);
        }
    };
    let mut stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(s) = stderr.as_mut() {
            let _ = std::io::Read::read_to_string(s, &mut text);
        }
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let text = reader.join().unwrap_or_default();
    let Some(status) = status else {
        return Outcome::Hang;
    };
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        match status.signal() {
            Some(11) | Some(7) => return Outcome::Segfault,
            Some(6) => return Outcome::Abort,
            Some(_) => return Outcome::Abort,
            None => {}
        }
    }
    match status.code() {
        Some(101) => Outcome::Panic,
        Some(134) => Outcome::Abort,
        Some(139) => Outcome::Segfault,
        _ if text.contains("panicked") => Outcome::PanicPrinted,
        Some(0) => Outcome::Clean,
        _ => Outcome::Error,
    }
}

fn main() {
    let args = parse_args();
    edgefit_engine::model::guard::set_memory_budget_bytes(1 << 30);
    edgefit_engine::model::guard::set_run_timeout(Duration::from_secs(5));
    let seeds: Vec<Vec<u8>> = match args.target.as_str() {
        "dataset" => dataset_seeds(),
        _ => seed_models(),
    };
    if seeds.is_empty() {
        eprintln!("fuzz: no seeds found under tests/fixtures and sample-models");
        std::process::exit(2);
    }
    let work = tempfile::tempdir().expect("a temporary folder");
    if !args.replay.is_empty() {
        for file in &args.replay {
            let bytes = std::fs::read(file).unwrap_or_default();
            let started = Instant::now();
            let result = edgefit_engine::model::guard::quietly(|| {
                in_process(&args.target, &bytes, work.path())
            });
            println!(
                "{}: {} in {:?}",
                file.display(),
                match &result {
                    Ok(Ok(())) => "clean".to_owned(),
                    Ok(Err(e)) => format!("error: {e}"),
                    Err(_) => "PANIC".to_owned(),
                },
                started.elapsed()
            );
        }
        return;
    }
    let mut rng = Rng(args.seed);
    let mut counts = Counts::default();
    // In-process hangs: a watchdog saves the case and stops the run.
    let current: Arc<Mutex<(u64, Instant, Vec<u8>)>> =
        Arc::new(Mutex::new((0, Instant::now(), Vec::new())));
    let done = Arc::new(AtomicBool::new(false));
    if !args.subprocess {
        let (current, done, timeout, crashes) = (
            current.clone(),
            done.clone(),
            args.timeout,
            args.crashes.clone(),
        );
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let guard = current
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if guard.1.elapsed() > timeout {
                    let path = save(&crashes, "hang", guard.0, &guard.2, "onnx");
                    eprintln!(
                        "fuzz: case {} hung past {timeout:?}; saved to {}",
                        guard.0,
                        path.display()
                    );
                    std::process::exit(1);
                }
            }
        });
    }
    let started = Instant::now();
    let mut last_case: Option<PathBuf> = None;
    for case in 0..args.cases {
        let seed = &seeds[rng.below(seeds.len())];
        let bytes = if args.target == "dataset" {
            mutant_bytes_only(seed, &mut rng)
        } else {
            mutant(seed, &mut rng)
        };
        counts.cases += 1;
        if args.subprocess {
            let outcome = subprocess(&args.target, &bytes, work.path(), args.timeout);
            let kind = match outcome {
                Outcome::Clean => {
                    counts.clean += 1;
                    None
                }
                Outcome::Error => {
                    counts.error += 1;
                    None
                }
                Outcome::Panic => {
                    counts.panic += 1;
                    Some("panic")
                }
                Outcome::PanicPrinted => {
                    counts.panic_printed += 1;
                    Some("panic-printed")
                }
                Outcome::Segfault => {
                    counts.segfault += 1;
                    Some("segfault")
                }
                Outcome::Abort => {
                    counts.abort += 1;
                    Some("abort")
                }
                Outcome::Hang => {
                    counts.hang += 1;
                    Some("hang")
                }
            };
            if let Some(kind) = kind {
                let path = save(&args.crashes, kind, case, &bytes, "onnx");
                eprintln!("fuzz: case {case}: {kind}; saved to {}", path.display());
            }
        } else {
            if let Ok(mut c) = current.lock() {
                *c = (case, Instant::now(), bytes.clone());
            }
            // The case about to run, on disk: an abort (which nothing can catch) leaves it there.
            if last_case.is_none() {
                let _ = std::fs::create_dir_all(&args.crashes);
                last_case = Some(args.crashes.join("last-case.bin"));
            }
            if let Some(path) = &last_case {
                let _ = std::fs::write(path, &bytes);
            }
            let result = edgefit_engine::model::guard::quietly(|| {
                in_process(&args.target, &bytes, work.path())
            });
            match result {
                Ok(Ok(())) => counts.clean += 1,
                Ok(Err(_)) => counts.error += 1,
                Err(_) => {
                    counts.panic += 1;
                    let ext = if args.target == "dataset" {
                        "npz"
                    } else {
                        "onnx"
                    };
                    let path = save(&args.crashes, "panic", case, &bytes, ext);
                    eprintln!("fuzz: case {case}: panic; saved to {}", path.display());
                }
            }
        }
    }
    done.store(true, Ordering::Relaxed);
    if let Some(path) = &last_case {
        let _ = std::fs::remove_file(path);
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "| target | mode | cases | clean | clear error | panic | panic printed | segfault | abort | hang | execs/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} |",
        args.target,
        if args.subprocess {
            "subprocess"
        } else {
            "in-process"
        },
        counts.cases,
        counts.clean,
        counts.error,
        counts.panic,
        counts.panic_printed,
        counts.segfault,
        counts.abort,
        counts.hang,
        counts.cases as f64 / seconds.max(1e-9)
    );
    println!(
        "fuzz: seed {}, {} seeds, {seconds:.1} s",
        args.seed,
        seeds.len()
    );
    std::process::exit(i32::from(counts.failures() > 0));
}

/// `.npz` seeds: the fixtures' archives, and one written from a sample's arrays.
fn dataset_seeds() -> Vec<Vec<u8>> {
    let root = edgefit_tests::root();
    let mut seeds: Vec<Vec<u8>> = [root.join("tests/fixtures/runtimes/token_ids.npz")]
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .collect();
    if let Ok(npy) = std::fs::read(root.join("sample-models/digits-mlp/test_inputs.npy")) {
        seeds.push(npz_of(&[("x.npy", &npy[..npy.len().min(1 << 16)])]));
    }
    seeds
}

/// A stored (uncompressed) zip of `entries`, written by hand: the fuzzer needs no zip writer.
fn npz_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let offset = out.len() as u32;
        let crc = crc32(data);
        let local = |out: &mut Vec<u8>, sig: u32| {
            out.extend_from_slice(&sig.to_le_bytes());
        };
        local(&mut out, 0x0403_4b50);
        out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&(data.len() as u32).to_le_bytes());
        central.extend_from_slice(&(data.len() as u32).to_le_bytes());
        central.extend_from_slice(&(name.len() as u16).to_le_bytes());
        central.extend_from_slice(&[0; 12]);
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let central_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&central_offset.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}
