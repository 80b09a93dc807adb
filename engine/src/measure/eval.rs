//! Measuring a model: outputs over a dataset (in parallel), accuracy against labels, fidelity
//! against a reference model's outputs, and latency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::job::{CancelToken, ProgressSink, report};
use crate::measure::dataset::Dataset;
use crate::measure::runtime::Runnable;

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
    Ok(run_dataset_outputs(model, data, progress, cancel)?
        .into_iter()
        .map(|mut outputs| outputs.swap_remove(0))
        .collect())
}

/// Every selected output of `model` (its first, then the extra ones it was built with) for
/// every sample of `data`: `[sample][output][value]`.
pub fn run_dataset_outputs<M: Runnable + ?Sized>(
    model: &M,
    data: &Dataset,
    progress: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<Vec<Vec<Vec<f32>>>> {
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
    let chunks: Vec<Vec<Vec<Vec<f32>>>> = indices
        .par_chunks(CHUNK)
        .map(|chunk| {
            cancel.check()?;
            let outputs = chunk
                .iter()
                .map(|&i| model.run(data.sample(i)))
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
    let by_rank = |a: &usize, b: &usize| key(*b).total_cmp(&key(*a)).then(a.cmp(b));
    // Linear in the output size: a segmentation map or a detector's output has millions of
    // values, and sorting them all for the top 1 took seconds per sample (fuzz seed 502).
    if k == 0 {
        return Vec::new();
    }
    if k < order.len() {
        order.select_nth_unstable_by(k - 1, by_rank);
        order.truncate(k);
    }
    order.sort_by(by_rank);
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
    /// Fraction of samples whose top-1 class is the reference's (a sample whose outputs hold
    /// NaN or Inf where the reference's do not never agrees).
    pub agreement: f64,
    /// Output signal-to-noise ratio in dB over all samples: `null` when the outputs are
    /// identical, `"-inf"` when `nonfinite_values` > 0 (the outputs are broken).
    #[serde(serialize_with = "crate::measure::eval::json_db")]
    pub sqnr_db: Option<f64>,
    /// Largest absolute difference of any output value (`"inf"` when `nonfinite_values` > 0).
    #[serde(serialize_with = "crate::measure::eval::json_float")]
    pub max_abs_err: f64,
    /// Mean over samples of the cosine similarity of each sample's output vector with the
    /// reference's (1 when they point the same way; `"nan"` when `nonfinite_values` > 0).
    /// Embedding and regression outputs are judged by it where top-1 means nothing.
    #[serde(serialize_with = "crate::measure::eval::json_float")]
    pub cosine: f64,
    pub samples: usize,
    /// Output values that are NaN or infinite in one of the two and not the same value in the
    /// other: any makes the comparison fail.
    pub nonfinite_values: usize,
}

impl Fidelity {
    /// Whether the outputs are identical value for value (NaN matching NaN).
    pub fn identical(&self) -> bool {
        self.sqnr_db.is_none()
    }

    /// The SQNR as a number for ordering: `+∞` when identical.
    pub fn sqnr_or_inf(&self) -> f64 {
        self.sqnr_db.unwrap_or(f64::INFINITY)
    }

    /// The SQNR for people: `∞ (identical)`, `27.4 dB`, or `−∞ (N values NaN or infinite)`.
    pub fn sqnr_text(&self) -> String {
        match self.sqnr_db {
            None => "∞ (identical)".to_owned(),
            Some(db) if db.is_finite() => format!("{db:.1} dB"),
            Some(_) => format!(
                "−∞ ({} output values NaN or infinite)",
                self.nonfinite_values
            ),
        }
    }
}

/// Differences between two sets of values, NaN- and Inf-aware.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Difference {
    pub signal: f64,
    pub noise: f64,
    /// Largest |a − b| over pairs of finite values.
    pub max_abs: f64,
    /// Pairs where one value is NaN or infinite and the other is not the same value.
    pub nonfinite: usize,
}

impl Difference {
    /// Adds the pairs of `reference` and `values`.
    pub fn add(&mut self, reference: &[f32], values: &[f32]) {
        for (&a, &b) in reference.iter().zip(values) {
            if !(a.is_finite() && b.is_finite()) {
                let same = (a.is_nan() && b.is_nan()) || a == b;
                self.nonfinite += usize::from(!same);
                continue;
            }
            let (a, b) = (f64::from(a), f64::from(b));
            self.signal += a * a;
            let d = a - b;
            self.noise += d * d;
            self.max_abs = self.max_abs.max(d.abs());
        }
    }

    /// SQNR in dB: `None` when the values are identical, −∞ when a non-finite pair differs.
    pub fn sqnr_db(&self) -> Option<f64> {
        if self.nonfinite > 0 {
            return Some(f64::NEG_INFINITY);
        }
        (self.noise > 0.0).then(|| 10.0 * (self.signal / self.noise).log10())
    }

    /// `max_abs`, or infinity when a non-finite pair differs.
    pub fn max_abs(&self) -> f64 {
        if self.nonfinite > 0 {
            f64::INFINITY
        } else {
            self.max_abs
        }
    }
}

/// Fidelity of `outputs` against `reference` outputs of the same samples.
pub fn fidelity(reference: &[Vec<f32>], outputs: &[Vec<f32>]) -> Fidelity {
    let mut agree = 0usize;
    let mut diff = Difference::default();
    let mut cosine_sum = 0.0;
    for (r, o) in reference.iter().zip(outputs) {
        let before = diff.nonfinite;
        diff.add(r, o);
        if diff.nonfinite == before && top_k(r, 1) == top_k(o, 1) {
            agree += 1;
        }
        cosine_sum += cosine_similarity(r, o);
    }
    let n = reference.len().min(outputs.len());
    Fidelity {
        agreement: agree as f64 / n.max(1) as f64,
        sqnr_db: diff.sqnr_db(),
        max_abs_err: diff.max_abs(),
        cosine: if diff.nonfinite > 0 {
            f64::NAN
        } else if n == 0 {
            1.0
        } else {
            cosine_sum / n as f64
        },
        samples: n,
        nonfinite_values: diff.nonfinite,
    }
}

/// Cosine similarity of two vectors over their finite pairs: 1 when both are zero (nothing
/// differs), 0 when only one is.
fn cosine_similarity(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        if x.is_finite() && y.is_finite() {
            let (x, y) = (f64::from(x), f64::from(y));
            dot += x * y;
            aa += x * x;
            bb += y * y;
        }
    }
    match (aa > 0.0, bb > 0.0) {
        (false, false) => 1.0,
        (true, true) => (dot / (aa.sqrt() * bb.sqrt())).clamp(-1.0, 1.0),
        _ => 0.0,
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
    latency_within(
        model,
        sample,
        runs,
        warmup,
        std::time::Duration::MAX,
        &crate::job::NoProgress,
        cancel,
    )
}

/// Runs that [`latency_within`] always times, however long they take.
const MIN_TIMED_RUNS: usize = 5;

/// [`latency`] stopping early when the runs so far took `budget` (at least
/// [`MIN_TIMED_RUNS`] timed runs; warm-up stops after half the budget): a large model's
/// export does not spend minutes timing it. The result says how many runs were timed.
pub fn latency_within<M: Runnable + ?Sized>(
    model: &M,
    sample: &[f32],
    runs: usize,
    warmup: usize,
    budget: std::time::Duration,
    progress: &dyn crate::job::ProgressSink,
    cancel: &CancelToken,
) -> Result<Latency> {
    let started = Instant::now();
    let mut warmed = 0;
    // Progress per run (warm-up included): a large model's runs take seconds each.
    let total = (warmup + runs.max(1)) as u64;
    while warmed < warmup && started.elapsed() < budget / 2 {
        cancel.check()?;
        crate::job::report(progress, "measuring latency", warmed as u64, total);
        model.run(sample)?;
        warmed += 1;
    }
    let warmup = warmed;
    let timing = Instant::now();
    let mut times_ms = Vec::with_capacity(runs.max(1));
    for i in 0..runs.max(1) {
        if i >= MIN_TIMED_RUNS && timing.elapsed() >= budget {
            break;
        }
        cancel.check()?;
        crate::job::report(
            progress,
            "measuring latency",
            (warmed + i) as u64,
            (warmed + runs.max(1)) as u64,
        );
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

/// Serializes a dB value for JSON: `null` for `None` (identical), numbers, and `"-inf"` /
/// `"inf"` / `"nan"` as strings (JSON has no such numbers; `null` would read as identical).
pub fn json_db<S: serde::Serializer>(
    v: &Option<f64>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match v {
        None => s.serialize_none(),
        Some(x) => json_float(x, s),
    }
}

/// Reads what [`json_db`] writes: `null`, a number, or `"inf"` / `"-inf"` / `"nan"`.
pub fn json_db_read<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<f64>, D::Error> {
    let value: Option<JsonFloat> = serde::Deserialize::deserialize(d)?;
    value.map(JsonFloat::value).transpose()
}

/// Serializes floats for JSON as [`json_float`] does each.
pub fn json_floats<S: serde::Serializer>(v: &[f64], s: S) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    struct One(f64);
    impl serde::Serialize for One {
        fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            json_float(&self.0, s)
        }
    }
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for x in v {
        seq.serialize_element(&One(*x))?;
    }
    seq.end()
}

/// Reads what [`json_floats`] writes.
pub fn json_floats_read<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<f64>, D::Error> {
    let values: Vec<JsonFloat> = serde::Deserialize::deserialize(d)?;
    values.into_iter().map(JsonFloat::value).collect()
}

/// Reads what [`json_float`] writes.
pub fn json_float_read<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<f64, D::Error> {
    let value: JsonFloat = serde::Deserialize::deserialize(d)?;
    value.value()
}

/// A float as JSON holds it: a number, or the name of a non-finite value.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum JsonFloat {
    Number(f64),
    Name(String),
}

impl JsonFloat {
    fn value<E: serde::de::Error>(self) -> std::result::Result<f64, E> {
        match self {
            JsonFloat::Number(v) => Ok(v),
            JsonFloat::Name(n) => match n.as_str() {
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                "nan" => Ok(f64::NAN),
                other => Err(E::custom(format!("`{other}` is not a number"))),
            },
        }
    }
}

/// Serializes a float for JSON, non-finite values as the strings `"inf"`, `"-inf"`, `"nan"`.
pub fn json_float<S: serde::Serializer>(v: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else if v.is_nan() {
        s.serialize_str("nan")
    } else if *v > 0.0 {
        s.serialize_str("inf")
    } else {
        s.serialize_str("-inf")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model whose every run is counted.
    struct Counted(std::sync::atomic::AtomicUsize);

    impl Runnable for Counted {
        fn run(&self, _sample: &[f32]) -> Result<Vec<Vec<f32>>> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(vec![vec![0.0]])
        }
        fn input_shape(&self) -> &[usize] {
            &[1]
        }
        fn runtime(&self) -> crate::measure::runtime::RuntimeKind {
            crate::measure::runtime::RuntimeKind::Tract
        }
        fn threads(&self) -> usize {
            1
        }
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn latency_reports_progress_run_by_run() {
        let model = Counted(std::sync::atomic::AtomicUsize::new(0));
        let seen = std::sync::Mutex::new(Vec::new());
        let sink = |p: crate::job::Progress| seen.lock().unwrap().push((p.done, p.total));
        let l = latency_within(
            &model,
            &[0.0],
            10,
            2,
            std::time::Duration::MAX,
            &sink,
            &CancelToken::new(),
        )
        .unwrap();
        assert_eq!(l.runs, 10);
        let seen = seen.into_inner().unwrap();
        // One report before every run (2 warm-up + 10 timed), moving forward to the end.
        assert_eq!(seen.len(), 12, "{seen:?}");
        assert!(seen.windows(2).all(|w| w[1].0 > w[0].0), "{seen:?}");
        assert_eq!(seen.last(), Some(&(11, 12)));
    }

    #[test]
    fn cosine_is_one_for_scaled_outputs_and_not_a_number_for_broken_ones() {
        let reference = vec![vec![1.0, 2.0, 3.0], vec![0.0, -1.0, 0.5]];
        let same = fidelity(&reference, &reference);
        // Within rounding of the f64 sums.
        assert!((same.cosine - 1.0).abs() < 1e-12, "{}", same.cosine);
        // Twice the reference: the same direction, a large error.
        let doubled: Vec<Vec<f32>> = reference
            .iter()
            .map(|s| s.iter().map(|v| v * 2.0).collect())
            .collect();
        let scaled = fidelity(&reference, &doubled);
        assert!((scaled.cosine - 1.0).abs() < 1e-12, "{}", scaled.cosine);
        assert!(scaled.sqnr_db.is_some_and(|db| db < 1.0));
        // Opposite signs on one sample: mean of 1 and -1.
        let flipped = vec![reference[0].clone(), vec![0.0, 1.0, -0.5]];
        assert!(fidelity(&reference, &flipped).cosine.abs() < 1e-12);
        let broken = vec![vec![f32::NAN, 2.0, 3.0], reference[1].clone()];
        assert!(fidelity(&reference, &broken).cosine.is_nan());
    }

    #[test]
    fn top_k_ranks_like_a_full_sort_with_ties_by_index_and_nan_last() {
        let values = [0.5, f32::NAN, 2.0, -1.0, 2.0, 0.5, 7.0];
        assert_eq!(top_k(&values, 1), vec![6]);
        assert_eq!(top_k(&values, 3), vec![6, 2, 4]);
        assert_eq!(top_k(&values, 7), vec![6, 2, 4, 0, 5, 3, 1]);
        assert_eq!(top_k(&values, 10), vec![6, 2, 4, 0, 5, 3, 1]);
        assert!(top_k(&values, 0).is_empty());
        assert!(top_k(&[], 1).is_empty());
    }

    #[test]
    fn nan_and_inf_outputs_are_never_read_as_identical() {
        let reference = vec![vec![1.0, 2.0, 3.0], vec![0.5, 0.0, -1.0]];
        let broken = vec![vec![f32::NAN, 2.0, 3.0], vec![0.5, f32::INFINITY, -1.0]];
        let f = fidelity(&reference, &broken);
        assert_eq!(f.nonfinite_values, 2);
        assert_eq!(f.sqnr_db, Some(f64::NEG_INFINITY));
        assert!(f.max_abs_err.is_infinite());
        assert_eq!(f.agreement, 0.0, "a sample with NaN outputs never agrees");
        assert!(!f.identical());
        assert!(
            f.sqnr_text().contains("NaN or infinite"),
            "{}",
            f.sqnr_text()
        );
        let json = serde_json::to_string(&f).unwrap_or_default();
        assert!(
            json.contains("\"sqnr_db\":\"-inf\"") && json.contains("\"max_abs_err\":\"inf\""),
            "{json}"
        );
        // NaN where the reference has NaN too is the same value.
        let same = fidelity(&broken, &broken);
        assert!(same.identical() && same.nonfinite_values == 0, "{same:?}");
        assert_eq!(same.sqnr_text(), "∞ (identical)");
    }

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
