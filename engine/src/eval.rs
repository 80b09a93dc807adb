//! Measuring a model: outputs over a dataset (in parallel), accuracy against labels, fidelity
//! against a reference model's outputs, and latency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::job::{CancelToken, ProgressSink, report};
use crate::runtime::Runnable;

/// Samples per parallel work unit: progress and cancellation are checked between units.
const CHUNK: usize = 16;

/// The first output of `model` for every sample of `data`, in order. Samples run in parallel
/// (rayon), each inference on the model's own thread count.
pub fn run_dataset<M: Runnable + ?Sized>(
    model: &M,
    data: &Dataset,
    progress: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<Vec<Vec<f32>>> {
    let expected: usize = model.input_shape().iter().product();
    if data.sample_len() != expected {
        return Err(Error::Dataset {
            reason: format!(
                "samples have shape {:?} ({} values) but the model's input is {:?} ({expected} values)",
                data.sample_shape,
                data.sample_len(),
                model.input_shape()
            ),
            path: data.description.clone().into(),
        });
    }
    let total = data.len() as u64;
    let done = AtomicU64::new(0);
    report(progress, "running samples", 0, total);
    let indices: Vec<usize> = (0..data.len()).collect();
    let chunks: Vec<Vec<Vec<f32>>> = indices
        .par_chunks(CHUNK)
        .map(|chunk| {
            cancel.check()?;
            let outputs = chunk
                .iter()
                .map(|&i| model.run(data.sample(i)).map(|mut o| o.swap_remove(0)))
                .collect::<Result<Vec<_>>>()?;
            let n = done.fetch_add(chunk.len() as u64, Ordering::Relaxed) + chunk.len() as u64;
            report(progress, "running samples", n, total);
            Ok(outputs)
        })
        .collect::<Result<_>>()?;
    Ok(chunks.into_iter().flatten().collect())
}

/// Top-1 and top-5 accuracy on labelled samples.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Accuracy {
    /// Fraction of samples whose highest output is the label.
    pub top1: f64,
    /// Fraction whose label is among the five highest outputs.
    pub top5: f64,
    pub samples: usize,
}

/// Indices of the `k` largest values, largest first (NaN ranks lowest).
pub fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    let key = |i: usize| {
        if values[i].is_nan() {
            f32::NEG_INFINITY
        } else {
            values[i]
        }
    };
    order.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
    order.truncate(k);
    order
}

/// Accuracy of `outputs` against `labels`.
pub fn accuracy(outputs: &[Vec<f32>], labels: &[i64]) -> Accuracy {
    let mut top1 = 0usize;
    let mut top5 = 0usize;
    for (out, &label) in outputs.iter().zip(labels) {
        let best = top_k(out, 5);
        if best.first().is_some_and(|&b| b as i64 == label) {
            top1 += 1;
        }
        if best.iter().any(|&b| b as i64 == label) {
            top5 += 1;
        }
    }
    let n = outputs.len().min(labels.len()).max(1) as f64;
    Accuracy {
        top1: top1 as f64 / n,
        top5: top5 as f64 / n,
        samples: outputs.len().min(labels.len()),
    }
}

/// How closely a model's outputs follow a reference's, sample by sample.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Fidelity {
    /// Fraction of samples whose top-1 class is the reference's.
    pub agreement: f64,
    /// Output signal-to-noise ratio in dB over all samples (`null` when identical).
    pub sqnr_db: Option<f64>,
    /// Largest absolute difference of any output value.
    pub max_abs_err: f64,
    pub samples: usize,
}

/// Fidelity of `outputs` against `reference` outputs of the same samples.
pub fn fidelity(reference: &[Vec<f32>], outputs: &[Vec<f32>]) -> Fidelity {
    let mut agree = 0usize;
    let (mut signal, mut noise, mut max_abs) = (0f64, 0f64, 0f64);
    for (r, o) in reference.iter().zip(outputs) {
        if top_k(r, 1) == top_k(o, 1) {
            agree += 1;
        }
        for (&a, &b) in r.iter().zip(o) {
            let (a, b) = (f64::from(a), f64::from(b));
            signal += a * a;
            let d = a - b;
            noise += d * d;
            max_abs = max_abs.max(d.abs());
        }
    }
    let n = reference.len().min(outputs.len());
    let sqnr = (noise > 0.0).then(|| 10.0 * (signal / noise).log10());
    Fidelity {
        agreement: agree as f64 / n.max(1) as f64,
        sqnr_db: sqnr,
        max_abs_err: max_abs,
        samples: n,
    }
}

/// Single-sample latency over repeated runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Latency {
    pub median: f64,
    pub p90: f64,
    pub min: f64,
    pub runs: usize,
    pub warmup_runs: usize,
    /// Which runtime measured it.
    pub runtime: &'static str,
    /// Threads the runtime used for one inference.
    pub threads: usize,
}

/// Times `runs` single-sample inferences of `model` on `sample` after `warmup` untimed runs,
/// one at a time on the calling thread (each inference on the model's own thread count, which
/// is reported with the runtime). Times are in milliseconds.
pub fn latency<M: Runnable + ?Sized>(
    model: &M,
    sample: &[f32],
    runs: usize,
    warmup: usize,
    cancel: &CancelToken,
) -> Result<Latency> {
    for _ in 0..warmup {
        cancel.check()?;
        model.run(sample)?;
    }
    let mut times_ms = Vec::with_capacity(runs.max(1));
    for _ in 0..runs.max(1) {
        cancel.check()?;
        let start = Instant::now();
        model.run(sample)?;
        times_ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times_ms.sort_by(f64::total_cmp);
    let at = |q: f64| times_ms[((times_ms.len() - 1) as f64 * q).round() as usize];
    Ok(Latency {
        median: at(0.5),
        p90: at(0.9),
        min: times_ms[0],
        runs: times_ms.len(),
        warmup_runs: warmup,
        runtime: model.name(),
        threads: model.threads(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_and_fidelity() {
        let outputs = vec![vec![0.1, 0.9, 0.0], vec![0.8, 0.1, 0.1]];
        let acc = accuracy(&outputs, &[1, 1]);
        assert_eq!(acc.top1, 0.5);
        assert_eq!(acc.top5, 1.0);
        let f = fidelity(&outputs, &outputs);
        assert_eq!((f.agreement, f.sqnr_db, f.max_abs_err), (1.0, None, 0.0));
        let shifted = vec![vec![0.1, 0.9, 0.0], vec![0.0, 0.9, 0.1]];
        let f = fidelity(&outputs, &shifted);
        assert_eq!(f.agreement, 0.5);
        assert!((f.max_abs_err - 0.8).abs() < 1e-6);
    }
}
