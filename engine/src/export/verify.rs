//! Verification of a written model: reload it from disk, check it against the ONNX operator
//! schemas of its opsets, run it in the preview's runtime (it must reproduce the preview) and
//! in the other runtime when it can be loaded here (it must agree with the preview).

use std::path::Path;

use serde::Serialize;

use crate::job::CancelToken;
use crate::measure::dataset::Dataset;
use crate::measure::eval::Difference;
use crate::measure::runtime::{BuildOptions, Runnable, RunnableModel, RuntimeKind};
use crate::model::load::load_model;
use crate::model::schema::SchemaReport;

/// Samples the written file is run on in each runtime (a file that differs at all differs on
/// every sample; more only cost time on large models).
const SAMPLES: usize = 8;
/// Another runtime agrees when its outputs are within this of the preview's, whatever the
/// SQNR: outputs near zero (an unlit detection map on generated inputs) make float noise of
/// 1e-6 look like a low SQNR.
const AGREE_ABS_FLOOR: f64 = 1e-4;
/// The preview's runtime must reproduce the preview's outputs within this.
const REPRODUCE_TOLERANCE: f64 = 1e-5;
/// Another runtime must agree with the preview at least this well (output SQNR): float
/// arithmetic in another order differs by ~1e-6 relative (observed 130 dB on the sample
/// models).
const AGREE_FLOAT_DB: f64 = 80.0;
/// ... and for files whose integer layers run as integer kernels (onnxruntime) while the
/// preview simulates them in float: a few activations one step apart (observed 66-71 dB on
/// the sample models; check_exports.py holds the same bound).
const AGREE_INTEGER_DB: f64 = 40.0;
/// Integer kernels round values within ~1e-5 of a .5 tie the other way from a float
/// simulation, and a deep network amplifies a dozen such codes into 20-40 dB of direct
/// difference (measured on five real CNNs: every local mismatch was a ±1 code at a near-tie).
/// Both computations are equally right. Then each runtime's own quality — its output SQNR
/// against the original in that runtime — is measured and reported by runtime (the quality
/// floor judges the worse), rather than a verdict that one runtime is wrong.
const SAME_FIDELITY_DB: f64 = 1.0;

/// Whether the written file reproduces the preview.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    /// Every check below passed.
    pub passed: bool,
    /// The preview's runtime (the one that must reproduce the preview exactly).
    pub runtime: &'static str,
    /// Samples run in the preview's runtime.
    pub samples: usize,
    /// Largest difference between the reloaded file's outputs in the preview's runtime and
    /// the preview's.
    #[serde(serialize_with = "crate::measure::eval::json_float")]
    pub max_abs_diff: f64,
    pub tolerance: f64,
    /// One line per check.
    pub message: String,
    /// The file against the ONNX operator schemas of its opsets.
    pub schema: SchemaVerdict,
    /// One verdict per runtime, the preview's first.
    pub runtimes: Vec<RuntimeVerdict>,
}

/// The schema check of a written file.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SchemaVerdict {
    pub passed: bool,
    /// What it was checked against (`onnx 1.23.2 operator schemas`).
    pub schemas: String,
    /// Problems the export introduced (each fails the verification).
    pub problems: Vec<String>,
    /// Problems the original model already had (reported, not counted against the export).
    pub inherited: Vec<String>,
    /// Ops of domains the schemas do not cover, not checked.
    pub unchecked_ops: Vec<String>,
}

/// One runtime's verdict on the written file.
#[derive(Clone, Debug, Serialize)]
pub struct RuntimeVerdict {
    pub runtime: &'static str,
    /// `reproduces` for the preview's runtime, `agrees` for another.
    pub check: &'static str,
    /// Whether the runtime was used: `false` when it cannot be loaded here (onnxruntime not
    /// installed) or, for tract as the second runtime, lacks an op the file uses — neither
    /// fails the verification. onnxruntime refusing to load the file does.
    pub ran: bool,
    pub passed: bool,
    pub samples: usize,
    #[serde(serialize_with = "crate::measure::eval::json_float")]
    pub max_abs_diff: f64,
    /// Output SQNR against the preview (`null` when identical).
    #[serde(serialize_with = "crate::measure::eval::json_db")]
    pub sqnr_db: Option<f64>,
    /// What passing means.
    pub criterion: String,
    pub message: String,
    /// For a file with integer kernels whose runtimes differ beyond rounding: the output SQNR
    /// against the original model measured in this runtime (the preview's own is in the
    /// report's `fidelity`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fidelity_sqnr_db: Option<f64>,
}

