//! Weight quantization and pruning math: ranges, clipping searches, integer codes.
//!
//! Integers are stored in int8 containers whatever the bit width (tract cannot read INT4).
//! Symmetric codes use the narrow range `[-(2^(b-1)-1), 2^(b-1)-1]` with zero point 0;
//! asymmetric codes use `[-2^(b-1), 2^(b-1)-1]` with a zero point that makes 0.0 exact.

use crate::compress::plan::Clipping;

/// The integer code range for `bits` bits.
pub fn code_range(bits: u8, symmetric: bool) -> (i32, i32) {
    let half = 1i32 << (bits.clamp(2, 8) - 1);
    if symmetric {
        (-(half - 1), half - 1)
    } else {
        (-half, half - 1)
    }
}

/// Scale and zero point of one quantization group.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuantParams {
    pub scale: f32,
    pub zero_point: i32,
}

impl QuantParams {
    /// Parameters mapping `[lo, hi]` (widened to include 0) onto `bits`-bit codes.
    pub fn for_range(lo: f32, hi: f32, bits: u8, symmetric: bool) -> Self {
        let (qmin, qmax) = code_range(bits, symmetric);
        if symmetric {
            let bound = lo.abs().max(hi.abs());
            let scale = if bound > 0.0 {
                bound / qmax as f32
            } else {
                1.0
            };
            return Self {
                scale,
                zero_point: 0,
            };
        }
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        if hi - lo <= 0.0 {
            return Self {
                scale: 1.0,
                zero_point: 0,
            };
        }
        let scale = (hi - lo) / (qmax - qmin) as f32;
        let zero_point = (qmin as f32 - lo / scale)
            .round()
            .clamp(qmin as f32, qmax as f32) as i32;
        Self { scale, zero_point }
    }

    /// The code of `v`: `round(v / scale) + zero_point`, saturating to the code range
    /// (ties round away from zero).
    pub fn quantize(&self, v: f32, bits: u8, symmetric: bool) -> i32 {
        let (qmin, qmax) = code_range(bits, symmetric);
        // Branch-free so the hot loops vectorize: clamp in float, then round half away from
        // zero with a sign-matched 0.5 (`f32::round` is a library call on baseline x86-64).
        let y = (v / self.scale + self.zero_point as f32).clamp(qmin as f32, qmax as f32);
        (y + 0.5f32.copysign(y)) as i32
    }

    /// The value a runtime's `DequantizeLinear` gives for code `q`.
    pub fn dequantize(&self, q: i32) -> f32 {
        // Codes and zero points lie within 8 bits: the difference cannot overflow.
        q.wrapping_sub(self.zero_point) as f32 * self.scale
    }
}

