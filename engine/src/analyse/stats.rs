//! Per-tensor statistics and histograms, computed in parallel chunks with rayon.

use rayon::prelude::*;
use serde::Serialize;

/// Values per parallel chunk: large enough that scheduling costs nothing next to the work.
const CHUNK: usize = 1 << 16;

/// Summary statistics of a tensor's values. Min, max, mean and std are over finite values.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TensorStats {
    /// Number of values, finite or not.
    pub count: u64,
    pub min: f32,
    pub max: f32,
    pub mean: f64,
    pub std: f64,
    /// Fraction of values that are exactly zero (sparsity).
    pub zero_fraction: f64,
    pub nan_count: u64,
    pub inf_count: u64,
}

#[derive(Clone, Copy)]
struct Partial {
    count: u64,
    finite: u64,
    min: f32,
    max: f32,
    sum: f64,
    sum_sq: f64,
    zeros: u64,
    nans: u64,
    infs: u64,
}

impl Partial {
    const EMPTY: Partial = Partial {
        count: 0,
        finite: 0,
        min: f32::INFINITY,
        max: f32::NEG_INFINITY,
        sum: 0.0,
        sum_sq: 0.0,
        zeros: 0,
        nans: 0,
        infs: 0,
    };

    fn of(values: &[f32]) -> Partial {
        let mut p = Partial::EMPTY;
        p.count = values.len() as u64;
        for &v in values {
            if v.is_nan() {
                p.nans += 1;
            } else if v.is_infinite() {
                p.infs += 1;
            } else {
                p.finite += 1;
                p.min = p.min.min(v);
                p.max = p.max.max(v);
                let v = f64::from(v);
                p.sum += v;
                p.sum_sq += v * v;
                if v == 0.0 {
                    p.zeros += 1;
                }
            }
        }
        p
    }

    fn merge(self, o: Partial) -> Partial {
        Partial {
            count: self.count + o.count,
            finite: self.finite + o.finite,
            min: self.min.min(o.min),
            max: self.max.max(o.max),
            sum: self.sum + o.sum,
            sum_sq: self.sum_sq + o.sum_sq,
            zeros: self.zeros + o.zeros,
            nans: self.nans + o.nans,
            infs: self.infs + o.infs,
        }
    }
}

/// Statistics of `values`.
pub fn tensor_stats(values: &[f32]) -> TensorStats {
    let p = values
        .par_chunks(CHUNK)
        .map(Partial::of)
        .reduce(|| Partial::EMPTY, Partial::merge);
    if p.finite == 0 {
        return TensorStats {
            count: p.count,
            nan_count: p.nans,
            inf_count: p.infs,
            ..TensorStats::default()
        };
    }
    let n = p.finite as f64;
    let mean = p.sum / n;
    let variance = (p.sum_sq / n - mean * mean).max(0.0);
    TensorStats {
        count: p.count,
        min: p.min,
        max: p.max,
        mean,
        std: variance.sqrt(),
        zero_fraction: p.zeros as f64 / p.count as f64,
        nan_count: p.nans,
        inf_count: p.infs,
    }
}

/// A histogram of finite values over `[min, max]` in equal-width bins.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Histogram {
    pub min: f32,
    pub max: f32,
    /// Count per bin; bin `i` covers `[min + i·w, min + (i+1)·w)`, the last bin includes `max`.
    pub counts: Vec<u64>,
}

impl Histogram {
    /// Width of one bin.
    pub fn bin_width(&self) -> f32 {
        if self.counts.is_empty() {
            0.0
        } else {
            (self.max - self.min) / self.counts.len() as f32
        }
    }
}

/// Histogram of the finite values of `values` with `bins` bins over `[min, max]`
/// (the range from [`tensor_stats`]). `bins` is at least 1.
pub fn histogram(values: &[f32], min: f32, max: f32, bins: usize) -> Histogram {
    let bins = bins.max(1);
    let span = f64::from(max) - f64::from(min);
    let scale = if span > 0.0 { bins as f64 / span } else { 0.0 };
    let counts = values
        .par_chunks(CHUNK)
        .map(|chunk| {
            let mut counts = vec![0u64; bins];
            for &v in chunk {
                if v.is_finite() {
                    let bin = ((f64::from(v) - f64::from(min)) * scale) as usize;
                    counts[bin.min(bins - 1)] += 1;
                }
            }
            counts
        })
        .reduce(
            || vec![0u64; bins],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                a
            },
        );
    Histogram { min, max, counts }
}