/// What [`verify_export`] needs besides the file.
pub struct VerifyInputs<'a> {
    /// The preview's runtime.
    pub runtime: RuntimeKind,
    pub data: &'a Dataset,
    /// The preview's outputs on `data`.
    pub expected: &'a [Vec<f32>],
    pub input_shape: &'a [usize],
    pub build: &'a BuildOptions,
    /// The original model's schema check: problems it already had are not the export's.
    pub original_schema: &'a SchemaReport,
    /// Whether onnxruntime runs the file's integer layers as integer kernels (qdq-int8):
    /// the agreement bound between the runtimes is then [`AGREE_INTEGER_DB`], or the same
    /// fidelity to the original ([`SAME_FIDELITY_DB`]).
    pub integer_kernels: bool,
    /// The original model and its outputs in the preview's runtime, for that comparison.
    pub original: Option<OriginalRef<'a>>,
}

/// The original model of a verification, and its outputs in the preview's runtime.
#[derive(Clone, Copy)]
pub struct OriginalRef<'a> {
    pub proto: &'a crate::model::proto::ModelProto,
    pub dir: Option<&'a Path>,
    pub outputs: &'a [Vec<f32>],
}

/// Reloads `path` and checks it: schemas, the preview's runtime, the other runtime.
pub fn verify_export(path: &Path, inputs: &VerifyInputs<'_>, cancel: &CancelToken) -> Verification {
    let reloaded = match load_model(path, &crate::job::NoProgress, cancel) {
        Ok(m) => Some(m),
        Err(e) => {
            let mut v = failed(
                inputs.runtime,
                format!("the written file does not load: {e}"),
            );
            v.schema.problems.push(e.to_string());
            return v;
        }
    };
    let Some(reloaded) = reloaded else {
        return failed(inputs.runtime, "the written file does not load".to_owned());
    };
    let schema = schema_verdict(
        &crate::model::schema::check_model(&reloaded.proto),
        inputs.original_schema,
    );
    let preview = run_verdict(&reloaded.proto, path, inputs, inputs.runtime, cancel);
    let other_kind = match inputs.runtime {
        RuntimeKind::Tract => RuntimeKind::OnnxRuntime,
        RuntimeKind::OnnxRuntime => RuntimeKind::Tract,
    };
    let other = match other_kind.available() {
        Ok(()) => run_verdict(&reloaded.proto, path, inputs, other_kind, cancel),
        Err(e) => not_run(other_kind, format!("not available here: {e}")),
    };
    let passed = schema.passed && preview.passed && (other.passed || !other.ran);
    let mut lines = Vec::new();
    lines.push(if schema.passed {
        format!("valid against the {}", schema.schemas)
    } else {
        format!(
            "NOT valid against the {}: {}",
            schema.schemas,
            schema.problems.join("; ")
        )
    });
    lines.push(preview.message.clone());
    lines.push(other.message.clone());
    Verification {
        passed,
        runtime: inputs.runtime.name(),
        samples: preview.samples,
        max_abs_diff: preview.max_abs_diff,
        tolerance: REPRODUCE_TOLERANCE,
        message: lines.join("; "),
        schema,
        runtimes: vec![preview, other],
    }
}

fn failed(runtime: RuntimeKind, message: String) -> Verification {
    Verification {
        passed: false,
        runtime: runtime.name(),
        samples: 0,
        max_abs_diff: f64::NAN,
        tolerance: REPRODUCE_TOLERANCE,
        message,
        schema: SchemaVerdict::default(),
        runtimes: Vec::new(),
    }
}

fn schema_verdict(written: &SchemaReport, original: &SchemaReport) -> SchemaVerdict {
    let new = written.new_since(original);
    SchemaVerdict {
        passed: new.is_empty(),
        schemas: written.schemas.clone(),
        problems: new.iter().map(ToString::to_string).collect(),
        inherited: original.problems.iter().map(ToString::to_string).collect(),
        unchecked_ops: written.unchecked_ops.clone(),
    }
}

fn not_run(runtime: RuntimeKind, message: String) -> RuntimeVerdict {
    RuntimeVerdict {
        runtime: runtime.name(),
        check: "agrees",
        ran: false,
        passed: false,
        samples: 0,
        max_abs_diff: f64::NAN,
        sqnr_db: None,
        criterion: String::new(),
        message: format!("{runtime}: {message}"),
        fidelity_sqnr_db: None,
    }
}

