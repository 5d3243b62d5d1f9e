//! Counters, gauges and histograms for `/metrics`, in the Prometheus text format.
//!
//! A handful of fixed series, kept with atomics (no registry crate: the set is small and known,
//! and rendering it by hand keeps the names and help texts in one readable place).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A histogram with fixed upper bounds.
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micro: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micro: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if v <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micro
            .fetch_add((v.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let n = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let sum = self.sum_micro.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {n}");
    }
}

const SECONDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
const PER_FORWARD: &[f64] = &[1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0];

/// Connection counts, kept by the accept loop ([`crate::conn`]).
#[derive(Default)]
pub struct ConnCounters {
    /// Connections open now (served, not counting ones being refused).
    pub open: AtomicU64,
    /// The cap on open connections (`--max-connections`).
    pub max: AtomicU64,
    /// Connections accepted and served.
    pub accepted: AtomicU64,
    /// Connections refused with 503 because the cap was reached.
    pub refused: AtomicU64,
    /// Connections closed because a request head did not arrive within `--header-timeout`.
    pub header_timeouts: AtomicU64,
    /// Requests answered 408 because their body did not arrive within `--body-timeout`.
    pub body_timeouts: AtomicU64,
    /// Connections closed after `--idle-timeout` with no request in progress.
    pub idle_timeouts: AtomicU64,
}

/// The server's metrics.
pub struct Metrics {
    /// Connection counts, shared with the accept loop.
    pub conns: Arc<ConnCounters>,
    /// Finished HTTP requests by route and status.
    requests: Mutex<Vec<(String, u16, u64)>>,
    /// Prompt tokens of finished generations.
    pub prompt_tokens: AtomicU64,
    /// Generated tokens of finished generations.
    pub generated_tokens: AtomicU64,
    /// Generations that ended because the client went away.
    pub cancelled: AtomicU64,
    /// Requests refused because the queue was full.
    pub rejected: AtomicU64,
    /// Requests waiting for a slot.
    pub queue_depth: AtomicU64,
    /// Slots decoding now.
    pub slots_busy: AtomicU64,
    /// End-to-end request latency.
    pub latency: Histogram,
    /// Time to the first streamed text.
    pub ttft: Histogram,
    /// Time waiting for a slot.
    pub queue_wait: Histogram,
    /// Generated tokens per forward pass of each finished sequence.
    pub tokens_per_forward: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            conns: Arc::new(ConnCounters::default()),
            requests: Mutex::new(Vec::new()),
            prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            queue_depth: AtomicU64::new(0),
            slots_busy: AtomicU64::new(0),
            latency: Histogram::new(SECONDS),
            ttft: Histogram::new(SECONDS),
            queue_wait: Histogram::new(SECONDS),
            tokens_per_forward: Histogram::new(PER_FORWARD),
        }
    }
}

/// What the scheduler and limits say at render time.
pub struct Snapshot {
    /// Slots in total.
    pub slots_total: usize,
    /// Batched forward passes.
    pub forward_passes: u64,
    /// Sequence requests served by those passes.
    pub sequence_forwards: u64,
    /// Positions run.
    pub forward_positions: u64,
    /// Seconds the model was busy.
    pub busy_seconds: f64,
    /// Sequences alive in the scheduler.
    pub live_sequences: usize,
    /// Whether the model is loaded.
    pub ready: bool,
}