/// Smallest and largest finite value of each slice along `axis` of a tensor of `dims`
/// (C order): the per-channel ranges that per-channel quantization scales follow. A channel
/// without a finite value gives `(0, 0)`. Empty when `axis` is out of range or `dims` do not
/// match `values`.
pub fn channel_ranges(values: &[f32], dims: &[i64], axis: usize) -> Vec<(f32, f32)> {
    let Some(&channels) = dims.get(axis) else {
        return Vec::new();
    };
    let channels = channels.max(0) as usize;
    let inner: usize = dims[axis + 1..]
        .iter()
        .map(|&d| d.max(0) as usize)
        .product();
    let total: usize = dims.iter().map(|&d| d.max(0) as usize).product();
    if channels == 0 || total != values.len() {
        return Vec::new();
    }
    let mut ranges = vec![(f32::INFINITY, f32::NEG_INFINITY); channels];
    for (run, chunk) in values.chunks(inner.max(1)).enumerate() {
        let range = &mut ranges[run % channels];
        for &v in chunk.iter().filter(|v| v.is_finite()) {
            range.0 = range.0.min(v);
            range.1 = range.1.max(v);
        }
    }
    for r in &mut ranges {
        if r.0 > r.1 {
            *r = (0.0, 0.0);
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_ignore_nan_and_inf_but_count_them() {
        let s = tensor_stats(&[1.0, 0.0, f32::NAN, f32::INFINITY, 3.0]);
        assert_eq!(s.count, 5);
        assert_eq!((s.min, s.max), (0.0, 3.0));
        assert!((s.mean - 4.0 / 3.0).abs() < 1e-9);
        assert_eq!((s.nan_count, s.inf_count), (1, 1));
        assert!((s.zero_fraction - 0.2).abs() < 1e-12);
    }

    #[test]
    fn stats_match_a_direct_computation_across_chunks() {
        let values: Vec<f32> = (0..300_000)
            .map(|i| ((i * 37) % 1001) as f32 - 500.0)
            .collect();
        let s = tensor_stats(&values);
        let n = values.len() as f64;
        let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = values
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        assert!((s.mean - mean).abs() < 1e-6);
        assert!((s.std - var.sqrt()).abs() < 1e-6);
        assert_eq!((s.min, s.max), (-500.0, 500.0));
    }

    #[test]
    fn histogram_counts_every_finite_value_once() {
        let values = [0.0, 0.1, 0.5, 0.99, 1.0, f32::NAN];
        let h = histogram(&values, 0.0, 1.0, 4);
        assert_eq!(h.counts, vec![2, 0, 1, 2]);
        let constant = histogram(&[2.0; 10], 2.0, 2.0, 8);
        assert_eq!(constant.counts.iter().sum::<u64>(), 10);
    }

    #[test]
    fn channel_ranges_follow_the_axis() {
        // dims [2, 3]: rows are axis 0, columns axis 1.
        let values = [1.0, -2.0, 3.0, 4.0, 5.0, f32::NAN];
        assert_eq!(
            channel_ranges(&values, &[2, 3], 0),
            vec![(-2.0, 3.0), (4.0, 5.0)]
        );
        assert_eq!(
            channel_ranges(&values, &[2, 3], 1),
            vec![(1.0, 4.0), (-2.0, 5.0), (3.0, 3.0)]
        );
        // A conv weight [out 2, in 1, 1, 2]: each output channel is a contiguous run.
        assert_eq!(
            channel_ranges(&[0.5, -0.5, 7.0, 8.0], &[2, 1, 1, 2], 0),
            vec![(-0.5, 0.5), (7.0, 8.0)]
        );
        assert!(
            channel_ranges(&values, &[2, 2], 0).is_empty(),
            "dims must match"
        );
        assert!(
            channel_ranges(&values, &[2, 3], 2).is_empty(),
            "axis in range"
        );
        assert_eq!(
            channel_ranges(&[f32::NAN, 1.0], &[2, 1], 0),
            vec![(0.0, 0.0), (1.0, 1.0)]
        );
    }
}