/// Runs the file in `runtime` and compares with the preview.
fn run_verdict(
    proto: &crate::model::proto::ModelProto,
    path: &Path,
    inputs: &VerifyInputs<'_>,
    runtime: RuntimeKind,
    cancel: &CancelToken,
) -> RuntimeVerdict {
    let reproduce = runtime == inputs.runtime;
    // Either way round: one of the two runtimes computes integer kernels, the other floats.
    let bound_db = if inputs.integer_kernels {
        AGREE_INTEGER_DB
    } else {
        AGREE_FLOAT_DB
    };
    let criterion = if reproduce {
        format!("the preview's outputs within {REPRODUCE_TOLERANCE:e}")
    } else {
        format!(
            "output SQNR against the preview ≥ {bound_db} dB, or every output within {AGREE_ABS_FLOOR:e} of it"
        )
    };
    let verdict = |ran, passed, samples, diff: &Difference, message: String| RuntimeVerdict {
        runtime: runtime.name(),
        check: if reproduce { "reproduces" } else { "agrees" },
        ran,
        passed,
        samples,
        max_abs_diff: diff.max_abs(),
        sqnr_db: diff.sqnr_db(),
        criterion: criterion.clone(),
        message: format!("{runtime}: {message}"),
        fidelity_sqnr_db: None,
    };
    let none = Difference::default();
    let runnable = match RunnableModel::build_with(
        runtime,
        proto,
        path.parent(),
        inputs.input_shape,
        &[],
        inputs.build,
    ) {
        Ok(r) => r,
        // tract lacks ops onnxruntime has (Loop, some If): that is not the file's fault.
        Err(e) if !reproduce && runtime == RuntimeKind::Tract => {
            return verdict(false, false, 0, &none, format!("not run ({e})"));
        }
        Err(e) => {
            return verdict(
                true,
                false,
                0,
                &none,
                format!("the written file does not load: {e}"),
            );
        }
    };
    let n = SAMPLES.min(inputs.data.len()).min(inputs.expected.len());
    let mut diff = Difference::default();
    // The samples run in parallel (a large model in tract takes half a second each), except
    // a large model in onnxruntime, where each concurrent run builds another session.
    let runs: Vec<std::result::Result<Vec<f32>, String>> = {
        use rayon::prelude::*;
        (0..n)
            .into_par_iter()
            .with_min_len(min_len(runtime, proto, n))
            .map(|i| {
                if cancel.is_cancelled() {
                    return Err("cancelled".to_owned());
                }
                runnable
                    .run(inputs.data.sample(i))
                    .map(|mut o| o.swap_remove(0))
                    .map_err(|e| format!("the written file fails on sample {i}: {e}"))
            })
            .collect()
    };
    let mut outputs_here = Vec::with_capacity(n);
    for (i, (want, run)) in inputs.expected.iter().zip(runs).enumerate() {
        let got = match run {
            Ok(o) => o,
            Err(message) => return verdict(true, false, i, &diff, message),
        };
        if got.len() != want.len() {
            return verdict(
                true,
                false,
                i,
                &diff,
                format!(
                    "sample {i}: {} outputs instead of {}",
                    got.len(),
                    want.len()
                ),
            );
        }
        diff.add(want, &got);
        outputs_here.push(got);
    }
    let sqnr = diff.sqnr_db();
    let mut passed = if reproduce {
        diff.nonfinite == 0 && diff.max_abs <= REPRODUCE_TOLERANCE
    } else {
        diff.nonfinite == 0
            && (sqnr.is_none_or(|db| db >= bound_db) || diff.max_abs <= AGREE_ABS_FLOOR)
    };
    // Integer kernels against a float simulation: the same quality, if not the same values.
    let mut same_quality = None;
    if !reproduce && !passed && inputs.integer_kernels && diff.nonfinite == 0 {
        same_quality = same_fidelity(inputs, runtime, &outputs_here, n, cancel);
        // Measured in both: each runtime's quality is reported as its own (see
        // SAME_FIDELITY_DB); only a runtime that cannot be measured fails here.
        passed = same_quality.is_some();
    }
    let sqnr_text = match sqnr {
        None => "identical".to_owned(),
        Some(db) if db.is_finite() => format!("SQNR {db:.1} dB"),
        Some(_) => format!(
            "{} values NaN or infinite where the preview's are not",
            diff.nonfinite
        ),
    };
    let message = match (reproduce, passed, same_quality) {
        (false, _, Some((here, there))) if (here - there).abs() <= SAME_FIDELITY_DB => format!(
            "same quality as the preview on {n} samples: output SQNR against the original \
             {here:.1} dB here, {there:.1} dB in the preview (directly {sqnr_text}: integer \
             kernels round near-ties the other way, and the network amplifies them)"
        ),
        (false, _, Some((here, there))) => format!(
            "computes the integer layers in its own way: output SQNR against the original \
             {here:.1} dB here against {there:.1} dB in the preview on {n} samples (directly \
             {sqnr_text}; near-tie rounding amplified by the network) — both are reported"
        ),
        (true, true, _) => format!("reloaded file reproduces the preview on {n} samples"),
        (true, false, _) => format!(
            "reloaded file differs from the preview by up to {:.3e} on {n} samples",
            diff.max_abs()
        ),
        (false, true, None) => format!("agrees with the preview on {n} samples ({sqnr_text})"),
        (false, false, None) => format!(
            "DISAGREES with the preview on {n} samples ({sqnr_text}, max |Δ| {:.3e}; needs {criterion})",
            diff.max_abs()
        ),
    };
    let mut v = verdict(true, passed, n, &diff, message);
    v.fidelity_sqnr_db = same_quality
        .filter(|(here, there)| (here - there).abs() > SAME_FIDELITY_DB)
        .map(|(here, _)| here);
    v
}

