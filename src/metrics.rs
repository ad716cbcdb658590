//! Counters exported at `/metrics` in the Prometheus text format.
//!
//! Plain atomics: the CA has a handful of series and a dependency for them is not worth it.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How a request to create access ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    /// A certificate was issued.
    Issued,
    /// Stored, waiting for approvers.
    Pending,
    /// Refused by policy.
    Denied,
    /// Malformed or invalid input.
    Invalid,
    /// The token was refused.
    Unauthenticated,
    /// The CA failed.
    Error,
}

const OUTCOMES: [(RequestOutcome, &str); 6] = [
    (RequestOutcome::Issued, "issued"),
    (RequestOutcome::Pending, "pending"),
    (RequestOutcome::Denied, "denied"),
    (RequestOutcome::Invalid, "invalid"),
    (RequestOutcome::Unauthenticated, "unauthenticated"),
    (RequestOutcome::Error, "error"),
];

/// Upper bounds of the latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// The CA's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    outcomes: [AtomicU64; 6],
    certificates_issued: AtomicU64,
    latency_buckets: [AtomicU64; 10],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
}

impl Metrics {
    /// Counts one access request and how long it took.
    pub fn record_request(&self, outcome: RequestOutcome, elapsed: Duration) {
        let index = OUTCOMES
            .iter()
            .position(|(known, _)| *known == outcome)
            .unwrap_or(OUTCOMES.len() - 1);
        self.outcomes[index].fetch_add(1, Ordering::Relaxed);
        if outcome == RequestOutcome::Issued {
            self.certificates_issued.fetch_add(1, Ordering::Relaxed);
        }

        let seconds = elapsed.as_secs_f64();
        for (bucket, bound) in self.latency_buckets.iter().zip(LATENCY_BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.latency_sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Certificates issued since start.
    pub fn certificates_issued(&self) -> u64 {
        self.certificates_issued.load(Ordering::Relaxed)
    }

    /// Renders every series; `pending` is read from the store by the caller.
    pub fn render(&self, pending: u64) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "# HELP jit_requests_total Access requests by outcome."
        );
        let _ = writeln!(text, "# TYPE jit_requests_total counter");
        for ((_, label), counter) in OUTCOMES.iter().zip(&self.outcomes) {
            let count = counter.load(Ordering::Relaxed);
            let _ = writeln!(text, "jit_requests_total{{outcome=\"{label}\"}} {count}");
        }

        let _ = writeln!(
            text,
            "# HELP jit_certificates_issued_total Certificates signed."
        );
        let _ = writeln!(text, "# TYPE jit_certificates_issued_total counter");
        let _ = writeln!(
            text,
            "jit_certificates_issued_total {}",
            self.certificates_issued()
        );

        let _ = writeln!(
            text,
            "# HELP jit_pending_requests Requests waiting for approval."
        );
        let _ = writeln!(text, "# TYPE jit_pending_requests gauge");
        let _ = writeln!(text, "jit_pending_requests {pending}");

        let _ = writeln!(
            text,
            "# HELP jit_request_duration_seconds Time to answer an access request."
        );
        let _ = writeln!(text, "# TYPE jit_request_duration_seconds histogram");
        for (bucket, bound) in self.latency_buckets.iter().zip(LATENCY_BUCKETS) {
            let count = bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                text,
                "jit_request_duration_seconds_bucket{{le=\"{bound}\"}} {count}"
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let sum = self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            text,
            "jit_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(text, "jit_request_duration_seconds_sum {sum}");
        let _ = writeln!(text, "jit_request_duration_seconds_count {count}");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_cumulative_buckets() {
        let metrics = Metrics::default();

        metrics.record_request(RequestOutcome::Issued, Duration::from_millis(2));
        metrics.record_request(RequestOutcome::Denied, Duration::from_millis(30));
        let text = metrics.render(3);

        assert!(text.contains("jit_requests_total{outcome=\"issued\"} 1"));
        assert!(text.contains("jit_requests_total{outcome=\"denied\"} 1"));
        assert!(text.contains("jit_certificates_issued_total 1"));
        assert!(text.contains("jit_pending_requests 3"));
        assert!(text.contains("jit_request_duration_seconds_bucket{le=\"0.0025\"} 1"));
        assert!(text.contains("jit_request_duration_seconds_bucket{le=\"0.05\"} 2"));
        assert!(text.contains("jit_request_duration_seconds_count 2"));
    }
}
