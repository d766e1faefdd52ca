//! Mergeable log-scale histograms of times (HDR-like), as `ttr_histogram` keeps them per
//! second, minute, hour and day (see migrations/V12__minute_and_histogram_rollups.sql; the
//! triggers compute each time's bucket once, into `failures.remediate_bucket` and
//! `recover_bucket`, migrations/V13__second_rollups_and_stored_buckets.sql).
//!
//! A time of `t` microseconds (never negative) falls in bucket `t` itself when `t < 128`;
//! otherwise, with `e = floor(log2 t)` and the top seven bits `m = t >> (e - 6)` (64 to 127),
//! in bucket `e * 64 + m - 64`. A bucket holds `[m << (e - 6), (m + 1) << (e - 6))` and is
//! represented by its midpoint, which lies within `1/128` (0.79 %) of every time in it: a
//! nearest-rank percentile read from merged buckets is within [`RELATIVE_ERROR`] of the exact
//! one (the exact value lies in the bucket the rank falls in).

/// The bound on a histogram percentile's relative error: 1/128, under the documented 1 %.
pub const RELATIVE_ERROR: f64 = 1.0 / 128.0;

/// The bucket of a time in microseconds (negative times count as 0).
pub fn bucket(t: i64) -> i64 {
    let t = t.max(0);
    if t < 128 {
        return t;
    }
    let e = 63 - i64::from(t.leading_zeros());
    e * 64 + (t >> (e - 6)) - 64
}

/// The value a bucket stands for: the time itself below 128, else the bucket's midpoint.
pub fn representative(bucket: i64) -> i64 {
    if bucket < 128 {
        return bucket.max(0);
    }
    let e = bucket / 64;
    let m = bucket % 64 + 64;
    let width = 1i64 << (e - 6);
    (m << (e - 6)) + width / 2
}

/// A histogram: (bucket, count) in ascending bucket order, merged from rollup rows and exact
/// values.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    counts: std::collections::BTreeMap<i64, i64>,
    n: i64,
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram::default()
    }

    /// Adds `n` times of bucket `bucket`.
    pub fn add_bucket(&mut self, bucket: i64, n: i64) {
        if n > 0 {
            *self.counts.entry(bucket).or_insert(0) += n;
            self.n += n;
        }
    }

    /// Adds one time.
    pub fn record(&mut self, t: i64) {
        self.add_bucket(bucket(t), 1);
    }

    pub fn count(&self) -> i64 {
        self.n
    }

    /// The nearest-rank percentile `p` (0 to 100) as its bucket's representative; None when
    /// empty.
    pub fn percentile(&self, p: i64) -> Option<i64> {
        if self.n == 0 {
            return None;
        }
        let rank = ((self.n * p + 99) / 100).max(1);
        let mut seen = 0;
        for (b, c) in &self.counts {
            seen += c;
            if seen >= rank {
                return Some(representative(*b));
            }
        }
        self.counts.keys().next_back().map(|b| representative(*b))
    }

    /// The largest time's representative.
    pub fn max(&self) -> Option<i64> {
        self.counts.keys().next_back().map(|b| representative(*b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_time_within_the_bound() {
        const { assert!(RELATIVE_ERROR <= 0.01) };
        let mut samples: Vec<i64> = (0..5000).collect();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            samples.push((x >> (x % 40 + 2)) as i64 & ((1i64 << 61) - 1));
        }
        for k in 7..62 {
            samples.push((1i64 << k) - 1);
            samples.push(1i64 << k);
        }
        for t in samples {
            let b = bucket(t);
            let r = representative(b);
            let err = (r - t).abs() as f64 / (t.max(1)) as f64;
            assert!(err <= RELATIVE_ERROR, "t {t} bucket {b} rep {r} err {err}");
            if t > 0 {
                assert!(bucket(t - 1) <= b, "monotone at {t}");
            }
        }
    }
}