/// Value at fraction `q` (0..=1) of the sorted `values`, found in O(n) with a selection.
pub fn quantile(values: &mut [f32], q: f64) -> f32 {
    if values.is_empty() {
        return 0.0;
    }
    let index = ((values.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    let (_, v, _) = values.select_nth_unstable_by(index, f32::total_cmp);
    *v
}

/// Largest number of values a clipping search looks at per group (a strided subsample).
const SEARCH_SAMPLE: usize = 16_384;

/// The clipping range `[lo, hi]` for one group of finite `values`.
pub fn clip_range(values: &[f32], clipping: Clipping, bits: u8, symmetric: bool) -> (f32, f32) {
    let (mut lo, mut hi) = values.iter().fold((0f32, 0f32), |(lo, hi), &v| {
        if v.is_finite() {
            (lo.min(v), hi.max(v))
        } else {
            (lo, hi)
        }
    });
    match clipping {
        Clipping::MinMax => {}
        Clipping::Percentile { percentile } => {
            let p = f64::from(percentile) / 100.0;
            if symmetric {
                let mut abs: Vec<f32> = values
                    .iter()
                    .filter(|v| v.is_finite())
                    .map(|v| v.abs())
                    .collect();
                let bound = quantile(&mut abs, p);
                (lo, hi) = (-bound, bound);
            } else {
                let mut copy: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
                hi = quantile(&mut copy, p).max(0.0);
                lo = quantile(&mut copy, 1.0 - p).min(0.0);
            }
        }
        Clipping::Mse | Clipping::OutputMse => {
            let step = values.len().div_ceil(SEARCH_SAMPLE).max(1);
            let sample: Vec<f32> = values
                .iter()
                .step_by(step)
                .copied()
                .filter(|v| v.is_finite())
                .collect();
            let mut best = (f64::INFINITY, lo, hi);
            // Shrink the range from 100% down to 20% of the full range in 2% steps.
            for i in 0..=40 {
                let alpha = 1.0 - 0.02 * i as f32;
                let (l, h) = (lo * alpha, hi * alpha);
                let params = QuantParams::for_range(l, h, bits, symmetric);
                let error: f64 = sample
                    .iter()
                    .map(|&v| {
                        let d = params.dequantize(params.quantize(v, bits, symmetric)) - v;
                        f64::from(d * d)
                    })
                    .sum();
                if error < best.0 {
                    best = (error, l, h);
                }
            }
            (lo, hi) = (best.1, best.2);
        }
    }
    (lo, hi)
}

/// Sets the `count` smallest-magnitude values to zero (exactly `count`, ties broken by
/// position), with an O(n) selection instead of a sort.
pub fn prune_smallest(values: &mut [f32], count: usize) {
    if count == 0 || values.is_empty() {
        return;
    }
    if count >= values.len() {
        values.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    let threshold = kth_smallest_key(values, count - 1, magnitude_key);
    // One pass zeroes everything below the threshold and counts; it is branch-free (about
    // half the comparisons go each way on real weights, which a branch would mispredict) and
    // vectorizes. The ties at the threshold are found afterwards; the first ones make up the
    // exact count.
    let mut below = 0usize;
    for v in values.iter_mut() {
        let zero = magnitude_key(*v) < threshold;
        // Wrapping: cannot overflow (at most `values.len()`), and without the overflow check
        // of debug builds the loop vectorizes.
        below = below.wrapping_add(usize::from(zero));
        *v = if zero { 0.0 } else { *v };
    }
    let mut missing = count.saturating_sub(below);
    for v in values.iter_mut() {
        if missing == 0 {
            break;
        }
        if magnitude_key(*v) == threshold {
            *v = 0.0;
            missing -= 1;
        }
    }
}

/// Orders values by magnitude: for non-negative floats the IEEE bit pattern orders like the
/// value, and with the sign bit cleared a NaN's pattern lies above infinity's (NaN counts as
/// the largest magnitude, never pruned first). Integer keys make comparisons cheap.
fn magnitude_key(v: f32) -> u32 {
    v.to_bits() & 0x7fff_ffff
}

/// The `rank`-th smallest key (0-based) in O(n): a selection on a strided sample brackets
/// the answer, one counting pass keeps only the keys inside the bracket, and an exact
/// selection among those finishes. Falls back to a full selection when the bracket misses.
fn kth_smallest_key(values: &[f32], rank: usize, key: impl Fn(f32) -> u32) -> u32 {
    const SAMPLE_STEP: usize = 64;
    let n = values.len();
    if n < 16 * SAMPLE_STEP {
        let mut keys: Vec<u32> = values.iter().map(|&v| key(v)).collect();
        return *keys.select_nth_unstable(rank).1;
    }
    let mut sample: Vec<u32> = values
        .iter()
        .step_by(SAMPLE_STEP)
        .map(|&v| key(v))
        .collect();
    let m = sample.len();
    let expected = rank as f64 / n as f64 * m as f64;
    // A margin of a few standard deviations of the sample's rank estimate.
    let margin = 4.0 * (m as f64 * 0.25).sqrt() + 2.0;
    let lo_rank = (expected - margin).floor().max(0.0) as usize;
    let hi_rank = ((expected + margin).ceil() as usize).min(m - 1);
    let lo = *sample.select_nth_unstable(lo_rank).1;
    let hi = *sample.select_nth_unstable(hi_rank).1;
    // Counting below the bracket is branch-free (about as many keys fall below as above);
    // the bracket is narrow, so the push is rarely taken and well predicted.
    let mut below = 0usize;
    let mut inside: Vec<u32> = Vec::with_capacity(4 * (hi_rank - lo_rank + 1) * SAMPLE_STEP);
    for &v in values {
        let k = key(v);
        below = below.wrapping_add(usize::from(k < lo));
        if k.wrapping_sub(lo) <= hi - lo {
            inside.push(k);
        }
    }
    if rank >= below && rank - below < inside.len() {
        return *inside.select_nth_unstable(rank - below).1;
    }
    let mut keys: Vec<u32> = values.iter().map(|&v| key(v)).collect();
    *keys.select_nth_unstable(rank).1
}

/// What [`sqnr_db_and_mse`] measures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WeightError {
    /// SQNR in dB (`f64::INFINITY` when identical, `f64::NEG_INFINITY` when some finite
    /// value became NaN or infinite).
    pub sqnr_db: f64,
    /// Mean squared error over the pairs of finite values.
    pub mse: f64,
    /// Values of `approx` that are exactly zero.
    pub zeros: usize,
    /// Finite values of `original` whose approximation is NaN or infinite.
    pub broken: usize,
}

/// Signal-to-quantization-noise ratio of `approx` against `original`, the mean squared
/// error, zeros and values made non-finite — one pass.
pub fn sqnr_db_and_mse(original: &[f32], approx: &[f32]) -> WeightError {
    let (mut signal, mut noise, mut n, mut zeros) = (0f64, 0f64, 0usize, 0usize);
    let mut broken = 0usize;
    // Sums in f32 over short blocks (vectorizable), accumulated in f64 across blocks.
    const BLOCK: usize = 256;
    for (a_block, b_block) in original.chunks(BLOCK).zip(approx.chunks(BLOCK)) {
        let (mut s, mut e) = (0f32, 0f32);
        for (&a, &b) in a_block.iter().zip(b_block) {
            // Counts wrap instead of checking for overflow (they cannot exceed the length):
            // the loop then vectorizes in debug builds too.
            zeros = zeros.wrapping_add(usize::from(b == 0.0));
            let finite = a.is_finite() && b.is_finite();
            broken = broken.wrapping_add(usize::from(a.is_finite() && !b.is_finite()));
            let d = a - b;
            s += if finite { a * a } else { 0.0 };
            e += if finite { d * d } else { 0.0 };
            n = n.wrapping_add(usize::from(finite));
        }
        signal += f64::from(s);
        noise += f64::from(e);
    }
    let mse = if n > 0 { noise / n as f64 } else { 0.0 };
    let sqnr = if broken > 0 {
        f64::NEG_INFINITY
    } else if noise == 0.0 {
        f64::INFINITY
    } else if signal == 0.0 {
        f64::NEG_INFINITY
    } else {
        10.0 * (signal / noise).log10()
    };
    WeightError {
        sqnr_db: sqnr,
        mse,
        zeros,
        broken,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn symmetric_codes_are_narrow_and_zero_is_exact() {
        assert_eq!(code_range(8, true), (-127, 127));
        assert_eq!(code_range(4, false), (-8, 7));
        let p = QuantParams::for_range(-0.3, 1.27, 8, true);
        assert_eq!(p.zero_point, 0);
        assert_eq!(p.quantize(1.27, 8, true), 127);
        assert_eq!(p.quantize(-5.0, 8, true), -127);
        let a = QuantParams::for_range(0.2, 1.0, 8, false);
        assert_eq!(a.dequantize(a.quantize(0.0, 8, false)), 0.0);
    }

    #[test]
    fn pruning_zeroes_exactly_the_smallest() {
        let mut v = vec![0.5, -0.1, 0.1, 2.0, -3.0, 0.1];
        prune_smallest(&mut v, 3);
        assert_eq!(v.iter().filter(|x| **x == 0.0).count(), 3);
        assert_eq!(v[3], 2.0);
        assert_eq!(v[4], -3.0);
        assert_eq!(v[0], 0.5);
    }

    #[test]
    fn pruning_breaks_ties_by_position_and_never_takes_nan_first() {
        let mut v = vec![0.1, -0.1, 1.0, 0.1, -0.1, 0.1];
        prune_smallest(&mut v, 3);
        assert_eq!(v, vec![0.0, 0.0, 1.0, 0.0, -0.1, 0.1]);
        let mut v = vec![f32::NAN, 1.0, f32::INFINITY, -0.5];
        prune_smallest(&mut v, 2);
        assert!(v[0].is_nan());
        assert_eq!(&v[1..], &[0.0, f32::INFINITY, 0.0]);
        // Large enough for the sampled bracket: exactly `count` zeros, the smallest ones.
        let mut v: Vec<f32> = (0..50_000).map(|i| ((i * 7919) % 50_000) as f32).collect();
        prune_smallest(&mut v, 20_000);
        assert_eq!(v.iter().filter(|x| **x == 0.0).count(), 20_000);
        assert!(v.iter().all(|&x| x == 0.0 || x >= 20_000.0));
    }

    #[test]
    fn mse_clipping_beats_min_max_on_heavy_tails_at_4_bits() {
        let mut values: Vec<f32> = (0..10_000)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        values[0] = 20.0; // one outlier
        let error = |(lo, hi): (f32, f32)| {
            let p = QuantParams::for_range(lo, hi, 4, true);
            let approx: Vec<f32> = values
                .iter()
                .map(|&v| p.dequantize(p.quantize(v, 4, true)))
                .collect();
            sqnr_db_and_mse(&values, &approx).mse
        };
        let minmax = error(clip_range(&values, Clipping::MinMax, 4, true));
        let mse = error(clip_range(&values, Clipping::Mse, 4, true));
        assert!(mse < minmax, "mse {mse} vs minmax {minmax}");
    }

    #[test]
    fn sampled_selection_matches_a_full_sort() {
        for n in [10usize, 5_000, 200_003] {
            let values: Vec<f32> = (0..n)
                .map(|i| (((i * 2_654_435_761) % 1_000_003) as f32 - 500_000.0) * 1e-3)
                .collect();
            let key = |v: f32| v.abs().to_bits();
            let mut sorted: Vec<u32> = values.iter().map(|&v| key(v)).collect();
            sorted.sort_unstable();
            for rank in [0, n / 3, n / 2, n - 1] {
                assert_eq!(
                    kth_smallest_key(&values, rank, key),
                    sorted[rank],
                    "n={n} rank={rank}"
                );
            }
        }
    }

    #[test]
    fn quantile_selects_without_sorting_the_caller() {
        let mut v: Vec<f32> = (0..101).map(|i| i as f32).collect();
        v.reverse();
        assert_eq!(quantile(&mut v, 0.5), 50.0);
        assert_eq!(quantile(&mut v, 1.0), 100.0);
    }
}
