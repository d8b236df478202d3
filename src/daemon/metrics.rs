//! The daemon's metrics and their Prometheus text exposition (`GET
//! /metrics`): reconciles by result, their duration as a histogram, the time
//! of the last success and the changes of the last plan not applied.
//!
//! The names are the contract's (§4); every `result` series exists from the
//! start, at 0, so that `rate()` and alerts work before the first failure.

use std::fmt::Write;

/// Results a reconcile can have, as the `result` label spells them.
pub const RESULTS: [&str; 5] = ["applied", "unchanged", "invalid", "refused", "error"];

/// Upper bounds of the duration histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Counters and gauges, updated after every reconcile.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    totals: [u64; 5],
    /// Per bucket of [`BUCKETS`] (not cumulative), then the +Inf overflow.
    buckets: [u64; 13],
    duration_sum: f64,
    duration_count: u64,
    last_success: Option<f64>,
    pending_changes: u64,
}

impl Metrics {
    /// Counts one reconcile of `result` (one of [`RESULTS`]) that took
    /// `seconds`.
    pub fn record(&mut self, result: &str, seconds: f64) {
        if let Some(index) = RESULTS.iter().position(|known| *known == result) {
            self.totals[index] += 1;
        }
        let bucket = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[bucket] += 1;
        self.duration_sum += seconds;
        self.duration_count += 1;
    }

    /// Reconciles counted with `result`.
    pub fn total(&self, result: &str) -> u64 {
        RESULTS
            .iter()
            .position(|known| *known == result)
            .map(|index| self.totals[index])
            .unwrap_or(0)
    }

    /// The time of the last successful reconcile, in Unix seconds.
    pub fn set_last_success(&mut self, unix_seconds: f64) {
        self.last_success = Some(unix_seconds);
    }

    pub fn set_pending_changes(&mut self, changes: u64) {
        self.pending_changes = changes;
    }

    pub fn pending_changes(&self) -> u64 {
        self.pending_changes
    }

    /// The Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP deed_reconcile_total Reconciles run, by result."
        );
        let _ = writeln!(out, "# TYPE deed_reconcile_total counter");
        for (result, total) in RESULTS.iter().zip(self.totals) {
            let _ = writeln!(out, "deed_reconcile_total{{result=\"{result}\"}} {total}");
        }
        let _ = writeln!(
            out,
            "# HELP deed_reconcile_duration_seconds How long reconciles took (reading the specs, planning, applying)."
        );
        let _ = writeln!(out, "# TYPE deed_reconcile_duration_seconds histogram");
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(self.buckets) {
            cumulative += count;
            let _ = writeln!(
                out,
                "deed_reconcile_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.buckets[BUCKETS.len()];
        let _ = writeln!(
            out,
            "deed_reconcile_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            out,
            "deed_reconcile_duration_seconds_sum {}",
            self.duration_sum
        );
        let _ = writeln!(
            out,
            "deed_reconcile_duration_seconds_count {}",
            self.duration_count
        );
        let _ = writeln!(
            out,
            "# HELP deed_last_success_timestamp_seconds When the last reconcile succeeded (applied or unchanged), in Unix seconds; 0 before the first."
        );
        let _ = writeln!(out, "# TYPE deed_last_success_timestamp_seconds gauge");
        let _ = writeln!(
            out,
            "deed_last_success_timestamp_seconds {}",
            self.last_success.unwrap_or(0.0)
        );
        let _ = writeln!(
            out,
            "# HELP deed_pending_changes Changes of the last plan that were not applied (refused, or a dry run)."
        );
        let _ = writeln!(out, "# TYPE deed_pending_changes gauge");
        let _ = writeln!(out, "deed_pending_changes {}", self.pending_changes);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_result_series_is_there_from_the_start() {
        let text = Metrics::default().render();
        for result in RESULTS {
            assert!(
                text.contains(&format!("deed_reconcile_total{{result=\"{result}\"}} 0\n")),
                "{text}"
            );
        }
        assert!(text.contains("deed_reconcile_duration_seconds_count 0\n"));
        assert!(text.contains("deed_last_success_timestamp_seconds 0\n"));
        assert!(text.contains("deed_pending_changes 0\n"));
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut metrics = Metrics::default();
        metrics.record("applied", 0.003);
        metrics.record("invalid", 0.2);
        metrics.record("error", 100.0);
        let text = metrics.render();
        assert!(text.contains("deed_reconcile_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("deed_reconcile_duration_seconds_bucket{le=\"0.25\"} 2\n"));
        assert!(text.contains("deed_reconcile_duration_seconds_bucket{le=\"30\"} 2\n"));
        assert!(text.contains("deed_reconcile_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("deed_reconcile_duration_seconds_count 3\n"));
        assert!(text.contains("deed_reconcile_total{result=\"invalid\"} 1\n"));
        assert_eq!(metrics.total("error"), 1);
    }
}