/// (output SQNR against the original in `runtime`, the same in the preview), when the original
/// runs in `runtime`.
/// Models above this size run their verification samples one after the other in onnxruntime:
/// a second concurrent run would build a second session (seconds, and another copy of the
/// weights).
const PARALLEL_SESSION_MAX_BYTES: u64 = 64 << 20;

/// The fewest samples one rayon task runs: all of them (one task, one session) for a large
/// model in onnxruntime, else one each.
fn min_len(runtime: RuntimeKind, proto: &crate::model::proto::ModelProto, n: usize) -> usize {
    let large = crate::model::proto::Message::compute_size(proto) > PARALLEL_SESSION_MAX_BYTES;
    if runtime == RuntimeKind::OnnxRuntime && large {
        n.max(1)
    } else {
        1
    }
}

fn same_fidelity(
    inputs: &VerifyInputs<'_>,
    runtime: RuntimeKind,
    outputs_here: &[Vec<f32>],
    n: usize,
    cancel: &CancelToken,
) -> Option<(f64, f64)> {
    let original = inputs.original?;
    let model = RunnableModel::build_with(
        runtime,
        original.proto,
        original.dir,
        inputs.input_shape,
        &[],
        inputs.build,
    )
    .ok()?;
    let original_here: Vec<Vec<f32>> = {
        use rayon::prelude::*;
        (0..n)
            .into_par_iter()
            .with_min_len(min_len(runtime, original.proto, n))
            .map(|i| {
                if cancel.is_cancelled() {
                    return None;
                }
                model
                    .run(inputs.data.sample(i))
                    .ok()
                    .map(|mut o| o.swap_remove(0))
            })
            .collect::<Option<_>>()?
    };
    let here = crate::measure::eval::fidelity(&original_here, outputs_here).sqnr_db?;
    let there = crate::measure::eval::fidelity(
        &original.outputs[..n.min(original.outputs.len())],
        &inputs.expected[..n],
    )
    .sqnr_db?;
    (here.is_finite() && there.is_finite()).then_some((here, there))
}

/// Reloads `path` from disk and checks its outputs on the first samples of `data` against
/// `expected` (the preview's), in tract only.
pub fn verify_written(
    path: &Path,
    data: &Dataset,
    expected: &[Vec<f32>],
    input_shape: &[usize],
    cancel: &CancelToken,
) -> RuntimeVerdict {
    verify_written_in(
        RuntimeKind::Tract,
        path,
        data,
        expected,
        input_shape,
        &BuildOptions::default(),
        cancel,
    )
}

/// [`verify_written`] in `runtime`: the file must reproduce `expected` (outputs of the same
/// runtime), built as `build` says (inputs held at a value, the output read).
pub fn verify_written_in(
    runtime: RuntimeKind,
    path: &Path,
    data: &Dataset,
    expected: &[Vec<f32>],
    input_shape: &[usize],
    build: &BuildOptions,
    cancel: &CancelToken,
) -> RuntimeVerdict {
    let reloaded = match load_model(path, &crate::job::NoProgress, cancel) {
        Ok(m) => m,
        Err(e) => {
            let mut v = not_run(runtime, format!("the written file does not load: {e}"));
            v.ran = true;
            v.check = "reproduces";
            return v;
        }
    };
    let original_schema = SchemaReport::default();
    let inputs = VerifyInputs {
        runtime,
        data,
        expected,
        input_shape,
        build,
        original_schema: &original_schema,
        integer_kernels: false,
        original: None,
    };
    run_verdict(&reloaded.proto, path, &inputs, runtime, cancel)
}
