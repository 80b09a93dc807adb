//! Verification of a written model: reload it from disk, run it on the first samples and
//! compare its outputs with the preview's.

use std::path::Path;

use serde::Serialize;

use crate::dataset::Dataset;
use crate::job::CancelToken;
use crate::load::load_model;
use crate::runtime::{BuildOptions, Runnable, RunnableModel, RuntimeKind};

/// Whether the written file reproduces the preview.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    pub passed: bool,
    /// The runtime the written file was reloaded and run in.
    pub runtime: &'static str,
    pub samples: usize,
    /// Largest difference between the reloaded file's outputs and the preview's.
    pub max_abs_diff: f64,
    pub tolerance: f64,
    pub message: String,
}

/// Reloads `path` from disk and checks its outputs on the first samples of `data` against
/// `expected` (the preview's), in tract.
pub fn verify_written(
    path: &Path,
    data: &Dataset,
    expected: &[Vec<f32>],
    input_shape: &[usize],
    cancel: &CancelToken,
) -> Verification {
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

/// [`verify_written`] in `runtime` (the preview's runtime: outputs are compared with
/// outputs of the same runtime), built as `build` says (inputs held at a value, the output
/// read).
pub fn verify_written_in(
    runtime: RuntimeKind,
    path: &Path,
    data: &Dataset,
    expected: &[Vec<f32>],
    input_shape: &[usize],
    build: &BuildOptions,
    cancel: &CancelToken,
) -> Verification {
    const SAMPLES: usize = 64;
    const TOLERANCE: f64 = 1e-5;
    let fail = |message: String| Verification {
        passed: false,
        runtime: runtime.name(),
        samples: 0,
        max_abs_diff: f64::NAN,
        tolerance: TOLERANCE,
        message,
    };
    let reloaded = match load_model(path, &crate::job::NoProgress, cancel) {
        Ok(m) => m,
        Err(e) => return fail(format!("the written file does not load: {e}")),
    };
    let runnable = match RunnableModel::build_with(
        runtime,
        &reloaded.proto,
        path.parent(),
        input_shape,
        &[],
        build,
    ) {
        Ok(r) => r,
        Err(e) => return fail(format!("the written file does not run: {e}")),
    };
    let n = SAMPLES.min(data.len()).min(expected.len());
    let mut max_abs = 0f64;
    for (i, want) in expected.iter().enumerate().take(n) {
        let got = match runnable.run(data.sample(i)) {
            Ok(mut o) => o.swap_remove(0),
            Err(e) => return fail(format!("the written file fails on sample {i}: {e}")),
        };
        if got.len() != want.len() {
            return fail(format!(
                "sample {i}: {} outputs instead of {}",
                got.len(),
                want.len()
            ));
        }
        for (a, b) in got.iter().zip(want) {
            max_abs = max_abs.max((f64::from(*a) - f64::from(*b)).abs());
        }
    }
    let passed = max_abs <= TOLERANCE;
    Verification {
        passed,
        runtime: runtime.name(),
        samples: n,
        max_abs_diff: max_abs,
        tolerance: TOLERANCE,
        message: if passed {
            format!("reloaded file reproduces the preview on {n} samples")
        } else {
            format!("reloaded file differs from the preview by up to {max_abs:.3e} on {n} samples")
        },
    }
}