impl Metrics {
    /// Counts a finished HTTP request.
    pub fn request(&self, route: &str, status: u16) {
        let mut r = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        match r.iter_mut().find(|(n, s, _)| n == route && *s == status) {
            Some(entry) => entry.2 += 1,
            None => r.push((route.to_string(), status, 1)),
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self, snap: &Snapshot) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: f64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let gauge = |out: &mut String, name: &str, help: &str, v: f64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let _ = writeln!(
            out,
            "# HELP dlm_requests_total HTTP requests answered, by route and status.\n# TYPE dlm_requests_total counter"
        );
        {
            let r = self.requests.lock().unwrap_or_else(|p| p.into_inner());
            let mut rows = r.clone();
            rows.sort();
            for (route, status, n) in rows {
                let _ = writeln!(
                    out,
                    "dlm_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        counter(
            &mut out,
            "dlm_prompt_tokens_total",
            "Prompt tokens of finished generations.",
            load(&self.prompt_tokens),
        );
        counter(
            &mut out,
            "dlm_generated_tokens_total",
            "Tokens generated by finished generations.",
            load(&self.generated_tokens),
        );
        counter(
            &mut out,
            "dlm_cancelled_total",
            "Generations stopped because the client went away.",
            load(&self.cancelled),
        );
        counter(
            &mut out,
            "dlm_rejected_total",
            "Requests refused because the queue was full.",
            load(&self.rejected),
        );
        counter(
            &mut out,
            "dlm_forward_passes_total",
            "Batched model forward passes (one per scheduler step).",
            snap.forward_passes as f64,
        );
        counter(
            &mut out,
            "dlm_sequence_forwards_total",
            "Sequence forward requests served by those passes.",
            snap.sequence_forwards as f64,
        );
        counter(
            &mut out,
            "dlm_forward_positions_total",
            "Token positions run through the model.",
            snap.forward_positions as f64,
        );
        counter(
            &mut out,
            "dlm_model_busy_seconds_total",
            "Seconds the model spent in forward passes.",
            snap.busy_seconds,
        );
        gauge(
            &mut out,
            "dlm_queue_depth",
            "Requests waiting for a decoding slot.",
            load(&self.queue_depth),
        );
        gauge(
            &mut out,
            "dlm_slots_busy",
            "Decoding slots in use.",
            load(&self.slots_busy),
        );
        gauge(
            &mut out,
            "dlm_slots_total",
            "Decoding slots (--max-concurrency).",
            snap.slots_total as f64,
        );
        gauge(
            &mut out,
            "dlm_live_sequences",
            "Sequences the scheduler is decoding.",
            snap.live_sequences as f64,
        );
        gauge(
            &mut out,
            "dlm_ready",
            "1 once the model is loaded.",
            if snap.ready { 1.0 } else { 0.0 },
        );
        let c = &self.conns;
        gauge(
            &mut out,
            "dlm_connections_open",
            "HTTP connections open now.",
            load(&c.open),
        );
        gauge(
            &mut out,
            "dlm_connections_max",
            "Open connections allowed (--max-connections).",
            load(&c.max),
        );
        counter(
            &mut out,
            "dlm_connections_accepted_total",
            "HTTP connections accepted and served.",
            load(&c.accepted),
        );
        counter(
            &mut out,
            "dlm_connections_refused_total",
            "Connections refused with 503 because --max-connections were open.",
            load(&c.refused),
        );
        let _ = writeln!(
            out,
            "# HELP dlm_connections_timed_out_total Connections ended by a timeout: header (--header-timeout), body (--body-timeout, answered 408), idle (--idle-timeout).\n# TYPE dlm_connections_timed_out_total counter"
        );
        for (reason, v) in [
            ("header", &c.header_timeouts),
            ("body", &c.body_timeouts),
            ("idle", &c.idle_timeouts),
        ] {
            let _ = writeln!(
                out,
                "dlm_connections_timed_out_total{{reason=\"{reason}\"}} {}",
                load(v)
            );
        }
        self.latency.render(
            &mut out,
            "dlm_request_duration_seconds",
            "Time from request to last byte of a generation.",
        );
        self.ttft.render(
            &mut out,
            "dlm_time_to_first_token_seconds",
            "Time from request to the first generated text.",
        );
        self.queue_wait.render(
            &mut out,
            "dlm_queue_wait_seconds",
            "Time a request waited for a slot.",
        );
        self.tokens_per_forward.render(&mut out, "dlm_tokens_per_forward", "Generated tokens per forward pass of each finished generation (1 for AR; more when block diffusion commits several).");
        out
    }
}
